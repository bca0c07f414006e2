#![doc = include_str!("../README.md")]

pub mod billing;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod meter;
pub mod pipeline;
#[cfg(feature = "tls")]
pub mod tls;

// Every module at the crate's root as well, where embedders found it before the
// floors.
#[cfg(feature = "runtime")]
pub use billing::jobs;
pub use billing::{analytics, control, erp, export, invoice, notice, reprice, wallet};
pub use meter::{attribution, cost, extract, money, price, provider, usage};
#[cfg(feature = "runtime")]
pub use pipeline::{drainer, recorder, schedule, telemetry};
pub use pipeline::{memory, port, quarantine, spend, warehouse};

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
