//! What each client holds of a server, capped: the HTTP server's connections
//! and the TFTP server's transfers are counted here ([`PerAddress`]), and the
//! DHCP server's and the syslog receiver's rates are limited here
//! (a `RateTable` of token buckets, pure: the time is an input).

use jiff::Timestamp;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A token bucket's shape: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests that may arrive at once.
    pub burst: f64,
    /// Requests per second over time.
    pub per_second: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

impl Bucket {
    fn refilled(&self, rate: Rate, now: Timestamp) -> f64 {
        let secs = now.duration_since(self.at).as_secs_f64().max(0.0);
        (self.tokens + secs * rate.per_second).min(rate.burst)
    }
}

/// Token buckets by key (a MAC, a relay, a client address), at most `cap`
/// of them: when the table is full, buckets that have refilled (whose client
/// has been quiet) are dropped, and if that is not enough, others are,
/// counted as evictions (an evicted client starts again with a full bucket,
/// so eviction never blocks anyone).
#[derive(Debug)]
pub(crate) struct RateTable<K> {
    rate: Rate,
    cap: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Copy> RateTable<K> {
    pub(crate) fn new(rate: Rate, cap: usize) -> Self {
        RateTable {
            rate,
            cap: cap.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `key`; returns whether there was one and how many
    /// buckets were evicted to make room.
    pub(crate) fn take(&mut self, key: K, now: Timestamp) -> (bool, u64) {
        let mut evicted = 0;
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.cap {
            evicted = self.make_room(now);
        }
        let rate = self.rate;
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let tokens = b.refilled(rate, now);
        b.at = now;
        if tokens >= 1.0 {
            b.tokens = tokens - 1.0;
            (true, evicted)
        } else {
            b.tokens = tokens;
            (false, evicted)
        }
    }

    /// Drops the buckets that have refilled (they hold nothing a new bucket
    /// would not), then, if fewer than an eighth went, others down to seven
    /// eighths of the cap: each sweep frees an eighth, so its cost is spread
    /// over the inserts that follow. Returns the evictions (refilled buckets
    /// are not counted: forgetting them changes nothing).
    fn make_room(&mut self, now: Timestamp) -> u64 {
        let rate = self.rate;
        self.buckets
            .retain(|_, b| b.refilled(rate, now) < rate.burst);
        let keep = self.cap - self.cap.div_ceil(8);
        let mut evicted = 0;
        if self.buckets.len() > keep {
            let extra: Vec<K> = self
                .buckets
                .keys()
                .take(self.buckets.len() - keep)
                .copied()
                .collect();
            for k in extra {
                self.buckets.remove(&k);
                evicted += 1;
            }
        }
        evicted
    }

    /// Whether `key` has a token at `now`, without taking it.
    pub(crate) fn has_token(&self, key: K, now: Timestamp) -> bool {
        self.buckets
            .get(&key)
            .is_none_or(|b| b.refilled(self.rate, now) >= 1.0)
    }

    /// Buckets kept.
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// Things held per client address (HTTP connections, TFTP transfers), with a
/// cap; the map holds only addresses holding something, so it is bounded by the
/// server's total limit.
#[derive(Debug, Default)]
pub struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's or transfer's place; frees it when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for `ip` if it holds fewer than `max`.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_slots_are_capped_and_freed() {
        let p = Arc::new(PerAddress::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = p.try_take(a, 2).unwrap();
        let s2 = p.try_take(a, 2).unwrap();
        assert!(p.try_take(a, 2).is_none(), "a third from one address");
        let s3 = p.try_take(b, 2).expect("another address is not affected");
        drop(s1);
        let s4 = p.try_take(a, 2).expect("a freed slot is taken again");
        drop((s2, s3, s4));
        assert!(
            p.open.lock().unwrap().is_empty(),
            "no address is kept once its connections are closed"
        );
        assert!(p.try_take(a, 0).is_none());
        assert!(p.open.lock().unwrap().is_empty());
    }
}
