//! The `Store` over Redis, standalone or Cluster.
//!
//! The store, its settings and the `Store` contract are in this file; the connection and its
//! replacement in `connection.rs`, the script calls within their deadline in `call.rs`, and
//! requests across cluster slots in `slots.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use ratelimit_core::{Limit, Store, StoreError, Verdict, validate, validate_key};
use redis::aio::{ConnectionLike, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::io::tcp::TcpSettings;
use redis::{Client, IntoConnectionInfo, Script};

use crate::error::to_store_error;
use crate::script::{self, DECIDE, UNDO};

mod call;
mod connection;
mod slots;

use connection::{Connection, Shared, Source, tcp_settings};
use slots::in_request_order;

/// The default prefix of every key the store writes.
pub const DEFAULT_PREFIX: &str = "ratelimit:";

/// The default deadline of one store call.
///
/// It is longer than the `Limiter`'s default deadline (ratelimit-core's `DEFAULT_DEADLINE`, 50 ms),
/// which then gives up first by dropping the call: such an abandoned call counts against the
/// connection as a timeout does (see [`RedisStore`], dead connections). It is not shorter because a
/// store used without a `Limiter`, or behind one with a longer deadline, would then fail calls that
/// a busy but healthy server answers in time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// Calls in a row that got no answer, timed out or abandoned while nothing else was answered
/// either, after which the connection is taken for dead and replaced.
pub const DEAD_AFTER: u32 = 2;

/// The least time between two replacements of the connection, so that a server that is down makes
/// the store try a new connection at this pace rather than on every call.
pub const REPLACE_AT_MOST_EVERY: Duration = Duration::from_millis(500);

/// A [`Store`] over Redis: one atomic Lua script per decision, on Redis' clock.
///
/// Cloning is cheap and shares the connection: every clone and every concurrent call multiplexes
/// over one connection per server, which reconnects by itself after a restart or failover.
///
/// # Keys and Redis Cluster
/// A limit's key `k` is stored as `{prefix}k` (prefix `ratelimit:` unless set). In a cluster, a
/// request whose keys hash to one slot is decided by a single script, atomically. Give the keys of
/// limits that are checked together a common [hash tag] to get that, such as
/// `{client:42}:per-second` and `{client:42}:per-day`.
///
/// A request whose keys live in different slots (a per-client limit and a global one, say) cannot
/// be one script. It is decided in two steps: first every slot is asked without debiting (a peek);
/// if any limit denies, the request is denied and nothing was written. Otherwise each slot is
/// debited in turn, and if one denies after all (another request took the last token in between),
/// the slots already debited are restored, each only if no other request has touched it since. Only
/// when both races happen does a debit stay without its request being admitted: the error leans to
/// denying, and the bound holds in every case.
///
/// If restoring a slot fails (an error, a timeout), the request is still denied: the debit stays,
/// which can only under-admit. An error there would let a failure policy admit a request that a
/// limit has just denied.
///
/// # Lost replies
/// A reply lost after Redis ran the script (a dropped connection) is an error to the caller, who
/// applies its failure policy, but the debit happened. Calls are not retried, so a lost reply
/// debits at most once more than was admitted: the error leans to denying.
///
/// # Dead connections
/// A connection whose peer vanished without a reset (a NAT or firewall that forgot it, a failover
/// behind a virtual address) gives no error: requests just get no answer. The store notices in two
/// ways. Every connection has TCP keepalive (probes after 5 s idle) and, on Linux, a user timeout
/// (5 s of unacknowledged data), so the kernel closes it when the peer stops acknowledging. And a
/// path that acknowledges but never answers (a blackhole in front of a server) is caught by the
/// calls themselves: each call that times out, or that its caller abandons (a `Limiter`'s deadline
/// drops the call), while nothing at all is answered on the connection, is a strike; after
/// [`DEAD_AFTER`] strikes in a row the store builds a new connection in the background and
/// switches to it, at most once per [`REPLACE_AT_MOST_EVERY`]. Any answer, even an error reply,
/// clears the strikes: a slow server that answers is not a dead one.
///
/// A node that answers `READONLY` was a master and has become a replica: a coordinated failover
/// (`CLUSTER FAILOVER`) demotes a master without closing its connections, and it runs a script
/// sent to it up to the script's first write. The store replaces its connection then too, so that
/// it learns the cluster's new masters.
///
/// [hash tag]: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    prefix: String,
    timeout: Duration,
    decide: Script,
    undo: Script,
}

impl RedisStore {
    /// Connects to one Redis server: `redis://host:port/db` or, with the `tls` feature,
    /// `rediss://`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let info = url.into_connection_info().map_err(to_store_error)?;
        let tcp = tcp_settings(info.tcp_settings().clone());
        let client = Client::open(info.set_tcp_settings(tcp)).map_err(to_store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(DEFAULT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let source = Source::Standalone(client, config);
        let connection = source.connect().await.map_err(to_store_error)?;
        Ok(Self::new(connection, source))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each).
    pub async fn connect_cluster(seed_nodes: &[&str]) -> Result<Self, StoreError> {
        let client = ClusterClient::builder(seed_nodes.iter().copied())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(DEFAULT_TIMEOUT)
            .retries(3)
            .tcp_settings(tcp_settings(TcpSettings::default()))
            .build()
            .map_err(to_store_error)?;
        let source = Source::Cluster(client);
        let connection = source.connect().await.map_err(to_store_error)?;
        Ok(Self::new(connection, source))
    }

    fn new(connection: Connection, source: Source) -> Self {
        RedisStore {
            shared: Arc::new(Shared::new(connection, source)),
            prefix: DEFAULT_PREFIX.to_string(),
            timeout: DEFAULT_TIMEOUT,
            decide: Script::new(DECIDE),
            undo: Script::new(UNDO),
        }
    }

    /// Stores keys under another prefix. A prefix with `{` or `}` is refused: it would decide the
    /// cluster slot of every key.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self, StoreError> {
        let prefix = prefix.into();
        if prefix.contains(['{', '}']) {
            return Err(StoreError::Misconfigured(format!(
                "the key prefix {prefix:?} must not contain a hash tag"
            )));
        }
        self.prefix = prefix;
        Ok(self)
    }

    /// Sets the deadline of one call (default [`DEFAULT_TIMEOUT`]); past it the call is a
    /// [`StoreError::Timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times this store (with its clones) replaced a connection it took for dead.
    pub fn connections_replaced(&self) -> u64 {
        self.shared.replaced.load(Ordering::Relaxed)
    }

    /// The SHA1 under which Redis caches the decision script; for callers that send it themselves.
    pub fn decide_script_sha(&self) -> &str {
        self.decide.get_hash()
    }

    /// The Redis Cluster slot of a Redis key (as [`redis_key`](Self::redis_key) returns it).
    pub fn slot_of(redis_key: &str) -> u16 {
        crate::slot::slot(redis_key.as_bytes())
    }

    /// The Redis key of a limit key.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        validate(limits)?;
        let groups = self.slot_groups(limits);
        if let [group] = groups.as_slice() {
            let reply = self.decide(group, true).await?;
            let (admitted, replies) = script::parse_reply(&reply, group)?;
            return Ok(in_request_order(
                limits,
                &groups,
                admitted,
                &[(admitted, replies)],
            ));
        }
        self.acquire_across_slots(limits, &groups).await
    }

    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        validate(limits)?;
        let groups = self.slot_groups(limits);
        let mut answers = Vec::with_capacity(groups.len());
        for group in &groups {
            let reply = self.decide(group, false).await?;
            answers.push(script::parse_reply(&reply, group)?);
        }
        let admitted = answers.iter().all(|(admitted, _)| *admitted);
        Ok(in_request_order(limits, &groups, admitted, &answers))
    }

    fn resolution_ns(&self) -> u64 {
        crate::script::RESOLUTION_NS
    }

    /// A standalone server is one node. In a cluster, the slot range of the key: the 16,384 slots
    /// in as many ranges as a `Limiter` has breakers. A cluster gives each master contiguous
    /// ranges, so a range is (almost always) one master, and a failed master trips only the
    /// breakers of its ranges. The client does not expose its slot map, so this is the closest
    /// stable stand-in for "the node".
    fn node_of(&self, key: &str) -> usize {
        if matches!(self.shared.source, Source::Standalone(..)) {
            return 0;
        }
        let slot = usize::from(crate::slot::slot(self.redis_key(key).as_bytes()));
        slot * ratelimit_core::NODE_BREAKERS / 16_384
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let mut command = redis::cmd("DEL");
        command.arg(self.redis_key(key));
        self.within_deadline(async |connection| match connection {
            Connection::Standalone(mut c) => c.req_packed_command(&command).await,
            Connection::Cluster(mut c) => c.req_packed_command(&command).await,
        })
        .await
        .map(drop)
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.shared.source {
                    Source::Standalone(..) => "standalone",
                    Source::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connections_replaced", &self.connections_replaced())
            .finish_non_exhaustive()
    }
}
