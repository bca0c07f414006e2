//! Usage extraction: a provider's response, turned into a [`Usage`] exactly as the
//! provider bills it.
//!
//! [`from_body`] reads a whole JSON response body (and, where a provider reports usage
//! in headers, the response headers). Each provider's counting rules are applied
//! here, once: cached input inside or outside the input count, reasoning inside or
//! outside the output count, Cohere's billed units, DeepSeek's hit/miss split, and
//! cache writes split by lifetime.
//!
//! A body without usage is [`ExtractError::NoUsage`], never a zero usage.

mod body;
pub mod eventstream;
mod quick;
mod scan;
pub mod sse;
mod stream;

pub use body::from_body;
pub use stream::StreamExtractor;

use rust_decimal::Decimal;

use crate::provider::Provider;
use crate::usage::{Usage, UsageError};

/// Reads `raw` with both of the extractors' JSON readers — the quick reader of
/// usage objects and `serde_json`, which reads whatever the quick one gives up on —
/// as every usage object and event payload type, and panics where the quick reader
/// answers and `serde_json` answers otherwise. Returns how many types the quick
/// reader read. For fuzzing the quick reader (`fuzz/`, target `usage_readers`).
#[cfg(feature = "testing")]
pub fn check_usage_readers(raw: &[u8]) -> usize {
    quick::agree_on_usage(raw) + stream::agree_on_payload(raw)
}

/// What a response says about its own billing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extraction {
    /// The model the response names (`model`, Gemini's `modelVersion`), if any.
    pub model: Option<String>,
    /// The billable usage.
    pub usage: Usage,
    /// The cost the provider itself reports (OpenRouter's `usage.cost`), kept beside
    /// the computed cost.
    pub provider_cost: Option<Decimal>,
    /// Whether the provider reports the request as bring-your-own-key (OpenRouter).
    pub is_byok: Option<bool>,
}

impl Extraction {
    /// A usage, and the model the response names, with nothing else reported.
    pub fn new(model: Option<String>, usage: Usage) -> Extraction {
        Extraction {
            model,
            usage,
            provider_cost: None,
            is_byok: None,
        }
    }
}

/// A response that cannot be turned into a usage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The body is not the JSON or stream the provider sends.
    #[error("malformed {provider} response: {reason}")]
    Malformed {
        /// The provider.
        provider: Provider,
        /// What is wrong.
        reason: String,
    },
    /// The response carries no usage: the cost is unknown, not zero.
    #[error("{provider} response carries no usage")]
    NoUsage {
        /// The provider.
        provider: Provider,
    },
    /// The counts are impossible (negative, absurd, or a part larger than its whole).
    #[error("invalid usage in {provider} response: {source}")]
    InvalidUsage {
        /// The provider.
        provider: Provider,
        /// What is wrong.
        source: UsageError,
    },
    /// A service tier or traffic type that is not billed per token or not known.
    #[error("{provider} served the request on tier \"{tier}\", which is not priced per token")]
    UnpricedTier {
        /// The provider.
        provider: Provider,
        /// The tier as reported (escaped).
        tier: String,
    },
}
