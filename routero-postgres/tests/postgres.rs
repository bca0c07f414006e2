//! routero-postgres against a real PostgreSQL.
//!
//! The server comes from `ROUTERO_TEST_DATABASE_URL` (scripts/test.sh starts one).
//! With `ROUTERO_TEST_REQUIRE_SERVICES=1` a missing server fails the run; otherwise
//! these tests skip with a notice. Each test gets a fresh schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{Duration, NaiveDate};
use routero_core::attribution::{BillingMode, OrgId, TeamId, WorkspaceId};
use routero_core::conformance::{self, apply_first_step, sample_day, sample_event};
use routero_core::memory::{MemoryElector, MemoryQueue, MemoryStore};
use routero_core::port::{
    ApplyOutcome, DrainApply, FencingToken, GroupBy, RollupFilter, SpendReader, SpendStore,
};
use routero_core::spend::{Pricing, QueuePosition, Rollups, ShardId, SpendEvent, UnpricedReason};
use routero_core::{Provider, Usage};
use routero_postgres::{PgConfig, PgStore};
use rust_decimal::Decimal;

fn database_url() -> Option<String> {
    match std::env::var("ROUTERO_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("ROUTERO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("ROUTERO_TEST_DATABASE_URL is not set and services are required")
        }
        Err(_) => {
            eprintln!("skipped: ROUTERO_TEST_DATABASE_URL is not set (run scripts/test.sh)");
            None
        }
    }
}

fn fresh_schema(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t_{test}_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn store(url: &str, test: &str) -> PgStore {
    let mut config = PgConfig::new(url);
    config.schema = Some(fresh_schema(test));
    PgStore::connect(config).await.expect("connect and migrate")
}

fn rollups_of(events: &[SpendEvent]) -> Rollups {
    let mut rollups = Rollups::new();
    for e in events {
        rollups.add_event(e).unwrap();
    }
    rollups
}

#[tokio::test]
async fn conformance_store_suite() {
    let Some(url) = database_url() else { return };
    conformance::store_suite(|name| store(&url, name), PgStore::set_rates).await;
}

#[tokio::test]
async fn conformance_invoices() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "invoices").await;
    conformance::invoices_close_months_and_carry_late_spend(&pg).await;
    let client = pg.client().await.unwrap();
    assert!(
        client
            .batch_execute("UPDATE routero_invoices SET body = ''")
            .await
            .is_err(),
        "immutable"
    );
}

#[tokio::test]
async fn the_ledger_is_append_only() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "append").await;
    let w = routero_core::attribution::WorkspaceId::new("ws").unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
        .unwrap()
        .to_utc();
    routero_core::wallet::Wallets::top_up(
        &pg,
        &w,
        Decimal::new(1000, 2),
        routero_core::Currency::USD,
        "k",
        at,
    )
    .await
    .unwrap();
    let client = pg.client().await.unwrap();
    assert!(
        client
            .batch_execute("UPDATE routero_wallet_entries SET amount = 99")
            .await
            .is_err()
    );
    assert!(
        client
            .batch_execute("DELETE FROM routero_wallet_entries")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn conformance_pipeline() {
    let Some(url) = database_url() else { return };
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
        .unwrap()
        .to_utc();
    conformance::pipeline_is_exactly_once(
        Arc::new(MemoryQueue::new(4)),
        Arc::new(MemoryElector::new(Arc::new(
            routero_core::memory::ManualClock::new(start),
        ))),
        Arc::new(store(&url, "pipeline").await),
    )
    .await;
}

/// The shard ids of a new layout are new rows of the drain state: a change of the
/// number of shards under load, drained into PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_resharding() {
    let Some(url) = database_url() else { return };
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
        .unwrap()
        .to_utc();
    let queue = Arc::new(MemoryQueue::new(4));
    let resharded = queue.clone();
    conformance::resharding_loses_and_doubles_nothing(
        queue,
        Arc::new(MemoryElector::new(Arc::new(
            routero_core::memory::ManualClock::new(start),
        ))),
        Arc::new(store(&url, "resharding").await),
        |shards| std::future::ready(resharded.reshard(shards)),
    )
    .await;
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_at_once() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema("migrate");
    let connect = || {
        let mut config = PgConfig::new(url.clone());
        config.schema = Some(schema.clone());
        PgStore::connect(config)
    };
    let (a, b, c) = tokio::join!(connect(), connect(), connect());
    for result in [a, b, c] {
        result.expect("every coworker starts");
    }
    connect().await.expect("and again later");
}

/// A deterministic random workload: many orgs, teams, keys, users, customers,
/// providers, models, modes, days, failures and unpriced events.
fn workload(seed: u64, batches: usize) -> Vec<Vec<SpendEvent>> {
    let mut state = seed;
    let mut next = |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    let mut seq = 0;
    (0..batches)
        .map(|_| {
            (0..1 + next(20))
                .map(|_| {
                    seq += 1;
                    let org = ["acme", "globex", "initech"][usize::try_from(next(3)).unwrap()];
                    let cost = format!("{}.{:09}", next(3), next(1_000_000_000));
                    let mut event = sample_event(org, seq, &cost);
                    event.event_time += Duration::days(i64::try_from(next(5)).unwrap());
                    event.provider = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini]
                        [usize::try_from(next(3)).unwrap()]
                    .clone();
                    event.model = ["model-a", "model-b", "model-c", "model-d"]
                        [usize::try_from(next(4)).unwrap()]
                    .to_owned();
                    if next(4) == 0 {
                        event.attribution.who.team = None;
                    }
                    if next(5) == 0 {
                        event.attribution.who.customer = None;
                    }
                    if next(10) == 0 {
                        event.outcome = routero_core::spend::Outcome::Failure;
                    }
                    if next(12) == 0 {
                        event.pricing = Pricing::Unpriced {
                            reason: UnpricedReason::UnknownModel,
                            detail: "unknown model \"model-x\" for provider openai".into(),
                        };
                    }
                    if next(15) == 0 {
                        event.usage = None;
                    } else if let Some(u) = &mut event.usage {
                        u.reasoning_tokens = Some(next(10));
                        u.cache_write_1h_tokens = next(3);
                        u.output_tokens += 10;
                    }
                    event.billing_mode = if next(2) == 0 {
                        BillingMode::Managed
                    } else {
                        BillingMode::Byok
                    };
                    event
                })
                .collect()
        })
        .collect()
}

fn filters() -> Vec<RollupFilter> {
    let from = sample_day();
    let to = from + Duration::days(4);
    let mut out = Vec::new();
    for org in ["acme", "globex", "nobody"] {
        let base = RollupFilter::new(OrgId::new(org).unwrap(), from, to);
        out.push(base.clone());
        let mut all = base.clone();
        all.group_by = GroupBy::ALL;
        out.push(all);
        for group_by in [
            GroupBy {
                team: true,
                ..GroupBy::default()
            },
            GroupBy {
                customer: true,
                model: true,
                ..GroupBy::default()
            },
            GroupBy {
                provider: true,
                billing_mode: true,
                ..GroupBy::default()
            },
            GroupBy {
                api_key: true,
                user: true,
                workspace: true,
                ..GroupBy::default()
            },
        ] {
            let mut f = base.clone();
            f.group_by = group_by;
            out.push(f);
        }
        let mut narrow = base.clone();
        narrow.teams = Some(vec![
            TeamId::new("team-1").unwrap(),
            TeamId::new("team-2").unwrap(),
        ]);
        narrow.billing_mode = Some(BillingMode::Byok);
        narrow.provider = Some(Provider::Anthropic);
        narrow.group_by = GroupBy {
            model: true,
            ..GroupBy::default()
        };
        out.push(narrow);
        let mut one_day = base.clone();
        one_day.from = from + Duration::days(2);
        one_day.to = from + Duration::days(2);
        one_day.model = Some("model-b".into());
        one_day.group_by = GroupBy {
            team: true,
            ..GroupBy::default()
        };
        out.push(one_day);
    }
    out
}

#[tokio::test]
async fn differential_against_the_in_memory_store() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "differential").await;
    let memory = MemoryStore::new();
    for (i, events) in workload(11, 60).into_iter().enumerate() {
        let rollups = rollups_of(&events);
        let through = QueuePosition::new(u64::try_from(i).unwrap() + 1, 0);
        let expected = (i > 0).then(|| QueuePosition::new(u64::try_from(i).unwrap(), 0));
        for s in [&pg as &dyn SpendStore, &memory as &dyn SpendStore] {
            let outcome = s
                .apply(DrainApply {
                    shard: ShardId(0),
                    token: FencingToken(1),
                    expected,
                    through,
                    rollups: &rollups,
                    events: &events,
                    at: sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc(),
                })
                .await
                .unwrap();
            assert_eq!(outcome, ApplyOutcome::Applied);
        }
    }
    let mut compared = 0;
    for filter in filters() {
        let from_pg = pg.rollups(&filter).await.unwrap();
        let from_memory = memory.rollups(&filter).await.unwrap();
        assert_eq!(from_pg, from_memory, "{filter:?}");
        compared += from_pg.len();
    }
    assert!(
        compared > 100,
        "the queries returned rows to compare ({compared})"
    );
}

#[tokio::test]
async fn concurrent_applies_on_one_shard_serialize() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "concurrent").await;
    let events: Vec<SpendEvent> = (0..10).map(|i| sample_event("race", i, "0.125")).collect();
    let rollups = rollups_of(&events);
    let apply = |token| DrainApply {
        shard: ShardId(3),
        token: FencingToken(token),
        expected: None,
        through: QueuePosition::new(5, 0),
        rollups: &rollups,
        events: &events,
        at: sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc(),
    };
    // Two coworkers that both read watermark None apply the same range at once.
    let (a, b) = tokio::join!(pg.apply(apply(1)), pg.apply(apply(2)));
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    let applied = outcomes
        .iter()
        .filter(|o| **o == ApplyOutcome::Applied)
        .count();
    assert_eq!(applied, 1, "exactly one commits: {outcomes:?}");
    let filter = RollupFilter::new(OrgId::new("race").unwrap(), sample_day(), sample_day());
    let rows = pg.rollups(&filter).await.unwrap();
    assert_eq!(rows[0].totals.cost, Decimal::new(1_250, 3));
    assert_eq!(rows[0].totals.successes, 10);
}

#[tokio::test]
async fn unpriced_events_and_the_spend_log_are_kept() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "log").await;
    let mut unpriced = sample_event("log", 1, "0");
    unpriced.pricing = Pricing::Unpriced {
        reason: UnpricedReason::UnknownModel,
        detail: "unknown model \"gpt-9\" for provider openai".into(),
    };
    let mut next_month = sample_event("log", 2, "0.5");
    next_month.event_time += Duration::days(40);
    let events = vec![unpriced, next_month, sample_event("log", 3, "0.25")];
    let at = sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc();
    assert_eq!(
        apply_first_step(&pg, &events, at).await,
        ApplyOutcome::Applied
    );
    let client = pg.client().await.unwrap();
    let kept = client
        .query_one(
            "SELECT reason, detail FROM routero_unpriced WHERE request_id = 'log-req-1'",
            &[],
        )
        .await
        .unwrap();
    let (reason, detail): (String, String) = (kept.get(0), kept.get(1));
    assert_eq!(reason, "unknown_model", "the stable code");
    assert!(detail.contains("gpt-9"), "the words beside it: {detail}");
    let logged_reason: String = client
        .query_one(
            "SELECT unpriced_reason FROM routero_spend_log WHERE request_id = 'log-req-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged_reason, "unknown_model");
    let logged: i64 = client
        .query_one("SELECT count(*) FROM routero_spend_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 3);
    let cost: Option<Decimal> = client
        .query_one(
            "SELECT cost FROM routero_spend_log WHERE request_id = 'log-req-3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cost, Some(Decimal::new(25, 2)));
    // Retention drops whole months: November goes, December stays.
    let dropped = pg
        .prune_spend_log(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap())
        .await
        .unwrap();
    assert_eq!(dropped, vec!["routero_spend_log_2026_11".to_owned()]);
    let left: i64 = client
        .query_one("SELECT count(*) FROM routero_spend_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

#[tokio::test]
async fn token_counts_beyond_bigint_are_refused_whole() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "bigint").await;
    let mut huge = sample_event("big", 1, "1");
    huge.usage = Some(Usage::tokens(10, 10));
    let mut rollups = rollups_of(&[huge.clone()]);
    let key = rollups.iter().next().map(|(k, _)| k.clone()).unwrap();
    let totals = routero_core::spend::RollupTotals {
        input_tokens: u64::MAX / 2,
        ..Default::default()
    };
    rollups.add(key, &totals).unwrap();
    let err = pg
        .apply(DrainApply {
            shard: ShardId(0),
            token: FencingToken(1),
            expected: None,
            through: QueuePosition::new(1, 0),
            rollups: &rollups,
            events: &[huge],
            at: sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), routero_core::port::ErrorKind::Invalid, "{err}");
    let state = pg.drain_state(ShardId(0)).await.unwrap();
    assert_eq!(state.watermark, None, "nothing was committed");
}

/// The analytics reads use the indexes at a realistic size: 200,000 rollup rows.
#[tokio::test]
async fn reads_use_the_indexes() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "explain").await;
    let client = pg.client().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO routero_daily_rollups \
             SELECT DATE '2026-01-01' + (i % 300), 'org-' || (i % 200), 'ws', 'team-' || (i % 17), \
                    'key-' || (i % 31), 'user-' || (i % 13), 'cust-' || (i % 7), 'openai', 'gpt-4o', 'managed', \
                    i, 0, 0, 0, i, 0, 0, 1, 0, 0, 0.001, pg_current_xact_id()::text::bigint, 'USD' \
             FROM generate_series(1, 200000) AS i; \
             ANALYZE routero_daily_rollups;",
        )
        .await
        .unwrap();
    let plans = [
        "SELECT day, SUM(cost) FROM routero_daily_rollups WHERE org = 'org-5' AND day BETWEEN '2026-03-01' AND '2026-03-31' GROUP BY day",
        "SELECT day, team, SUM(cost) FROM routero_daily_rollups WHERE org = 'org-5' AND team = ANY(ARRAY['team-3']) AND day BETWEEN '2026-03-01' AND '2026-03-31' GROUP BY day, team",
        "SELECT day, customer, SUM(cost) FROM routero_daily_rollups WHERE org = 'org-5' AND customer = ANY(ARRAY['cust-2']) AND day BETWEEN '2026-01-01' AND '2026-12-31' GROUP BY day, customer",
    ];
    for sql in plans {
        let rows = client.query(&format!("EXPLAIN {sql}"), &[]).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{sql}\n{plan}");
        assert!(plan.contains("Index"), "{sql}\n{plan}");
    }
}

#[tokio::test]
async fn conformance_warehouse() {
    let Some(url) = database_url() else { return };
    routero_warehouse::conformance::warehouse_suite(|name| store(&url, name)).await;
}

/// The request ids in the request-log NDJSON files of `sink`, by run number.
fn exported_log(sink: &routero_warehouse::MemorySink) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for (path, bytes) in sink.objects() {
        if !path.contains("/request_log/") || !path.ends_with(".ndjson") {
            continue;
        }
        let run = path.rsplit('/').next().unwrap().to_owned();
        for line in std::str::from_utf8(&bytes).unwrap().lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.push((run.clone(), row["request_id"].as_str().unwrap().to_owned()));
        }
    }
    ids.sort();
    ids
}

/// A transaction that took its id before a run was planned and commits after it is
/// not skipped: the run stops below it, and the next run carries its rows together
/// with everything committed after it began.
#[tokio::test]
async fn warehouse_waits_for_transactions_in_flight() {
    use routero_warehouse::{MemorySink, WarehouseSync};

    let Some(url) = database_url() else { return };
    let store = Arc::new(store(&url, "whflight").await);
    let at = sample_day().and_hms_opt(13, 0, 0).unwrap().and_utc();
    apply_first_step(&*store, &[sample_event("acme", 1, "1.00")], at).await;

    let mut slow = store.client().await.unwrap();
    let slow = slow.transaction().await.unwrap();
    slow.query_one("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();

    // A later transaction commits first.
    conformance::apply_step(&*store, 2, &[sample_event("acme", 2, "2.00")]).await;

    let sink = Arc::new(MemorySink::new());
    let sync = WarehouseSync::new(Arc::clone(&store), Arc::clone(&sink), "flight").unwrap();
    let hour = NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    // Other tests write to this server at the same time: their open transactions
    // may hold this run's end lower still, never higher than the slow one.
    sync.sync(hour).await.unwrap();
    let first = exported_log(&sink);
    assert!(
        first.iter().all(|(_, id)| id == "acme-req-1"),
        "run 1 stops below the open transaction: {first:?}"
    );

    slow.execute(
        "INSERT INTO routero_spend_log (request_id, event_time, org, workspace, team, api_key, \
         user_id, customer, provider, model, billing_mode, success, partial) \
         VALUES ('acme-late', $1, 'acme', 'acme-ws', '', '', '', '', 'openai', 'gpt-4o', \
         'managed', true, false)",
        &[&at],
    )
    .await
    .unwrap();
    slow.commit().await.unwrap();

    // Later runs carry the rest once every transaction below it has ended.
    let started = std::time::Instant::now();
    let mut next = hour;
    while exported_log(&sink).len() < 3 && started.elapsed().as_secs() < 120 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        next += Duration::hours(1);
        sync.sync(next).await.unwrap();
    }
    let mut ids: Vec<String> = exported_log(&sink).into_iter().map(|(_, id)| id).collect();
    ids.sort();
    assert_eq!(ids, ["acme-late", "acme-req-1", "acme-req-2"], "each once");
}

/// The request log is written with `COPY`; a request id logged before (the caller
/// recorded it twice) fails the copy, and the step writes the log again with
/// `ON CONFLICT DO NOTHING`: the first row stays, the step's other requests are
/// logged, the step commits.
#[tokio::test]
async fn a_request_logged_twice_keeps_the_first_and_the_step_commits() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "logtwice").await;
    let at = sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc();
    let first = [sample_event("twice", 1, "0.10")];
    assert_eq!(
        apply_first_step(&pg, &first, at).await,
        ApplyOutcome::Applied
    );
    let mut unpriced = sample_event("twice", 3, "0");
    unpriced.usage = None;
    unpriced.pricing = Pricing::Unpriced {
        reason: UnpricedReason::NoUsage,
        detail: "openai response carries no usage".into(),
    };
    let second = vec![
        sample_event("twice", 2, "0.20"),
        sample_event("twice", 1, "9.99"),
        unpriced,
    ];
    conformance::apply_step(&pg, 2, &second).await;
    let client = pg.client().await.unwrap();
    let rows = client
        .query(
            "SELECT request_id, cost, input_tokens FROM routero_spend_log ORDER BY request_id",
            &[],
        )
        .await
        .unwrap();
    let logged: Vec<(String, Option<Decimal>, Option<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        logged,
        [
            (
                "twice-req-1".to_owned(),
                Some(Decimal::new(10, 2)),
                Some(101)
            ),
            (
                "twice-req-2".to_owned(),
                Some(Decimal::new(20, 2)),
                Some(102)
            ),
            ("twice-req-3".to_owned(), None, None),
        ]
    );
}

/// Sends a signal to a local process with `kill`.
fn signal(pid: i32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Resumes a stopped backend however the test ends.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// A PostgreSQL backend frozen in the middle of a drain step (SIGSTOP) while it holds
/// its shard's drain-state row: the drainer's other shards keep draining, the frozen
/// shard's retries fail fast on `lock_timeout` instead of hanging, and once the
/// backend is resumed the shard lands with exact totals.
#[tokio::test]
async fn a_frozen_backend_stalls_only_its_shard() {
    use routero_core::drainer::{Drainer, DrainerConfig};
    use routero_core::port::SpendQueue;
    use routero_core::spend::{BatchId, SpendBatch};

    let Some(url) = database_url() else { return };
    let mut config = PgConfig::new(&url);
    config.schema = Some(fresh_schema("frozen"));
    config.pool_size = 6;
    config.lock_timeout = std::time::Duration::from_millis(1_000);
    config.statement_timeout = std::time::Duration::from_millis(1_500);
    let pg = PgStore::connect(config).await.expect("connect");
    let queue = Arc::new(MemoryQueue::new(4));
    let elector = Arc::new(MemoryElector::new(Arc::new(
        routero_core::memory::ManualClock::new(chrono::Utc::now()),
    )));
    let mut expected = Decimal::ZERO;
    let mut seq = 0u64;
    let mut append = async |shards: &[u16]| {
        for &shard in shards {
            seq += 1;
            let cost = Decimal::new(i64::try_from(seq).unwrap(), 3);
            expected += cost;
            let batch = SpendBatch {
                id: BatchId::new(11, seq),
                shard: ShardId(shard),
                events: vec![sample_event("acme", seq, &cost.to_string())],
            };
            queue.append(&batch).await.unwrap();
        }
    };
    async fn until(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !done().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    let drainer = Arc::new(Drainer::new(
        Arc::clone(&queue),
        elector,
        pg.clone(),
        DrainerConfig::new("frozen"),
    ));
    let running = Arc::clone(&drainer).spawn();
    append(&[0, 1, 2, 3]).await;
    until("the first batches drain", 20, async || {
        (0..4).all(|s| queue.is_empty(ShardId(s)))
    })
    .await;

    // Lock the rollups table, so that the drainer's next step for shard 2 waits on
    // it after it has locked its shard's drain-state row; freeze that backend there:
    // it keeps the row, frozen, mid-transaction.
    let holder = pg.client().await.unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE routero_daily_rollups IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    append(&[2]).await;
    let watcher = pg.client().await.unwrap();
    let mut frozen = None;
    until(
        "the drain step waits inside its transaction",
        20,
        async || {
            let row = watcher
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE '%INSERT INTO routero_daily_rollups AS r%' \
                 AND pid <> pg_backend_pid() LIMIT 1",
                    &[],
                )
                .await
                .unwrap();
            frozen = row.map(|r| r.get::<_, i32>(0));
            frozen.is_some()
        },
    )
    .await;
    let pid = frozen.unwrap();
    assert!(
        signal(pid, "STOP"),
        "could not SIGSTOP backend {pid}: the test must run on the database's host, as root or its user"
    );
    let _resume = Resume(pid);
    holder.batch_execute("ROLLBACK").await.unwrap();
    drop(holder);

    // The other shards keep draining, for longer than the step deadline, while
    // shard 2 stays where it was.
    for _ in 0..3 {
        append(&[0, 1, 3]).await;
        until("the other shards drain", 20, async || {
            [0, 1, 3].iter().all(|s| queue.is_empty(ShardId(*s)))
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    }
    assert_eq!(
        queue.len(ShardId(2)),
        1,
        "shard 2 waits for its frozen backend"
    );

    // Resumed, the backend finds its client gone and rolls back; shard 2 lands once.
    assert!(signal(pid, "CONT"));
    until("shard 2 drains", 30, async || queue.is_empty(ShardId(2))).await;
    let stats = running.stop().await;
    assert!(
        stats.errors > 0,
        "shard 2's steps failed while it was frozen"
    );
    let sum: Decimal = watcher
        .query_one(
            "SELECT COALESCE(sum(cost), 0) FROM routero_daily_rollups",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, expected);
    let successes: i64 = watcher
        .query_one(
            "SELECT COALESCE(sum(successes), 0)::bigint FROM routero_daily_rollups",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(successes, i64::try_from(seq).unwrap());
}

/// The test certificates' directory (scripts/test.sh makes it and starts PostgreSQL
/// with ssl=on), or `None` after a notice.
fn tls_dir() -> Option<std::path::PathBuf> {
    match std::env::var("ROUTERO_TEST_TLS_DIR") {
        Ok(dir) => Some(dir.into()),
        Err(_) if std::env::var("ROUTERO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("ROUTERO_TEST_TLS_DIR is not set and services are required")
        }
        Err(_) => {
            eprintln!("skipped: ROUTERO_TEST_TLS_DIR is not set (run scripts/test.sh)");
            None
        }
    }
}

/// `url` with its host replaced and `settings` appended.
fn with_tls(url: &str, host: &str, settings: &str) -> String {
    let (head, rest) = url.split_once('@').unwrap();
    let (hostport, tail) = rest.split_once('/').unwrap();
    let port = hostport.rsplit_once(':').map_or("5432", |(_, p)| p);
    let sep = if tail.contains('?') { '&' } else { '?' };
    format!("{head}@{host}:{port}/{tail}{sep}{settings}")
}

async fn tls_store(url: String, test: &str) -> Result<PgStore, routero_core::port::BackendError> {
    let mut config = PgConfig::new(url);
    config.schema = Some(fresh_schema(test));
    config.timeout = std::time::Duration::from_secs(3);
    PgStore::connect(config).await
}

/// Whether the store's connections are encrypted.
async fn encrypted(pg: &PgStore) -> bool {
    pg.client()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The store's conformance over `sslmode=verify-full`, and every mode's promise.
#[tokio::test]
async fn tls_modes() {
    let (Some(url), Some(dir)) = (database_url(), tls_dir()) else {
        return;
    };
    let ca = dir.join("ca.crt");
    let full = with_tls(
        &url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    conformance::store_suite(
        |name| {
            let full = full.clone();
            async move { tls_store(full, name).await.expect("verify-full") }
        },
        PgStore::set_rates,
    )
    .await;
    assert!(encrypted(&tls_store(full.clone(), "full").await.unwrap()).await);

    // verify-ca checks the chain only: the address is not the certificate's name.
    let ca_only = with_tls(
        &url,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    );
    assert!(encrypted(&tls_store(ca_only, "ca").await.unwrap()).await);
    let require = with_tls(&url, "127.0.0.1", "sslmode=require");
    assert!(encrypted(&tls_store(require, "require").await.unwrap()).await);
    let disable = with_tls(&url, "127.0.0.1", "sslmode=disable");
    assert!(!encrypted(&tls_store(disable, "disable").await.unwrap()).await);

    // Another CA, and a host name the certificate does not carry, are refused.
    let other = dir.join("other-ca.crt");
    let wrong_ca = with_tls(
        &url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    );
    let e = tls_store(wrong_ca, "wrong_ca")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("UnknownIssuer"), "{e}");
    let wrong_host = with_tls(
        &url,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let e = tls_store(wrong_host, "wrong_host")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for name"),
        "{e}"
    );
    let missing = with_tls(&url, "localhost", "sslmode=verify-full");
    let e = tls_store(missing, "missing").await.unwrap_err();
    assert_eq!(e.kind(), routero_core::port::ErrorKind::Invalid, "{e}");
}

#[tokio::test]
async fn job_runs_conformance() {
    let Some(url) = database_url() else { return };
    let pg = store(&url, "jobruns").await;
    routero_core::schedule::conformance(&pg, "conformance").await;
}

/// Two coworkers' schedulers closing months, with a clock of the test's and leases
/// that expire by it: nothing before the grace; after it, each workspace's month once,
/// numbered in order with no gap; a holder stopped in the middle of the close (its
/// work dropped mid-transaction) leaves no half-closed month, and the next holder,
/// once the lease has expired, closes the rest; late spend leaves a closed invoice as
/// it was.
#[tokio::test]
async fn months_close_once_on_a_schedule() {
    use routero_core::invoice::{BillingDirectory, InvoiceStore, WorkspaceBilling};
    use routero_core::jobs::MonthClose;
    use routero_core::memory::ManualClock;
    use routero_core::port::Clock;
    use routero_core::schedule::{Job, JobRuns, RunFilter, RunState, Scheduler, SchedulerConfig};
    use std::time::Duration as StdDuration;

    let Some(url) = database_url() else { return };
    let schema = fresh_schema("close");
    let connect = || {
        let mut config = PgConfig::new(&url);
        config.schema = Some(schema.clone());
        PgStore::connect(config)
    };
    let (first, second) = (connect().await.unwrap(), connect().await.unwrap());
    let org = OrgId::new("acme").unwrap();
    let plan = |p: &str| WorkspaceBilling {
        org: org.clone(),
        currency: routero_core::Currency::USD,
        plan: Some(Decimal::from_str_exact(p).unwrap()),
    };
    // Enough workspaces that a close takes a while to stop in the middle of.
    let mut directory = BillingDirectory::new();
    for n in 0..40 {
        directory = directory.with(
            WorkspaceId::new(&format!("acme-{n:02}")).unwrap(),
            plan("49.00"),
        );
    }
    directory = directory.with(WorkspaceId::new("acme-ws").unwrap(), plan("10.00"));
    let directory = Arc::new(directory);
    let at = |day: u32, hour: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, 12, day)
            .unwrap()
            .and_hms_opt(hour, 0, 0)
            .unwrap()
            .and_utc()
    };
    let clock = Arc::new(ManualClock::new(at(1, 5)));
    let set = |t: chrono::DateTime<chrono::Utc>| clock.advance((t - clock.now()).to_std().unwrap());
    let elector = Arc::new(MemoryElector::new(clock.clone()));
    let scheduler = |store: &PgStore, holder: &str| {
        let rates_of = store.clone();
        let job = MonthClose::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(move || rates_of.rates()),
            Arc::clone(&directory),
            StdDuration::from_secs(6 * 3600),
        );
        let mut config = SchedulerConfig::new(holder);
        config.lease_ttl = StdDuration::from_secs(30);
        Scheduler::new(
            elector.clone(),
            Arc::new(store.clone()),
            clock.clone(),
            vec![Arc::new(job) as Arc<dyn Job>],
            config,
        )
        .unwrap()
    };
    let (one, two) = (scheduler(&first, "one"), scheduler(&second, "two"));
    let count = || async {
        first
            .client()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM routero_invoices", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    let ticks = one.tick().await;
    assert!(
        ticks[0].done.is_empty() && !ticks[0].busy,
        "within the grace: {ticks:?}"
    );
    assert_eq!(count().await, 0);

    // After the grace, the first holder is stopped in the middle of the close.
    set(at(1, 7));
    {
        let tick = one.tick();
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = &mut tick => panic!("the close finished before it could be stopped"),
                () = tokio::time::sleep(StdDuration::from_millis(2)) => {}
            }
            if count().await > 0 {
                break;
            }
        }
    }
    let partial = count().await;
    assert!(
        (1..41).contains(&partial),
        "{partial} closed before the stop"
    );
    // Its lease still runs: the other finds the job busy.
    assert!(two.tick().await[0].busy);
    set(at(1, 7) + chrono::Duration::seconds(31));
    let ticks = two.tick().await;
    assert_eq!(ticks[0].done, ["2026-11"], "{ticks:?}");
    let runs = JobRuns::runs(&second, &RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].state, runs[0].attempts, runs[0].holder.as_str()),
        (RunState::Done, 2, "two")
    );
    assert_eq!(
        runs[0].detail.as_deref(),
        Some(format!("{} closed, {partial} closed before", 41 - partial).as_str())
    );

    // Each workspace once, numbered 1..=41 with no gap.
    let mut numbers = Vec::new();
    for (workspace, _) in directory.iter() {
        let finals = first.finalized(workspace).await.unwrap();
        assert_eq!(finals.len(), 1, "{workspace}");
        numbers.push(finals[0].number.clone().unwrap());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=41).map(|n| format!("INV-202611-{n:06}")).collect();
    assert_eq!(numbers, expected);

    // Later ticks, by either, close nothing again.
    set(at(2, 0));
    assert!(one.tick().await[0].done.is_empty());
    assert!(two.tick().await[0].done.is_empty());
    assert_eq!(count().await, 41);

    // November spend drained after the close: the rollups take it, the closed invoice
    // stays as it was (the next invoice carries it: the invoice conformance suite).
    let acme_ws = WorkspaceId::new("acme-ws").unwrap();
    let before = first.finalized(&acme_ws).await.unwrap();
    let late = vec![sample_event("acme", 1, "2.50")];
    assert_eq!(
        apply_first_step(&first, &late, at(2, 1)).await,
        ApplyOutcome::Applied
    );
    assert_eq!(first.finalized(&acme_ws).await.unwrap(), before);
    let filter = RollupFilter::new(org.clone(), sample_day(), sample_day());
    let spent: Decimal = first
        .rollups(&filter)
        .await
        .unwrap()
        .iter()
        .map(|r| r.totals.cost)
        .sum();
    assert_eq!(spent, Decimal::from_str_exact("2.50").unwrap());
}

/// Retention keeps whole months before the current one: older rollups, request-log
/// partitions and released quarantine rows go; a batch still waiting stays.
#[tokio::test]
async fn retention_drops_old_months_and_keeps_waiting_batches() {
    let Some(url) = database_url() else { return };
    let mut config = PgConfig::new(&url);
    config.schema = Some(fresh_schema("retention"));
    config.log_retention_months = Some(1);
    config.rollup_retention_months = Some(1);
    config.quarantine_retention_months = Some(1);
    let pg = PgStore::connect(config).await.unwrap();
    let events: Vec<SpendEvent> = [(9u32, 0u64), (10, 1), (11, 2), (12, 3)]
        .into_iter()
        .map(|(month, seq)| {
            let mut e = sample_event("acme", seq, "1.25");
            e.event_time = NaiveDate::from_ymd_opt(2026, month, 2)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc();
            e
        })
        .collect();
    apply_first_step(&pg, &events, chrono::Utc::now()).await;
    let client = pg.client().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO routero_quarantine (shard, position_major, position_minor, batch_id, batch, \
             events, reason, detail, quarantined_at, state, released_at, release_reason) VALUES \
             (0, 1, 0, 'old-released', '{}', 0, 'corrupt', 'x', '2026-08-01', 'discarded', '2026-08-02', 'gone'), \
             (0, 2, 0, 'old-waiting', '{}', 0, 'missing_exchange_rate', 'x', '2026-08-01', 'quarantined', NULL, NULL)",
        )
        .await
        .unwrap();

    // The coworker's daily job does it: one run for the day, its account kept.
    {
        use routero_core::memory::ManualClock;
        use routero_core::schedule::{Job, JobRuns, RunFilter, Scheduler, SchedulerConfig};
        let today = NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_opt(3, 0, 0)
            .unwrap()
            .and_utc();
        let clock = Arc::new(ManualClock::new(today));
        let scheduler = Scheduler::new(
            Arc::new(MemoryElector::new(clock.clone())),
            Arc::new(pg.clone()),
            clock,
            vec![Arc::new(routero_postgres::RetentionJob::new(pg.clone())) as Arc<dyn Job>],
            SchedulerConfig::new("test"),
        )
        .unwrap();
        assert_eq!(scheduler.tick().await[0].done, ["2026-12-02"]);
        assert!(scheduler.tick().await[0].done.is_empty(), "once a day");
        let runs = JobRuns::runs(&pg, &RunFilter::default()).await.unwrap();
        // September and October's rollups, the released quarantine row only.
        assert_eq!(
            runs[0].detail.as_deref(),
            Some("2 log partitions dropped, 2 rollup rows, 1 quarantine rows")
        );
    }
    let months: Vec<String> = client
        .query(
            "SELECT DISTINCT to_char(day, 'YYYY-MM') FROM routero_daily_rollups ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(months, ["2026-11", "2026-12"]);
    let left: Vec<String> = client
        .query("SELECT batch_id FROM routero_quarantine", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["old-waiting"]);
    let again = pg
        .apply_retention(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap())
        .await
        .unwrap();
    assert_eq!(
        again,
        routero_postgres::Retained::default(),
        "nothing twice"
    );
}

/// A repricing applied while a drain goes on writing the same rollups and wallet: no
/// deadlock, no lost write. Two thousand logged requests are repriced a page of 50 at
/// a time while forty drain steps of 50 new requests each land on the same day,
/// workspace and dimensions; afterwards the rollups hold the new requests at their
/// recorded cost plus the old ones at their corrected cost, to the last digit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repricing_and_a_drain_run_side_by_side() {
    use routero_core::price::{PriceTable, layered};
    use routero_core::reprice::{RepricingRequest, RepricingScope, apply};
    let Some(url) = database_url() else { return };
    let store = Arc::new(store(&url, "repricing_live").await);
    let old: Vec<SpendEvent> = (0..2_000u64)
        .map(|n| sample_event("acme", n, "0.001"))
        .collect();
    for (step, chunk) in old.chunks(500).enumerate() {
        conformance::apply_step(&*store, u64::try_from(step).unwrap() + 1, chunk).await;
    }
    let prices = layered(
        &PriceTable::bundled(),
        "format = 1\nversion = \"fix-1\"\ncurrency = \"USD\"\n[[model]]\nprovider = \"openai\"\n\
         name = \"gpt-4o\"\ninput = \"5\"\ncache_read = \"1.25\"\noutput = \"10\"\n",
    )
    .unwrap();
    let corrected: Decimal = old
        .iter()
        .map(|e| {
            prices
                .cost(&e.provider, &e.model, &e.usage.unwrap(), e.event_time)
                .unwrap()
                .total()
        })
        .sum();
    // The new requests: the same day and dimensions, drained on another shard while
    // the repricing runs; recorded at the new prices, so a page that reads some of
    // them corrects nothing there.
    let new: Vec<SpendEvent> = (10_000..12_000u64)
        .map(|n| {
            let mut e = sample_event("acme", n, "0");
            let cost = prices
                .cost(&e.provider, &e.model, &e.usage.unwrap(), e.event_time)
                .unwrap()
                .total();
            if let Pricing::Priced { cost: c, .. } = &mut e.pricing {
                *c = cost;
            }
            e
        })
        .collect();
    let drained: Decimal = new.iter().filter_map(SpendEvent::cost).sum();
    let drain = {
        let store = store.clone();
        let new = new.clone();
        tokio::spawn(async move {
            for (step, chunk) in new.chunks(50).enumerate() {
                let step = u64::try_from(step).unwrap() + 1;
                let rollups = rollups_of(chunk);
                let outcome = store
                    .apply(DrainApply {
                        shard: ShardId(7),
                        token: FencingToken(1),
                        expected: (step > 1).then(|| QueuePosition::new(step - 1, 0)),
                        through: QueuePosition::new(step, 0),
                        rollups: &rollups,
                        events: chunk,
                        at: conformance::november(30),
                    })
                    .await
                    .unwrap();
                assert_eq!(outcome, ApplyOutcome::Applied);
            }
        })
    };
    let bundled = PriceTable::bundled();
    let done = apply(
        &*store,
        RepricingRequest {
            scope: RepricingScope::days(sample_day(), sample_day()),
            reason: "side by side".to_owned(),
            actor: "test".to_owned(),
            current: &bundled,
            prices: &prices,
        },
        50,
        conformance::november(30),
    )
    .await
    .unwrap();
    drain.await.unwrap();
    // Every old request corrected; the new ones, if read, already cost the new price.
    assert_eq!(done.corrected, 2_000);
    let filter = RollupFilter::new(OrgId::new("acme").unwrap(), sample_day(), sample_day());
    let total: Decimal = store
        .rollups(&filter)
        .await
        .unwrap()
        .iter()
        .map(|r| r.totals.cost)
        .sum();
    assert_eq!(total, corrected + drained);
}
