//! TFTP packets.

/// Error codes (RFC 1350 and 2347).
pub mod code {
    /// Not defined; see message.
    pub const UNDEFINED: u16 = 0;
    /// File not found.
    pub const NOT_FOUND: u16 = 1;
    /// Access violation.
    pub const ACCESS: u16 = 2;
    /// Illegal TFTP operation.
    pub const ILLEGAL: u16 = 4;
    /// Unknown transfer id.
    pub const UNKNOWN_TID: u16 = 5;
    /// Option negotiation refused.
    pub const OPTIONS: u16 = 8;
}

/// A TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read request: file, mode, options (names lower-cased).
    Rrq {
        /// File name.
        file: String,
        /// `octet` or `netascii`.
        mode: String,
        /// Requested options, in order.
        options: Vec<(String, String)>,
    },
    /// Write request (refused: this server is read-only).
    Wrq,
    /// A block of data.
    Data {
        /// Block number.
        block: u16,
        /// Payload.
        data: Vec<u8>,
    },
    /// Acknowledgement.
    Ack {
        /// Block number.
        block: u16,
    },
    /// Error.
    Error {
        /// Code.
        code: u16,
        /// Message.
        message: String,
    },
    /// Option acknowledgement.
    Oack {
        /// Accepted options.
        options: Vec<(String, String)>,
    },
}

fn strings(mut b: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let end = b.iter().position(|&c| c == 0)?;
        out.push(String::from_utf8(b[..end].to_vec()).ok()?);
        b = &b[end + 1..];
    }
    Some(out)
}

impl Packet {
    /// Decodes a packet; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < 2 {
            return None;
        }
        let op = u16::from_be_bytes([b[0], b[1]]);
        let rest = &b[2..];
        match op {
            1 => {
                let s = strings(rest)?;
                if s.len() < 2 || s.len() % 2 != 0 {
                    return None;
                }
                let options = s[2..]
                    .chunks(2)
                    .map(|kv| (kv[0].to_ascii_lowercase(), kv[1].clone()))
                    .collect();
                Some(Packet::Rrq {
                    file: s[0].clone(),
                    mode: s[1].to_ascii_lowercase(),
                    options,
                })
            }
            2 => Some(Packet::Wrq),
            3 if rest.len() >= 2 => Some(Packet::Data {
                block: u16::from_be_bytes([rest[0], rest[1]]),
                data: rest[2..].to_vec(),
            }),
            4 if rest.len() >= 2 => Some(Packet::Ack {
                block: u16::from_be_bytes([rest[0], rest[1]]),
            }),
            5 if rest.len() >= 2 => {
                let message = strings(&rest[2..])
                    .and_then(|v| v.into_iter().next())
                    .unwrap_or_default();
                Some(Packet::Error {
                    code: u16::from_be_bytes([rest[0], rest[1]]),
                    message,
                })
            }
            6 => {
                let s = strings(rest)?;
                if s.len() % 2 != 0 {
                    return None;
                }
                Some(Packet::Oack {
                    options: s
                        .chunks(2)
                        .map(|kv| (kv[0].to_ascii_lowercase(), kv[1].clone()))
                        .collect(),
                })
            }
            _ => None,
        }
    }

    /// Encodes the packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let push_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq {
                file,
                mode,
                options,
            } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                push_str(&mut out, file);
                push_str(&mut out, mode);
                for (k, v) in options {
                    push_str(&mut out, k);
                    push_str(&mut out, v);
                }
            }
            Packet::Wrq => out.extend_from_slice(&2u16.to_be_bytes()),
            Packet::Data { block, data } => {
                out.extend_from_slice(&3u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                push_str(&mut out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&6u16.to_be_bytes());
                for (k, v) in options {
                    push_str(&mut out, k);
                    push_str(&mut out, v);
                }
            }
        }
        out
    }
}

/// Encodes a DATA packet without building a `Packet` (the hot path).
pub fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&3u16.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An ERROR packet.
pub fn error(code: u16, message: &str) -> Vec<u8> {
    Packet::Error {
        code,
        message: message.to_string(),
    }
    .encode()
}
