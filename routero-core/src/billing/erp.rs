//! ERP push: a finalised monthly invoice posted to NetSuite or Coupa, once.
//!
//! - [`netsuite_journal_entry`] maps an invoice to a NetSuite `journalentry` REST
//!   record: a debit per invoice line on the expense account (with the line's
//!   description as memo and an optional department), and one credit of the total on
//!   the payable account, dated the month's last day. It is sent as
//!   `PUT /services/rest/record/v1/journalentry/eid:routero-{number}`: NetSuite's
//!   upsert by external id, so a retried push updates the one record and never
//!   creates a second.
//! - [`coupa_invoice`] maps it to a Coupa supplier invoice (`POST /api/invoices`, one
//!   `InvoiceAmountLine` per line; Coupa's `/api/charges` is read-only). Coupa refuses
//!   a second invoice of the same number from the same supplier, so the push first
//!   asks (`GET /api/invoices?invoice-number=…&supplier[id]=…`) whether a retry's
//!   earlier attempt already landed.
//!
//! [`Pusher`] sends an [`ErpRequest`] through any [`ErpTransport`] (a small HTTP
//! client; `routero-http` has one on hyper) with an `Idempotency-Key` header, and
//! retries transport errors, 429 and 5xx with capped exponential backoff. Amounts
//! travel as exact JSON numbers (never through `f64`).

#[cfg(feature = "runtime")]
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::invoice::{Invoice, InvoiceStatus};

/// One call to an ERP.
#[derive(Debug, Clone, PartialEq)]
pub struct ErpRequest {
    /// `PUT` or `POST`.
    pub method: http::Method,
    /// The path, from the ERP's base URL.
    pub path: String,
    /// The key every attempt carries (`Idempotency-Key`).
    pub idempotency_key: String,
    /// The record.
    pub body: Value,
    /// A path whose `GET` answers a non-empty JSON array when the record already
    /// exists (for ERPs without an upsert).
    pub exists: Option<String>,
}

/// NetSuite's ids for the journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSuiteAccounts {
    /// The subsidiary's internal id.
    pub subsidiary: String,
    /// The expense account debited.
    pub expense_account: String,
    /// The payable account credited.
    pub payable_account: String,
    /// The currency's internal id, when not the subsidiary's.
    pub currency: Option<String>,
    /// The department the expense lines are tagged with.
    pub department: Option<String>,
}

/// Coupa's ids for the supplier invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoupaSupplier {
    /// The supplier's Coupa id.
    pub supplier_id: String,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErpError {
    /// Only a final (numbered, immutable) invoice is posted.
    #[error("the {month} invoice of {workspace} is not final")]
    NotFinal {
        /// The workspace.
        workspace: String,
        /// The month.
        month: String,
    },
    /// Nothing to post: every line is zero.
    #[error("the invoice has nothing to post")]
    Empty,
    /// The ERP refused the record (a 4xx other than 429): retrying will not help.
    #[error("the ERP refused the record with {status}: {body}")]
    Rejected {
        /// The status.
        status: u16,
        /// What it said.
        body: String,
    },
    /// Every attempt failed with a retryable error.
    #[error("gave up after {attempts} attempts; the last: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The ERP accepted the record, after this many attempts.
    Posted {
        /// Attempts made (1: the first).
        attempts: u32,
    },
    /// An earlier attempt had landed; nothing was posted again.
    AlreadyPosted,
}

/// An ERP's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpResponse {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// The HTTP client a [`Pusher`] speaks through.
#[async_trait::async_trait]
pub trait ErpTransport: std::fmt::Debug + Send + Sync {
    /// Sends one request; `Err` when no answer came (the connection failed or was cut).
    async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<ErpResponse, String>;
}

/// Pushes records with retries (feature `runtime`).
#[cfg(feature = "runtime")]
#[derive(Debug)]
pub struct Pusher<T> {
    transport: T,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// The first backoff; doubled per attempt up to `max_backoff`.
    pub backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

#[cfg(feature = "runtime")]
impl<T: ErpTransport> Pusher<T> {
    /// A pusher with 8 attempts, backing off from 200 ms to 10 s.
    pub fn new(transport: T) -> Pusher<T> {
        Pusher {
            transport,
            max_attempts: 8,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// Posts `request` once: retried until it lands, is refused, or the attempts run
    /// out. A retry after a lost answer never posts twice (the upsert, or the
    /// existence check).
    pub async fn push(&self, request: &ErpRequest) -> Result<PushOutcome, ErpError> {
        let body = request.body.to_string().into_bytes();
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("idempotency-key", request.idempotency_key.as_str()),
        ];
        let mut last = String::new();
        for attempt in 1..=self.max_attempts.max(1) {
            if attempt > 1 {
                let factor = 2u32.saturating_pow((attempt - 2).min(16));
                tokio::time::sleep(self.backoff.saturating_mul(factor).min(self.max_backoff)).await;
            }
            if let Some(path) = &request.exists {
                match self
                    .transport
                    .send(http::Method::GET, path, &headers[1..2], None)
                    .await
                {
                    Ok(r) if (200..300).contains(&r.status) => {
                        let found: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                        if found.as_array().is_some_and(|a| !a.is_empty()) {
                            return Ok(PushOutcome::AlreadyPosted);
                        }
                    }
                    Ok(r) if retryable(r.status) => {
                        last = format!("existence check answered {}", r.status);
                        continue;
                    }
                    Ok(r) => return Err(rejected(r)),
                    Err(e) => {
                        last = e;
                        continue;
                    }
                }
            }
            match self
                .transport
                .send(
                    request.method.clone(),
                    &request.path,
                    &headers,
                    Some(body.clone()),
                )
                .await
            {
                Ok(r) if (200..300).contains(&r.status) => {
                    return Ok(PushOutcome::Posted { attempts: attempt });
                }
                Ok(r) if retryable(r.status) => last = format!("answered {}", r.status),
                Ok(r) => return Err(rejected(r)),
                Err(e) => last = e,
            }
        }
        Err(ErpError::GaveUp {
            attempts: self.max_attempts.max(1),
            last,
        })
    }
}

#[cfg(feature = "runtime")]
fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

#[cfg(feature = "runtime")]
fn rejected(r: ErpResponse) -> ErpError {
    ErpError::Rejected {
        status: r.status,
        body: String::from_utf8_lossy(&r.body).into_owned(),
    }
}

/// An exact decimal as a JSON number.
fn exact(amount: Decimal) -> Value {
    // serde_json's arbitrary precision keeps the digits as written.
    serde_json::from_str(&amount.normalize().to_string()).unwrap_or(Value::Null)
}

fn final_number(invoice: &Invoice) -> Result<&str, ErpError> {
    match (&invoice.status, &invoice.number) {
        (InvoiceStatus::Final, Some(number)) => Ok(number),
        _ => Err(ErpError::NotFinal {
            workspace: invoice.workspace.to_string(),
            month: invoice.month.to_string(),
        }),
    }
}

fn last_day(invoice: &Invoice) -> String {
    invoice
        .month
        .next()
        .first_day()
        .and_then(|d| d.pred_opt())
        .map_or_else(String::new, |d: NaiveDate| d.to_string())
}

/// The NetSuite journal entry of a final invoice.
pub fn netsuite_journal_entry(
    invoice: &Invoice,
    accounts: &NetSuiteAccounts,
) -> Result<ErpRequest, ErpError> {
    let number = final_number(invoice)?;
    let mut items = Vec::new();
    for (line, amount) in invoice.billed_lines() {
        let mut item = json!({
            "account": { "id": accounts.expense_account },
            "debit": exact(amount),
            "memo": line.description,
        });
        if let Some(department) = &accounts.department {
            item["department"] = json!({ "id": department });
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(ErpError::Empty);
    }
    let memo = format!(
        "Routero invoice {number}: LLM usage of {} for {}",
        invoice.workspace, invoice.month
    );
    items.push(json!({
        "account": { "id": accounts.payable_account },
        "credit": exact(invoice.total),
        "memo": memo,
    }));
    let external_id = format!("routero-{number}");
    let mut body = json!({
        "externalId": external_id,
        "subsidiary": { "id": accounts.subsidiary },
        "tranDate": last_day(invoice),
        "memo": memo,
        "line": { "items": items },
    });
    if let Some(currency) = &accounts.currency {
        body["currency"] = json!({ "id": currency });
    }
    Ok(ErpRequest {
        method: http::Method::PUT,
        path: format!("/services/rest/record/v1/journalentry/eid:{external_id}"),
        idempotency_key: external_id,
        body,
        exists: None,
    })
}

/// The Coupa supplier invoice of a final invoice.
pub fn coupa_invoice(invoice: &Invoice, supplier: &CoupaSupplier) -> Result<ErpRequest, ErpError> {
    let number = final_number(invoice)?;
    let lines: Vec<Value> = invoice
        .billed_lines()
        .into_iter()
        .enumerate()
        .map(|(i, (line, amount))| {
            json!({
                "line-num": i + 1,
                "type": "InvoiceAmountLine",
                "description": line.description,
                "price": exact(amount),
                "total": exact(amount),
            })
        })
        .collect();
    if lines.is_empty() {
        return Err(ErpError::Empty);
    }
    let body = json!({
        "invoice-number": number,
        "invoice-date": last_day(invoice),
        "supplier": { "id": supplier.supplier_id },
        "currency": { "code": invoice.currency.code() },
        "invoice-lines": lines,
    });
    let query: String = form_query(&[
        ("invoice-number", number),
        ("supplier[id]", &supplier.supplier_id),
    ]);
    Ok(ErpRequest {
        method: http::Method::POST,
        path: "/api/invoices".to_owned(),
        idempotency_key: format!("routero-{number}"),
        body,
        exists: Some(format!("/api/invoices?{query}")),
    })
}

/// A percent-encoded query string.
fn form_query(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::new();
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
