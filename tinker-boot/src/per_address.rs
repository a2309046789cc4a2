//! What each client address holds of a server, capped: the HTTP server's
//! connections and the TFTP server's transfers are counted here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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
