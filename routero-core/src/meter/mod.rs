//! The meter: from a provider's response to an exact, attributed cost.
//!
//! [`usage`] (what a request consumed, in disjoint billable categories), [`extract`]
//! (usage from whole bodies and from SSE and AWS event streams cut anywhere),
//! [`price`] (price tables: versions, lookup, aliases, fall-backs, overrides, the
//! TOML and LiteLLM formats), [`cost`] (exact cost = price × usage, line by line),
//! [`money`] (currencies, the money grammar, exchange rates), [`attribution`] (who
//! spends, and how it is billed) and [`provider`]. Nothing here depends on the
//! pipeline or on billing.

pub mod attribution;
pub mod cost;
pub mod extract;
pub mod money;
pub mod price;
pub mod provider;
pub mod usage;
