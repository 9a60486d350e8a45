//! The `Store` over Redis, standalone or Cluster.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ratelimit_core::{Limit, Store, StoreError, Verdict, validate, validate_key};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{Client, ErrorKind, IntoConnectionInfo, RedisError, Script, ServerErrorKind};

use crate::error::to_store_error;
use crate::script::{self, DECIDE, LimitReply, MicroPolicy, UNDO};

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

/// TCP keepalive on every connection: the kernel probes an idle connection after this long...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// ...every this long...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// ...and gives up after this many probes go unanswered.
const KEEPALIVE_PROBES: u32 = 3;
/// And a connection whose sent bytes stay unacknowledged this long is closed (Linux).
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const USER_TIMEOUT: Duration = Duration::from_secs(5);

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

#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How a new connection is made, to replace a dead one.
enum Source {
    Standalone(Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

impl Source {
    async fn connect(&self) -> Result<Connection, RedisError> {
        match self {
            Source::Standalone(client, config) => {
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(Connection::Standalone)
            }
            Source::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }
}

/// What every clone of a store shares: the connection in use, how to make another, and what the
/// calls have seen of it.
struct Shared {
    // Read on every call (a clone of the handle), written when a dead connection is replaced.
    connection: RwLock<Connection>,
    source: Source,
    // The instants below are nanoseconds since `epoch`. Relaxed everywhere: these are heuristics
    // that decide when to reconnect, and publish no other memory.
    epoch: Instant,
    strikes: AtomicU32,
    last_answer: AtomicU64,
    last_replacement: AtomicU64,
    replacing: AtomicBool,
    replaced: AtomicU64,
}

impl Shared {
    fn new(connection: Connection, source: Source) -> Self {
        Shared {
            connection: RwLock::new(connection),
            source,
            epoch: Instant::now(),
            strikes: AtomicU32::new(0),
            last_answer: AtomicU64::new(0),
            last_replacement: AtomicU64::new(0),
            replacing: AtomicBool::new(false),
            replaced: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn connection(&self) -> Connection {
        // A poisoned lock only means a writer panicked mid-swap of a clonable handle: the handle
        // inside is still whole.
        match self.connection.read() {
            Ok(connection) => connection.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The connection answered (a reply or an error reply): it is alive.
    fn answered(&self) {
        self.last_answer.store(self.now(), Ordering::Relaxed);
        self.strikes.store(0, Ordering::Relaxed);
    }

    /// A call started at `started` got no answer. It counts only if nothing else was answered since
    /// it was sent: on a live connection, answers come in order, so a later one would mean this one
    /// was merely slow.
    fn unanswered(self: &Arc<Self>, started: u64) {
        if self.last_answer.load(Ordering::Relaxed) > started {
            return;
        }
        let strikes = self
            .strikes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if strikes >= DEAD_AFTER {
            self.replace();
        }
    }

    /// Builds a new connection in the background and switches to it, unless one is being built or
    /// the last was built less than [`REPLACE_AT_MOST_EVERY`] ago.
    fn replace(self: &Arc<Self>) {
        let now = self.now();
        let last = self.last_replacement.load(Ordering::Relaxed);
        let pace = u64::try_from(REPLACE_AT_MOST_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < pace {
            return;
        }
        // One replacement at a time; outside a runtime (a store dropped at shutdown), none.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.replacing.swap(true, Ordering::Relaxed) {
            return;
        }
        self.last_replacement.store(now.max(1), Ordering::Relaxed);
        let shared = Arc::clone(self);
        runtime.spawn(async move {
            if let Ok(fresh) = shared.source.connect().await {
                match shared.connection.write() {
                    Ok(mut connection) => *connection = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                shared.strikes.store(0, Ordering::Relaxed);
                shared.replaced.fetch_add(1, Ordering::Relaxed);
            }
            // A failed attempt leaves the strikes: the next unanswered call tries again, at the pace.
            shared.replacing.store(false, Ordering::Relaxed);
        });
    }
}

/// Held across one call: dropped before the call got an answer (timed out, or abandoned by the
/// caller), it strikes the connection.
struct InFlight<'a> {
    shared: &'a Arc<Shared>,
    started: u64,
    answered: bool,
}

impl<'a> InFlight<'a> {
    fn new(shared: &'a Arc<Shared>) -> Self {
        InFlight {
            shared,
            started: shared.now(),
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
        self.shared.answered();
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.unanswered(self.started);
        }
    }
}

/// Sends `command` on `connection` and converts its reply.
async fn query<T: redis::FromRedisValue>(
    command: &redis::Cmd,
    connection: Connection,
) -> Result<T, RedisError> {
    match connection {
        Connection::Standalone(mut c) => command.query_async(&mut c).await,
        Connection::Cluster(mut c) => command.query_async(&mut c).await,
    }
}

/// TCP settings for every connection: keepalive and, on Linux, a user timeout (see
/// [`RedisStore`], dead connections).
fn tcp_settings(base: TcpSettings) -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let settings = base.set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(USER_TIMEOUT);
    settings
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

    async fn decide(&self, limits: &[Limit<'_>], commit: bool) -> Result<Vec<i64>, StoreError> {
        let mut keys = Vec::with_capacity(limits.len());
        let mut args = Vec::with_capacity(1 + 3 * limits.len());
        args.push(u64::from(commit));
        for limit in limits {
            let micro = MicroPolicy::from_policy(&limit.policy)?;
            keys.push(self.redis_key(limit.key));
            args.extend([micro.interval_us, micro.tolerance_us, u64::from(limit.cost)]);
        }
        self.run_script(&self.decide, DECIDE, &keys, &args).await
    }

    async fn undo(&self, limits: &[Limit<'_>], replies: &[LimitReply]) -> Result<(), StoreError> {
        let mut keys = Vec::with_capacity(limits.len());
        let mut args = Vec::with_capacity(2 * limits.len());
        for (limit, reply) in limits.iter().zip(replies) {
            keys.push(self.redis_key(limit.key));
            args.extend([reply.new_tat, reply.old_tat]);
        }
        self.run_script::<i64, _>(&self.undo, UNDO, &keys, &args)
            .await
            .map(drop)
    }

    /// Runs a script by its SHA1 (`EVALSHA`), and when Redis has not got it cached, by its source
    /// (`EVAL`, which caches it again).
    ///
    /// redis-rs alone answers `NOSCRIPT` with `SCRIPT LOAD` and a second `EVALSHA`, which fails
    /// again when the cache is flushed in between (`SCRIPT FLUSH` run in a loop, a failover to a
    /// replica that has never seen the script). `EVAL` carries the script and cannot miss.
    /// `NOSCRIPT` means nothing ran, so sending the script again cannot debit twice.
    async fn run_script<T, A>(
        &self,
        script: &Script,
        source: &str,
        keys: &[String],
        args: &[A],
    ) -> Result<T, StoreError>
    where
        T: redis::FromRedisValue,
        A: redis::ToRedisArgs,
    {
        let mut by_sha = redis::cmd("EVALSHA");
        by_sha
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        let mut by_source = redis::cmd("EVAL");
        by_source.arg(source).arg(keys.len()).arg(keys).arg(args);
        self.within_deadline(async |connection| {
            let first = query(&by_sha, connection.clone()).await;
            match first {
                Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    query(&by_source, connection).await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs `call` on the current connection within the store's timeout, and tells the connection's
    /// health what came of it: an answer, or none (timed out here, or the caller dropped this
    /// future first).
    async fn within_deadline<T>(
        &self,
        call: impl AsyncFnOnce(Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let in_flight = InFlight::new(&self.shared);
        let connection = self.shared.connection();
        match tokio::time::timeout(self.timeout, call(connection)).await {
            Ok(Ok(value)) => {
                in_flight.answered();
                Ok(value)
            }
            Ok(Err(error)) => {
                // A reply from the server, even an error one, shows the connection alive; an I/O
                // error does not (the connection manager reconnects by itself when it was dropped).
                if error.is_io_error() || error.is_timeout() {
                    drop(in_flight);
                } else {
                    in_flight.answered();
                }
                if error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
                    // The server was a master and is a replica now (a failover). A cluster
                    // connection follows MOVED redirects but not this, and a single-server one
                    // behind a virtual address keeps talking to the old node: a new connection
                    // asks the cluster for its slots again, or resolves the address again.
                    // Nothing was written: a replica refuses the script's first write.
                    self.shared.replace();
                }
                Err(to_store_error(error))
            }
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// The limits grouped by cluster slot, in ascending slot order; one group on a single server.
    fn slot_groups<'a>(&self, limits: &[Limit<'a>]) -> Vec<Vec<Limit<'a>>> {
        if matches!(self.shared.source, Source::Standalone(..)) {
            return vec![limits.to_vec()];
        }
        let mut slotted: Vec<(u16, Limit<'a>)> = limits
            .iter()
            .map(|l| {
                let slot = crate::slot::slot(self.redis_key(l.key).as_bytes());
                (slot, *l)
            })
            .collect();
        slotted.sort_by_key(|(slot, _)| *slot);
        let mut groups: Vec<(u16, Vec<Limit<'a>>)> = Vec::new();
        for (slot, limit) in slotted {
            match groups.last_mut() {
                Some((last, group)) if *last == slot => group.push(limit),
                _ => groups.push((slot, vec![limit])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Decides a request whose limits span several slots; see the type's documentation.
    async fn acquire_across_slots(
        &self,
        limits: &[Limit<'_>],
        groups: &[Vec<Limit<'_>>],
    ) -> Result<Verdict, StoreError> {
        // Step 1: look at every slot; a denial anywhere ends it with nothing written.
        let mut looked = Vec::with_capacity(groups.len());
        for group in groups {
            let reply = self.decide(group, false).await?;
            looked.push(script::parse_reply(&reply, group)?);
        }
        if looked.iter().any(|(admitted, _)| !admitted) {
            return Ok(in_request_order(limits, groups, false, &looked));
        }
        // Step 2: debit slot by slot, undoing the ones done if a later one denies.
        let mut debited: Vec<Vec<LimitReply>> = Vec::with_capacity(groups.len());
        for (i, group) in groups.iter().enumerate() {
            let reply = self.decide(group, true).await?;
            let (admitted, replies) = script::parse_reply(&reply, group)?;
            if !admitted {
                for (done, done_replies) in groups.iter().zip(&debited) {
                    // A restore that fails keeps its debit, and the request is still denied: an
                    // error here would hand the decision to a failure policy, which may admit a
                    // request a limit has just denied. Keeping the debit only under-admits.
                    let _kept = self.undo(done, done_replies).await;
                }
                let mut answers: Vec<(bool, Vec<LimitReply>)> =
                    debited.into_iter().map(|r| (true, r)).collect();
                answers.push((false, replies));
                answers.extend(looked.into_iter().skip(i + 1));
                return Ok(in_request_order(limits, groups, false, &answers));
            }
            debited.push(replies);
        }
        let answers: Vec<(bool, Vec<LimitReply>)> =
            debited.into_iter().map(|r| (true, r)).collect();
        Ok(in_request_order(limits, groups, true, &answers))
    }
}

/// Puts per-group replies back in the order of the request's limits.
fn in_request_order(
    limits: &[Limit<'_>],
    groups: &[Vec<Limit<'_>>],
    admitted: bool,
    answers: &[(bool, Vec<LimitReply>)],
) -> Verdict {
    let mut decisions = Vec::with_capacity(limits.len());
    for limit in limits {
        let found = groups
            .iter()
            .zip(answers)
            .find_map(|(group, (_, replies))| {
                group
                    .iter()
                    .position(|l| l.key == limit.key)
                    .and_then(|i| replies.get(i))
                    .map(|r| r.decision)
            });
        if let Some(decision) = found {
            decisions.push(decision);
        }
    }
    Verdict::new(admitted, decisions)
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
