//! `MemoryStore`: everything in one mutex-guarded map. The lock is never held
//! across an `.await`, so every operation is one atomic step.

use crate::common::{FEED_CAPACITY, check_key, encode_key, index_diff, kind_prefix, taken};
use async_trait::async_trait;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use tinker_core::model::{Hardware, Kind, Object, ObjectKey, Workflow};
use tinker_core::state::WorkflowEvent;
use tinker_core::store::{
    Applied, Assignment, Change, IndexTerm, MachineEvent, Precondition, Versioned, WorkflowStore,
    apply_to_workflow, check_precondition, claim_in_workflow,
};
use tinker_core::{Error, MacAddr, Result};
use tokio::sync::broadcast;

/// A [`WorkflowStore`] in memory. State is lost when it is dropped. Keeps the
/// newest [`MAX_EVENTS_PER_MACHINE`](crate::MAX_EVENTS_PER_MACHINE) events of
/// each machine (or [`MemoryStore::with_event_cap`]'s number).
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    feed: broadcast::Sender<Change>,
    event_cap: usize,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, Versioned<Object>>,
    index: HashMap<IndexTerm, BTreeSet<String>>,
    events: HashMap<String, VecDeque<MachineEvent>>,
    seq: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            feed: broadcast::channel(FEED_CAPACITY).0,
            event_cap: crate::MAX_EVENTS_PER_MACHINE,
        }
    }

    /// Keeps the newest `cap` events of each machine (at least 1) instead of
    /// [`MAX_EVENTS_PER_MACHINE`](crate::MAX_EVENTS_PER_MACHINE).
    pub fn with_event_cap(mut self, cap: usize) -> Self {
        self.event_cap = cap.max(1);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every write is
        // built before it is inserted), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, key: ObjectKey, version: u64, deleted: bool) {
        let _ = self.feed.send(Change {
            key,
            version,
            deleted,
        });
    }
}

impl Inner {
    fn write(&mut self, key: &ObjectKey, object: Option<Object>, version: u64) -> Result<()> {
        let k = encode_key(key);
        let old = self.objects.get(&k).map(|v| &v.value);
        let (remove, add) = index_diff(old, object.as_ref());
        for term in &add {
            if term.is_unique()
                && let Some(holder) = self
                    .index
                    .get(term)
                    .and_then(|s| s.iter().find(|h| **h != k))
            {
                return Err(taken(term, key, holder));
            }
        }
        for term in remove {
            if let Some(set) = self.index.get_mut(&term) {
                set.remove(&k);
                if set.is_empty() {
                    self.index.remove(&term);
                }
            }
        }
        for term in add {
            self.index.entry(term).or_default().insert(k.clone());
        }
        match object {
            Some(value) => {
                self.objects.insert(k, Versioned { version, value });
            }
            None => {
                self.objects.remove(&k);
            }
        }
        Ok(())
    }

    fn hardware_by(&self, term: &IndexTerm) -> Option<Versioned<Hardware>> {
        let k = self.index.get(term)?.iter().next()?;
        match self.objects.get(k)? {
            Versioned {
                version,
                value: Object::Hardware(h),
            } => Some(Versioned {
                version: *version,
                value: h.clone(),
            }),
            _ => None,
        }
    }

    fn workflow_mut(&mut self, key: &ObjectKey) -> Result<&mut Versioned<Object>> {
        self.objects
            .get_mut(&encode_key(key))
            .filter(|v| matches!(v.value, Object::Workflow(_)))
            .ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })
    }
}

fn as_workflow(v: &mut Versioned<Object>) -> &mut Workflow {
    match &mut v.value {
        Object::Workflow(w) => w,
        _ => unreachable!("workflow_mut checked the kind"),
    }
}

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn put(&self, object: Object, precondition: Precondition) -> Result<u64> {
        let key = object.key();
        check_key(&key)?;
        let version = {
            let mut inner = self.lock();
            let stored = inner.objects.get(&encode_key(&key)).map(|v| v.version);
            check_precondition(&key, stored, precondition)?;
            let version = stored.unwrap_or(0) + 1;
            inner.write(&key, Some(object), version)?;
            version
        };
        self.notify(key, version, false);
        Ok(version)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned<Object>>> {
        Ok(self.lock().objects.get(&encode_key(key)).cloned())
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Object>>> {
        let prefix = kind_prefix(kind);
        Ok(self
            .lock()
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<()> {
        if precondition == Precondition::Absent {
            return Err(Error::Unsupported {
                target: "store".into(),
                operation: "delete with Precondition::Absent".into(),
            });
        }
        let version = {
            let mut inner = self.lock();
            let stored = inner.objects.get(&encode_key(key)).map(|v| v.version);
            let Some(version) = stored else {
                return Err(Error::NotFound {
                    key: key.to_string(),
                });
            };
            check_precondition(key, stored, precondition)?;
            inner.write(key, None, version)?;
            version
        };
        self.notify(key.clone(), version, true);
        Ok(())
    }

    async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Versioned<Hardware>>> {
        Ok(self.lock().hardware_by(&IndexTerm::Mac(mac)))
    }

    async fn workflows_for_worker(&self, worker: &str) -> Result<Vec<Versioned<Workflow>>> {
        let inner = self.lock();
        Ok(inner
            .index
            .get(&IndexTerm::Worker(worker.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).cloned()?.into_workflow())
            .collect())
    }

    async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Versioned<Hardware>>> {
        Ok(self.lock().hardware_by(&IndexTerm::Ip(ip)))
    }

    async fn apply_event(
        &self,
        key: &ObjectKey,
        event: &WorkflowEvent,
        now: Timestamp,
    ) -> Result<Applied> {
        let (applied, changed, result) = {
            let mut inner = self.lock();
            let stored = inner.workflow_mut(key)?;
            let mut wf = as_workflow(stored).clone();
            let (changed, result) = apply_to_workflow(&mut wf, event, now);
            let version = if changed {
                stored.version + 1
            } else {
                stored.version
            };
            if changed {
                inner.write(key, Some(Object::Workflow(wf.clone())), version)?;
            }
            (Versioned { version, value: wf }, changed, result)
        };
        if changed {
            self.notify(key.clone(), applied.version, false);
        }
        let effect = result?;
        Ok(Applied {
            workflow: applied,
            effect,
        })
    }

    async fn claim_next_action_for_request(
        &self,
        worker: &str,
        request: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Assignment>> {
        let mut changes = Vec::new();
        let assignment = {
            let mut inner = self.lock();
            let term = IndexTerm::Worker(worker.to_string());
            let mut skip: BTreeSet<String> = BTreeSet::new();
            let mut found = None;
            loop {
                // Scan without cloning; take out only the first candidate with
                // something due (work for this worker, or a timeout).
                let next = inner.index.get(&term).and_then(|keys| {
                    keys.iter()
                        .filter(|k| !skip.contains(*k))
                        .find(|k| match inner.objects.get(*k).map(|v| &v.value) {
                            Some(Object::Workflow(w)) => w
                                .status
                                .as_ref()
                                .is_some_and(|s| s.claimable(worker, request, now)),
                            _ => false,
                        })
                        .cloned()
                });
                let Some(k) = next else { break };
                skip.insert(k.clone());
                let Some(key) = crate::common::decode_key(&k) else {
                    continue;
                };
                let stored = inner.workflow_mut(&key)?;
                let mut wf = as_workflow(stored).clone();
                let (changed, assignment) = claim_in_workflow(&key, &mut wf, worker, request, now);
                if changed {
                    let version = stored.version + 1;
                    inner.write(&key, Some(Object::Workflow(wf)), version)?;
                    changes.push((key, version));
                }
                if assignment.is_some() {
                    found = assignment;
                    break;
                }
            }
            found
        };
        for (key, version) in changes {
            self.notify(key, version, false);
        }
        Ok(assignment)
    }

    async fn append_event(&self, event: MachineEvent) -> Result<()> {
        self.append_events(vec![event]).await
    }

    async fn append_events(&self, events: Vec<MachineEvent>) -> Result<()> {
        let mut inner = self.lock();
        for mut event in events {
            inner.seq += 1;
            event.seq = inner.seq;
            let log = inner.events.entry(event.machine.clone()).or_default();
            log.push_back(event);
            while log.len() > self.event_cap {
                log.pop_front();
            }
        }
        Ok(())
    }

    async fn events(&self, machine: &str, limit: usize) -> Result<Vec<MachineEvent>> {
        let inner = self.lock();
        let Some(all) = inner.events.get(machine) else {
            return Ok(Vec::new());
        };
        Ok(all
            .iter()
            .skip(all.len().saturating_sub(limit))
            .cloned()
            .collect())
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_conforms() {
        tinker_core::testing::store::run_all(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn memory_event_log_is_bounded() {
        let store = MemoryStore::new().with_event_cap(6);
        tinker_core::testing::store::event_log_is_bounded(&store, 6).await;
    }
}
