//! Repricing: the request log read with each request's cost as it stands, the
//! corrections applied beside it (each once per repricing), and the audit records.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use routero_core::Provider;
use routero_core::attribution::{BillingMode, OrgId, RequestId, WorkspaceId};
use routero_core::money::Currency;
use routero_core::port::{BackendError, ErrorKind};
use routero_core::reprice::{
    Correction, LogCursor, LoggedRequest, ReportRow, Repricing, RepricingId, RepricingScope,
    RepricingState, Repricings, RequestLog, correction_key, correction_write, managed_corrections,
};
use routero_core::spend::{Outcome, RollupKey};
use routero_core::wallet;
use rust_decimal::Decimal;
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use crate::drain::{add_to_rollups, big, count};
use crate::usage::LoggedUsage;
use crate::warehouse::{billing_mode, dimensions, provider};
use crate::{PgStore, backend};

fn corrupt(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::new(ErrorKind::Corrupt, format!("logged {what}: {e}"))
}

fn currency(text: Option<String>) -> Result<Option<Currency>, BackendError> {
    text.map(|c| c.parse::<Currency>().map_err(|e| corrupt("currency", e)))
        .transpose()
}

/// A request-log row, its cost as the last correction left it.
fn logged(row: &Row) -> Result<LoggedRequest, BackendError> {
    let usage: Option<Json<LoggedUsage>> = row.try_get("usage").map_err(|e| corrupt("usage", e))?;
    let success: bool = row.get("success");
    Ok(LoggedRequest {
        request_id: RequestId::new(row.get::<_, &str>("request_id"))
            .map_err(|e| corrupt("request id", e))?,
        event_time: row.get("event_time"),
        // org, workspace, team, api_key, user_id, customer: columns 2 to 7.
        who: dimensions(row, 2)?,
        outcome: if success {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        provider: provider(row, 8)?,
        model: row.get("model"),
        billing_mode: billing_mode(row, 10)?,
        usage: usage.map(|u| u.0.0),
        cost: row.get("cost"),
        currency: currency(row.get("currency"))?,
        price_version: row.get("price_version"),
    })
}

#[async_trait]
impl RequestLog for PgStore {
    async fn requests(
        &self,
        scope: &RepricingScope,
        after: Option<&LogCursor>,
        limit: usize,
    ) -> Result<Vec<LoggedRequest>, BackendError> {
        let (start, end) = scope.bounds().ok_or_else(|| {
            BackendError::new(ErrorKind::Invalid, "the repricing's days are out of range")
        })?;
        let (after_org, after_time, after_id) = match after {
            Some((org, time, id)) => (Some(org.as_str()), Some(*time), Some(id.as_str())),
            None => (None, None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        // Two settings for this page only, each measured on a log of 1,000,000
        // requests. No JIT: the planner prices the corrections' lookup per row high
        // enough to compile the query with full optimisation, which took 15 times
        // as long as running it (190 against 12 ms a page of 2,000 rows). No bitmap
        // scan: a page must walk the (org, event_time) index in order from its
        // cursor; with the statistics of a partition not yet analysed the planner
        // read the whole rest of the range into a bitmap and sorted it, for every
        // page (100 against 23 ms a page, and growing with the log).
        let tx = client.transaction().await.map_err(backend)?;
        tx.batch_execute("SET LOCAL jit = off; SET LOCAL enable_bitmapscan = off")
            .await
            .map_err(backend)?;
        let rows = tx
            .query(
                // The page first, along the (org, event_time) index; the corrections
                // are looked up for its rows only.
                "SELECT l.request_id, l.event_time, l.org, l.workspace, l.team, l.api_key, \
                        l.user_id, l.customer, l.provider, l.model, l.billing_mode, l.success, \
                        l.usage, COALESCE(c.new_cost, l.cost) AS cost, \
                        COALESCE(c.currency, l.currency) AS currency, \
                        COALESCE(c.price_version, l.price_version) AS price_version \
                 FROM ( \
                     SELECT * FROM routero_spend_log l \
                     WHERE l.event_time >= $1 AND l.event_time < $2 \
                       AND ($3::text IS NULL OR l.org = $3) \
                       AND ($4::text IS NULL OR l.workspace = $4) \
                       AND ($5::text IS NULL OR l.provider = $5) \
                       AND ($6::text IS NULL OR l.model = $6) \
                       AND ($7::text IS NULL OR l.billing_mode = $7) \
                       AND ($8::text IS NULL OR (l.org, l.event_time, l.request_id) > ($8, $9, $10)) \
                     ORDER BY l.org, l.event_time, l.request_id LIMIT $11 \
                 ) l \
                 LEFT JOIN LATERAL ( \
                     SELECT new_cost, currency, price_version FROM routero_spend_corrections \
                     WHERE request_id = l.request_id ORDER BY seq DESC LIMIT 1 \
                 ) c ON true \
                 ORDER BY l.org, l.event_time, l.request_id",
                &[
                    &start,
                    &end,
                    &scope.org.as_ref().map(OrgId::as_str),
                    &scope.workspace.as_ref().map(WorkspaceId::as_str),
                    &scope.provider.as_ref().map(Provider::as_str),
                    &scope.model.as_deref(),
                    &scope.billing_mode.map(BillingMode::as_str),
                    &after_org,
                    &after_time,
                    &after_id,
                    &limit,
                ],
            )
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        rows.iter().map(logged).collect()
    }
}

const REPRICING_COLUMNS: &str = "id, org, from_day, to_day, workspace, provider, model, \
    billing_mode, reason, actor, prices_before, prices_after, currency, planned, corrected, \
    delta, state, created_at, finished_at";

fn repricing_from(row: &Row) -> Result<Repricing, BackendError> {
    let text = |name: &str| -> Option<String> { row.get(name) };
    let id: String = row.get("id");
    let planned: Json<ReportRow> = row.get("planned");
    let state: String = row.get("state");
    Ok(Repricing {
        id: RepricingId::parse(&id).ok_or_else(|| corrupt("repricing id", &id))?,
        reason: row.get("reason"),
        actor: row.get("actor"),
        scope: RepricingScope {
            from: row.get::<_, NaiveDate>("from_day"),
            to: row.get::<_, NaiveDate>("to_day"),
            org: text("org")
                .map(|o| OrgId::new(&o).map_err(|e| corrupt("org", e)))
                .transpose()?,
            workspace: text("workspace")
                .map(|w| WorkspaceId::new(&w).map_err(|e| corrupt("workspace", e)))
                .transpose()?,
            provider: text("provider")
                .map(|p| Provider::parse(&p).map_err(|e| corrupt("provider", e)))
                .transpose()?,
            model: text("model"),
            billing_mode: text("billing_mode")
                .map(|b| b.parse().map_err(|e| corrupt("billing mode", e)))
                .transpose()?,
        },
        prices_before: row.get("prices_before"),
        prices_after: row.get("prices_after"),
        currency: currency(row.get("currency"))?
            .ok_or_else(|| corrupt("repricing currency", "none"))?,
        planned: planned.0,
        corrected: count(row.get("corrected"), "corrected")?,
        delta: row.get("delta"),
        state: RepricingState::parse(&state).ok_or_else(|| corrupt("repricing state", &state))?,
        created_at: row.get("created_at"),
        finished_at: row.get("finished_at"),
    })
}

/// The rollup changes of corrections, net per key: what each request added is taken
/// out, what it adds now is added.
fn rollup_changes(
    corrections: &[&Correction],
) -> Result<HashMap<RollupKey, ([i64; 10], Decimal)>, BackendError> {
    let mut net: HashMap<RollupKey, ([i64; 10], Decimal)> = HashMap::new();
    for correction in corrections {
        let [(old_key, old), (new_key, new)] = correction.rollup_change();
        for (key, totals, sign) in [(old_key, old, -1i64), (new_key, new, 1)] {
            let (counts, cost) = net.entry(key).or_default();
            for (sum, value) in counts.iter_mut().zip(totals.counts()) {
                *sum = big(value, "rollup count")?
                    .checked_mul(sign)
                    .and_then(|v| sum.checked_add(v))
                    .ok_or_else(|| {
                        BackendError::new(ErrorKind::Invalid, "a correction overflows")
                    })?;
            }
            *cost += totals.cost * Decimal::from(sign);
        }
    }
    net.retain(|_, (counts, cost)| counts.iter().any(|c| *c != 0) || !cost.is_zero());
    Ok(net)
}

impl PgStore {
    /// Records the corrections not recorded yet for `id`; answers the request ids
    /// recorded now.
    async fn record_corrections(
        tx: &Transaction<'_>,
        id: &RepricingId,
        corrections: &[Correction],
        at: DateTime<Utc>,
    ) -> Result<HashSet<String>, BackendError> {
        let n = corrections.len();
        let mut request: Vec<&str> = Vec::with_capacity(n);
        let mut time: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        let mut old: Vec<Option<Decimal>> = Vec::with_capacity(n);
        let mut new: Vec<Decimal> = Vec::with_capacity(n);
        let mut currency: Vec<&str> = Vec::with_capacity(n);
        let mut version: Vec<&str> = Vec::with_capacity(n);
        for c in corrections {
            request.push(c.request.request_id.as_str());
            time.push(c.request.event_time);
            old.push(c.request.cost);
            new.push(c.new);
            currency.push(c.currency.code());
            version.push(&c.price_version);
        }
        let rows = tx
            .query(
                "INSERT INTO routero_spend_corrections \
                     (request_id, repricing_id, event_time, old_cost, new_cost, currency, \
                      price_version, applied_at) \
                 SELECT r, $2, t, o, n, c, v, $8 \
                 FROM UNNEST($1::text[], $3::timestamptz[], $4::numeric[], $5::numeric[], \
                             $6::text[], $7::text[]) AS u(r, t, o, n, c, v) \
                 ON CONFLICT (request_id, repricing_id) DO NOTHING \
                 RETURNING request_id",
                &[
                    &request,
                    &id.as_str(),
                    &time,
                    &old,
                    &new,
                    &currency,
                    &version,
                    &at,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Moves managed spend in the wallets by the corrections, keyed per page.
    async fn correct_wallets(
        &self,
        tx: &Transaction<'_>,
        id: &RepricingId,
        fresh: &[Correction],
        at: DateTime<Utc>,
    ) -> Result<(), BackendError> {
        let key = correction_key(id, fresh);
        let memo = format!("repricing {id}");
        let rates = self.rates();
        for (workspace, spend) in managed_corrections(fresh)? {
            let first = wallet::first_currency(&spend).unwrap_or(Currency::USD);
            let currency = crate::wallet::lock_wallet(tx, &workspace, first, true)
                .await?
                .unwrap_or(first);
            let debits = wallet::debits_in(currency, &spend, &*rates)?;
            crate::wallet::expire_lots(tx, &workspace, currency, at).await?;
            for debit in &debits {
                let key = format!("{key}{}", debit.key_suffix);
                let write = correction_write(debit, &memo);
                crate::wallet::apply_write(
                    tx,
                    &workspace,
                    currency,
                    &write,
                    &key,
                    &write.fingerprint(currency),
                    at,
                )
                .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Repricings for PgStore {
    async fn begin(&self, repricing: &Repricing) -> Result<Repricing, BackendError> {
        let client = self.client().await?;
        let scope = &repricing.scope;
        client
            .execute(
                &format!(
                    "INSERT INTO routero_repricings ({REPRICING_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                             $16, $17, $18, $19) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &repricing.id.as_str(),
                    &scope.org.as_ref().map(OrgId::as_str),
                    &scope.from,
                    &scope.to,
                    &scope.workspace.as_ref().map(WorkspaceId::as_str),
                    &scope.provider.as_ref().map(Provider::as_str),
                    &scope.model.as_deref(),
                    &scope.billing_mode.map(BillingMode::as_str),
                    &repricing.reason,
                    &repricing.actor,
                    &repricing.prices_before,
                    &repricing.prices_after,
                    &repricing.currency.code(),
                    &Json(&repricing.planned),
                    &big(repricing.corrected, "corrected")?,
                    &repricing.delta,
                    &repricing.state.as_str(),
                    &repricing.created_at,
                    &repricing.finished_at,
                ],
            )
            .await
            .map_err(backend)?;
        self.repricing(&repricing.id).await?.ok_or_else(|| {
            BackendError::new(ErrorKind::Corrupt, "a repricing vanished once recorded")
        })
    }

    async fn correct(
        &self,
        id: &RepricingId,
        corrections: &[Correction],
        at: DateTime<Utc>,
    ) -> Result<u64, BackendError> {
        if corrections.is_empty() {
            return Ok(0);
        }
        self.guarded(async |client| {
            let tx = self.begin_guarded(client).await?;
            let recorded = Self::record_corrections(&tx, id, corrections, at).await?;
            let fresh: Vec<Correction> = corrections
                .iter()
                .filter(|c| recorded.contains(c.request.request_id.as_str()))
                .cloned()
                .collect();
            let net = rollup_changes(&fresh.iter().collect::<Vec<_>>())?;
            let rows: Vec<(&RollupKey, [i64; 10], Decimal)> = net
                .iter()
                .map(|(key, (counts, cost))| (key, *counts, *cost))
                .collect();
            add_to_rollups(&tx, &rows).await?;
            self.correct_wallets(&tx, id, &fresh, at).await?;
            let priced: Vec<&str> = fresh
                .iter()
                .filter(|c| c.newly_priced())
                .map(|c| c.request.request_id.as_str())
                .collect();
            if !priced.is_empty() {
                tx.execute(
                    "UPDATE routero_unpriced SET repriced_at = $2 \
                     WHERE request_id = ANY($1) AND repriced_at IS NULL",
                    &[&priced, &at],
                )
                .await
                .map_err(backend)?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(u64::try_from(fresh.len()).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn finish(
        &self,
        id: &RepricingId,
        at: DateTime<Utc>,
    ) -> Result<Option<Repricing>, BackendError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE routero_repricings r SET state = 'applied', finished_at = $2, \
                     corrected = s.n, delta = s.delta \
                 FROM (SELECT count(*) AS n, COALESCE(sum(new_cost - COALESCE(old_cost, 0)), 0) AS delta \
                       FROM routero_spend_corrections WHERE repricing_id = $1) s \
                 WHERE r.id = $1 AND r.state <> 'applied'",
                &[&id.as_str(), &at],
            )
            .await
            .map_err(backend)?;
        self.repricing(id).await
    }

    async fn repricing(&self, id: &RepricingId) -> Result<Option<Repricing>, BackendError> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {REPRICING_COLUMNS} FROM routero_repricings WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .map_err(backend)?
            .as_ref()
            .map(repricing_from)
            .transpose()
    }

    async fn repricings(&self, org: Option<&OrgId>) -> Result<Vec<Repricing>, BackendError> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {REPRICING_COLUMNS} FROM routero_repricings \
                     WHERE $1::text IS NULL OR org = $1 ORDER BY created_at DESC, id"
                ),
                &[&org.map(OrgId::as_str)],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(repricing_from)
            .collect()
    }
}
