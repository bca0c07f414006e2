#![doc = include_str!("../README.md")]
//!
//! Routero on the wire.
//!
//! - [`headers`]: pure functions on `http` types that put a request's exact cost, its
//!   usage per category, the model priced and the price version on the response, in
//!   documented `x-routero-…` headers, caller-controlled text escaped.
//! - [`capture`]: a body wrapper (`http-body`) that passes a streamed response through
//!   unchanged, extracts its usage as it goes, and delivers the cost as trailers and,
//!   where enabled, a final SSE comment line; a body dropped early reports what was
//!   known, marked partial.
//! - `layer` (feature `tower`): [`layer::CostLayer`], the tower layer a hyper or axum
//!   gateway adds in one line to price every response and record its spend.
//! - [`api`]: the billing REST API (wallet, top-ups, transactions, invoices, spend
//!   analytics, daily activity) as a framework-free service from
//!   `http::Request<Bytes>` to `http::Response<Bytes>`, scoped by a [`api::Principal`].
//! - `erp` (feature `client`): the hyper transport ERP pushes go through, and `oauth`:
//!   the ERPs' authentication (OAuth 1.0a signatures, OAuth 2.0 client credentials).

pub mod api;
pub mod capture;
#[cfg(feature = "client")]
pub mod erp;
pub mod headers;
#[cfg(feature = "tower")]
pub mod layer;
#[cfg(feature = "client")]
pub mod oauth;
#[cfg(feature = "ops")]
pub mod ops;
#[cfg(feature = "server")]
pub mod serve;
pub mod telemetry;
