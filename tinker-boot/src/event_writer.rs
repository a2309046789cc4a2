//! Machine events written in the background, in batches: what the boot
//! services (DHCP, TFTP, HTTP) record as they answer a machine, written by one
//! task per service with `append_events`, so a row of machines booting
//! together costs a store transaction per batch rather than one per event (a
//! PostgreSQL transaction each, five round trips, in the boot storm).
//!
//! Bounded: at most [`QUEUE`] events wait; past it new ones are dropped and
//! counted ([`EventWriter::dropped`]), so a flood of packets from made-up MACs
//! cannot grow the queue without end (it was a spawned task per event).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tinker_core::WorkflowStore;
use tinker_core::store::MachineEvent;
use tokio::sync::mpsc;

/// Events that may wait to be written.
pub const QUEUE: usize = 16_384;

/// Events written in one `append_events` at most.
pub const MAX_BATCH: usize = 1024;

/// A service's background event writer. Cheap to share; its task starts with
/// the first event, on that caller's runtime, and ends when the writer is
/// dropped and the queue is written.
#[derive(Debug)]
pub struct EventWriter {
    store: Arc<dyn WorkflowStore>,
    /// Which service writes (in the log line of a failed write).
    service: &'static str,
    queue: OnceLock<mpsc::Sender<MachineEvent>>,
    dropped: AtomicU64,
}

impl EventWriter {
    /// A writer into `store` for `service`.
    pub fn new(store: Arc<dyn WorkflowStore>, service: &'static str) -> Self {
        EventWriter {
            store,
            service,
            queue: OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `event` (dropped and counted when [`QUEUE`] are waiting).
    pub fn record(&self, event: MachineEvent) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write(self.store.clone(), self.service, rx));
            tx
        });
        if queue.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Said at the first drop and then ever more rarely, so a flood
            // does not flood the log too.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    service = self.service,
                    dropped,
                    "machine events dropped: the queue to the store is full"
                );
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes what waits, a batch at a time, until the writer is gone.
async fn write(
    store: Arc<dyn WorkflowStore>,
    service: &'static str,
    mut queue: mpsc::Receiver<MachineEvent>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let n = batch.len();
        if let Err(e) = store.append_events(std::mem::take(&mut batch)).await {
            tracing::warn!(service, events = n, error = %e, "could not record machine events");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::store::{EventKind, EventSource};

    fn event(machine: &str, i: u64) -> MachineEvent {
        MachineEvent::new(
            jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            machine.to_string(),
            EventSource::Dhcp,
            EventKind::Note {
                message: format!("event {i}"),
            },
        )
    }

    #[tokio::test]
    async fn events_queued_together_are_written_together_in_order() {
        let store = Arc::new(tinker_store_for_tests::Counting::default());
        let writer = EventWriter::new(store.clone(), "test");
        for i in 0..10 {
            writer.record(event("default/m", i));
        }
        // The task runs once this one yields.
        for _ in 0..100 {
            if store.written() == 10 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(store.written(), 10);
        assert_eq!(store.batches(), 1, "queued before the task ran: one batch");
        let events = store.events("default/m", 100).await.unwrap();
        let order: Vec<_> = events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Note { message } => message.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            (0..10).map(|i| format!("event {i}")).collect::<Vec<_>>()
        );
        assert_eq!(writer.dropped(), 0);
    }

    #[tokio::test]
    async fn past_the_queue_events_are_dropped_and_counted() {
        let store = Arc::new(tinker_store_for_tests::Counting::default());
        let writer = EventWriter::new(store.clone(), "test");
        // On this one-thread runtime the task cannot run until this yields.
        for i in 0..(QUEUE as u64 + 5) {
            writer.record(event("default/flood", i));
        }
        assert_eq!(writer.dropped(), 5);
    }

    /// A store that counts its event writes.
    mod tinker_store_for_tests {
        use super::*;
        use tinker_core::Result;
        use tinker_core::model::{Hardware, Kind, Object, ObjectKey};
        use tinker_core::state::WorkflowEvent;
        use tinker_core::store::{Applied, Assignment, Change, Precondition, Versioned};

        #[derive(Debug, Default)]
        pub struct Counting {
            events: std::sync::Mutex<Vec<MachineEvent>>,
            batches: AtomicU64,
        }

        impl Counting {
            pub fn written(&self) -> usize {
                self.events.lock().unwrap().len()
            }
            pub fn batches(&self) -> u64 {
                self.batches.load(Ordering::Relaxed)
            }
        }

        #[async_trait::async_trait]
        impl WorkflowStore for Counting {
            async fn put(&self, _: Object, _: Precondition) -> Result<u64> {
                unimplemented!("events only")
            }
            async fn get(&self, _: &ObjectKey) -> Result<Option<Versioned<Object>>> {
                Ok(None)
            }
            async fn list(&self, _: Kind) -> Result<Vec<Versioned<Object>>> {
                Ok(Vec::new())
            }
            async fn delete(&self, _: &ObjectKey, _: Precondition) -> Result<()> {
                Ok(())
            }
            async fn hardware_by_mac(
                &self,
                _: tinker_core::MacAddr,
            ) -> Result<Option<Versioned<Hardware>>> {
                Ok(None)
            }
            async fn hardware_by_ip(
                &self,
                _: std::net::IpAddr,
            ) -> Result<Option<Versioned<Hardware>>> {
                Ok(None)
            }
            async fn apply_event(
                &self,
                _: &ObjectKey,
                _: &WorkflowEvent,
                _: jiff::Timestamp,
            ) -> Result<Applied> {
                unimplemented!("events only")
            }
            async fn claim_next_action_for_request(
                &self,
                _: &str,
                _: Option<&str>,
                _: jiff::Timestamp,
            ) -> Result<Option<Assignment>> {
                Ok(None)
            }
            async fn append_event(&self, e: MachineEvent) -> Result<()> {
                self.append_events(vec![e]).await
            }
            async fn append_events(&self, e: Vec<MachineEvent>) -> Result<()> {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.events.lock().unwrap().extend(e);
                Ok(())
            }
            async fn events(&self, m: &str, _: usize) -> Result<Vec<MachineEvent>> {
                Ok(self
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|e| e.machine == m)
                    .cloned()
                    .collect())
            }
            fn watch(&self) -> tokio::sync::broadcast::Receiver<Change> {
                tokio::sync::broadcast::channel(1).1
            }
        }
    }
}
