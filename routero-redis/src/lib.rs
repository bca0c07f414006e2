#![doc = include_str!("../README.md")]
//!
//! Routero on Redis: the spend queue on Redis Streams and per-shard leader leases with
//! fencing tokens, implementing [`routero_core::port::SpendQueue`] and
//! [`routero_core::port::LeaderElector`].
//!
//! # Keys
//!
//! Every key starts with a configurable prefix and carries the shard as a hash tag,
//! so that a shard's keys live in one cluster slot and a Lua script may touch them
//! together:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:{N}:stream` | stream | the shard's batches, one entry each (field `b`, the encoded batch: wire format v2, binary; v1, JSON, is still read) |
//! | `{prefix}:{N}:batch:{id}` | string, with a TTL | a batch id seen, for deduplication |
//! | `{prefix}:{N}:lease` | string, with a TTL | `holder\|token` of the shard's leader |
//! | `{prefix}:{N}:fence` | counter | the shard's last fencing token |
//! | `{prefix}:{N}:read` | string | the last entry a drainer read, written only with [`RedisConfig::wait_replicas`] (a write to `WAIT` after) |
//! | `{prefix}:{N}:sealed` | string | set when a newer layout replaced the shard's: appends are answered [`AppendOutcome::Moved`] |
//! | `{prefix}:{N}:retired` | string | set once a sealed shard is drained to the end |
//! | `{prefix}:layout` | string | the [`ShardLayout`] (`version first shards [retiring-first retiring-count]`); absent: version 0 with [`RedisConfig::shards`] shards |
//!
//! # Protocol
//!
//! - **Flush**: one round trip, `append.lua`: `SET batch-key NX PX ttl`, and only if it
//!   was new, `XADD`. A flush retried after a lost reply finds its key and adds nothing.
//!   Batch ids are remembered for [`RedisConfig::dedup_ttl`] (24 h by default): a retry
//!   later than that would be appended twice, and the recorder never retries that long.
//! - **Read** after the store's watermark with `XRANGE (watermark + COUNT n`; **trim**
//!   through a committed watermark with `XTRIM MINID`.
//! - **Changing the number of shards** ([`Redis::reshard`]): the new layout is
//!   written (compare-and-set, `layout.lua`), then every shard of the old one is
//!   sealed; `append.lua` answers a sealed shard's append with `0`, and the recorder
//!   reads the layout again and routes the events to the new shards. A drainer
//!   retires an old shard once it is sealed and empty (`retire.lua`); when the last
//!   one is retired the layout forgets them and the new shards are drained.
//! - **Leases**: `acquire.lua` takes the lease with `SET NX PX` and a fencing token
//!   from `INCR` on the shard's counter; `renew.lua` and `release.lua` compare the
//!   holder and token before they touch the lease.
//!
//! # Persistence
//!
//! Exactly-once needs Redis to keep what it acknowledged: run it with the append-only
//! file on (`appendonly yes`). With `appendfsync everysec` a crash of the Redis host
//! (not of the process: a killed `redis-server` loses nothing the kernel has) can lose
//! the last second of flushed batches and fencing-token increments; with
//! `appendfsync always`, nothing. Without persistence a Redis restart loses every
//! batch not yet drained, and resets the fencing counters, after which the store
//! refuses every drainer as stale until the counters pass the store's last token
//! (set them with `SET {prefix}:{N}:fence <token>` to recover).
//!
//! # Redis Cluster
//!
//! A `redis-cluster://host:port,host:port` URL ([`RedisConfig::url`]) runs the same
//! queue, leases and controls on a cluster: every key of a shard (and every control
//! key of an org) carries one hash tag, so each script and transaction stays in one
//! slot, and the client follows `MOVED` and `ASK` while slots migrate (a script
//! caught mid-migration answers `TRYAGAIN` and is retried). Replication is
//! asynchronous: [`RedisConfig::wait_replicas`] makes appends and drains wait for the
//! replicas, so that a master's failover neither loses an acknowledged append nor
//! applies an entry twice.

mod control;
pub mod notice;
pub mod wire;

pub use control::RedisControl;
pub use notice::RedisWalletNotices;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::cmd;
use fred::prelude::{Builder, ClientLike, Config, Pool, ReconnectPolicy, TcpConfig};
use fred::types::Value;
use fred::types::config::TlsConnector;
use fred::types::scripts::Script;
use routero_core::port::{
    AppendOutcome, BackendError, ErrorKind, FencingToken, LeaderElector, Lease, SpendQueue,
    UnreadableEntry,
};
use routero_core::spend::{QueuePosition, QueuedBatch, ShardId, ShardLayout, SpendBatch};
pub use routero_core::tls::Identity;
use routero_core::tls::{Roots, Verify, client_config};

/// How to reach Redis and lay out the keys.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS (the server's
    /// certificate and host name are verified against [`ca_file`](Self::ca_file),
    /// else the system's roots). A Redis Cluster is `redis-cluster://` (or
    /// `rediss-cluster://`) with one or more seed nodes, comma separated
    /// (`redis-cluster://10.0.0.1:7000,10.0.0.2:7000`) or in fred's form
    /// (`redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000`); the client learns the
    /// slots from them and follows `MOVED` and `ASK` redirections.
    pub url: String,
    /// The CA certificates (PEM) a `rediss://` server's certificate must chain to
    /// (`None`: the system's store).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key, for a server that asks for one
    /// (`tls-auth-clients yes`).
    pub client_identity: Option<Identity>,
    /// The key prefix (several deployments, or tests, can share one Redis).
    pub prefix: String,
    /// How many shards the queue has while its layout was never changed (no
    /// `{prefix}:layout` key): every recorder and coworker must agree on it. Once
    /// [`Redis::reshard`] has changed it, the stored layout rules and this is not
    /// read.
    pub shards: u16,
    /// Connections in the pool (fred pipelines commands on each).
    pub pool_size: usize,
    /// How long a command may take before it fails with a timeout.
    pub command_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long batch ids are remembered for deduplication.
    pub dedup_ttl: Duration,
    /// Acknowledge an append, and hand a drainer what it read, only once this many
    /// replicas of the master hold it (`WAIT`; 0, the default: when the master has
    /// it). Redis replicates asynchronously, and a failover promotes a replica that
    /// may lack the master's last writes: an append acknowledged before a replica
    /// had it is lost, and an entry drained before a replica had it (its append
    /// unacknowledged, so sent again) would be applied twice. With 1 (one replica
    /// per master is enough) neither happens; an append or read that no replica
    /// confirms within [`wait_timeout`](Self::wait_timeout) fails as unavailable
    /// and is retried (appends deduplicated by batch id), so a master whose
    /// replicas are all down takes no spend until one is back. Recorders and
    /// coworkers should agree.
    pub wait_replicas: u16,
    /// How long an append waits for [`wait_replicas`](Self::wait_replicas).
    pub wait_timeout: Duration,
}

impl RedisConfig {
    /// The defaults for a URL: prefix `routero`, 16 shards, 4 connections, 2 s
    /// command timeout, 2 s connect timeout, 24 h deduplication window.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            ca_file: None,
            client_identity: None,
            prefix: "routero".to_owned(),
            shards: 16,
            pool_size: 4,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            dedup_ttl: Duration::from_secs(24 * 3600),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
        }
    }

    /// The configuration the examples and the coworker take from the environment, or
    /// `None` when `ROUTERO_REDIS_URL` is not set: the URL, `ROUTERO_REDIS_PREFIX`,
    /// `ROUTERO_SHARDS` (every recorder and coworker must agree),
    /// `ROUTERO_REDIS_WAIT_REPLICAS` and `ROUTERO_REDIS_WAIT_TIMEOUT_MS`
    /// ([`wait_replicas`](Self::wait_replicas)), and the TLS files of
    /// [`tls_from_env`](Self::tls_from_env).
    pub fn from_env() -> Result<Option<RedisConfig>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(url) = var("ROUTERO_REDIS_URL") else {
            return Ok(None);
        };
        let mut config = RedisConfig::new(url).tls_from_env()?;
        if let Some(prefix) = var("ROUTERO_REDIS_PREFIX") {
            config.prefix = prefix;
        }
        if let Some(shards) = var("ROUTERO_SHARDS") {
            config.shards = shards
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or("ROUTERO_SHARDS must be a number from 1 to 65535")?;
        }
        if let Some(replicas) = var("ROUTERO_REDIS_WAIT_REPLICAS") {
            config.wait_replicas = replicas
                .parse()
                .map_err(|_| "ROUTERO_REDIS_WAIT_REPLICAS must be a number of replicas")?;
        }
        if let Some(ms) = var("ROUTERO_REDIS_WAIT_TIMEOUT_MS") {
            let ms: u64 =
                ms.parse().ok().filter(|&ms| ms > 0).ok_or(
                    "ROUTERO_REDIS_WAIT_TIMEOUT_MS must be a positive number of milliseconds",
                )?;
            config.wait_timeout = Duration::from_millis(ms);
        }
        Ok(Some(config))
    }
}

/// The URL in the form fred takes: a cluster's comma-separated seed nodes become its
/// `node=` parameters.
fn fred_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    if !scheme.ends_with("-cluster") {
        return url.into();
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let mut hosts = hosts.split(',').filter(|h| !h.is_empty());
    let Some(first) = hosts.next() else {
        return url.into();
    };
    let others: Vec<&str> = hosts.collect();
    if others.is_empty() {
        return url.into();
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let mut out = format!("{scheme}://{userinfo}{first}{path}?");
    out.push_str(
        &others
            .iter()
            .map(|h| format!("node={h}"))
            .collect::<Vec<_>>()
            .join("&"),
    );
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        out.push('&');
        out.push_str(query);
    }
    out.into()
}

impl RedisConfig {
    /// The TLS files from the environment, as the coworker and the examples take them:
    /// `ROUTERO_REDIS_CA_FILE` (PEM CA certificates for a `rediss://` URL) and
    /// `ROUTERO_REDIS_CLIENT_CERT` with `ROUTERO_REDIS_CLIENT_KEY` (a client
    /// certificate, for a server that asks for one).
    pub fn tls_from_env(mut self) -> Result<RedisConfig, String> {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(ca) = var("ROUTERO_REDIS_CA_FILE") {
            self.ca_file = Some(ca);
        }
        match (
            var("ROUTERO_REDIS_CLIENT_CERT"),
            var("ROUTERO_REDIS_CLIENT_KEY"),
        ) {
            (Some(cert), Some(key)) => self.client_identity = Some(Identity { cert, key }),
            (None, None) => {}
            _ => {
                return Err(
                    "ROUTERO_REDIS_CLIENT_CERT and ROUTERO_REDIS_CLIENT_KEY go together".to_owned(),
                );
            }
        }
        Ok(self)
    }
}

/// The connection pool and the loaded scripts, shared by the queue and the elector.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    config: Arc<RedisConfig>,
    scripts: Arc<Scripts>,
    /// The shard layout as last read.
    layout: Arc<std::sync::RwLock<ShardLayout>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.config.prefix)
            .field("shards", &self.config.shards)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    append: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    layout: Script,
    retire: Script,
}

/// Maps a fred error onto the portable kinds.
fn backend(error: fred::error::Error) -> BackendError {
    use fred::error::ErrorKind as Fred;
    let details = error.details().to_owned();
    let kind = match error.kind() {
        Fred::IO | Fred::Canceled | Fred::Routing => ErrorKind::Unavailable,
        Fred::Timeout => ErrorKind::Timeout,
        // The server answers LOADING while it replays its append-only file, and BUSY
        // while a script runs: both pass.
        _ if details.starts_with("LOADING")
            || details.starts_with("BUSY")
            || details.starts_with("TRYAGAIN") =>
        {
            ErrorKind::Unavailable
        }
        Fred::Protocol | Fred::Parse => ErrorKind::Corrupt,
        Fred::Config | Fred::Url | Fred::Auth | Fred::InvalidArgument | Fred::InvalidCommand => {
            ErrorKind::Invalid
        }
        _ => ErrorKind::Other,
    };
    // rustls's refusals come through fred as a debug-printed I/O error: say what
    // they mean first.
    let message = if details.contains("InvalidCertificate") || details.contains("AlertReceived") {
        format!(
            "redis: TLS handshake refused (check the CA file, the host name and the client certificate): {details}"
        )
    } else {
        format!("redis: {details}")
    };
    BackendError::new(kind, message).with_source(error)
}

/// A fred builder for the configuration: TLS, timeouts, reconnects.
fn builder(config: &RedisConfig) -> Result<Builder, BackendError> {
    let mut redis_config = Config::from_url(&fred_url(&config.url)).map_err(backend)?;
    if redis_config.tls.is_some() {
        let roots = config.ca_file.clone().map_or(Roots::System, Roots::File);
        let tls = client_config(Verify::Full, Some(&roots), config.client_identity.as_ref())
            .map_err(|e| BackendError::new(ErrorKind::Invalid, format!("redis {e}")))?;
        redis_config.tls = Some(TlsConnector::from(tls).into());
    } else if config.ca_file.is_some() || config.client_identity.is_some() {
        return Err(BackendError::new(
            ErrorKind::Invalid,
            "redis: a CA file or client certificate needs a rediss:// URL",
        ));
    }
    let mut builder = Builder::from_config(redis_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = config.connect_timeout;
            c.internal_command_timeout = config.command_timeout;
            c.max_command_attempts = 2;
            c.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = config.command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    Ok(builder)
}

impl Redis {
    /// Connects a pool. Reconnects are automatic (exponential backoff, 100 ms to 5 s,
    /// forever); while disconnected, commands fail after the command timeout with a
    /// retryable error.
    pub async fn connect(config: RedisConfig) -> Result<Redis, BackendError> {
        let pool = builder(&config)?
            .build_pool(config.pool_size.max(1))
            .map_err(backend)?;
        pool.init().await.map_err(backend)?;
        let redis = Redis {
            pool,
            layout: Arc::new(std::sync::RwLock::new(ShardLayout::fixed(config.shards))),
            config: Arc::new(config),
            scripts: Arc::new(Scripts {
                append: Script::from_lua(include_str!("lua/append.lua")),
                acquire: Script::from_lua(include_str!("lua/acquire.lua")),
                renew: Script::from_lua(include_str!("lua/renew.lua")),
                release: Script::from_lua(include_str!("lua/release.lua")),
                layout: Script::from_lua(include_str!("lua/layout.lua")),
                retire: Script::from_lua(include_str!("lua/retire.lua")),
            }),
        };
        // The first process of a deployment records its number of shards; from then
        // on the stored layout rules.
        let _: Value = redis
            .pool
            .custom(
                cmd!("SET"),
                vec![
                    redis.layout_key(),
                    format_layout(&ShardLayout::fixed(redis.config.shards)),
                    "NX".to_owned(),
                ],
            )
            .await
            .map_err(backend)?;
        let layout = redis.read_layout().await?;
        if layout.shards != redis.config.shards || layout.retiring.is_some() {
            tracing::warn!(%layout, configured = redis.config.shards, "the queue's stored shard layout differs from ROUTERO_SHARDS and rules over it");
        }
        Ok(redis)
    }

    /// The shard layout as last read ([`SpendQueue::layout`]).
    pub fn layout(&self) -> ShardLayout {
        *self
            .layout
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the stored layout (and remembers it), with its text as stored (`""`
    /// when none is: version 0 with the configured number of shards).
    async fn stored_layout(&self) -> Result<(ShardLayout, String), BackendError> {
        let reply: Value = self
            .pool
            .custom(cmd!("GET"), vec![self.layout_key()])
            .await
            .map_err(backend)?;
        let text = match reply {
            Value::Null => String::new(),
            other => other.as_string().ok_or_else(|| {
                BackendError::new(ErrorKind::Corrupt, format!("redis layout: {other:?}"))
            })?,
        };
        let layout = if text.is_empty() {
            ShardLayout::fixed(self.config.shards)
        } else {
            parse_layout(&text).ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Corrupt,
                    format!(
                        "redis: the shard layout {:?} at {} does not parse",
                        text,
                        self.layout_key()
                    ),
                )
            })?
        };
        *self
            .layout
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = layout;
        Ok((layout, text))
    }

    async fn read_layout(&self) -> Result<ShardLayout, BackendError> {
        Ok(self.stored_layout().await?.0)
    }

    /// Replaces the stored layout `read` (its text as stored) with `next`; a
    /// [`ErrorKind::Conflict`] error when another process changed it meanwhile.
    async fn swap_layout(&self, read: &str, next: ShardLayout) -> Result<(), BackendError> {
        let swapped: i64 = self
            .scripts
            .layout
            .evalsha_with_reload(
                self.pool.next(),
                vec![self.layout_key()],
                vec![read.to_owned(), format_layout(&next)],
            )
            .await
            .map_err(backend)?;
        if swapped != 1 {
            return Err(BackendError::new(
                ErrorKind::Conflict,
                "redis: the shard layout changed meanwhile; read it again",
            ));
        }
        *self
            .layout
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    /// Changes the queue's number of shards while it runs: stores the next
    /// [`ShardLayout`] (its shard ids follow the current ones), then seals every
    /// current shard, so that appends go to the new shards (recorders with the old
    /// layout are answered [`AppendOutcome::Moved`] and route their events again)
    /// while drainers empty and retire the old ones before they start on the new.
    /// Nothing is lost or applied twice, and no process restarts.
    ///
    /// Refused while a previous change is still retiring its shards, except for
    /// the same number of shards: that finishes a change interrupted between the
    /// two steps (seals what was not sealed) and returns the layout.
    pub async fn reshard(&self, shards: u16) -> Result<ShardLayout, BackendError> {
        let (current, text) = self.stored_layout().await?;
        let next = if current.retiring.is_some() && current.shards == shards {
            current
        } else {
            let next = current
                .next(shards)
                .map_err(|refused| BackendError::new(ErrorKind::Invalid, refused))?;
            self.swap_layout(&text, next).await?;
            next
        };
        for shard in next.retiring_shards() {
            let key = self.key(shard, "sealed");
            let client = self.pool.next();
            let _: Value = client
                .custom(cmd!("SET"), vec![key.clone(), "1".to_owned()])
                .await
                .map_err(backend)?;
            if self.config.wait_replicas > 0 {
                self.wait_for_replicas(client, &key).await?;
            }
        }
        tracing::info!(layout = %next, "shard layout changed; the old shards are sealed");
        Ok(next)
    }

    fn layout_key(&self) -> String {
        format!("{}:layout", self.config.prefix)
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The spend queue on this connection.
    pub fn queue(&self) -> RedisQueue {
        RedisQueue {
            redis: self.clone(),
        }
    }

    /// The leader elector of the shards on this connection.
    pub fn elector(&self) -> RedisElector {
        RedisElector {
            redis: self.clone(),
            scope: "",
        }
    }

    /// The leader elector of the scheduler's jobs (`routero::schedule`): the same
    /// leases and fencing, under keys of their own (`{prefix}:jobs:{n}:lease`), so a
    /// job's lease never meets a shard's.
    pub fn job_elector(&self) -> RedisElector {
        RedisElector {
            redis: self.clone(),
            scope: "jobs:",
        }
    }

    /// Readiness: Redis answers a `PING`.
    pub async fn ping(&self) -> Result<(), BackendError> {
        let reply: Value = self
            .pool
            .custom(cmd!("PING"), Vec::<String>::new())
            .await
            .map_err(backend)?;
        match reply.as_str().as_deref() {
            Some("PONG") => Ok(()),
            _ => Err(BackendError::new(
                ErrorKind::Corrupt,
                format!("redis PING reply: {reply:?}"),
            )),
        }
    }

    /// Wallet change notices on this connection ([`notice`]).
    pub fn wallet_notices(&self) -> RedisWalletNotices {
        RedisWalletNotices {
            redis: self.clone(),
        }
    }

    /// Closes the connections.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }

    fn key(&self, shard: ShardId, suffix: &str) -> String {
        format!("{}:{{{}}}:{suffix}", self.config.prefix, shard.0)
    }

    /// `WAIT` on the master of `key`'s slot until the configured number of replicas
    /// hold what `client` wrote there: an append, or for a duplicate the script's
    /// refresh of the batch key (after the original append in the replication
    /// stream), a drainer's read mark, a lease's fencing token.
    async fn wait_for_replicas(
        &self,
        client: &fred::clients::Client,
        key: &str,
    ) -> Result<(), BackendError> {
        let config = &self.config;
        let wait =
            fred::types::CustomCommand::new("WAIT", fred::types::ClusterHash::from(key), false);
        let acked: Value = client
            .custom(
                wait,
                vec![
                    config.wait_replicas.to_string(),
                    millis(config.wait_timeout),
                ],
            )
            .await
            .map_err(backend)?;
        let acked = acked.as_u64().ok_or_else(|| {
            BackendError::new(ErrorKind::Corrupt, format!("redis WAIT reply: {acked:?}"))
        })?;
        if acked < u64::from(config.wait_replicas) {
            return Err(BackendError::new(
                ErrorKind::Unavailable,
                format!(
                    "redis: {key} reached {acked} of {} replicas within {} ms",
                    config.wait_replicas,
                    config.wait_timeout.as_millis()
                ),
            ));
        }
        Ok(())
    }

    /// Whether this is a Redis Cluster (`redis-cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.pool.next().is_clustered()
    }
}

/// `version first shards [retiring-first retiring-count]`.
fn format_layout(layout: &ShardLayout) -> String {
    match layout.retiring {
        Some((first, count)) => format!(
            "{} {} {} {first} {count}",
            layout.version, layout.first, layout.shards
        ),
        None => format!("{} {} {}", layout.version, layout.first, layout.shards),
    }
}

fn parse_layout(text: &str) -> Option<ShardLayout> {
    let mut parts = text.split(' ');
    let version = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let shards = parts.next()?.parse().ok().filter(|&n: &u16| n > 0)?;
    let retiring = match (parts.next(), parts.next()) {
        (None, None) => None,
        (Some(first), Some(count)) => Some((first.parse().ok()?, count.parse().ok()?)),
        _ => return None,
    };
    if parts.next().is_some() || u32::from(first) + u32::from(shards) > 65_536 {
        return None;
    }
    Some(ShardLayout {
        version,
        first,
        shards,
        retiring,
    })
}

fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

/// The spend queue on Redis Streams, one stream per shard.
#[derive(Debug, Clone)]
pub struct RedisQueue {
    redis: Redis,
}

/// A stream entry id as a queue position.
fn position(id: &str) -> Result<QueuePosition, BackendError> {
    id.parse()
        .map_err(|e: String| BackendError::new(ErrorKind::Corrupt, format!("redis stream id: {e}")))
}

#[async_trait]
impl SpendQueue for RedisQueue {
    fn layout(&self) -> ShardLayout {
        self.redis.layout()
    }

    async fn refresh_layout(&self) -> Result<ShardLayout, BackendError> {
        self.redis.read_layout().await
    }

    async fn retire(&self, shard: ShardId) -> Result<bool, BackendError> {
        let keys = vec![
            self.redis.key(shard, "sealed"),
            self.redis.key(shard, "stream"),
            self.redis.key(shard, "retired"),
        ];
        let retired: i64 = self
            .redis
            .scripts
            .retire
            .evalsha_with_reload(self.redis.pool.next(), keys, Vec::<String>::new())
            .await
            .map_err(backend)?;
        if retired != 1 {
            return Ok(false);
        }
        // The last one retired: the layout forgets the old shards.
        let (layout, text) = self.redis.stored_layout().await?;
        if layout.retiring.is_some() {
            for other in layout.retiring_shards() {
                let reply: Value = self
                    .redis
                    .pool
                    .custom(cmd!("EXISTS"), vec![self.redis.key(other, "retired")])
                    .await
                    .map_err(backend)?;
                if reply.as_u64() != Some(1) {
                    return Ok(true);
                }
            }
            match self.redis.swap_layout(&text, layout.retired()).await {
                // Another drainer finished it first.
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                other => other?,
            }
        }
        Ok(true)
    }

    async fn append(&self, batch: &SpendBatch) -> Result<AppendOutcome, BackendError> {
        let layout = self.layout();
        if u32::from(batch.shard.0) >= u32::from(layout.first) + u32::from(layout.shards) {
            return Err(BackendError::unknown_shard(batch.shard, &layout));
        }
        let payload = Value::Bytes(wire::encode(batch).into());
        let keys = vec![
            self.redis.key(batch.shard, &format!("batch:{}", batch.id)),
            self.redis.key(batch.shard, "stream"),
            self.redis.key(batch.shard, "sealed"),
        ];
        let args = vec![Value::from(millis(self.redis.config.dedup_ttl)), payload];
        // One client for the append and its WAIT: WAIT counts the replicas holding
        // this connection's writes.
        let client = self.redis.pool.next();
        let reply: Value = self
            .redis
            .scripts
            .append
            .evalsha_with_reload(client, keys, args)
            .await
            .map_err(backend)?;
        if matches!(reply, Value::Integer(0)) {
            return Ok(AppendOutcome::Moved);
        }
        if self.redis.config.wait_replicas > 0 {
            self.redis
                .wait_for_replicas(client, &self.redis.key(batch.shard, "stream"))
                .await?;
        }
        match reply {
            Value::Null => Ok(AppendOutcome::Duplicate),
            reply => match reply.as_str() {
                Some(id) => Ok(AppendOutcome::Appended(position(&id)?)),
                None => Err(BackendError::new(
                    ErrorKind::Corrupt,
                    format!("redis append reply: {reply:?}"),
                )),
            },
        }
    }

    async fn read_after(
        &self,
        shard: ShardId,
        after: Option<QueuePosition>,
        limit: usize,
    ) -> Result<Vec<QueuedBatch>, BackendError> {
        let start = after.map_or_else(|| "-".to_owned(), |p| format!("({p}"));
        let count = limit.clamp(1, 1 << 20).to_string();
        let client = self.redis.pool.next();
        let reply: Value = client
            .custom(
                cmd!("XRANGE"),
                vec![
                    self.redis.key(shard, "stream"),
                    start,
                    "+".to_owned(),
                    "COUNT".to_owned(),
                    count,
                ],
            )
            .await
            .map_err(backend)?;
        let corrupt = |what: &str| {
            BackendError::new(ErrorKind::Corrupt, format!("redis XRANGE reply: {what}"))
        };
        let Value::Array(entries) = reply else {
            return if reply.is_null() {
                Ok(Vec::new())
            } else {
                Err(corrupt("not an array"))
            };
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else {
                return Err(corrupt("entry is not an array"));
            };
            let [id, fields] =
                <[Value; 2]>::try_from(parts).map_err(|_| corrupt("entry is not [id, fields]"))?;
            let id = id
                .as_str()
                .ok_or_else(|| corrupt("id is not a string"))?
                .to_string();
            let Value::Array(fields) = fields else {
                return Err(corrupt("fields are not an array"));
            };
            let at = position(&id)?;
            let payload = fields
                .chunks(2)
                .find(|pair| pair.first().and_then(Value::as_str).as_deref() == Some("b"))
                .and_then(|pair| pair.get(1))
                .and_then(Value::as_bytes);
            let decoded = match payload {
                Some(payload) => {
                    wire::decode(payload).map_err(|e| (payload.to_vec(), e.to_string()))
                }
                None => Err((Vec::new(), "the entry has no batch field".to_owned())),
            };
            match decoded {
                Ok(batch) => out.push(QueuedBatch {
                    position: at,
                    batch,
                }),
                // The batches before it go first; the next read starts at it.
                Err(_) if !out.is_empty() => break,
                Err((raw, reason)) => {
                    return Err(UnreadableEntry {
                        shard,
                        position: at,
                        raw,
                        reason,
                    }
                    .into_error());
                }
            }
        }
        if self.redis.config.wait_replicas > 0 && !out.is_empty() {
            // What a drainer reads it may commit: only once the replicas hold it, so
            // that a failover never takes back an entry the store already has (the
            // recorder's retry would append it again).
            let _: Value = client
                .custom(
                    cmd!("SET"),
                    vec![
                        self.redis.key(shard, "read"),
                        out.last()
                            .map_or_else(String::new, |q| q.position.to_string()),
                    ],
                )
                .await
                .map_err(backend)?;
            self.redis
                .wait_for_replicas(client, &self.redis.key(shard, "stream"))
                .await?;
        }
        Ok(out)
    }

    async fn trim_through(
        &self,
        shard: ShardId,
        through: QueuePosition,
    ) -> Result<(), BackendError> {
        // XTRIM MINID removes entries whose id is below the given one.
        let min_id = match through.minor.checked_add(1) {
            Some(minor) => QueuePosition::new(through.major, minor),
            None => QueuePosition::new(through.major.saturating_add(1), 0),
        };
        let _: Value = self
            .redis
            .pool
            .custom(
                cmd!("XTRIM"),
                vec![
                    self.redis.key(shard, "stream"),
                    "MINID".to_owned(),
                    min_id.to_string(),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn backlog(&self, shard: ShardId) -> Result<u64, BackendError> {
        let reply: Value = self
            .redis
            .pool
            .custom(cmd!("XLEN"), vec![self.redis.key(shard, "stream")])
            .await
            .map_err(backend)?;
        reply.as_u64().ok_or_else(|| {
            BackendError::new(ErrorKind::Corrupt, format!("redis XLEN reply: {reply:?}"))
        })
    }
}

/// Per-shard leader leases on Redis with fencing tokens.
#[derive(Debug, Clone)]
pub struct RedisElector {
    redis: Redis,
    scope: &'static str,
}

impl RedisElector {
    fn key(&self, shard: ShardId, suffix: &str) -> String {
        format!(
            "{}:{}{{{}}}:{suffix}",
            self.redis.config.prefix, self.scope, shard.0
        )
    }
}

fn lease_value(lease: &Lease) -> String {
    format!("{}|{}", lease.holder, lease.token.0)
}

#[async_trait]
impl LeaderElector for RedisElector {
    async fn acquire(
        &self,
        shard: ShardId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        if holder.is_empty() || holder.contains('|') || holder.chars().any(char::is_control) {
            return Err(BackendError::new(
                ErrorKind::Invalid,
                format!("lease holder {holder:?}"),
            ));
        }
        let keys = vec![self.key(shard, "lease"), self.key(shard, "fence")];
        let client = self.redis.pool.next();
        let token: Option<u64> = self
            .redis
            .scripts
            .acquire
            .evalsha_with_reload(client, keys, vec![holder.to_owned(), millis(ttl)])
            .await
            .map_err(backend)?;
        let lease = token.map(|token| Lease {
            shard,
            holder: Arc::from(holder),
            token: FencingToken(token),
            ttl,
        });
        if let Some(lease) = &lease
            && self.redis.config.wait_replicas > 0
        {
            // A fencing token lost in a failover would be handed out again, and the
            // store would refuse its holder as stale: a lease counts once the
            // replicas hold its token.
            if let Err(e) = self
                .redis
                .wait_for_replicas(client, &self.key(shard, "fence"))
                .await
            {
                let _ = self.release(lease).await;
                return Err(e);
            }
        }
        Ok(lease)
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, BackendError> {
        let renewed: i64 = self
            .redis
            .scripts
            .renew
            .evalsha_with_reload(
                self.redis.pool.next(),
                vec![self.key(lease.shard, "lease")],
                vec![lease_value(lease), millis(lease.ttl)],
            )
            .await
            .map_err(backend)?;
        Ok(renewed == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<(), BackendError> {
        let _: i64 = self
            .redis
            .scripts
            .release
            .evalsha_with_reload(
                self.redis.pool.next(),
                vec![self.key(lease.shard, "lease")],
                vec![lease_value(lease)],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fred_url;

    #[test]
    fn cluster_seed_lists_become_node_parameters() {
        assert_eq!(
            fred_url("redis-cluster://10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002"),
            "redis-cluster://10.0.0.1:7000?node=10.0.0.2:7001&node=10.0.0.3:7002"
        );
        assert_eq!(
            fred_url("rediss-cluster://user:p%40ss@a:1,b:2?node=c:3"),
            "rediss-cluster://user:p%40ss@a:1?node=b:2&node=c:3"
        );
        // Already in fred's form, a single node, or not a cluster: unchanged.
        for url in [
            "redis-cluster://a:1?node=b:2",
            "redis-cluster://a:1",
            "redis://a:1,b:2",
            "rediss://default:secret@cache.example.com:6380/0",
        ] {
            assert_eq!(fred_url(url), url);
        }
        // Every form parses.
        for url in [
            "redis-cluster://10.0.0.1:7000,10.0.0.2:7001",
            "rediss-cluster://user:pw@a:1,b:2?node=c:3",
        ] {
            let config = fred::prelude::Config::from_url(&fred_url(url)).unwrap();
            assert!(config.server.is_clustered(), "{url}");
        }
    }
}
