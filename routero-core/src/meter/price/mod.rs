//! Price tables: what each model costs, per token and per call, over time.
//!
//! - [`ModelPrice`]: rates per category, long-context tiers, service tiers and fees.
//! - [`PriceTable`]: versioned prices by provider and model, with name normalisation,
//!   aliases, provider fall-backs and workspace overrides.
//! - Formats: Routero's own TOML format ([`mod@file`]) and LiteLLM's JSON map ([`litellm`]);
//!   [`load`] tells them apart.
//! - [`PriceTable::bundled`]: the default table compiled into the crate.

mod diff;
pub mod file;
pub mod litellm;
mod live;
mod model;
mod name;
mod table;

pub use diff::{PriceDiff, PricedModel, RateChange, diff};
pub use litellm::LiteLlmReport;
pub use live::{LayerError, LivePrices, layered};
pub use model::{
    ContextTier, Fees, ModelPrice, ModelPriceSpec, RateKind, Rates, Schedule, TierPricing,
};
pub use table::{LookupError, OverrideError, PriceTable};

use std::sync::{Arc, OnceLock};

use crate::provider::Provider;

/// The bundled price file, in Routero's format.
pub const BUNDLED_PRICES: &str = include_str!("../../../prices/default.toml");

/// A price file that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The text is not valid TOML or JSON.
    #[error("price file syntax: {0}")]
    Syntax(String),
    /// A Routero price file of a format version this build does not read.
    #[error("unsupported price file format {0} (this build reads format {supported})", supported = file::FORMAT_VERSION)]
    UnsupportedFormat(u32),
    /// A value that is present but wrong.
    #[error("{context}: {reason}")]
    Invalid {
        /// Where in the file.
        context: String,
        /// What is wrong.
        reason: String,
    },
}

impl LoadError {
    pub(crate) fn invalid(context: &str, reason: impl Into<String>) -> LoadError {
        LoadError::Invalid {
            context: context.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Loads a price file in either format: a LiteLLM map (a JSON object) or a Routero
/// file (TOML). The LiteLLM report says what was not loaded and why.
pub fn load(text: &str) -> Result<(PriceTable, Option<LiteLlmReport>), LoadError> {
    if text.trim_start().starts_with('{') {
        let (table, report) = litellm::parse(text)?;
        Ok((table, Some(report)))
    } else {
        Ok((file::parse(text)?, None))
    }
}

/// The provider fall-backs of the bundled table: Azure's list prices are OpenAI's;
/// Vertex AI serves Gemini and Claude at Google's and Anthropic's list prices;
/// Bedrock serves Claude at Anthropic's.
pub(crate) fn add_default_fallbacks(table: &mut PriceTable) {
    table.add_fallback(Provider::Azure, Provider::OpenAi);
    table.add_fallback(Provider::VertexAi, Provider::Gemini);
    table.add_fallback(Provider::VertexAi, Provider::Anthropic);
    table.add_fallback(Provider::Bedrock, Provider::Anthropic);
}

impl PriceTable {
    /// The default table compiled into the crate: current list prices of the major
    /// providers, each with the date it was read and its source page.
    ///
    /// Parsed once per process; every call shares the same table.
    pub fn bundled() -> Arc<PriceTable> {
        static BUNDLED: OnceLock<Arc<PriceTable>> = OnceLock::new();
        Arc::clone(BUNDLED.get_or_init(|| match file::parse(BUNDLED_PRICES) {
            Ok(table) => Arc::new(table),
            // A unit test parses the bundled file, so no release can carry a broken one.
            Err(e) => panic!("the bundled price file is invalid: {e}"),
        }))
    }
}
