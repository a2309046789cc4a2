//! At most one event of a kind per machine in a window: what keeps a client
//! that fetches in a loop (an iPXE script, its metadata, a TFTP file) from
//! pushing the machine's other events out of its bounded event log.

use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;

/// The window the boot services use: one event per machine and kind in it.
pub const MACHINE_EVENT_WINDOW: SignedDuration = SignedDuration::from_secs(10);

/// Most keys held: a caller may key by a client's address before looking its
/// machine up (so the lookup, too, runs once a window), and addresses on a
/// hostile network are many.
pub const MAX_KEYS: usize = 16_384;

/// When each (machine or address, kind) last had an event recorded; at most
/// [`MAX_KEYS`] keys, the expired ones dropped first.
#[derive(Debug)]
pub struct EventWindow {
    window: SignedDuration,
    last: Mutex<HashMap<(String, &'static str), Timestamp>>,
}

impl Default for EventWindow {
    fn default() -> Self {
        EventWindow::new(MACHINE_EVENT_WINDOW)
    }
}

impl EventWindow {
    /// One event per machine and kind every `window`.
    pub fn new(window: SignedDuration) -> Self {
        EventWindow {
            window,
            last: Mutex::default(),
        }
    }

    /// Whether an event of `kind` for `machine` (or a client's address) at `now` is to be recorded
    /// (and, when it is, notes it).
    pub fn admit(&self, machine: &str, kind: &'static str, now: Timestamp) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let key = (machine.to_string(), kind);
        if last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < self.window)
        {
            return false;
        }
        if last.len() >= MAX_KEYS && !last.contains_key(&key) {
            last.retain(|_, t| now.duration_since(*t) < self.window);
            if last.len() >= MAX_KEYS {
                // Full of keys still in their window: this event is not
                // recorded rather than the table growing.
                return false;
            }
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_machine_and_kind_in_the_window() {
        let w = EventWindow::default();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        assert!(w.admit("default/m1", "script", t0));
        assert!(!w.admit("default/m1", "script", t0 + SignedDuration::from_secs(9)));
        assert!(w.admit("default/m1", "metadata", t0));
        assert!(w.admit("default/m2", "script", t0));
        assert!(w.admit("default/m1", "script", t0 + SignedDuration::from_secs(10)));
    }

    #[test]
    fn the_table_is_bounded_and_makes_room_from_expired_keys() {
        let w = EventWindow::default();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        for i in 0..MAX_KEYS {
            assert!(w.admit(&format!("10.0.{}.{}", i / 256, i % 256), "tftp", t0));
        }
        assert!(!w.admit("10.99.0.1", "tftp", t0), "full: not recorded");
        assert_eq!(w.last.lock().unwrap().len(), MAX_KEYS);
        let later = t0 + MACHINE_EVENT_WINDOW;
        assert!(
            w.admit("10.99.0.1", "tftp", later),
            "expired keys make room"
        );
        assert_eq!(w.last.lock().unwrap().len(), 1);
    }
}
