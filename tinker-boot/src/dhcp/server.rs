//! The tokio driver of the DHCP engine: one socket on port 67 (and, in proxy mode,
//! one on 4011), bound to one interface, each read by one loop; each packet is
//! parsed, the boot responder asked, the reply sent, in batches (see
//! [`DhcpServer::serve`]). A bounded number of requests wait on the boot
//! responder at once; beyond it, and beyond the kernel's receive queue, packets
//! are shed without an answer and counted rather than queued without bound.

use super::batch;
use super::limit::{DhcpLimits, Limited, RateLimiter};
use super::request::{self, Inbound};
use super::stats::DhcpStats;
use super::{DhcpConfig, Outbound, Skip, Verdict};
use crate::credentials::ObservedAddresses;
use dhcproto::v4::MessageType;
use nix::sys::socket::sockopt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tinker_core::BootResponder;
use tinker_core::boot::IgnoreReason;
use tinker_core::clock::{SharedClock, SystemClock};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Requests waiting on the boot responder (a store lookup) at once before
/// packets are shed.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Datagrams read (`recvmmsg`) or written (`sendmmsg`) per system call.
pub const BATCH: usize = batch::BATCH;

/// A DHCP server.
#[derive(Debug, Clone)]
pub struct DhcpServer {
    config: DhcpConfig,
    responder: Arc<dyn BootResponder>,
    stats: Arc<DhcpStats>,
    observed: Option<Arc<ObservedAddresses>>,
    /// Per-MAC and per-relay buckets; a std mutex, never held across an await.
    limiter: Arc<Mutex<RateLimiter>>,
    /// The rate limiter's time.
    clock: SharedClock,
    /// Requests waiting on the boot responder at once before packets are shed.
    max_in_flight: usize,
    /// How long to let requests gather after a busy wakeup (zero: never).
    coalesce: std::time::Duration,
}

/// Binds a UDP socket for DHCP: broadcast allowed, address reuse (so a proxyDHCP
/// server can share port 67 with another daemon on a different address), and,
/// when named, bound to one interface so it answers only there.
pub fn bind_udp(addr: SocketAddr, interface: Option<&str>) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    // A row of racks powering on at once sends its DISCOVERs in one burst: let the
    // kernel queue them (up to net.core.rmem_max) rather than drop them unseen.
    let _ = socket.set_recv_buffer_size(4 << 20);
    if let Some(ifname) = interface {
        socket.bind_device(Some(ifname.as_bytes()))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

impl DhcpServer {
    /// A server with this engine configuration and boot policy.
    pub fn new(config: DhcpConfig, responder: Arc<dyn BootResponder>) -> Self {
        DhcpServer {
            config,
            responder,
            stats: Arc::default(),
            observed: None,
            limiter: Arc::new(Mutex::new(RateLimiter::new(&DhcpLimits::default()))),
            clock: SystemClock::shared(),
            max_in_flight: MAX_IN_FLIGHT,
            coalesce: std::time::Duration::ZERO,
        }
    }

    /// After a wakeup that found several requests but less than a full batch
    /// (the server is busy, yet drains its queue faster than it fills), waits
    /// `wait` on the server's clock before reading again, so the next read finds
    /// a batch: one wakeup per batch rather than per packet or two (the
    /// profile of issue 17 put a fifth of the server's time in `epoll_wait` and
    /// the context switches around it). A quiet server (one request per
    /// wakeup) never waits. Off by default; a millisecond is nothing to a
    /// client that retransmits after seconds.
    pub fn with_coalescing(mut self, wait: std::time::Duration) -> Self {
        self.coalesce = wait;
        self
    }

    /// Sheds packets once `n` requests wait on the boot responder, instead of
    /// [`MAX_IN_FLIGHT`].
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// In proxyDHCP mode, records in `observed` the address each machine's own
    /// REQUEST asks of the network's DHCP server, so the HTTP services can tell
    /// the machine's later requests from anyone else's (see
    /// [`CallerCheck`](crate::credentials::CallerCheck)).
    pub fn with_observed_addresses(mut self, observed: Arc<ObservedAddresses>) -> Self {
        self.observed = Some(observed);
        self
    }

    /// Rate-limits requests by `limits` instead of [`DhcpLimits::default`].
    pub fn with_limits(mut self, limits: DhcpLimits) -> Self {
        self.limiter = Arc::new(Mutex::new(RateLimiter::new(&limits)));
        self
    }

    /// Reads the rate limiter's time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The rate limiter's buckets kept: MACs, relays (each capped).
    pub fn tracked(&self) -> (usize, usize) {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tracked()
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<DhcpStats> {
        self.stats.clone()
    }

    /// The engine configuration.
    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// Decides and builds the answer to one packet: the whole server minus the
    /// socket, so simulations and benchmarks run exactly this.
    pub async fn handle(
        &self,
        bytes: &[u8],
        source: SocketAddr,
        on_proxy_port: bool,
    ) -> Option<Outbound> {
        let inbound = self.admit(bytes, source, on_proxy_port)?;
        let decision = self.responder.decide(&inbound.request).await;
        self.finish(&inbound, decision)
    }

    /// The first half of [`handle`](Self::handle), before the boot responder
    /// is asked: parse, rate limits, screening. `None`: dropped (and counted).
    fn admit(&self, bytes: &[u8], source: SocketAddr, on_proxy_port: bool) -> Option<Inbound> {
        DhcpStats::inc(&self.stats.received);
        let inbound = match request::parse(bytes, source, on_proxy_port) {
            Ok(i) => i,
            Err(e) => {
                DhcpStats::inc(&self.stats.malformed);
                tracing::debug!(%source, reason = %e, "DHCP packet dropped");
                return None;
            }
        };
        let mac = inbound.request.mac;
        let (admitted, evicted) = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(mac, inbound.request.relay, self.clock.now());
        if evicted > 0 {
            self.stats
                .limiter_evictions
                .fetch_add(evicted, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(why) = admitted {
            DhcpStats::inc(match why {
                Limited::Mac => &self.stats.rate_limited_mac,
                Limited::Relay => &self.stats.rate_limited_relay,
            });
            tracing::debug!(%mac, relay = ?inbound.request.relay, ?why, "DHCP request over its rate, dropped");
            return None;
        }
        if let (Some(observed), super::Mode::Proxy, MessageType::Request) =
            (&self.observed, self.config.mode, inbound.kind)
        {
            let asked = inbound
                .requested_ip
                .or(Some(inbound.msg.ciaddr()).filter(|ip| !ip.is_unspecified()));
            if let Some(ip) = asked {
                observed.record(mac, ip.into());
            }
        }
        match inbound.kind {
            MessageType::Release => DhcpStats::inc(&self.stats.releases),
            MessageType::Decline => {
                DhcpStats::inc(&self.stats.declines);
                tracing::warn!(%mac, "DHCPDECLINE: the client found its address in use");
            }
            _ => {}
        }
        if let Err(skip) = request::screen(&self.config, &inbound) {
            DhcpStats::inc(&self.stats.ignored);
            tracing::debug!(%mac, kind = ?inbound.kind, reason = %skip, "DHCP request ignored");
            return None;
        }
        Some(inbound)
    }

    /// The second half of [`handle`](Self::handle): the reply for the boot
    /// responder's decision, counted.
    fn finish(
        &self,
        inbound: &Inbound,
        decision: tinker_core::Result<tinker_core::boot::BootDecision>,
    ) -> Option<Outbound> {
        let mac = inbound.request.mac;
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                DhcpStats::inc(&self.stats.responder_errors);
                tracing::warn!(%mac, error = %e, "boot responder failed");
                return None;
            }
        };
        match super::reply(&self.config, inbound, &decision) {
            Verdict::Reply(out) => {
                self.count_reply(inbound, &out);
                // Debug, not info: at line rate a line per answer costs more
                // than the answer (issue 17's profile).
                tracing::debug!(%mac, request = ?inbound.kind, reply = ?out.kind, dest = %out.dest, client = ?inbound.request.client, arch = ?inbound.request.arch, "DHCP answer");
                Some(out)
            }
            Verdict::Ignore(skip) => {
                if skip == Skip::Policy(IgnoreReason::UnknownMac) {
                    DhcpStats::inc(&self.stats.unknown_mac);
                } else if skip == Skip::Unencodable {
                    DhcpStats::inc(&self.stats.unencodable);
                    tracing::warn!(%mac, "DHCP reply could not be encoded (a boot file name too long?)");
                } else {
                    DhcpStats::inc(&self.stats.ignored);
                }
                tracing::debug!(%mac, kind = ?inbound.kind, reason = %skip, "DHCP request ignored");
                None
            }
        }
    }

    fn count_reply(&self, inbound: &Inbound, out: &Outbound) {
        let counter = match out.kind {
            MessageType::Offer => &self.stats.offers,
            MessageType::Ack if inbound.kind == MessageType::Inform => &self.stats.informs,
            MessageType::Ack => &self.stats.acks,
            MessageType::Nak => &self.stats.naks,
            _ => return,
        };
        DhcpStats::inc(counter);
    }

    /// Serves on `socket` (port 67) and, for proxyDHCP, `proxy_socket` (4011),
    /// until `shutdown` resolves.
    ///
    /// One receive loop per socket, no task per packet: each wakeup reads up to
    /// [`BATCH`] datagrams with one `recvmmsg`, answers each in place when the
    /// boot responder decides without waiting (the Hardware cached), and sends
    /// the replies with one `sendmmsg`. A request whose decision must wait (a
    /// store lookup) becomes a task, at most [`MAX_IN_FLIGHT`] at once; past
    /// that, and past the kernel's receive queue, requests are shed: not
    /// answered (the client retransmits), counted in `overload_drops`,
    /// `kernel_drops` and `shed`.
    pub async fn serve(
        self,
        socket: UdpSocket,
        proxy_socket: Option<UdpSocket>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let waiting = Arc::new(Semaphore::new(self.max_in_flight));
        let main = self.receive_loop(Arc::new(socket), false, waiting.clone());
        let proxy = async {
            match proxy_socket {
                Some(s) => self.receive_loop(Arc::new(s), true, waiting.clone()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => Ok(()),
            r = main => r,
            r = proxy => r,
        }
    }

    async fn receive_loop(
        &self,
        socket: Arc<UdpSocket>,
        on_proxy: bool,
        waiting: Arc<Semaphore>,
    ) -> std::io::Result<()> {
        // The kernel then says on each datagram how many it dropped for want of
        // room in the receive queue: the shed we cannot see otherwise.
        if let Err(e) = nix::sys::socket::setsockopt(&*socket, sockopt::RxqOvfl, &1) {
            tracing::debug!(error = %e, "SO_RXQ_OVFL not available; kernel drops not counted");
        }
        let mut batch = batch::Received::new();
        let mut replies: Vec<Outbound> = Vec::with_capacity(BATCH);
        loop {
            socket.readable().await?;
            let got = match socket.try_io(Interest::READABLE, || batch.recv(&socket)) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if got.dropped > 0 {
                self.stats.kernel_drops.fetch_add(got.dropped, Relaxed);
                self.stats.shed.fetch_add(got.dropped, Relaxed);
            }
            for (bytes, source) in batch.datagrams() {
                let Some(inbound) = self.admit(bytes, source, on_proxy) else {
                    continue;
                };
                let responder = self.responder.clone();
                let request = inbound.request.clone();
                let mut decision = Box::pin(async move { responder.decide(&request).await });
                // Most answers are decided without waiting (the responder's
                // cache): poll once here, in this loop, rather than spawn.
                let mut cx = Context::from_waker(Waker::noop());
                if let Poll::Ready(d) = decision.as_mut().poll(&mut cx) {
                    replies.extend(self.finish(&inbound, d));
                    continue;
                }
                let Ok(permit) = waiting.clone().try_acquire_owned() else {
                    DhcpStats::inc(&self.stats.overload_drops);
                    DhcpStats::inc(&self.stats.shed);
                    continue;
                };
                let this = self.clone();
                let socket = socket.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(out) = this.finish(&inbound, decision.await)
                        && let Err(e) = socket.send_to(&out.bytes, out.dest).await
                    {
                        tracing::debug!(dest = %out.dest, error = %e, "DHCP reply not sent");
                    }
                });
            }
            send_all(&socket, &mut replies).await;
            if got.datagrams >= 2 && got.datagrams < BATCH && !self.coalesce.is_zero() {
                self.clock.sleep(self.coalesce).await;
            }
        }
    }
}

/// Sends `replies` (and empties it): one `sendmmsg` while the socket takes
/// them, then, for what it would not take at once, one at a time as it drains.
async fn send_all(socket: &UdpSocket, replies: &mut Vec<Outbound>) {
    let mut start = 0;
    while start < replies.len() {
        match socket.try_io(Interest::WRITABLE, || {
            batch::send(socket, &replies[start..])
        }) {
            Ok(sent) => start += sent,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let out = &replies[start];
                if let Err(e) = socket.send_to(&out.bytes, out.dest).await {
                    tracing::debug!(dest = %out.dest, error = %e, "DHCP reply not sent");
                }
                start += 1;
            }
            // The first reply could not be sent at all (no route to a relay, say):
            // skip it, send the rest.
            Err(e) => {
                tracing::debug!(dest = %replies[start].dest, error = %e, "DHCP reply not sent");
                start += 1;
            }
        }
    }
    replies.clear();
}

/// The unspecified address with a port, for binding.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}
