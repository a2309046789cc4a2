//! A small TFTP read client (blksize and windowsize), for simulated machines and
//! load tests: the same protocol code a PXE ROM runs, on our side.

use super::packet::Packet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tinker_core::clock::{Clock, SystemClock};
use tokio::net::UdpSocket;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The server did not answer the read request (retransmitted on
    /// [`RRQ_RETRANSMISSIONS`]), or stopped answering (five timeouts of 2 s in
    /// a row).
    #[error("TFTP {file}: no answer from the server")]
    NoAnswer {
        /// The file asked for.
        file: String,
    },
    /// The server answered with an ERROR packet.
    #[error("TFTP {file}: error {code}: {message}")]
    Refused {
        /// The file asked for.
        file: String,
        /// The TFTP error code (1 not found, 2 access violation, ...).
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The server sent a packet a reader never expects (a request, a WRQ ACK).
    #[error("TFTP {file}: unexpected packet from the server")]
    Unexpected {
        /// The file asked for.
        file: String,
    },
    /// The socket failed.
    #[error("TFTP socket: {0}")]
    Io(#[from] std::io::Error),
}

/// How long the client waits for the answer to its read request before
/// sending it again, then again, ... and after the last, gives up: iPXE's
/// retry timer (`src/net/retry.c`: a quarter second, doubled on each expiry,
/// failing once the doubled timeout passes 10 s), which is also what the iPXE
/// ROMs of QEMU's and many NICs' PXE firmware run. A server that sheds a
/// request by not answering is asked again six times over about 16 s.
pub const RRQ_RETRANSMISSIONS: [Duration; 6] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Fetches `file` from `server`; `None` options means plain RFC 1350. Waits
/// for answers on the system clock.
pub async fn fetch(
    server: SocketAddr,
    file: &str,
    blksize: Option<u16>,
    windowsize: Option<u16>,
) -> Result<Vec<u8>, FetchError> {
    fetch_with_clock(server, file, blksize, windowsize, &SystemClock).await
}

/// [`fetch`], waiting for answers on `clock`.
pub async fn fetch_with_clock(
    server: SocketAddr,
    file: &str,
    blksize: Option<u16>,
    windowsize: Option<u16>,
    clock: &dyn Clock,
) -> Result<Vec<u8>, FetchError> {
    fetch_from(server, None, file, blksize, windowsize, clock).await
}

/// [`fetch_with_clock`] from the address `from` (any port) when given: a
/// simulated machine fetches from its own address, as a real one does, and the
/// server's per-address limits count it apart from the others.
pub async fn fetch_from(
    server: SocketAddr,
    from: Option<IpAddr>,
    file: &str,
    blksize: Option<u16>,
    windowsize: Option<u16>,
    clock: &dyn Clock,
) -> Result<Vec<u8>, FetchError> {
    let any: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind(SocketAddr::new(from.unwrap_or(any), 0)).await?;
    let mut options = Vec::new();
    if let Some(b) = blksize {
        options.push(("blksize".to_string(), b.to_string()));
    }
    if let Some(w) = windowsize {
        options.push(("windowsize".to_string(), w.to_string()));
    }
    let rrq = Packet::Rrq {
        file: file.into(),
        mode: "octet".into(),
        options,
    }
    .encode();
    send(&sock, &rrq, server).await?;
    let (mut size, mut window) = (512usize, 1u64);
    let mut out = Vec::new();
    let mut expected: u64 = 1;
    let mut in_window = 0u64;
    let mut buf = vec![0u8; 66_000];
    // The server's transfer id (address and port), from its first answer.
    let mut peer: Option<SocketAddr> = None;
    let (mut rrq_sent, mut tries) = (0usize, 0);
    loop {
        let wait = match peer {
            None => RRQ_RETRANSMISSIONS[rrq_sent],
            Some(_) => Duration::from_secs(2),
        };
        let got = tokio::select! {
            r = sock.recv_from(&mut buf) => Some(r),
            () = clock.sleep(wait) => None,
        };
        let (n, from) = match got {
            Some(r) => r?,
            None => match peer {
                None => {
                    rrq_sent += 1;
                    if rrq_sent == RRQ_RETRANSMISSIONS.len() {
                        return Err(FetchError::NoAnswer { file: file.into() });
                    }
                    send(&sock, &rrq, server).await?;
                    continue;
                }
                Some(peer) => {
                    tries += 1;
                    if tries > 5 {
                        return Err(FetchError::NoAnswer { file: file.into() });
                    }
                    // Ask again from the last good block.
                    let ack = Packet::Ack {
                        block: ((expected - 1) & 0xffff) as u16,
                    };
                    send(&sock, &ack.encode(), peer).await?;
                    continue;
                }
            },
        };
        let peer = match peer {
            Some(p) if p == from => p,
            // A second answer to a retransmitted request, or a stranger:
            // another transfer id, told so (RFC 1350), and ignored.
            Some(_) => {
                let error = Packet::Error {
                    code: super::packet::code::UNKNOWN_TID,
                    message: "unknown transfer id".into(),
                };
                send(&sock, &error.encode(), from).await?;
                continue;
            }
            None => *peer.insert(from),
        };
        tries = 0;
        match Packet::decode(&buf[..n]) {
            Some(Packet::Oack { options }) => {
                for (k, v) in options {
                    match k.as_str() {
                        "blksize" => size = v.parse().unwrap_or(512),
                        "windowsize" => window = v.parse().unwrap_or(1),
                        _ => {}
                    }
                }
                send(&sock, &Packet::Ack { block: 0 }.encode(), peer).await?;
            }
            Some(Packet::Data { block, data }) => {
                if block != (expected & 0xffff) as u16 {
                    let ack = Packet::Ack {
                        block: ((expected - 1) & 0xffff) as u16,
                    };
                    send(&sock, &ack.encode(), peer).await?;
                    in_window = 0;
                    continue;
                }
                out.extend_from_slice(&data);
                in_window += 1;
                let last = data.len() < size;
                if in_window == window || last {
                    send(&sock, &Packet::Ack { block }.encode(), peer).await?;
                    in_window = 0;
                }
                expected += 1;
                if last {
                    return Ok(out);
                }
            }
            Some(Packet::Error { code, message }) => {
                return Err(FetchError::Refused {
                    file: file.into(),
                    code,
                    message,
                });
            }
            _ => return Err(FetchError::Unexpected { file: file.into() }),
        }
    }
}

/// Sends a datagram as a PXE ROM's NIC does: one the host drops on the way
/// out (a full connection-tracking table answers `EPERM`, a full queue
/// `ENOBUFS`) is lost like any other, and the retransmission timers recover
/// it; other errors are the caller's.
async fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
    const ENOBUFS: i32 = 105;
    match sock.send_to(bytes, to).await {
        Ok(_) => Ok(()),
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                || e.raw_os_error() == Some(ENOBUFS) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
