//! The scheduler on the in-memory ports: run records, backoff, refusal, an
//! operator's retry, and the billing calendar's jobs (month close, then one ERP push
//! per final invoice) across two schedulers with a clock of the test's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use routero_core::attribution::{OrgId, WorkspaceId};
use routero_core::erp::{CoupaSupplier, ErpResponse, ErpTransport, Pusher};
use routero_core::invoice::{BillingDirectory, WorkspaceBilling};
use routero_core::jobs::{ErpPush, ErpTarget, MonthClose};
use routero_core::memory::{ManualClock, MemoryElector, MemoryStore};
use routero_core::port::Clock;
use routero_core::schedule::{
    Job, JobError, JobRuns, MemoryJobRuns, RunFilter, RunState, Scheduler, SchedulerConfig,
    conformance,
};
use rust_decimal::Decimal;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[tokio::test]
async fn memory_job_runs_conformance() {
    conformance(&MemoryJobRuns::new(), "conformance").await;
}

/// A job of one period whose runs answer what the test scripts.
#[derive(Debug)]
struct Scripted {
    answers: Mutex<Vec<Result<String, JobError>>>,
    runs: AtomicU32,
}

#[async_trait]
impl Job for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn due(&self, _now: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        Ok(vec!["p".into()])
    }
    async fn run(&self, _period: &str, _now: DateTime<Utc>) -> Result<String, JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.answers.lock().unwrap().remove(0)
    }
}

#[tokio::test]
async fn failures_back_off_refusals_wait_for_an_operator() {
    let clock = Arc::new(ManualClock::new(at("2026-12-01T00:00:00Z")));
    let runs = Arc::new(MemoryJobRuns::new());
    let job = Arc::new(Scripted {
        answers: Mutex::new(vec![
            Err(JobError::transient("503")),
            Err(JobError::transient("503")),
            Err(JobError::permanent("400 bad account")),
            Ok("posted".into()),
        ]),
        runs: AtomicU32::new(0),
    });
    let mut config = SchedulerConfig::new("one");
    config.backoff = Duration::from_secs(60);
    let scheduler = Scheduler::new(
        Arc::new(MemoryElector::new(clock.clone())),
        runs.clone(),
        clock.clone(),
        vec![job.clone() as Arc<dyn Job>],
        config,
    )
    .unwrap();
    let state = || async {
        let r = runs.runs(&RunFilter::default()).await.unwrap();
        (r[0].state, r[0].attempts, r[0].error.clone())
    };

    scheduler.tick().await;
    assert_eq!(state().await.0, RunState::Failed);
    scheduler.tick().await; // within the first backoff: 60 s
    assert_eq!(job.runs.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(60));
    scheduler.tick().await;
    assert_eq!(job.runs.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(119)); // the second backoff is 120 s
    scheduler.tick().await;
    assert_eq!(job.runs.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(1));
    let tick = scheduler.tick().await;
    assert!(tick[0].failed[0].1.permanent);
    assert_eq!(
        state().await,
        (RunState::Refused, 3, Some("400 bad account".into()))
    );
    clock.advance(Duration::from_secs(86_400));
    scheduler.tick().await;
    assert_eq!(
        job.runs.load(Ordering::SeqCst),
        3,
        "a refusal is not retried"
    );
    assert_eq!(runs.retry("scripted", "p").await.unwrap(), Some(true));
    scheduler.tick().await;
    assert_eq!(state().await.0, RunState::Done);
    assert_eq!(job.runs.load(Ordering::SeqCst), 4);
}

/// An ERP that records what it is sent and answers 503 while told to.
#[derive(Debug, Default)]
struct Erp {
    posted: Mutex<Vec<String>>,
    down: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct ErpHandle(Arc<Erp>);

#[async_trait]
impl ErpTransport for ErpHandle {
    async fn send(
        &self,
        method: http::Method,
        path: &str,
        _headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<ErpResponse, String> {
        if self.0.down.load(Ordering::SeqCst) {
            return Ok(ErpResponse {
                status: 503,
                body: Vec::new(),
            });
        }
        let mut posted = self.0.posted.lock().unwrap();
        if method == http::Method::GET {
            // Coupa's existence check: the invoice numbers posted so far.
            let number = path.split("invoice-number=").nth(1).unwrap_or("");
            let number = number.split('&').next().unwrap_or("");
            let found = posted.iter().any(|p| p.contains(number));
            return Ok(ErpResponse {
                status: 200,
                body: if found {
                    b"[{}]".to_vec()
                } else {
                    b"[]".to_vec()
                },
            });
        }
        posted.push(String::from_utf8(body.unwrap_or_default()).unwrap());
        Ok(ErpResponse {
            status: 201,
            body: b"{}".to_vec(),
        })
    }
}

#[tokio::test]
async fn each_workspace_gets_one_invoice_and_one_push_across_two_coworkers() {
    let clock = Arc::new(ManualClock::new(at("2026-12-01T00:00:00Z")));
    let store = Arc::new(MemoryStore::new());
    let elector = Arc::new(MemoryElector::new(clock.clone()));
    let runs = Arc::new(MemoryJobRuns::new());
    let erp = Arc::new(Erp::default());
    let org = OrgId::new("acme").unwrap();
    let mut directory = BillingDirectory::new();
    for w in ["acme-prod", "acme-dev", "acme-ml"] {
        directory = directory.with(
            WorkspaceId::new(w).unwrap(),
            WorkspaceBilling {
                org: org.clone(),
                currency: routero_core::Currency::USD,
                plan: Some(Decimal::new(4900, 2)),
            },
        );
    }
    let directory = Arc::new(directory);
    let scheduler = |holder: &str| {
        let close = MonthClose::new(
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::new(|| Arc::new(routero_core::money::RateTable::default()) as _),
            directory.clone(),
            Duration::from_secs(6 * 3600),
        );
        let mut pusher = Pusher::new(ErpHandle(erp.clone()));
        pusher.max_attempts = 2;
        pusher.backoff = Duration::from_millis(1);
        let push = ErpPush::new(
            pusher,
            ErpTarget::Coupa(CoupaSupplier {
                supplier_id: "77".into(),
            }),
            store.clone(),
            directory.clone(),
            None,
        );
        Scheduler::new(
            elector.clone(),
            runs.clone(),
            clock.clone(),
            vec![Arc::new(close) as Arc<dyn Job>, Arc::new(push)],
            SchedulerConfig::new(holder),
        )
        .unwrap()
    };
    let (one, two) = (scheduler("one"), scheduler("two"));

    // Within the grace: nothing.
    for _ in 0..2 {
        one.tick().await;
        two.tick().await;
        clock.advance(Duration::from_secs(3 * 3600));
    }
    assert!(runs.runs(&RunFilter::default()).await.unwrap().is_empty());
    assert_eq!(clock.now(), at("2026-12-01T06:00:00Z"));

    // Past the grace, with the ERP down: the months close, the pushes fail and wait.
    erp.down.store(true, Ordering::SeqCst);
    let (a, b) = tokio::join!(one.tick(), two.tick());
    let closed: Vec<_> = a.iter().chain(&b).flat_map(|t| t.done.clone()).collect();
    assert_eq!(closed, ["2026-11"], "one close, by one of them");
    let failed = runs
        .runs(&RunFilter {
            job: Some("erp-push".into()),
            state: Some(RunState::Failed),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[0].error.as_deref().unwrap().contains("503"));
    assert!(erp.posted.lock().unwrap().is_empty());

    // The ERP is back; after the backoff each invoice is posted once, whoever ticks.
    erp.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(60));
    for _ in 0..3 {
        tokio::join!(one.tick(), two.tick());
        clock.advance(Duration::from_secs(3600));
    }
    let posted = erp.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 3, "{posted:?}");
    for n in 1..=3 {
        let number = format!("INV-202611-{n:06}");
        assert_eq!(posted.iter().filter(|p| p.contains(&number)).count(), 1);
    }
    let done = runs
        .runs(&RunFilter {
            job: Some("erp-push".into()),
            state: Some(RunState::Done),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|r| r.attempts == 2), "{done:?}");
}

/// An elector that counts lease renewals.
#[derive(Debug)]
struct Counting {
    inner: MemoryElector,
    renewals: AtomicU32,
}

#[async_trait]
impl routero_core::port::LeaderElector for Counting {
    async fn acquire(
        &self,
        shard: routero_core::spend::ShardId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<routero_core::port::Lease>, routero_core::port::BackendError> {
        self.inner.acquire(shard, holder, ttl).await
    }
    async fn renew(
        &self,
        lease: &routero_core::port::Lease,
    ) -> Result<bool, routero_core::port::BackendError> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(lease).await
    }
    async fn release(
        &self,
        lease: &routero_core::port::Lease,
    ) -> Result<(), routero_core::port::BackendError> {
        self.inner.release(lease).await
    }
}

/// A job that never finishes.
#[derive(Debug)]
struct Stuck;

#[async_trait]
impl Job for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    async fn due(&self, _now: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        Ok(vec!["p".into()])
    }
    async fn run(&self, _period: &str, _now: DateTime<Utc>) -> Result<String, JobError> {
        std::future::pending().await
    }
}

/// A tick cut short (its future dropped, as when the process's task is aborted) stops
/// renewing its job's lease: the lease expires and another coworker takes the job.
#[tokio::test]
async fn a_dropped_tick_stops_renewing_its_lease() {
    let clock = Arc::new(ManualClock::new(at("2026-12-01T00:00:00Z")));
    let elector = Arc::new(Counting {
        inner: MemoryElector::new(clock.clone()),
        renewals: AtomicU32::new(0),
    });
    let mut config = SchedulerConfig::new("one");
    config.lease_ttl = Duration::from_millis(30);
    let scheduler = Scheduler::new(
        elector.clone(),
        Arc::new(MemoryJobRuns::new()),
        clock,
        vec![Arc::new(Stuck) as Arc<dyn Job>],
        config,
    )
    .unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(100), scheduler.tick()).await;
    assert!(cut.is_err(), "the stuck job holds the tick");
    let renewed = elector.renewals.load(Ordering::SeqCst);
    assert!(renewed > 0, "the lease was kept while the job ran");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        elector.renewals.load(Ordering::SeqCst),
        renewed,
        "no renewal after the cut"
    );
}
