//! The syslog receiver (UDP 514, as Smee's): HookOS, tink-agent and iPXE send
//! their logs to the `syslog_host` of their kernel line or DHCP option 7, and
//! each line is filed in the timeline of the machine whose address sent it, so
//! the operator sees the in-memory OS's output beside the workflow's events.
//!
//! A datagram's source address can be forged, so a line is marked
//! unauthenticated ([`EventSource::Syslog`], [`EventKind::SyslogLine`]) and
//! nothing reads it to change any state. The network is hostile: datagrams are
//! size-bounded, each address has a rate ([`SyslogLimits`]), lines from
//! addresses of no Hardware are dropped, and what is dropped is counted.
//!
//! [`Receiver`] is the sans-IO core (datagram, source and `now` in, a line or
//! the reason it was dropped out); [`SyslogServer`] is the thin tokio driver
//! that reads the socket, asks the store whose address it is and files the
//! line.

use crate::per_address::{Rate, RateTable};
use jiff::Timestamp;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tinker_core::WorkflowStore;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::store::{EventKind, EventSource, MachineEvent};
use tokio::net::UdpSocket;

/// The port syslog listens on (RFC 5426), where HookOS sends its logs.
pub const SYSLOG_PORT: u16 = 514;

/// Datagrams taken and filed together, in one store write.
pub const BATCH: usize = 64;

/// What the receiver takes from the network.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SyslogLimits {
    /// The largest datagram taken, in bytes (default 2,048, what RFC 5426
    /// says every receiver takes; longer ones are dropped, not cut).
    pub max_datagram: usize,
    /// Lines per source address (default burst 200, 50 per second: a booting
    /// HookOS is chatty for a moment, a flood is not let through).
    pub per_address: Rate,
    /// Addresses whose buckets are kept (default 4,096; a source address is
    /// the sender's word, so it is capped).
    pub max_tracked_addresses: usize,
}

impl Default for SyslogLimits {
    fn default() -> Self {
        SyslogLimits {
            max_datagram: 2048,
            per_address: Rate {
                burst: 200.0,
                per_second: 50.0,
            },
            max_tracked_addresses: 4096,
        }
    }
}

impl SyslogLimits {
    /// The defaults; set fields on the result.
    pub fn new() -> Self {
        Self::default()
    }
}

/// One parsed syslog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogLine {
    /// Facility (0 kern, 1 user, 3 daemon, ...).
    pub facility: u8,
    /// Severity (0 emerg to 7 debug).
    pub severity: u8,
    /// The sending program (RFC 3164's tag, RFC 5424's APP-NAME).
    pub app: Option<String>,
    /// The message, control characters replaced (it is shown in terminals and
    /// pages).
    pub text: String,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dropped {
    /// Its address sent more than its rate.
    RateLimited,
    /// Longer than [`SyslogLimits::max_datagram`].
    TooLarge,
    /// Not a syslog message: not UTF-8, no `<PRI>`, or neither RFC 3164 nor
    /// RFC 5424.
    Malformed,
}

/// The sans-IO core: decides, per datagram, whether it is a line to file.
#[derive(Debug)]
pub struct Receiver {
    limits: SyslogLimits,
    rates: RateTable<IpAddr>,
    evictions: u64,
}

impl Receiver {
    /// A receiver held to `limits`, every address's bucket full.
    pub fn new(limits: SyslogLimits) -> Self {
        Receiver {
            rates: RateTable::new(limits.per_address, limits.max_tracked_addresses),
            limits,
            evictions: 0,
        }
    }

    /// What `datagram` from `from`, received at `now`, is. The rate is
    /// checked first, so a flood costs no parsing.
    pub fn handle(
        &mut self,
        now: Timestamp,
        from: IpAddr,
        datagram: &[u8],
    ) -> Result<SyslogLine, Dropped> {
        let (admitted, evicted) = self.rates.take(from.to_canonical(), now);
        self.evictions += evicted;
        if !admitted {
            return Err(Dropped::RateLimited);
        }
        if datagram.len() > self.limits.max_datagram {
            return Err(Dropped::TooLarge);
        }
        parse(datagram, now).ok_or(Dropped::Malformed)
    }

    /// Buckets dropped so far to keep the table under its cap.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// Parses RFC 3164 or RFC 5424 (`syslog_loose`), requiring the `<PRI>` both
/// begin with. A year-less RFC 3164 date takes `now`'s year; the sender's
/// time is not kept anyway (its clock is its word).
fn parse(datagram: &[u8], now: Timestamp) -> Option<SyslogLine> {
    let text = std::str::from_utf8(datagram).ok()?;
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let (pri, body) = split_pri(text)?;
    let year = i32::from(jiff::tz::Offset::UTC.to_datetime(now).year());
    if let Ok(m) =
        syslog_loose::parse_message_with_year_exact(text, |_| year, syslog_loose::Variant::Either)
        && let (Some(facility), Some(severity)) = (m.facility, m.severity)
    {
        // A sender without a host name (busybox's syslogd forwarding,
        // `<PRI>Mmm dd hh:mm:ss tag: msg`) has its tag read as the host name.
        let app = m.appname.or(m.hostname.filter(|h| {
            m.protocol == syslog_loose::Protocol::RFC3164 && text.contains(&format!(" {h}: "))
        }));
        return Some(SyslogLine {
            facility: facility as u8,
            severity: severity as u8,
            app: app.map(clean).filter(|a| !a.is_empty()),
            text: clean(m.msg),
        });
    }
    // RFC 3164 without its timestamp, as iPXE sends (`<PRI>[host ]ipxe: msg`):
    // RFC 3164 takes it (section 4.3.2), `syslog_loose` does not.
    let (app, message) = match body.split_once(": ") {
        Some((head, message)) => {
            let app = head.rsplit(' ').next().unwrap_or(head);
            let app = app.split('[').next().unwrap_or(app);
            (Some(clean(app)).filter(|a| !a.is_empty()), message)
        }
        None => (None, body),
    };
    Some(SyslogLine {
        facility: pri >> 3,
        severity: pri & 7,
        app,
        text: clean(message),
    })
}

/// `<PRI>` (1 to 3 digits, at most 191: facility 23, severity 7) and the rest.
fn split_pri(text: &str) -> Option<(u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let (digits, body) = rest.split_once('>')?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pri: u8 = digits.parse().ok().filter(|p| *p <= 191)?;
    Some((pri, body))
}

/// The text with control characters (a terminal's escapes) replaced.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// Counters of the syslog receiver (on `/metrics` as `tinker_syslog_*`).
#[derive(Debug, Default)]
pub struct SyslogStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Lines filed in a machine's timeline.
    pub filed: AtomicU64,
    /// Datagrams dropped as malformed.
    pub malformed: AtomicU64,
    /// Datagrams dropped as too large.
    pub too_large: AtomicU64,
    /// Datagrams dropped: their address was over its rate.
    pub rate_limited: AtomicU64,
    /// Lines dropped: no Hardware has their source address.
    pub unknown_source: AtomicU64,
    /// Lines lost to a store error (a failed lookup loses its line, a failed
    /// write its whole batch).
    pub store_errors: AtomicU64,
    /// Rate-limiter buckets dropped to stay under the cap.
    pub limiter_evictions: AtomicU64,
}

/// The receiver on a socket: files each line in its machine's timeline.
#[derive(Debug)]
pub struct SyslogServer {
    store: Arc<dyn WorkflowStore>,
    limits: SyslogLimits,
    clock: SharedClock,
    stats: Arc<SyslogStats>,
}

impl SyslogServer {
    /// A receiver filing lines in `store`, with the default limits.
    pub fn new(store: Arc<dyn WorkflowStore>) -> Self {
        SyslogServer {
            store,
            limits: SyslogLimits::default(),
            clock: SystemClock::shared(),
            stats: Arc::default(),
        }
    }

    /// Holds senders to `limits`.
    pub fn with_limits(mut self, limits: SyslogLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads the time (rates, event times) from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<SyslogStats> {
        self.stats.clone()
    }

    /// Receives on `socket` until `shutdown` resolves. One batch at a time:
    /// the datagrams waiting (up to [`BATCH`]) are taken, their machines looked
    /// up, and their lines filed in one store write (one commit, not one per
    /// line); a burst meanwhile waits in the socket's buffer, and what
    /// overflows it is lost there, so nothing here grows with the senders.
    pub async fn serve(
        self,
        socket: UdpSocket,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut receiver = Receiver::new(self.limits.clone());
        // One byte more than the limit tells a too-large datagram from one
        // that just fits.
        let mut buf = vec![0u8; self.limits.max_datagram + 1];
        let mut lines = Vec::with_capacity(BATCH);
        tokio::pin!(shutdown);
        loop {
            let (n, peer) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = socket.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    // ICMP errors and the like from earlier sends: not ours.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e),
                },
            };
            self.take(&mut receiver, peer.ip(), &buf[..n], &mut lines);
            for _ in 1..BATCH {
                match socket.try_recv_from(&mut buf) {
                    Ok((n, peer)) => self.take(&mut receiver, peer.ip(), &buf[..n], &mut lines),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            self.file(std::mem::take(&mut lines)).await;
        }
    }

    /// Runs one datagram through the receiver: a line joins `lines`, a drop
    /// is counted.
    fn take(
        &self,
        receiver: &mut Receiver,
        from: IpAddr,
        datagram: &[u8],
        lines: &mut Vec<(Timestamp, IpAddr, SyslogLine)>,
    ) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let from = from.to_canonical();
        let before = receiver.evictions();
        let outcome = receiver.handle(now, from, datagram);
        self.stats
            .limiter_evictions
            .fetch_add(receiver.evictions() - before, Ordering::Relaxed);
        match outcome {
            Ok(line) => lines.push((now, from, line)),
            Err(dropped) => {
                let counter = match dropped {
                    Dropped::RateLimited => &self.stats.rate_limited,
                    Dropped::TooLarge => &self.stats.too_large,
                    Dropped::Malformed => &self.stats.malformed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, ?dropped, "syslog datagram dropped");
            }
        }
    }

    /// Files each line under the machine whose Hardware has its source
    /// address (each address looked up once per batch), in one store write.
    async fn file(&self, lines: Vec<(Timestamp, IpAddr, SyslogLine)>) {
        let mut machines: std::collections::HashMap<IpAddr, Option<String>> =
            std::collections::HashMap::new();
        let mut events = Vec::with_capacity(lines.len());
        for (at, from, line) in lines {
            let machine = match machines.get(&from) {
                Some(m) => m.clone(),
                None => {
                    let m = match self.store.hardware_by_ip(from).await {
                        Ok(hw) => hw.map(|hw| {
                            format!(
                                "{}/{}",
                                hw.value.metadata.namespace(),
                                hw.value.metadata.name
                            )
                        }),
                        Err(e) => {
                            tracing::warn!(%from, error = %e, "syslog: store lookup failed");
                            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    machines.insert(from, m.clone());
                    m
                }
            };
            let Some(machine) = machine else {
                self.stats.unknown_source.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            events.push(MachineEvent::new(
                at,
                machine,
                EventSource::Syslog,
                EventKind::SyslogLine {
                    from,
                    facility: line.facility,
                    severity: line.severity,
                    app: line.app,
                    line: line.text,
                },
            ));
        }
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        match self.store.append_events(events).await {
            Ok(()) => {
                self.stats.filed.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.store_errors.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(error = %e, lines = n, "syslog: could not file lines");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rfc3164_and_rfc5424_lines_are_parsed() {
        let mut r = Receiver::new(SyslogLimits::default());
        let a = ip("10.0.0.7");
        let line = r
            .handle(
                t0(),
                a,
                b"<30>Dec  1 03:04:05 hook tink-agent[42]: pulling image\n",
            )
            .unwrap();
        assert_eq!(
            line,
            SyslogLine {
                facility: 3,
                severity: 6,
                app: Some("tink-agent".into()),
                text: "pulling image".into(),
            }
        );
        let line = r
            .handle(
                t0(),
                a,
                b"<11>1 2026-12-01T03:04:05Z hook hook-bootkit 7 - - starting tink-agent",
            )
            .unwrap();
        assert_eq!((line.facility, line.severity), (1, 3));
        assert_eq!(line.app.as_deref(), Some("hook-bootkit"));
        assert_eq!(line.text, "starting tink-agent");
        // No host name (busybox syslogd forwarding): the tag is the program.
        let line = r
            .handle(
                t0(),
                a,
                b"<13>Dec  1 03:04:05 hook-bootkit: stand-in booted",
            )
            .unwrap();
        assert_eq!(line.app.as_deref(), Some("hook-bootkit"));
        assert_eq!(line.text, "stand-in booted");
        // iPXE's own: a bare RFC 3164 line.
        let line = r
            .handle(t0(), a, b"<6>ipxe: Downloading vmlinuz-x86_64")
            .unwrap();
        assert_eq!((line.facility, line.severity), (0, 6));
        assert_eq!(line.app.as_deref(), Some("ipxe"));
        assert_eq!(line.text, "Downloading vmlinuz-x86_64");
        let line = r.handle(t0(), a, b"<190>m1 ipxe: dhcp ok\n").unwrap();
        assert_eq!((line.facility, line.severity), (23, 6));
        assert_eq!(
            (line.app.as_deref(), line.text.as_str()),
            (Some("ipxe"), "dhcp ok")
        );
    }

    #[test]
    fn malformed_and_oversized_datagrams_are_dropped() {
        let mut r = Receiver::new(SyslogLimits::default());
        let a = ip("10.0.0.7");
        for bad in [
            &b"no priority at all"[..],
            b"",
            b"<999>1 too high a priority",
            b"<13\xff\xfe>not utf-8",
            b"<abc>hello",
            b"<>hello",
            b"<0013>hello",
            b"<13 hello",
        ] {
            assert_eq!(
                r.handle(t0(), a, bad),
                Err(Dropped::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut big = b"<13>".to_vec();
        big.resize(2049, b'a');
        assert_eq!(r.handle(t0(), a, &big), Err(Dropped::TooLarge));
        big.truncate(2048);
        assert!(r.handle(t0(), a, &big).is_ok(), "the limit itself is taken");
    }

    #[test]
    fn control_characters_are_replaced() {
        let mut r = Receiver::new(SyslogLimits::default());
        let line = r
            .handle(t0(), ip("10.0.0.7"), b"<13>app: red \x1b[31m alert\x07 end")
            .unwrap();
        assert!(!line.text.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.text.contains("red") && line.text.contains("end"));
    }

    #[test]
    fn each_address_has_its_rate() {
        let limits = SyslogLimits {
            per_address: Rate {
                burst: 5.0,
                per_second: 1.0,
            },
            ..SyslogLimits::default()
        };
        let mut r = Receiver::new(limits);
        let (a, b) = (ip("10.0.0.7"), ip("10.0.0.8"));
        for _ in 0..5 {
            assert!(r.handle(t0(), a, b"<13>x: hi").is_ok());
        }
        assert_eq!(r.handle(t0(), a, b"<13>x: hi"), Err(Dropped::RateLimited));
        // Malformed datagrams spend the budget too.
        assert_eq!(r.handle(t0(), a, b"junk"), Err(Dropped::RateLimited));
        assert!(r.handle(t0(), b, b"<13>x: hi").is_ok(), "others unaffected");
        // An IPv4-mapped IPv6 source is the same address.
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(
            r.handle(t0(), mapped, b"<13>x: hi"),
            Err(Dropped::RateLimited)
        );
        let later = t0() + Duration::from_secs(1);
        assert!(
            r.handle(later, a, b"<13>x: hi").is_ok(),
            "refilled at its rate"
        );
    }
}
