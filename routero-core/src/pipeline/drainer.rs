//! The drainer: moves spend from the queue into the store, exactly once, under a
//! per-shard lease.
//!
//! One [`Drainer::step`] is the protocol of [`crate::port`] for one shard: read the
//! store's watermark, read the batches after it, aggregate them, apply them with the
//! lease's fencing token, and trim the queue only after the store committed.
//! [`Drainer::run`] loops over every shard until shut down: it takes free leases,
//! renews held ones well before they expire, stops draining a shard as soon as its
//! lease is lost or the store reports a newer leader, and releases its leases on the
//! way out. Several drainers (coworkers) share the shards.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::port::{
    ApplyOutcome, BackendError, DrainApply, LeaderElector, Lease, SpendQueue, SpendStore,
    UnreadableEntry,
};
use crate::quarantine::{QuarantineApply, QuarantineReason};
use crate::spend::{BatchId, Rollups, ShardId, SpendBatch, SpendEvent};
use crate::telemetry as metrics;

/// How a drainer behaves.
#[derive(Debug, Clone)]
pub struct DrainerConfig {
    /// This drainer's name in the leases (unique per process).
    pub holder: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often a held lease is renewed (default: a third of the ttl).
    pub renew_every: Duration,
    /// The most batches one step applies.
    pub max_batches: usize,
    /// The pause when no shard had anything to drain.
    pub idle_wait: Duration,
    /// The first pause after a backend error; doubled up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest pause after backend errors.
    pub max_backoff: Duration,
}

impl DrainerConfig {
    /// The defaults for a holder: 10 s leases renewed every 3.3 s, 512 batches per
    /// step, 20 ms idle wait, backoff from 50 ms to 5 s.
    pub fn new(holder: impl Into<String>) -> DrainerConfig {
        let lease_ttl = Duration::from_secs(10);
        DrainerConfig {
            holder: holder.into(),
            lease_ttl,
            renew_every: lease_ttl / 3,
            max_batches: 512,
            idle_wait: Duration::from_millis(20),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What one drain step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Batches were applied (or found applied already), or set aside, and trimmed.
    Drained {
        /// How many batches were applied.
        batches: usize,
        /// How many events they held.
        events: usize,
        /// Whether the store had applied them already (a replay after a crash).
        replayed: bool,
        /// How many batches could not be applied and went to the quarantine.
        quarantined: usize,
    },
    /// Nothing after the watermark.
    Idle,
    /// The watermark moved under this step; the next step reads it again.
    Raced,
    /// The store has seen a newer leader: this drainer no longer owns the shard.
    Fenced,
}

/// What [`Drainer::run`] did in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Batches applied.
    pub batches: u64,
    /// Events applied.
    pub events: u64,
    /// Steps that found their batches applied already.
    pub replays: u64,
    /// Leases lost or fenced off.
    pub leases_lost: u64,
    /// Backend errors met (and retried).
    pub errors: u64,
    /// Batches set aside in the quarantine.
    pub quarantined: u64,
}

/// The drain loop over a queue, an elector and a store.
#[derive(Debug)]
pub struct Drainer<Q, E, S> {
    queue: Q,
    elector: E,
    store: S,
    config: DrainerConfig,
    /// Shards of a previous layout this drainer saw retired: never taken again.
    retired: Mutex<BTreeSet<ShardId>>,
}

/// A drain loop running on its own task ([`Drainer::spawn`]).
#[derive(Debug)]
pub struct DrainerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<DrainStats>,
}

impl DrainerHandle {
    /// Stops the loop, which releases its leases, and returns its counters.
    pub async fn stop(self) -> DrainStats {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the drainer task failed");
            DrainStats::default()
        })
    }
}

impl<Q: SpendQueue, E: LeaderElector, S: SpendStore> Drainer<Q, E, S> {
    /// A drainer over the three ports.
    pub fn new(queue: Q, elector: E, store: S, config: DrainerConfig) -> Self {
        Drainer {
            queue,
            elector,
            store,
            config,
            retired: Mutex::new(BTreeSet::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DrainerConfig {
        &self.config
    }

    /// Runs [`run`](Self::run) on a tokio task until the handle stops it; the
    /// caller keeps its `Arc` for [`drain_all`](Self::drain_all) or steps.
    pub fn spawn(self: Arc<Self>) -> DrainerHandle {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            self.run(async {
                let _ = stopped.await;
            })
            .await
        });
        DrainerHandle { stop, task }
    }

    /// One drain step of the shard `lease` is for. A step whose batches cannot be
    /// applied for a reason retrying does not mend is taken again a batch at a time,
    /// and each batch that still fails goes to the quarantine
    /// ([`crate::quarantine`]): one bad batch never blocks the others.
    ///
    /// Each step reports its outcome, the shard's lag (before) and backlog (after) to
    /// the [`telemetry`](crate::telemetry).
    pub async fn step(&self, lease: &Lease) -> Result<StepOutcome, BackendError> {
        let outcome = self.step_once(lease).await;
        metrics::step(match &outcome {
            Ok(StepOutcome::Drained { replayed: true, .. }) => "replayed",
            Ok(StepOutcome::Drained { .. }) => "drained",
            Ok(StepOutcome::Idle) => "idle",
            Ok(StepOutcome::Raced) => "raced",
            Ok(StepOutcome::Fenced) => "fenced",
            Err(_) => "error",
        });
        if let Ok(StepOutcome::Drained { .. }) = outcome {
            match self.queue.backlog(lease.shard).await {
                Ok(entries) => metrics::backlog(lease.shard, entries),
                Err(e) => {
                    tracing::debug!(shard = lease.shard.0, error = %e, "backlog not measured")
                }
            }
        }
        outcome
    }

    async fn step_once(&self, lease: &Lease) -> Result<StepOutcome, BackendError> {
        let shard = lease.shard;
        let state = self.store.drain_state(shard).await?;
        let queued = match self
            .queue
            .read_after(shard, state.watermark, self.config.max_batches)
            .await
        {
            Ok(queued) => queued,
            Err(e) => match e.unreadable() {
                Some(entry) => return self.set_aside(lease, state.watermark, entry).await,
                None => return Err(e),
            },
        };
        let oldest = queued
            .first()
            .and_then(|q| q.batch.events.iter().map(|e| e.event_time).min());
        metrics::lag(shard, oldest, chrono::Utc::now());
        if queued.is_empty() {
            metrics::backlog(shard, 0);
            // Trimming through the committed watermark is idempotent: it finishes the
            // trim of a drainer that crashed between commit and trim.
            if let Some(watermark) = state.watermark {
                self.queue.trim_through(shard, watermark).await?;
            }
            return Ok(StepOutcome::Idle);
        }
        match self.apply_batches(lease, state.watermark, &queued).await {
            Err(e) if !e.is_retryable() => {
                tracing::warn!(shard = shard.0, batches = queued.len(), error = %e, "a drain step cannot be applied; taking it a batch at a time");
                self.one_at_a_time(lease, state.watermark, &queued).await
            }
            other => other,
        }
    }

    /// Applies `queued` (after the watermark `expected`) in one store step, and trims.
    async fn apply_batches(
        &self,
        lease: &Lease,
        expected: Option<crate::spend::QueuePosition>,
        queued: &[crate::spend::QueuedBatch],
    ) -> Result<StepOutcome, BackendError> {
        let shard = lease.shard;
        let Some(through) = queued.last().map(|b| b.position) else {
            return Ok(StepOutcome::Idle);
        };
        let events: Vec<SpendEvent> = queued
            .iter()
            .flat_map(|q| q.batch.events.iter().cloned())
            .collect();
        let rollups = Rollups::of_events(&events)?;
        let outcome = self
            .store
            .apply(DrainApply {
                shard,
                token: lease.token,
                expected,
                through,
                rollups: &rollups,
                events: &events,
                at: chrono::Utc::now(),
            })
            .await?;
        let replayed = match outcome {
            ApplyOutcome::Applied => false,
            ApplyOutcome::AlreadyApplied => true,
            ApplyOutcome::StaleLeader { .. } => return Ok(StepOutcome::Fenced),
            ApplyOutcome::WatermarkMoved { .. } => return Ok(StepOutcome::Raced),
        };
        self.queue.trim_through(shard, through).await?;
        if !replayed {
            metrics::applied(queued.len(), &events);
        }
        Ok(StepOutcome::Drained {
            batches: queued.len(),
            events: events.len(),
            replayed,
            quarantined: 0,
        })
    }

    /// Moves an entry the queue cannot decode into the quarantine, with its bytes, in
    /// the step that advances the watermark past it.
    async fn set_aside(
        &self,
        lease: &Lease,
        expected: Option<crate::spend::QueuePosition>,
        entry: &UnreadableEntry,
    ) -> Result<StepOutcome, BackendError> {
        let batch = SpendBatch {
            id: BatchId::parse(&format!("unreadable-{}-{}", entry.shard, entry.position))
                .ok_or_else(|| BackendError::new(crate::port::ErrorKind::Invalid, "batch id"))?,
            shard: lease.shard,
            events: Vec::new(),
        };
        tracing::error!(shard = lease.shard.0, position = %entry.position, bytes = entry.raw.len(), reason = %entry.reason, "undecodable entry quarantined");
        let outcome = self
            .store
            .quarantine(QuarantineApply {
                shard: lease.shard,
                token: lease.token,
                expected,
                through: entry.position,
                batch: &batch,
                raw: Some(&entry.raw),
                reason: QuarantineReason::Corrupt,
                detail: &entry.reason,
                at: chrono::Utc::now(),
            })
            .await?;
        match outcome {
            ApplyOutcome::Applied => metrics::quarantined(QuarantineReason::Corrupt),
            ApplyOutcome::AlreadyApplied => {}
            ApplyOutcome::StaleLeader { .. } => return Ok(StepOutcome::Fenced),
            ApplyOutcome::WatermarkMoved { .. } => return Ok(StepOutcome::Raced),
        }
        self.queue.trim_through(lease.shard, entry.position).await?;
        Ok(StepOutcome::Drained {
            batches: 0,
            events: 0,
            replayed: outcome == ApplyOutcome::AlreadyApplied,
            quarantined: usize::from(outcome == ApplyOutcome::Applied),
        })
    }

    /// Applies each batch on its own; one that fails for good goes to the quarantine.
    async fn one_at_a_time(
        &self,
        lease: &Lease,
        mut expected: Option<crate::spend::QueuePosition>,
        queued: &[crate::spend::QueuedBatch],
    ) -> Result<StepOutcome, BackendError> {
        let (mut batches, mut events, mut quarantined, mut replayed) = (0, 0, 0, false);
        let so_far = |batches, events, quarantined, replayed, other: StepOutcome| {
            if batches + quarantined == 0 {
                other
            } else {
                StepOutcome::Drained {
                    batches,
                    events,
                    replayed,
                    quarantined,
                }
            }
        };
        for batch in queued {
            match self
                .apply_batches(lease, expected, std::slice::from_ref(batch))
                .await
            {
                Ok(StepOutcome::Drained {
                    batches: b,
                    events: e,
                    replayed: r,
                    ..
                }) => {
                    batches += b;
                    events += e;
                    replayed |= r;
                }
                Ok(other) => return Ok(so_far(batches, events, quarantined, replayed, other)),
                Err(error) if !error.is_retryable() => {
                    let reason = QuarantineReason::of(&error);
                    let detail = error.to_string();
                    tracing::error!(shard = lease.shard.0, position = %batch.position, batch = %batch.batch.id, reason = %reason, error = %error, "batch quarantined");
                    let outcome = self
                        .store
                        .quarantine(QuarantineApply {
                            shard: lease.shard,
                            token: lease.token,
                            expected,
                            through: batch.position,
                            batch: &batch.batch,
                            raw: None,
                            reason,
                            detail: &detail,
                            at: chrono::Utc::now(),
                        })
                        .await?;
                    match outcome {
                        ApplyOutcome::Applied => {
                            quarantined += 1;
                            metrics::quarantined(reason);
                        }
                        ApplyOutcome::AlreadyApplied => replayed = true,
                        ApplyOutcome::StaleLeader { .. } => {
                            return Ok(so_far(
                                batches,
                                events,
                                quarantined,
                                replayed,
                                StepOutcome::Fenced,
                            ));
                        }
                        ApplyOutcome::WatermarkMoved { .. } => {
                            return Ok(so_far(
                                batches,
                                events,
                                quarantined,
                                replayed,
                                StepOutcome::Raced,
                            ));
                        }
                    }
                    self.queue.trim_through(lease.shard, batch.position).await?;
                }
                Err(error) => return Err(error),
            }
            expected = Some(batch.position);
        }
        Ok(so_far(
            batches,
            events,
            quarantined,
            replayed,
            StepOutcome::Idle,
        ))
    }

    /// Drains every shard until everything queued is applied and trimmed; for tests
    /// and for a clean shutdown of an embedded pipeline. Leases are taken and
    /// released around the work.
    pub async fn drain_all(&self) -> Result<DrainStats, BackendError> {
        let mut stats = DrainStats::default();
        let mut layout = self.queue.refresh_layout().await?;
        loop {
            for shard in layout.to_drain() {
                let Some(lease) = self
                    .elector
                    .acquire(shard, &self.config.holder, self.config.lease_ttl)
                    .await?
                else {
                    continue;
                };
                let mut result = self.drain_shard(&lease, &mut stats).await;
                if result.is_ok() && layout.is_retiring(shard) {
                    result = self.retire(shard).await.map(|_| ());
                }
                self.elector.release(&lease).await?;
                result?;
            }
            // The previous layout drained to the end: the new one's turn.
            let now = self.queue.refresh_layout().await?;
            if layout.retiring.is_none() || now.retiring.is_some() {
                return Ok(stats);
            }
            layout = now;
        }
    }

    /// Retires a drained shard of the previous layout (its lease held): trims it
    /// through the store's watermark first, so that a trim lost after the last
    /// commit leaves nothing behind.
    async fn retire(&self, shard: ShardId) -> Result<bool, BackendError> {
        if let Some(watermark) = self.store.drain_state(shard).await?.watermark {
            self.queue.trim_through(shard, watermark).await?;
        }
        let retired = self.queue.retire(shard).await?;
        if retired {
            lock(&self.retired).insert(shard);
        }
        Ok(retired)
    }

    /// Retires a drained shard of the previous layout that [`run`](Self::run)
    /// holds, and gives its lease up; `true` when its worker is done.
    async fn retire_held(&self, lease: &Lease, held: &Mutex<BTreeMap<ShardId, Held>>) -> bool {
        let shard = lease.shard;
        match self.retire(shard).await {
            Ok(true) => {
                tracing::info!(
                    shard = shard.0,
                    "shard of the previous layout drained and retired"
                );
                if forget(held, lease) {
                    metrics::retired(shard);
                    if let Err(e) = self.elector.release(lease).await {
                        tracing::warn!(shard = shard.0, error = %e, "could not release lease; it will expire");
                    }
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                metrics::error("retire", &e);
                tracing::warn!(shard = shard.0, error = %e, "retiring the shard failed; retrying");
                false
            }
        }
    }

    async fn drain_shard(&self, lease: &Lease, stats: &mut DrainStats) -> Result<(), BackendError> {
        loop {
            match self.step(lease).await? {
                StepOutcome::Drained {
                    batches,
                    events,
                    replayed,
                    quarantined,
                } => stats.record(batches, events, replayed, quarantined),
                StepOutcome::Raced => {}
                StepOutcome::Idle => return Ok(()),
                StepOutcome::Fenced => {
                    stats.leases_lost += 1;
                    return Ok(());
                }
            }
        }
    }

    /// Runs the drain loop over every shard until `shutdown` completes, then releases
    /// every held lease.
    ///
    /// Leases are kept by one loop (taken, renewed well before they expire) while each
    /// held shard is drained by a worker of its own: a shard whose step is blocked (a
    /// frozen database connection, a lock) never holds back the others, nor the
    /// renewal of their leases. A worker stops when its lease is lost or the store
    /// reports a newer leader.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> DrainStats {
        let held: Mutex<BTreeMap<ShardId, Held>> = Mutex::new(BTreeMap::new());
        let stats = Mutex::new(DrainStats::default());
        let (stop, stopped) = watch::channel(false);
        let (start, mut started) = mpsc::unbounded_channel::<(Lease, watch::Receiver<bool>)>();
        let keeper = async {
            tokio::pin!(shutdown);
            let mut backoff = self.config.initial_backoff;
            loop {
                let pause = if self.keep_leases(&held, &stats, &start).await {
                    backoff = self.config.initial_backoff;
                    self.config.idle_wait
                } else {
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    pause
                };
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            let _ = stop.send(true);
            drop(start);
        };
        let workers = async {
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    next = started.recv() => match next {
                        Some((lease, lost)) => running.push(self.work(lease, lost, stopped.clone(), &held, &stats)),
                        None => break,
                    },
                    Some(()) = running.next(), if !running.is_empty() => {}
                }
            }
            while running.next().await.is_some() {}
        };
        tokio::join!(keeper, workers);
        let held = held.into_inner().unwrap_or_else(PoisonError::into_inner);
        for slot in held.into_values() {
            metrics::lease_released(slot.lease.shard);
            if let Err(e) = self.elector.release(&slot.lease).await {
                tracing::warn!(shard = slot.lease.shard.0, error = %e, "could not release lease; it will expire");
            }
        }
        stats.into_inner().unwrap_or_else(PoisonError::into_inner)
    }

    /// One round of the lease keeper: renews the held leases that are due (a lost one
    /// stops its worker) and takes at most one free lease, whose worker it starts.
    /// `false` if a backend failed.
    async fn keep_leases(
        &self,
        held: &Mutex<BTreeMap<ShardId, Held>>,
        stats: &Mutex<DrainStats>,
        start: &mpsc::UnboundedSender<(Lease, watch::Receiver<bool>)>,
    ) -> bool {
        let before = self.queue.layout();
        let layout = match self.queue.refresh_layout().await {
            Ok(layout) => layout,
            Err(e) => {
                lock(stats).errors += 1;
                metrics::error("layout", &e);
                tracing::warn!(error = %e, "reading the shard layout failed; keeping the last one");
                before
            }
        };
        metrics::layout(&layout);
        if before.retiring.is_some() && layout.retiring.is_none() {
            tracing::info!(%layout, "the previous layout's shards are retired");
            before.retiring_shards().for_each(metrics::retired);
        }
        let mut scan: Vec<ShardId> = {
            let retired = lock(&self.retired);
            layout.to_drain().filter(|s| !retired.contains(s)).collect()
        };
        // Coworkers scan the shards from different points and take at most one new
        // lease per round, so that coworkers started together share the shards; one
        // started when all are held stands by and takes over the leases that expire.
        let offset = holder_offset(
            &self.config.holder,
            u16::try_from(scan.len()).unwrap_or(u16::MAX),
        );
        scan.rotate_left(usize::from(offset));
        // Held leases outside the scan (shards their workers are retiring) are
        // renewed too, never taken again.
        let others: Vec<ShardId> = lock(held)
            .keys()
            .filter(|s| !scan.contains(s))
            .copied()
            .collect();
        let scanned = scan.len();
        let mut healthy = true;
        let mut acquired = false;
        for (i, shard) in scan.into_iter().chain(others).enumerate() {
            let due = {
                let held = lock(held);
                match held.get(&shard) {
                    Some(slot) if slot.renewed.elapsed() < self.config.renew_every => continue,
                    Some(slot) => Some(slot.lease.clone()),
                    None if acquired || i >= scanned => continue,
                    None => None,
                }
            };
            if let Some(lease) = due {
                match self.elector.renew(&lease).await {
                    Ok(true) => {
                        if let Some(slot) = lock(held).get_mut(&shard) {
                            slot.renewed = Instant::now();
                        }
                    }
                    Ok(false) => {
                        tracing::warn!(shard = shard.0, "lease lost; stopped draining the shard");
                        if forget(held, &lease) {
                            lock(stats).leases_lost += 1;
                            metrics::lease_lost(shard);
                        }
                    }
                    Err(e) => {
                        healthy = false;
                        lock(stats).errors += 1;
                        metrics::error("lease", &e);
                        tracing::warn!(shard = shard.0, error = %e, "lease backend error; retrying");
                    }
                }
                continue;
            }
            match self
                .elector
                .acquire(shard, &self.config.holder, self.config.lease_ttl)
                .await
            {
                Ok(Some(lease)) => {
                    tracing::info!(shard = shard.0, token = lease.token.0, "lease acquired");
                    metrics::lease_acquired(shard);
                    acquired = true;
                    let (lost, watch_lost) = watch::channel(false);
                    lock(held).insert(
                        shard,
                        Held {
                            lease: lease.clone(),
                            renewed: Instant::now(),
                            lost,
                        },
                    );
                    let _ = start.send((lease, watch_lost));
                }
                Ok(None) => {}
                Err(e) => {
                    healthy = false;
                    lock(stats).errors += 1;
                    metrics::error("lease", &e);
                    tracing::warn!(shard = shard.0, error = %e, "lease backend error; retrying");
                }
            }
        }
        healthy
    }

    /// Drains one held shard until its lease is lost, a newer leader shows, or the
    /// loop stops (after the step in flight: a step is never cut by a shutdown).
    async fn work(
        &self,
        lease: Lease,
        mut lost: watch::Receiver<bool>,
        mut stopped: watch::Receiver<bool>,
        held: &Mutex<BTreeMap<ShardId, Held>>,
        stats: &Mutex<DrainStats>,
    ) {
        let shard = lease.shard;
        let mut backoff = self.config.initial_backoff;
        loop {
            if *lost.borrow() || *stopped.borrow() {
                return;
            }
            // A lease lost under a step abandons it: its commit would be refused.
            let outcome = tokio::select! {
                outcome = self.step(&lease) => outcome,
                _ = lost.changed() => return,
            };
            let pause = match outcome {
                Ok(StepOutcome::Drained {
                    batches,
                    events,
                    replayed,
                    quarantined,
                }) => {
                    lock(stats).record(batches, events, replayed, quarantined);
                    if replayed {
                        tracing::info!(
                            shard = shard.0,
                            batches,
                            "batches already applied; trimmed"
                        );
                    }
                    backoff = self.config.initial_backoff;
                    Duration::ZERO
                }
                Ok(StepOutcome::Raced) => Duration::ZERO,
                Ok(StepOutcome::Idle) => {
                    if self.queue.layout().is_retiring(shard)
                        && self.retire_held(&lease, held).await
                    {
                        return;
                    }
                    backoff = self.config.initial_backoff;
                    self.config.idle_wait
                }
                Ok(StepOutcome::Fenced) => {
                    tracing::warn!(
                        shard = shard.0,
                        "a newer leader wrote this shard; stopped draining it"
                    );
                    if forget(held, &lease) {
                        lock(stats).leases_lost += 1;
                        metrics::fenced(shard);
                    }
                    return;
                }
                Err(e) => {
                    lock(stats).errors += 1;
                    metrics::error("drain", &e);
                    tracing::warn!(shard = shard.0, error = %e, retryable = e.is_retryable(), "drain step failed; retrying");
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    pause
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = lost.changed() => return,
                _ = stopped.changed() => return,
            }
        }
    }
}

/// A lease held by [`Drainer::run`], shared by the lease keeper and its worker.
#[derive(Debug)]
struct Held {
    lease: Lease,
    renewed: Instant,
    /// Told when the lease is lost (or dropped with it).
    lost: watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forgets `lease` (if it is still the one held for its shard) and stops its worker;
/// `true` if it was held.
fn forget(held: &Mutex<BTreeMap<ShardId, Held>>, lease: &Lease) -> bool {
    let mut held = lock(held);
    match held.get(&lease.shard) {
        Some(slot) if slot.lease.token == lease.token => {
            if let Some(slot) = held.remove(&lease.shard) {
                let _ = slot.lost.send(true);
            }
            true
        }
        _ => false,
    }
}

/// Where a holder starts its scan of the shards (FNV-1a of its name).
fn holder_offset(holder: &str, shards: u16) -> u16 {
    let hash = holder.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    u16::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
}

impl DrainStats {
    fn record(&mut self, batches: usize, events: usize, replayed: bool, quarantined: usize) {
        self.quarantined += u64::try_from(quarantined).unwrap_or(u64::MAX);
        if replayed {
            self.replays += 1;
        } else {
            self.batches += u64::try_from(batches).unwrap_or(u64::MAX);
            self.events += u64::try_from(events).unwrap_or(u64::MAX);
        }
    }
}
