use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the DHCP server, exposed as Prometheus metrics.
#[derive(Debug, Default)]
pub struct DhcpStats {
    /// Packets received.
    pub received: AtomicU64,
    /// Packets dropped because they could not be decoded or were not requests.
    pub malformed: AtomicU64,
    /// Requests from MACs no Hardware has.
    pub unknown_mac: AtomicU64,
    /// Requests ignored for another reason (DHCP disabled, wrong subnet, not ours).
    pub ignored: AtomicU64,
    /// OFFERs sent.
    pub offers: AtomicU64,
    /// ACKs sent.
    pub acks: AtomicU64,
    /// NAKs sent.
    pub naks: AtomicU64,
    /// RELEASEs received.
    pub releases: AtomicU64,
    /// DECLINEs received (an address conflict on the wire).
    pub declines: AtomicU64,
    /// INFORMs answered.
    pub informs: AtomicU64,
    /// Packets dropped because the server was overloaded.
    pub overload_drops: AtomicU64,
    /// Errors from the boot responder.
    pub responder_errors: AtomicU64,
}

impl DhcpStats {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition of the counters.
    pub fn render(&self, out: &mut String) {
        let rows: [(&str, &AtomicU64, &str); 12] = [
            (
                "tinker_dhcp_received_total",
                &self.received,
                "DHCP packets received",
            ),
            (
                "tinker_dhcp_malformed_total",
                &self.malformed,
                "DHCP packets dropped as malformed",
            ),
            (
                "tinker_dhcp_unknown_mac_total",
                &self.unknown_mac,
                "DHCP requests from unknown MACs",
            ),
            (
                "tinker_dhcp_ignored_total",
                &self.ignored,
                "DHCP requests ignored",
            ),
            ("tinker_dhcp_offers_total", &self.offers, "DHCPOFFERs sent"),
            ("tinker_dhcp_acks_total", &self.acks, "DHCPACKs sent"),
            ("tinker_dhcp_naks_total", &self.naks, "DHCPNAKs sent"),
            (
                "tinker_dhcp_releases_total",
                &self.releases,
                "DHCPRELEASEs received",
            ),
            (
                "tinker_dhcp_declines_total",
                &self.declines,
                "DHCPDECLINEs received",
            ),
            (
                "tinker_dhcp_informs_total",
                &self.informs,
                "DHCPINFORMs answered",
            ),
            (
                "tinker_dhcp_overload_drops_total",
                &self.overload_drops,
                "DHCP packets shed under overload",
            ),
            (
                "tinker_dhcp_responder_errors_total",
                &self.responder_errors,
                "boot responder errors",
            ),
        ];
        for (name, v, help) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
    }
}
