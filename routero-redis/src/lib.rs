//! Routero on Redis.
//!
//! This crate will hold the Redis side of the exactly-once spend pipeline: the spend
//! queue on Redis Streams (one stream per shard, flushed by a Lua script that appends a
//! batch only if its batch id is new) and per-shard leader leases with fencing tokens.
//! It implements the queue and leader ports that `routero-core` defines.
//!
//! It builds today so that the workspace has its final shape; the ports it implements
//! are not yet defined in `routero-core`.
