//! Routero on the wire.
//!
//! - [`headers`]: pure functions on `http` types that put a request's exact cost, its
//!   usage per category, the model priced and the price version on the response, in
//!   documented `x-routero-…` headers, caller-controlled text escaped.
//!
//! Still to come in this crate: the streaming body wrapper that captures usage and
//! delivers the cost as trailers, and the billing REST API as a framework-free service
//! from `http::Request<Bytes>` to `http::Response<Bytes>`.

pub mod headers;
