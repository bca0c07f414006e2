#![doc = include_str!("../README.md")]

pub use routero_core as core;
pub use routero_core::*;
#[cfg(feature = "http")]
pub use routero_http as http;
#[cfg(feature = "postgres")]
pub use routero_postgres as postgres;
#[cfg(feature = "redis")]
pub use routero_redis as redis;
/// The warehouse sync (`routero-warehouse`), with the port's row types.
#[cfg(feature = "warehouse")]
pub use routero_warehouse as warehouse;
