//! In-memory implementations of every port: the embedded default (the whole pipeline
//! in one process, no servers) and the oracle the Redis and PostgreSQL adapters are
//! tested against. They follow the same protocol, checks included.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::attribution::RequestId;
use crate::port::{
    AppendOutcome, ApplyOutcome, BackendError, Clock, DrainApply, DrainState, ErrorKind,
    FencingToken, LeaderElector, Lease, RollupFilter, RollupRow, SpendQueue, SpendReader,
    SpendStore,
};
use crate::spend::{
    BatchId, QueuePosition, QueuedBatch, RollupTotals, Rollups, ShardId, SpendBatch, SpendEvent,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A clock that only moves when told: for tests of lease expiry.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(start))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.0);
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }
}

/// How many batch ids the in-memory queue remembers for deduplication.
pub const MEMORY_DEDUP_WINDOW: usize = 1 << 20;

#[derive(Debug, Default)]
struct QueueState {
    next: u64,
    shards: HashMap<ShardId, VecDeque<QueuedBatch>>,
    seen: HashSet<BatchId>,
    seen_order: VecDeque<BatchId>,
}

/// The spend queue in memory. Batch ids are remembered for the last
/// [`MEMORY_DEDUP_WINDOW`] batches.
#[derive(Debug)]
pub struct MemoryQueue {
    shards: u16,
    state: Mutex<QueueState>,
}

impl MemoryQueue {
    /// A queue with `shards` shards (at least one).
    pub fn new(shards: u16) -> MemoryQueue {
        MemoryQueue {
            shards: shards.max(1),
            state: Mutex::new(QueueState::default()),
        }
    }

    /// How many batches a shard holds (untrimmed).
    pub fn len(&self, shard: ShardId) -> usize {
        lock(&self.state)
            .shards
            .get(&shard)
            .map_or(0, VecDeque::len)
    }

    /// Whether a shard holds no batch.
    pub fn is_empty(&self, shard: ShardId) -> bool {
        self.len(shard) == 0
    }
}

#[async_trait]
impl SpendQueue for MemoryQueue {
    fn shards(&self) -> u16 {
        self.shards
    }

    async fn append(&self, batch: &SpendBatch) -> Result<AppendOutcome, BackendError> {
        if batch.shard.0 >= self.shards {
            return Err(BackendError::new(
                ErrorKind::Invalid,
                format!("shard {} of a {}-shard queue", batch.shard, self.shards),
            ));
        }
        let mut state = lock(&self.state);
        if !state.seen.insert(batch.id.clone()) {
            return Ok(AppendOutcome::Duplicate);
        }
        state.seen_order.push_back(batch.id.clone());
        if state.seen_order.len() > MEMORY_DEDUP_WINDOW {
            if let Some(old) = state.seen_order.pop_front() {
                state.seen.remove(&old);
            }
        }
        state.next += 1;
        let position = QueuePosition::new(state.next, 0);
        state
            .shards
            .entry(batch.shard)
            .or_default()
            .push_back(QueuedBatch {
                position,
                batch: batch.clone(),
            });
        Ok(AppendOutcome::Appended(position))
    }

    async fn read_after(
        &self,
        shard: ShardId,
        after: Option<QueuePosition>,
        limit: usize,
    ) -> Result<Vec<QueuedBatch>, BackendError> {
        let state = lock(&self.state);
        Ok(state
            .shards
            .get(&shard)
            .map(|q| {
                q.iter()
                    .filter(|b| after.is_none_or(|a| b.position > a))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn trim_through(
        &self,
        shard: ShardId,
        through: QueuePosition,
    ) -> Result<(), BackendError> {
        let mut state = lock(&self.state);
        if let Some(q) = state.shards.get_mut(&shard) {
            while q.front().is_some_and(|b| b.position <= through) {
                q.pop_front();
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Held {
    holder: Arc<str>,
    token: FencingToken,
    expires: DateTime<Utc>,
}

/// Leader leases in memory, expiring by a [`Clock`].
#[derive(Debug)]
pub struct MemoryElector {
    clock: Arc<dyn Clock>,
    state: Mutex<(HashMap<ShardId, Held>, u64)>,
}

impl MemoryElector {
    /// An elector whose leases expire by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> MemoryElector {
        MemoryElector {
            clock,
            state: Mutex::new((HashMap::new(), 0)),
        }
    }

    fn expiry(&self, ttl: Duration) -> DateTime<Utc> {
        self.clock.now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
    }
}

#[async_trait]
impl LeaderElector for MemoryElector {
    async fn acquire(
        &self,
        shard: ShardId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        let now = self.clock.now();
        let expires = self.expiry(ttl);
        let mut state = lock(&self.state);
        let (leases, next_token) = &mut *state;
        if leases.get(&shard).is_some_and(|held| held.expires > now) {
            return Ok(None);
        }
        *next_token += 1;
        let lease = Lease {
            shard,
            holder: Arc::from(holder),
            token: FencingToken(*next_token),
            ttl,
        };
        leases.insert(
            shard,
            Held {
                holder: Arc::clone(&lease.holder),
                token: lease.token,
                expires,
            },
        );
        Ok(Some(lease))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, BackendError> {
        let now = self.clock.now();
        let expires = self.expiry(lease.ttl);
        let mut state = lock(&self.state);
        match state.0.get_mut(&lease.shard) {
            Some(held)
                if held.token == lease.token
                    && held.holder == lease.holder
                    && held.expires > now =>
            {
                held.expires = expires;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), BackendError> {
        let mut state = lock(&self.state);
        if state
            .0
            .get(&lease.shard)
            .is_some_and(|held| held.token == lease.token && held.holder == lease.holder)
        {
            state.0.remove(&lease.shard);
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct StoreState {
    drain: HashMap<ShardId, DrainState>,
    rollups: Rollups,
    log: HashMap<RequestId, SpendEvent>,
    unpriced: Vec<SpendEvent>,
    applies: u64,
}

/// The system of record in memory: drain state, rollups, the request log and the
/// unpriced record.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<StoreState>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Every rollup, ungrouped.
    pub fn all_rollups(&self) -> Rollups {
        lock(&self.state).rollups.clone()
    }

    /// The sum of every rollup.
    pub fn totals(&self) -> RollupTotals {
        let state = lock(&self.state);
        let mut sum = RollupTotals::default();
        for (_, totals) in state.rollups.iter() {
            // The rollups were summed with checks when applied; their total fits too
            // unless a test drives it past u64, which it would see as saturation.
            let _ = sum.add(totals);
        }
        sum
    }

    /// The logged event of a request.
    pub fn logged(&self, request: &RequestId) -> Option<SpendEvent> {
        lock(&self.state).log.get(request).cloned()
    }

    /// How many requests are logged.
    pub fn logged_count(&self) -> usize {
        lock(&self.state).log.len()
    }

    /// The events kept because they could not be priced, oldest first.
    pub fn unpriced(&self) -> Vec<SpendEvent> {
        lock(&self.state).unpriced.clone()
    }

    /// How many drain steps were committed.
    pub fn applies(&self) -> u64 {
        lock(&self.state).applies
    }
}

#[async_trait]
impl SpendStore for MemoryStore {
    async fn drain_state(&self, shard: ShardId) -> Result<DrainState, BackendError> {
        Ok(lock(&self.state)
            .drain
            .get(&shard)
            .copied()
            .unwrap_or_default())
    }

    async fn apply(&self, apply: DrainApply<'_>) -> Result<ApplyOutcome, BackendError> {
        let mut state = lock(&self.state);
        let current = state.drain.get(&apply.shard).copied().unwrap_or_default();
        if let Some(newest) = current.fencing_token.filter(|t| *t > apply.token) {
            return Ok(ApplyOutcome::StaleLeader { current: newest });
        }
        if current.watermark.is_some_and(|w| w >= apply.through) {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
        if current.watermark != apply.expected {
            return Ok(ApplyOutcome::WatermarkMoved {
                current: current.watermark,
            });
        }
        // All or nothing: sum into a copy, swap it in only when every sum fits.
        let mut rollups = state.rollups.clone();
        rollups
            .merge(apply.rollups)
            .map_err(|e| BackendError::new(ErrorKind::Invalid, e.to_string()))?;
        state.rollups = rollups;
        for event in apply.events {
            if event.cost().is_none() {
                state.unpriced.push(event.clone());
            }
            state
                .log
                .entry(event.request_id.clone())
                .or_insert_with(|| event.clone());
        }
        state.drain.insert(
            apply.shard,
            DrainState {
                watermark: Some(apply.through),
                fencing_token: Some(apply.token),
            },
        );
        state.applies += 1;
        Ok(ApplyOutcome::Applied)
    }
}

#[async_trait]
impl SpendReader for MemoryStore {
    async fn rollups(&self, filter: &RollupFilter) -> Result<Vec<RollupRow>, BackendError> {
        let state = lock(&self.state);
        let mut rows = BTreeMap::new();
        for (key, totals) in state.rollups.iter() {
            if filter.matches(key) {
                let row: &mut RollupTotals = rows.entry(filter.row_key(key)).or_default();
                row.add(totals)
                    .map_err(|e| BackendError::new(ErrorKind::Invalid, e.to_string()))?;
            }
        }
        Ok(rows
            .into_iter()
            .map(|(key, totals)| RollupRow { key, totals })
            .collect())
    }
}
