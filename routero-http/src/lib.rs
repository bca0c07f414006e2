//! Routero on the wire.
//!
//! This crate will hold pure functions on `http` types that attach a request's cost to
//! its response headers, a body wrapper that captures usage from streaming responses
//! and delivers the cost as trailers, and the billing REST API as a framework-free
//! service from `http::Request<Bytes>` to `http::Response<Bytes>`.
//!
//! It builds today so that the workspace has its final shape; what it serves comes
//! with the spend pipeline and the wallet.
