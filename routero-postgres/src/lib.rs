//! Routero on PostgreSQL.
//!
//! This crate will hold the system of record: embedded migrations, the atomic drain
//! transaction (fencing-token and watermark checks, one `UNNEST … ON CONFLICT` rollup
//! upsert), the wallet ledger, invoices and the analytics queries, implementing the
//! store ports that `routero-core` defines.
//!
//! It builds today so that the workspace has its final shape; the ports it implements
//! are not yet defined in `routero-core`.
