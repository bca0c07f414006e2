#![doc = include_str!("../README.md")]

pub mod analytics;
pub mod attribution;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod control;
pub mod cost;
#[cfg(feature = "runtime")]
pub mod drainer;
pub mod erp;
pub mod export;
pub mod extract;
pub mod invoice;
pub mod memory;
pub mod money;
pub mod port;
pub mod price;
pub mod provider;
pub mod quarantine;
#[cfg(feature = "runtime")]
pub mod recorder;
pub mod spend;
pub mod usage;
pub mod wallet;
pub mod warehouse;

pub use cost::{Cost, CostCategory, CostError, CostLine};
pub use money::Currency;
pub use price::{LoadError, ModelPrice, PriceTable};
pub use provider::Provider;
pub use usage::{ServiceTier, Usage, UsageError};

/// The `chrono` Routero's signatures use (times are `chrono::DateTime<Utc>`), so an
/// embedder need not match its version by hand.
pub use chrono;
/// The `rust_decimal` Routero's signatures use (every amount is a `Decimal`).
pub use rust_decimal;
