//! One read transfer as a state machine: packets and time in, packets out. The
//! time is the caller's (its [`Clock`](tinker_core::clock::Clock)), so a
//! transfer runs the same under a simulated clock.

use super::packet::{self, Packet};
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// Negotiated transfer parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOptions {
    /// Bytes per DATA packet (512 unless negotiated, 8..=65464).
    pub blksize: usize,
    /// Blocks sent before an ACK is awaited (1 unless negotiated, 1..=65535).
    pub windowsize: u16,
    /// Retransmission timeout.
    pub timeout: Duration,
}

/// Largest block that fits an Ethernet frame without IP fragmentation; bigger
/// requests are negotiated down to it (RFC 2348 lets the server answer smaller).
pub const MAX_BLKSIZE_NO_FRAG: usize = 1468;
/// Retransmissions of one window before the transfer is abandoned.
pub const MAX_RETRIES: u32 = 6;

/// The longest wait between retransmissions of one window when the client
/// named no `timeout`. RFC 1123 (4.2.3.2) asks TFTP for an adaptive timeout:
/// the wait starts at 1 s and doubles at each retransmission in a row, up to
/// this, and is 1 s again once the client makes progress. A client that is
/// slow rather than gone (a ROM on a busy host, a congested link) then gets
/// about 23 s to answer instead of 7, and a busy server sends it fewer
/// retransmissions meanwhile; a client that named a `timeout` gets exactly
/// what it asked for (RFC 2349).
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The longest retransmission timeout a client may ask for (RFC 2349 allows up
/// to 255 s). A longer one is not acknowledged, so the transfer keeps the 1 s
/// default (backing off to [`MAX_BACKOFF`]): a spoofed read request then holds
/// a transfer slot for seconds, not for `255 s × MAX_RETRIES` (half an hour).
/// PXE ROMs ask for a few seconds.
pub const MAX_TIMEOUT_OPTION: u64 = 10;

/// Bytes a transfer may send without the client acknowledging any progress
/// (retransmissions included) before it is abandoned, by default: a client that
/// never answers, or a victim whose address a spoofed request carried, is sent
/// at most this much (plus at most one window).
pub const DEFAULT_MAX_UNANSWERED_BYTES: u64 = 512 * 1024;

/// Why a transfer was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GaveUp {
    /// The client sent an ERROR.
    ClientError,
    /// [`MAX_RETRIES`] timeouts in a row.
    Retries,
    /// The next window would have taken the bytes sent without progress past
    /// the transfer's limit.
    Unanswered,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GaveUp::ClientError => "the client sent an error",
            GaveUp::Retries => "no answer after every retry",
            GaveUp::Unanswered => "too much sent without an answer",
        })
    }
}

/// Applies the client's options (RFC 2347/2348/2349/7440): returns the
/// parameters and the options to acknowledge (none: send DATA 1 at once).
pub fn negotiate(
    requested: &[(String, String)],
    size: u64,
    max_blksize: usize,
) -> (TransferOptions, Vec<(String, String)>) {
    let mut o = TransferOptions {
        blksize: 512,
        windowsize: 1,
        timeout: Duration::from_secs(1),
    };
    let mut ack = Vec::new();
    for (k, v) in requested {
        match k.as_str() {
            "blksize" => {
                if let Ok(n) = v.parse::<usize>()
                    && n >= 8
                {
                    o.blksize = n.min(65464).min(max_blksize);
                    ack.push((k.clone(), o.blksize.to_string()));
                }
            }
            "tsize" => ack.push((k.clone(), size.to_string())),
            "timeout" => {
                if let Ok(n) = v.parse::<u64>()
                    && (1..=MAX_TIMEOUT_OPTION).contains(&n)
                {
                    o.timeout = Duration::from_secs(n);
                    ack.push((k.clone(), n.to_string()));
                }
            }
            "windowsize" => {
                if let Ok(n) = v.parse::<u16>()
                    && n >= 1
                {
                    o.windowsize = n.min(64);
                    ack.push((k.clone(), o.windowsize.to_string()));
                }
            }
            _ => {} // unknown options are ignored, as RFC 2347 says
        }
    }
    (o, ack)
}

/// What a transfer asks its driver to send, as a value: the driver writes each
/// packet into a buffer of its own ([`Transfer::encode`]), so a block costs no
/// allocation (a thousand transfers of an iPXE binary are over a million
/// blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transmit {
    /// Nothing to send.
    Nothing,
    /// The option acknowledgement.
    Oack,
    /// DATA blocks `first..=last` (absolute numbers, from 1).
    Blocks {
        /// The first block.
        first: u64,
        /// The last block.
        last: u64,
    },
    /// An ERROR packet.
    Error {
        /// Its code ([`packet::code`]).
        code: u16,
        /// Its message.
        message: &'static str,
    },
}

impl Transmit {
    /// How many packets it is.
    pub fn count(&self) -> usize {
        match *self {
            Transmit::Nothing => 0,
            Transmit::Oack | Transmit::Error { .. } => 1,
            Transmit::Blocks { first, last } => (last + 1).saturating_sub(first) as usize,
        }
    }
}

/// The state of one transfer.
#[derive(Debug)]
pub struct Transfer {
    data: Arc<[u8]>,
    opts: TransferOptions,
    /// The OACK, while it awaits its ACK 0.
    oack: Option<Vec<u8>>,
    /// Blocks acknowledged (absolute count, from 0).
    acked: u64,
    /// Blocks sent (absolute count).
    sent: u64,
    total_blocks: u64,
    retries: u32,
    /// Whether the wait doubles at each retransmission in a row (the client
    /// named no `timeout`).
    backs_off: bool,
    deadline: Timestamp,
    failed: Option<GaveUp>,
    /// Bytes sent since the client last acknowledged progress.
    unanswered: u64,
    max_unanswered: u64,
}

impl Transfer {
    /// Starts a transfer of `data`; returns it and the first packets to send.
    pub fn start(
        data: Arc<[u8]>,
        requested: &[(String, String)],
        max_blksize: usize,
        now: Timestamp,
    ) -> (Transfer, Vec<Vec<u8>>) {
        let (t, tx) = Self::begin(data, requested, max_blksize, now);
        let out = t.packets(tx);
        (t, out)
    }

    /// Starts a transfer of `data`; returns it and what to send first
    /// ([`start`](Self::start) without building the packets).
    pub fn begin(
        data: Arc<[u8]>,
        requested: &[(String, String)],
        max_blksize: usize,
        now: Timestamp,
    ) -> (Transfer, Transmit) {
        let (opts, ack) = negotiate(requested, data.len() as u64, max_blksize);
        let backs_off = !ack.iter().any(|(k, _)| k == "timeout");
        let total_blocks = data.len() as u64 / opts.blksize as u64 + 1;
        let mut t = Transfer {
            oack: (!ack.is_empty()).then(|| Packet::Oack { options: ack }.encode()),
            data,
            deadline: now + opts.timeout,
            opts,
            acked: 0,
            sent: 0,
            total_blocks,
            retries: 0,
            backs_off,
            failed: None,
            unanswered: 0,
            max_unanswered: DEFAULT_MAX_UNANSWERED_BYTES,
        };
        let tx = match &t.oack {
            Some(_) => Transmit::Oack,
            None => t.send_window(now),
        };
        t.unanswered = t.bytes(tx);
        (t, tx)
    }

    /// Abandons the transfer rather than send more than `bytes` without the
    /// client acknowledging progress (default [`DEFAULT_MAX_UNANSWERED_BYTES`]).
    /// The first packets always go out.
    pub fn limit_unanswered(&mut self, bytes: u64) {
        self.max_unanswered = bytes;
    }

    /// Bytes sent since the client last acknowledged progress.
    pub fn unanswered(&self) -> u64 {
        self.unanswered
    }

    /// Why the transfer was abandoned, if it was.
    pub fn gave_up(&self) -> Option<GaveUp> {
        self.failed
    }

    /// The negotiated options.
    pub fn options(&self) -> &TransferOptions {
        &self.opts
    }

    /// Whether every block was acknowledged.
    pub fn is_complete(&self) -> bool {
        self.oack.is_none() && self.acked == self.total_blocks
    }

    /// Whether the transfer was abandoned (client error or too many timeouts).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// When [`on_timeout`](Self::on_timeout) is due.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// How long to wait for the client before retransmitting, after
    /// `self.retries` retransmissions in a row.
    fn wait(&self) -> Duration {
        if !self.backs_off {
            return self.opts.timeout;
        }
        self.opts
            .timeout
            .saturating_mul(1 << self.retries.min(16))
            .min(MAX_BACKOFF.max(self.opts.timeout))
    }

    /// Block `index`'s payload.
    fn payload(&self, index: u64) -> &[u8] {
        let start = ((index - 1) * self.opts.blksize as u64) as usize;
        let end = (start + self.opts.blksize).min(self.data.len());
        if start <= self.data.len() {
            &self.data[start..end]
        } else {
            &[][..]
        }
    }

    /// Writes packet `i` of `tx` into `buf` (cleared first), ready to send.
    pub fn encode(&self, tx: Transmit, i: usize, buf: &mut Vec<u8>) {
        buf.clear();
        match tx {
            Transmit::Nothing => {}
            Transmit::Oack => buf.extend_from_slice(self.oack.as_deref().unwrap_or_default()),
            Transmit::Blocks { first, .. } => {
                // Block numbers start at 1 and roll over to 0 after 65535, as
                // tftp-hpa and iPXE expect for files over 32 MiB at 512-byte
                // blocks.
                let index = first + i as u64;
                buf.extend_from_slice(&3u16.to_be_bytes());
                buf.extend_from_slice(&((index & 0xffff) as u16).to_be_bytes());
                buf.extend_from_slice(self.payload(index));
            }
            Transmit::Error { code, message } => {
                buf.extend_from_slice(&5u16.to_be_bytes());
                buf.extend_from_slice(&code.to_be_bytes());
                buf.extend_from_slice(message.as_bytes());
                buf.push(0);
            }
        }
    }

    /// The packets of `tx`, each in its own buffer (for tests and callers off
    /// the hot path).
    pub fn packets(&self, tx: Transmit) -> Vec<Vec<u8>> {
        (0..tx.count())
            .map(|i| {
                let mut buf = Vec::new();
                self.encode(tx, i, &mut buf);
                buf
            })
            .collect()
    }

    /// The bytes `tx` puts on the wire (UDP payloads).
    fn bytes(&self, tx: Transmit) -> u64 {
        match tx {
            Transmit::Nothing => 0,
            Transmit::Oack => self.oack.as_ref().map_or(0, |o| o.len() as u64),
            Transmit::Blocks { first, last } => (first..=last)
                .map(|i| 4 + self.payload(i).len() as u64)
                .sum(),
            Transmit::Error { message, .. } => 5 + message.len() as u64,
        }
    }

    fn send_window(&mut self, now: Timestamp) -> Transmit {
        let last = (self.acked + u64::from(self.opts.windowsize)).min(self.total_blocks);
        let first = self.acked + 1;
        self.sent = last;
        self.deadline = now + self.wait();
        if first > last {
            Transmit::Nothing
        } else {
            Transmit::Blocks { first, last }
        }
    }

    /// Handles a packet from the client.
    pub fn on_packet(&mut self, bytes: &[u8], now: Timestamp) -> Vec<Vec<u8>> {
        let tx = self.handle(bytes, now);
        self.packets(tx)
    }

    /// Handles a packet from the client; says what to send
    /// ([`on_packet`](Self::on_packet) without building the packets).
    pub fn handle(&mut self, bytes: &[u8], now: Timestamp) -> Transmit {
        if self.failed.is_some() || self.is_complete() {
            return Transmit::Nothing;
        }
        match Packet::decode(bytes) {
            Some(Packet::Ack { block }) => {
                if self.oack.is_some() {
                    if block == 0 {
                        self.oack = None;
                        self.retries = 0;
                        let tx = self.send_window(now);
                        self.unanswered = self.bytes(tx);
                        return tx;
                    }
                    return Transmit::Nothing;
                }
                // Map the 16-bit number to the window in flight.
                let Some(abs) = (self.acked + 1..=self.sent)
                    .rev()
                    .find(|i| (i & 0xffff) as u16 == block)
                else {
                    // A duplicate or stale ACK: ignore it (no Sorcerer's Apprentice).
                    return Transmit::Nothing;
                };
                self.acked = abs;
                self.retries = 0;
                if self.is_complete() {
                    return Transmit::Nothing;
                }
                // The next window; after a partial one (loss), RFC 7440 resends
                // from the block after the last acknowledged.
                let tx = self.send_window(now);
                self.unanswered = self.bytes(tx);
                tx
            }
            Some(Packet::Error { .. }) => {
                self.failed = Some(GaveUp::ClientError);
                Transmit::Nothing
            }
            _ => Transmit::Error {
                code: packet::code::ILLEGAL,
                message: "expected an ACK",
            },
        }
    }

    /// Retransmits after a timeout; abandons the transfer after [`MAX_RETRIES`],
    /// or when the retransmission would take the bytes sent without progress
    /// past the limit.
    pub fn on_timeout(&mut self, now: Timestamp) -> Vec<Vec<u8>> {
        let tx = self.expire(now);
        self.packets(tx)
    }

    /// The deadline passed: what to send ([`on_timeout`](Self::on_timeout)
    /// without building the packets).
    pub fn expire(&mut self, now: Timestamp) -> Transmit {
        if self.failed.is_some() || self.is_complete() {
            return Transmit::Nothing;
        }
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            self.failed = Some(GaveUp::Retries);
            return Transmit::Error {
                code: packet::code::UNDEFINED,
                message: "timed out",
            };
        }
        let (acked, sent) = (self.acked, self.sent);
        let tx = match &self.oack {
            Some(_) => Transmit::Oack,
            None => self.send_window(now),
        };
        let total = self.unanswered.saturating_add(self.bytes(tx));
        if total > self.max_unanswered {
            // Undo the window's bookkeeping: none of it goes out.
            (self.acked, self.sent) = (acked, sent);
            self.failed = Some(GaveUp::Unanswered);
            return Transmit::Error {
                code: packet::code::UNDEFINED,
                message: "no answer",
            };
        }
        self.unanswered = total;
        self.deadline = now + self.wait();
        tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_bytes(packets: &[Vec<u8>]) -> u64 {
        packets.iter().map(|p| p.len() as u64).sum()
    }

    /// A client that acknowledges the options (or a spoofer who guessed the
    /// transfer's port) and then never answers gets windows of 64 blocks
    /// retransmitted: what it is sent is bounded by the unanswered limit, not by
    /// the file or the retries.
    #[test]
    fn a_client_that_never_acks_receives_a_bounded_number_of_bytes() {
        let req = vec![
            ("blksize".to_string(), "1468".to_string()),
            ("windowsize".to_string(), "64".to_string()),
        ];
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let data: Arc<[u8]> = vec![3u8; 8 << 20].into();
        let (mut t, first) = Transfer::start(data, &req, MAX_BLKSIZE_NO_FRAG, t0);
        let limit = 200_000;
        t.limit_unanswered(limit);
        let mut sent = sent_bytes(&first);
        let mut out = t.on_packet(&ack(0), t0);
        sent += sent_bytes(&out);
        let window = sent_bytes(&out);
        assert!(window > 90_000, "a full window of 64 blocks: {window}");
        while !t.is_failed() {
            out = t.on_timeout(t.deadline());
            sent += sent_bytes(&out);
        }
        assert_eq!(t.gave_up(), Some(GaveUp::Unanswered));
        assert!(
            sent <= limit + 100,
            "{sent} bytes sent to a client that never answered (limit {limit})"
        );
        // Progress restarts the count: a client that answers is not cut off.
        let (mut t, _) = Transfer::start(vec![1u8; 4 << 20].into(), &req, 1468, t0);
        t.limit_unanswered(limit);
        let mut out = t.on_packet(&ack(0), t0);
        while !t.is_complete() {
            let Some(Packet::Data { block, .. }) = out.last().and_then(|p| Packet::decode(p))
            else {
                panic!("{:?}", t.gave_up());
            };
            // One timeout per window, then the acknowledgement.
            let _ = t.on_timeout(t.deadline());
            out = t.on_packet(&ack(block), t0);
        }
    }

    /// A spoofed request asking for 255 s: not acknowledged, the 1 s default
    /// holds, and the transfer is abandoned after its retries within seconds.
    #[test]
    fn a_long_client_timeout_is_not_taken() {
        let opt = |v: &str| [("timeout".to_string(), v.to_string())];
        let (o, ack) = negotiate(&opt("255"), 100, MAX_BLKSIZE_NO_FRAG);
        assert_eq!(o.timeout, Duration::from_secs(1));
        assert!(ack.is_empty(), "not acknowledged: {ack:?}");
        let (o, ack) = negotiate(&opt("4"), 100, MAX_BLKSIZE_NO_FRAG);
        assert_eq!(
            o.timeout,
            Duration::from_secs(4),
            "a PXE ROM's few seconds are taken"
        );
        assert_eq!(ack, opt("4"));

        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let data: Arc<[u8]> = vec![7u8; 100].into();
        let (mut t, first) = Transfer::start(data, &opt("255"), MAX_BLKSIZE_NO_FRAG, t0);
        let mut sent = first.len();
        let mut now = t0;
        while !t.is_failed() {
            now = t.deadline();
            sent += t.on_timeout(now).len();
        }
        // 1 + 2 + 4 + 4 + 4 + 4 + 4 s: the backed-off waits of MAX_RETRIES
        // retransmissions and the last one's.
        let held: u64 = (0..=MAX_RETRIES)
            .map(|r| (1u64 << r).min(MAX_BACKOFF.as_secs()))
            .sum();
        assert_eq!(held, 23);
        assert_eq!(
            now.duration_since(t0),
            jiff::SignedDuration::from_secs(held as i64),
            "held for {:?}",
            now.duration_since(t0)
        );
        assert!(
            sent <= MAX_RETRIES as usize + 2,
            "{sent} packets to a client that never answered"
        );
    }

    /// RFC 1123's adaptive timeout: a client that stays silent is sent the
    /// window again after 1, 2, 4, 4, ... s (not every second), and the wait is
    /// 1 s again once it makes progress; a client that named its `timeout`
    /// gets that, every time.
    #[test]
    fn retransmissions_back_off_until_the_client_makes_progress() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |t: Timestamp| t.duration_since(t0).as_secs();
        let data: Arc<[u8]> = vec![5u8; 4096].into();
        let (mut t, first) = Transfer::start(data.clone(), &[], MAX_BLKSIZE_NO_FRAG, t0);
        assert_eq!(blocks(&first), [1]);
        let mut resent_at = Vec::new();
        for _ in 0..3 {
            let now = t.deadline();
            assert_eq!(blocks(&t.on_timeout(now)), [1], "the same block again");
            resent_at.push(at(now));
        }
        assert_eq!(resent_at, [1, 3, 7], "waits of 1, 2 and 4 s");
        // The ACK comes at last: block 2 goes out, and its wait is 1 s again.
        let now = t.deadline() - jiff::SignedDuration::from_millis(500);
        assert_eq!(blocks(&t.on_packet(&ack(1), now)), [2]);
        assert_eq!(t.deadline(), now + jiff::SignedDuration::from_secs(1));
        // Silence again: 1, 2, 4, 4, 4, 4 s, then the transfer is given up.
        let mut waits = Vec::new();
        let mut last = now;
        while !t.is_failed() {
            let next = t.deadline();
            waits.push(next.duration_since(last).as_secs());
            last = next;
            let _ = t.on_timeout(next);
        }
        assert_eq!(waits, [1, 2, 4, 4, 4, 4, 4]);
        assert_eq!(t.gave_up(), Some(GaveUp::Retries));

        // A client that asked for 2 s is waited for 2 s each time.
        let opt = [("timeout".to_string(), "2".to_string())];
        let (mut t, _) = Transfer::start(data, &opt, MAX_BLKSIZE_NO_FRAG, t0);
        let _ = t.on_packet(&ack(0), t0);
        let mut last = t0;
        let mut waits = Vec::new();
        while !t.is_failed() {
            let next = t.deadline();
            waits.push(next.duration_since(last).as_secs());
            last = next;
            let _ = t.on_timeout(next);
        }
        assert_eq!(waits, [2; MAX_RETRIES as usize + 1]);
    }

    fn ack(b: u16) -> Vec<u8> {
        Packet::Ack { block: b }.encode()
    }

    fn blocks(pkts: &[Vec<u8>]) -> Vec<u16> {
        pkts.iter()
            .map(|p| match Packet::decode(p) {
                Some(Packet::Data { block, .. }) => block,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn plain_transfer_ends_with_a_short_block() {
        let data: Arc<[u8]> = vec![7u8; 1024].into();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (mut t, out) = Transfer::start(data, &[], 1468, now);
        assert_eq!(blocks(&out), [1]);
        assert_eq!(blocks(&t.on_packet(&ack(1), now)), [2]);
        let last = t.on_packet(&ack(2), now);
        assert_eq!(
            Packet::decode(&last[0]),
            Some(Packet::Data {
                block: 3,
                data: vec![]
            }),
            "a multiple of 512 ends with an empty block"
        );
        assert!(t.on_packet(&ack(3), now).is_empty());
        assert!(t.is_complete());
    }

    #[test]
    fn options_are_acknowledged_and_windows_recover_from_loss() {
        let data: Arc<[u8]> = vec![1u8; 10_000].into();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let req = vec![
            ("blksize".into(), "1024".into()),
            ("tsize".into(), "0".into()),
            ("windowsize".into(), "4".into()),
            ("x-unknown".into(), "1".into()),
        ];
        let (mut t, out) = Transfer::start(data, &req, 1468, now);
        assert_eq!(
            Packet::decode(&out[0]),
            Some(Packet::Oack {
                options: vec![
                    ("blksize".into(), "1024".into()),
                    ("tsize".into(), "10000".into()),
                    ("windowsize".into(), "4".into())
                ]
            })
        );
        assert_eq!(blocks(&t.on_packet(&ack(0), now)), [1, 2, 3, 4]);
        // Block 3 lost: the client acknowledges 2; we resend from 3.
        assert_eq!(blocks(&t.on_packet(&ack(2), now)), [3, 4, 5, 6]);
        assert!(
            t.on_packet(&ack(2), now).is_empty(),
            "duplicate ACKs are ignored"
        );
        assert_eq!(
            blocks(&t.on_timeout(now)),
            [3, 4, 5, 6],
            "a timeout resends the window"
        );
        assert_eq!(blocks(&t.on_packet(&ack(6), now)), [7, 8, 9, 10]);
        assert!(t.on_packet(&ack(10), now).is_empty());
        assert!(t.is_complete());
    }

    #[test]
    fn block_numbers_roll_over() {
        let data: Arc<[u8]> = vec![0u8; 8 * 70_000].into();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (mut t, _) = Transfer::start(data, &[("blksize".into(), "8".into())], 1468, now);
        let mut out = t.on_packet(&ack(0), now);
        let mut seen = 0u64;
        while !out.is_empty() {
            let b = blocks(&out)[0];
            seen += 1;
            assert_eq!(b, (seen & 0xffff) as u16);
            out = t.on_packet(&ack(b), now);
        }
        assert!(t.is_complete());
        assert_eq!(seen, 70_001);
    }

    #[test]
    fn gives_up_after_retries() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (mut t, _) = Transfer::start(vec![1u8; 10].into(), &[], 1468, now);
        for _ in 0..MAX_RETRIES {
            assert_eq!(blocks(&t.on_timeout(now)), [1]);
        }
        assert!(matches!(
            Packet::decode(&t.on_timeout(now)[0]),
            Some(Packet::Error { .. })
        ));
        assert!(t.is_failed());
    }
}
