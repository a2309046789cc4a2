//! Rate limits on DHCP requests, per client MAC and per relay agent, before the
//! boot responder (a store lookup) is asked. Anyone on the provisioning network
//! can send requests from made-up MACs; a flood must not grow anything without
//! bound nor starve the other racks. So each MAC and each relay (`giaddr`; the
//! directly attached segment counts as one) has a token bucket, and the tables
//! of buckets are capped: when one is full, buckets that have refilled (whose
//! client has been quiet) are dropped, and if that is not enough, others are,
//! counted as evictions (an evicted client starts again with a full bucket, so
//! eviction never blocks anyone).
//!
//! Pure: the time is an input ([`RateLimiter::admit`] takes `now`).

pub use crate::per_address::Rate;
use crate::per_address::RateTable as Table;
use jiff::Timestamp;
use std::net::Ipv4Addr;
use tinker_core::MacAddr;

/// The DHCP server's limits.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DhcpLimits {
    /// Per client MAC (default burst 16, 2 per second): a PXE boot is two
    /// exchanges (the ROM's and iPXE's) of two requests each, plus
    /// retransmissions at 4, 8, 16 and 32 s.
    pub per_mac: Rate,
    /// Per relay agent, and for the directly attached segment (default burst
    /// 40,000, 20,000 packets per second: a relay serves one rack or subnet,
    /// and even a few hundred machines powering on at once with every
    /// retransmission stay far below it, while one relay cannot take the
    /// whole responder from the others; a load generator behind a single
    /// relay, like `benches/dhcp_perf.sh`, raises it).
    pub per_relay: Rate,
    /// MACs whose buckets are kept (default 65,536).
    pub max_tracked_macs: usize,
    /// Relays whose buckets are kept (default 4,096; `giaddr` is the sender's
    /// word, so it is capped like a MAC).
    pub max_tracked_relays: usize,
}

impl Default for DhcpLimits {
    fn default() -> Self {
        DhcpLimits {
            per_mac: Rate {
                burst: 16.0,
                per_second: 2.0,
            },
            per_relay: Rate {
                burst: 40_000.0,
                per_second: 20_000.0,
            },
            max_tracked_macs: 65_536,
            max_tracked_relays: 4_096,
        }
    }
}

impl DhcpLimits {
    /// The defaults; set fields on the result.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Why a request was dropped by the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limited {
    /// Its MAC sent more than its rate.
    Mac,
    /// Its relay (or the local segment) sent more than its rate.
    Relay,
}

/// The per-MAC and per-relay buckets of one server.
#[derive(Debug)]
pub struct RateLimiter {
    macs: Table<MacAddr>,
    relays: Table<Ipv4Addr>,
}

impl RateLimiter {
    /// A limiter with `limits`, every bucket full.
    pub fn new(limits: &DhcpLimits) -> Self {
        RateLimiter {
            macs: Table::new(limits.per_mac, limits.max_tracked_macs),
            relays: Table::new(limits.per_relay, limits.max_tracked_relays),
        }
    }

    /// Whether a request from `mac` through `relay` (`None`: the directly
    /// attached segment) may be answered at `now`, and how many buckets were
    /// evicted to decide it. The MAC is checked first, so one noisy client does
    /// not spend its relay's budget.
    pub fn admit(
        &mut self,
        mac: MacAddr,
        relay: Option<Ipv4Addr>,
        now: Timestamp,
    ) -> (Result<(), Limited>, u64) {
        let (ok, mut evicted) = self.macs.take(mac, now);
        if !ok {
            return (Err(Limited::Mac), evicted);
        }
        let (ok, e) = self
            .relays
            .take(relay.unwrap_or(Ipv4Addr::UNSPECIFIED), now);
        evicted += e;
        (if ok { Ok(()) } else { Err(Limited::Relay) }, evicted)
    }

    /// Buckets kept: MACs, relays.
    pub fn tracked(&self) -> (usize, usize) {
        (self.macs.len(), self.relays.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn limits(mac: (f64, f64), relay: (f64, f64), macs: usize) -> DhcpLimits {
        DhcpLimits {
            per_mac: Rate {
                burst: mac.0,
                per_second: mac.1,
            },
            per_relay: Rate {
                burst: relay.0,
                per_second: relay.1,
            },
            max_tracked_macs: macs,
            max_tracked_relays: 16,
        }
    }

    #[test]
    fn a_mac_gets_its_burst_then_its_rate() {
        let mut l = RateLimiter::new(&limits((4.0, 2.0), (1e6, 1e6), 100));
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        for _ in 0..4 {
            assert_eq!(l.admit(mac, None, t0()).0, Ok(()));
        }
        assert_eq!(l.admit(mac, None, t0()).0, Err(Limited::Mac));
        let other = MacAddr([2, 0, 0, 0, 0, 2]);
        assert_eq!(l.admit(other, None, t0()).0, Ok(()), "others unaffected");
        // Half a second at 2/s is one more request.
        let later = t0() + Duration::from_millis(500);
        assert_eq!(l.admit(mac, None, later).0, Ok(()));
        assert_eq!(l.admit(mac, None, later).0, Err(Limited::Mac));
    }

    #[test]
    fn a_relay_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let mut l = RateLimiter::new(&limits((10.0, 1.0), (100.0, 10.0), 100_000));
        let flood = Some(Ipv4Addr::new(10, 1, 0, 1));
        let mut admitted = 0;
        for i in 0..1000u32 {
            let b = i.to_be_bytes();
            let mac = MacAddr([2, 9, b[0], b[1], b[2], b[3]]);
            if l.admit(mac, flood, t0()).0.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 100);
        let calm = Some(Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(l.admit(MacAddr([2, 0, 0, 0, 0, 9]), calm, t0()).0, Ok(()));
        let (ok, _) = l.admit(MacAddr([2, 0, 0, 0, 1, 9]), flood, t0());
        assert_eq!(ok, Err(Limited::Relay));
        let (ok, _) = l.admit(
            MacAddr([2, 0, 0, 0, 1, 9]),
            flood,
            t0() + Duration::from_secs(1),
        );
        assert_eq!(ok, Ok(()), "refilled at its rate");
    }

    #[test]
    fn made_up_macs_grow_nothing_without_bound() {
        let mut l = RateLimiter::new(&limits((16.0, 2.0), (1e9, 1e9), 1000));
        let mut evicted = 0;
        let mut now = t0();
        for i in 0..100_000u32 {
            let b = i.to_be_bytes();
            let (ok, e) = l.admit(MacAddr([2, 7, b[0], b[1], b[2], b[3]]), None, now);
            assert_eq!(ok, Ok(()), "a new MAC starts with a full bucket");
            evicted += e;
            assert!(l.tracked().0 <= 1000, "{:?}", l.tracked());
            if i % 10_000 == 0 {
                now += Duration::from_secs(60);
            }
        }
        assert!(evicted > 0 && evicted < 100_000, "{evicted}");
        // A MAC that keeps sending is still limited while the table churns.
        let noisy = MacAddr([2, 8, 0, 0, 0, 1]);
        let limited = (0..100)
            .filter(|_| l.admit(noisy, None, now).0.is_err())
            .count();
        assert_eq!(limited, 100 - 16);
    }
}
