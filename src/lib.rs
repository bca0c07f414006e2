#![doc = include_str!("../README.md")]

pub use routero_core as core;
pub use routero_core::*;
pub use routero_http as http;
pub use routero_postgres as postgres;
pub use routero_redis as redis;
