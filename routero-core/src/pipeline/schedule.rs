//! Periodic jobs, done once per period by whichever coworker holds the job's lease
//! (feature `runtime`).
//!
//! A [`Job`] names the periods that are due at a time (a month to close, an hour to
//! export, an invoice to push) and does one period's work, idempotently: doing a
//! period twice has the effect of doing it once. The [`Scheduler`] runs a set of
//! jobs on many coworker replicas:
//!
//! 1. Per job, it takes the job's lease on a [`LeaderElector`] (the key is the job's
//!    name, hashed to a [`ShardId`]: use an elector of its own, not the drain's) and
//!    keeps it renewed while the job works. Only the holder works; the others find
//!    the job busy and go on.
//! 2. Per due period, it **claims** the period's run record in [`JobRuns`] with the
//!    lease's fencing token: a period already done, refused, waiting for its backoff,
//!    or claimed by a newer token is skipped. A record left `running` by a holder
//!    that died is taken over (its attempt counted).
//! 3. It runs the period and **finishes** the record, fenced by the token: `done`;
//!    `failed` with the error and the time of the next attempt (exponential backoff
//!    across ticks, capped); or `refused` for a permanent error, which is surfaced
//!    ([`JobRuns::runs`], the admin API, the `routero_job_runs` gauge) and not
//!    retried until an operator asks ([`JobRuns::retry`]).
//!
//! A holder that crashes mid-period leaves the record `running`; the next holder
//! finishes the period, and the job's idempotence makes the half-done attempt
//! harmless. Metrics: `routero_job_runs_total{job, outcome}` (`done`, `failed`,
//! `refused`), `routero_job_runs{job, state}` (records in each state, after each
//! tick), `routero_job_lease_held{job}`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::port::{BackendError, Clock, ErrorKind, FencingToken, LeaderElector};
use crate::spend::ShardId;

/// Why one period's work failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// What went wrong (never a credential).
    pub message: String,
    /// `true`: retrying cannot help (a refused record, a bad configuration); the run is
    /// marked `refused` and left for an operator.
    pub permanent: bool,
}

impl JobError {
    /// A failure worth retrying later.
    pub fn transient(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure no retry fixes.
    pub fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

impl From<BackendError> for JobError {
    fn from(e: BackendError) -> JobError {
        JobError {
            message: e.to_string(),
            permanent: e.kind() == ErrorKind::Invalid,
        }
    }
}

/// A periodic piece of work.
#[async_trait]
pub trait Job: fmt::Debug + Send + Sync + 'static {
    /// The job's name: its lease key and the `job` of its run records (`month-close`).
    fn name(&self) -> &str;

    /// The periods whose work is owed at `now`, oldest first (a period already done
    /// may be named again: its record makes the scheduler skip it).
    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<String>, JobError>;

    /// Does one period's work. Answers a short account of what was done (kept in the
    /// run record). Must be idempotent: a period may be run again after a crash.
    async fn run(&self, period: &str, now: DateTime<Utc>) -> Result<String, JobError>;
}

/// A run record's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Claimed by a holder and not finished (or its holder died).
    Running,
    /// Done; never run again.
    Done,
    /// Failed; tried again after `next_attempt_at`.
    Failed,
    /// Refused for good; run again only when an operator asks.
    Refused,
}

impl RunState {
    /// Every state.
    pub const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Done,
        RunState::Failed,
        RunState::Refused,
    ];

    /// The state's name (`running`, `done`, `failed`, `refused`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Refused => "refused",
        }
    }

    /// The state of a name.
    pub fn parse(name: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One period's run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// The job.
    pub job: String,
    /// The period (`2026-11`, `2026-12-02T15`, `acme-prod/2026-11`).
    pub period: String,
    /// Where it stands.
    pub state: RunState,
    /// Attempts started, the crashed ones included.
    pub attempts: u32,
    /// The fencing token of the latest claim.
    pub token: u64,
    /// The coworker of the latest claim.
    pub holder: String,
    /// The latest attempt's error, if it failed.
    pub error: Option<String>,
    /// What the successful attempt did.
    pub detail: Option<String>,
    /// When the latest attempt started.
    pub started_at: DateTime<Utc>,
    /// When the latest attempt finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// When a failed run is tried again.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What [`JobRuns::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The period is this token's to run; this is its attempt number.
    Claimed {
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// Done already.
    Done,
    /// Refused for good.
    Refused,
    /// Failed, and its backoff has not passed.
    NotYet(DateTime<Utc>),
    /// A newer token claimed it: this holder's lease is gone.
    Stale,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Done, with what was done.
    Done(String),
    /// Failed; try again at the time given.
    Failed {
        /// The error.
        error: String,
        /// The next attempt.
        retry_at: DateTime<Utc>,
    },
    /// Refused for good.
    Refused(String),
}

/// Which run records to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this job's.
    pub job: Option<String>,
    /// Only in this state.
    pub state: Option<RunState>,
    /// At most this many, newest start first (0: 100).
    pub limit: usize,
}

/// The run records' store: PostgreSQL's `routero_job_runs`, or memory.
#[async_trait]
pub trait JobRuns: fmt::Debug + Send + Sync + 'static {
    /// Claims `(job, period)` for `token` at `now` (see [`Claim`]), creating the
    /// record on the first claim. Atomic: of two claims with different tokens, the
    /// newer wins and the older then reads [`Claim::Stale`].
    async fn claim(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, BackendError>;

    /// Records how the attempt of `token` ended; `false` (nothing written) when a
    /// newer token has claimed the period since.
    async fn finish(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        outcome: &RunOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError>;

    /// The records, newest start first.
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<JobRun>, BackendError>;

    /// An operator's retry of a `failed` or `refused` run: it becomes due at once.
    /// `None` when there is no such record; `Some(false)` when it is not failed or
    /// refused.
    async fn retry(&self, job: &str, period: &str) -> Result<Option<bool>, BackendError>;

    /// Which of `periods` are settled for `job` (`done` or `refused`): the scheduler
    /// skips them without a claim each.
    async fn settled(
        &self,
        job: &str,
        periods: &[String],
    ) -> Result<std::collections::HashSet<String>, BackendError> {
        let runs = self
            .runs(&RunFilter {
                job: Some(job.to_owned()),
                state: None,
                limit: usize::MAX,
            })
            .await?;
        Ok(runs
            .into_iter()
            .filter(|r| matches!(r.state, RunState::Done | RunState::Refused))
            .filter(|r| periods.contains(&r.period))
            .map(|r| r.period)
            .collect())
    }

    /// How many records of `job` are in each state.
    async fn counts(&self, job: &str) -> Result<Vec<(RunState, u64)>, BackendError> {
        let runs = self
            .runs(&RunFilter {
                job: Some(job.to_owned()),
                state: None,
                limit: usize::MAX,
            })
            .await?;
        Ok(RunState::ALL
            .into_iter()
            .map(|s| (s, runs.iter().filter(|r| r.state == s).count() as u64))
            .collect())
    }
}

/// The shard a job's lease is kept under: FNV-1a of its name.
pub fn job_lease(name: &str) -> ShardId {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    ShardId(u16::try_from(hash & 0xffff).unwrap_or(0))
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This coworker's name in the leases and the run records.
    pub holder: String,
    /// How long a job's lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// How often [`Scheduler::run`] ticks.
    pub interval: Duration,
    /// The first retry's delay after a failure, doubled per failed attempt.
    pub backoff: Duration,
    /// The longest delay between retries.
    pub max_backoff: Duration,
}

impl SchedulerConfig {
    /// A config for `holder`: 30 s leases, a tick a minute, retries from 1 minute
    /// doubling to 1 hour.
    pub fn new(holder: impl Into<String>) -> SchedulerConfig {
        SchedulerConfig {
            holder: holder.into(),
            lease_ttl: Duration::from_secs(30),
            interval: Duration::from_secs(60),
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(3600),
        }
    }

    /// The delay before the attempt after `attempt` failed ones.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What one tick did for one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobTick {
    /// The job.
    pub job: String,
    /// Another coworker holds the job's lease.
    pub busy: bool,
    /// Periods run and done.
    pub done: Vec<String>,
    /// Periods that failed (to be retried) or were refused.
    pub failed: Vec<(String, JobError)>,
    /// The lease was lost (or the record claimed by a newer token) while working.
    pub lost: bool,
}

/// A lease keeper's task, aborted when the tick that started it ends or is dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs jobs once per period across replicas (see the module).
#[derive(Debug)]
pub struct Scheduler {
    elector: Arc<dyn LeaderElector>,
    runs: Arc<dyn JobRuns>,
    clock: Arc<dyn Clock>,
    jobs: Vec<Arc<dyn Job>>,
    config: SchedulerConfig,
}

impl Scheduler {
    /// A scheduler of `jobs`. Fails when two jobs share a name or a lease key.
    pub fn new(
        elector: Arc<dyn LeaderElector>,
        runs: Arc<dyn JobRuns>,
        clock: Arc<dyn Clock>,
        jobs: Vec<Arc<dyn Job>>,
        config: SchedulerConfig,
    ) -> Result<Scheduler, BackendError> {
        for (i, a) in jobs.iter().enumerate() {
            for b in &jobs[..i] {
                if a.name() == b.name() || job_lease(a.name()) == job_lease(b.name()) {
                    return Err(BackendError::new(
                        ErrorKind::Invalid,
                        format!("jobs {:?} and {:?} share a lease", a.name(), b.name()),
                    ));
                }
            }
        }
        Ok(Scheduler {
            elector,
            runs,
            clock,
            jobs,
            config,
        })
    }

    /// The jobs' names.
    pub fn jobs(&self) -> Vec<&str> {
        self.jobs.iter().map(|j| j.name()).collect()
    }

    /// One pass over every job.
    pub async fn tick(&self) -> Vec<JobTick> {
        let mut out = Vec::with_capacity(self.jobs.len());
        for job in &self.jobs {
            let report = self.tick_job(job).await;
            if let Ok(counts) = self.runs.counts(job.name()).await {
                for (state, n) in counts {
                    metrics::gauge!("routero_job_runs", "job" => job.name().to_owned(), "state" => state.as_str())
                        .set(n as f64);
                }
            }
            out.push(report);
        }
        out
    }

    async fn tick_job(&self, job: &Arc<dyn Job>) -> JobTick {
        let name = job.name().to_owned();
        let mut report = JobTick {
            job: name.clone(),
            ..JobTick::default()
        };
        let lease = match self
            .elector
            .acquire(job_lease(&name), &self.config.holder, self.config.lease_ttl)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                report.busy = true;
                return report;
            }
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "taking the job's lease failed; next tick");
                report
                    .failed
                    .push((String::new(), JobError::transient(e.to_string())));
                return report;
            }
        };
        metrics::gauge!("routero_job_lease_held", "job" => name.clone()).set(1.0);
        let lost = Arc::new(AtomicBool::new(false));
        // Aborted when dropped: a tick cut short (its future dropped) stops renewing.
        let keeper = KeepAlive({
            let elector = Arc::clone(&self.elector);
            let lease = lease.clone();
            let lost = Arc::clone(&lost);
            let every = (self.config.lease_ttl / 3).max(Duration::from_millis(10));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match elector.renew(&lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "renewing a job's lease failed"),
                    }
                }
            })
        });
        self.work(job, lease.token, &lost, &mut report).await;
        drop(keeper);
        metrics::gauge!("routero_job_lease_held", "job" => name.clone()).set(0.0);
        if let Err(e) = self.elector.release(&lease).await {
            tracing::debug!(job = %name, error = %e, "releasing the job's lease failed; it expires");
        }
        report.lost |= lost.load(Ordering::SeqCst);
        report
    }

    async fn work(
        &self,
        job: &Arc<dyn Job>,
        token: FencingToken,
        lost: &AtomicBool,
        report: &mut JobTick,
    ) {
        let name = job.name();
        let periods = match job.due(self.clock.now()).await {
            Ok(periods) => periods,
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "listing the job's periods failed; next tick");
                report.failed.push((String::new(), e));
                return;
            }
        };
        let settled = match self.runs.settled(name, &periods).await {
            Ok(settled) => settled,
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "reading the job's runs failed; next tick");
                report.failed.push((String::new(), e.into()));
                return;
            }
        };
        for period in periods.into_iter().filter(|p| !settled.contains(p)) {
            if lost.load(Ordering::SeqCst) {
                report.lost = true;
                return;
            }
            let now = self.clock.now();
            let attempt = match self
                .runs
                .claim(name, &period, token, &self.config.holder, now)
                .await
            {
                Ok(Claim::Claimed { attempt }) => attempt,
                Ok(Claim::Stale) => {
                    report.lost = true;
                    return;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(job = %name, %period, error = %e, "claiming the run failed; next tick");
                    report.failed.push((period, e.into()));
                    return;
                }
            };
            tracing::info!(job = %name, %period, attempt, "job run started");
            let result = job.run(&period, now).await;
            let finished = self.clock.now();
            let outcome = match &result {
                Ok(detail) => RunOutcome::Done(detail.clone()),
                Err(e) if e.permanent => RunOutcome::Refused(e.message.clone()),
                Err(e) => {
                    let delay = chrono::Duration::from_std(self.config.retry_delay(attempt))
                        .unwrap_or(chrono::Duration::hours(1));
                    RunOutcome::Failed {
                        error: e.message.clone(),
                        retry_at: finished + delay,
                    }
                }
            };
            let label = match &outcome {
                RunOutcome::Done(_) => "done",
                RunOutcome::Failed { .. } => "failed",
                RunOutcome::Refused(_) => "refused",
            };
            metrics::counter!("routero_job_runs_total", "job" => name.to_owned(), "outcome" => label)
                .increment(1);
            match &outcome {
                RunOutcome::Done(detail) => {
                    tracing::info!(job = %name, %period, attempt, %detail, "job run done");
                }
                RunOutcome::Failed { error, retry_at } => {
                    tracing::warn!(job = %name, %period, attempt, %error, %retry_at, "job run failed; retried later");
                }
                RunOutcome::Refused(error) => {
                    tracing::error!(job = %name, %period, attempt, %error, "job run refused for good; an operator must look");
                }
            }
            match self
                .runs
                .finish(name, &period, token, &outcome, finished)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    report.lost = true;
                    return;
                }
                Err(e) => {
                    // The record stays `running`; the next claim takes it over.
                    tracing::warn!(job = %name, %period, error = %e, "recording the run failed");
                }
            }
            match result {
                Ok(_) => report.done.push(period),
                Err(e) => report.failed.push((period, e)),
            }
        }
    }

    /// Ticks every [`SchedulerConfig::interval`] until `shutdown` resolves (a tick in
    /// progress is finished first).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut every = tokio::time::interval(self.config.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = every.tick() => {}
            }
            self.tick().await;
        }
    }
}

/// Run records in memory: the embedded default and the oracle of the stores.
#[derive(Debug, Default)]
pub struct MemoryJobRuns {
    runs: std::sync::Mutex<std::collections::BTreeMap<(String, String), JobRun>>,
}

impl MemoryJobRuns {
    /// No records.
    pub fn new() -> MemoryJobRuns {
        MemoryJobRuns::default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, String), JobRun>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The claim rule both stores follow, on the record as it stands.
pub fn claim_existing(run: &JobRun, token: FencingToken, now: DateTime<Utc>) -> Option<Claim> {
    if run.token > token.0 {
        return Some(Claim::Stale);
    }
    match run.state {
        RunState::Done => Some(Claim::Done),
        RunState::Refused => Some(Claim::Refused),
        RunState::Failed => match run.next_attempt_at {
            Some(at) if at > now => Some(Claim::NotYet(at)),
            _ => None,
        },
        RunState::Running => None,
    }
}

#[async_trait]
impl JobRuns for MemoryJobRuns {
    async fn claim(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, BackendError> {
        let mut runs = self.lock();
        let key = (job.to_owned(), period.to_owned());
        if let Some(run) = runs.get_mut(&key) {
            if let Some(claim) = claim_existing(run, token, now) {
                return Ok(claim);
            }
            run.state = RunState::Running;
            run.attempts += 1;
            run.token = token.0;
            holder.clone_into(&mut run.holder);
            run.started_at = now;
            run.finished_at = None;
            return Ok(Claim::Claimed {
                attempt: run.attempts,
            });
        }
        runs.insert(
            key,
            JobRun {
                job: job.to_owned(),
                period: period.to_owned(),
                state: RunState::Running,
                attempts: 1,
                token: token.0,
                holder: holder.to_owned(),
                error: None,
                detail: None,
                started_at: now,
                finished_at: None,
                next_attempt_at: None,
            },
        );
        Ok(Claim::Claimed { attempt: 1 })
    }

    async fn finish(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        outcome: &RunOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let mut runs = self.lock();
        let Some(run) = runs.get_mut(&(job.to_owned(), period.to_owned())) else {
            return Ok(false);
        };
        if run.token != token.0 || run.state != RunState::Running {
            return Ok(false);
        }
        run.finished_at = Some(now);
        match outcome {
            RunOutcome::Done(detail) => {
                run.state = RunState::Done;
                run.detail = Some(detail.clone());
                run.error = None;
                run.next_attempt_at = None;
            }
            RunOutcome::Failed { error, retry_at } => {
                run.state = RunState::Failed;
                run.error = Some(error.clone());
                run.next_attempt_at = Some(*retry_at);
            }
            RunOutcome::Refused(error) => {
                run.state = RunState::Refused;
                run.error = Some(error.clone());
                run.next_attempt_at = None;
            }
        }
        Ok(true)
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<JobRun>, BackendError> {
        let mut out: Vec<JobRun> = self
            .lock()
            .values()
            .filter(|r| filter.job.as_ref().is_none_or(|j| *j == r.job))
            .filter(|r| filter.state.is_none_or(|s| s == r.state))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| (&a.job, &a.period).cmp(&(&b.job, &b.period)))
        });
        out.truncate(if filter.limit == 0 { 100 } else { filter.limit });
        Ok(out)
    }

    async fn retry(&self, job: &str, period: &str) -> Result<Option<bool>, BackendError> {
        let mut runs = self.lock();
        let Some(run) = runs.get_mut(&(job.to_owned(), period.to_owned())) else {
            return Ok(None);
        };
        if !matches!(run.state, RunState::Failed | RunState::Refused) {
            return Ok(Some(false));
        }
        run.state = RunState::Failed;
        run.next_attempt_at = None;
        Ok(Some(true))
    }
}

/// The run-record rules every [`JobRuns`] follows (feature `testing`); `job` is a
/// name no other test uses.
#[cfg(feature = "testing")]
pub async fn conformance(runs: &dyn JobRuns, job: &str) {
    let t0 = DateTime::parse_from_rfc3339("2026-12-01T06:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .expect("a time");
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let (a, b) = (FencingToken(10), FencingToken(11));

    // A first claim, a claim of the same period by a newer token (the holder died),
    // and the older token's finish refused.
    assert_eq!(
        runs.claim(job, "p1", a, "one", at(0)).await.expect("claim"),
        Claim::Claimed { attempt: 1 }
    );
    assert_eq!(
        runs.claim(job, "p1", b, "two", at(1)).await.expect("claim"),
        Claim::Claimed { attempt: 2 }
    );
    assert_eq!(
        runs.claim(job, "p1", a, "one", at(2)).await.expect("claim"),
        Claim::Stale
    );
    let done = RunOutcome::Done("closed 3".into());
    assert!(
        !runs
            .finish(job, "p1", a, &done, at(3))
            .await
            .expect("finish")
    );
    assert!(
        runs.finish(job, "p1", b, &done, at(3))
            .await
            .expect("finish")
    );
    assert!(
        !runs
            .finish(job, "p1", b, &done, at(4))
            .await
            .expect("finish twice")
    );
    assert_eq!(
        runs.claim(job, "p1", FencingToken(12), "three", at(5))
            .await
            .expect("claim"),
        Claim::Done
    );

    // A failure waits for its backoff; then it is claimed again.
    assert!(matches!(
        runs.claim(job, "p2", b, "two", at(10))
            .await
            .expect("claim"),
        Claim::Claimed { attempt: 1 }
    ));
    let failed = RunOutcome::Failed {
        error: "ERP answered 503".into(),
        retry_at: at(70),
    };
    assert!(
        runs.finish(job, "p2", b, &failed, at(11))
            .await
            .expect("finish")
    );
    assert_eq!(
        runs.claim(job, "p2", b, "two", at(69))
            .await
            .expect("claim"),
        Claim::NotYet(at(70))
    );
    assert_eq!(
        runs.claim(job, "p2", b, "two", at(70))
            .await
            .expect("claim"),
        Claim::Claimed { attempt: 2 }
    );
    let refused = RunOutcome::Refused("the ERP refused the record with 400".into());
    assert!(
        runs.finish(job, "p2", b, &refused, at(71))
            .await
            .expect("finish")
    );
    assert_eq!(
        runs.claim(job, "p2", b, "two", at(9999))
            .await
            .expect("claim"),
        Claim::Refused
    );

    // What is listed, and an operator's retry.
    let listed = runs
        .runs(&RunFilter {
            job: Some(job.to_owned()),
            ..RunFilter::default()
        })
        .await
        .expect("runs");
    assert_eq!(
        listed
            .iter()
            .map(|r| (r.period.as_str(), r.state, r.attempts))
            .collect::<Vec<_>>(),
        [("p2", RunState::Refused, 2), ("p1", RunState::Done, 2)]
    );
    let p2 = &listed[0];
    assert_eq!(
        p2.error.as_deref(),
        Some("the ERP refused the record with 400")
    );
    assert_eq!((p2.holder.as_str(), p2.token), ("two", 11));
    assert_eq!(listed[1].detail.as_deref(), Some("closed 3"));
    assert_eq!(listed[1].finished_at, Some(at(3)));
    let refused_only = runs
        .runs(&RunFilter {
            job: Some(job.to_owned()),
            state: Some(RunState::Refused),
            limit: 10,
        })
        .await
        .expect("runs");
    assert_eq!(refused_only.len(), 1);
    let asked = ["p1".to_owned(), "p2".to_owned(), "p3".to_owned()];
    let mut settled: Vec<String> = runs
        .settled(job, &asked)
        .await
        .expect("settled")
        .into_iter()
        .collect();
    settled.sort();
    assert_eq!(settled, ["p1", "p2"], "done and refused; p3 has no run");
    let counts = runs.counts(job).await.expect("counts");
    assert!(counts.contains(&(RunState::Refused, 1)) && counts.contains(&(RunState::Done, 1)));
    assert_eq!(runs.retry(job, "p1").await.expect("retry"), Some(false));
    assert_eq!(runs.retry(job, "nope").await.expect("retry"), None);
    assert_eq!(runs.retry(job, "p2").await.expect("retry"), Some(true));
    assert_eq!(
        runs.claim(job, "p2", b, "two", at(72))
            .await
            .expect("claim"),
        Claim::Claimed { attempt: 3 }
    );
}
