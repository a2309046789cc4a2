//! At most one event of a kind per machine in a window: what keeps a client
//! that fetches in a loop (an iPXE script, its metadata, a TFTP file) from
//! pushing the machine's other events out of its bounded event log.

use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;

/// The window the boot services use: one event per machine and kind in it.
pub const MACHINE_EVENT_WINDOW: SignedDuration = SignedDuration::from_secs(10);

/// When each (machine, kind) last had an event recorded. Keys are known
/// machines only (callers look the machine up first), so the table holds at
/// most one entry per Hardware and kind.
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

    /// Whether an event of `kind` for `machine` at `now` is to be recorded
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
}
