//! Exact cost: a model price times a usage, line by line.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::money::Currency;
use crate::price::{ModelPrice, RateKind};
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
        f.write_str(self.as_str())
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
/// `total` is the exact sum of the lines; nothing is rounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    total: Decimal,
    currency: Currency,
    lines: [Option<CostLine>; 15],
    price_version: Arc<str>,
    provider: Provider,
    model: Arc<str>,
    service_tier: ServiceTier,
    context_tier: Option<u64>,
}

impl Cost {
    /// Prices `usage` with `price`. Most callers use [`PriceTable::cost`](crate::PriceTable::cost).
    pub fn compute(price: &ModelPrice, usage: &Usage, currency: Currency, price_version: &Arc<str>) -> Result<Cost, CostError> {
        usage.validate()?;
        let tier = usage.service_tier;
        let missing = |category: CostCategory| CostError::MissingRate {
            provider: price.provider.clone(),
            model: price.model.to_string(),
            category,
            service_tier: tier,
        };
        let schedule = price.schedule(tier).ok_or_else(|| CostError::UnsupportedServiceTier {
            provider: price.provider.clone(),
            model: price.model.to_string(),
            service_tier: tier,
        })?;
        let (rates, context_tier) = schedule.rates_for(usage.total_input_tokens());

        let mut cost = Cost {
            total: Decimal::ZERO,
            currency,
            lines: [None; 15],
            price_version: Arc::clone(price_version),
            provider: price.provider.clone(),
            model: Arc::clone(&price.model),
            service_tier: tier,
            context_tier,
        };

        // Output splits off the subsets that have a price of their own.
        let reasoning_apart = rates.get(RateKind::Reasoning).is_some();
        let reasoning = if reasoning_apart { usage.reasoning_tokens.unwrap_or(0) } else { 0 };
        let text_input = usage
            .input_tokens
            .checked_sub(usage.audio_input_tokens + usage.image_input_tokens)
            .ok_or(UsageError::SubsetExceedsWhole {
                part: "audio_input_tokens + image_input_tokens",
                part_value: usage.audio_input_tokens + usage.image_input_tokens,
                whole: "input_tokens",
                whole_value: usage.input_tokens,
            })?;
        let output_parts = usage.audio_output_tokens + usage.image_output_tokens + reasoning;
        let text_output = usage
            .output_tokens
            .checked_sub(output_parts)
            .ok_or(UsageError::SubsetExceedsWhole {
                part: "reasoning_tokens + audio_output_tokens + image_output_tokens",
                part_value: output_parts,
                whole: "output_tokens",
                whole_value: usage.output_tokens,
            })?;

        let token_lines = [
            (CostCategory::Input, RateKind::Input, text_input),
            (CostCategory::AudioInput, RateKind::AudioInput, usage.audio_input_tokens),
            (CostCategory::ImageInput, RateKind::ImageInput, usage.image_input_tokens),
            (CostCategory::CacheRead, RateKind::CacheRead, usage.cache_read_tokens),
            (CostCategory::CacheWrite5m, RateKind::CacheWrite5m, usage.cache_write_5m_tokens),
            (CostCategory::CacheWrite1h, RateKind::CacheWrite1h, usage.cache_write_1h_tokens),
            (CostCategory::Output, RateKind::Output, text_output),
            (CostCategory::Reasoning, RateKind::Reasoning, reasoning),
            (CostCategory::AudioOutput, RateKind::AudioOutput, usage.audio_output_tokens),
            (CostCategory::ImageOutput, RateKind::ImageOutput, usage.image_output_tokens),
        ];
        for (category, kind, count) in token_lines {
            if count == 0 {
                continue;
            }
            let rate = rates.effective(kind).ok_or_else(|| missing(category))?;
            cost.add(category, Decimal::from(count), rate)?;
        }

        let fees = price.fees();
        if usage.web_search_requests > 0 {
            let fee = fees.per_web_search.ok_or_else(|| missing(CostCategory::WebSearch))?;
            cost.add(CostCategory::WebSearch, Decimal::from(usage.web_search_requests), fee)?;
        }
        if usage.images_generated > 0 {
            match fees.per_image {
                Some(fee) => cost.add(CostCategory::Images, Decimal::from(usage.images_generated), fee)?,
                // Image models priced by output image tokens have no per-image fee.
                None if usage.image_output_tokens > 0 => {}
                None => return Err(missing(CostCategory::Images)),
            }
        }
        let durations = [
            (CostCategory::InputSeconds, fees.per_input_second, usage.input_duration_ms, usage.input_tokens),
            (CostCategory::OutputSeconds, fees.per_output_second, usage.output_duration_ms, usage.output_tokens),
        ];
        for (category, fee, millis, tokens) in durations {
            if millis == 0 {
                continue;
            }
            match fee {
                Some(fee) => cost.add(category, Decimal::new(i64::try_from(millis).map_err(|_| CostError::Overflow)?, 3), fee)?,
                // A token-priced model bills the tokens; the duration is informational.
                None if tokens > 0 => {}
                None => return Err(missing(category)),
            }
        }
        if let Some(fee) = fees.per_request {
            cost.add(CostCategory::Request, Decimal::ONE, fee)?;
        }
        Ok(cost)
    }

    fn add(&mut self, category: CostCategory, quantity: Decimal, unit_price: Decimal) -> Result<(), CostError> {
        let amount = quantity.checked_mul(unit_price).ok_or(CostError::Overflow)?.normalize();
        self.total = self.total.checked_add(amount).ok_or(CostError::Overflow)?.normalize();
        self.lines[category as usize] = Some(CostLine {
            category,
            quantity,
            unit_price,
            amount,
        });
        Ok(())
    }

    /// The exact total.
    pub fn total(&self) -> Decimal {
        self.total
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The non-empty lines, in [`CostCategory::ALL`] order.
    pub fn lines(&self) -> impl Iterator<Item = &CostLine> {
        self.lines.iter().flatten()
    }

    /// The line of one category, if it was charged.
    pub fn line(&self, category: CostCategory) -> Option<&CostLine> {
        self.lines[category as usize].as_ref()
    }

    /// The amount of one category (zero when not charged).
    pub fn amount(&self, category: CostCategory) -> Decimal {
        self.line(category).map_or(Decimal::ZERO, |l| l.amount)
    }

    /// The version of the price table that priced this cost.
    pub fn price_version(&self) -> &str {
        &self.price_version
    }

    /// The provider whose price was used (after fall-backs and aliases).
    pub fn priced_provider(&self) -> &Provider {
        &self.provider
    }

    /// The model whose price was used (after normalisation).
    pub fn priced_model(&self) -> &str {
        &self.model
    }

    /// The service tier priced.
    pub fn service_tier(&self) -> ServiceTier {
        self.service_tier
    }

    /// The long-context threshold whose tier applied, if any.
    pub fn context_tier(&self) -> Option<u64> {
        self.context_tier
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
    #[error("\"{model}\" ({provider}) has no {service_tier} rate for {category}, which this usage consumes")]
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
