//! Exact cost: a model price times a usage, line by line.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::money::Currency;
use crate::price::{Fees, LookupError, ModelPrice, PriceTable, RateKind};
use crate::provider::Provider;
use crate::usage::{ServiceTier, Usage, UsageError};

/// A line of a cost breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CostCategory {
    /// Uncached text (and other non-audio, non-image) input tokens.
    Input,
    /// Uncached audio input tokens.
    AudioInput,
    /// Uncached image input tokens.
    ImageInput,
    /// Cache-read tokens.
    CacheRead,
    /// 5-minute cache-write tokens.
    CacheWrite5m,
    /// 1-hour cache-write tokens.
    CacheWrite1h,
    /// Output tokens other than the lines below.
    Output,
    /// Reasoning tokens, where the model prices them apart.
    Reasoning,
    /// Audio output tokens.
    AudioOutput,
    /// Image output tokens.
    ImageOutput,
    /// Web search calls.
    WebSearch,
    /// Generated images.
    Images,
    /// Seconds of input media.
    InputSeconds,
    /// Seconds of output media.
    OutputSeconds,
    /// The flat per-request fee.
    Request,
}

impl CostCategory {
    /// Every category, in breakdown order.
    pub const ALL: [CostCategory; 15] = [
        CostCategory::Input,
        CostCategory::AudioInput,
        CostCategory::ImageInput,
        CostCategory::CacheRead,
        CostCategory::CacheWrite5m,
        CostCategory::CacheWrite1h,
        CostCategory::Output,
        CostCategory::Reasoning,
        CostCategory::AudioOutput,
        CostCategory::ImageOutput,
        CostCategory::WebSearch,
        CostCategory::Images,
        CostCategory::InputSeconds,
        CostCategory::OutputSeconds,
        CostCategory::Request,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CostCategory::Input => "input",
            CostCategory::AudioInput => "audio_input",
            CostCategory::ImageInput => "image_input",
            CostCategory::CacheRead => "cache_read",
            CostCategory::CacheWrite5m => "cache_write_5m",
            CostCategory::CacheWrite1h => "cache_write_1h",
            CostCategory::Output => "output",
            CostCategory::Reasoning => "reasoning",
            CostCategory::AudioOutput => "audio_output",
            CostCategory::ImageOutput => "image_output",
            CostCategory::WebSearch => "web_search",
            CostCategory::Images => "images",
            CostCategory::InputSeconds => "input_seconds",
            CostCategory::OutputSeconds => "output_seconds",
            CostCategory::Request => "request",
        }
    }
}

impl fmt::Display for CostCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One priced line: `quantity × unit_price = amount`, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CostLine {
    /// What the line prices.
    pub category: CostCategory,
    /// Tokens, calls, images or seconds.
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// The price of one unit.
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    /// `quantity × unit_price`.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

/// The exact cost of one request, with its breakdown and provenance.
///
/// `total` is the exact sum of the lines; nothing is rounded. The lines are derived on
/// demand from the usage and the price, so a `Cost` is small and cheap to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    total: Decimal,
    currency: Currency,
    usage: Usage,
    price: Arc<ModelPrice>,
    price_version: Arc<str>,
    context_tier: Option<u64>,
}

/// The token categories and the rate that prices each, in line order.
const TOKEN_LINES: [(CostCategory, RateKind); 10] = [
    (CostCategory::Input, RateKind::Input),
    (CostCategory::AudioInput, RateKind::AudioInput),
    (CostCategory::ImageInput, RateKind::ImageInput),
    (CostCategory::CacheRead, RateKind::CacheRead),
    (CostCategory::CacheWrite5m, RateKind::CacheWrite5m),
    (CostCategory::CacheWrite1h, RateKind::CacheWrite1h),
    (CostCategory::Output, RateKind::Output),
    (CostCategory::Reasoning, RateKind::Reasoning),
    (CostCategory::AudioOutput, RateKind::AudioOutput),
    (CostCategory::ImageOutput, RateKind::ImageOutput),
];

/// The token counts of a usage, by [`TOKEN_LINES`]: the subsets that have a rate of
/// their own are split off the category they refine.
fn token_counts(usage: &Usage, reasoning_apart: bool) -> Result<[u64; 10], UsageError> {
    let reasoning = if reasoning_apart {
        usage.reasoning_tokens.unwrap_or(0)
    } else {
        0
    };
    let input_parts = usage.audio_input_tokens + usage.image_input_tokens;
    let text_input =
        usage
            .input_tokens
            .checked_sub(input_parts)
            .ok_or(UsageError::SubsetExceedsWhole {
                part: "audio_input_tokens + image_input_tokens",
                part_value: input_parts,
                whole: "input_tokens",
                whole_value: usage.input_tokens,
            })?;
    let output_parts = usage.audio_output_tokens + usage.image_output_tokens + reasoning;
    let text_output =
        usage
            .output_tokens
            .checked_sub(output_parts)
            .ok_or(UsageError::SubsetExceedsWhole {
                part: "reasoning_tokens + audio_output_tokens + image_output_tokens",
                part_value: output_parts,
                whole: "output_tokens",
                whole_value: usage.output_tokens,
            })?;
    Ok([
        text_input,
        usage.audio_input_tokens,
        usage.image_input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        text_output,
        reasoning,
        usage.audio_output_tokens,
        usage.image_output_tokens,
    ])
}

/// Whether a usage has anything a fee prices.
fn has_fees(usage: &Usage, fees: &Fees) -> bool {
    fees.per_request.is_some()
        || (usage.web_search_requests
            | usage.images_generated
            | usage.input_duration_ms
            | usage.output_duration_ms)
            != 0
}

/// Fee lines: `(category, quantity, unit price)` for each fee a usage incurs.
type FeeLines = [Option<(CostCategory, Decimal, Decimal)>; 5];

/// The fee lines of a usage: `(category, quantity, unit price)`, or the category
/// whose fee the model lacks.
fn fee_lines(usage: &Usage, fees: &Fees) -> Result<FeeLines, CostCategory> {
    let mut out = [None; 5];
    if usage.web_search_requests > 0 {
        let fee = fees.per_web_search.ok_or(CostCategory::WebSearch)?;
        out[0] = Some((
            CostCategory::WebSearch,
            Decimal::from(usage.web_search_requests),
            fee,
        ));
    }
    if usage.images_generated > 0 {
        match fees.per_image {
            Some(fee) => {
                out[1] = Some((
                    CostCategory::Images,
                    Decimal::from(usage.images_generated),
                    fee,
                ))
            }
            // Image models priced by output image tokens have no per-image fee.
            None if usage.image_output_tokens > 0 => {}
            None => return Err(CostCategory::Images),
        }
    }
    let durations = [
        (
            CostCategory::InputSeconds,
            fees.per_input_second,
            usage.input_duration_ms,
            usage.input_tokens,
        ),
        (
            CostCategory::OutputSeconds,
            fees.per_output_second,
            usage.output_duration_ms,
            usage.output_tokens,
        ),
    ];
    for (slot, (category, fee, millis, tokens)) in out[2..4].iter_mut().zip(durations) {
        if millis == 0 {
            continue;
        }
        match fee {
            // Milliseconds are within MAX_COUNT, so they fit an i64.
            Some(fee) => {
                *slot = Some((category, Decimal::from(millis) / Decimal::ONE_THOUSAND, fee))
            }
            // A token-priced model bills the tokens; the duration is informational.
            None if tokens > 0 => {}
            None => return Err(category),
        }
    }
    if let Some(fee) = fees.per_request {
        out[4] = Some((CostCategory::Request, Decimal::ONE, fee));
    }
    Ok(out)
}

impl Cost {
    /// Prices `usage` with `price`. Most callers use [`PriceTable::cost`](crate::PriceTable::cost).
    pub fn compute(
        price: &Arc<ModelPrice>,
        usage: &Usage,
        currency: Currency,
        price_version: &Arc<str>,
    ) -> Result<Cost, CostError> {
        usage.validate()?;
        let tier = usage.service_tier;
        let missing = |category: CostCategory| CostError::MissingRate {
            provider: price.provider.clone(),
            model: price.model.to_string(),
            category,
            service_tier: tier,
        };
        let schedule = price.compiled[tier as usize].as_ref().ok_or_else(|| {
            CostError::UnsupportedServiceTier {
                provider: price.provider.clone(),
                model: price.model.to_string(),
                service_tier: tier,
            }
        })?;
        let (card, context_tier) = schedule.card_for(usage.total_input_tokens());
        let card = card.ok_or(CostError::Overflow)?;

        // Tokens: integer multiply-adds at the card's scale, exact.
        let mut mantissa: i128 = 0;
        let counts = token_counts(usage, card.reasoning_apart)?;
        for ((category, kind), count) in TOKEN_LINES.into_iter().zip(counts) {
            if count == 0 {
                continue;
            }
            let rate = card.rate(kind).ok_or_else(|| missing(category))?;
            mantissa = rate
                .checked_mul(i128::from(count))
                .and_then(|amount| mantissa.checked_add(amount))
                .ok_or(CostError::Overflow)?;
        }
        let mut total = Decimal::try_from_i128_with_scale(mantissa, card.scale)
            .map_err(|_| CostError::Overflow)?;

        // Fees: rare, in plain decimal arithmetic.
        if has_fees(usage, &price.fees) {
            for (_, quantity, fee) in fee_lines(usage, &price.fees)
                .map_err(missing)?
                .into_iter()
                .flatten()
            {
                total = quantity
                    .checked_mul(fee)
                    .and_then(|amount| total.checked_add(amount))
                    .ok_or(CostError::Overflow)?;
            }
        }

        Ok(Cost {
            total,
            currency,
            usage: *usage,
            price: Arc::clone(price),
            price_version: Arc::clone(price_version),
            context_tier,
        })
    }

    /// The exact total (its scale is the prices'; compare with `==`, which ignores scale).
    pub fn total(&self) -> Decimal {
        self.total
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The non-empty lines, in [`CostCategory::ALL`] order. They add up to [`Cost::total`].
    pub fn lines(&self) -> impl Iterator<Item = CostLine> + '_ {
        let card = self.price.compiled[self.usage.service_tier as usize]
            .as_ref()
            .and_then(|s| s.card_for(self.usage.total_input_tokens()).0);
        let tokens = card
            .and_then(|card| Some((card, token_counts(&self.usage, card.reasoning_apart).ok()?)))
            .into_iter()
            .flat_map(|(card, counts)| {
                TOKEN_LINES
                    .into_iter()
                    .zip(counts)
                    .filter_map(move |((category, kind), count)| {
                        let rate = card.rate(kind).filter(|_| count > 0)?;
                        let unit_price = Decimal::try_from_i128_with_scale(rate, card.scale)
                            .ok()?
                            .normalize();
                        let quantity = Decimal::from(count);
                        Some(CostLine {
                            category,
                            quantity,
                            unit_price,
                            amount: quantity * unit_price,
                        })
                    })
            });
        let fees = fee_lines(&self.usage, &self.price.fees)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .map(|(category, quantity, unit_price)| CostLine {
                category,
                quantity,
                unit_price,
                amount: quantity * unit_price,
            });
        // Token categories come before fee categories in `CostCategory::ALL`.
        tokens.chain(fees)
    }

    /// The line of one category, if it was charged.
    pub fn line(&self, category: CostCategory) -> Option<CostLine> {
        self.lines().find(|l| l.category == category)
    }

    /// The amount of one category (zero when not charged).
    pub fn amount(&self, category: CostCategory) -> Decimal {
        self.line(category).map_or(Decimal::ZERO, |l| l.amount)
    }

    /// The usage that was priced.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The version of the price table that priced this cost.
    pub fn price_version(&self) -> &str {
        &self.price_version
    }

    /// The price that was applied.
    pub fn price(&self) -> &Arc<ModelPrice> {
        &self.price
    }

    /// The provider whose price was used (after fall-backs and aliases).
    pub fn priced_provider(&self) -> &Provider {
        &self.price.provider
    }

    /// The model whose price was used (after normalisation).
    pub fn priced_model(&self) -> &str {
        &self.price.model
    }

    /// The service tier priced.
    pub fn service_tier(&self) -> ServiceTier {
        self.usage.service_tier
    }

    /// The long-context threshold whose tier applied, if any.
    pub fn context_tier(&self) -> Option<u64> {
        self.context_tier
    }
}

/// Pricing lives with the cost math, so `price` (the tables) never depends on `cost`.
impl PriceTable {
    /// Prices `usage` of `model` served by `provider` at `at`.
    ///
    /// ```
    /// use routero_core::{PriceTable, Provider, Usage};
    /// let table = PriceTable::bundled();
    /// let at = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().to_utc();
    /// let cost = table.cost(&Provider::OpenAi, "gpt-4o-2024-08-06", &Usage::tokens(1_000, 500), at).unwrap();
    /// assert_eq!(cost.total(), rust_decimal::Decimal::new(75, 4));
    /// ```
    pub fn cost(
        &self,
        provider: &Provider,
        model: &str,
        usage: &Usage,
        at: DateTime<Utc>,
    ) -> Result<Cost, CostError> {
        let price = self.lookup(provider, model, at)?;
        Cost::compute(price, usage, self.currency(), self.version_arc())
    }
}

impl From<LookupError> for CostError {
    fn from(e: LookupError) -> CostError {
        match e {
            LookupError::UnknownModel { provider, model } => {
                CostError::UnknownModel { provider, model }
            }
            LookupError::NoPriceInForce {
                provider,
                model,
                at,
            } => CostError::NoPriceInForce {
                provider,
                model,
                at,
            },
        }
    }
}

/// Why a usage could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// No price for this model under this provider or its fall-backs.
    #[error("unknown model \"{model}\" for provider {provider}")]
    UnknownModel {
        /// The provider asked.
        provider: Provider,
        /// The model asked (escaped).
        model: String,
    },
    /// The model is priced, but only from a date after the request.
    #[error("no price of \"{model}\" ({provider}) is in force at {at}")]
    NoPriceInForce {
        /// The provider asked.
        provider: Provider,
        /// The model asked (escaped).
        model: String,
        /// The request time.
        at: DateTime<Utc>,
    },
    /// The model has no price on the service tier the request was served on.
    #[error("\"{model}\" ({provider}) has no {service_tier} tier price")]
    UnsupportedServiceTier {
        /// The provider priced.
        provider: Provider,
        /// The model priced.
        model: String,
        /// The tier.
        service_tier: ServiceTier,
    },
    /// The usage has a category the model has no known rate for.
    #[error(
        "\"{model}\" ({provider}) has no {service_tier} rate for {category}, which this usage consumes"
    )]
    MissingRate {
        /// The provider priced.
        provider: Provider,
        /// The model priced.
        model: String,
        /// The category without a rate.
        category: CostCategory,
        /// The tier.
        service_tier: ServiceTier,
    },
    /// The usage's counts are impossible.
    #[error("invalid usage: {0}")]
    InvalidUsage(#[from] UsageError),
    /// An amount beyond the decimal range.
    #[error("cost overflows the exact decimal range")]
    Overflow,
}
