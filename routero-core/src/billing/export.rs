//! Chargeback exports: a month of spend as CSV, for finance teams that allocate LLM
//! spend to cost centres.
//!
//! Two formats over the same rows, one per UTC day, workspace, team, API key, user,
//! customer, provider, model and billing mode:
//!
//! - [`ExportFormat::Chargeback`]: Routero's own columns, token counts per category and
//!   the exact cost;
//! - [`ExportFormat::Focus`]: a FinOps FOCUS 1.0 cost-and-usage file, the format cost
//!   tools read (mapping below).
//!
//! Both are RFC 4180 (the `csv` crate). An export is pulled a day at a time
//! ([`CsvExport::next_chunk`]): the reader is asked for one day's rows, they are
//! encoded and handed out, and the next day is read only when the previous chunk has
//! gone, so memory holds one day's rows, never the month. [`CsvExport::write_to`]
//! drains an export into any `io::Write`.
//!
//! **Unknown is not zero.** A row's cost is the exact sum of its priced requests;
//! `unpriced_requests` (FOCUS: `x_UnpricedRequests`) counts the requests that could
//! not be priced, whose tokens are in the row and whose cost is not.
//!
//! **FOCUS mapping.** `BillingAccountId`/`Name` = org, `SubAccountId`/`Name` =
//! workspace; `ChargeCategory` = `Usage`, `ChargeFrequency` = `Usage-Based`,
//! `ChargePeriodStart`/`End` = the UTC day, `BillingPeriodStart`/`End` = the month;
//! `BilledCost` = `EffectiveCost` = `ListCost` = `ContractedCost` = the cost (list
//! price, no discounts); `ProviderName`/`PublisherName`/`ServiceName` = the provider,
//! `SkuId`/`ResourceName` = the model, `ResourceId` = the API key;
//! `ConsumedQuantity`/`PricingQuantity` = all tokens, in `Tokens`;
//! `InvoiceIssuerName` = the export's issuer for managed spend and the provider for
//! bring-your-own-key spend (the provider bills it directly); `ServiceCategory` = `AI
//! and Machine Learning`; `Tags` = a JSON object of team, user, customer and billing
//! mode. Routero's dimensions follow in `x_`-prefixed columns, as FOCUS allows.

use std::io::Write;
use std::ops::Deref;

use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;

use crate::attribution::{OrgId, TeamId, WorkspaceId};
use crate::invoice::Month;
use crate::port::{BackendError, GroupBy, RollupFilter, RollupRow, SpendReader};

/// Which columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Routero's chargeback columns.
    Chargeback,
    /// FinOps FOCUS 1.0 cost and usage.
    Focus,
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// The org: an export never crosses it.
    pub org: OrgId,
    /// Only these workspaces (`None`: all of the org's).
    pub workspaces: Option<Vec<WorkspaceId>>,
    /// Only these teams (`None`: all).
    pub teams: Option<Vec<TeamId>>,
    /// The month.
    pub month: Month,
    /// The columns.
    pub format: ExportFormat,
    /// Who invoices managed spend (FOCUS `InvoiceIssuerName`).
    pub invoice_issuer: String,
}

/// What an export held, to check it against the analytics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Data rows written.
    pub rows: u64,
    /// Requests in them.
    pub requests: u64,
    /// Requests that could not be priced.
    pub unpriced_requests: u64,
    /// The exact cost of the priced requests, per currency (never added across).
    pub costs: std::collections::BTreeMap<crate::money::Currency, Decimal>,
}

impl ExportSummary {
    /// The cost in `currency` (zero when nothing was priced in it).
    pub fn cost(&self, currency: crate::money::Currency) -> Decimal {
        self.costs.get(&currency).copied().unwrap_or_default()
    }
}

/// A row's currency code; empty for a row of unpriced requests, which carries no money.
fn currency(row: &RollupRow) -> String {
    row.key
        .currency
        .map_or_else(String::new, |c| c.code().to_owned())
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The reader failed.
    #[error("reading the rollups: {0}")]
    Backend(#[from] BackendError),
    /// Encoding or writing failed.
    #[error("writing the CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Writing failed.
    #[error("writing the CSV: {0}")]
    Io(#[from] std::io::Error),
    /// The month is outside the calendar chrono knows.
    #[error("month {0} is out of range")]
    Month(Month),
    /// A sum overflowed.
    #[error("the export's totals overflow")]
    Overflow,
}

const CHARGEBACK_HEADER: [&str; 21] = [
    "date",
    "org",
    "workspace",
    "team",
    "api_key",
    "user",
    "customer",
    "provider",
    "model",
    "billing_mode",
    "requests",
    "failed_requests",
    "unpriced_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
    "currency",
];

const FOCUS_HEADER: [&str; 53] = [
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_Team",
    "x_ApiKey",
    "x_User",
    "x_Customer",
    "x_BillingMode",
    "x_InputTokens",
    "x_CacheReadTokens",
    "x_CacheWriteTokens",
    "x_OutputTokens",
    "x_Requests",
    "x_UnpricedRequests",
];

/// A month's export, pulled a day at a time from a reader handle `R`: a reference
/// (`&store`) or a shared pointer (`Arc<dyn SpendReader>`), so an export can outlive
/// the call that started it (a streamed HTTP body).
#[derive(Debug)]
pub struct CsvExport<R> {
    reader: R,
    request: ExportRequest,
    /// The next day to read; `None` when the month is done.
    next: Option<NaiveDate>,
    /// The first day after the month.
    end: NaiveDate,
    header_written: bool,
    summary: ExportSummary,
}

impl<R> CsvExport<R>
where
    R: Deref,
    R::Target: SpendReader,
{
    /// An export of `request` read from `reader`.
    pub fn new(reader: R, request: ExportRequest) -> Result<CsvExport<R>, ExportError> {
        let month = request.month;
        let first = month.first_day().ok_or(ExportError::Month(month))?;
        let end = month.next().first_day().ok_or(ExportError::Month(month))?;
        Ok(CsvExport {
            reader,
            request,
            next: Some(first),
            end,
            header_written: false,
            summary: ExportSummary::default(),
        })
    }

    /// The next piece of the file: the header with the first day's rows, then a
    /// day's rows per call (empty for a day without spend); `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ExportError> {
        let Some(day) = self.next else {
            return Ok(None);
        };
        let mut filter = RollupFilter::new(self.request.org.clone(), day, day);
        filter.workspaces = self.request.workspaces.clone();
        filter.teams = self.request.teams.clone();
        filter.group_by = GroupBy::ALL;
        let rows = self.reader.rollups(&filter).await?;
        let mut out = csv::Writer::from_writer(Vec::new());
        if !self.header_written {
            match self.request.format {
                ExportFormat::Chargeback => out.write_record(CHARGEBACK_HEADER)?,
                ExportFormat::Focus => out.write_record(FOCUS_HEADER)?,
            }
            self.header_written = true;
        }
        for row in &rows {
            self.count(row)?;
            match self.request.format {
                ExportFormat::Chargeback => out.write_record(self.chargeback(row))?,
                ExportFormat::Focus => out.write_record(self.focus(row))?,
            }
        }
        let next = day + Duration::days(1);
        self.next = (next < self.end).then_some(next);
        out.into_inner()
            .map(Some)
            .map_err(|e| ExportError::Io(e.into_error()))
    }

    /// Writes the whole export to `out`, a day at a time.
    pub async fn write_to<W: Write>(mut self, mut out: W) -> Result<ExportSummary, ExportError> {
        while let Some(chunk) = self.next_chunk().await? {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(self.summary)
    }

    /// What the chunks handed out so far held.
    pub fn summary(&self) -> &ExportSummary {
        &self.summary
    }

    fn count(&mut self, row: &RollupRow) -> Result<(), ExportError> {
        let t = &row.totals;
        let s = &mut self.summary;
        s.rows += 1;
        s.requests = s
            .requests
            .checked_add(t.requests())
            .ok_or(ExportError::Overflow)?;
        s.unpriced_requests = s
            .unpriced_requests
            .checked_add(t.unpriced)
            .ok_or(ExportError::Overflow)?;
        if let Some(currency) = row.key.currency {
            let sum = s.costs.entry(currency).or_default();
            *sum = sum.checked_add(t.cost).ok_or(ExportError::Overflow)?;
        }
        Ok(())
    }

    fn chargeback(&self, row: &RollupRow) -> Vec<String> {
        let (k, t) = (&row.key, &row.totals);
        vec![
            k.day.to_string(),
            self.request.org.to_string(),
            opt(&k.workspace),
            opt(&k.team),
            opt(&k.api_key),
            opt(&k.user),
            opt(&k.customer),
            opt(&k.provider),
            k.model.clone().unwrap_or_default(),
            k.billing_mode
                .map_or_else(String::new, |m| m.as_str().to_owned()),
            t.requests().to_string(),
            t.failures.to_string(),
            t.unpriced.to_string(),
            t.input_tokens.to_string(),
            t.cache_read_tokens.to_string(),
            t.cache_write_5m_tokens.to_string(),
            t.cache_write_1h_tokens.to_string(),
            t.output_tokens.to_string(),
            t.reasoning_tokens.to_string(),
            t.cost.to_string(),
            currency(row),
        ]
    }

    fn focus(&self, row: &RollupRow) -> Vec<String> {
        let (k, t) = (&row.key, &row.totals);
        let month = self.request.month;
        let period_start = month.first_day().map_or_else(String::new, timestamp);
        let period_end = timestamp(self.end);
        let org = self.request.org.to_string();
        let provider = opt(&k.provider);
        let model = k.model.clone().unwrap_or_default();
        let mode = k.billing_mode.map_or("", |m| m.as_str());
        let issuer = if mode == "byok" {
            provider.clone()
        } else {
            self.request.invoice_issuer.clone()
        };
        let tokens = t
            .prompt_tokens()
            .saturating_add(t.output_tokens)
            .to_string();
        let mut tags = serde_json::Map::new();
        for (name, value) in [
            ("team", opt(&k.team)),
            ("user", opt(&k.user)),
            ("customer", opt(&k.customer)),
            ("billing_mode", mode.to_owned()),
        ] {
            if !value.is_empty() {
                tags.insert(name.to_owned(), serde_json::Value::String(value));
            }
        }
        let cost = t.cost.to_string();
        let workspace = opt(&k.workspace);
        vec![
            cost.clone(),
            org.clone(),
            org,
            currency(row),
            period_end,
            period_start,
            "Usage".to_owned(),
            String::new(),
            format!("{model} tokens through {provider} on {}", k.day),
            "Usage-Based".to_owned(),
            timestamp(k.day + Duration::days(1)),
            timestamp(k.day),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            tokens.clone(),
            "Tokens".to_owned(),
            cost.clone(),
            String::new(),
            cost.clone(),
            issuer,
            cost,
            String::new(),
            "Standard".to_owned(),
            tokens,
            "Tokens".to_owned(),
            provider.clone(),
            provider.clone(),
            String::new(),
            String::new(),
            opt(&k.api_key),
            model.clone(),
            "Model".to_owned(),
            "AI and Machine Learning".to_owned(),
            provider,
            model,
            String::new(),
            workspace.clone(),
            workspace,
            serde_json::Value::Object(tags).to_string(),
            opt(&k.team),
            opt(&k.api_key),
            opt(&k.user),
            opt(&k.customer),
            mode.to_owned(),
            t.input_tokens.to_string(),
            t.cache_read_tokens.to_string(),
            t.cache_write_5m_tokens
                .saturating_add(t.cache_write_1h_tokens)
                .to_string(),
            t.output_tokens.to_string(),
            t.requests().to_string(),
            t.unpriced.to_string(),
        ]
    }
}

fn opt<T: std::fmt::Display>(value: &Option<T>) -> String {
    value.as_ref().map_or_else(String::new, ToString::to_string)
}

/// A day's start as FOCUS writes date-times (ISO 8601, UTC).
fn timestamp(day: NaiveDate) -> String {
    format!("{day}T00:00:00Z")
}
