//! The request log read for a repricing.

use async_trait::async_trait;
use routero_core::attribution::{BillingMode, OrgId, RequestId, WorkspaceId};
use routero_core::money::Currency;
use routero_core::port::{BackendError, ErrorKind};
use routero_core::reprice::{LogCursor, LoggedRequest, RepricingScope, RequestLog};
use routero_core::{Provider, Usage};
use tokio_postgres::types::Json;

use crate::{PgStore, backend};

fn corrupt(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::new(ErrorKind::Corrupt, format!("logged {what}: {e}"))
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
        let (after_time, after_id) = match after {
            Some((time, id)) => (Some(*time), Some(id.as_str())),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT request_id, event_time, org, workspace, provider, model, billing_mode, \
                        usage, cost, currency, price_version \
                 FROM routero_spend_log \
                 WHERE event_time >= $1 AND event_time < $2 \
                   AND ($3::text IS NULL OR org = $3) \
                   AND ($4::text IS NULL OR workspace = $4) \
                   AND ($5::text IS NULL OR provider = $5) \
                   AND ($6::text IS NULL OR model = $6) \
                   AND ($7::text IS NULL OR billing_mode = $7) \
                   AND ($8::timestamptz IS NULL OR (event_time, request_id) > ($8, $9)) \
                 ORDER BY event_time, request_id LIMIT $10",
                &[
                    &start,
                    &end,
                    &scope.org.as_ref().map(OrgId::as_str),
                    &scope.workspace.as_ref().map(WorkspaceId::as_str),
                    &scope.provider.as_ref().map(Provider::as_str),
                    &scope.model.as_deref(),
                    &scope.billing_mode.map(BillingMode::as_str),
                    &after_time,
                    &after_id,
                    &limit,
                ],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let usage: Option<Json<Usage>> = row.get("usage");
                let currency: Option<String> = row.get("currency");
                Ok(LoggedRequest {
                    request_id: RequestId::new(row.get::<_, &str>("request_id"))
                        .map_err(|e| corrupt("request id", e))?,
                    event_time: row.get("event_time"),
                    org: OrgId::new(row.get::<_, &str>("org")).map_err(|e| corrupt("org", e))?,
                    workspace: WorkspaceId::new(row.get::<_, &str>("workspace"))
                        .map_err(|e| corrupt("workspace", e))?,
                    provider: Provider::parse(row.get::<_, &str>("provider"))
                        .map_err(|e| corrupt("provider", e))?,
                    model: row.get("model"),
                    billing_mode: row
                        .get::<_, &str>("billing_mode")
                        .parse::<BillingMode>()
                        .map_err(|e| corrupt("billing mode", e))?,
                    usage: usage.map(|u| u.0),
                    cost: row.get("cost"),
                    currency: currency
                        .map(|c| c.parse::<Currency>().map_err(|e| corrupt("currency", e)))
                        .transpose()?,
                    price_version: row.get("price_version"),
                })
            })
            .collect()
    }
}
