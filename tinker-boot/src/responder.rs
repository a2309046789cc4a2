//! The default boot policy, backed by the store: find the Hardware by MAC, hand out
//! its reservation, and pick the boot target by client kind and architecture.
//! The Hardware of each MAC is kept in a [`HardwareCache`] fed by the store's
//! change feed, so a DHCP packet costs no store lookup.

use crate::hardware_cache::{Cached, DEFAULT_MAX_UNKNOWN, HardwareCache};
use async_trait::async_trait;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tinker_core::boot::{
    BootDecision, BootRequest, BootResponder, BootTarget, ClientKind, IgnoreReason, NetworkConfig,
};
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::model::Hardware;
use tinker_core::store::{EventKind, EventSource, MachineEvent};
use tinker_core::{Result, WorkflowStore};

/// Where boot files and scripts are served from.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// The TFTP server's address (`siaddr`).
    pub tftp_server: Ipv4Addr,
    /// Base URL of the HTTP server, such as `http://10.0.0.1:8080`.
    pub http_base: String,
    /// Lease time when the Hardware gives none.
    pub default_lease_seconds: u32,
    /// Record each decision in the machine's event log.
    pub record_events: bool,
}

/// The iPXE binary for a client architecture (RFC 4578 option 93, as Tinkerbell
/// maps it); `None` for architectures we cannot boot.
pub fn boot_file_for_arch(arch: u16) -> Option<&'static str> {
    match arch {
        0..=5 | 20 => Some("undionly.kpxe"),
        6..=9 | 15 | 16 => Some("ipxe.efi"),
        10 | 11 | 18 | 19 | 41 => Some("snp-arm64.efi"),
        _ => None,
    }
}

/// The default [`BootResponder`].
#[derive(Debug, Clone)]
pub struct StoreBootResponder {
    store: Arc<dyn WorkflowStore>,
    config: BootConfig,
    /// Stamps the events it records.
    clock: SharedClock,
    /// What was recorded per machine lately (see [`Coalescer`]): a DHCP
    /// exchange asks the same question two to four times (DISCOVER, REQUEST,
    /// renewals), a client may rotate its architecture option on every packet,
    /// and a store write (an fsync with the embedded store) per packet would
    /// turn a packet flood into a write flood. Keyed by known Hardware only.
    last_recorded: Arc<std::sync::Mutex<std::collections::HashMap<String, Coalescer>>>,
    /// Writes the events in batches, off the reply path.
    events: Arc<crate::event_writer::EventWriter>,
    /// Name Smee's script path in answers to iPXE.
    smee_script_path: bool,
    /// MAC → its Hardware and network settings, invalidated by the store's
    /// change feed.
    cache: Arc<HardwareCache<Arc<Resolved>>>,
}

/// What the responder keeps of a MAC's Hardware: the parts of every answer that
/// depend on the Hardware alone, worked out once (the profile showed the MAC
/// strings of the interfaces parsed and the addresses read anew per packet).
#[derive(Debug)]
pub struct Resolved {
    hw: Hardware,
    /// The interface with the MAC.
    interface: Option<usize>,
    /// Its reservation.
    network: Option<NetworkConfig>,
}

/// How long a decision recorded for a machine is not recorded again, and the
/// window over which a machine's records are counted.
pub const BOOT_EVENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The most boot decisions recorded per machine per [`BOOT_EVENT_WINDOW`]: a PXE
/// boot makes two or three (PXE ROM, iPXE, HTTP boot); the rest of a flood is
/// dropped.
pub const MAX_BOOT_EVENTS_PER_WINDOW: u32 = 8;

/// The distinct decisions remembered per machine.
const REMEMBERED: usize = 8;

/// Decides, per machine, which boot decisions reach the event log: not one
/// recorded within [`BOOT_EVENT_WINDOW`] (a retransmission, or a client cycling
/// through a few answers), and at most [`MAX_BOOT_EVENTS_PER_WINDOW`] per window (a
/// client inventing a new answer per packet). Pure: the time is an input.
#[derive(Debug, Default)]
struct Coalescer {
    /// Recently recorded decisions and when, oldest first.
    recent: std::collections::VecDeque<(String, jiff::Timestamp)>,
    window_start: Option<jiff::Timestamp>,
    in_window: u32,
}

impl Coalescer {
    /// Whether `message` is to be recorded at `now` (and if so, notes it).
    fn admit(&mut self, message: &str, now: jiff::Timestamp) -> bool {
        let window = jiff::SignedDuration::try_from(BOOT_EVENT_WINDOW).unwrap_or_default();
        let within = |t: jiff::Timestamp| now.duration_since(t) < window;
        if self
            .recent
            .iter()
            .any(|(m, at)| m == message && within(*at))
        {
            return false;
        }
        if !self.window_start.is_some_and(within) {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= MAX_BOOT_EVENTS_PER_WINDOW {
            return false;
        }
        self.in_window += 1;
        self.recent.retain(|(m, _)| m != message);
        if self.recent.len() >= REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((message.to_string(), now));
        true
    }
}

impl StoreBootResponder {
    /// A responder over `store`.
    pub fn new(store: Arc<dyn WorkflowStore>, config: BootConfig) -> Self {
        StoreBootResponder {
            config,
            clock: SystemClock::shared(),
            last_recorded: Arc::default(),
            events: Arc::new(crate::event_writer::EventWriter::new(store.clone(), "dhcp")),
            smee_script_path: false,
            cache: Arc::new(HardwareCache::new(store.watch(), DEFAULT_MAX_UNKNOWN)),
            store,
        }
    }

    /// Its MAC → Hardware cache (for its counters, and for tests).
    pub fn cache(&self) -> &Arc<HardwareCache<Arc<Resolved>>> {
        &self.cache
    }

    /// The same responder, naming Smee's script path
    /// (`/ipxe/script/<mac>/auto.ipxe`) to iPXE instead of ours
    /// (`/ipxe/<mac>/auto.ipxe`), as a Tinkerbell network does; the HTTP
    /// server serves both. The control plane does so when HookOS is its
    /// default in-memory OS.
    pub fn with_smee_script_path(mut self, smee: bool) -> Self {
        self.smee_script_path = smee;
        self
    }

    /// The same responder, stamping its events with `clock`'s time.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn resolve(&self, hw: Hardware, mac: tinker_core::MacAddr) -> Resolved {
        let interface = hw
            .spec
            .interfaces
            .iter()
            .position(|i| i.dhcp.as_ref().and_then(|d| d.mac.parse().ok()) == Some(mac));
        let network = interface.and_then(|i| self.network(&hw.spec.interfaces[i]));
        Resolved {
            hw,
            interface,
            network,
        }
    }

    fn network(&self, interface: &tinker_core::model::Interface) -> Option<NetworkConfig> {
        let dhcp = interface.dhcp.as_ref()?;
        let ip = dhcp.ip.as_ref()?;
        let address: Ipv4Addr = ip.address.parse().ok()?;
        let prefix = ip
            .netmask
            .as_deref()
            .and_then(|m| tinker_core::validate::netmask_prefix(m).ok())
            .unwrap_or(24);
        Some(NetworkConfig {
            address,
            prefix,
            gateway: ip.gateway.as_deref().and_then(|g| g.parse().ok()),
            dns: dhcp
                .name_servers
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            ntp: dhcp
                .time_servers
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            hostname: dhcp.hostname.clone(),
            domain: dhcp.domain_name.clone(),
            lease_seconds: dhcp
                .lease_time
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(self.config.default_lease_seconds),
        })
    }

    fn boot(
        &self,
        r: &Resolved,
        req: &BootRequest,
    ) -> std::result::Result<Option<BootTarget>, IgnoreReason> {
        let iface = r.interface.map(|i| &r.hw.spec.interfaces[i]);
        let netboot = iface.and_then(|i| i.netboot.as_ref());
        if netboot.and_then(|n| n.allow_pxe) != Some(true) {
            return Err(IgnoreReason::NetbootNotAllowed);
        }
        let mac = req.mac;
        let base = self.config.http_base.trim_end_matches('/');
        let binary_override = netboot
            .and_then(|n| n.ipxe.as_ref())
            .and_then(|i| i.binary.clone());
        let binary = || {
            binary_override
                .clone()
                .or_else(|| req.arch.and_then(boot_file_for_arch).map(str::to_string))
        };
        Ok(match req.client {
            ClientKind::Ipxe => Some(BootTarget::IpxeScript {
                url: if self.smee_script_path {
                    format!("{base}/ipxe/script/{mac}/auto.ipxe")
                } else {
                    format!("{base}/ipxe/{mac}/auto.ipxe")
                },
            }),
            ClientKind::HttpBoot => {
                let file = binary().ok_or(IgnoreReason::UnknownArchitecture)?;
                Some(BootTarget::Http {
                    url: format!("{base}/ipxe/binary/{file}"),
                })
            }
            ClientKind::PxeRom => {
                let file = binary().ok_or(IgnoreReason::UnknownArchitecture)?;
                Some(BootTarget::Tftp {
                    server: self.config.tftp_server,
                    file,
                })
            }
            // Plain DHCP clients, and kinds this responder does not know, get an
            // address only.
            _ => None,
        })
    }

    async fn record(&self, machine: String, message: String) {
        if !self.config.record_events {
            return;
        }
        let now = self.clock.now();
        {
            let mut last = self.last_recorded.lock().unwrap_or_else(|e| e.into_inner());
            if !last
                .entry(machine.clone())
                .or_default()
                .admit(&message, now)
            {
                return;
            }
        }
        let event = MachineEvent::new(
            now,
            machine,
            EventSource::Dhcp,
            EventKind::BootDecision { decision: message },
        );
        // Written in the background: the answer to a booting machine does not wait
        // for the event log (with the embedded store, an fsync queued behind every
        // other write during a boot storm), and a row of machines' events go
        // in one batch.
        self.events.record(event);
    }
}

impl StoreBootResponder {
    /// The decision for a known machine, and the event to record for it (text
    /// only here, at the edge): pure, no store access.
    fn decide_for(&self, r: &Resolved, req: &BootRequest) -> (BootDecision, Option<String>) {
        let iface = r.interface.map(|i| &r.hw.spec.interfaces[i]);
        if iface.and_then(|i| i.disable_dhcp) == Some(true) {
            let event = format!("DHCP from {} ignored: disableDhcp is set", req.mac);
            let ignore = BootDecision::Ignore {
                reason: IgnoreReason::DhcpDisabled,
            };
            return (ignore, Some(event));
        }
        let network = r.network.clone();
        let (boot, event) = match self.boot(r, req) {
            Ok(Some(b)) => {
                let event = format!(
                    "{:?} client {} (arch {:?}): {b:?}",
                    req.client, req.mac, req.arch
                );
                (Some(b), Some(event))
            }
            // A plain DHCP client (an installed OS) gets its address, nothing to
            // boot, and no event: it is not booting.
            Ok(None) => (None, None),
            Err(why) => {
                let event = format!("{:?} client {}: no boot file: {why}", req.client, req.mac);
                (None, Some(event))
            }
        };
        (BootDecision::Answer { network, boot }, event)
    }
}

#[async_trait]
impl BootResponder for StoreBootResponder {
    async fn decide(&self, req: &BootRequest) -> Result<BootDecision> {
        let found = match self.cache.get(req.mac) {
            Ok(Cached::Known(hw)) => Some(hw),
            Ok(Cached::Unknown) => None,
            Err(epoch) => {
                let found = self
                    .store
                    .hardware_by_mac(req.mac)
                    .await?
                    .map(|v| Arc::new(self.resolve(v.value, req.mac)));
                let keep = found.as_ref().map(|r| {
                    let m = &r.hw.metadata;
                    (m.namespace(), m.name.as_str(), r.clone())
                });
                self.cache.insert(req.mac, epoch, keep);
                found
            }
        };
        let Some(resolved) = found else {
            return Ok(BootDecision::Ignore {
                reason: IgnoreReason::UnknownMac,
            });
        };
        let hw = &resolved.hw;
        let (decision, event) = self.decide_for(&resolved, req);
        if let Some(message) = event {
            let machine = format!("{}/{}", hw.metadata.namespace(), hw.metadata.name);
            self.record(machine, message).await;
        }
        Ok(decision)
    }
}
