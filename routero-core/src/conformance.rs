//! The conformance suite: async test functions every port implementation must pass.
//!
//! Each floor owns its tests (`pipeline::conformance`: queue, elector, store, reader,
//! pipeline, quarantine; `billing::conformance`: wallets, invoices, controls,
//! exports); this module holds what they share (sample events, helpers) and the
//! runners an adapter calls, [`queue_suite`] and [`store_suite`], and re-exports
//! every test. The in-memory ports pass it in this crate's tests; the Redis and
//! PostgreSQL adapters run the same functions against real servers. Each function panics with a
//! message on the first violation, like an assertion. Give each call fresh state (a
//! new key prefix, a new schema).

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::Currency;
use crate::attribution::{
    ApiKeyId, Attribution, BillingMode, CustomerId, OrgId, RequestId, TeamId, UserId, WorkspaceId,
};
use crate::port::{
    AppendOutcome, ApplyOutcome, DrainApply, FencingToken, RollupFilter, SpendQueue, SpendReader,
    SpendStore,
};
use crate::provider::Provider;
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
        + crate::quarantine::Quarantine
        + crate::reprice::Repricings,
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
    repricing_dry_run(&fresh("reprice").await).await;
    repricing_applies_once(&fresh("repricings").await).await;
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

pub(crate) fn batch(id: &str, shard: u16, events: Vec<SpendEvent>) -> SpendBatch {
    SpendBatch {
        id: BatchId::parse(id).unwrap_or_else(|| panic!("batch id {id}")),
        shard: ShardId(shard),
        events,
    }
}

pub(crate) async fn appended(queue: &dyn SpendQueue, batch: &SpendBatch) -> QueuePosition {
    match queue
        .append(batch)
        .await
        .unwrap_or_else(|e| panic!("append: {e}"))
    {
        AppendOutcome::Appended(position) => position,
        AppendOutcome::Duplicate => {
            panic!("batch {} reported as a duplicate on first append", batch.id)
        }
        AppendOutcome::Moved => panic!("batch {} refused: its shard is sealed", batch.id),
    }
}

pub(crate) async fn sum_of<R: SpendReader + ?Sized>(reader: &R, org: &str) -> RollupTotals {
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

pub(crate) fn ws(name: &str) -> crate::attribution::WorkspaceId {
    crate::attribution::WorkspaceId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn money(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub(crate) fn day(d: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 11, d)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default()
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

/// The cost of a day's rollups of `org` in one currency.
pub async fn cost_in<R: SpendReader + ?Sized>(
    reader: &R,
    org: &str,
    currency: Currency,
) -> Decimal {
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

pub use crate::billing::conformance::*;
pub use crate::pipeline::conformance::*;
