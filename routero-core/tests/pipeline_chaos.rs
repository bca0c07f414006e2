//! A randomized run of the whole in-memory pipeline with faults: flushes whose reply
//! is lost, reads and applies that fail, commits whose reply is lost, trims that
//! fail, drainers that crash while holding leases, and leases that expire and are
//! taken over. At the end the store must hold exactly what was recorded, to the last
//! digit: nothing lost, nothing counted twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use routero_core::attribution::OrgId;
use routero_core::conformance::{sample_day, sample_event};
use routero_core::drainer::{Drainer, DrainerConfig, StepOutcome};
use routero_core::memory::{ManualClock, MemoryElector, MemoryQueue, MemoryStore};
use routero_core::port::{
    AppendOutcome, ApplyOutcome, BackendError, DrainApply, DrainState, ErrorKind, LeaderElector,
    Lease, RollupFilter, SpendQueue, SpendReader, SpendStore,
};
use routero_core::recorder::{Recorder, RecorderConfig};
use routero_core::spend::{QueuePosition, QueuedBatch, ShardId, SpendBatch};
use rust_decimal::Decimal;

/// A deterministic pseudo-random source shared by the fault injectors.
#[derive(Debug)]
struct Dice(AtomicU64);

impl Dice {
    fn roll(&self, sides: u64) -> u64 {
        let next = self
            .0
            .load(Ordering::Relaxed)
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0.store(next, Ordering::Relaxed);
        (next >> 33) % sides
    }
}

fn unavailable(what: &str) -> BackendError {
    BackendError::new(ErrorKind::Unavailable, format!("injected fault: {what}"))
}

#[derive(Debug)]
struct FaultyQueue {
    inner: MemoryQueue,
    dice: Arc<Dice>,
    faults: Arc<AtomicBool>,
}

impl FaultyQueue {
    fn fault(&self, one_in: u64) -> bool {
        self.faults.load(Ordering::Relaxed) && self.dice.roll(one_in) == 0
    }
}

#[async_trait]
impl SpendQueue for FaultyQueue {
    fn layout(&self) -> routero_core::spend::ShardLayout {
        self.inner.layout()
    }

    async fn append(&self, batch: &SpendBatch) -> Result<AppendOutcome, BackendError> {
        if self.fault(5) {
            return Err(unavailable("append refused"));
        }
        let outcome = self.inner.append(batch).await?;
        if self.fault(5) {
            return Err(unavailable("append reply lost"));
        }
        Ok(outcome)
    }

    async fn read_after(
        &self,
        shard: ShardId,
        after: Option<QueuePosition>,
        limit: usize,
    ) -> Result<Vec<QueuedBatch>, BackendError> {
        if self.fault(8) {
            return Err(unavailable("read"));
        }
        tokio::task::yield_now().await;
        let read = self.inner.read_after(shard, after, limit).await;
        tokio::task::yield_now().await;
        read
    }

    async fn trim_through(
        &self,
        shard: ShardId,
        through: QueuePosition,
    ) -> Result<(), BackendError> {
        if self.fault(4) {
            return Err(unavailable("trim"));
        }
        self.inner.trim_through(shard, through).await
    }

    async fn backlog(&self, shard: ShardId) -> Result<u64, BackendError> {
        if self.fault(8) {
            return Err(unavailable("len"));
        }
        SpendQueue::backlog(&self.inner, shard).await
    }
}

#[derive(Debug)]
struct FaultyStore {
    inner: MemoryStore,
    dice: Arc<Dice>,
    faults: Arc<AtomicBool>,
}

#[async_trait]
impl SpendStore for FaultyStore {
    async fn drain_state(&self, shard: ShardId) -> Result<DrainState, BackendError> {
        tokio::task::yield_now().await;
        self.inner.drain_state(shard).await
    }

    async fn apply(&self, apply: DrainApply<'_>) -> Result<ApplyOutcome, BackendError> {
        let faults = self.faults.load(Ordering::Relaxed);
        tokio::task::yield_now().await;
        if faults && self.dice.roll(6) == 0 {
            return Err(unavailable("apply refused before commit"));
        }
        let outcome = self.inner.apply(apply).await?;
        if faults && self.dice.roll(6) == 0 {
            return Err(unavailable("commit reply lost"));
        }
        Ok(outcome)
    }

    async fn quarantine(
        &self,
        batch: routero_core::quarantine::QuarantineApply<'_>,
    ) -> Result<ApplyOutcome, BackendError> {
        let faults = self.faults.load(Ordering::Relaxed);
        if faults && self.dice.roll(6) == 0 {
            return Err(unavailable("quarantine refused before commit"));
        }
        let outcome = self.inner.quarantine(batch).await?;
        if faults && self.dice.roll(6) == 0 {
            return Err(unavailable("quarantine reply lost"));
        }
        Ok(outcome)
    }
}

async fn run(seed: u64) {
    let dice = Arc::new(Dice(AtomicU64::new(seed)));
    let faults = Arc::new(AtomicBool::new(true));
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
        .unwrap()
        .to_utc();
    let clock = Arc::new(ManualClock::new(start));
    let queue = Arc::new(FaultyQueue {
        inner: MemoryQueue::new(4),
        dice: dice.clone(),
        faults: faults.clone(),
    });
    let store = Arc::new(FaultyStore {
        inner: MemoryStore::new(),
        dice: dice.clone(),
        faults: faults.clone(),
    });
    let elector = Arc::new(MemoryElector::new(clock.clone()));
    let ttl = Duration::from_secs(10);
    let drainers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|holder| {
            Drainer::new(
                queue.clone(),
                elector.clone(),
                store.clone(),
                DrainerConfig {
                    lease_ttl: ttl,
                    max_batches: 1 + usize::try_from(seed % 4).unwrap_or(0),
                    ..DrainerConfig::new(holder)
                },
            )
        })
        .collect();
    let mut leases: Vec<BTreeMap<u16, Lease>> = vec![BTreeMap::new(); drainers.len()];
    let (recorder, handle) = Recorder::spawn(
        queue.clone(),
        RecorderConfig {
            max_batch_events: 5,
            flush_interval: Duration::from_millis(1),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            ..RecorderConfig::default()
        },
    );
    let orgs = ["org-a", "org-b", "org-c", "org-d", "org-e"];
    let mut expected: BTreeMap<&str, (Decimal, u64)> = BTreeMap::new();
    let mut seq = 0u64;
    for _ in 0..400 {
        match dice.roll(9) {
            0..=2 => {
                for _ in 0..=dice.roll(8) {
                    let org = orgs[usize::try_from(dice.roll(5)).unwrap_or(0)];
                    let cost = format!("0.{:07}", dice.roll(10_000_000));
                    seq += 1;
                    let entry = expected.entry(org).or_default();
                    entry.0 += Decimal::from_str_exact(&cost).unwrap();
                    entry.1 += 1;
                    recorder.record(sample_event(org, seq, &cost)).unwrap();
                }
            }
            3 => tokio::time::sleep(Duration::from_millis(2)).await,
            4 | 5 => {
                let d = usize::try_from(dice.roll(3)).unwrap_or(0);
                let shard = u16::try_from(dice.roll(4)).unwrap_or(0);
                match leases[d].get(&shard).cloned() {
                    None => {
                        if let Ok(Some(lease)) = elector
                            .acquire(ShardId(shard), drainers[d].config().holder.as_str(), ttl)
                            .await
                        {
                            leases[d].insert(shard, lease);
                        }
                    }
                    // A lease may have expired and been taken: the step runs anyway,
                    // as a paused leader's would, and fencing must refuse it.
                    Some(lease) => {
                        if let Ok(StepOutcome::Fenced) = drainers[d].step(&lease).await {
                            leases[d].remove(&shard);
                        }
                    }
                }
            }
            6 | 7 => {
                // Two drainers step the same shard at once, their steps interleaved at
                // every await: typically a leader whose lease expired and its
                // successor. The store's checks must let one of them through.
                clock.advance(ttl + Duration::from_secs(1));
                let shard = u16::try_from(dice.roll(4)).unwrap_or(0);
                for lease_map in &mut leases {
                    if let std::collections::btree_map::Entry::Vacant(slot) = lease_map.entry(shard)
                        && let Ok(Some(lease)) = elector.acquire(ShardId(shard), "late", ttl).await
                    {
                        slot.insert(lease);
                    }
                }
                let holders: Vec<(usize, Lease)> = leases
                    .iter()
                    .enumerate()
                    .filter_map(|(d, m)| m.get(&shard).cloned().map(|l| (d, l)))
                    .collect();
                if let [(a, la), (b, lb), ..] = holders.as_slice() {
                    let (ra, rb) = tokio::join!(drainers[*a].step(la), drainers[*b].step(lb));
                    for (d, result) in [(*a, ra), (*b, rb)] {
                        if let Ok(StepOutcome::Fenced) = result {
                            leases[d].remove(&shard);
                        }
                    }
                }
            }
            _ => {
                // A drainer crashes in the middle of a step (dropped at an await
                // point) and its leases are never released.
                let d = usize::try_from(dice.roll(3)).unwrap_or(0);
                if let Some(lease) = leases[d].values().next().cloned() {
                    let yields = dice.roll(6);
                    tokio::select! {
                        _ = drainers[d].step(&lease) => {}
                        () = async {
                            for _ in 0..yields {
                                tokio::task::yield_now().await;
                            }
                        } => {}
                    }
                }
                leases[d].clear();
            }
        }
    }
    let counts = handle.shutdown().await;
    assert_eq!(counts.refused, 0);

    // The faults stop; a fresh coworker drains what is left after the leases expire.
    faults.store(false, Ordering::Relaxed);
    clock.advance(ttl * 2);
    let last = Drainer::new(
        queue.clone(),
        elector.clone(),
        store.clone(),
        DrainerConfig::new("final"),
    );
    last.drain_all().await.unwrap();

    let mut total_cost = Decimal::ZERO;
    let mut total_events = 0;
    for (org, (cost, events)) in &expected {
        let filter = RollupFilter::new(OrgId::new(org).unwrap(), sample_day(), sample_day());
        let rows = store.inner.rollups(&filter).await.unwrap();
        let got_cost: Decimal = rows.iter().map(|r| r.totals.cost).sum();
        let got_events: u64 = rows.iter().map(|r| r.totals.successes).sum();
        assert_eq!(
            (got_cost, got_events),
            (*cost, *events),
            "seed {seed}, {org}"
        );
        total_cost += cost;
        total_events += events;
    }
    let all = store.inner.totals();
    assert_eq!(all.cost, total_cost, "seed {seed}");
    assert_eq!(
        all.successes, total_events,
        "seed {seed}: nothing lost, nothing counted twice"
    );
    assert_eq!(
        u64::try_from(store.inner.logged_count()).unwrap(),
        total_events,
        "seed {seed}: every request logged once"
    );
}

#[tokio::test(start_paused = true)]
async fn faults_never_lose_or_double_spend() {
    for seed in 1..=60 {
        run(seed).await;
    }
}
