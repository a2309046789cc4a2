//! The store's own failures, beyond what [`tinker_core::Error`] names. The
//! [`WorkflowStore`](tinker_core::WorkflowStore) trait returns
//! `tinker_core::Error`; these travel as the source of its `Backend` variant, so a
//! caller that cares (an operator tool facing a too-new file, say) finds them with
//! `source.downcast_ref::<StoreError>()`.

use std::path::PathBuf;
use std::sync::Arc;

/// A boxed error from a backend library, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong inside a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store was written by newer code, with a schema this code does not know.
    /// Nothing was changed.
    #[error(
        "{store}: schema version {found} is newer than this code knows (up to {supported}): run the Tinker version that wrote it or a newer one, or restore a backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// The store: a file path or a database.
        store: String,
        /// The version recorded in the store.
        found: u32,
        /// The newest version this code knows.
        supported: u32,
    },
    /// One schema migration step failed; its transaction was rolled back, so the
    /// store is still at version `from`.
    #[error("{store}: migrating the schema from version {from} to {to} ({what}) failed: {source}")]
    MigrationFailed {
        /// The store: a file path or a database.
        store: String,
        /// The version the store stays at.
        from: u32,
        /// The version the step was to reach.
        to: u32,
        /// What the step does.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// The database URL does not parse. It is not repeated here, as it may hold a
    /// password.
    #[error(
        "the database URL does not parse: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    )]
    InvalidUrl,
    /// The store's file or directory could not be opened or created.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A record could not be turned into JSON or read back from it (a stored
    /// record that this code cannot read, or a value that cannot be written).
    #[error("a stored record is not valid JSON for this version: {0}")]
    Record(#[from] serde_json::Error),
    /// A change's announcement to the other replicas would pass PostgreSQL's
    /// NOTIFY limit (a name or namespace of thousands of bytes). Nothing was
    /// written.
    #[error(
        "{key}: its change announcement would take {bytes} bytes, past PostgreSQL's limit of {max}: use a shorter name"
    )]
    AnnouncementTooLong {
        /// The object's key.
        key: String,
        /// The announcement's length.
        bytes: usize,
        /// The longest PostgreSQL takes.
        max: usize,
    },
    /// The embedded store's writer thread is gone (the process is shutting down,
    /// or the thread could not be started), so no write can be made.
    #[error("the embedded store's writer thread has stopped")]
    WriterStopped,
    /// A write was sound but the batch of writes it was committed with was not:
    /// another write of the batch failed on storage, or the commit itself failed.
    /// Nothing of the batch was written; the write may be retried.
    #[error("the batch of writes holding this one was not committed: {0}")]
    BatchNotCommitted(Arc<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps this error as `tinker_core::Error::Backend` for `backend`.
    #[cfg(any(feature = "redb", feature = "postgres"))]
    pub(crate) fn into_core(self, backend: &'static str) -> tinker_core::Error {
        tinker_core::Error::backend(backend, self)
    }
}
