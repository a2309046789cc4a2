//! # tinker-store
//!
//! Keeps Tinker's state: [`WorkflowStore`](tinker_core::WorkflowStore)
//! implementations.
//!
//! - [`MemoryStore`]: in memory, for tests, demos and embedding where state may be
//!   lost; always there.
//! - `RedbStore` (feature `redb`, default): the embedded persistent default, one
//!   file, no server to run (on [redb](https://docs.rs/redb): pure Rust, ACID,
//!   copy-on-write B-trees whose commits survive a crash).
//! - `PostgresStore` (feature `postgres`, default): for several control-plane
//!   replicas sharing one database (`FOR UPDATE SKIP LOCKED` claims,
//!   `LISTEN/NOTIFY` change feed, a version column for optimistic concurrency).
//!
//! All three pass the conformance suite in `tinker_core::testing::store`. The
//! workflow logic they execute inside their transactions is
//! `tinker_core::store::{apply_to_workflow, claim_in_workflow}`, written once.
//! Feature `testing` adds `testing::TempPostgres`, a throwaway PostgreSQL for tests.
//!
//! The two persistent stores carry a schema version and migrate older stores on
//! open (each step in a transaction); a store written by newer code is refused
//! with [`StoreError::SchemaTooNew`] as the source of
//! `tinker_core::Error::Backend`, and left unchanged.
//!
//! ```
//! # #[cfg(feature = "redb")] {
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
//! # }
//! ```

#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "postgres")]
mod announcer;
mod common;
#[cfg(feature = "postgres")]
mod copies;
#[cfg(feature = "redb")]
mod embedded;
mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "redb")]
pub use embedded::RedbStore;
pub use error::{BoxError, StoreError};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;

/// Events kept per machine by every store unless built with another cap
/// (`with_event_cap`): the newest are kept, the oldest dropped as new ones
/// come. 10,000 events is a few MiB per machine: many reinstalls' worth of
/// boot decisions, engine steps and action output (a worker's output batch is
/// at most 1,000 lines).
pub const MAX_EVENTS_PER_MACHINE: usize = 10_000;
