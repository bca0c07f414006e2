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

/// A step whose sums overflow is refused whole: no rollup changes, not even the keys
/// of the same step that would not overflow, and the watermark stays.
#[tokio::test]
async fn an_overflowing_step_changes_nothing() {
    use routero_core::port::{ApplyOutcome, DrainApply, FencingToken, SpendStore};
    use routero_core::spend::{QueuePosition, RollupKey, RollupTotals, Rollups, ShardId};

    let store = MemoryStore::new();
    let [a, b] = [1, 2].map(|seq| conformance::sample_event("acme", seq, "1"));
    let (key_a, key_b) = (RollupKey::of(&a), RollupKey::of(&b));
    assert_ne!(key_a, key_b, "two rollups");
    // Its cost is the last sum taken: B's counts are added before it overflows.
    let near_full = RollupTotals {
        cost: rust_decimal::Decimal::MAX,
        ..RollupTotals::of(&b)
    };
    let first: Rollups = [
        (key_a.clone(), RollupTotals::of(&a)),
        (key_b.clone(), near_full),
    ]
    .into_iter()
    .collect();
    let step = |rollups, expected, through| DrainApply {
        shard: ShardId(0),
        token: FencingToken(1),
        expected,
        through,
        rollups,
        events: &[],
        at: Utc::now(),
    };
    let one = QueuePosition::new(1, 0);
    let applied = store.apply(step(&first, None, one)).await.unwrap();
    assert_eq!(applied, ApplyOutcome::Applied);
    let before = store.all_rollups();
    // Rollups come in key order: A's is added first, so a store that applied in place
    // would have changed it by the time B's sum overflows (after B's counts).
    assert!(key_a < key_b);
    let second: Rollups = [
        (key_a.clone(), RollupTotals::of(&a)),
        (key_b.clone(), RollupTotals::of(&b)),
    ]
    .into_iter()
    .collect();
    let refused = store
        .apply(step(&second, Some(one), QueuePosition::new(2, 0)))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(store.all_rollups(), before);
    assert_eq!(store.applies(), 1);
    // The shard's watermark did not move: the same step's successor is refused.
    let stale = store
        .apply(step(
            &Rollups::new(),
            Some(QueuePosition::new(2, 0)),
            QueuePosition::new(3, 0),
        ))
        .await
        .unwrap();
    assert_ne!(stale, ApplyOutcome::Applied);
}
