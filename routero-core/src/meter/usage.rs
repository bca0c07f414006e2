//! What a request consumed, in the categories providers bill.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest count of any one category Routero accepts for a single request.
///
/// Ten billion tokens is far beyond any context window; a larger count is a parsing
/// error or an attack, and pricing it would put absurd money on an invoice.
pub const MAX_COUNT: u64 = 10_000_000_000;

/// The service tier a request was served on, as the provider reported it.
///
/// Read the tier from the response, not the request: providers may serve a request on
/// another tier than the one asked for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTier {
    /// The standard, on-demand tier (`default`, `standard`, `auto`, `on_demand`).
    #[default]
    Standard,
    /// Flex processing: slower, discounted (OpenAI, Gemini, Bedrock).
    Flex,
    /// Priority processing: premium price (OpenAI `priority`/`fast`, Gemini, Bedrock, Anthropic).
    Priority,
    /// Batch APIs: asynchronous, usually half price.
    Batch,
}

impl ServiceTier {
    /// Every tier, standard first.
    pub const ALL: [ServiceTier; 4] = [
        ServiceTier::Standard,
        ServiceTier::Flex,
        ServiceTier::Priority,
        ServiceTier::Batch,
    ];

    /// The tier's lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Flex => "flex",
            ServiceTier::Priority => "priority",
            ServiceTier::Batch => "batch",
        }
    }

    /// Maps a provider's tier or traffic-type string to a tier.
    ///
    /// Returns `None` for tiers that are not priced per token (`scale`, `reserved`,
    /// `provisioned_throughput`) or that Routero does not know: the caller must decide,
    /// never assume the standard price.
    pub fn from_provider(value: &str) -> Option<ServiceTier> {
        let tier = match value.to_ascii_lowercase().as_str() {
            "default" | "standard" | "auto" | "on_demand" => ServiceTier::Standard,
            "flex" | "on_demand_flex" => ServiceTier::Flex,
            "priority" | "fast" | "on_demand_priority" => ServiceTier::Priority,
            "batch" | "batches" => ServiceTier::Batch,
            _ => return None,
        };
        Some(tier)
    }
}

impl fmt::Display for ServiceTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The billable consumption of one request.
///
/// The token categories `input_tokens`, `cache_read_tokens`, `cache_write_5m_tokens`,
/// `cache_write_1h_tokens` and `output_tokens` are **disjoint**: together they are
/// everything the provider bills per token, and no token is in two of them. The
/// remaining token fields are **subsets** that refine a category's price:
///
/// | field | subset of | priced at |
/// |---|---|---|
/// | `reasoning_tokens` | `output_tokens` | the reasoning rate, else the output rate |
/// | `audio_input_tokens`, `image_input_tokens` | `input_tokens` | the modality's input rate, else the input rate |
/// | `audio_output_tokens`, `image_output_tokens` | `output_tokens` | the modality's output rate, else the output rate |
///
/// Cache writes are split by lifetime because the premium differs (Anthropic: 1.25× the
/// input rate for 5 minutes, 2× for 1 hour). Writes at a provider's only retention
/// (OpenAI gpt-5.6+) count as `cache_write_5m_tokens`.
///
/// Per-call meters (`web_search_requests`, `images_generated`) and media durations are
/// priced by the fees of the model's price, not per token.
///
/// A `Usage` value always means a known consumption: a stream whose usage is unknown has
/// no `Usage` at all, never a zero one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Input tokens billed at the base input rate: not read from and not written to the cache.
    pub input_tokens: u64,
    /// Input tokens served from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the cache with the short (5-minute, or the provider's only) lifetime.
    pub cache_write_5m_tokens: u64,
    /// Input tokens written to the cache with the 1-hour lifetime.
    pub cache_write_1h_tokens: u64,
    /// All billed output tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `output_tokens` that is reasoning, where the provider reports it.
    pub reasoning_tokens: Option<u64>,
    /// The part of `input_tokens` that is audio.
    pub audio_input_tokens: u64,
    /// The part of `input_tokens` that is image.
    pub image_input_tokens: u64,
    /// The part of `output_tokens` that is audio.
    pub audio_output_tokens: u64,
    /// The part of `output_tokens` that is image.
    pub image_output_tokens: u64,
    /// Server-side web search calls billed per call.
    pub web_search_requests: u64,
    /// Images generated, for models priced per image.
    pub images_generated: u64,
    /// Input media length in milliseconds, for models priced per second of input.
    pub input_duration_ms: u64,
    /// Output media length in milliseconds, for models priced per second of output.
    pub output_duration_ms: u64,
    /// The service tier the provider reports it served the request on.
    pub service_tier: ServiceTier,
}

impl Usage {
    /// A usage of plain input and output tokens on the standard tier.
    pub fn tokens(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    /// All cache-write tokens, whatever their lifetime.
    pub fn cache_write_tokens(&self) -> u64 {
        self.cache_write_5m_tokens
            .saturating_add(self.cache_write_1h_tokens)
    }

    /// The whole prompt: uncached input, cache reads and cache writes.
    ///
    /// Long-context price tiers are decided on this number.
    pub fn total_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens())
    }

    /// Every billed token, input and output.
    pub fn total_tokens(&self) -> u64 {
        self.total_input_tokens().saturating_add(self.output_tokens)
    }

    /// Checks that every count is within [`MAX_COUNT`] and that every subset fits in
    /// the category it refines.
    pub fn validate(&self) -> Result<(), UsageError> {
        let all = self.input_tokens
            | self.cache_read_tokens
            | self.cache_write_5m_tokens
            | self.cache_write_1h_tokens
            | self.output_tokens
            | self.reasoning_tokens.unwrap_or(0)
            | self.audio_input_tokens
            | self.image_input_tokens
            | self.audio_output_tokens
            | self.image_output_tokens
            | self.web_search_requests
            | self.images_generated
            | self.input_duration_ms
            | self.output_duration_ms;
        // The bitwise or is at least every count and below twice the largest: when it
        // is within the limit, every count is, and the field-by-field check is skipped.
        if all > MAX_COUNT {
            self.check_limits()?;
        }
        self.check_subsets()
    }

    fn check_limits(&self) -> Result<(), UsageError> {
        let counts = [
            ("input_tokens", self.input_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
            ("cache_write_5m_tokens", self.cache_write_5m_tokens),
            ("cache_write_1h_tokens", self.cache_write_1h_tokens),
            ("output_tokens", self.output_tokens),
            ("reasoning_tokens", self.reasoning_tokens.unwrap_or(0)),
            ("audio_input_tokens", self.audio_input_tokens),
            ("image_input_tokens", self.image_input_tokens),
            ("audio_output_tokens", self.audio_output_tokens),
            ("image_output_tokens", self.image_output_tokens),
            ("web_search_requests", self.web_search_requests),
            ("images_generated", self.images_generated),
            ("input_duration_ms", self.input_duration_ms),
            ("output_duration_ms", self.output_duration_ms),
        ];
        for (field, value) in counts {
            if value > MAX_COUNT {
                return Err(UsageError::Absurd { field, value });
            }
        }
        Ok(())
    }

    fn check_subsets(&self) -> Result<(), UsageError> {
        let subsets = [
            (
                "reasoning_tokens",
                self.reasoning_tokens.unwrap_or(0),
                "output_tokens",
                self.output_tokens,
            ),
            (
                "audio_input_tokens + image_input_tokens",
                self.audio_input_tokens + self.image_input_tokens,
                "input_tokens",
                self.input_tokens,
            ),
            (
                "audio_output_tokens + image_output_tokens",
                self.audio_output_tokens + self.image_output_tokens,
                "output_tokens",
                self.output_tokens,
            ),
        ];
        for (part, part_value, whole, whole_value) in subsets {
            if part_value > whole_value {
                return Err(UsageError::SubsetExceedsWhole {
                    part,
                    part_value,
                    whole,
                    whole_value,
                });
            }
        }
        Ok(())
    }
}

/// A usage that cannot be priced because its counts are impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A count above [`MAX_COUNT`].
    #[error("{field} = {value} is beyond any real request (limit {MAX_COUNT})")]
    Absurd {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A count that is negative in the provider's response.
    #[error("{field} = {value} is negative")]
    Negative {
        /// The field.
        field: &'static str,
        /// Its value as the provider sent it.
        value: i64,
    },
    /// A subset larger than the category it is part of.
    #[error("{part} = {part_value} exceeds {whole} = {whole_value}, of which it is a part")]
    SubsetExceedsWhole {
        /// The subset.
        part: &'static str,
        /// Its value.
        part_value: u64,
        /// The category it refines.
        whole: &'static str,
        /// The category's value.
        whole_value: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_disjoint_categories() {
        let usage = Usage {
            input_tokens: 2113,
            cache_read_tokens: 12288,
            cache_write_5m_tokens: 1024,
            cache_write_1h_tokens: 2048,
            output_tokens: 612,
            ..Usage::default()
        };
        assert_eq!(usage.cache_write_tokens(), 3072);
        assert_eq!(usage.total_input_tokens(), 17473);
        assert_eq!(usage.total_tokens(), 18085);
        assert_eq!(usage.validate(), Ok(()));
    }

    #[test]
    fn absurd_and_inconsistent_counts_are_refused() {
        let absurd = Usage::tokens(MAX_COUNT + 1, 0);
        assert!(matches!(
            absurd.validate(),
            Err(UsageError::Absurd {
                field: "input_tokens",
                ..
            })
        ));
        let mut reasoning = Usage::tokens(10, 5);
        reasoning.reasoning_tokens = Some(6);
        assert!(matches!(
            reasoning.validate(),
            Err(UsageError::SubsetExceedsWhole { .. })
        ));
        let mut audio = Usage::tokens(10, 5);
        audio.audio_input_tokens = 8;
        audio.image_input_tokens = 3;
        assert!(audio.validate().is_err());
    }

    #[test]
    fn tiers_from_provider_strings() {
        assert_eq!(
            ServiceTier::from_provider("default"),
            Some(ServiceTier::Standard)
        );
        assert_eq!(
            ServiceTier::from_provider("ON_DEMAND_FLEX"),
            Some(ServiceTier::Flex)
        );
        assert_eq!(
            ServiceTier::from_provider("fast"),
            Some(ServiceTier::Priority)
        );
        assert_eq!(ServiceTier::from_provider("scale"), None);
        assert_eq!(ServiceTier::from_provider("reserved"), None);
    }
}
