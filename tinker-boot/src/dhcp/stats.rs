use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the DHCP server, exposed as Prometheus metrics (registered by
/// `http::MetricsSource`).
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
    /// Packets dropped because the server was overloaded: requests waiting on
    /// the boot responder (a store lookup) were at their limit.
    pub overload_drops: AtomicU64,
    /// Packets the kernel dropped because the socket's receive queue was full:
    /// they came faster than the server answers (`SO_RXQ_OVFL`).
    pub kernel_drops: AtomicU64,
    /// Every packet shed for overload, by the server or the kernel: not
    /// answered, so the client retransmits (no NAK, nothing that ends a boot).
    pub shed: AtomicU64,
    /// Errors from the boot responder.
    pub responder_errors: AtomicU64,
    /// Requests dropped: their MAC sent more than its rate.
    pub rate_limited_mac: AtomicU64,
    /// Requests dropped: their relay (or the local segment) sent more than its rate.
    pub rate_limited_relay: AtomicU64,
    /// Rate-limiter buckets dropped to keep its tables under their caps.
    pub limiter_evictions: AtomicU64,
    /// Replies that could not be encoded (a boot file name too long for DHCP).
    pub unencodable: AtomicU64,
}

impl DhcpStats {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
