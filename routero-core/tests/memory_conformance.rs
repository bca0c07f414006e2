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
    conformance::queue_suite(|_| async { MemoryQueue::new(4) }).await;
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
    conformance::store_suite(|_| async { MemoryStore::new() }, MemoryStore::set_rates).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding() {
    let queue = Arc::new(MemoryQueue::new(4));
    let resharded = queue.clone();
    conformance::resharding_loses_and_doubles_nothing(
        queue,
        Arc::new(MemoryElector::new(clock())),
        Arc::new(MemoryStore::new()),
        |shards| std::future::ready(resharded.reshard(shards)),
    )
    .await;
}
