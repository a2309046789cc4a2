//! The default `BootResponder` and `MetadataSource` against the conformance
//! suites of `tinker_core::testing`, over every store: in-memory, the embedded
//! store in a temporary directory, and PostgreSQL (started by the test, as the
//! store's own tests start it).

use std::net::Ipv4Addr;
use std::sync::Arc;
use tinker_boot::{BootConfig, StoreBootResponder, StoreMetadata};
use tinker_core::WorkflowStore;
use tinker_core::testing;
use tinker_store::testing::TempPostgres;
use tinker_store::{MemoryStore, PostgresStore, RedbStore};

async fn conforms(store: Arc<dyn WorkflowStore>) {
    let responder = StoreBootResponder::new(
        store.clone(),
        BootConfig {
            tftp_server: Ipv4Addr::new(192, 0, 2, 1),
            http_base: "http://192.0.2.1:8080".into(),
            default_lease_seconds: 86400,
            record_events: true,
        },
    );
    testing::boot::run_all(&responder, store.as_ref()).await;
    let metadata = StoreMetadata::new(store.clone());
    testing::metadata::run_all(&metadata, store.as_ref()).await;
}

#[tokio::test]
async fn default_responder_and_metadata_conform_over_the_memory_store() {
    conforms(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn default_responder_and_metadata_conform_over_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("tinker.redb"))
        .await
        .unwrap();
    conforms(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_responder_and_metadata_conform_over_postgres() {
    let Some(pg) = TempPostgres::start() else {
        return;
    };
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    conforms(Arc::new(store)).await;
}
