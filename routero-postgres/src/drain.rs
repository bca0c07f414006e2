//! The drain step: one transaction per batch range.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use routero_core::Currency;
use routero_core::attribution::Dimensions;
use routero_core::money::ExchangeRates;
use routero_core::port::{
    ApplyOutcome, BackendError, DrainApply, DrainState, ErrorKind, FencingToken, SpendStore,
};
use routero_core::quarantine::QuarantineApply;
use routero_core::spend::{
    Outcome, Pricing, QueuePosition, RollupKey, Rollups, ShardId, SpendEvent,
};
use routero_core::wallet::{self, EntryKind};
use rust_decimal::Decimal;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::usage::LoggedUsage;
use crate::{PgStore, backend};

/// A count as `BIGINT`, checked.
pub(crate) fn big(value: u64, what: &str) -> Result<i64, BackendError> {
    i64::try_from(value).map_err(|_| {
        BackendError::new(
            ErrorKind::Invalid,
            format!("{what} = {value} exceeds BIGINT"),
        )
    })
}

/// A `BIGINT` read back as a count, checked.
pub(crate) fn count(value: i64, what: &str) -> Result<u64, BackendError> {
    u64::try_from(value)
        .map_err(|_| BackendError::new(ErrorKind::Corrupt, format!("{what} = {value} is negative")))
}

fn shard_param(shard: ShardId) -> i32 {
    i32::from(shard.0)
}

fn state_from(
    major: Option<i64>,
    minor: Option<i64>,
    token: Option<i64>,
) -> Result<DrainState, BackendError> {
    let watermark = match (major, minor) {
        (Some(major), Some(minor)) => Some(QueuePosition::new(
            count(major, "watermark")?,
            count(minor, "watermark")?,
        )),
        _ => None,
    };
    Ok(DrainState {
        watermark,
        fencing_token: token
            .map(|t| count(t, "fencing token").map(FencingToken))
            .transpose()?,
    })
}

fn or_empty<T: AsRef<str>>(value: Option<&T>) -> &str {
    value.map_or("", AsRef::as_ref)
}

#[async_trait]
impl SpendStore for PgStore {
    async fn drain_state(&self, shard: ShardId) -> Result<DrainState, BackendError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT watermark_major, watermark_minor, fencing_token FROM routero_drain_state WHERE shard = $1",
                &[&shard_param(shard)],
            )
            .await
            .map_err(backend)?;
        match row {
            Some(row) => state_from(row.get(0), row.get(1), row.get(2)),
            None => Ok(DrainState::default()),
        }
    }

    async fn apply(&self, apply: DrainApply<'_>) -> Result<ApplyOutcome, BackendError> {
        self.guarded(async |client| {
            let tx = self.begin_guarded(client).await?;
            let current = lock_state(&tx, apply.shard).await?;
            // The protocol's checks (DrainState::refuse), under the row lock.
            if let Some(refused) = current.refuse(&apply) {
                return Ok(refused);
            }
            let key = wallet::usage_debit_key(apply.shard, apply.through);
            let created = self
                .write_step(&tx, apply.rollups, apply.events, apply.at, &key)
                .await?;
            advance(&tx, apply.shard, apply.through, apply.token).await?;
            tx.commit().await.map_err(backend)?;
            self.remember_partitions(created);
            Ok(ApplyOutcome::Applied)
        })
        .await
    }

    async fn quarantine(&self, q: QuarantineApply<'_>) -> Result<ApplyOutcome, BackendError> {
        self.guarded(async |client| {
            let tx = self.begin_guarded(client).await?;
            let current = lock_state(&tx, q.shard).await?;
            if let Some(refused) = current.refuse_step(q.token, q.expected, q.through) {
                return Ok(refused);
            }
            crate::quarantine::insert(&tx, &q).await?;
            advance(&tx, q.shard, q.through, q.token).await?;
            tx.commit().await.map_err(backend)?;
            Ok(ApplyOutcome::Applied)
        })
        .await
    }
}

/// Locks a shard's drain state for the transaction (creating it at first use).
async fn lock_state(tx: &Transaction<'_>, shard: ShardId) -> Result<DrainState, BackendError> {
    let lock = tx
        .prepare_cached(include_str!("../sql/lock_drain_state.sql"))
        .await
        .map_err(backend)?;
    let row = tx
        .query_one(&lock, &[&shard_param(shard)])
        .await
        .map_err(backend)?;
    state_from(row.get(0), row.get(1), row.get(2))
}

/// Moves a shard's watermark and fencing token (under the lock of [`lock_state`]).
async fn advance(
    tx: &Transaction<'_>,
    shard: ShardId,
    through: QueuePosition,
    token: FencingToken,
) -> Result<(), BackendError> {
    let advance = tx
        .prepare_cached(
            "UPDATE routero_drain_state SET watermark_major = $2, watermark_minor = $3, \
             fencing_token = $4, updated_at = now() WHERE shard = $1",
        )
        .await
        .map_err(backend)?;
    tx.execute(
        &advance,
        &[
            &shard_param(shard),
            &big(through.major, "watermark")?,
            &big(through.minor, "watermark")?,
            &big(token.0, "fencing token")?,
        ],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

impl PgStore {
    /// Writes a step's events in `tx`: the rollups, the wallet debits (keyed `key`
    /// plus each debit's suffix), the unpriced record and the request log. Answers
    /// the log partitions it created, known to exist once `tx` commits.
    pub(crate) async fn write_step(
        &self,
        tx: &Transaction<'_>,
        rollups: &Rollups,
        events: &[SpendEvent],
        at: DateTime<Utc>,
        key: &str,
    ) -> Result<Vec<String>, BackendError> {
        // The rows no other step touches first (the request log is most of the
        // step's work), the shared ones last: a rollup or wallet row locked here
        // holds back another shard's step that adds to it until this commits, so
        // those locks are taken as late, and held as briefly, as they can be.
        let mut created = Vec::new();
        if self.config.spend_log {
            created = self.ensure_partitions(tx, events).await?;
            insert_spend_log(tx, events).await?;
        }
        insert_unpriced(tx, events).await?;
        upsert_rollups(tx, rollups).await?;
        debit_wallets(tx, events, at, key, &*self.rates()).await?;
        Ok(created)
    }

    /// Remembers partitions a committed transaction created.
    pub(crate) fn remember_partitions(&self, created: Vec<String>) {
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(created);
    }
}

/// Debits each workspace's managed spend from its wallet, once per key: spend in the
/// wallet's currency as it is, spend in another converted at its day's rate (a
/// missing rate fails the step, for the quarantine).
async fn debit_wallets(
    tx: &Transaction<'_>,
    events: &[SpendEvent],
    at: DateTime<Utc>,
    key: &str,
    rates: &dyn ExchangeRates,
) -> Result<(), BackendError> {
    for (workspace, spend) in wallet::managed_spend(events)? {
        let first = wallet::first_currency(&spend).unwrap_or(Currency::USD);
        let currency = crate::wallet::lock_wallet(tx, &workspace, first, true)
            .await?
            .unwrap_or(first);
        let debits = wallet::debits_in(currency, &spend, rates)?;
        let mut expired = false;
        for debit in &debits {
            let key = format!("{key}{}", debit.key_suffix);
            let seen = tx
                .query_opt(
                    "SELECT 1 FROM routero_wallet_entries WHERE workspace = $1 AND idempotency_key = $2",
                    &[&workspace.as_str(), &key],
                )
                .await
                .map_err(backend)?;
            if seen.is_some() {
                continue;
            }
            if !expired {
                crate::wallet::expire_lots(tx, &workspace, currency, at).await?;
                expired = true;
            }
            let write = wallet::WalletWrite::usage(debit);
            crate::wallet::debit(
                tx,
                &workspace,
                EntryKind::UsageDebit,
                debit.amount,
                currency,
                at,
                &key,
                &write.fingerprint(currency),
                None,
                debit.conversion.as_ref(),
            )
            .await?;
        }
    }
    Ok(())
}

async fn upsert_rollups(tx: &Transaction<'_>, rollups: &Rollups) -> Result<(), BackendError> {
    let mut rows = Vec::with_capacity(rollups.len());
    for (key, totals) in rollups.iter() {
        let mut counts = [0i64; 10];
        for (slot, value) in counts.iter_mut().zip(totals.counts()) {
            *slot = big(value, "rollup count")?;
        }
        rows.push((key, counts, totals.cost));
    }
    add_to_rollups(tx, &rows).await
}

/// Adds signed amounts to rollups in one statement: the counts (in
/// [`RollupTotals::counts`](routero_core::spend::RollupTotals::counts)' order) and
/// the cost of each key. A drain adds; a correction takes out what a request added
/// and adds what it adds now (the columns' checks keep every sum at or above zero).
pub(crate) async fn add_to_rollups(
    tx: &Transaction<'_>,
    rows: &[(&RollupKey, [i64; 10], Decimal)],
) -> Result<(), BackendError> {
    if rows.is_empty() {
        return Ok(());
    }
    // In key order, so that two transactions adding to the same rollups (a drain
    // and a correction) lock them in the same order and never deadlock.
    let mut rows: Vec<&(&RollupKey, [i64; 10], Decimal)> = rows.iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    // What takes counts out updates rows that are there; the rest is upserted.
    let (taking, adding): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|(_, counts, _)| counts.iter().any(|c| *c < 0));
    if !taking.is_empty() {
        let updated = write_rollups(tx, &taking, include_str!("../sql/update_rollups.sql")).await?;
        if updated != u64::try_from(taking.len()).unwrap_or(u64::MAX) {
            return Err(BackendError::new(
                ErrorKind::Corrupt,
                "a correction takes out of a rollup that is not there",
            ));
        }
    }
    if !adding.is_empty() {
        write_rollups(tx, &adding, include_str!("../sql/upsert_rollups.sql")).await?;
    }
    Ok(())
}

/// Runs `sql` (an upsert or an update) over rollup rows passed as 22 arrays; answers
/// the rows it wrote.
async fn write_rollups(
    tx: &Transaction<'_>,
    rows: &[&(&RollupKey, [i64; 10], Decimal)],
    sql: &str,
) -> Result<u64, BackendError> {
    let n = rows.len();
    let mut day: Vec<NaiveDate> = Vec::with_capacity(n);
    let mut text: [Vec<&str>; 10] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut counts: [Vec<i64>; 10] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut cost: Vec<Decimal> = Vec::with_capacity(n);
    for (key, sums, amount) in rows {
        day.push(key.day);
        let [org, workspace, team, api_key, user, customer] = dimension_columns(&key.who);
        let dims = [
            org,
            workspace,
            team,
            api_key,
            user,
            customer,
            key.provider.as_str(),
            key.model.as_str(),
            key.billing_mode.as_str(),
            key.currency.as_ref().map_or("", Currency::code),
        ];
        for (column, value) in text.iter_mut().zip(dims) {
            column.push(value);
        }
        for (column, value) in counts.iter_mut().zip(sums) {
            column.push(*value);
        }
        cost.push(*amount);
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(22);
    params.push(&day);
    for column in &text {
        params.push(column);
    }
    for column in &counts {
        params.push(column);
    }
    params.push(&cost);
    let statement = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.execute(&statement, &params).await.map_err(backend)
}

/// The dimension columns: org, workspace, team, key, user, customer ('' for none).
pub(crate) fn dimension_columns(who: &Dimensions) -> [&str; 6] {
    [
        who.org.as_str(),
        who.workspace.as_str(),
        or_empty(who.team.as_ref()),
        or_empty(who.api_key.as_ref()),
        or_empty(who.user.as_ref()),
        or_empty(who.customer.as_ref()),
    ]
}

/// The dimension columns of an event.
fn who(event: &SpendEvent) -> [&str; 6] {
    dimension_columns(&event.attribution.who)
}

async fn insert_unpriced(tx: &Transaction<'_>, events: &[SpendEvent]) -> Result<(), BackendError> {
    let unpriced: Vec<&SpendEvent> = events.iter().filter(|e| e.cost().is_none()).collect();
    if unpriced.is_empty() {
        return Ok(());
    }
    let mut request: Vec<&str> = Vec::new();
    let mut time: Vec<DateTime<Utc>> = Vec::new();
    let mut dims: [Vec<&str>; 9] = Default::default();
    let mut usage: Vec<Option<String>> = Vec::new();
    let mut reason: Vec<&str> = Vec::new();
    let mut detail: Vec<&str> = Vec::new();
    for event in unpriced {
        request.push(event.request_id.as_str());
        time.push(event.event_time);
        let values = who(event);
        for (column, value) in dims.iter_mut().zip(values) {
            column.push(value);
        }
        dims[6].push(event.provider.as_str());
        dims[7].push(event.model.as_str());
        dims[8].push(event.billing_mode.as_str());
        usage.push(
            event
                .usage
                .map(|u| serde_json::to_string(&u))
                .transpose()
                .map_err(|e| BackendError::new(ErrorKind::Invalid, e.to_string()))?,
        );
        let (code, words) = match &event.pricing {
            Pricing::Unpriced { reason, detail } => (reason.as_str(), detail.as_str()),
            Pricing::Priced { .. } => ("", ""),
        };
        reason.push(code);
        detail.push(words);
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&request, &time];
    for column in &dims {
        params.push(column);
    }
    params.push(&usage);
    params.push(&reason);
    params.push(&detail);
    let statement = tx
        .prepare_cached(include_str!("../sql/insert_unpriced.sql"))
        .await
        .map_err(backend)?;
    tx.execute(&statement, &params).await.map_err(backend)?;
    Ok(())
}

/// The columns of a request-log row, as the drain writes them.
const LOG_COLUMNS: &str = "request_id, event_time, org, workspace, team, api_key, user_id, \
    customer, provider, model, billing_mode, success, partial, input_tokens, cache_read_tokens, \
    cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens, cost, \
    price_version, priced_model, unpriced_reason, currency, usage";

const LOG_TYPES: [Type; 25] = [
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::BOOL,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::NUMERIC,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
];

/// Writes the request log of a drain step with `COPY … BINARY`, several times
/// cheaper per row than an `INSERT`. A request id logged before (the caller recorded
/// it twice) makes the copy fail on the primary key; the step then writes the log
/// again with `INSERT … ON CONFLICT DO NOTHING`, which keeps the first, from a
/// savepoint, so one duplicate never stops a shard.
async fn insert_spend_log(tx: &Transaction<'_>, events: &[SpendEvent]) -> Result<(), BackendError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tokens = Vec::with_capacity(events.len());
    for event in events {
        let mut row = [None; 6];
        for (slot, value) in row.iter_mut().zip(event.logged_tokens()) {
            *slot = value.map(|v| big(v, "tokens")).transpose()?;
        }
        tokens.push(row);
    }
    tx.batch_execute("SAVEPOINT routero_log")
        .await
        .map_err(backend)?;
    match copy_spend_log(tx, events, &tokens).await {
        Ok(()) => tx
            .batch_execute("RELEASE SAVEPOINT routero_log")
            .await
            .map_err(backend),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT routero_log")
                .await
                .map_err(backend)?;
            upsert_spend_log(tx, events).await
        }
        Err(e) => Err(backend(e)),
    }
}

async fn copy_spend_log(
    tx: &Transaction<'_>,
    events: &[SpendEvent],
    tokens: &[[Option<i64>; 6]],
) -> Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY routero_spend_log ({LOG_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &LOG_TYPES));
    for (event, tokens) in events.iter().zip(tokens) {
        let [org, workspace, team, api_key, user, customer] = who(event);
        let (cost, price_version, priced_model, reason) = event.logged_pricing();
        let success = event.outcome == Outcome::Success;
        let currency = event.currency().map(|c| c.code());
        let usage = event.usage.map(|u| Json(LoggedUsage(u)));
        let row: [&(dyn ToSql + Sync); 25] = [
            &event.request_id.as_str(),
            &event.event_time,
            &org,
            &workspace,
            &team,
            &api_key,
            &user,
            &customer,
            &event.provider.as_str(),
            &event.model.as_str(),
            &event.billing_mode.as_str(),
            &success,
            &event.partial,
            &tokens[0],
            &tokens[1],
            &tokens[2],
            &tokens[3],
            &tokens[4],
            &tokens[5],
            &cost,
            &price_version,
            &priced_model,
            &reason,
            &currency,
            &usage,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.as_mut().finish().await?;
    Ok(())
}

async fn upsert_spend_log(tx: &Transaction<'_>, events: &[SpendEvent]) -> Result<(), BackendError> {
    let n = events.len();
    let mut request: Vec<&str> = Vec::with_capacity(n);
    let mut time: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut dims: [Vec<&str>; 9] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut success: Vec<bool> = Vec::with_capacity(n);
    let mut partial: Vec<bool> = Vec::with_capacity(n);
    let mut tokens: [Vec<Option<i64>>; 6] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut cost: Vec<Option<Decimal>> = Vec::with_capacity(n);
    let mut labels: [Vec<Option<&str>>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut usage: Vec<Option<Json<LoggedUsage>>> = Vec::with_capacity(n);
    for event in events {
        request.push(event.request_id.as_str());
        time.push(event.event_time);
        for (column, value) in dims.iter_mut().zip(who(event)) {
            column.push(value);
        }
        dims[6].push(event.provider.as_str());
        dims[7].push(event.model.as_str());
        dims[8].push(event.billing_mode.as_str());
        success.push(event.outcome == Outcome::Success);
        partial.push(event.partial);
        for (column, value) in tokens.iter_mut().zip(event.logged_tokens()) {
            column.push(value.map(|v| big(v, "tokens")).transpose()?);
        }
        let (amount, price_version, priced_model, reason) = event.logged_pricing();
        cost.push(amount);
        labels[0].push(price_version);
        labels[1].push(priced_model);
        labels[2].push(reason);
        labels[3].push(event.currency().map(|c| c.code()));
        usage.push(event.usage.map(|u| Json(LoggedUsage(u))));
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&request, &time];
    for column in &dims {
        params.push(column);
    }
    params.push(&success);
    params.push(&partial);
    for column in &tokens {
        params.push(column);
    }
    params.push(&cost);
    for column in &labels {
        params.push(column);
    }
    params.push(&usage);
    let statement = tx
        .prepare_cached(include_str!("../sql/insert_spend_log.sql"))
        .await
        .map_err(backend)?;
    tx.execute(&statement, &params).await.map_err(backend)?;
    Ok(())
}

/// `(first day, first day of the next month)` of an instant's UTC month.
fn month_bounds(at: DateTime<Utc>) -> Option<(NaiveDate, NaiveDate)> {
    let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1)?;
    let next = if at.month() == 12 {
        NaiveDate::from_ymd_opt(at.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(at.year(), at.month() + 1, 1)?
    };
    Some((first, next))
}

impl PgStore {
    /// Creates the spend-log partitions the events fall in that this process does not
    /// know of yet; returns their months.
    async fn ensure_partitions(
        &self,
        tx: &Transaction<'_>,
        events: &[SpendEvent],
    ) -> Result<Vec<String>, BackendError> {
        let mut created = Vec::new();
        let months: BTreeSet<(NaiveDate, NaiveDate)> = events
            .iter()
            .filter_map(|e| month_bounds(e.event_time))
            .collect();
        for (first, next) in months {
            let name = first.format("%Y_%m").to_string();
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&name);
            if known {
                continue;
            }
            // Coworkers creating the same partition at once would collide: serialise.
            tx.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock(7317020261129); \
                 CREATE TABLE IF NOT EXISTS routero_spend_log_{name} PARTITION OF routero_spend_log \
                 FOR VALUES FROM ('{first} 00:00:00+00') TO ('{next} 00:00:00+00')"
            ))
            .await
            .map_err(backend)?;
            created.push(name);
        }
        Ok(created)
    }
}
