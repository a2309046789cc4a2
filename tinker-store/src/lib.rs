//! # tinker-store
//!
//! [`WorkflowStore`](tinker_core::WorkflowStore) implementations:
//!
//! - [`MemoryStore`]: in memory, for tests, demos and embedding where state may be lost;
//! - [`RedbStore`]: the embedded persistent default, one file, no server to run
//!   (on [redb](https://docs.rs/redb): pure Rust, ACID, copy-on-write B-trees whose
//!   commits survive a crash);
//! - [`PostgresStore`]: for several control-plane replicas sharing one database
//!   (`FOR UPDATE SKIP LOCKED` claims, `LISTEN/NOTIFY` change feed, a version
//!   column for optimistic concurrency).
//!
//! All three pass the conformance suite in `tinker_core::testing::store`. Feature
//! `testing` adds [`testing::TempPostgres`], a throwaway PostgreSQL for tests. The workflow logic they execute inside their
//! transactions is `tinker_core::store::{apply_to_workflow, claim_in_workflow}`,
//! written once.
//!
//! ```
//! use std::sync::Arc;
//! use tinker_core::{Precondition, WorkflowStore, WorkflowStoreExt};
//! use tinker_store::RedbStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store: Arc<dyn WorkflowStore> = Arc::new(RedbStore::open(dir.path().join("tinker.redb")).await?);
//! let hw = tinker_core::model::Hardware::new("sm01", "3c:ec:ef:4c:4f:54".parse().unwrap(),
//!     "172.16.10.100".parse().unwrap(), "255.255.255.0");
//! store.put(hw.into(), Precondition::Absent).await?;
//! assert!(store.hardware("default", "sm01").await?.is_some());
//! # Ok::<(), tinker_core::Error>(()) }).unwrap();
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

mod common;
mod embedded;
mod memory;
mod postgres;
#[cfg(feature = "testing")]
pub mod testing;

pub use embedded::RedbStore;
pub use memory::{MAX_EVENTS_PER_MACHINE, MemoryStore};
pub use postgres::PostgresStore;
