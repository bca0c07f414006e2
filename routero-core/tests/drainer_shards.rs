//! One shard whose store step hangs (a frozen database connection, a held lock) never
//! holds back the drainer's other shards, nor the renewal of their leases; once it is
//! released, its spend lands exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use routero_core::conformance::sample_event;
use routero_core::drainer::{Drainer, DrainerConfig};
use routero_core::memory::{ManualClock, MemoryElector, MemoryQueue, MemoryStore};
use routero_core::port::{
    ApplyOutcome, BackendError, DrainApply, DrainState, SpendQueue, SpendStore,
};
use routero_core::quarantine::QuarantineApply;
use routero_core::spend::{BatchId, ShardId, SpendBatch};
use rust_decimal::Decimal;
use tokio::sync::Semaphore;

/// A store whose applies to one shard wait for a permit.
#[derive(Debug)]
struct StuckShard {
    inner: MemoryStore,
    shard: ShardId,
    gate: Semaphore,
    entered: AtomicBool,
}

#[async_trait]
impl SpendStore for StuckShard {
    async fn drain_state(&self, shard: ShardId) -> Result<DrainState, BackendError> {
        self.inner.drain_state(shard).await
    }

    async fn apply(&self, apply: DrainApply<'_>) -> Result<ApplyOutcome, BackendError> {
        if apply.shard == self.shard {
            self.entered.store(true, Ordering::SeqCst);
            let _permit = self.gate.acquire().await;
        }
        self.inner.apply(apply).await
    }

    async fn quarantine(&self, q: QuarantineApply<'_>) -> Result<ApplyOutcome, BackendError> {
        self.inner.quarantine(q).await
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stuck_shard_does_not_stall_the_others() {
    let shards = 4u16;
    let queue = Arc::new(MemoryQueue::new(shards));
    let store = Arc::new(StuckShard {
        inner: MemoryStore::new(),
        shard: ShardId(2),
        gate: Semaphore::new(0),
        entered: AtomicBool::new(false),
    });
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let elector = Arc::new(MemoryElector::new(clock));
    let mut expected = Decimal::ZERO;
    let mut seq = 0u64;
    let mut append = async |round: u64, shards: &[u16]| {
        for shard in shards.iter().copied().map(ShardId) {
            let events = (0..5)
                .map(|_| {
                    seq += 1;
                    expected += Decimal::new(i64::try_from(seq).unwrap(), 4);
                    sample_event(
                        "acme",
                        seq,
                        &Decimal::new(i64::try_from(seq).unwrap(), 4).to_string(),
                    )
                })
                .collect();
            let batch = SpendBatch {
                id: BatchId::new(7, round * 100 + u64::from(shard.0)),
                shard,
                events,
            };
            queue.append(&batch).await.unwrap();
        }
    };
    append(0, &[0, 1, 2, 3]).await;
    let drainer = Arc::new(Drainer::new(
        Arc::clone(&queue),
        elector,
        Arc::clone(&store),
        DrainerConfig::new("stuck"),
    ));
    let running = Arc::clone(&drainer).spawn();

    // Shard 2's first apply hangs; spend that arrives for the others afterwards
    // still drains.
    until("shard 2's apply hangs", || {
        store.entered.load(Ordering::SeqCst)
    })
    .await;
    append(1, &[0, 1, 3]).await;
    append(2, &[0, 1, 2, 3]).await;
    until("the free shards drain", || {
        (0..shards)
            .filter(|s| *s != 2)
            .all(|s| queue.is_empty(ShardId(s)))
    })
    .await;
    assert_eq!(queue.len(ShardId(2)), 2, "the stuck shard has not moved");

    // Released, the stuck shard lands; nothing twice.
    store.gate.add_permits(1_000);
    until("the stuck shard drains", || queue.is_empty(ShardId(2))).await;
    let stats = running.stop().await;
    assert_eq!(stats.events, 55);
    let totals = store.inner.totals();
    assert_eq!(totals.cost, expected);
    assert_eq!(totals.successes, 55);
}
