//! The tokio driver of the DHCP engine: one socket on port 67 (and, in proxy mode,
//! one on 4011), bound to one interface; each packet is parsed, the boot responder
//! asked, the reply sent. A bounded number of requests are in flight at once;
//! beyond it packets are dropped and counted rather than queued without bound.

use super::limit::{DhcpLimits, Limited, RateLimiter};
use super::request::{self, Inbound};
use super::stats::DhcpStats;
use super::{DhcpConfig, Outbound, Skip, Verdict};
use crate::credentials::ObservedAddresses;
use dhcproto::v4::MessageType;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tinker_core::BootResponder;
use tinker_core::boot::IgnoreReason;
use tinker_core::clock::{SharedClock, SystemClock};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Requests handled at once before packets are shed.
pub const MAX_IN_FLIGHT: usize = 1024;

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
        }
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
        let decision = match self.responder.decide(&inbound.request).await {
            Ok(d) => d,
            Err(e) => {
                DhcpStats::inc(&self.stats.responder_errors);
                tracing::warn!(%mac, error = %e, "boot responder failed");
                return None;
            }
        };
        match super::reply(&self.config, &inbound, &decision) {
            Verdict::Reply(out) => {
                self.count_reply(&inbound, &out);
                tracing::info!(%mac, request = ?inbound.kind, reply = ?out.kind, dest = %out.dest, client = ?inbound.request.client, arch = ?inbound.request.arch, "DHCP answer");
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
    pub async fn serve(
        self,
        socket: UdpSocket,
        proxy_socket: Option<UdpSocket>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let socket = Arc::new(socket);
        let proxy = proxy_socket.map(Arc::new);
        let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; 1500];
        let mut pbuf = vec![0u8; 1500];
        loop {
            let (n, src, on_proxy) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = socket.recv_from(&mut buf) => { let (n, s) = r?; (n, s, false) }
                r = recv_opt(proxy.as_deref(), &mut pbuf) => { let (n, s) = r?; (n, s, true) }
            };
            let bytes = if on_proxy {
                pbuf[..n].to_vec()
            } else {
                buf[..n].to_vec()
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                DhcpStats::inc(&self.stats.overload_drops);
                continue;
            };
            let this = self.clone();
            let out_socket = if on_proxy {
                proxy.clone().unwrap_or_else(|| socket.clone())
            } else {
                socket.clone()
            };
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(out) = this.handle(&bytes, src, on_proxy).await
                    && let Err(e) = out_socket.send_to(&out.bytes, out.dest).await
                {
                    tracing::warn!(dest = %out.dest, error = %e, "DHCP reply not sent");
                }
            });
        }
    }
}

async fn recv_opt(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The unspecified address with a port, for binding.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}
