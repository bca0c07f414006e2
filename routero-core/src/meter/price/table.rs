//! The price table: versioned model prices, lookup with normalisation, overrides.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
#[derive(Debug)]
pub struct PriceTable {
    version: Arc<str>,
    currency: Currency,
    /// Each (provider, model)'s index in `entries`.
    models: Map<Provider, Map<Box<str>, usize>>,
    /// Every model's prices.
    entries: Vec<Versions>,
    aliases: Map<Provider, Map<Box<str>, AliasTarget>>,
    fallbacks: Map<Provider, Vec<Provider>>,
    /// This content's identity for the resolved-name cache: new at every change.
    id: u64,
}

impl Clone for PriceTable {
    /// A copy with an identity of its own: whatever changes it later, no cached
    /// resolution of this table is taken for one of the copy.
    fn clone(&self) -> PriceTable {
        PriceTable {
            version: self.version.clone(),
            currency: self.currency,
            models: self.models.clone(),
            entries: self.entries.clone(),
            aliases: self.aliases.clone(),
            fallbacks: self.fallbacks.clone(),
            id: next_id(),
        }
    }
}

/// A fresh table identity.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The most names one thread remembers resolving, per table.
const RESOLVED_CAPACITY: usize = 4096;

/// Names that resolved to another entry (a dated or decorated name to its base, an
/// alias, a fallback provider's model), remembered per thread for the table last
/// used there: the next lookup of the same name is two map lookups instead of the
/// candidate walk. Only resolutions that hold at every time are kept (no candidate
/// tried before the hit had a price starting later), so the cache answers what the
/// walk would, at any `at`; a hit whose entry has no price at `at` takes the walk.
struct Resolved {
    table: u64,
    len: usize,
    names: Map<Provider, Map<Box<str>, usize>>,
}

thread_local! {
    static RESOLVED: RefCell<Resolved> = RefCell::new(Resolved {
        table: 0,
        len: 0,
        names: Map::default(),
    });
}

impl PriceTable {
    /// An empty table with a version id and currency.
    pub fn new(version: &str, currency: Currency) -> PriceTable {
        PriceTable {
            version: Arc::from(version),
            currency,
            models: Map::default(),
            entries: Vec::new(),
            aliases: Map::default(),
            fallbacks: Map::default(),
            id: next_id(),
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
        self.id = next_id();
        let provider = price.provider.clone();
        let model: Box<str> = Box::from(&*price.model);
        let next = self.entries.len();
        let index = *self
            .models
            .entry(provider)
            .or_default()
            .entry(model)
            .or_insert(next);
        if index == next {
            self.entries.push(Versions::default());
        }
        self.entries[index].insert(Arc::new(price));
    }

    /// Makes `alias` under `provider` resolve to `model` under `target`.
    ///
    /// Use it for Azure and Vertex deployment names, or any name a gateway gives a
    /// model: `add_alias(Provider::Azure, "prod-gpt4o", Provider::OpenAi, "gpt-4o")`.
    pub fn add_alias(&mut self, provider: Provider, alias: &str, target: Provider, model: &str) {
        self.id = next_id();
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
        self.id = next_id();
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
        self.entries.iter().flat_map(|v| v.0.iter().map(|p| &**p))
    }

    /// The price of `model` served by `provider`, in force at `at`.
    pub fn lookup(
        &self,
        provider: &Provider,
        model: &str,
        at: DateTime<Utc>,
    ) -> Result<&Arc<ModelPrice>, LookupError> {
        // The exact name, then a name resolved before on this thread.
        if let Some(price) = self.entry(provider, model).and_then(|(_, v)| v.at(at)) {
            return Ok(price);
        }
        if let Some(price) = self.resolved(provider, model, at) {
            return Ok(price);
        }
        let mut found_later = false;
        let mut chain: [Option<&Provider>; 4] = [Some(provider), None, None, None];
        if let Some(more) = self.fallbacks.get(provider) {
            for (slot, p) in chain[1..].iter_mut().zip(more) {
                *slot = Some(p);
            }
        }
        for p in chain.into_iter().flatten() {
            if let Some((index, price)) = self.lookup_one(p, model, at, &mut found_later) {
                if !found_later {
                    self.remember(provider, model, index);
                }
                return Ok(price);
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

    /// The entry a name has under a provider: its alias's target, else its own; with
    /// its index.
    fn entry(&self, provider: &Provider, name: &str) -> Option<(usize, &Versions)> {
        let model = |provider: &Provider, name: &str| {
            let index = *self.models.get(provider)?.get(name)?;
            Some((index, self.entries.get(index)?))
        };
        self.aliases
            .get(provider)
            .and_then(|a| a.get(name))
            .and_then(|to| model(&to.provider, &to.model))
            .or_else(|| model(provider, name))
    }

    /// The price of a name this thread resolved before on this table, if it has
    /// one at `at`.
    fn resolved(
        &self,
        provider: &Provider,
        model: &str,
        at: DateTime<Utc>,
    ) -> Option<&Arc<ModelPrice>> {
        RESOLVED.with(|cell| {
            let cache = cell.try_borrow().ok()?;
            if cache.table != self.id {
                return None;
            }
            let index = *cache.names.get(provider)?.get(model)?;
            self.entries.get(index)?.at(at)
        })
    }

    /// Remembers that `model` under `provider` resolves to the entry `index`.
    fn remember(&self, provider: &Provider, model: &str, index: usize) {
        RESOLVED.with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return;
            };
            if cache.table != self.id {
                cache.table = self.id;
                cache.len = 0;
                cache.names.clear();
            }
            if cache.len >= RESOLVED_CAPACITY {
                return;
            }
            cache.len += 1;
            cache
                .names
                .entry(provider.clone())
                .or_default()
                .insert(Box::from(model), index);
        });
    }

    /// One provider: for every candidate name, its alias, then its own price; with
    /// the key of the model that priced it. Sets `found_later` when a candidate has
    /// prices, none in force at `at`.
    fn lookup_one(
        &self,
        provider: &Provider,
        model: &str,
        at: DateTime<Utc>,
        found_later: &mut bool,
    ) -> Option<(usize, &Arc<ModelPrice>)> {
        if !self.models.contains_key(provider) && !self.aliases.contains_key(provider) {
            return None;
        }
        for candidate in name::candidates(model).iter() {
            if let Some((index, versions)) = self.entry(provider, candidate) {
                match versions.at(at) {
                    Some(price) => return Some((index, price)),
                    None => *found_later = true,
                }
            }
        }
        None
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
            for (model, &index) in models {
                let versions = overrides.entries[index].clone();
                let next = merged.entries.len();
                let at = *merged
                    .models
                    .entry(provider.clone())
                    .or_default()
                    .entry(model.clone())
                    .or_insert(next);
                if at == next {
                    merged.entries.push(versions);
                } else {
                    merged.entries[at] = versions;
                }
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
