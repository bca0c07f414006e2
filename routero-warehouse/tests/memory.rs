//! The warehouse sync over the in-memory store.

use routero_core::memory::MemoryStore;
use routero_warehouse::conformance;

#[tokio::test]
async fn warehouse_suite() {
    conformance::warehouse_suite(|_| async { MemoryStore::new() }).await;
}
