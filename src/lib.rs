//! Routero: real-time costing, spend attribution and billing for LLM gateways.
//!
//! This facade re-exports the workspace's crates under one name. See
//! [`routero_core`] for the value types, price tables and cost engine.

pub use routero_core as core;
pub use routero_core::*;
