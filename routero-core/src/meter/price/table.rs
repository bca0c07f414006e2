//! The price table: versioned model prices, lookup with normalisation, overrides.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::money::Currency;
use crate::price::model::ModelPrice;
use crate::price::name;
use crate::provider::Provider;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Every price of one model, oldest `effective_from` first.
#[derive(Debug, Clone, Default)]
struct Versions(Vec<Arc<ModelPrice>>);

impl Versions {
    fn insert(&mut self, price: Arc<ModelPrice>) {
        // A price with the same start replaces the older one.
        self.0.retain(|p| p.effective_from != price.effective_from);
        self.0.push(price);
        self.0.sort_by_key(|p| p.effective_from);
    }

    /// The price in force at `at`: the latest whose start is not after it.
    fn at(&self, at: DateTime<Utc>) -> Option<&Arc<ModelPrice>> {
        self.0
            .iter()
            .rev()
            .find(|p| p.effective_from.is_none_or(|from| from <= at))
    }
}

/// Where an alias points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AliasTarget {
    provider: Provider,
    model: Arc<str>,
}

/// A versioned table of model prices.
///
/// Lookups go, for the provider asked and then for each provider it falls back to,
/// through the name as given and then its normalised forms, most specific first:
/// without leading path segments (`openai/gpt-4o` → `gpt-4o`), without a Bedrock geo
/// prefix, `:N` or `-vN` version or vendor (`us.anthropic.claude-…-v2:0` →
/// `claude-…`), and without a date or version stamp (`-2024-08-06`, `-20250929`,
/// `@20250929`, `-0613`, `-002`, `-latest`). Each form is tried as an alias, then as a
/// model. The first hit wins, so a dated model with its own entry uses it and one
/// without uses its base.
///
/// A table is immutable once built and cheap to share behind an [`Arc`].
#[derive(Debug, Clone)]
pub struct PriceTable {
    version: Arc<str>,
    currency: Currency,
    models: Map<Provider, Map<Box<str>, Versions>>,
    aliases: Map<Provider, Map<Box<str>, AliasTarget>>,
    fallbacks: Map<Provider, Vec<Provider>>,
}

impl PriceTable {
    /// An empty table with a version id and currency.
    pub fn new(version: &str, currency: Currency) -> PriceTable {
        PriceTable {
            version: Arc::from(version),
            currency,
            models: Map::default(),
            aliases: Map::default(),
            fallbacks: Map::default(),
        }
    }

    /// Renames the table's version (what its costs record).
    pub fn set_version(&mut self, version: &str) {
        self.version = Arc::from(version);
    }

    /// The version id every [`Cost`](crate::cost::Cost) priced from this table records.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version id, shared.
    pub fn version_arc(&self) -> &Arc<str> {
        &self.version
    }

    /// The currency of every price in the table.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Adds a price. A price for the same provider, model and start replaces it.
    pub fn insert(&mut self, price: ModelPrice) {
        let provider = price.provider.clone();
        let model: Box<str> = Box::from(&*price.model);
        self.models
            .entry(provider)
            .or_default()
            .entry(model)
            .or_default()
            .insert(Arc::new(price));
    }

    /// Makes `alias` under `provider` resolve to `model` under `target`.
    ///
    /// Use it for Azure and Vertex deployment names, or any name a gateway gives a
    /// model: `add_alias(Provider::Azure, "prod-gpt4o", Provider::OpenAi, "gpt-4o")`.
    pub fn add_alias(&mut self, provider: Provider, alias: &str, target: Provider, model: &str) {
        self.aliases.entry(provider).or_default().insert(
            Box::from(alias),
            AliasTarget {
                provider: target,
                model: Arc::from(model),
            },
        );
    }

    /// Makes lookups for `provider` that find nothing try `to` next.
    ///
    /// The bundled table falls back from Azure to OpenAI (the same list prices for
    /// global deployments), from Vertex AI to Gemini and Anthropic, and from Bedrock to
    /// Anthropic. The [`Cost`](crate::cost::Cost) records the provider and model that were priced.
    pub fn add_fallback(&mut self, provider: Provider, to: Provider) {
        let list = self.fallbacks.entry(provider).or_default();
        if !list.contains(&to) {
            list.push(to);
        }
    }

    /// Whether the table has a price keyed exactly by this provider and model.
    pub fn contains(&self, provider: &Provider, model: &str) -> bool {
        self.models
            .get(provider)
            .is_some_and(|m| m.contains_key(model))
    }

    /// How many (provider, model) entries the table holds.
    pub fn len(&self) -> usize {
        self.models.values().map(Map::len).sum()
    }

    /// Whether the table holds no price.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every price, every version, in no particular order.
    pub fn prices(&self) -> impl Iterator<Item = &ModelPrice> {
        self.models
            .values()
            .flat_map(|m| m.values())
            .flat_map(|v| v.0.iter().map(|p| &**p))
    }

    /// The price of `model` served by `provider`, in force at `at`.
    pub fn lookup(
        &self,
        provider: &Provider,
        model: &str,
        at: DateTime<Utc>,
    ) -> Result<&Arc<ModelPrice>, LookupError> {
        let mut found_later = false;
        let mut chain: [Option<&Provider>; 4] = [Some(provider), None, None, None];
        if let Some(more) = self.fallbacks.get(provider) {
            for (slot, p) in chain[1..].iter_mut().zip(more) {
                *slot = Some(p);
            }
        }
        for p in chain.into_iter().flatten() {
            match self.lookup_one(p, model, at) {
                Ok(price) => return Ok(price),
                Err(later) => found_later |= later,
            }
        }
        if found_later {
            return Err(LookupError::NoPriceInForce {
                provider: provider.clone(),
                model: model.escape_debug().to_string(),
                at,
            });
        }
        Err(LookupError::UnknownModel {
            provider: provider.clone(),
            model: model.escape_debug().to_string(),
        })
    }

    /// One provider: for every candidate name, its alias, then its own price.
    /// `Err(true)` when a price exists but starts after `at`.
    fn lookup_one(
        &self,
        provider: &Provider,
        model: &str,
        at: DateTime<Utc>,
    ) -> Result<&Arc<ModelPrice>, bool> {
        let models = self.models.get(provider);
        let aliases = self.aliases.get(provider);
        if models.is_none() && aliases.is_none() {
            return Err(false);
        }
        let mut found_later = false;
        let mut try_name = |name: &str| -> Option<&Arc<ModelPrice>> {
            let versions = aliases
                .and_then(|a| a.get(name))
                .and_then(|to| self.models.get(&to.provider)?.get(&*to.model))
                .or_else(|| models?.get(name))?;
            let price = versions.at(at);
            found_later |= price.is_none();
            price
        };
        // The exact name first, without building the candidate list.
        if let Some(price) = try_name(model) {
            return Ok(price);
        }
        for candidate in name::candidates(model).iter().skip(1) {
            if let Some(price) = try_name(candidate) {
                return Ok(price);
            }
        }
        Err(found_later)
    }

    /// A new table: this one with `overrides` layered on top.
    ///
    /// A model the overrides price replaces every version of that model here; their
    /// aliases and fallbacks are added. The new version id is `"{self}+{overrides}"`,
    /// so a cost records that negotiated prices were used. Build it once per
    /// workspace and share it; lookups cost the same as on a plain table.
    pub fn with_overrides(&self, overrides: &PriceTable) -> Result<PriceTable, OverrideError> {
        if overrides.currency != self.currency {
            return Err(OverrideError::CurrencyMismatch {
                base: self.currency,
                overrides: overrides.currency,
            });
        }
        let mut merged = self.clone();
        merged.version = Arc::from(format!("{}+{}", self.version, overrides.version));
        for (provider, models) in &overrides.models {
            let target = merged.models.entry(provider.clone()).or_default();
            for (model, versions) in models {
                target.insert(model.clone(), versions.clone());
            }
        }
        for (provider, aliases) in &overrides.aliases {
            let target = merged.aliases.entry(provider.clone()).or_default();
            for (alias, to) in aliases {
                target.insert(alias.clone(), to.clone());
            }
        }
        for (provider, list) in &overrides.fallbacks {
            for to in list {
                merged.add_fallback(provider.clone(), to.clone());
            }
        }
        Ok(merged)
    }
}

/// Overrides that cannot be layered over a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// The overrides are priced in another currency.
    #[error("override prices are in {overrides}, the table is in {base}")]
    CurrencyMismatch {
        /// The table's currency.
        base: Currency,
        /// The overrides' currency.
        overrides: Currency,
    },
}

/// No price for a model at a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
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
}
