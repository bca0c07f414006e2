//! The billing REST API as a framework-free service: an `http::Request<Bytes>` in, an
//! `http::Response<Bytes>` out, so any Rust gateway (hyper, axum, actix…) can mount it.
//!
//! The embedding gateway resolves the caller into a [`Principal`]; every query is
//! scoped by it. No principal: 401. Data of another org, or of a workspace or team the
//! principal may not see, is never returned and its existence is not revealed (404).
//! Errors are `application/problem+json` (RFC 9457) with stable type ids
//! ([`ProblemType`]). Money travels as decimal strings.
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /billing/principal` | who the caller is: org, visible workspaces and teams, role |
//! | `GET /billing/wallet?workspace=` | the wallet's balance and open lots |
//! | `GET /billing/wallets` | the wallets of every workspace the principal sees |
//! | `POST /billing/wallet/topup?workspace=` | a top-up: body `{"amount": 1000.00, "currency": "USD"}` |
//! | `POST /billing/wallet/refund?workspace=` | a refund (admin): body `{"amount": "25.00", "currency": "USD", "memo": "…"}` |
//! | `POST /billing/wallet/adjust?workspace=` | an adjustment (admin): body `{"amount": "5.00", "currency": "USD", "direction": "credit" or "debit", "memo": "…"}` |
//! | `GET /billing/transactions?workspace=&type=&start_date=&end_date=&cursor=&limit=` | ledger entries, newest first |
//! | `GET /billing/invoices?workspace=` | final invoices (without `workspace`: of every workspace the principal sees) |
//! | `GET /billing/invoices/{YYYY-MM}?workspace=[&format=csv]` | one month's invoice, JSON or CSV |
//! | `GET /billing/daily-spend?start_date=&end_date=&…filters` | spend per day |
//! | `GET /billing/spend-trend?start_date=&end_date=&…filters` | the range beside the period before |
//! | `GET /billing/overview?workspace=` | balance, month to date, projected month |
//! | `GET /{team,user,customer}/daily/activity?start_date=&end_date=&…` | LiteLLM's daily-activity shape |
//! | `GET /billing/export.csv?month=YYYY-MM[&format=focus][&workspace=][&team_ids=]` | the month's chargeback or FOCUS CSV ([`BillingApi::export`] streams it) |
//! | `POST /billing/repricings[?format=csv]` | reprice past spend (admin, [`BillingApi::with_repricing`]): body `{"start_date", "end_date", "workspace"?, "provider"?, "model"?, "billing_mode"?, "prices": "<price file>", "reason", "actor"?, "dry_run"?}`; a dry run's report, or the repricing applied (201) |
//! | `GET /billing/repricings` | the org's repricings, newest first (admin) |
//! | `GET /billing/repricings/{id}` | one repricing's audit record (admin) |
//!
//! Filters: `workspace`, `team_ids` (comma-separated), `api_key`, `user_id`,
//! `end_user_ids` (comma-separated), `provider`, `model`, `billing_mode`, `currency`;
//! pages: `page`, `page_size`. Analytics never add two currencies: every answer names
//! its currency, and spend in several currencies without `currency=` is a 400
//! (`mixed-currencies`). LiteLLM's `exclude_team_ids` and `exclude_end_user_ids` are refused
//! (400), not ignored. Wallet and invoice endpoints answer only for workspaces the
//! principal may see: those it lists, or for an org-wide principal (`workspaces:
//! None`) those the [`BillingDirectory`] configures for its org. `workspace` may be
//! left out when there is exactly one.
//!
//! **Money in.** Every amount follows one grammar ([`parse_amount`]): ASCII digits,
//! optionally a dot and 1 to the currency's minor-unit digits; no sign, exponent,
//! separator or white space. A JSON number is read by its literal text under the same
//! grammar, never through a float, so `1000.00` and `"1000.00"` are the same amount.
//! Currencies are upper-case ISO 4217 codes and must be the workspace's billing
//! currency. Anything else is 422 with the rule in its detail.
//!
//! **Idempotency.** A write may carry an `Idempotency-Key` header (1 to 128
//! characters). The first request with a key answers `201 Created`; a replay with the
//! same key and body answers `200 OK` with the first entry, `"replayed": true` and an
//! `Idempotent-Replayed: true` header, and changes nothing; the same key with another
//! body is 409. Without the header every request is a new write.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use http::{Method, Request, Response, StatusCode, header};
use routero_core::analytics::{self, AnalyticsError, Entity};
use routero_core::attribution::{
    ApiKeyId, BillingMode, CustomerId, OrgId, TeamId, UserId, WorkspaceId,
};
use routero_core::export::{CsvExport, ExportError, ExportFormat, ExportRequest};
use routero_core::invoice::{Billing, BillingDirectory, InvoiceError, InvoiceStore, Month};
use routero_core::money::{ExchangeRates, RateTable, parse_amount};
use routero_core::port::{BackendError, Clock, RollupFilter, SpendReader};
use routero_core::wallet::{EntryKind, TransactionQuery, WalletError, WalletWrite, Wallets};
use routero_core::{Currency, Provider};
use serde::Serialize;

mod repricing;

/// What the caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read and top up.
    Admin,
    /// Read only.
    Viewer,
}

/// The caller, as the embedding gateway resolved it (`GET /billing/principal` answers
/// it, so a front end knows which workspaces and teams to offer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The org: nothing outside it is ever visible.
    pub org: OrgId,
    /// The workspaces it may see (`None`: all of the org's).
    pub workspaces: Option<Vec<WorkspaceId>>,
    /// The teams it may see (`None`: all).
    pub teams: Option<Vec<TeamId>>,
    /// What it may do.
    pub role: Role,
}

/// The API's stable problem types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// No principal.
    Unauthorized,
    /// Not allowed for this principal's role.
    Forbidden,
    /// No such resource (or not visible to the principal).
    NotFound,
    /// A malformed parameter or body.
    BadRequest,
    /// A date that is not `YYYY-MM-DD`, or outside 2000-01-01..=9999-12-31.
    BadDate,
    /// A range whose start is after its end.
    DateOrder,
    /// A range longer than the configured maximum.
    RangeTooLong,
    /// A month that is not `YYYY-MM`, or not there.
    UnknownMonth,
    /// An idempotency key reused with another body.
    IdempotencyConflict,
    /// An invalid amount.
    InvalidAmount,
    /// A currency other than the wallet's.
    InvalidCurrency,
    /// Spend in several currencies, and no `currency` to choose one.
    MixedCurrencies,
    /// A request body over the host's limit (the host reads the body, so the host
    /// answers it, with [`ProblemType::response`]).
    PayloadTooLarge,
    /// A request body that did not arrive within the host's timeout (answered by the
    /// host, as [`ProblemType::PayloadTooLarge`]).
    RequestTimeout,
    /// A quarantined batch that was replayed or discarded before (the admin API).
    AlreadyReleased,
    /// A quarantined batch whose replay still fails; it stays quarantined (the admin
    /// API).
    ReplayFailed,
    /// A scheduled job's run that is neither failed nor refused, asked to be retried
    /// (the admin API).
    NotRetryable,
    /// A price file that does not load (a repricing's prices).
    InvalidPrices,
    /// The backend failed.
    Unavailable,
}

impl ProblemType {
    fn id(self) -> &'static str {
        match self {
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::Forbidden => "forbidden",
            ProblemType::NotFound => "not-found",
            ProblemType::BadRequest => "bad-request",
            ProblemType::BadDate => "bad-date",
            ProblemType::DateOrder => "date-order",
            ProblemType::RangeTooLong => "range-too-long",
            ProblemType::UnknownMonth => "unknown-month",
            ProblemType::IdempotencyConflict => "idempotency-conflict",
            ProblemType::InvalidAmount => "invalid-amount",
            ProblemType::InvalidCurrency => "invalid-currency",
            ProblemType::MixedCurrencies => "mixed-currencies",
            ProblemType::PayloadTooLarge => "payload-too-large",
            ProblemType::RequestTimeout => "request-timeout",
            ProblemType::AlreadyReleased => "already-released",
            ProblemType::ReplayFailed => "replay-failed",
            ProblemType::NotRetryable => "not-retryable",
            ProblemType::InvalidPrices => "invalid-prices",
            ProblemType::Unavailable => "unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ProblemType::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemType::Forbidden => StatusCode::FORBIDDEN,
            ProblemType::NotFound | ProblemType::UnknownMonth => StatusCode::NOT_FOUND,
            ProblemType::BadRequest
            | ProblemType::BadDate
            | ProblemType::DateOrder
            | ProblemType::RangeTooLong
            | ProblemType::MixedCurrencies => StatusCode::BAD_REQUEST,
            ProblemType::IdempotencyConflict
            | ProblemType::AlreadyReleased
            | ProblemType::NotRetryable => StatusCode::CONFLICT,
            ProblemType::InvalidAmount
            | ProblemType::InvalidCurrency
            | ProblemType::ReplayFailed
            | ProblemType::InvalidPrices => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemType::Unauthorized => "Authentication required",
            ProblemType::Forbidden => "Not allowed",
            ProblemType::NotFound => "Not found",
            ProblemType::BadRequest => "Bad request",
            ProblemType::BadDate => "Invalid date",
            ProblemType::DateOrder => "Start date after end date",
            ProblemType::RangeTooLong => "Date range too long",
            ProblemType::UnknownMonth => "Unknown month",
            ProblemType::IdempotencyConflict => "Idempotency key reused with another request",
            ProblemType::InvalidAmount => "Invalid amount",
            ProblemType::InvalidCurrency => "Invalid currency",
            ProblemType::MixedCurrencies => "Spend in several currencies",
            ProblemType::PayloadTooLarge => "Request body too large",
            ProblemType::RequestTimeout => "Request body too slow",
            ProblemType::AlreadyReleased => "Released before",
            ProblemType::ReplayFailed => "The batch still cannot be applied",
            ProblemType::NotRetryable => "The run is neither failed nor refused",
            ProblemType::InvalidPrices => "Invalid price file",
            ProblemType::Unavailable => "Temporarily unavailable",
        }
    }

    /// This problem as an `application/problem+json` response, for the answers a
    /// host gives before the request reaches [`BillingApi::handle`] (a body over its
    /// limit, say), so they look like the API's own.
    #[must_use]
    pub fn response(self, detail: impl Into<String>) -> Response<Bytes> {
        problem_response(&problem(self, detail))
    }
}

fn export_problem(e: ExportError) -> Problem {
    match e {
        ExportError::Backend(b) => b.into(),
        ExportError::Month(m) => problem(ProblemType::UnknownMonth, m.to_string()),
        other => problem(ProblemType::Unavailable, other.to_string()),
    }
}

fn csv_response<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    response
}

/// A streamed export's body: the header and a day's rows per data frame.
pub struct ExportBody {
    state: ExportState,
}

type Chunk = (
    CsvExport<Arc<dyn SpendReader>>,
    Result<Option<Vec<u8>>, ExportError>,
);

enum ExportState {
    Idle(CsvExport<Arc<dyn SpendReader>>),
    Reading(Pin<Box<dyn Future<Output = Chunk> + Send>>),
    Done,
}

impl std::fmt::Debug for ExportBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportBody").finish_non_exhaustive()
    }
}

impl http_body::Body for ExportBody {
    type Data = Bytes;
    type Error = ExportError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ExportError>>> {
        loop {
            match std::mem::replace(&mut self.state, ExportState::Done) {
                ExportState::Done => return Poll::Ready(None),
                ExportState::Idle(mut export) => {
                    self.state = ExportState::Reading(Box::pin(async move {
                        let chunk = export.next_chunk().await;
                        (export, chunk)
                    }));
                }
                ExportState::Reading(mut reading) => match reading.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = ExportState::Reading(reading);
                        return Poll::Pending;
                    }
                    Poll::Ready((_, Ok(None))) => return Poll::Ready(None),
                    Poll::Ready((_, Err(e))) => return Poll::Ready(Some(Err(e))),
                    // A day without spend: read the next.
                    Poll::Ready((export, Ok(Some(chunk)))) if chunk.is_empty() => {
                        self.state = ExportState::Idle(export);
                    }
                    Poll::Ready((export, Ok(Some(chunk)))) => {
                        self.state = ExportState::Idle(export);
                        return Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(chunk)))));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, ExportState::Done)
    }
}

/// A problem to answer with.
#[derive(Debug)]
struct Problem {
    kind: ProblemType,
    detail: String,
    /// RFC 9457 extension members (`currencies` of a mixed-currencies problem).
    extensions: serde_json::Map<String, serde_json::Value>,
}

fn problem(kind: ProblemType, detail: impl Into<String>) -> Problem {
    Problem {
        kind,
        detail: detail.into(),
        extensions: serde_json::Map::new(),
    }
}

impl From<BackendError> for Problem {
    fn from(e: BackendError) -> Self {
        problem(ProblemType::Unavailable, e.to_string())
    }
}

impl From<AnalyticsError> for Problem {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::MixedCurrencies(ref currencies) => {
                let codes: Vec<serde_json::Value> =
                    currencies.iter().map(|c| c.code().into()).collect();
                let mut p = problem(
                    ProblemType::MixedCurrencies,
                    format!("{e}: add currency= (for example currency=USD)"),
                );
                p.extensions.insert("currencies".into(), codes.into());
                p
            }
            AnalyticsError::Backend(b) => b.into(),
            other => problem(ProblemType::Unavailable, other.to_string()),
        }
    }
}

impl From<WalletError> for Problem {
    fn from(e: WalletError) -> Self {
        let kind = match &e {
            WalletError::InvalidAmount { .. } => ProblemType::InvalidAmount,
            WalletError::CurrencyMismatch { .. } => ProblemType::InvalidCurrency,
            WalletError::IdempotencyConflict { .. } => ProblemType::IdempotencyConflict,
            WalletError::Invalid(_) => ProblemType::BadRequest,
            _ => ProblemType::Unavailable,
        };
        problem(kind, e.to_string())
    }
}

impl From<InvoiceError> for Problem {
    fn from(e: InvoiceError) -> Self {
        match e {
            InvoiceError::Month(m) => problem(ProblemType::UnknownMonth, m),
            InvoiceError::Wallet(w) => w.into(),
            InvoiceError::MissingRate(m) => problem(
                ProblemType::Unavailable,
                format!("{m}: the invoice converts usage at the day's rate"),
            ),
            other => problem(ProblemType::Unavailable, other.to_string()),
        }
    }
}

/// The API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The longest date range a query may ask for, in days.
    pub max_range_days: i64,
    /// Each workspace's org, billing currency and plan.
    pub billing: BillingDirectory,
    /// What usage priced in another currency than a wallet's converts at on its
    /// invoice (the rates the drain debits at).
    pub rates: Arc<dyn ExchangeRates>,
    /// Who invoices managed spend, as FOCUS exports name it (`InvoiceIssuerName`).
    pub invoice_issuer: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_range_days: 366,
            billing: BillingDirectory::new(),
            rates: Arc::new(RateTable::new()),
            invoice_issuer: "Routero".to_owned(),
        }
    }
}

/// The billing API over the read port, the wallets and the invoices.
#[derive(Debug, Clone)]
pub struct BillingApi {
    reader: Arc<dyn SpendReader>,
    /// Where analytics and exports read ([`BillingApi::with_analytics_reader`]).
    analytics: Arc<dyn SpendReader>,
    wallets: Arc<dyn Wallets>,
    invoices: Arc<dyn InvoiceStore>,
    clock: Arc<dyn Clock>,
    config: ApiConfig,
    repricing: Option<repricing::RepricingPorts>,
}

type Query = HashMap<String, String>;

/// The query string's parameters, percent-decoded.
fn query_of(uri: &http::Uri) -> Query {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The principal, or the 401 problem.
fn authenticated(principal: Option<&Principal>) -> Result<&Principal, Problem> {
    principal.ok_or_else(|| problem(ProblemType::Unauthorized, "no principal for this request"))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Bytes> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        // The API's own types always serialise; should one not, say so rather than
        // answer an empty 200.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                r#"{{"title":"Internal error","status":500,"detail":"{}"}}"#,
                e.to_string().replace('"', "'")
            )
            .into_bytes(),
        ),
    };
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn problem_response(p: &Problem) -> Response<Bytes> {
    let mut body = serde_json::json!({
        "type": format!("https://routero.dev/problems/{}", p.kind.id()),
        "title": p.kind.title(),
        "status": p.kind.status().as_u16(),
        "detail": p.detail,
    });
    if let Some(object) = body.as_object_mut() {
        object.extend(p.extensions.clone());
    }
    let mut response = json(p.kind.status(), &body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The dates the API answers for, checked before any arithmetic on them: spend
/// cannot predate the service, and a year beyond 9999 is no calendar date.
const FIRST_DAY: NaiveDate = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a date");
const LAST_DAY: NaiveDate = NaiveDate::from_ymd_opt(9999, 12, 31).expect("a date");

fn date(query: &Query, name: &str) -> Result<Option<NaiveDate>, Problem> {
    query.get(name).map(|v| day(name, v)).transpose()
}

/// A `YYYY-MM-DD` day within the API's dates, `name` saying which in the problem.
fn day(name: &str, text: &str) -> Result<NaiveDate, Problem> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|d| (FIRST_DAY..=LAST_DAY).contains(d))
        .ok_or_else(|| {
            problem(
                ProblemType::BadDate,
                format!("{name} must be a YYYY-MM-DD date from {FIRST_DAY} to {LAST_DAY}"),
            )
        })
}

/// A range of days, in order and at most `max_days` long.
fn checked_range(from: NaiveDate, to: NaiveDate, max_days: i64) -> Result<(), Problem> {
    if from > to {
        return Err(problem(
            ProblemType::DateOrder,
            format!("{from} is after {to}"),
        ));
    }
    if (to - from).num_days() >= max_days {
        return Err(problem(
            ProblemType::RangeTooLong,
            format!("at most {max_days} days"),
        ));
    }
    Ok(())
}

/// A `YYYY-MM` month within the API's dates.
fn month(text: &str) -> Option<Month> {
    Month::parse(text).filter(|m| {
        m.days()
            .is_some_and(|(first, _)| (FIRST_DAY..=LAST_DAY).contains(&first))
    })
}

fn list<T>(
    query: &Query,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<Vec<T>>, Problem> {
    query
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.split(',')
                .map(|item| {
                    parse(item.trim())
                        .map_err(|e| problem(ProblemType::BadRequest, format!("{name}: {e}")))
                })
                .collect()
        })
        .transpose()
}

fn one<T>(
    query: &Query,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, Problem> {
    query
        .get(name)
        .map(|v| parse(v).map_err(|e| problem(ProblemType::BadRequest, format!("{name}: {e}"))))
        .transpose()
}

fn number(query: &Query, name: &str, default: u32, max: u32) -> Result<u32, Problem> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                problem(
                    ProblemType::BadRequest,
                    format!("{name} must be 1 to {max}"),
                )
            }),
    }
}

/// What a money-in request writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MoneyIn {
    TopUp,
    Refund,
    Adjust,
}

impl MoneyIn {
    fn doing(self) -> &'static str {
        match self {
            MoneyIn::TopUp => "topping up",
            MoneyIn::Refund => "a refund",
            MoneyIn::Adjust => "an adjustment",
        }
    }
}

/// The body of a top-up, refund or adjustment.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyBody {
    /// A JSON number or string, read by its text.
    amount: serde_json::Value,
    currency: String,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    memo: Option<String>,
}

impl BillingApi {
    /// An API over the ports.
    pub fn new(
        reader: Arc<dyn SpendReader>,
        wallets: Arc<dyn Wallets>,
        invoices: Arc<dyn InvoiceStore>,
        clock: Arc<dyn Clock>,
        config: ApiConfig,
    ) -> BillingApi {
        BillingApi {
            analytics: reader.clone(),
            reader,
            wallets,
            invoices,
            clock,
            config,
            repricing: None,
        }
    }

    /// The same API with its analytics (daily spend, trend, overview, activity) and
    /// CSV exports read from `reader`, typically a streaming replica
    /// (`routero_postgres::PgStore::reads`); invoices, wallets and repricings keep
    /// reading the reader given to [`new`](Self::new), which sees its own writes.
    #[must_use]
    pub fn with_analytics_reader(mut self, reader: Arc<dyn SpendReader>) -> BillingApi {
        self.analytics = reader;
        self
    }

    /// The same API answering `/billing/repricings` too: repricing the request log of
    /// `store`, the prices given layered over `prices` (those in force).
    #[must_use]
    pub fn with_repricing(
        mut self,
        store: Arc<dyn routero_core::reprice::Repricings>,
        prices: routero_core::price::LivePrices,
    ) -> BillingApi {
        self.repricing = Some(repricing::RepricingPorts { store, prices });
        self
    }

    /// Answers one request for `principal` (`None`: the caller is not authenticated).
    pub async fn handle(
        &self,
        principal: Option<&Principal>,
        request: Request<Bytes>,
    ) -> Response<Bytes> {
        let started = std::time::Instant::now();
        let route = crate::telemetry::api_route(request.uri().path());
        let response = match self.route(principal, request).await {
            Ok(response) => response,
            Err(p) => problem_response(&p),
        };
        crate::telemetry::observe(route, response.status(), started.elapsed());
        response
    }

    async fn route(
        &self,
        principal: Option<&Principal>,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, Problem> {
        let principal = authenticated(principal)?;
        let query = query_of(request.uri());
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let method = request.method().clone();
        match (method, path.as_str()) {
            (Method::GET, "/billing/principal") => Ok(json(StatusCode::OK, principal)),
            (Method::GET, "/billing/wallet") => self.wallet(principal, &query).await,
            (Method::GET, "/billing/wallets") => self.all_wallets(principal).await,
            (Method::POST, "/billing/wallet/topup") => {
                self.money_in(principal, &query, &request, MoneyIn::TopUp)
                    .await
            }
            (Method::POST, "/billing/wallet/refund") => {
                self.money_in(principal, &query, &request, MoneyIn::Refund)
                    .await
            }
            (Method::POST, "/billing/wallet/adjust") => {
                self.money_in(principal, &query, &request, MoneyIn::Adjust)
                    .await
            }
            (Method::GET, "/billing/transactions") => self.transactions(principal, &query).await,
            (Method::GET, "/billing/invoices") => self.invoices(principal, &query).await,
            (Method::GET, p) if p.starts_with("/billing/invoices/") => {
                self.invoice(principal, &query, &p["/billing/invoices/".len()..])
                    .await
            }
            (Method::GET, "/billing/daily-spend") => {
                let filter = self.filter(principal, &query, true)?;
                Ok(json(
                    StatusCode::OK,
                    &analytics::daily_spend(&*self.analytics, &filter).await?,
                ))
            }
            (Method::GET, "/billing/spend-trend") => {
                let filter = self.filter(principal, &query, true)?;
                Ok(json(
                    StatusCode::OK,
                    &analytics::spend_trend(&*self.analytics, &filter).await?,
                ))
            }
            (Method::GET, "/billing/overview") => self.overview(principal, &query).await,
            (Method::POST, "/billing/repricings") => {
                self.reprice(principal, &query, &request).await
            }
            (Method::GET, "/billing/repricings") => self.repricings(principal).await,
            (Method::GET, p) if p.starts_with("/billing/repricings/") => {
                self.repricing(principal, &p["/billing/repricings/".len()..])
                    .await
            }
            (Method::GET, "/billing/export.csv") => {
                // Buffered here; `BillingApi::export` streams the same file.
                let mut export = self.csv_export(principal, &query)?;
                let mut file = Vec::new();
                while let Some(chunk) = export.next_chunk().await.map_err(export_problem)? {
                    file.extend_from_slice(&chunk);
                }
                Ok(csv_response(Bytes::from(file)))
            }
            (Method::GET, "/team/daily/activity") => {
                self.activity(principal, &query, Entity::Team, 10).await
            }
            (Method::GET, "/user/daily/activity") => {
                self.activity(principal, &query, Entity::User, 50).await
            }
            (Method::GET, "/customer/daily/activity" | "/end_user/daily/activity") => {
                self.activity(principal, &query, Entity::Customer, 10).await
            }
            _ => Err(problem(
                ProblemType::NotFound,
                format!("no {} {path}", request.method()),
            )),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// `GET /billing/export.csv` streamed: the month's export a day per body frame, so
    /// a month of millions of rows never sits in memory. Any other request, or a
    /// refused one, gets `Err` with the answer [`handle`](Self::handle) would give.
    pub async fn export<B>(
        &self,
        principal: Option<&Principal>,
        request: &Request<B>,
    ) -> Result<Response<ExportBody>, Response<Bytes>> {
        let started = std::time::Instant::now();
        let answer = self.export_unobserved(principal, request).await;
        let status = match &answer {
            Ok(r) => r.status(),
            Err(r) => r.status(),
        };
        crate::telemetry::observe(
            crate::telemetry::api_route(request.uri().path()),
            status,
            started.elapsed(),
        );
        answer
    }

    async fn export_unobserved<B>(
        &self,
        principal: Option<&Principal>,
        request: &Request<B>,
    ) -> Result<Response<ExportBody>, Response<Bytes>> {
        let principal = authenticated(principal).map_err(|p| problem_response(&p))?;
        if request.method() != Method::GET
            || request.uri().path().trim_end_matches('/') != "/billing/export.csv"
        {
            return Err(problem_response(&problem(
                ProblemType::NotFound,
                format!("no {} {}", request.method(), request.uri().path()),
            )));
        }
        let query = query_of(request.uri());
        let export = self
            .csv_export(principal, &query)
            .map_err(|p| problem_response(&p))?;
        Ok(csv_response(ExportBody {
            state: ExportState::Idle(export),
        }))
    }

    /// The export a query asks for: `month` (`YYYY-MM`), `format` (`chargeback`, the
    /// default, or `focus`), and the `workspace` and `team_ids` scoping of the
    /// analytics.
    fn csv_export(
        &self,
        principal: &Principal,
        query: &Query,
    ) -> Result<CsvExport<Arc<dyn SpendReader>>, Problem> {
        let month = query
            .get("month")
            .and_then(|m| month(m))
            .ok_or_else(|| problem(ProblemType::UnknownMonth, "month=YYYY-MM is required"))?;
        let format = match query.get("format").map(String::as_str) {
            None | Some("chargeback") => ExportFormat::Chargeback,
            Some("focus") => ExportFormat::Focus,
            Some(other) => {
                return Err(problem(
                    ProblemType::BadRequest,
                    format!("format {other:?}: chargeback or focus"),
                ));
            }
        };
        let scope = self.filter(principal, query, false)?;
        CsvExport::new(
            self.analytics.clone(),
            ExportRequest {
                org: principal.org.clone(),
                workspaces: scope.workspaces,
                teams: scope.teams,
                month,
                format,
                invoice_issuer: self.config.invoice_issuer.clone(),
            },
        )
        .map_err(export_problem)
    }

    /// The workspaces whose wallets and invoices the principal may see: those it lists,
    /// or for an org-wide principal those the billing directory configures for its org.
    fn visible(&self, principal: &Principal) -> Vec<WorkspaceId> {
        match &principal.workspaces {
            Some(list) => list.clone(),
            None => self
                .config
                .billing
                .workspaces_of(&principal.org)
                .cloned()
                .collect(),
        }
    }

    /// The workspace a wallet or invoice request is about: the `workspace` parameter, or
    /// the only workspace the principal sees. Wallets are kept by workspace, so it must
    /// be one the principal may see; any other is "not found".
    fn workspace(&self, principal: &Principal, query: &Query) -> Result<WorkspaceId, Problem> {
        let named = one(query, "workspace", |v| {
            WorkspaceId::new(v).map_err(|e| e.to_string())
        })?;
        let visible = self.visible(principal);
        let workspace = match named {
            Some(w) => w,
            None if visible.len() == 1 => visible[0].clone(),
            None if visible.is_empty() => {
                return Err(problem(
                    ProblemType::NotFound,
                    "this principal sees no workspace with a wallet",
                ));
            }
            None => {
                let names: Vec<&str> = visible.iter().map(WorkspaceId::as_str).collect();
                return Err(problem(
                    ProblemType::BadRequest,
                    format!(
                        "workspace is required: this principal sees {} workspaces ({}); name one with ?workspace=",
                        visible.len(),
                        names.join(", ")
                    ),
                ));
            }
        };
        if !visible.contains(&workspace) {
            return Err(problem(ProblemType::NotFound, "no such workspace"));
        }
        Ok(workspace)
    }

    /// A rollup filter from the query, scoped to the principal.
    fn filter(
        &self,
        principal: &Principal,
        query: &Query,
        month_to_date_by_default: bool,
    ) -> Result<RollupFilter, Problem> {
        for name in ["exclude_team_ids", "exclude_end_user_ids"] {
            if query.contains_key(name) {
                return Err(problem(
                    ProblemType::BadRequest,
                    format!("{name} is not supported"),
                ));
            }
        }
        let today = self.now().date_naive();
        let from = date(query, "start_date")?;
        let to = date(query, "end_date")?;
        let (from, to) = match (from, to) {
            (Some(f), Some(t)) => (f, t),
            // A bare analytics request (`GET /billing/daily-spend`) is about the month
            // to date, as the dashboard opens on it.
            (None, None) if month_to_date_by_default => (today.with_day(1).unwrap_or(today), today),
            _ if month_to_date_by_default => {
                return Err(problem(
                    ProblemType::BadDate,
                    "start_date and end_date go together (leave both out for the month to date)",
                ));
            }
            _ => (today, today),
        };
        checked_range(from, to, self.config.max_range_days)?;
        let mut filter = RollupFilter::new(principal.org.clone(), from, to);
        filter.workspaces = principal.workspaces.clone();
        if let Some(w) = one(query, "workspace", |v| {
            WorkspaceId::new(v).map_err(|e| e.to_string())
        })? {
            if principal
                .workspaces
                .as_ref()
                .is_some_and(|list| !list.contains(&w))
            {
                return Err(problem(ProblemType::NotFound, "no such workspace"));
            }
            filter.workspaces = Some(vec![w]);
        }
        let teams = list(query, "team_ids", |v| {
            TeamId::new(v).map_err(|e| e.to_string())
        })?;
        filter.teams = match (teams, &principal.teams) {
            // Teams the principal may not see simply match nothing.
            (Some(asked), Some(visible)) => {
                Some(asked.into_iter().filter(|t| visible.contains(t)).collect())
            }
            (Some(asked), None) => Some(asked),
            (None, visible) => visible.clone(),
        };
        filter.api_key = one(query, "api_key", |v| {
            ApiKeyId::new(v).map_err(|e| e.to_string())
        })?;
        filter.user = one(query, "user_id", |v| {
            UserId::new(v).map_err(|e| e.to_string())
        })?;
        filter.customers = list(query, "end_user_ids", |v| {
            CustomerId::new(v).map_err(|e| e.to_string())
        })?;
        filter.provider = one(query, "provider", |v| {
            Provider::parse(v).map_err(|e| e.to_string())
        })?;
        filter.model = query.get("model").cloned();
        filter.billing_mode = one(query, "billing_mode", |v| v.parse::<BillingMode>())?;
        filter.currency = query
            .get("currency")
            .map(|c| {
                c.parse::<Currency>()
                    .map_err(|e| problem(ProblemType::InvalidCurrency, e.to_string()))
            })
            .transpose()?;
        Ok(filter)
    }

    async fn wallet(
        &self,
        principal: &Principal,
        query: &Query,
    ) -> Result<Response<Bytes>, Problem> {
        let workspace = self.workspace(principal, query)?;
        Ok(json(
            StatusCode::OK,
            &self.wallets.balance(&workspace, self.now()).await?,
        ))
    }

    async fn all_wallets(&self, principal: &Principal) -> Result<Response<Bytes>, Problem> {
        let now = self.now();
        let mut wallets = Vec::new();
        for workspace in self.visible(principal) {
            wallets.push(self.wallets.balance(&workspace, now).await?);
        }
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "wallets": wallets }),
        ))
    }

    /// A top-up, refund or adjustment: admin only, the money grammar, the workspace's
    /// currency, an optional idempotency key.
    async fn money_in(
        &self,
        principal: &Principal,
        query: &Query,
        request: &Request<Bytes>,
        what: MoneyIn,
    ) -> Result<Response<Bytes>, Problem> {
        if principal.role != Role::Admin {
            return Err(problem(
                ProblemType::Forbidden,
                format!("{} needs the admin role", what.doing()),
            ));
        }
        let workspace = self.workspace(principal, query)?;
        let key = match request.headers().get("idempotency-key") {
            None => format!("auto-{}", uuid::Uuid::new_v4().simple()),
            Some(v) => v
                .to_str()
                .map_err(|_| {
                    problem(
                        ProblemType::BadRequest,
                        "the Idempotency-Key header must be visible ASCII",
                    )
                })?
                .to_owned(),
        };
        let body: MoneyBody = serde_json::from_slice(request.body())
            .map_err(|e| problem(ProblemType::BadRequest, format!("body: {e}")))?;
        let expected = self.config.billing.currency(&workspace);
        let currency: Currency =
            body.currency
                .parse()
                .map_err(|e: routero_core::money::UnknownCurrency| {
                    problem(ProblemType::InvalidCurrency, e.to_string())
                })?;
        if currency != expected {
            return Err(problem(
                ProblemType::InvalidCurrency,
                format!("{workspace} is billed in {expected}, not {currency}"),
            ));
        }
        let text = match &body.amount {
            serde_json::Value::String(s) => s.clone(),
            // `arbitrary_precision`: the number's literal text, never a float.
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(problem(
                    ProblemType::InvalidAmount,
                    format!("amount must be a JSON number or string, not {other}"),
                ));
            }
        };
        let amount = parse_amount(&text, currency)
            .map_err(|e| problem(ProblemType::InvalidAmount, e.to_string()))?;
        let memo = body.memo.as_deref().map(str::trim).unwrap_or_default();
        let write = match what {
            MoneyIn::TopUp => {
                if body.direction.is_some() || body.memo.is_some() {
                    return Err(problem(
                        ProblemType::BadRequest,
                        "a top-up takes only amount and currency",
                    ));
                }
                WalletWrite::top_up(amount, currency)?
            }
            MoneyIn::Refund | MoneyIn::Adjust => {
                if memo.is_empty() || memo.chars().count() > 500 {
                    return Err(problem(
                        ProblemType::BadRequest,
                        format!("{} needs a memo of 1 to 500 characters", what.doing()),
                    ));
                }
                let (kind, signed) = match (what, body.direction.as_deref()) {
                    (MoneyIn::Refund, None) => (EntryKind::Refund, amount),
                    (MoneyIn::Adjust, Some("credit")) => (EntryKind::Adjustment, amount),
                    (MoneyIn::Adjust, Some("debit")) => (EntryKind::Adjustment, -amount),
                    (MoneyIn::Refund, Some(_)) => {
                        return Err(problem(
                            ProblemType::BadRequest,
                            "a refund is always a credit: leave out direction",
                        ));
                    }
                    _ => {
                        return Err(problem(
                            ProblemType::BadRequest,
                            "direction must be \"credit\" or \"debit\"",
                        ));
                    }
                };
                WalletWrite::adjustment(kind, signed, currency, memo)?
            }
        };
        self.wallets.open(&workspace, currency).await?;
        let written = self
            .wallets
            .write(&workspace, currency, &write, &key, self.now())
            .await?;
        let status = if written.replayed {
            StatusCode::OK
        } else {
            crate::telemetry::money_in(
                match what {
                    MoneyIn::TopUp => "top_up",
                    MoneyIn::Refund => "refund",
                    MoneyIn::Adjust => "adjustment",
                },
                currency.code(),
            );
            StatusCode::CREATED
        };
        let mut response = json(status, &written);
        if written.replayed {
            response.headers_mut().insert(
                "idempotent-replayed",
                header::HeaderValue::from_static("true"),
            );
        }
        Ok(response)
    }

    async fn transactions(
        &self,
        principal: &Principal,
        query: &Query,
    ) -> Result<Response<Bytes>, Problem> {
        let workspace = self.workspace(principal, query)?;
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let kinds = list(query, "type", |v| {
            EntryKind::parse(v).ok_or_else(|| format!("unknown entry type {v:?}"))
        })?;
        let (from, to) = (date(query, "start_date")?, date(query, "end_date")?);
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(problem(
                ProblemType::DateOrder,
                format!("{from} is after {to}"),
            ));
        }
        let request = TransactionQuery {
            kinds,
            from: from.and_then(midnight),
            to: to.and_then(|d| d.succ_opt()).and_then(midnight),
            before: one(query, "cursor", |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|c| i64::try_from(*c).is_ok())
                    .ok_or_else(|| format!("must be a whole number from 0 to {}", i64::MAX))
            })?,
            limit: usize::try_from(number(query, "limit", 50, 1_000)?).unwrap_or(50),
        };
        Ok(json(
            StatusCode::OK,
            &self.wallets.transactions(&workspace, &request).await?,
        ))
    }

    fn billing(&self) -> Billing<'_> {
        Billing {
            reader: &*self.reader,
            wallets: &*self.wallets,
            invoices: &*self.invoices,
            rates: &*self.config.rates,
        }
    }

    async fn invoices(
        &self,
        principal: &Principal,
        query: &Query,
    ) -> Result<Response<Bytes>, Problem> {
        let workspaces = if query.contains_key("workspace") || self.visible(principal).len() == 1 {
            vec![self.workspace(principal, query)?]
        } else {
            self.visible(principal)
        };
        let mut invoices = Vec::new();
        for workspace in workspaces {
            invoices.extend(self.invoices.finalized(&workspace).await?);
        }
        Ok(json(StatusCode::OK, &invoices))
    }

    async fn invoice(
        &self,
        principal: &Principal,
        query: &Query,
        month: &str,
    ) -> Result<Response<Bytes>, Problem> {
        let workspace = self.workspace(principal, query)?;
        let month = self::month(month).ok_or_else(|| {
            problem(
                ProblemType::UnknownMonth,
                format!("expected YYYY-MM from {FIRST_DAY} to {LAST_DAY}"),
            )
        })?;
        let plan = self.config.billing.plan(&workspace);
        let invoice = self
            .billing()
            .invoice(&principal.org, &workspace, month, plan, self.now())
            .await?;
        match query.get("format").map(String::as_str) {
            None | Some("json") => Ok(json(StatusCode::OK, &invoice)),
            Some("csv") => Ok(csv_response(Bytes::from(invoice.to_csv()))),
            Some(other) => Err(problem(
                ProblemType::BadRequest,
                format!("format {other:?}: json or csv"),
            )),
        }
    }

    async fn overview(
        &self,
        principal: &Principal,
        query: &Query,
    ) -> Result<Response<Bytes>, Problem> {
        let workspace = self.workspace(principal, query)?;
        let mut filter = self.filter(principal, query, false)?;
        filter.workspaces = Some(vec![workspace.clone()]);
        let now = self.now();
        let overview = analytics::overview(&*self.analytics, &filter, now.date_naive()).await?;
        let balance = self.wallets.balance(&workspace, now).await?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "workspace": workspace,
                "currency": balance.currency,
                "spend_currency": overview.currency,
                "balance": balance.balance.to_string(),
                "month_to_date": overview.month_to_date.to_string(),
                "managed_month_to_date": overview.managed_month_to_date.to_string(),
                "byok_month_to_date": overview.byok_month_to_date.to_string(),
                "projected_month": overview.projected_month.to_string(),
                "days_elapsed": overview.days_elapsed,
                "days_in_month": overview.days_in_month,
            }),
        ))
    }

    async fn activity(
        &self,
        principal: &Principal,
        query: &Query,
        entity: Entity,
        default_page_size: u32,
    ) -> Result<Response<Bytes>, Problem> {
        let filter = self.filter(principal, query, true)?;
        let page = number(query, "page", 1, u32::MAX)?;
        let page_size = number(query, "page_size", default_page_size, 1_000)?;
        let activity =
            analytics::daily_activity(&*self.analytics, &filter, entity, page, page_size).await?;
        let totals = activity.totals;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "results": activity.results,
                "metadata": {
                    "currency": activity.currency,
                    "total_spend": totals.spend.to_string(),
                    "total_prompt_tokens": totals.prompt_tokens,
                    "total_completion_tokens": totals.completion_tokens,
                    "total_tokens": totals.total_tokens,
                    "total_api_requests": totals.api_requests,
                    "total_successful_requests": totals.successful_requests,
                    "total_failed_requests": totals.failed_requests,
                    "total_cache_read_input_tokens": totals.cache_read_input_tokens,
                    "total_cache_creation_input_tokens": totals.cache_creation_input_tokens,
                    "page": activity.page,
                    "total_pages": activity.total_pages,
                    "has_more": activity.has_more,
                }
            }),
        ))
    }
}
