//! Spend events, the batches that carry them, and the daily rollups they add up to.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::attribution::{Attribution, BillingMode, Dimensions, OrgId, RequestId};
use crate::cost::{Cost, CostError};
use crate::extract::{ExtractError, Extraction};
use crate::money::Currency;
use crate::price::PriceTable;
use crate::provider::Provider;
use crate::usage::Usage;

/// Whether the provider served the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A response came back.
    Success,
    /// The request failed (it may still have consumed, and been billed, tokens).
    Failure,
}

/// What a request cost, or why that is not known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Pricing {
    /// Priced exactly.
    Priced {
        /// The exact cost.
        #[serde(with = "rust_decimal::serde::str")]
        cost: Decimal,
        /// Its currency.
        currency: Currency,
        /// The price table version that priced it.
        price_version: Arc<str>,
        /// The model whose price applied (after normalisation).
        priced_model: Arc<str>,
    },
    /// Not priced: an unknown model, a usage the price cannot price, or no usage at
    /// all. Kept with its reason so it can be repriced later; never counted as zero.
    Unpriced {
        /// Why, typed (stored as its stable code).
        reason: UnpricedReason,
        /// The error's words, for a person.
        detail: String,
    },
}

/// Why a request has no price. Stored and sent as its stable code
/// ([`as_str`](Self::as_str)); the error's words travel beside it as a detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnpricedReason {
    /// The response was not what its provider sends.
    MalformedResponse,
    /// The response (or the stream) reported no usage.
    NoUsage,
    /// The usage reported is impossible (negative, absurd, a part larger than its whole).
    InvalidUsage,
    /// Served on a tier that is not priced per token (scale, provisioned throughput).
    UnpricedTier,
    /// No price for the model, under its provider or any fall-back.
    UnknownModel,
    /// The model's price starts after the request.
    NoPriceInForce,
    /// No price for the service tier the request was served on.
    UnsupportedServiceTier,
    /// The usage consumed a category the model has no rate for.
    MissingRate,
    /// The cost is beyond the exact decimal range.
    Overflow,
    /// A reason recorded before reasons were typed; its words are the detail.
    Other,
}

impl UnpricedReason {
    /// Every reason.
    pub const ALL: [UnpricedReason; 10] = [
        UnpricedReason::MalformedResponse,
        UnpricedReason::NoUsage,
        UnpricedReason::InvalidUsage,
        UnpricedReason::UnpricedTier,
        UnpricedReason::UnknownModel,
        UnpricedReason::NoPriceInForce,
        UnpricedReason::UnsupportedServiceTier,
        UnpricedReason::MissingRate,
        UnpricedReason::Overflow,
        UnpricedReason::Other,
    ];

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            UnpricedReason::MalformedResponse => "malformed_response",
            UnpricedReason::NoUsage => "no_usage",
            UnpricedReason::InvalidUsage => "invalid_usage",
            UnpricedReason::UnpricedTier => "unpriced_tier",
            UnpricedReason::UnknownModel => "unknown_model",
            UnpricedReason::NoPriceInForce => "no_price_in_force",
            UnpricedReason::UnsupportedServiceTier => "unsupported_service_tier",
            UnpricedReason::MissingRate => "missing_rate",
            UnpricedReason::Overflow => "overflow",
            UnpricedReason::Other => "other",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Option<UnpricedReason> {
        UnpricedReason::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

impl fmt::Display for UnpricedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<&ExtractError> for UnpricedReason {
    fn from(e: &ExtractError) -> UnpricedReason {
        match e {
            ExtractError::Malformed { .. } => UnpricedReason::MalformedResponse,
            ExtractError::NoUsage { .. } => UnpricedReason::NoUsage,
            ExtractError::InvalidUsage { .. } => UnpricedReason::InvalidUsage,
            ExtractError::UnpricedTier { .. } => UnpricedReason::UnpricedTier,
        }
    }
}

impl From<&CostError> for UnpricedReason {
    fn from(e: &CostError) -> UnpricedReason {
        match e {
            CostError::UnknownModel { .. } => UnpricedReason::UnknownModel,
            CostError::NoPriceInForce { .. } => UnpricedReason::NoPriceInForce,
            CostError::UnsupportedServiceTier { .. } => UnpricedReason::UnsupportedServiceTier,
            CostError::MissingRate { .. } => UnpricedReason::MissingRate,
            CostError::InvalidUsage(_) => UnpricedReason::InvalidUsage,
            CostError::Overflow => UnpricedReason::Overflow,
        }
    }
}

/// What a gateway knows of a request before its response: its id and time, who
/// spends, how it is billed, the provider it went to and the model it asked for. With
/// the response, [`price`](Self::price) (or [`price_body`](Self::price_body),
/// [`price_stream`](Self::price_stream)) makes its spend event in one step: priced, or
/// unpriced with its typed reason — never a silent zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The request's id.
    pub request_id: RequestId,
    /// When it was made: the time its price is looked up at and its rollup day.
    pub at: DateTime<Utc>,
    /// Who spends.
    pub attribution: Attribution,
    /// How it is billed.
    pub billing_mode: BillingMode,
    /// The provider it went to.
    pub provider: Provider,
    /// The model the request asked for (priced when the response names none).
    pub model: String,
}

/// A request's spend: the event to record and, when priced, the cost with its lines
/// (what the response headers carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered {
    /// The event: priced, or unpriced with its reason.
    pub event: SpendEvent,
    /// The cost, when priced.
    pub cost: Option<Cost>,
}

impl RequestContext {
    /// A managed request (see [`byok`](Self::byok)).
    pub fn new(
        request_id: RequestId,
        at: DateTime<Utc>,
        attribution: Attribution,
        provider: Provider,
        model: impl Into<String>,
    ) -> RequestContext {
        RequestContext {
            request_id,
            at,
            attribution,
            billing_mode: BillingMode::Managed,
            provider,
            model: model.into(),
        }
    }

    /// The same request, billed as `mode` (as a [`BillingPolicy`](crate::attribution::BillingPolicy) decides).
    pub fn with_billing_mode(mut self, mode: BillingMode) -> RequestContext {
        self.billing_mode = mode;
        self
    }

    /// The same request, bring-your-own-key: tracked, not charged.
    pub fn byok(self) -> RequestContext {
        self.with_billing_mode(BillingMode::Byok)
    }

    /// Prices what the response said: at the model the response names, else the one
    /// the request asked for. An extraction error or a pricing error makes the event
    /// unpriced with its reason, keeping whatever usage was known.
    pub fn price(
        &self,
        prices: &PriceTable,
        extraction: Result<Extraction, ExtractError>,
    ) -> Metered {
        let (model, usage, cost) = match extraction {
            Ok(e) => {
                let model = e.model.unwrap_or_else(|| self.model.clone());
                let cost = prices
                    .cost(&self.provider, &model, &e.usage, self.at)
                    .map_err(|err| ((&err).into(), err.to_string()));
                (model, Some(e.usage), cost)
            }
            Err(err) => (
                self.model.clone(),
                None,
                Err(((&err).into(), err.to_string())),
            ),
        };
        let pricing = match &cost {
            Ok(cost) => Pricing::Priced {
                // Without trailing zeros: `0.00036`, never `0.000360000`.
                cost: cost.total().normalize(),
                currency: cost.currency(),
                price_version: Arc::from(cost.price_version()),
                priced_model: Arc::from(cost.priced_model()),
            },
            Err((reason, detail)) => Pricing::Unpriced {
                reason: *reason,
                detail: detail.clone(),
            },
        };
        let event = SpendEvent {
            request_id: self.request_id.clone(),
            event_time: self.at,
            attribution: self.attribution.clone(),
            provider: self.provider.clone(),
            model,
            usage: cost.as_ref().map_or(usage, |c| Some(*c.usage())),
            pricing,
            billing_mode: self.billing_mode,
            outcome: Outcome::Success,
            partial: false,
        };
        Metered {
            event,
            cost: cost.ok(),
        }
    }

    /// Prices a whole response body (JSON), with its headers (some providers report
    /// usage there).
    pub fn price_body(
        &self,
        prices: &PriceTable,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Metered {
        self.price(
            prices,
            crate::extract::from_body(&self.provider, body, headers),
        )
    }

    /// Prices a stream fed to its end into `stream`; with `complete` false (the
    /// client went away first), the event is the known part, marked partial.
    pub fn price_stream(
        &self,
        prices: &PriceTable,
        stream: crate::extract::StreamExtractor,
        complete: bool,
    ) -> Metered {
        let mut metered = self.price(prices, stream.finish());
        metered.event.partial = !complete;
        metered
    }
}

/// One request's spend, as the gateway records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendEvent {
    /// The request's id: recording the same id twice is the caller's bug, and the
    /// request-level log refuses it.
    pub request_id: RequestId,
    /// When the request happened (its rollup day is this instant's UTC date).
    pub event_time: DateTime<Utc>,
    /// Who spent.
    pub attribution: Attribution,
    /// The provider that served it.
    pub provider: Provider,
    /// The model the response (or the request) named.
    pub model: String,
    /// What it consumed; `None` when the usage is unknown.
    pub usage: Option<Usage>,
    /// What it cost.
    pub pricing: Pricing,
    /// How it is billed.
    pub billing_mode: BillingMode,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// A stream cut short: the usage is what was known when it ended.
    #[serde(default)]
    pub partial: bool,
}

impl SpendEvent {
    /// The spend of a request that could not be priced, with its reason and the
    /// error's words.
    pub fn unpriced(
        context: &RequestContext,
        usage: Option<Usage>,
        reason: UnpricedReason,
        detail: impl fmt::Display,
    ) -> SpendEvent {
        SpendEvent {
            request_id: context.request_id.clone(),
            event_time: context.at,
            attribution: context.attribution.clone(),
            provider: context.provider.clone(),
            model: context.model.clone(),
            usage,
            pricing: Pricing::Unpriced {
                reason,
                detail: detail.to_string(),
            },
            billing_mode: context.billing_mode,
            outcome: Outcome::Success,
            partial: false,
        }
    }

    /// The same event with another outcome.
    pub fn with_outcome(mut self, outcome: Outcome) -> SpendEvent {
        self.outcome = outcome;
        self
    }

    /// The same event, marked as the known part of a stream cut short.
    pub fn into_partial(mut self) -> SpendEvent {
        self.partial = true;
        self
    }

    /// The currency of its cost, if priced.
    pub fn currency(&self) -> Option<Currency> {
        match &self.pricing {
            Pricing::Priced { currency, .. } => Some(*currency),
            Pricing::Unpriced { .. } => None,
        }
    }

    /// The exact cost, when priced.
    pub fn cost(&self) -> Option<Decimal> {
        match &self.pricing {
            Pricing::Priced { cost, .. } => Some(*cost),
            Pricing::Unpriced { .. } => None,
        }
    }

    /// The token counts the request log keeps: uncached input, cache read, cache
    /// write 5 min and 1 h, output, reasoning; `None` where unknown.
    pub fn logged_tokens(&self) -> [Option<u64>; 6] {
        let u = self.usage.as_ref();
        [
            u.map(|u| u.input_tokens),
            u.map(|u| u.cache_read_tokens),
            u.map(|u| u.cache_write_5m_tokens),
            u.map(|u| u.cache_write_1h_tokens),
            u.map(|u| u.output_tokens),
            u.and_then(|u| u.reasoning_tokens),
        ]
    }

    /// The pricing as the request log keeps it: the cost, the price version and the
    /// model priced, or the code of the reason it is unpriced.
    pub fn logged_pricing(
        &self,
    ) -> (
        Option<Decimal>,
        Option<&str>,
        Option<&str>,
        Option<&'static str>,
    ) {
        match &self.pricing {
            Pricing::Priced {
                cost,
                price_version,
                priced_model,
                ..
            } => (Some(*cost), Some(price_version), Some(priced_model), None),
            Pricing::Unpriced { reason, .. } => (None, None, None, Some(reason.as_str())),
        }
    }

    /// The UTC day the event counts in.
    pub fn day(&self) -> NaiveDate {
        self.event_time.date_naive()
    }
}

/// A shard of the spend queue. An org's spend always goes to the same shard, so it
/// stays ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard of an org among `shards` (FNV-1a of the org id: the same in every
    /// process and release).
    pub fn for_org(org: &OrgId, shards: u16) -> ShardId {
        let hash = org.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let shards = u64::from(shards.max(1));
        ShardId(u16::try_from(hash % shards).unwrap_or(0))
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which shards a queue has: a numbered layout of `shards` shards with the ids
/// `first..first + shards`, and while the layout before it is still being drained,
/// that layout's shards.
///
/// A queue starts at version 0 with the ids `0..shards`. Changing the number of
/// shards makes a new version whose ids follow the old ones (so no shard id, and no
/// store row keyed by one, is ever used by two layouts): the old shards are sealed
/// (an append to one is answered [`AppendOutcome::Moved`](crate::port::AppendOutcome::Moved)
/// and the recorder routes its events again), drained to the end and retired; only
/// then are the new shards drained, so an org's spend is applied in the order it was
/// recorded across the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardLayout {
    /// The layout's version, 0 for a queue never resharded.
    pub version: u32,
    /// The first shard id of the layout.
    pub first: u16,
    /// How many shards it has.
    pub shards: u16,
    /// The previous layout's shards (first id, count) while they are drained.
    pub retiring: Option<(u16, u16)>,
}

impl ShardLayout {
    /// Version 0: the shards `0..shards`.
    pub fn fixed(shards: u16) -> ShardLayout {
        ShardLayout {
            version: 0,
            first: 0,
            shards: shards.max(1),
            retiring: None,
        }
    }

    /// The layout that replaces this one with `shards` shards, its ids following this
    /// one's. Refused (with the reason) while this one is still retiring its
    /// predecessor, for 0 shards, and when the ids would run past 65,535.
    pub fn next(&self, shards: u16) -> Result<ShardLayout, String> {
        if self.retiring.is_some() {
            return Err(format!(
                "the queue is still retiring the shards of its previous layout ({self}); change the number of shards again once they are drained"
            ));
        }
        if shards == 0 {
            return Err("a queue needs at least one shard".to_owned());
        }
        let first = self
            .first
            .checked_add(self.shards)
            .filter(|first| first.checked_add(shards - 1).is_some())
            .ok_or_else(|| {
                format!("{shards} more shards after {self} would need shard ids past 65535")
            })?;
        Ok(ShardLayout {
            version: self.version + 1,
            first,
            shards,
            retiring: Some((self.first, self.shards)),
        })
    }

    /// The shard an org's spend goes to.
    pub fn shard_for(&self, org: &OrgId) -> ShardId {
        ShardId(self.first + ShardId::for_org(org, self.shards).0)
    }

    /// The layout's own shards.
    pub fn current(&self) -> impl Iterator<Item = ShardId> + use<> {
        shard_range(self.first, self.shards)
    }

    /// The previous layout's shards still being drained (none when it is done).
    pub fn retiring_shards(&self) -> impl Iterator<Item = ShardId> + use<> {
        let (first, count) = self.retiring.unwrap_or((0, 0));
        shard_range(first, count)
    }

    /// The shards a drainer works on now: the retiring ones while there are any,
    /// then the layout's own.
    pub fn to_drain(&self) -> impl Iterator<Item = ShardId> + use<> {
        let (first, count) = self.retiring.unwrap_or((self.first, self.shards));
        shard_range(first, count)
    }

    /// Whether `shard` is one of the layout's own.
    pub fn is_current(&self, shard: ShardId) -> bool {
        shard.0 >= self.first && shard.0 - self.first < self.shards
    }

    /// Whether `shard` belongs to the previous layout, still being drained.
    pub fn is_retiring(&self, shard: ShardId) -> bool {
        self.retiring
            .is_some_and(|(first, count)| shard.0 >= first && shard.0 - first < count)
    }

    /// The layout done retiring: the previous layout's shards forgotten.
    #[must_use]
    pub fn retired(self) -> ShardLayout {
        ShardLayout {
            retiring: None,
            ..self
        }
    }
}

/// The shards `first..first + count`.
fn shard_range(first: u16, count: u16) -> impl Iterator<Item = ShardId> {
    (0..count).map(move |i| ShardId(first + i))
}

impl fmt::Display for ShardLayout {
    /// `v1: shards 16..48, retiring 0..16`, or `v0: shards 0..16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}: shards {}..{}",
            self.version,
            self.first,
            u32::from(self.first) + u32::from(self.shards)
        )?;
        if let Some((first, count)) = self.retiring {
            write!(
                f,
                ", retiring {first}..{}",
                u32::from(first) + u32::from(count)
            )?;
        }
        Ok(())
    }
}

/// A batch's unique id: a second append of the same id is not a second batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BatchId(Arc<str>);

impl BatchId {
    /// The id of the `seq`th batch of the recorder instance `instance`.
    pub fn new(instance: u128, seq: u64) -> BatchId {
        BatchId(Arc::from(format!("{instance:032x}-{seq}")))
    }

    /// An id from its text (1 to 64 bytes of `[0-9A-Za-z_-]`).
    pub fn parse(text: &str) -> Option<BatchId> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| BatchId(Arc::from(text)))
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Events flushed together to one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendBatch {
    /// Unique per batch.
    pub id: BatchId,
    /// The shard every event belongs to.
    pub shard: ShardId,
    /// The events, in recording order.
    pub events: Vec<SpendEvent>,
}

/// A position in a shard's queue. Positions only grow; Redis stream ids (`ms-seq`)
/// map onto `(major, minor)`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct QueuePosition {
    /// The major part (Redis: milliseconds).
    pub major: u64,
    /// The minor part (Redis: the sequence within the millisecond).
    pub minor: u64,
}

impl QueuePosition {
    /// A position.
    pub const fn new(major: u64, minor: u64) -> QueuePosition {
        QueuePosition { major, minor }
    }
}

impl fmt::Display for QueuePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.major, self.minor)
    }
}

impl std::str::FromStr for QueuePosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (major, minor) = s
            .split_once('-')
            .ok_or_else(|| format!("queue position \"{s}\" is not major-minor"))?;
        Ok(QueuePosition {
            major: major
                .parse()
                .map_err(|_| format!("queue position \"{s}\": bad major part"))?,
            minor: minor
                .parse()
                .map_err(|_| format!("queue position \"{s}\": bad minor part"))?,
        })
    }
}

/// A batch as read back from the queue, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBatch {
    /// Where it sits in its shard.
    pub position: QueuePosition,
    /// The batch.
    pub batch: SpendBatch,
}

/// The dimensions of a daily rollup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RollupKey {
    /// The UTC day of the events.
    pub day: NaiveDate,
    /// Who spent: org, workspace, team, API key, user, customer.
    #[serde(flatten)]
    pub who: Dimensions,
    /// The provider.
    pub provider: Provider,
    /// The model as the events named it.
    pub model: String,
    /// The billing mode.
    pub billing_mode: BillingMode,
    /// The currency of the cost (`None` for unpriced requests, which carry no money):
    /// costs in different currencies are never added together.
    pub currency: Option<Currency>,
}

impl RollupKey {
    /// The rollup an event counts in.
    pub fn of(event: &SpendEvent) -> RollupKey {
        RollupKey {
            day: event.day(),
            who: event.attribution.who.clone(),
            provider: event.provider.clone(),
            model: event.model.clone(),
            billing_mode: event.billing_mode,
            currency: event.currency(),
        }
    }
}

/// What a rollup adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RollupTotals {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Cache-read tokens.
    pub cache_read_tokens: u64,
    /// 5-minute cache-write tokens.
    pub cache_write_5m_tokens: u64,
    /// 1-hour cache-write tokens.
    pub cache_write_1h_tokens: u64,
    /// Output tokens (reasoning included).
    pub output_tokens: u64,
    /// Reasoning tokens, where reported.
    pub reasoning_tokens: u64,
    /// Web search calls.
    pub web_search_requests: u64,
    /// Successful requests.
    pub successes: u64,
    /// Failed requests.
    pub failures: u64,
    /// Requests not priced (their tokens are counted, their cost is not).
    pub unpriced: u64,
    /// The exact cost of the priced requests.
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
}

/// A sum beyond the exact range (tokens beyond `u64`, cost beyond `Decimal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a rollup total overflows")]
pub struct RollupOverflow;

impl From<RollupOverflow> for crate::port::BackendError {
    fn from(e: RollupOverflow) -> Self {
        crate::port::BackendError::new(crate::port::ErrorKind::Invalid, e.to_string())
    }
}

impl RollupTotals {
    /// The totals of one event.
    pub fn of(event: &SpendEvent) -> RollupTotals {
        RollupTotals::of_parts(event.usage.as_ref(), event.outcome, event.cost())
    }

    /// The totals of one request from its parts: its usage (`None`: unknown), its
    /// outcome and its cost (`None`: unpriced).
    pub fn of_parts(
        usage: Option<&Usage>,
        outcome: Outcome,
        cost: Option<Decimal>,
    ) -> RollupTotals {
        let u = usage.copied().unwrap_or_default();
        RollupTotals {
            input_tokens: u.input_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_5m_tokens: u.cache_write_5m_tokens,
            cache_write_1h_tokens: u.cache_write_1h_tokens,
            output_tokens: u.output_tokens,
            reasoning_tokens: u.reasoning_tokens.unwrap_or(0),
            web_search_requests: u.web_search_requests,
            successes: u64::from(outcome == Outcome::Success),
            failures: u64::from(outcome == Outcome::Failure),
            unpriced: u64::from(cost.is_none()),
            cost: cost.unwrap_or(Decimal::ZERO),
        }
    }

    /// Takes `other` out of `self` (what a correction removes before adding the
    /// corrected totals), every difference checked: a count below zero is an error.
    pub fn subtract(&mut self, other: &RollupTotals) -> Result<(), RollupOverflow> {
        for (sum, value) in self.counts_mut().into_iter().zip(other.counts()) {
            *sum = sum.checked_sub(value).ok_or(RollupOverflow)?;
        }
        self.cost = self.cost.checked_sub(other.cost).ok_or(RollupOverflow)?;
        Ok(())
    }

    /// The counts in a fixed order (input, cache read, cache write 5 min and 1 h,
    /// output, reasoning, web searches, successes, failures, unpriced), as stores
    /// write them.
    pub fn counts(&self) -> [u64; 10] {
        let mut copy = *self;
        copy.counts_mut().map(|c| *c)
    }

    /// The counts in [`counts`](Self::counts)' order, to change.
    fn counts_mut(&mut self) -> [&mut u64; 10] {
        [
            &mut self.input_tokens,
            &mut self.cache_read_tokens,
            &mut self.cache_write_5m_tokens,
            &mut self.cache_write_1h_tokens,
            &mut self.output_tokens,
            &mut self.reasoning_tokens,
            &mut self.web_search_requests,
            &mut self.successes,
            &mut self.failures,
            &mut self.unpriced,
        ]
    }

    /// Adds `other` into `self`, every sum checked.
    pub fn add(&mut self, other: &RollupTotals) -> Result<(), RollupOverflow> {
        for (sum, value) in self.counts_mut().into_iter().zip(other.counts()) {
            *sum = sum.checked_add(value).ok_or(RollupOverflow)?;
        }
        self.cost = self.cost.checked_add(other.cost).ok_or(RollupOverflow)?;
        Ok(())
    }

    /// All requests.
    pub fn requests(&self) -> u64 {
        self.successes.saturating_add(self.failures)
    }

    /// The whole prompt: uncached input, cache reads and writes.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
    }
}

/// Events aggregated by rollup key: what a drain upserts in one statement.
///
/// A B-tree, not a hash map: the in-memory store keeps every rollup it holds in one
/// of these, and a hash map doubles its table at once (a drain step that made it
/// grow past 250,000 keys took most of a second); a B-tree grows a node at a time.
/// Its keys come out in order, which also makes what a store writes repeatable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollups(BTreeMap<RollupKey, RollupTotals>);

impl Rollups {
    /// No rollups.
    pub fn new() -> Rollups {
        Rollups::default()
    }

    /// The rollups of some events.
    pub fn of_events<'a>(
        events: impl IntoIterator<Item = &'a SpendEvent>,
    ) -> Result<Rollups, RollupOverflow> {
        let mut rollups = Rollups::new();
        for event in events {
            rollups.add_event(event)?;
        }
        Ok(rollups)
    }

    /// Adds an event.
    pub fn add_event(&mut self, event: &SpendEvent) -> Result<(), RollupOverflow> {
        self.add(RollupKey::of(event), &RollupTotals::of(event))
    }

    /// Adds totals under a key.
    pub fn add(&mut self, key: RollupKey, totals: &RollupTotals) -> Result<(), RollupOverflow> {
        self.0.entry(key).or_default().add(totals)
    }

    /// Takes `totals` out of the rollup at `key` (a correction's removal); a key that
    /// is not there, or a count that would fall below zero, is an error.
    pub fn subtract(
        &mut self,
        key: &RollupKey,
        totals: &RollupTotals,
    ) -> Result<(), RollupOverflow> {
        match self.0.get_mut(key) {
            Some(sum) => sum.subtract(totals),
            None if *totals == RollupTotals::default() => Ok(()),
            None => Err(RollupOverflow),
        }
    }

    /// Adds every rollup of `other`, all or nothing: the sums are taken aside first,
    /// so an overflow leaves every rollup as it was (and costs `other`'s keys, not a
    /// copy of all of `self`).
    pub fn merge(&mut self, other: &Rollups) -> Result<(), RollupOverflow> {
        let mut summed = Vec::with_capacity(other.0.len());
        for (key, totals) in &other.0 {
            let mut sum = self.0.get(key).copied().unwrap_or_default();
            sum.add(totals)?;
            summed.push((key.clone(), sum));
        }
        self.0.extend(summed);
        Ok(())
    }

    /// The rollups, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&RollupKey, &RollupTotals)> {
        self.0.iter()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The totals of one key.
    pub fn get(&self, key: &RollupKey) -> Option<&RollupTotals> {
        self.0.get(key)
    }
}

impl FromIterator<(RollupKey, RollupTotals)> for Rollups {
    fn from_iter<I: IntoIterator<Item = (RollupKey, RollupTotals)>>(iter: I) -> Self {
        Rollups(iter.into_iter().collect())
    }
}
