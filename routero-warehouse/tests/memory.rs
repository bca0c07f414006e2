//! The warehouse sync over the in-memory store.

use std::sync::Arc;

use routero_core::memory::MemoryStore;
use routero_warehouse::conformance;

#[tokio::test]
async fn warehouse_round_trips_a_month() {
    conformance::warehouse_round_trips_a_month(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn warehouse_sync_survives_crashes() {
    conformance::warehouse_sync_survives_crashes(Arc::new(MemoryStore::new())).await;
}
