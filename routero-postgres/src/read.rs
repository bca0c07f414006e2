//! The read side: rollups of one org, filtered and grouped in SQL.

use async_trait::async_trait;
use chrono::NaiveDate;
use routero_core::attribution::{ApiKeyId, BillingMode, CustomerId, TeamId, UserId, WorkspaceId};
use routero_core::port::{
    BackendError, ErrorKind, RollupFilter, RollupRow, RollupRowKey, SpendReader,
};
use routero_core::spend::RollupTotals;
use routero_core::{Currency, Provider};
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;

use crate::drain::count;
use crate::{PgStore, backend};

fn strings<T: AsRef<str>>(list: &[T]) -> Vec<String> {
    list.iter().map(|v| v.as_ref().to_owned()).collect()
}

/// The grouped dimensions, as (column, whether grouped).
fn dimensions(filter: &RollupFilter) -> [(&'static str, bool); 8] {
    let g = filter.group_by;
    [
        ("workspace", g.workspace),
        ("team", g.team),
        ("api_key", g.api_key),
        ("user_id", g.user),
        ("customer", g.customer),
        ("provider", g.provider),
        ("model", g.model),
        ("billing_mode", g.billing_mode),
    ]
}

pub(crate) fn corrupt(what: &str, value: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::new(ErrorKind::Corrupt, format!("stored {what} {value:?}: {e}"))
}

/// An optional id column: '' is "none".
pub(crate) fn optional<T>(
    value: Option<String>,
    parse: impl Fn(&str) -> Result<T, routero_core::attribution::InvalidId>,
    what: &str,
) -> Result<Option<T>, BackendError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => parse(text).map(Some).map_err(|e| corrupt(what, text, e)),
    }
}

/// A stored currency: '' is "none" (unpriced).
pub(crate) fn currency_from(text: String) -> Result<Option<Currency>, BackendError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| corrupt("currency", &text, e))
}

/// The ten counts and the cost of a rollup, from column `first` on.
pub(crate) fn totals_from(
    row: &tokio_postgres::Row,
    first: usize,
) -> Result<RollupTotals, BackendError> {
    let sum =
        |i: usize, what: &str| count(row.try_get::<_, i64>(first + i).map_err(backend)?, what);
    Ok(RollupTotals {
        input_tokens: sum(0, "input_tokens")?,
        cache_read_tokens: sum(1, "cache_read_tokens")?,
        cache_write_5m_tokens: sum(2, "cache_write_5m_tokens")?,
        cache_write_1h_tokens: sum(3, "cache_write_1h_tokens")?,
        output_tokens: sum(4, "output_tokens")?,
        reasoning_tokens: sum(5, "reasoning_tokens")?,
        web_search_requests: sum(6, "web_search_requests")?,
        successes: sum(7, "successes")?,
        failures: sum(8, "failures")?,
        unpriced: sum(9, "unpriced")?,
        cost: row.try_get::<_, Decimal>(first + 10).map_err(backend)?,
    })
}

/// The read side of a [`PgStore`] ([`PgStore::reads`]): the rollups on the read pool,
/// typically a streaming replica's.
#[derive(Clone)]
pub struct PgReads {
    pub(crate) pool: deadpool_postgres::Pool,
    pub(crate) separate: bool,
}

impl std::fmt::Debug for PgReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReads")
            .field("separate", &self.separate)
            .finish_non_exhaustive()
    }
}

impl PgReads {
    /// Whether these reads go to a database of their own ([`PgConfig::read_url`](crate::PgConfig::read_url)).
    pub fn is_separate(&self) -> bool {
        self.separate
    }

    /// How far the read database is behind its primary: `None` when it is not a
    /// replica (a primary, or the store's own pool); zero when it has replayed
    /// everything it received; else the age of the last transaction it replayed.
    pub async fn lag(&self) -> Result<Option<std::time::Duration>, BackendError> {
        let client = self.pool.get().await.map_err(crate::pool_error)?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), CASE                    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0                    ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000000, 0)                  END::BIGINT",
                &[],
            )
            .await
            .map_err(backend)?;
        let replica: bool = row.get(0);
        let micros: i64 = row.get(1);
        Ok(replica.then(|| std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0))))
    }
}

#[async_trait]
impl SpendReader for PgReads {
    async fn rollups(&self, filter: &RollupFilter) -> Result<Vec<RollupRow>, BackendError> {
        let client = self.pool.get().await.map_err(crate::pool_error)?;
        rollups_on(&client, filter).await
    }
}

#[async_trait]
impl SpendReader for PgStore {
    async fn rollups(&self, filter: &RollupFilter) -> Result<Vec<RollupRow>, BackendError> {
        rollups_on(&self.client().await?, filter).await
    }
}

/// The rollups of `filter`, grouped in SQL, on one connection.
async fn rollups_on(
    client: &deadpool_postgres::Object,
    filter: &RollupFilter,
) -> Result<Vec<RollupRow>, BackendError> {
    let dims = dimensions(filter);
    let mut select = vec!["day".to_owned()];
    let mut group = vec!["day".to_owned(), "currency".to_owned()];
    for (column, grouped) in dims {
        if grouped {
            select.push(column.to_owned());
            group.push(column.to_owned());
        } else {
            select.push(format!("NULL::text AS {column}"));
        }
    }
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(filter.org.as_str().to_owned()),
        Box::new(filter.from),
        Box::new(filter.to),
    ];
    let mut conditions = vec!["org = $1".to_owned(), "day BETWEEN $2 AND $3".to_owned()];
    let mut any =
        |column: &str, values: Vec<String>, params: &mut Vec<Box<dyn ToSql + Sync + Send>>| {
            params.push(Box::new(values));
            conditions.push(format!("{column} = ANY(${})", params.len()));
        };
    if let Some(list) = &filter.workspaces {
        any("workspace", strings(list), &mut params);
    }
    if let Some(list) = &filter.teams {
        any("team", strings(list), &mut params);
    }
    if let Some(key) = &filter.api_key {
        any("api_key", vec![key.as_str().to_owned()], &mut params);
    }
    if let Some(user) = &filter.user {
        any("user_id", vec![user.as_str().to_owned()], &mut params);
    }
    if let Some(list) = &filter.customers {
        any("customer", strings(list), &mut params);
    }
    if let Some(provider) = &filter.provider {
        any("provider", vec![provider.as_str().to_owned()], &mut params);
    }
    if let Some(model) = &filter.model {
        any("model", vec![model.clone()], &mut params);
    }
    if let Some(mode) = filter.billing_mode {
        any("billing_mode", vec![mode.as_str().to_owned()], &mut params);
    }
    if let Some(currency) = filter.currency {
        // Unpriced rows ('') carry no money and pass any currency.
        any(
            "currency",
            vec![currency.code().to_owned(), String::new()],
            &mut params,
        );
    }
    let sql = format!(
        "SELECT {}, currency, SUM(input_tokens)::BIGINT, SUM(cache_read_tokens)::BIGINT, \
         SUM(cache_write_5m_tokens)::BIGINT, SUM(cache_write_1h_tokens)::BIGINT, \
         SUM(output_tokens)::BIGINT, SUM(reasoning_tokens)::BIGINT, SUM(web_search_requests)::BIGINT, \
         SUM(successes)::BIGINT, SUM(failures)::BIGINT, SUM(unpriced)::BIGINT, SUM(cost) \
         FROM routero_daily_rollups WHERE {} GROUP BY {}",
        select.join(", "),
        conditions.join(" AND "),
        group.join(", ")
    );
    let statement = client.prepare_cached(&sql).await.map_err(backend)?;
    let refs: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    let rows = client.query(&statement, &refs).await.map_err(backend)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let day: NaiveDate = row.get(0);
        let text = |i: usize| -> Option<String> { row.get(i) };
        let provider = text(6)
            .map(|p| Provider::parse(&p).map_err(|e| corrupt("provider", &p, e)))
            .transpose()?;
        let billing_mode = text(8)
            .map(|m| {
                m.parse::<BillingMode>()
                    .map_err(|e| corrupt("billing mode", &m, e))
            })
            .transpose()?;
        let key = RollupRowKey {
            day,
            workspace: optional(text(1), WorkspaceId::new, "workspace")?,
            team: optional(text(2), TeamId::new, "team")?,
            api_key: optional(text(3), ApiKeyId::new, "api key")?,
            user: optional(text(4), UserId::new, "user")?,
            customer: optional(text(5), CustomerId::new, "customer")?,
            provider,
            model: text(7),
            billing_mode,
            currency: currency_from(row.get(9))?,
        };
        let totals = totals_from(&row, 10)?;
        out.push(RollupRow { key, totals });
    }
    // Byte order of the keys, whatever the database's collation.
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
