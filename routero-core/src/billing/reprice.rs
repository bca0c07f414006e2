//! Repricing, the dry run: every logged request in a range priced again from its
//! recorded usage with another price table, and the differences reported per
//! workspace, provider and model.
//!
//! A request is repriced exactly when the request log holds its whole usage (every
//! category, the service tier, the per-call meters): the log keeps it beside the
//! six token columns (PostgreSQL migration V11; the in-memory store keeps the event).
//! A request logged before that carries no full usage and is counted as
//! `no_usage`, never guessed from the token columns.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::attribution::RequestId;
use crate::attribution::{BillingMode, OrgId, WorkspaceId};
use crate::money::Currency;
use crate::port::BackendError;
use crate::price::PriceTable;
use crate::provider::Provider;
use crate::usage::Usage;

/// Which logged requests a repricing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepricingScope {
    /// The first UTC day.
    pub from: NaiveDate,
    /// The last UTC day, included.
    pub to: NaiveDate,
    /// Only this org's.
    pub org: Option<OrgId>,
    /// Only this workspace's.
    pub workspace: Option<WorkspaceId>,
    /// Only this provider's.
    pub provider: Option<Provider>,
    /// Only this model's (as the response named it).
    pub model: Option<String>,
    /// Only this billing mode's.
    pub billing_mode: Option<BillingMode>,
}

impl RepricingScope {
    /// Every request from `from` to `to`, UTC days included.
    pub fn days(from: NaiveDate, to: NaiveDate) -> RepricingScope {
        RepricingScope {
            from,
            to,
            org: None,
            workspace: None,
            provider: None,
            model: None,
            billing_mode: None,
        }
    }

    /// The scope's instants: `[from 00:00, to + 1 day 00:00)`.
    pub fn bounds(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let start = self.from.and_hms_opt(0, 0, 0)?.and_utc();
        let end = self.to.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
        Some((start, end))
    }

    /// Whether a logged request is in scope.
    pub fn covers(&self, request: &LoggedRequest) -> bool {
        self.bounds()
            .is_some_and(|(start, end)| request.event_time >= start && request.event_time < end)
            && self.org.as_ref().is_none_or(|o| *o == request.org)
            && self
                .workspace
                .as_ref()
                .is_none_or(|w| *w == request.workspace)
            && self
                .provider
                .as_ref()
                .is_none_or(|p| *p == request.provider)
            && self.model.as_ref().is_none_or(|m| *m == request.model)
            && self.billing_mode.is_none_or(|b| b == request.billing_mode)
    }
}

/// A request as the log keeps it, what a repricing reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The request.
    pub request_id: RequestId,
    /// When it was made (the time its price is looked up at).
    pub event_time: DateTime<Utc>,
    /// Its org.
    pub org: OrgId,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// The provider that served it.
    pub provider: Provider,
    /// The model the response (or the request) named.
    pub model: String,
    /// How it is billed.
    pub billing_mode: BillingMode,
    /// Its whole usage; `None` when unknown or logged before the log kept it.
    pub usage: Option<Usage>,
    /// Its recorded cost; `None` when it was unpriced.
    pub cost: Option<Decimal>,
    /// The cost's currency.
    pub currency: Option<Currency>,
    /// The price version that priced it.
    pub price_version: Option<String>,
}

/// Where the position after which [`RequestLog::requests`] reads: the last request
/// of the previous page.
pub type LogCursor = (DateTime<Utc>, RequestId);

/// The request log, read in order for a repricing.
#[async_trait]
pub trait RequestLog: fmt::Debug + Send + Sync {
    /// Up to `limit` requests in scope after `after`, ordered by time then id.
    async fn requests(
        &self,
        scope: &RepricingScope,
        after: Option<&LogCursor>,
        limit: usize,
    ) -> Result<Vec<LoggedRequest>, BackendError>;
}

/// What pricing a logged request again found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repriced {
    /// Priced again: the old cost (`None` when it was unpriced) and the new.
    Priced {
        /// The recorded cost.
        old: Option<Decimal>,
        /// The cost at the new prices.
        new: Decimal,
    },
    /// The new prices cannot price it either (the reason).
    Unpriced(String),
    /// Its usage is unknown: nothing to price it from.
    NoUsage,
    /// The new prices are in another currency than its recorded cost: not compared.
    OtherCurrency,
}

/// Prices one logged request again with `prices`.
pub fn reprice(request: &LoggedRequest, prices: &PriceTable) -> Repriced {
    let Some(usage) = &request.usage else {
        return Repriced::NoUsage;
    };
    if request
        .currency
        .is_some_and(|c| c != prices.currency() && request.cost.is_some())
    {
        return Repriced::OtherCurrency;
    }
    match prices.cost(&request.provider, &request.model, usage, request.event_time) {
        Ok(cost) => Repriced::Priced {
            old: request.cost,
            new: cost.total(),
        },
        Err(e) => Repriced::Unpriced(e.to_string()),
    }
}

/// One line of a repricing report: a workspace, provider and model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    /// The workspace.
    pub workspace: String,
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Requests in scope.
    pub requests: u64,
    /// Requests priced before and again, whose cost changes.
    pub changed: u64,
    /// Requests unpriced before that the new prices price.
    pub newly_priced: u64,
    /// Requests the new prices cannot price (their old cost stays).
    pub unpriced: u64,
    /// Requests without a usage to price from (their old cost stays).
    pub no_usage: u64,
    /// The recorded total of the requests priced again.
    #[serde(with = "rust_decimal::serde::str")]
    pub old_total: Decimal,
    /// Their total at the new prices.
    #[serde(with = "rust_decimal::serde::str")]
    pub new_total: Decimal,
    /// `new_total - old_total`.
    #[serde(with = "rust_decimal::serde::str")]
    pub delta: Decimal,
}

/// A dry run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepricingReport {
    /// The version of the prices applied.
    pub price_version: String,
    /// The currency of every amount.
    pub currency: String,
    /// Per workspace, provider and model, in that order.
    pub rows: Vec<ReportRow>,
    /// Every row added up (its `workspace`, `provider` and `model` empty).
    pub total: ReportRow,
}

impl RepricingReport {
    /// The report as RFC 4180 CSV: a header, a line per row, then the total.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "workspace,provider,model,requests,changed,newly_priced,unpriced,no_usage,old_total,new_total,delta\n",
        );
        let quote = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        for row in self.rows.iter().chain(std::iter::once(&self.total)) {
            let workspace = if row.workspace.is_empty() && std::ptr::eq(row, &self.total) {
                "total".to_owned()
            } else {
                quote(&row.workspace)
            };
            out.push_str(&format!(
                "{workspace},{},{},{},{},{},{},{},{},{},{}\n",
                quote(&row.provider),
                quote(&row.model),
                row.requests,
                row.changed,
                row.newly_priced,
                row.unpriced,
                row.no_usage,
                row.old_total,
                row.new_total,
                row.delta
            ));
        }
        out
    }
}

fn add(row: &mut ReportRow, repriced: &Repriced) {
    row.requests += 1;
    match repriced {
        Repriced::Priced {
            old: Some(old),
            new,
        } => {
            if old != new {
                row.changed += 1;
            }
            row.old_total += old;
            row.new_total += new;
            row.delta += new - old;
        }
        Repriced::Priced { old: None, new } => {
            row.newly_priced += 1;
            row.new_total += new;
            row.delta += new;
        }
        Repriced::Unpriced(_) | Repriced::OtherCurrency => row.unpriced += 1,
        Repriced::NoUsage => row.no_usage += 1,
    }
}

/// Prices every request of `scope` in `log` again with `prices`, reading pages of
/// `page` requests, and reports what would change. Nothing is written.
pub async fn dry_run(
    log: &dyn RequestLog,
    scope: &RepricingScope,
    prices: &PriceTable,
    page: usize,
) -> Result<RepricingReport, BackendError> {
    let mut rows: BTreeMap<(String, String, String), ReportRow> = BTreeMap::new();
    let mut total = ReportRow::default();
    let mut after: Option<LogCursor> = None;
    loop {
        let batch = log.requests(scope, after.as_ref(), page.max(1)).await?;
        let Some(last) = batch.last() else { break };
        after = Some((last.event_time, last.request_id.clone()));
        for request in &batch {
            let repriced = reprice(request, prices);
            let key = (
                request.workspace.to_string(),
                request.provider.as_str().to_owned(),
                request.model.clone(),
            );
            let row = rows.entry(key.clone()).or_insert_with(|| ReportRow {
                workspace: key.0,
                provider: key.1,
                model: key.2,
                ..ReportRow::default()
            });
            add(row, &repriced);
            add(&mut total, &repriced);
        }
        if batch.len() < page.max(1) {
            break;
        }
    }
    Ok(RepricingReport {
        price_version: prices.version().to_owned(),
        currency: prices.currency().code().to_owned(),
        rows: rows.into_values().collect(),
        total,
    })
}

impl From<&crate::spend::SpendEvent> for LoggedRequest {
    fn from(event: &crate::spend::SpendEvent) -> LoggedRequest {
        let (_, price_version, _, _) = event.logged_pricing();
        LoggedRequest {
            request_id: event.request_id.clone(),
            event_time: event.event_time,
            org: event.attribution.who.org.clone(),
            workspace: event.attribution.who.workspace.clone(),
            provider: event.provider.clone(),
            model: event.model.clone(),
            billing_mode: event.billing_mode,
            usage: event.usage,
            cost: event.cost(),
            currency: event.currency(),
            price_version: price_version.map(str::to_owned),
        }
    }
}

#[async_trait]
impl RequestLog for crate::memory::MemoryStore {
    async fn requests(
        &self,
        scope: &RepricingScope,
        after: Option<&LogCursor>,
        limit: usize,
    ) -> Result<Vec<LoggedRequest>, BackendError> {
        let mut found: Vec<LoggedRequest> = self
            .logged_events()
            .iter()
            .map(LoggedRequest::from)
            .filter(|r| scope.covers(r))
            .filter(|r| after.is_none_or(|(t, id)| (r.event_time, &r.request_id) > (*t, id)))
            .collect();
        found.sort_by(|a, b| (a.event_time, &a.request_id).cmp(&(b.event_time, &b.request_id)));
        found.truncate(limit);
        Ok(found)
    }
}
