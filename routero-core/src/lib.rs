#![doc = include_str!("../README.md")]

pub mod cost;
pub mod extract;
pub mod money;
pub mod price;
pub mod provider;
pub mod usage;

pub use cost::{Cost, CostCategory, CostError, CostLine};
pub use money::Currency;
pub use price::{LoadError, ModelPrice, PriceTable};
pub use provider::Provider;
pub use usage::{ServiceTier, Usage, UsageError};
