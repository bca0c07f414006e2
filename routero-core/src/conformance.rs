//! The conformance suite: async test functions every port implementation must pass.
//!
//! The in-memory ports pass it in this crate's tests; the Redis and PostgreSQL
//! adapters run the same functions against real servers. Each function panics with a
//! message on the first violation, like an assertion. Give each call fresh state (a
//! new key prefix, a new schema).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::Currency;
use crate::attribution::{
    ApiKeyId, Attribution, BillingMode, CustomerId, OrgId, RequestId, TeamId, UserId, WorkspaceId,
};
use crate::drainer::{Drainer, DrainerConfig, StepOutcome};
use crate::port::{
    AppendOutcome, ApplyOutcome, DrainApply, FencingToken, GroupBy, LeaderElector, RollupFilter,
    SpendQueue, SpendReader, SpendStore,
};
use crate::provider::Provider;
use crate::recorder::{Recorder, RecorderConfig};
use crate::spend::{
    BatchId, Pricing, QueuePosition, RollupTotals, Rollups, ShardId, SpendBatch, SpendEvent,
};
use crate::usage::Usage;

/// The day every sample event happens on.
pub fn sample_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 2).unwrap_or_default()
}

/// Every conformance test of a spend queue, each on a fresh queue of four shards that
/// `fresh(name)` makes (`name` tells them apart: a key prefix, say). A queue adapter
/// calls this one function, and a test added here reaches it.
pub async fn queue_suite<Q, F, Fut>(mut fresh: F)
where
    Q: SpendQueue,
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = Q>,
{
    queue_orders_reads_and_trims(&fresh("orders").await).await;
    queue_ignores_duplicate_batch_ids(&fresh("duplicates").await).await;
    queue_keeps_shards_apart(&fresh("shards").await).await;
}

/// Every conformance test of a system of record (drain, reads, wallets, invoices,
/// exports, the quarantine), each on a fresh, empty store that `fresh(name)` makes
/// (`name` tells them apart: a schema, say); `set_rates` gives a store its exchange
/// rates. A store adapter calls this one function, and a test added here reaches it.
pub async fn store_suite<S, F, Fut>(
    mut fresh: F,
    set_rates: fn(&S, Arc<dyn crate::money::ExchangeRates>),
) where
    S: SpendStore
        + SpendReader
        + crate::wallet::Wallets
        + crate::invoice::InvoiceStore
        + crate::quarantine::Quarantine,
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    store_applies_exactly_once(&fresh("once").await).await;
    store_refuses_a_stale_leader(&fresh("stale").await).await;
    reader_scopes_and_groups(&fresh("scope").await).await;
    wallet_top_ups_are_idempotent(&fresh("topups").await).await;
    wallet_refuses_invalid_credits(&fresh("invalid").await).await;
    wallet_lots_and_history(&fresh("lots").await).await;
    drain_debits_managed_spend_only(&fresh("debits").await).await;
    wallet_concurrent_writes_lose_nothing(&fresh("concurrent").await).await;
    invoices_close_months_and_carry_late_spend(&fresh("invoices").await).await;
    export_round_trips_a_month(&fresh("export").await).await;
    let store = Arc::new(fresh("poison").await);
    let handle = Arc::clone(&store);
    poison_batches_never_stall_a_shard(store, move |rates| set_rates(&handle, rates)).await;
}

/// Applies `events` to a fresh store as shard 0's first drain step (token 1, through
/// `1-0`), dated `at`: how tests seed a store without a queue. Panics on a backend
/// error.
pub async fn apply_first_step<S: SpendStore + ?Sized>(
    store: &S,
    events: &[SpendEvent],
    at: DateTime<Utc>,
) -> ApplyOutcome {
    let mut rollups = Rollups::new();
    for event in events {
        rollups
            .add_event(event)
            .unwrap_or_else(|e| panic!("rollup of {}: {e}", event.request_id));
    }
    store
        .apply(DrainApply {
            shard: ShardId(0),
            token: FencingToken(1),
            expected: None,
            through: QueuePosition::new(1, 0),
            rollups: &rollups,
            events,
            at,
        })
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"))
}

/// A priced sample event of `org`, numbered `seq`, costing `cost` (a decimal string).
pub fn sample_event(org: &str, seq: u64, cost: &str) -> SpendEvent {
    let id = |text: String| text;
    let at: DateTime<Utc> = sample_day()
        .and_hms_opt(12, 0, 0)
        .unwrap_or_default()
        .and_utc()
        + chrono::Duration::seconds(i64::try_from(seq % 3_600).unwrap_or(0));
    let attribution = Attribution::new(
        OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
        WorkspaceId::new(&id(format!("{org}-ws"))).unwrap_or_else(|e| panic!("{e}")),
    )
    .with_team(TeamId::new(&format!("team-{}", seq % 3)).unwrap_or_else(|e| panic!("{e}")))
    .with_api_key(ApiKeyId::new(&format!("key-{}", seq % 5)).unwrap_or_else(|e| panic!("{e}")))
    .with_user(UserId::new(&format!("user-{}", seq % 4)).unwrap_or_else(|e| panic!("{e}")))
    .with_customer(CustomerId::new(&format!("cust-{}", seq % 2)).unwrap_or_else(|e| panic!("{e}")));
    let mut usage = Usage::tokens(100 + seq, 10 + seq % 7);
    usage.cache_read_tokens = seq % 11;
    SpendEvent {
        request_id: RequestId::new(&format!("{org}-req-{seq}")).unwrap_or_else(|e| panic!("{e}")),
        event_time: at,
        attribution,
        provider: Provider::OpenAi,
        model: "gpt-4o".to_owned(),
        usage: Some(usage),
        pricing: Pricing::Priced {
            cost: Decimal::from_str_exact(cost).unwrap_or_else(|e| panic!("{cost}: {e}")),
            currency: Currency::USD,
            price_version: Arc::from("conformance"),
            priced_model: Arc::from("gpt-4o"),
        },
        billing_mode: if seq.is_multiple_of(2) {
            BillingMode::Managed
        } else {
            BillingMode::Byok
        },
        outcome: crate::spend::Outcome::Success,
        partial: false,
    }
}

fn batch(id: &str, shard: u16, events: Vec<SpendEvent>) -> SpendBatch {
    SpendBatch {
        id: BatchId::parse(id).unwrap_or_else(|| panic!("batch id {id}")),
        shard: ShardId(shard),
        events,
    }
}

async fn appended(queue: &dyn SpendQueue, batch: &SpendBatch) -> QueuePosition {
    match queue
        .append(batch)
        .await
        .unwrap_or_else(|e| panic!("append: {e}"))
    {
        AppendOutcome::Appended(position) => position,
        AppendOutcome::Duplicate => {
            panic!("batch {} reported as a duplicate on first append", batch.id)
        }
    }
}

/// Batches come back in append order, after any position, within a limit; trimming
/// removes exactly the batches at or before the position.
pub async fn queue_orders_reads_and_trims(queue: &dyn SpendQueue) {
    let p1 = appended(
        queue,
        &batch("order-1", 0, vec![sample_event("acme", 1, "0.1")]),
    )
    .await;
    let p2 = appended(
        queue,
        &batch("order-2", 0, vec![sample_event("acme", 2, "0.2")]),
    )
    .await;
    let p3 = appended(
        queue,
        &batch("order-3", 0, vec![sample_event("acme", 3, "0.3")]),
    )
    .await;
    assert!(p1 < p2 && p2 < p3, "positions grow: {p1} {p2} {p3}");
    let all = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = all.iter().map(|b| b.batch.id.as_str()).collect();
    assert_eq!(ids, ["order-1", "order-2", "order-3"]);
    assert_eq!(
        all[0].batch.events[0],
        sample_event("acme", 1, "0.1"),
        "events round-trip exactly"
    );
    let after = queue
        .read_after(ShardId(0), Some(p1), 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.len(), 1, "the limit is honoured");
    assert_eq!(after[0].position, p2);
    queue
        .trim_through(ShardId(0), p2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let left = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].position, p3);
}

/// A batch appended twice with the same id is stored once.
pub async fn queue_ignores_duplicate_batch_ids(queue: &dyn SpendQueue) {
    let b = batch("dup-1", 0, vec![sample_event("acme", 7, "1.5")]);
    appended(queue, &b).await;
    let again = queue.append(&b).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, AppendOutcome::Duplicate);
    let stored = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stored
            .iter()
            .filter(|q| q.batch.id.as_str() == "dup-1")
            .count(),
        1
    );
}

/// Shards are separate queues.
pub async fn queue_keeps_shards_apart(queue: &dyn SpendQueue) {
    assert!(queue.shards() >= 2, "this check needs at least two shards");
    appended(queue, &batch("shard-a", 0, vec![sample_event("a", 1, "1")])).await;
    appended(queue, &batch("shard-b", 1, vec![sample_event("b", 1, "2")])).await;
    let zero = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let one = queue
        .read_after(ShardId(1), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(zero.iter().all(|b| b.batch.shard == ShardId(0)));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].batch.id.as_str(), "shard-b");
}

/// One holder at a time; renewal by the holder only; release frees the lease; every
/// acquisition has a larger fencing token.
pub async fn elector_single_holder(elector: &dyn LeaderElector) {
    let ttl = Duration::from_secs(30);
    let a = elector
        .acquire(ShardId(0), "a", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a = a.expect("a free lease is acquired");
    let b = elector
        .acquire(ShardId(0), "b", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(b.is_none(), "a held lease is not acquired by another");
    assert!(
        elector.renew(&a).await.unwrap_or_else(|e| panic!("{e}")),
        "the holder renews"
    );
    let mut forged = a.clone();
    forged.holder = Arc::from("b");
    assert!(
        !elector
            .renew(&forged)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "another cannot renew it"
    );
    elector
        .release(&forged)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        elector
            .acquire(ShardId(0), "c", ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "another cannot release it"
    );
    elector.release(&a).await.unwrap_or_else(|e| panic!("{e}"));
    let c = elector
        .acquire(ShardId(0), "c", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let c = c.expect("a released lease is free");
    assert!(
        c.token > a.token,
        "tokens grow: {:?} then {:?}",
        a.token,
        c.token
    );
    let other = elector
        .acquire(ShardId(1), "a", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(other.is_some(), "shards have separate leases");
}

/// Two electors race for a lease: exactly one wins.
pub async fn elector_race_has_one_winner(first: &dyn LeaderElector, second: &dyn LeaderElector) {
    let ttl = Duration::from_secs(30);
    let (a, b) = tokio::join!(
        first.acquire(ShardId(3), "a", ttl),
        second.acquire(ShardId(3), "b", ttl)
    );
    let winners = [a, b]
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .filter(Option::is_some)
        .count();
    assert_eq!(winners, 1, "exactly one of two racing electors wins");
}

/// A lease that expired cannot be renewed; another takes it with a larger token; the
/// old holder's release leaves the new lease alone. `pass` lets `ttl` elapse (a
/// manual clock's advance, or a real sleep).
pub async fn elector_expiry_and_takeover<F, Fut>(
    elector: &dyn LeaderElector,
    ttl: Duration,
    pass: F,
) where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let old = elector
        .acquire(ShardId(2), "old", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let old = old.expect("a free lease is acquired");
    pass(ttl * 2).await;
    assert!(
        !elector.renew(&old).await.unwrap_or_else(|e| panic!("{e}")),
        "an expired lease is lost"
    );
    let new = elector
        .acquire(ShardId(2), "new", ttl * 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let new = new.expect("an expired lease is taken over");
    assert!(new.token > old.token, "the new holder's token is larger");
    elector
        .release(&old)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        elector.renew(&new).await.unwrap_or_else(|e| panic!("{e}")),
        "the old holder's release did nothing"
    );
}

async fn sum_of<R: SpendReader + ?Sized>(reader: &R, org: &str) -> RollupTotals {
    let filter = RollupFilter::new(
        OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
        sample_day(),
        sample_day(),
    );
    let rows = reader
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut sum = RollupTotals::default();
    for row in rows {
        sum.add(&row.totals).unwrap_or_else(|e| panic!("{e}"));
    }
    sum
}

/// The rollups of some events (panics on an overflow).
pub fn rollups_of(events: &[SpendEvent]) -> Rollups {
    let mut rollups = Rollups::new();
    for e in events {
        rollups.add_event(e).unwrap_or_else(|e| panic!("{e}"));
    }
    rollups
}

/// A drain step commits once: its replay is recognised and changes nothing; a
/// watermark that moved is reported; the drain state follows.
pub async fn store_applies_exactly_once<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    let events = vec![
        sample_event("once", 1, "0.25"),
        sample_event("once", 2, "0.5"),
    ];
    let rollups = rollups_of(&events);
    let step = |expected, through| DrainApply {
        shard: ShardId(0),
        token: FencingToken(1),
        expected,
        through,
        rollups: &rollups,
        events: &events,
        at: day(28),
    };
    let p1 = QueuePosition::new(10, 0);
    let first = store
        .apply(step(None, p1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, ApplyOutcome::Applied);
    let replay = store
        .apply(step(None, p1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        replay,
        ApplyOutcome::AlreadyApplied,
        "a replayed step is skipped"
    );
    let sum = sum_of(store, "once").await;
    assert_eq!(
        sum.cost,
        Decimal::from_str_exact("0.75").unwrap_or_default(),
        "counted once"
    );
    assert_eq!(sum.successes, 2);
    let state = store
        .drain_state(ShardId(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.watermark, Some(p1));
    assert_eq!(state.fencing_token, Some(FencingToken(1)));
    let moved = store
        .apply(step(
            Some(QueuePosition::new(5, 0)),
            QueuePosition::new(20, 0),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(moved, ApplyOutcome::WatermarkMoved { current: Some(p1) });
    assert_eq!(
        sum_of(store, "once").await,
        sum,
        "a refused step changes nothing"
    );
}

/// A drainer whose token is older than one the store saw is refused, and changes
/// nothing.
pub async fn store_refuses_a_stale_leader<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    let events = vec![sample_event("stale", 1, "1.125")];
    let rollups = rollups_of(&events);
    let apply = |token, expected, through| DrainApply {
        shard: ShardId(1),
        token: FencingToken(token),
        expected,
        through,
        rollups: &rollups,
        events: &events,
        at: day(28),
    };
    let p1 = QueuePosition::new(1, 0);
    assert_eq!(
        store
            .apply(apply(7, None, p1))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ApplyOutcome::Applied
    );
    let stale = store
        .apply(apply(6, Some(p1), QueuePosition::new(2, 0)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stale,
        ApplyOutcome::StaleLeader {
            current: FencingToken(7)
        }
    );
    assert_eq!(
        sum_of(store, "stale").await.cost,
        Decimal::from_str_exact("1.125").unwrap_or_default()
    );
    let newer = store
        .apply(apply(9, Some(p1), QueuePosition::new(2, 0)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(newer, ApplyOutcome::Applied, "a newer token proceeds");
}

/// Reads are scoped to one org and group as asked.
pub async fn reader_scopes_and_groups<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    let mine: Vec<SpendEvent> = (0..6).map(|i| sample_event("scoped", i, "0.01")).collect();
    let theirs = vec![sample_event("other-org", 0, "99")];
    for (shard, events) in [(4u16, &mine), (5u16, &theirs)] {
        let rollups = rollups_of(events);
        let outcome = store
            .apply(DrainApply {
                shard: ShardId(shard),
                token: FencingToken(1),
                expected: None,
                through: QueuePosition::new(1, 0),
                rollups: &rollups,
                events,
                at: day(28),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome, ApplyOutcome::Applied);
    }
    let org = OrgId::new("scoped").unwrap_or_else(|e| panic!("{e}"));
    let mut filter = RollupFilter::new(org, sample_day(), sample_day());
    filter.group_by = GroupBy {
        team: true,
        ..GroupBy::default()
    };
    let rows = store
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 3, "three teams: {rows:?}");
    let total: Decimal = rows.iter().map(|r| r.totals.cost).sum();
    assert_eq!(
        total,
        Decimal::from_str_exact("0.06").unwrap_or_default(),
        "another org's spend never shows"
    );
    filter.teams = Some(vec![
        TeamId::new("team-1").unwrap_or_else(|e| panic!("{e}")),
    ]);
    let rows = store
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].totals.successes, 2);
    filter.teams = None;
    filter.billing_mode = Some(BillingMode::Byok);
    filter.group_by = GroupBy::default();
    let rows = store
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].totals.successes, 3);
}

/// The whole pipeline: a recorder flushes into the queue, a drainer applies, a crash
/// between commit and trim is replayed without double counting, and the store holds
/// the exact sum of what was recorded.
pub async fn pipeline_is_exactly_once<Q, E, S>(queue: Arc<Q>, elector: Arc<E>, store: Arc<S>)
where
    Q: SpendQueue,
    E: LeaderElector,
    S: SpendStore + SpendReader,
{
    let (recorder, handle) = Recorder::spawn(
        queue.clone(),
        RecorderConfig {
            max_batch_events: 7,
            ..RecorderConfig::default()
        },
    );
    let mut expected = Decimal::ZERO;
    for seq in 0..100u64 {
        let cost = format!("0.{:06}", seq * 37 + 1);
        expected += Decimal::from_str_exact(&cost).unwrap_or_default();
        recorder
            .record(sample_event("pipeline", seq, &cost))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let counts = handle.shutdown().await;
    assert_eq!(counts.flushed_events, 100);

    // A drainer commits one step, then "crashes" before trimming.
    let shard = ShardId::for_org(
        &OrgId::new("pipeline").unwrap_or_else(|e| panic!("{e}")),
        queue.shards(),
    );
    let crashed = Drainer::new(
        queue.clone(),
        elector.clone(),
        store.clone(),
        DrainerConfig {
            max_batches: 3,
            ..DrainerConfig::new("crashed")
        },
    );
    let lease = elector
        .acquire(shard, "crashed", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("lease"));
    let state = store
        .drain_state(shard)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let batches = queue
        .read_after(shard, state.watermark, 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<SpendEvent> = batches
        .iter()
        .flat_map(|b| b.batch.events.clone())
        .collect();
    let rollups = rollups_of(&events);
    let through = batches
        .last()
        .map(|b| b.position)
        .unwrap_or_else(|| panic!("batches"));
    let applied = store
        .apply(DrainApply {
            shard,
            token: lease.token,
            expected: state.watermark,
            through,
            rollups: &rollups,
            events: &events,
            at: day(28),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied, ApplyOutcome::Applied);
    elector
        .release(&lease)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(crashed);

    // A second drainer takes over: the untrimmed batches are not applied again.
    let drainer = Drainer::new(
        queue.clone(),
        elector.clone(),
        store.clone(),
        DrainerConfig::new("takeover"),
    );
    let stats = drainer.drain_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stats.events + u64::try_from(events.len()).unwrap_or(0),
        100,
        "{stats:?}"
    );
    let sum = sum_of(&*store, "pipeline").await;
    assert_eq!(
        sum.cost, expected,
        "the store holds the exact recorded total"
    );
    assert_eq!(sum.successes, 100);
    let again = drainer.drain_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.events, 0);
    assert!(
        queue
            .read_after(shard, None, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty(),
        "trimmed"
    );
    let lease = elector
        .acquire(shard, "check", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("lease"));
    assert_eq!(
        drainer.step(&lease).await.unwrap_or_else(|e| panic!("{e}")),
        StepOutcome::Idle
    );
    elector
        .release(&lease)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn ws(name: &str) -> crate::attribution::WorkspaceId {
    crate::attribution::WorkspaceId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

fn money(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn day(d: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 11, d)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

/// Top-ups are applied once per key, even when sent at once; the same key with another
/// body is refused; the balance is the sum of the entries.
pub async fn wallet_top_ups_are_idempotent<W: crate::wallet::Wallets + ?Sized>(wallets: &W) {
    use crate::wallet::WalletError;
    let w = ws("ws-topup");
    let attempts =
        (0..8).map(|_| wallets.top_up(&w, money("1000.00"), Currency::USD, "topup-1", day(1)));
    let results = futures::future::join_all(attempts).await;
    let written: Vec<crate::wallet::Written> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let first = written[0].entry.clone();
    for w in &written {
        assert_eq!(w.entry, first, "every replay returns the first result");
    }
    assert_eq!(
        written.iter().filter(|w| !w.replayed).count(),
        1,
        "exactly one of the eight wrote; the others say they were replays"
    );
    assert_eq!(
        first.amount.to_string(),
        "1000.00",
        "stored at the currency's scale"
    );
    let conflict = wallets
        .top_up(&w, money("999.00"), Currency::USD, "topup-1", day(1))
        .await;
    assert!(
        matches!(conflict, Err(WalletError::IdempotencyConflict { .. })),
        "{conflict:?}"
    );
    // Trailing zeros beyond the minor unit are not kept: the entry and every balance
    // read back are at the currency's scale.
    let half = wallets
        .top_up(&w, money("0.5000000"), Currency::USD, "topup-2", day(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(half.entry.amount.to_string(), "0.50");
    let balance = wallets
        .balance(&w, day(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(balance.balance, money("1000.50"));
    assert_eq!(balance.balance.to_string(), "1000.50");
    let page = wallets
        .transactions(
            &w,
            &crate::wallet::TransactionQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.entries.len(), 2, "two top-ups, not nine");
    assert_eq!(
        page.entries.iter().map(|e| e.amount).sum::<Decimal>(),
        balance.balance
    );
}

/// Invalid amounts and other currencies get typed errors.
pub async fn wallet_refuses_invalid_credits<W: crate::wallet::Wallets + ?Sized>(wallets: &W) {
    use crate::wallet::WalletError;
    let w = ws("ws-invalid");
    wallets
        .open(&w, Currency::USD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for amount in ["0", "-5.00", "0.001", "1000000.01"] {
        let result = wallets
            .top_up(
                &w,
                money(amount),
                Currency::USD,
                &format!("k-{amount}"),
                day(1),
            )
            .await;
        assert!(
            matches!(result, Err(WalletError::InvalidAmount { .. })),
            "{amount}: {result:?}"
        );
    }
    let euros = wallets
        .top_up(&w, money("10.00"), Currency::EUR, "k-eur", day(1))
        .await;
    assert!(
        matches!(euros, Err(WalletError::CurrencyMismatch { .. })),
        "{euros:?}"
    );
    assert!(matches!(
        wallets.open(&w, Currency::EUR).await,
        Err(WalletError::CurrencyMismatch { .. })
    ));
    let bad_key = wallets
        .top_up(&w, money("1.00"), Currency::USD, "", day(1))
        .await;
    assert!(matches!(bad_key, Err(WalletError::Invalid(_))));
    let balance = wallets
        .balance(&w, day(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        balance.balance,
        Decimal::ZERO,
        "nothing refused was written"
    );
}

/// Debits consume granted credit before paid, the soonest expiry first; an expired
/// lot's remainder leaves through its own entry; transactions page newest first.
pub async fn wallet_lots_and_history<W: crate::wallet::Wallets + ?Sized>(wallets: &W) {
    use crate::wallet::{EntryKind, TransactionQuery};
    let w = ws("ws-lots");
    let ok = |r: Result<crate::wallet::Written, crate::wallet::WalletError>| {
        r.unwrap_or_else(|e| panic!("{e}")).entry
    };
    ok(wallets
        .top_up(&w, money("100.00"), Currency::USD, "paid", day(1))
        .await);
    ok(wallets
        .grant(
            &w,
            money("10.00"),
            Currency::USD,
            Some(day(20)),
            "promo-late",
            day(1),
        )
        .await);
    ok(wallets
        .grant(
            &w,
            money("5.00"),
            Currency::USD,
            Some(day(10)),
            "promo-soon",
            day(1),
        )
        .await);
    // A 12.00 charge: 5.00 from the soonest-expiring grant, 7.00 from the other.
    let charge = ok(wallets
        .adjust(
            &w,
            EntryKind::Adjustment,
            money("-12.00"),
            Currency::USD,
            "manual charge",
            "charge-1",
            day(2),
        )
        .await);
    assert_eq!(charge.amount, money("-12.00"));
    let taken: Vec<Decimal> = charge.allocations.iter().map(|a| a.amount).collect();
    assert_eq!(taken, vec![money("5.00"), money("7.00")]);
    let before = wallets
        .balance(&w, day(15))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            before.balance,
            before.granted_remaining,
            before.paid_remaining
        ),
        (money("103.00"), money("3.00"), money("100.00"))
    );
    // On the 21st the late grant has expired: its 3.00 leaves through an entry.
    let after = wallets
        .balance(&w, day(21))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.balance, money("100.00"));
    assert_eq!(after.granted_remaining, Decimal::ZERO);
    ok(wallets
        .adjust(
            &w,
            EntryKind::Refund,
            money("2.50"),
            Currency::USD,
            "goodwill",
            "refund-1",
            day(22),
        )
        .await);
    let all = wallets
        .transactions(
            &w,
            &TransactionQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<EntryKind> = all.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EntryKind::Refund,
            EntryKind::CreditExpiry,
            EntryKind::Adjustment,
            EntryKind::GrantedCredit,
            EntryKind::GrantedCredit,
            EntryKind::TopUp,
        ],
        "newest first"
    );
    assert_eq!(
        all.entries.iter().map(|e| e.amount).sum::<Decimal>(),
        money("102.50"),
        "the history explains the balance"
    );
    let first = wallets
        .transactions(
            &w,
            &TransactionQuery {
                limit: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.entries.len(), 4);
    let second = wallets
        .transactions(
            &w,
            &TransactionQuery {
                limit: 4,
                before: first.next_cursor,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.entries.len(), 2);
    assert_eq!(second.next_cursor, None);
    let credits = wallets
        .transactions(
            &w,
            &TransactionQuery {
                kinds: Some(vec![EntryKind::GrantedCredit]),
                from: Some(day(1)),
                to: Some(day(2)),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(credits.entries.len(), 2);
}

/// The drain debits managed spend from the wallet in the same step as the rollups,
/// once; BYOK spend never touches the wallet.
pub async fn drain_debits_managed_spend_only<S>(store: &S)
where
    S: SpendStore + crate::wallet::Wallets + ?Sized,
{
    let mut managed = sample_event("walletorg", 0, "1.25");
    managed.attribution.who.workspace = ws("ws-drain");
    let mut byok = sample_event("walletorg", 1, "7.5");
    byok.attribution.who.workspace = ws("ws-drain");
    assert_eq!(managed.billing_mode, BillingMode::Managed);
    assert_eq!(byok.billing_mode, BillingMode::Byok);
    store
        .top_up(
            &ws("ws-drain"),
            money("10.00"),
            Currency::USD,
            "seed",
            day(1),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events = vec![managed, byok];
    let rollups = rollups_of(&events);
    let step = DrainApply {
        shard: ShardId(6),
        token: FencingToken(1),
        expected: None,
        through: QueuePosition::new(3, 0),
        rollups: &rollups,
        events: &events,
        at: day(28),
    };
    assert_eq!(
        store.apply(step).await.unwrap_or_else(|e| panic!("{e}")),
        ApplyOutcome::Applied
    );
    assert_eq!(
        store.apply(step).await.unwrap_or_else(|e| panic!("{e}")),
        ApplyOutcome::AlreadyApplied
    );
    let balance = store
        .balance(&ws("ws-drain"), day(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        balance.balance,
        money("8.75"),
        "10.00 − the managed 1.25, once; BYOK never debited"
    );
}

/// Concurrent top-ups and debits with distinct keys never lose an update.
pub async fn wallet_concurrent_writes_lose_nothing<W: crate::wallet::Wallets + ?Sized>(
    wallets: &W,
) {
    use crate::wallet::EntryKind;
    let w = ws("ws-concurrent");
    let top_ups = (0..20).map(|i| {
        let w = w.clone();
        async move {
            wallets
                .top_up(&w, money("1.00"), Currency::USD, &format!("up-{i}"), day(1))
                .await
        }
    });
    let debits = (0..10).map(|i| {
        let w = w.clone();
        async move {
            wallets
                .adjust(
                    &w,
                    EntryKind::Adjustment,
                    money("-0.50"),
                    Currency::USD,
                    "charge",
                    &format!("down-{i}"),
                    day(1),
                )
                .await
        }
    });
    let (ups, downs) = tokio::join!(
        futures::future::join_all(top_ups),
        futures::future::join_all(debits)
    );
    for result in ups.into_iter().chain(downs) {
        result.unwrap_or_else(|e| panic!("{e}"));
    }
    let balance = wallets
        .balance(&w, day(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(balance.balance, money("15.00"));
    assert_eq!(
        balance.paid_remaining,
        money("15.00"),
        "the lots agree with the ledger"
    );
}

/// A month with mixed billing modes invoices to the exact expected lines; closing
/// numbers and freezes it; spend arriving late lands on the next invoice, once.
pub async fn invoices_close_months_and_carry_late_spend<S>(store: &S)
where
    S: SpendStore + SpendReader + crate::wallet::Wallets + crate::invoice::InvoiceStore,
{
    use crate::invoice::{Billing, InvoiceStatus, LineKind, Month};
    let org = OrgId::new("invorg").unwrap_or_else(|e| panic!("{e}"));
    let no_rates = crate::money::RateTable::new();
    let billing = Billing {
        reader: store,
        wallets: store,
        invoices: store,
        rates: &no_rates,
    };
    let w = ws("ws-inv");
    let event = |seq: u64,
                 cost: &str,
                 provider: Provider,
                 model: &str,
                 mode: BillingMode,
                 day_of_month: u32| {
        let mut e = sample_event("invorg", seq, cost);
        e.attribution.who.workspace = w.clone();
        e.provider = provider;
        e.model = model.to_owned();
        e.billing_mode = mode;
        e.event_time = day(day_of_month);
        e
    };
    store
        .top_up(&w, money("100.00"), Currency::USD, "pay-1", day(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let november = vec![
        event(
            1,
            "1.234567",
            Provider::OpenAi,
            "gpt-4o",
            BillingMode::Managed,
            3,
        ),
        event(
            2,
            "2.000001",
            Provider::OpenAi,
            "gpt-4o",
            BillingMode::Managed,
            4,
        ),
        event(
            3,
            "0.5",
            Provider::Anthropic,
            "claude-x",
            BillingMode::Managed,
            5,
        ),
        event(4, "9.99", Provider::OpenAi, "gpt-4o", BillingMode::Byok, 6),
    ];
    let apply = |events: &[SpendEvent], through: u64, at: DateTime<Utc>| {
        let rollups = rollups_of(events);
        let events = events.to_vec();
        async move {
            store
                .apply(DrainApply {
                    shard: ShardId(9),
                    token: FencingToken(1),
                    expected: (through > 1).then(|| QueuePosition::new(through - 1, 0)),
                    through: QueuePosition::new(through, 0),
                    rollups: &rollups,
                    events: &events,
                    at,
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert_eq!(apply(&november, 1, day(28)).await, ApplyOutcome::Applied);
    let nov = Month {
        year: 2026,
        month: 11,
    };
    let dec_2 = NaiveDate::from_ymd_opt(2026, 12, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let plan = Some(money("49.00"));
    let draft = billing
        .invoice(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(draft.status, InvoiceStatus::Draft);
    let lines: Vec<(String, Decimal, Decimal)> = draft
        .lines
        .iter()
        .map(|l| (format!("{:?}", l.kind), l.exact_amount, l.amount))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        (lines[0].1, lines[0].2.to_string()),
        (money("0.5"), "0.5000".to_owned()),
        "anthropic claude-x, shown at $0.0001"
    );
    assert_eq!(
        (lines[1].1, lines[1].2.to_string()),
        (money("3.234568"), "3.2346".to_owned()),
        "openai gpt-4o, BYOK excluded"
    );
    assert_eq!(draft.lines[2].kind, LineKind::Subscription);
    assert_eq!(draft.lines[3].kind, LineKind::Rounding);
    assert_eq!(
        draft.lines[3].amount.to_string(),
        "-0.0046",
        "52.7346 shown, 52.73 billed"
    );
    assert_eq!(
        draft.total.to_string(),
        "52.73",
        "the exact total rounded once; the shown lines add up to it"
    );
    assert_eq!(
        draft.lines.iter().map(|l| l.amount).sum::<Decimal>(),
        draft.total
    );
    assert_eq!(draft.exact_total, money("52.734568"));
    assert_eq!(draft.payments.len(), 1);
    assert_eq!(draft.payments[0].amount, money("100.00"));
    assert_eq!(draft.opening_balance, Decimal::ZERO);
    assert_eq!(
        draft.closing_balance,
        money("96.265432"),
        "100 − the managed 3.734568"
    );

    let closed = billing
        .close_month(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(closed.status, InvoiceStatus::Final);
    let number = closed
        .number
        .clone()
        .unwrap_or_else(|| panic!("a final invoice is numbered"));
    let again = billing
        .close_month(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        again.number.as_deref(),
        Some(number.as_str()),
        "closing twice changes nothing"
    );
    assert!(
        billing
            .close_month(
                &org,
                &w,
                Month {
                    year: 2026,
                    month: 12
                },
                plan,
                dec_2
            )
            .await
            .is_err(),
        "a month that is not over cannot be closed"
    );

    // Spend of November arrives after the close.
    let late = vec![event(
        5,
        "0.75",
        Provider::OpenAi,
        "gpt-4o",
        BillingMode::Managed,
        30,
    )];
    assert_eq!(
        apply(&late, 2, dec_2 + chrono::Duration::days(3)).await,
        ApplyOutcome::Applied
    );
    let nov_now = billing
        .invoice(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(nov_now, closed, "a final invoice never changes");
    let dec = Month {
        year: 2026,
        month: 12,
    };
    let jan_2 = NaiveDate::from_ymd_opt(2027, 1, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let december = billing
        .close_month(&org, &w, dec, plan, jan_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let late_lines: Vec<&crate::invoice::InvoiceLine> = december
        .lines
        .iter()
        .filter(|l| matches!(l.kind, LineKind::LateSpend { .. }))
        .collect();
    assert_eq!(late_lines.len(), 1);
    assert_eq!(late_lines[0].exact_amount, money("0.75"));
    assert_eq!(
        december.opening_balance,
        money("96.265432"),
        "November closed where December opens"
    );
    assert_eq!(
        december.closing_balance,
        money("95.515432"),
        "the late debit is December's"
    );
    let january = billing
        .invoice(
            &org,
            &w,
            Month {
                year: 2027,
                month: 1,
            },
            plan,
            jan_2,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !january
            .lines
            .iter()
            .any(|l| matches!(l.kind, LineKind::LateSpend { .. })),
        "late spend is carried once"
    );
    let csv = closed.to_csv();
    assert!(
        csv.starts_with("number,workspace,month,kind,description,currency,exact_amount,amount\n")
    );
    assert!(csv.contains(&number));
    assert_eq!(
        csv.lines().count(),
        1 + 4 + 1 + 1 + 2,
        "header, lines (the rounding line among them), total, payment, balances"
    );
}

/// Concurrent reservations never reserve more than the wallet has; settled spend not
/// yet drained counts against it; a refresh after the drain keeps the same figure.
pub async fn control_reservations_never_overspend(control: Arc<dyn crate::control::SpendControl>) {
    use crate::control::{Decision, SpendRequest};
    let org = OrgId::new("ctl-org").unwrap_or_else(|e| panic!("{e}"));
    let w = ws("ws-ctl");
    control
        .refresh_wallet(&org, &w, money("10.00"), Decimal::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let attribution = Arc::new(
        Attribution::new(org.clone(), w.clone())
            .with_team(TeamId::new("search").unwrap_or_else(|e| panic!("{e}"))),
    );
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let control = control.clone();
            let attribution = attribution.clone();
            tokio::spawn(async move {
                let request = SpendRequest {
                    attribution: &attribution,
                    billing_mode: BillingMode::Managed,
                    estimate: money("1.00"),
                    at: day(25),
                };
                control
                    .reserve(&request, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        })
        .collect();
    let mut allowed = Vec::new();
    for task in tasks {
        if let Decision::Allowed(r) = task.await.unwrap_or_else(|e| panic!("{e}")) {
            allowed.push(r);
        }
    }
    assert!(
        allowed.len() <= 10,
        "{} reservations of 1.00 against 10.00",
        allowed.len()
    );
    assert!(
        allowed.len() >= 5,
        "contention near the limit refuses some, not most ({})",
        allowed.len()
    );
    let n = Decimal::from(allowed.len());
    for r in &allowed {
        control
            .settle(r, money("0.60"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let left = money("10.00") - n * money("0.60");
    let ask = |estimate: Decimal| SpendRequest {
        attribution: &attribution,
        billing_mode: BillingMode::Managed,
        estimate,
        at: day(25),
    };
    let fits = |decision: &Decision| matches!(decision, Decision::Allowed(_));
    let over = control
        .reserve(&ask(left + money("0.01")), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!fits(&over), "undrained spend counts against the balance");
    let exact = control
        .reserve(&ask(left), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Decision::Allowed(exact) = exact else {
        panic!("{exact:?}")
    };
    control
        .release(&exact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The drain debits the settled spend: the ledger's balance and debits move together.
    control
        .refresh_wallet(&org, &w, left, n * money("0.60"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let over = control
        .reserve(&ask(left + money("0.01")), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!fits(&over));
    assert!(fits(
        &control
            .reserve(&ask(left), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    ));
}

/// Budgets hold per period; BYOK requests are not checked against the wallet.
pub async fn control_budgets_hold_per_period(control: Arc<dyn crate::control::SpendControl>) {
    use crate::control::{Budget, BudgetScope, Decision, Denial, Period, SpendRequest};
    let org = OrgId::new("budget-org").unwrap_or_else(|e| panic!("{e}"));
    let team = TeamId::new("research").unwrap_or_else(|e| panic!("{e}"));
    let budgets = [Budget {
        scope: BudgetScope::Team(team.clone()),
        period: Period::Day,
        limit: money("2.00"),
    }];
    let research = Attribution::new(org.clone(), ws("ws-b")).with_team(team);
    let other = Attribution::new(org, ws("ws-b"))
        .with_team(TeamId::new("other").unwrap_or_else(|e| panic!("{e}")));
    let ask = |attribution, estimate: &str, at| SpendRequest {
        attribution,
        billing_mode: BillingMode::Byok,
        estimate: money(estimate),
        at,
    };
    let Decision::Allowed(first) = control
        .reserve(&ask(&research, "1.50", day(25)), &budgets)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("within budget, and BYOK needs no wallet")
    };
    let second = control
        .reserve(&ask(&research, "1.00", day(25)), &budgets)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(second, Decision::Denied(Denial::BudgetExceeded { .. })),
        "{second:?}"
    );
    assert!(matches!(
        control
            .reserve(&ask(&other, "1.00", day(25)), &budgets)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Decision::Allowed(_)
    ));
    control
        .release(&first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Decision::Allowed(third) = control
        .reserve(&ask(&research, "1.00", day(25)), &budgets)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("released reservations free the budget")
    };
    control
        .settle(&third, money("1.75"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            control
                .reserve(&ask(&research, "0.50", day(25)), &budgets)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            Decision::Denied(_)
        ),
        "1.75 spent + 0.50 > 2.00"
    );
    assert!(
        matches!(
            control
                .reserve(&ask(&research, "2.00", day(26)), &budgets)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            Decision::Allowed(_)
        ),
        "a new day, a new budget"
    );
}

/// Noon of a November 2026 day.
pub fn november(day: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 11, day)
        .unwrap_or_default()
        .and_hms_opt(12, 0, 0)
        .unwrap_or_default()
        .and_utc()
}

/// A month of spend: 300 requests of `acme` over November 2026 (every 29th unpriced,
/// one model name with quotes and a comma), one request of `globex`, and `acme`'s
/// spend a second either side of the month.
pub fn a_month_of_events() -> Vec<SpendEvent> {
    let mut events = Vec::new();
    for seq in 0..300u64 {
        let price = format!("0.{:07}", (seq * 7_919) % 10_000_000);
        let mut event = sample_event("acme", seq, &price);
        let day = u32::try_from(seq % 30).unwrap_or(0) + 1;
        event.event_time =
            november(day) + chrono::Duration::seconds(i64::try_from(seq).unwrap_or(0));
        if seq % 29 == 0 {
            event.pricing = Pricing::Unpriced {
                reason: crate::spend::UnpricedReason::UnknownModel,
                detail: "unknown model".to_owned(),
            };
        }
        if seq == 7 {
            event.model = "weird \"model\", v2".to_owned();
        }
        events.push(event);
    }
    events.push(sample_event("globex", 1, "5.00"));
    let mut before = sample_event("acme", 1_000, "7.00");
    before.event_time = NaiveDate::from_ymd_opt(2026, 10, 31)
        .unwrap_or_default()
        .and_hms_opt(23, 59, 59)
        .unwrap_or_default()
        .and_utc();
    let mut after = sample_event("acme", 1_001, "11.00");
    after.event_time = NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap_or_default()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    events.push(before);
    events.push(after);
    events
}

/// Whether an event is one of `acme`'s in November 2026 (of [`a_month_of_events`]).
pub fn in_acme_november(event: &SpendEvent) -> bool {
    use chrono::Datelike;
    let day = event.day();
    event.attribution.who.org.as_str() == "acme" && day.year() == 2026 && day.month() == 11
}

/// A month's chargeback and FOCUS exports read back (RFC 4180) to the exact totals of
/// the month's events: the org's only, the month's days only, a quoted model name
/// intact, unpriced requests counted, the team filter applied.
pub async fn export_round_trips_a_month<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    use crate::export::{CsvExport, ExportFormat, ExportRequest};
    use crate::invoice::Month;

    let events = a_month_of_events();
    let (mut cost, mut team_cost, mut requests, mut unpriced) =
        (Decimal::ZERO, Decimal::ZERO, 0u64, 0u64);
    for event in events.iter().filter(|e| in_acme_november(e)) {
        requests += 1;
        match event.cost() {
            Some(c) => {
                cost += c;
                if event.attribution.who.team.as_ref().map(TeamId::as_str) == Some("team-0") {
                    team_cost += c;
                }
            }
            None => unpriced += 1,
        }
    }
    apply_first_step(store, &events, november(30)).await;

    let org = OrgId::new("acme").unwrap_or_else(|e| panic!("{e}"));
    let month = Month::parse("2026-11").unwrap_or_else(|| panic!("month"));
    let request = |format, teams: Option<Vec<TeamId>>| ExportRequest {
        org: org.clone(),
        workspaces: None,
        teams,
        month,
        format,
        invoice_issuer: "Routero".to_owned(),
    };
    let export = |request: ExportRequest| async move {
        let mut out = Vec::new();
        let summary = CsvExport::new(store, request)
            .unwrap_or_else(|e| panic!("{e}"))
            .write_to(&mut out)
            .await
            .unwrap_or_else(|e| panic!("export: {e}"));
        (summary, out)
    };
    let column = |headers: &csv::StringRecord, name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let dec = |text: &str| Decimal::from_str_exact(text).unwrap_or_else(|e| panic!("{text}: {e}"));

    // Chargeback.
    let (summary, file) = export(request(ExportFormat::Chargeback, None)).await;
    assert_eq!(summary.cost(Currency::USD), cost);
    assert_eq!(summary.costs.len(), 1, "one currency");
    assert_eq!(summary.requests, requests);
    assert_eq!(summary.unpriced_requests, unpriced);
    let mut reader = csv::Reader::from_reader(file.as_slice());
    let headers = reader.headers().unwrap_or_else(|e| panic!("{e}")).clone();
    let (c_cost, c_requests, c_unpriced, c_org, c_date, c_model) = (
        column(&headers, "cost"),
        column(&headers, "requests"),
        column(&headers, "unpriced_requests"),
        column(&headers, "org"),
        column(&headers, "date"),
        column(&headers, "model"),
    );
    let (mut sum, mut sum_requests, mut sum_unpriced, mut rows, mut weird) =
        (Decimal::ZERO, 0u64, 0u64, 0u64, false);
    for record in reader.records() {
        let record = record.unwrap_or_else(|e| panic!("{e}"));
        rows += 1;
        sum += dec(&record[c_cost]);
        sum_requests += record[c_requests].parse::<u64>().unwrap_or(0);
        sum_unpriced += record[c_unpriced].parse::<u64>().unwrap_or(0);
        assert_eq!(&record[c_org], "acme");
        assert!(
            record[c_date].starts_with("2026-11-"),
            "{:?}",
            &record[c_date]
        );
        weird |= &record[c_model] == "weird \"model\", v2";
    }
    assert_eq!(
        (sum, sum_requests, sum_unpriced, rows),
        (cost, requests, unpriced, summary.rows)
    );
    assert!(weird, "a quoted model name reads back intact");

    // FOCUS: the same totals in BilledCost and x_Requests, a day per charge period.
    let (focus, file) = export(request(ExportFormat::Focus, None)).await;
    assert_eq!(focus, summary);
    let mut reader = csv::Reader::from_reader(file.as_slice());
    let headers = reader.headers().unwrap_or_else(|e| panic!("{e}")).clone();
    for required in [
        "BilledCost",
        "BillingAccountId",
        "BillingCurrency",
        "BillingPeriodStart",
        "BillingPeriodEnd",
        "ChargeCategory",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "InvoiceIssuerName",
        "ProviderName",
        "PublisherName",
        "ServiceCategory",
        "ServiceName",
        "SubAccountId",
    ] {
        column(&headers, required);
    }
    let (f_cost, f_requests, f_issuer, f_mode, f_start) = (
        column(&headers, "BilledCost"),
        column(&headers, "x_Requests"),
        column(&headers, "InvoiceIssuerName"),
        column(&headers, "x_BillingMode"),
        column(&headers, "BillingPeriodStart"),
    );
    let (mut sum, mut sum_requests) = (Decimal::ZERO, 0u64);
    for record in reader.records() {
        let record = record.unwrap_or_else(|e| panic!("{e}"));
        sum += dec(&record[f_cost]);
        sum_requests += record[f_requests].parse::<u64>().unwrap_or(0);
        let issuer = if &record[f_mode] == "byok" {
            "openai"
        } else {
            "Routero"
        };
        assert_eq!(&record[f_issuer], issuer);
        assert_eq!(&record[f_start], "2026-11-01T00:00:00Z");
    }
    assert_eq!((sum, sum_requests), (cost, requests));

    // One team's export holds that team's spend only.
    let team = TeamId::new("team-0").unwrap_or_else(|e| panic!("{e}"));
    let (summary, _) = export(request(ExportFormat::Chargeback, Some(vec![team]))).await;
    assert_eq!(summary.cost(Currency::USD), team_cost);
}

/// Applies `events` as shard 0's drain step `step` (1, 2, …, token 1, through
/// `step-0`, dated November 30th 2026), after step `step - 1`. Panics unless it is
/// applied.
pub async fn apply_step<S: SpendStore + ?Sized>(store: &S, step: u64, events: &[SpendEvent]) {
    let rollups = rollups_of(events);
    let outcome = store
        .apply(DrainApply {
            shard: ShardId(0),
            token: FencingToken(1),
            expected: (step > 1).then(|| QueuePosition::new(step - 1, 0)),
            through: QueuePosition::new(step, 0),
            rollups: &rollups,
            events,
            at: november(30),
        })
        .await
        .unwrap_or_else(|e| panic!("apply step {step}: {e}"));
    assert_eq!(outcome, ApplyOutcome::Applied, "step {step}");
}

// ---------------------------------------------------------------------------------
// Quarantine

/// The cost of a day's rollups of `org` in one currency.
async fn cost_in<R: SpendReader + ?Sized>(reader: &R, org: &str, currency: Currency) -> Decimal {
    let mut filter = RollupFilter::new(
        OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
        sample_day(),
        sample_day(),
    );
    filter.currency = Some(currency);
    reader
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.totals.cost)
        .sum()
}

/// A batch the store cannot apply (managed EUR spend for a USD wallet, with no rate
/// for its day) goes to the quarantine while the shard's other 10,000 events drain
/// with exact totals; once the rate is known the waiting batch replays, once, with
/// its conversion recorded on the debit; a second replay, a racing replay and a
/// discard of a released batch change nothing.
pub async fn poison_batches_never_stall_a_shard<S>(
    store: Arc<S>,
    set_rates: impl Fn(Arc<dyn crate::money::ExchangeRates>),
) where
    S: SpendStore
        + SpendReader
        + crate::wallet::Wallets
        + crate::quarantine::Quarantine
        + crate::invoice::InvoiceStore,
{
    use crate::memory::{MemoryElector, MemoryQueue};
    use crate::money::RateTable;
    use crate::quarantine::{QuarantineReason, QuarantineState, Release, replay_waiting};
    use crate::spend::Pricing;
    use crate::wallet::EntryKind;

    let org = "poisonorg";
    let w = ws("ws-fx");
    store
        .open(&w, Currency::USD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .top_up(&w, money("1000.00"), Currency::USD, "seed", day(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let queue = Arc::new(MemoryQueue::new(1));
    let mut usd = Decimal::ZERO;
    let mut usd_managed = Decimal::ZERO;
    let mut euros = Decimal::ZERO;
    for b in 0..51u64 {
        let events: Vec<SpendEvent> = if b == 25 {
            // The poison: managed spend in euros, for a wallet kept in dollars.
            (0..3)
                .map(|i| {
                    let mut e = sample_event(org, 1_000_000 + 2 * i, "0.5");
                    e.attribution.who.workspace = w.clone();
                    if let Pricing::Priced { currency, .. } = &mut e.pricing {
                        *currency = Currency::EUR;
                    }
                    euros += money("0.5");
                    e
                })
                .collect()
        } else {
            (0..200)
                .map(|i| {
                    let seq = b * 200 + i;
                    let mut e = sample_event(org, seq, "0.001");
                    e.attribution.who.workspace = w.clone();
                    usd += money("0.001");
                    if e.billing_mode == BillingMode::Managed {
                        usd_managed += money("0.001");
                    }
                    e
                })
                .collect()
        };
        appended(&*queue, &batch(&format!("poison-{b}"), 0, events)).await;
    }
    let clock = Arc::new(crate::memory::ManualClock::new(day(2)));
    let drainer = Drainer::new(
        queue.clone(),
        Arc::new(MemoryElector::new(clock)),
        store.clone(),
        DrainerConfig::new("poison"),
    );
    let stats = drainer.drain_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stats.events, stats.quarantined), (10_000, 1), "{stats:?}");
    assert_eq!(cost_in(&*store, org, Currency::USD).await, usd);
    assert_eq!(cost_in(&*store, org, Currency::EUR).await, Decimal::ZERO);
    let balance = |at| {
        let store = store.clone();
        let w = w.clone();
        async move {
            store
                .balance(&w, at)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .balance
        }
    };
    assert_eq!(balance(day(3)).await, money("1000") - usd_managed);
    assert!(
        queue
            .read_after(ShardId(0), None, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty(),
        "the shard moved on and trimmed past the poison"
    );

    let held = store.quarantined().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.len(), 1);
    let poison = &held[0];
    assert_eq!(poison.reason, QuarantineReason::MissingExchangeRate);
    assert_eq!(poison.state, QuarantineState::Quarantined);
    assert_eq!(poison.batch.id.as_str(), "poison-25");
    assert_eq!(poison.batch.events.len(), 3, "every event kept");
    assert!(
        poison.detail.contains("no exchange rate from EUR to USD"),
        "{}",
        poison.detail
    );

    // Without the rate it keeps waiting; with it, it lands once.
    let waiting = replay_waiting(&*store, day(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((waiting.replayed, waiting.waiting), (0, 1));
    let mut rates = RateTable::new();
    rates.insert(Currency::EUR, Currency::USD, sample_day(), money("1.0825"));
    set_rates(Arc::new(rates));
    let replays = (0..4).map(|_| store.replay(poison.id, day(4)));
    let results = futures::future::join_all(replays).await;
    let released = results
        .iter()
        .filter(|r| matches!(r, Ok(Release::Released)))
        .count();
    assert_eq!(released, 1, "racing replays apply it once: {results:?}");
    assert!(
        matches!(
            store.replay(poison.id, day(5)).await,
            Ok(Release::AlreadyReleased(QuarantineState::Replayed { .. }))
        ),
        "a second replay is a no-op"
    );
    assert!(matches!(
        store.discard(poison.id, "too late", day(5)).await,
        Ok(Release::AlreadyReleased(_))
    ));
    assert!(matches!(
        store.replay(999_999, day(5)).await,
        Ok(Release::NotFound)
    ));
    assert_eq!(cost_in(&*store, org, Currency::EUR).await, euros);
    assert_eq!(cost_in(&*store, org, Currency::USD).await, usd);
    let converted = euros * money("1.0825");
    assert_eq!(
        balance(day(6)).await,
        money("1000") - usd_managed - converted,
        "debited once, converted at the day's rate"
    );
    let ledger = store
        .transactions(
            &w,
            &crate::wallet::TransactionQuery {
                kinds: Some(vec![EntryKind::UsageDebit]),
                limit: 1_000,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let conversions: Vec<_> = ledger
        .entries
        .iter()
        .filter_map(|e| e.conversion.clone().map(|c| (e.amount, c)))
        .collect();
    assert_eq!(conversions.len(), 1, "one converted debit");
    let (amount, conversion) = &conversions[0];
    assert_eq!(*amount, -converted);
    assert_eq!(
        (
            conversion.from,
            conversion.amount,
            conversion.rate,
            conversion.day
        ),
        (Currency::EUR, euros, money("1.0825"), sample_day())
    );
    let after = store.quarantined().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(after[0].state, QuarantineState::Replayed { .. }));

    // The invoice bills the euros converted at the same rate, and says so.
    let mut rates = RateTable::new();
    rates.insert(Currency::EUR, Currency::USD, sample_day(), money("1.0825"));
    let billing = crate::invoice::Billing {
        reader: &*store,
        wallets: &*store,
        invoices: &*store,
        rates: &rates,
    };
    let month = crate::invoice::Month::of(sample_day());
    let invoice = billing
        .invoice(
            &OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
            &w,
            month,
            None,
            day(6),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(invoice.currency, Currency::USD);
    assert_eq!(invoice.exact_total, usd_managed + converted);
    let converted_lines: Vec<_> = invoice
        .lines
        .iter()
        .filter_map(|l| l.conversion.as_ref().map(|c| (l.exact_amount, c)))
        .collect();
    assert_eq!(converted_lines.len(), 1);
    let (exact, conversion) = converted_lines[0];
    assert_eq!(exact, converted);
    assert_eq!((conversion.from, conversion.amount), (Currency::EUR, euros));
    assert_eq!(
        conversion.rates.get(&sample_day()).copied(),
        Some(money("1.0825"))
    );
    let no_rates = RateTable::new();
    let blind = crate::invoice::Billing {
        rates: &no_rates,
        ..billing
    };
    assert!(
        matches!(
            blind
                .invoice(
                    &OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
                    &w,
                    month,
                    None,
                    day(6)
                )
                .await,
            Err(crate::invoice::InvoiceError::MissingRate(_))
        ),
        "no invoice at a guessed rate"
    );
}
