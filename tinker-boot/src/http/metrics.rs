//! `/metrics`: one Prometheus registry (`prometheus-client`) for every service of
//! a replica. Each service keeps its counters as plain atomics (the hot paths add
//! to them without knowing about Prometheus); what it registers is a collector
//! that reads them at scrape time, under the metric names dashboards know
//! (`tinker_dhcp_acks_total`, ...).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Something with Prometheus metrics to show on `/metrics`: the DHCP, TFTP and
/// HTTP servers' counters, the worker API's, or a vendor's own.
pub trait MetricsSource: Send + Sync + std::fmt::Debug + 'static {
    /// Registers its metrics (usually one collector) in the server's registry.
    fn register(self: Arc<Self>, registry: &mut Registry);
}

/// One counter of a stats struct: its name without the `_total` the encoder
/// appends, its help, and where its value is.
pub struct CounterRow<T> {
    /// The name, without `_total`.
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// Where its value is.
    pub value: fn(&T) -> &AtomicU64,
}

impl<T> std::fmt::Debug for CounterRow<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterRow")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Reads a stats struct's atomics into counters at each scrape.
pub(crate) struct Counters<T: 'static> {
    stats: Arc<T>,
    rows: &'static [CounterRow<T>],
}

impl<T> std::fmt::Debug for Counters<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field(
                "names",
                &self.rows.iter().map(|r| r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<T: Send + Sync + 'static> Collector for Counters<T> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for row in self.rows {
            let counter = ConstCounter::new((row.value)(&self.stats).load(Ordering::Relaxed));
            let metric =
                encoder.encode_descriptor(row.name, row.help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// Registers the collector over `stats`'s `rows`.
pub fn register_counters<T: Send + Sync + 'static>(
    registry: &mut Registry,
    stats: Arc<T>,
    rows: &'static [CounterRow<T>],
) {
    registry.register_collector(Box::new(Counters { stats, rows }));
}

macro_rules! rows {
    ($t:ty: $($field:ident => $name:literal, $help:literal;)*) => {
        &[$(CounterRow::<$t> { name: $name, help: $help, value: |s| &s.$field }),*]
    };
}

const DHCP: &[CounterRow<crate::dhcp::DhcpStats>] = rows! { crate::dhcp::DhcpStats:
    received => "tinker_dhcp_received", "DHCP packets received";
    malformed => "tinker_dhcp_malformed", "DHCP packets dropped as malformed";
    unknown_mac => "tinker_dhcp_unknown_mac", "DHCP requests from unknown MACs";
    ignored => "tinker_dhcp_ignored", "DHCP requests ignored";
    offers => "tinker_dhcp_offers", "DHCPOFFERs sent";
    acks => "tinker_dhcp_acks", "DHCPACKs sent";
    naks => "tinker_dhcp_naks", "DHCPNAKs sent";
    releases => "tinker_dhcp_releases", "DHCPRELEASEs received";
    declines => "tinker_dhcp_declines", "DHCPDECLINEs received";
    informs => "tinker_dhcp_informs", "DHCPINFORMs answered";
    overload_drops => "tinker_dhcp_overload_drops", "DHCP packets shed: requests waiting on the boot responder were at their limit";
    kernel_drops => "tinker_dhcp_kernel_drops", "DHCP packets the kernel dropped: the receive queue was full";
    shed => "tinker_dhcp_shed", "DHCP packets shed under overload, unanswered so the client retransmits";
    responder_errors => "tinker_dhcp_responder_errors", "boot responder errors";
    rate_limited_mac => "tinker_dhcp_rate_limited_mac", "DHCP requests dropped: their MAC was over its rate";
    rate_limited_relay => "tinker_dhcp_rate_limited_relay", "DHCP requests dropped: their relay or segment was over its rate";
    limiter_evictions => "tinker_dhcp_limiter_evictions", "DHCP rate-limiter buckets dropped to stay under the cap";
    unencodable => "tinker_dhcp_unencodable", "DHCP replies that could not be encoded";
};

const TFTP: &[CounterRow<crate::tftp::TftpStats>] = rows! { crate::tftp::TftpStats:
    requests => "tinker_tftp_requests", "TFTP read requests";
    completed => "tinker_tftp_completed", "TFTP transfers completed";
    failed => "tinker_tftp_failed", "TFTP transfers abandoned";
    not_found => "tinker_tftp_not_found", "TFTP requests for missing files";
    refused => "tinker_tftp_refused", "TFTP requests outside the served directory";
    malformed => "tinker_tftp_malformed", "malformed TFTP packets";
    bytes => "tinker_tftp_bytes", "TFTP file bytes sent and acknowledged";
    shed => "tinker_tftp_shed", "TFTP requests not answered (the client retransmits): the transfer limit was reached";
    shed_per_address => "tinker_tftp_shed_per_address", "TFTP requests not answered (the client retransmits): the address's transfer limit was reached";
    duplicate_requests => "tinker_tftp_duplicate_requests", "TFTP read requests ignored: the same client has a transfer in progress";
    unanswered => "tinker_tftp_unanswered", "TFTP transfers abandoned: the client acknowledged nothing for too long";
    file_reads => "tinker_tftp_file_reads", "files read from disk for TFTP transfers";
    cache_hits => "tinker_tftp_cache_hits", "TFTP transfers served from the file cache";
};

/// The TFTP transfers in progress, a level rather than a count.
#[derive(Debug)]
struct TftpActive(Arc<crate::tftp::TftpStats>);

impl Collector for TftpActive {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(self.0.active.load(Ordering::Relaxed) as i64);
        gauge.encode(encoder.encode_descriptor(
            "tinker_tftp_active",
            "TFTP transfers in progress",
            None,
            gauge.metric_type(),
        )?)
    }
}

pub(crate) const HTTP: &[CounterRow<super::HttpStats>] = rows! { super::HttpStats:
    requests => "tinker_http_requests", "HTTP requests";
    scripts => "tinker_http_ipxe_scripts", "iPXE scripts served";
    metadata => "tinker_http_metadata", "metadata answers";
    metadata_unknown => "tinker_http_metadata_unknown", "metadata requests from unknown addresses";
    metadata_refused => "tinker_http_metadata_refused", "metadata requests by an instance id not the caller's";
    asset_bytes => "tinker_http_asset_bytes", "boot asset bytes sent";
    refused => "tinker_http_refused", "paths refused";
    scripts_without_token => "tinker_http_ipxe_scripts_without_token", "iPXE scripts served without the machine's token to a caller not the machine";
    scripts_osie_missing => "tinker_http_ipxe_scripts_osie_missing", "iPXE scripts that told a machine to wait because its in-memory OS was missing from the assets";
};

impl MetricsSource for crate::dhcp::DhcpStats {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        register_counters(registry, self, DHCP);
    }
}

const SYSLOG: &[CounterRow<crate::syslog::SyslogStats>] = rows! { crate::syslog::SyslogStats:
    received => "tinker_syslog_received", "syslog datagrams received";
    filed => "tinker_syslog_filed", "syslog lines filed in a machine's timeline";
    malformed => "tinker_syslog_malformed", "syslog datagrams dropped as malformed";
    too_large => "tinker_syslog_too_large", "syslog datagrams dropped as too large";
    rate_limited => "tinker_syslog_rate_limited", "syslog datagrams dropped: their address was over its rate";
    unknown_source => "tinker_syslog_unknown_source", "syslog lines dropped: no Hardware has their source address";
    store_errors => "tinker_syslog_store_errors", "syslog lines lost to a store error";
    limiter_evictions => "tinker_syslog_limiter_evictions", "syslog rate-limiter buckets dropped to stay under the cap";
};

impl MetricsSource for crate::syslog::SyslogStats {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        register_counters(registry, self, SYSLOG);
    }
}

impl MetricsSource for crate::tftp::TftpStats {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        register_counters(registry, self.clone(), TFTP);
        registry.register_collector(Box::new(TftpActive(self)));
    }
}

/// The registry of one HTTP server: its own counters and every source's.
pub(crate) fn registry(
    http: Arc<super::HttpStats>,
    sources: &[Arc<dyn MetricsSource>],
) -> Registry {
    let mut registry = Registry::default();
    register_counters(&mut registry, http, HTTP);
    for source in sources {
        source.clone().register(&mut registry);
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_sample_names_and_values() {
        let dhcp = Arc::new(crate::dhcp::DhcpStats::default());
        dhcp.acks.store(7, Ordering::Relaxed);
        let tftp = Arc::new(crate::tftp::TftpStats::default());
        tftp.bytes.store(1 << 40, Ordering::Relaxed);
        let http = Arc::new(super::super::HttpStats::default());
        http.scripts.store(3, Ordering::Relaxed);
        let registry = registry(http, &[dhcp, tftp]);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in [
            "# HELP tinker_dhcp_acks DHCPACKs sent",
            "# TYPE tinker_dhcp_acks counter",
            "tinker_dhcp_acks_total 7",
            "tinker_dhcp_received_total 0",
            "tinker_tftp_bytes_total 1099511627776",
            "tinker_http_ipxe_scripts_total 3",
            "tinker_http_requests_total 0",
            "# EOF",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line:?} missing in:\n{out}"
            );
        }
        let samples = out.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, DHCP.len() + TFTP.len() + 1 + HTTP.len());
    }
}
