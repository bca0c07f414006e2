//! The conformance suite on the in-memory ports.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use routero_core::conformance;
use routero_core::memory::{ManualClock, MemoryElector, MemoryQueue, MemoryStore};

fn clock() -> Arc<ManualClock> {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
        .unwrap()
        .to_utc();
    Arc::new(ManualClock::new(start))
}

#[tokio::test]
async fn queue() {
    conformance::queue_orders_reads_and_trims(&MemoryQueue::new(4)).await;
    conformance::queue_ignores_duplicate_batch_ids(&MemoryQueue::new(4)).await;
    conformance::queue_keeps_shards_apart(&MemoryQueue::new(4)).await;
}

#[tokio::test]
async fn elector() {
    conformance::elector_single_holder(&MemoryElector::new(clock())).await;
    let shared = Arc::new(MemoryElector::new(clock()));
    conformance::elector_race_has_one_winner(&*shared, &*shared).await;
    let clock = clock();
    let elector = MemoryElector::new(clock.clone());
    conformance::elector_expiry_and_takeover(&elector, Duration::from_secs(5), |d| {
        clock.advance(d);
        std::future::ready(())
    })
    .await;
}

#[tokio::test]
async fn store() {
    conformance::store_applies_exactly_once(&MemoryStore::new()).await;
    conformance::store_refuses_a_stale_leader(&MemoryStore::new()).await;
    conformance::reader_scopes_and_groups(&MemoryStore::new()).await;
}

#[tokio::test]
async fn pipeline() {
    conformance::pipeline_is_exactly_once(
        Arc::new(MemoryQueue::new(4)),
        Arc::new(MemoryElector::new(clock())),
        Arc::new(MemoryStore::new()),
    )
    .await;
}

#[tokio::test]
async fn wallet() {
    conformance::wallet_top_ups_are_idempotent(&MemoryStore::new()).await;
    conformance::wallet_refuses_invalid_credits(&MemoryStore::new()).await;
    conformance::wallet_lots_and_history(&MemoryStore::new()).await;
    conformance::drain_debits_managed_spend_only(&MemoryStore::new()).await;
    conformance::wallet_concurrent_writes_lose_nothing(&MemoryStore::new()).await;
}

#[tokio::test]
async fn invoices() {
    conformance::invoices_close_months_and_carry_late_spend(&MemoryStore::new()).await;
}

#[tokio::test]
async fn export_round_trips_a_month() {
    conformance::export_round_trips_a_month(&MemoryStore::new()).await;
}

#[tokio::test]
async fn poison_batches() {
    let store = Arc::new(MemoryStore::new());
    let rates = store.clone();
    conformance::poison_batches_never_stall_a_shard(store, move |r| rates.set_rates(r)).await;
}
