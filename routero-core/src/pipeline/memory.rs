//! In-memory implementations of every port: the embedded default (the whole pipeline
//! in one process, no servers) and the oracle the Redis and PostgreSQL adapters are
//! tested against. They follow the same protocol, checks included.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::attribution::{RequestId, WorkspaceId};
use crate::billing::memory::WalletBook;
use crate::invoice::Invoice;
use crate::money::{Currency, ExchangeRates, RateTable};
use crate::port::{
    AppendOutcome, ApplyOutcome, BackendError, Clock, DrainApply, DrainState, ErrorKind,
    FencingToken, LeaderElector, Lease, RollupFilter, RollupRow, SpendQueue, SpendReader,
    SpendStore,
};
use crate::quarantine::{Quarantine, QuarantineApply, QuarantineState, QuarantinedBatch, Release};
use crate::spend::{
    BatchId, QueuePosition, QueuedBatch, RollupKey, RollupTotals, Rollups, ShardId, ShardLayout,
    SpendBatch, SpendEvent,
};
use crate::wallet::{self, WalletWrite};
use crate::warehouse::{
    LogRecord, RollupChange, Scan, SinkGuard, SinkLock, SyncRun, SyncStart, SyncedRows, VecScan,
    WarehouseSource,
};
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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

#[derive(Debug)]
struct QueueState {
    layout: ShardLayout,
    /// The previous layouts' shards: no append goes to them any more.
    sealed: HashSet<ShardId>,
    /// The sealed shards drained to the end.
    retired: HashSet<ShardId>,
    next: u64,
    shards: HashMap<ShardId, VecDeque<QueuedBatch>>,
    seen: HashSet<BatchId>,
    seen_order: VecDeque<BatchId>,
}

/// The spend queue in memory. Batch ids are remembered for the last
/// [`MEMORY_DEDUP_WINDOW`] batches.
#[derive(Debug)]
pub struct MemoryQueue {
    state: Mutex<QueueState>,
}

impl MemoryQueue {
    /// A queue with `shards` shards (at least one).
    pub fn new(shards: u16) -> MemoryQueue {
        MemoryQueue {
            state: Mutex::new(QueueState {
                layout: ShardLayout::fixed(shards),
                sealed: HashSet::new(),
                retired: HashSet::new(),
                next: 0,
                shards: HashMap::new(),
                seen: HashSet::new(),
                seen_order: VecDeque::new(),
            }),
        }
    }

    /// Changes the number of shards: a new [`ShardLayout`] whose shards take the
    /// spend from now on, the current shards sealed and left to the drainers
    /// (see [`SpendQueue::retire`]). Refused while a previous change is still
    /// retiring its shards.
    pub fn reshard(&self, shards: u16) -> Result<ShardLayout, BackendError> {
        let mut state = lock(&self.state);
        let next = state
            .layout
            .next(shards)
            .map_err(|refused| BackendError::new(ErrorKind::Invalid, refused))?;
        let sealed = state.layout.current();
        state.sealed.extend(sealed);
        state.layout = next;
        Ok(next)
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
    fn layout(&self) -> ShardLayout {
        lock(&self.state).layout
    }

    async fn retire(&self, shard: ShardId) -> Result<bool, BackendError> {
        let mut state = lock(&self.state);
        if !state.sealed.contains(&shard) {
            return Ok(false);
        }
        if state.shards.get(&shard).is_some_and(|q| !q.is_empty()) {
            return Ok(false);
        }
        state.retired.insert(shard);
        let layout = state.layout;
        if layout.retiring_shards().all(|s| state.retired.contains(&s)) {
            state.layout = layout.retired();
        }
        Ok(true)
    }

    async fn append(&self, batch: &SpendBatch) -> Result<AppendOutcome, BackendError> {
        let mut state = lock(&self.state);
        if state.seen.contains(&batch.id) {
            return Ok(AppendOutcome::Duplicate);
        }
        if state.sealed.contains(&batch.shard) {
            return Ok(AppendOutcome::Moved);
        }
        if !state.layout.is_current(batch.shard) {
            return Err(BackendError::unknown_shard(batch.shard, &state.layout));
        }
        state.seen.insert(batch.id.clone());
        state.seen_order.push_back(batch.id.clone());
        if state.seen_order.len() > MEMORY_DEDUP_WINDOW
            && let Some(old) = state.seen_order.pop_front()
        {
            state.seen.remove(&old);
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

    async fn backlog(&self, shard: ShardId) -> Result<u64, BackendError> {
        let state = lock(&self.state);
        Ok(state
            .shards
            .get(&shard)
            .map_or(0, |q| u64::try_from(q.len()).unwrap_or(u64::MAX)))
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
pub(crate) struct StoreState {
    pub(crate) drain: HashMap<ShardId, DrainState>,
    pub(crate) rollups: Rollups,
    /// The request log by id. A B-tree, not a hash map: a hash map doubles its table
    /// at once, and with the log in it that took 25 ms at 28,000 requests and 53 ms
    /// at 57,000, one drain step holding the process's requests up for that long.
    pub(crate) log: BTreeMap<RequestId, SpendEvent>,
    pub(crate) unpriced: Vec<SpendEvent>,
    pub(crate) applies: u64,
    /// The version (drain step number) of each rollup's last change (a B-tree, as the
    /// rollups are, so that it never grows all at once).
    pub(crate) versions: BTreeMap<RollupKey, u64>,
    /// The request log in the order it was written, with the version of the write.
    pub(crate) log_order: Vec<(u64, RequestId)>,
    /// The warehouse sync runs by sink, oldest first, with whether each is done.
    pub(crate) sync_runs: HashMap<String, Vec<(SyncRun, bool)>>,
    pub(crate) wallets: HashMap<WorkspaceId, WalletBook>,
    /// Batches set aside, oldest first (ids from 1).
    pub(crate) quarantine: Vec<QuarantinedBatch>,
    pub(crate) invoices: Vec<Invoice>,
    /// The corrections of each request, in the order applied.
    pub(crate) corrections: HashMap<RequestId, Vec<crate::reprice::AppliedCorrection>>,
    /// The repricings' audit records, oldest first.
    pub(crate) repricings: Vec<crate::reprice::Repricing>,
    /// Unpriced requests a repricing priced, and when.
    pub(crate) repriced: HashMap<RequestId, DateTime<Utc>>,
}

/// The system of record in memory: drain state, rollups, the request log and the
/// unpriced record, the wallets, the invoices and the quarantine.
#[derive(Debug)]
pub struct MemoryStore {
    pub(crate) state: Mutex<StoreState>,
    /// The warehouse sinks an exporter holds.
    sync_locks: Arc<Mutex<HashSet<String>>>,
    /// What usage priced in another currency than its wallet's converts at.
    rates: Mutex<Arc<dyn ExchangeRates>>,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore {
            state: Mutex::default(),
            sync_locks: Arc::default(),
            rates: Mutex::new(Arc::new(RateTable::new())),
        }
    }
}

/// Releases a sink of the in-memory store.
struct MemorySinkLock {
    sink: String,
    held: Arc<Mutex<HashSet<String>>>,
}

impl Drop for MemorySinkLock {
    fn drop(&mut self) {
        lock(&self.held).remove(&self.sink);
    }
}

#[async_trait]
impl SinkGuard for MemorySinkLock {
    async fn release(self: Box<Self>) {}
}

impl MemoryStore {
    /// An empty store, with no exchange rates (usage in another currency than its
    /// wallet's is quarantined until [`set_rates`](Self::set_rates) gives one).
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Replaces the exchange rates the drain converts usage at.
    pub fn set_rates(&self, rates: Arc<dyn ExchangeRates>) {
        *lock(&self.rates) = rates;
    }

    /// The exchange rates the drain converts usage at.
    pub(crate) fn rates(&self) -> Arc<dyn ExchangeRates> {
        lock(&self.rates).clone()
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

    /// Every logged event, in no particular order.
    pub fn logged_events(&self) -> Vec<SpendEvent> {
        lock(&self.state).log.values().cloned().collect()
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
        let rates = lock(&self.rates).clone();
        let mut state = lock(&self.state);
        let current = state.drain.get(&apply.shard).copied().unwrap_or_default();
        if let Some(refused) = current.refuse(&apply) {
            return Ok(refused);
        }
        let key = wallet::usage_debit_key(apply.shard, apply.through);
        state.write(apply.rollups, apply.events, apply.at, &key, &*rates)?;
        state.drain.insert(
            apply.shard,
            DrainState {
                watermark: Some(apply.through),
                fencing_token: Some(apply.token),
            },
        );
        Ok(ApplyOutcome::Applied)
    }

    async fn quarantine(&self, q: QuarantineApply<'_>) -> Result<ApplyOutcome, BackendError> {
        let mut state = lock(&self.state);
        let current = state.drain.get(&q.shard).copied().unwrap_or_default();
        if let Some(refused) = current.refuse_step(q.token, q.expected, q.through) {
            return Ok(refused);
        }
        let id = u64::try_from(state.quarantine.len()).unwrap_or(u64::MAX) + 1;
        state.quarantine.push(QuarantinedBatch {
            id,
            shard: q.shard,
            position: q.through,
            batch: q.batch.clone(),
            raw: q.raw.map(<[u8]>::to_vec),
            reason: q.reason,
            detail: q.detail.to_owned(),
            quarantined_at: q.at,
            state: QuarantineState::Quarantined,
        });
        state.drain.insert(
            q.shard,
            DrainState {
                watermark: Some(q.through),
                fencing_token: Some(q.token),
            },
        );
        Ok(ApplyOutcome::Applied)
    }
}

impl StoreState {
    /// Writes a step's events, all or nothing: adds the rollups, debits the managed
    /// spend (each debit keyed `key` plus its suffix), keeps the unpriced events and
    /// logs every request. One version, as one transaction is in PostgreSQL.
    fn write(
        &mut self,
        rollups: &Rollups,
        events: &[SpendEvent],
        at: DateTime<Utc>,
        key: &str,
        rates: &dyn ExchangeRates,
    ) -> Result<(), BackendError> {
        let mut posts = Vec::new();
        for (workspace, spend) in wallet::managed_spend(events)? {
            let currency = match self.wallets.get(&workspace) {
                Some(book) => book.currency,
                None => wallet::first_currency(&spend).unwrap_or(Currency::USD),
            };
            posts.push((
                workspace,
                currency,
                wallet::debits_in(currency, &spend, rates)?,
            ));
        }
        // Last of what can fail, and all or nothing itself.
        self.rollups
            .merge(rollups)
            .map_err(|e| BackendError::new(ErrorKind::Invalid, e.to_string()))?;
        for (workspace, currency, debits) in posts {
            let book = self
                .wallets
                .entry(workspace.clone())
                .or_insert_with(|| WalletBook::new(workspace, currency));
            book.expire(at);
            for debit in &debits {
                let key = format!("{key}{}", debit.key_suffix);
                let write = WalletWrite::usage(debit);
                let _ = book.once(&key, write.fingerprint(currency), |book| {
                    vec![book.write(&write, at, &key)]
                });
            }
        }
        let version = self.applies + 1;
        for key in rollups.iter().map(|(key, _)| key) {
            self.versions.insert(key.clone(), version);
        }
        for event in events {
            if event.cost().is_none() {
                self.unpriced.push(event.clone());
            }
            if let std::collections::btree_map::Entry::Vacant(entry) =
                self.log.entry(event.request_id.clone())
            {
                entry.insert(event.clone());
                self.log_order.push((version, event.request_id.clone()));
            }
        }
        self.applies += 1;
        Ok(())
    }
}

#[async_trait]
impl Quarantine for MemoryStore {
    async fn quarantined(&self) -> Result<Vec<QuarantinedBatch>, BackendError> {
        Ok(lock(&self.state).quarantine.clone())
    }

    async fn replay(&self, id: u64, at: DateTime<Utc>) -> Result<Release, BackendError> {
        let rates = lock(&self.rates).clone();
        let mut state = lock(&self.state);
        let Some(index) = state.quarantine.iter().position(|q| q.id == id) else {
            return Ok(Release::NotFound);
        };
        let held = &state.quarantine[index];
        if held.state != QuarantineState::Quarantined {
            return Ok(Release::AlreadyReleased(held.state.clone()));
        }
        if held.raw.is_some() {
            return Err(crate::quarantine::unreadable_replay(id));
        }
        let events = held.batch.events.clone();
        let rollups = Rollups::of_events(&events)?;
        state.write(&rollups, &events, at, &format!("quarantine:{id}"), &*rates)?;
        state.quarantine[index].state = QuarantineState::Replayed { at };
        Ok(Release::Released)
    }

    async fn discard(
        &self,
        id: u64,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Release, BackendError> {
        let mut state = lock(&self.state);
        let Some(held) = state.quarantine.iter_mut().find(|q| q.id == id) else {
            return Ok(Release::NotFound);
        };
        if held.state != QuarantineState::Quarantined {
            return Ok(Release::AlreadyReleased(held.state.clone()));
        }
        held.state = QuarantineState::Discarded {
            at,
            reason: reason.to_owned(),
        };
        Ok(Release::Released)
    }
}

#[async_trait]
impl WarehouseSource for MemoryStore {
    async fn lock_sink(&self, sink: &str) -> Result<Option<SinkLock>, BackendError> {
        if !lock(&self.sync_locks).insert(sink.to_owned()) {
            return Ok(None);
        }
        Ok(Some(SinkLock::new(MemorySinkLock {
            sink: sink.to_owned(),
            held: Arc::clone(&self.sync_locks),
        })))
    }

    async fn begin_sync(&self, sink: &str, hour: DateTime<Utc>) -> Result<SyncStart, BackendError> {
        let mut state = lock(&self.state);
        // Every applied step is committed: the next version is the first not final.
        let next = state.applies + 1;
        let runs = state.sync_runs.entry(sink.to_owned()).or_default();
        if let Some((run, _)) = runs.iter().find(|(_, done)| !done) {
            return Ok(SyncStart::Resume(run.clone()));
        }
        if let Some((run, _)) = runs.iter().find(|(run, _)| run.hour == hour) {
            return Ok(SyncStart::Done(run.clone()));
        }
        let (number, from) = runs
            .last()
            .map_or((1, 0), |(last, _)| (last.run + 1, last.to_version));
        let run = SyncRun {
            sink: sink.to_owned(),
            run: number,
            hour,
            from_version: from,
            to_version: next.max(from),
        };
        runs.push((run.clone(), false));
        Ok(SyncStart::Planned(run))
    }

    async fn scan_rollups(
        &self,
        run: &SyncRun,
    ) -> Result<Box<dyn Scan<RollupChange> + '_>, BackendError> {
        let state = lock(&self.state);
        let range = run.from_version..run.to_version;
        let mut rows: Vec<RollupChange> = state
            .rollups
            .iter()
            .filter_map(|(key, totals)| {
                let version = *state.versions.get(key)?;
                range.contains(&version).then(|| RollupChange {
                    key: key.clone(),
                    totals: *totals,
                    version,
                })
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Box::new(VecScan::new(rows)))
    }

    async fn scan_log(&self, run: &SyncRun) -> Result<Box<dyn Scan<LogRecord> + '_>, BackendError> {
        let state = lock(&self.state);
        let range = run.from_version..run.to_version;
        let start = state
            .log_order
            .partition_point(|(version, _)| *version < run.from_version);
        let rows = state.log_order[start..]
            .iter()
            .take_while(|(version, _)| range.contains(version))
            .filter_map(|(version, id)| state.log.get(id).map(|e| LogRecord::of(e, *version)))
            .collect();
        Ok(Box::new(VecScan::new(rows)))
    }

    async fn finish_sync(&self, run: &SyncRun, _rows: SyncedRows) -> Result<(), BackendError> {
        let mut state = lock(&self.state);
        let planned = state
            .sync_runs
            .get_mut(&run.sink)
            .and_then(|runs| runs.iter_mut().find(|(r, _)| r.run == run.run));
        match planned {
            Some((_, done)) => {
                *done = true;
                Ok(())
            }
            None => Err(BackendError::new(
                ErrorKind::Invalid,
                format!("run {} of sink {} was never planned", run.run, run.sink),
            )),
        }
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
