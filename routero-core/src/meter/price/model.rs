//! The price of one model: per-token rates, long-context tiers, service tiers and fees.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::provider::Provider;
use crate::usage::ServiceTier;

/// A per-token rate category of a [`Rates`] card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RateKind {
    /// Uncached input.
    Input,
    /// Cache reads.
    CacheRead,
    /// Cache writes, 5-minute (or the provider's only) lifetime.
    CacheWrite5m,
    /// Cache writes, 1-hour lifetime.
    CacheWrite1h,
    /// Output.
    Output,
    /// Reasoning output, where priced apart from other output.
    Reasoning,
    /// Audio input.
    AudioInput,
    /// Image input.
    ImageInput,
    /// Audio output.
    AudioOutput,
    /// Image output.
    ImageOutput,
}

impl RateKind {
    /// Every kind.
    pub const ALL: [RateKind; 10] = [
        RateKind::Input,
        RateKind::CacheRead,
        RateKind::CacheWrite5m,
        RateKind::CacheWrite1h,
        RateKind::Output,
        RateKind::Reasoning,
        RateKind::AudioInput,
        RateKind::ImageInput,
        RateKind::AudioOutput,
        RateKind::ImageOutput,
    ];

    /// Whether the rate applies to the prompt side of a request.
    pub fn is_input_side(self) -> bool {
        matches!(
            self,
            RateKind::Input
                | RateKind::CacheRead
                | RateKind::CacheWrite5m
                | RateKind::CacheWrite1h
                | RateKind::AudioInput
                | RateKind::ImageInput
        )
    }

    /// The snake_case name used in price files and cost lines.
    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Input => "input",
            RateKind::CacheRead => "cache_read",
            RateKind::CacheWrite5m => "cache_write_5m",
            RateKind::CacheWrite1h => "cache_write_1h",
            RateKind::Output => "output",
            RateKind::Reasoning => "reasoning",
            RateKind::AudioInput => "audio_input",
            RateKind::ImageInput => "image_input",
            RateKind::AudioOutput => "audio_output",
            RateKind::ImageOutput => "image_output",
        }
    }
}

/// Per-token rates, in the price table's currency per **one** token.
///
/// A `None` rate means the model has no separate price for that category; how the
/// category is then priced is fixed by [`Rates::effective`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    rates: [Option<Decimal>; 10],
}

impl Rates {
    /// The rate of a category, as written.
    pub fn get(&self, kind: RateKind) -> Option<Decimal> {
        self.rates[kind as usize]
    }

    /// Sets the rate of a category.
    pub fn set(&mut self, kind: RateKind, rate: Option<Decimal>) {
        self.rates[kind as usize] = rate;
    }

    /// A card with a rate set; for building cards fluently.
    pub fn with(mut self, kind: RateKind, rate: Decimal) -> Rates {
        self.set(kind, Some(rate));
        self
    }

    /// Whether no rate at all is set.
    pub fn is_empty(&self) -> bool {
        self.rates.iter().all(Option::is_none)
    }

    /// The rate that prices a category, after the documented fall-backs:
    ///
    /// - audio and image input, without their own rate, are input (the modality is not
    ///   priced apart); audio, image and reasoning output likewise are output;
    /// - cache reads without a rate are input (no discount is known);
    /// - 5-minute cache writes without a rate are input (no write premium);
    /// - 1-hour cache writes without a rate are input only when the model has no
    ///   5-minute write premium either; a model with a 5-minute premium and no 1-hour
    ///   rate has an unknown 1-hour price (`None`), never the 5-minute one.
    pub fn effective(&self, kind: RateKind) -> Option<Decimal> {
        if let Some(rate) = self.get(kind) {
            return Some(rate);
        }
        match kind {
            RateKind::Input | RateKind::Output => None,
            RateKind::CacheRead
            | RateKind::CacheWrite5m
            | RateKind::AudioInput
            | RateKind::ImageInput => self.get(RateKind::Input),
            RateKind::CacheWrite1h => match self.get(RateKind::CacheWrite5m) {
                Some(_) => None,
                None => self.get(RateKind::Input),
            },
            RateKind::Reasoning | RateKind::AudioOutput | RateKind::ImageOutput => {
                self.get(RateKind::Output)
            }
        }
    }

    /// Every rate multiplied by `factor`; `None` on overflow.
    pub fn scaled(&self, factor: Decimal) -> Option<Rates> {
        let mut out = Rates::default();
        for kind in RateKind::ALL {
            if let Some(rate) = self.get(kind) {
                out.set(kind, Some(rate.checked_mul(factor)?.normalize()));
            }
        }
        Some(out)
    }

    /// Completes a tier card that names only some rates from the card it modifies.
    ///
    /// A category the tier does not name gets the base rate scaled by the tier's ratio
    /// for its side: the tier's input rate over the base input rate for prompt-side
    /// categories, the output ratio for output-side ones. That is how providers price
    /// tiers (a long-context or batch tier moves cache reads and writes with the input
    /// rate). The derived rate must be exact; a ratio that cannot be applied exactly,
    /// or a side the tier does not name, leaves the category unpriced in the tier.
    pub fn completed_from(&self, base: &Rates) -> Rates {
        let mut out = *self;
        for kind in RateKind::ALL {
            if out.get(kind).is_some() {
                continue;
            }
            let Some(base_rate) = base.get(kind) else {
                continue;
            };
            out.set(kind, move_rate(base_rate, kind, base, self));
        }
        out
    }
}

/// A `kind` rate of card `from`, moved to card `to` by the ratio of their rates on the
/// same side (input or output); `None` when a side is missing or the result inexact.
fn move_rate(rate: Decimal, kind: RateKind, from: &Rates, to: &Rates) -> Option<Decimal> {
    let anchor = if kind.is_input_side() {
        RateKind::Input
    } else {
        RateKind::Output
    };
    derive_exact(rate, to.get(anchor)?, from.get(anchor)?)
}

/// `base_rate * tier / base_anchor`, only when it is exact.
fn derive_exact(base_rate: Decimal, tier: Decimal, base_anchor: Decimal) -> Option<Decimal> {
    if base_anchor.is_zero() {
        return tier.is_zero().then_some(base_rate);
    }
    let product = base_rate.checked_mul(tier)?;
    let quotient = product.checked_div(base_anchor)?;
    (quotient.checked_mul(base_anchor)? == product).then(|| quotient.normalize())
}

/// A long-context tier: above `above_tokens` prompt tokens (cache reads and writes
/// included), the whole request is priced at `rates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextTier {
    /// The threshold: the tier applies when the prompt is **larger** than this.
    pub above_tokens: u64,
    /// The rates of the whole request in this tier.
    pub rates: Rates,
}

/// The rates of one service tier: a base card and its long-context tiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    /// Rates up to the first long-context threshold.
    pub base: Rates,
    /// Long-context tiers, by ascending threshold.
    pub above: Vec<ContextTier>,
}

impl Schedule {
    /// The card for a prompt of `prompt_tokens`, and the threshold of its tier if any.
    pub fn rates_for(&self, prompt_tokens: u64) -> (&Rates, Option<u64>) {
        match self
            .above
            .iter()
            .rev()
            .find(|t| prompt_tokens > t.above_tokens)
        {
            Some(tier) => (&tier.rates, Some(tier.above_tokens)),
            None => (&self.base, None),
        }
    }
}

/// A rate card compiled for pricing: every category's effective rate (after the
/// fall-backs of [`Rates::effective`]) as an integer mantissa at one scale, so that a
/// cost is a few integer multiply-adds and one conversion to `Decimal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompiledCard {
    /// The decimal scale of every mantissa.
    pub(crate) scale: u32,
    /// Effective rate mantissas by `RateKind`; negative when the category is unpriced.
    pub(crate) rates: [i128; 10],
    /// Whether reasoning has a rate of its own (and so a line of its own).
    pub(crate) reasoning_apart: bool,
}

impl CompiledCard {
    const UNPRICED: i128 = -1;

    fn compile(card: &Rates) -> Option<CompiledCard> {
        let effective: Vec<Option<Decimal>> =
            RateKind::ALL.iter().map(|k| card.effective(*k)).collect();
        let scale = effective
            .iter()
            .flatten()
            .map(Decimal::scale)
            .max()
            .unwrap_or(0);
        let mut rates = [Self::UNPRICED; 10];
        for (slot, rate) in rates.iter_mut().zip(&effective) {
            if let Some(rate) = rate {
                let shift = 10i128.checked_pow(scale - rate.scale())?;
                *slot = rate.mantissa().checked_mul(shift)?;
            }
        }
        Some(CompiledCard {
            scale,
            rates,
            reasoning_apart: card.get(RateKind::Reasoning).is_some(),
        })
    }

    /// The effective rate mantissa of a category, if priced.
    pub(crate) fn rate(&self, kind: RateKind) -> Option<i128> {
        let rate = self.rates[kind as usize];
        (rate >= 0).then_some(rate)
    }
}

/// A schedule compiled for pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompiledSchedule {
    base: Option<CompiledCard>,
    above: Vec<(u64, Option<CompiledCard>)>,
}

impl CompiledSchedule {
    fn compile(schedule: &Schedule) -> CompiledSchedule {
        CompiledSchedule {
            base: CompiledCard::compile(&schedule.base),
            above: schedule
                .above
                .iter()
                .map(|t| (t.above_tokens, CompiledCard::compile(&t.rates)))
                .collect(),
        }
    }

    /// The card for a prompt size and its threshold; `None` card when its rates do
    /// not fit the integer fast path (an overflow, reported as such).
    pub(crate) fn card_for(&self, prompt_tokens: u64) -> (Option<&CompiledCard>, Option<u64>) {
        match self.above.iter().rev().find(|(t, _)| prompt_tokens > *t) {
            Some((threshold, card)) => (card.as_ref(), Some(*threshold)),
            None => (self.base.as_ref(), None),
        }
    }
}

/// How a service tier other than standard is priced, as written in a price file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierPricing {
    /// Every standard rate and tier multiplied by a factor (batch = 0.5).
    Multiplier(Decimal),
    /// Rates of its own; unnamed categories follow [`Rates::completed_from`].
    Schedule(Box<Schedule>),
}

/// Fees that are not per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fees {
    /// A flat fee per request.
    pub per_request: Option<Decimal>,
    /// Per server-side web search call.
    pub per_web_search: Option<Decimal>,
    /// Per generated image.
    pub per_image: Option<Decimal>,
    /// Per second of input media (transcription and the like).
    pub per_input_second: Option<Decimal>,
    /// Per second of output media (speech, video).
    pub per_output_second: Option<Decimal>,
}

/// The complete price of one model at one point in time.
///
/// Build it with [`ModelPrice::new`]: tier cards are completed once there, so that
/// pricing a request is a pick of a card and a few multiplications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub(crate) provider: Provider,
    pub(crate) model: Arc<str>,
    pub(crate) effective_from: Option<DateTime<Utc>>,
    pub(crate) as_of: Option<NaiveDate>,
    pub(crate) source: Option<Arc<str>>,
    /// Completed schedules, indexed by `ServiceTier as usize`.
    pub(crate) schedules: [Option<Schedule>; 4],
    /// The same schedules, compiled.
    pub(crate) compiled: [Option<CompiledSchedule>; 4],
    pub(crate) fees: Fees,
}

/// The parts of a model price, as a price file writes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelPriceSpec {
    /// Standard-tier schedule.
    pub standard: Schedule,
    /// Other service tiers.
    pub tiers: Vec<(ServiceTier, TierPricing)>,
    /// Fees.
    pub fees: Fees,
    /// From when this price is in force; `None` means since always.
    pub effective_from: Option<DateTime<Utc>>,
    /// The date the price was read from its source.
    pub as_of: Option<NaiveDate>,
    /// Where the price was read.
    pub source: Option<String>,
}

impl ModelPrice {
    /// Builds a model price, completing every tier card.
    pub fn new(provider: Provider, model: &str, mut spec: ModelPriceSpec) -> ModelPrice {
        spec.standard.above.sort_by_key(|t| t.above_tokens);
        let standard = complete_schedule(&spec.standard, None);
        let mut schedules: [Option<Schedule>; 4] = Default::default();
        for (tier, pricing) in &spec.tiers {
            if *tier == ServiceTier::Standard {
                continue;
            }
            let schedule = match pricing {
                TierPricing::Multiplier(factor) => scale_schedule(&standard, *factor),
                TierPricing::Schedule(own) => Some(complete_schedule(own, Some(&standard))),
            };
            schedules[*tier as usize] = schedule;
        }
        schedules[ServiceTier::Standard as usize] = Some(standard);
        let compiled = schedules
            .clone()
            .map(|s| s.as_ref().map(CompiledSchedule::compile));
        ModelPrice {
            provider,
            model: Arc::from(model),
            effective_from: spec.effective_from,
            as_of: spec.as_of,
            source: spec.source.map(Arc::from),
            schedules,
            compiled,
            fees: spec.fees,
        }
    }

    /// The provider whose list this price belongs to.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The model name as the price table keys it.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// From when this price is in force (`None`: since always).
    pub fn effective_from(&self) -> Option<DateTime<Utc>> {
        self.effective_from
    }

    /// The date the price was read from its source.
    pub fn as_of(&self) -> Option<NaiveDate> {
        self.as_of
    }

    /// The page the price was read from.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The completed schedule of a service tier, if the model is offered on it.
    pub fn schedule(&self, tier: ServiceTier) -> Option<&Schedule> {
        self.schedules[tier as usize].as_ref()
    }

    /// The fees that are not per token.
    pub fn fees(&self) -> &Fees {
        &self.fees
    }
}

/// Completes a schedule: each long-context card from the schedule's base, and, for a
/// service tier, the base and each long-context card from the standard schedule.
fn complete_schedule(own: &Schedule, standard: Option<&Schedule>) -> Schedule {
    let base = match standard {
        Some(standard) => own.base.completed_from(&standard.base),
        None => own.base,
    };
    let mut above: Vec<ContextTier> = Vec::new();
    let thresholds: Vec<u64> = match standard {
        // A service tier has the standard schedule's thresholds: the provider switches
        // the whole request at the same prompt size whatever the tier.
        Some(standard) => standard.above.iter().map(|t| t.above_tokens).collect(),
        None => own.above.iter().map(|t| t.above_tokens).collect(),
    };
    for threshold in thresholds {
        let own_card = own
            .above
            .iter()
            .find(|t| t.above_tokens == threshold)
            .map(|t| t.rates);
        let rates = match (own_card, standard) {
            (Some(card), None) => card.completed_from(&own.base),
            (Some(card), Some(standard)) => {
                let std_card = standard.rates_for(threshold.saturating_add(1)).0;
                card.completed_from(&base).completed_from(std_card)
            }
            // The tier names no card above this threshold: derive it from the
            // standard card by the tier's own base ratio.
            (None, Some(standard)) => {
                let std_card = standard.rates_for(threshold.saturating_add(1)).0;
                scale_card_like(std_card, &standard.base, &base)
            }
            (None, None) => continue,
        };
        above.push(ContextTier {
            above_tokens: threshold,
            rates,
        });
    }
    Schedule { base, above }
}

/// `card` moved by the ratio between `tier_base` and `std_base`, side by side, where exact.
fn scale_card_like(card: &Rates, std_base: &Rates, tier_base: &Rates) -> Rates {
    let mut out = Rates::default();
    for kind in RateKind::ALL {
        let Some(rate) = card.get(kind) else { continue };
        out.set(kind, move_rate(rate, kind, std_base, tier_base));
    }
    out
}

fn scale_schedule(standard: &Schedule, factor: Decimal) -> Option<Schedule> {
    let base = standard.base.scaled(factor)?;
    let above = standard
        .above
        .iter()
        .map(|t| {
            Some(ContextTier {
                above_tokens: t.above_tokens,
                rates: t.rates.scaled(factor)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Schedule { base, above })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn fallbacks_never_price_1h_writes_at_the_5m_rate() {
        let with_5m = Rates::default()
            .with(RateKind::Input, d("0.000003"))
            .with(RateKind::CacheWrite5m, d("0.00000375"));
        assert_eq!(with_5m.effective(RateKind::CacheWrite1h), None);
        assert_eq!(with_5m.effective(RateKind::CacheRead), Some(d("0.000003")));
        let plain = Rates::default().with(RateKind::Input, d("0.000001"));
        assert_eq!(plain.effective(RateKind::CacheWrite1h), Some(d("0.000001")));
        assert_eq!(plain.effective(RateKind::Output), None);
    }

    #[test]
    fn tier_cards_move_unnamed_rates_with_their_side() {
        let base = Rates::default()
            .with(RateKind::Input, d("0.000003"))
            .with(RateKind::CacheRead, d("0.0000003"))
            .with(RateKind::CacheWrite1h, d("0.000006"))
            .with(RateKind::Output, d("0.000015"));
        let batch = Rates::default()
            .with(RateKind::Input, d("0.0000015"))
            .with(RateKind::Output, d("0.0000075"));
        let done = batch.completed_from(&base);
        assert_eq!(done.get(RateKind::CacheRead), Some(d("0.00000015")));
        assert_eq!(done.get(RateKind::CacheWrite1h), Some(d("0.000003")));
    }

    #[test]
    fn inexact_ratios_leave_the_rate_unpriced() {
        let base = Rates::default()
            .with(RateKind::Input, d("3"))
            .with(RateKind::CacheRead, d("1"));
        let tier = Rates::default().with(RateKind::Input, d("1"));
        assert_eq!(tier.completed_from(&base).get(RateKind::CacheRead), None);
    }

    #[test]
    fn multiplier_tiers_scale_long_context_cards_too() {
        let spec = ModelPriceSpec {
            standard: Schedule {
                base: Rates::default()
                    .with(RateKind::Input, d("0.000002"))
                    .with(RateKind::Output, d("0.00001")),
                above: vec![ContextTier {
                    above_tokens: 200_000,
                    rates: Rates::default()
                        .with(RateKind::Input, d("0.000004"))
                        .with(RateKind::Output, d("0.000015")),
                }],
            },
            tiers: vec![(ServiceTier::Batch, TierPricing::Multiplier(d("0.5")))],
            ..ModelPriceSpec::default()
        };
        let price = ModelPrice::new(Provider::Gemini, "m", spec);
        let batch = price.schedule(ServiceTier::Batch).unwrap();
        assert_eq!(
            batch.rates_for(200_001).0.get(RateKind::Input),
            Some(d("0.000002"))
        );
        assert_eq!(
            batch.rates_for(200_000).0.get(RateKind::Output),
            Some(d("0.000005"))
        );
        assert!(price.schedule(ServiceTier::Flex).is_none());
    }
}
