//! Billing: what spend becomes for the people who pay it.
//!
//! [`wallet`] (the prepaid ledger, its port and usage debits), [`invoice`] (monthly
//! invoices, their rounding, the billing directory), [`control`] (spend controls:
//! wallets and budgets before a request is forwarded), [`analytics`] (daily spend,
//! trend, overview, daily activity), [`export`] (chargeback and FOCUS CSV) and [`erp`]
//! (NetSuite and Coupa pushes), [`jobs`] (month close and ERP push on the
//! scheduler, feature `runtime`); [`notice`] (wallet changes reaching running spend
//! controls); [`reprice`] (past spend priced again, the dry run). It reads the pipeline's rollups and ports.

pub mod analytics;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod control;
pub mod erp;
pub mod export;
pub mod invoice;
#[cfg(feature = "runtime")]
pub mod jobs;
pub(crate) mod memory;
pub mod notice;
pub mod reprice;
pub mod wallet;
