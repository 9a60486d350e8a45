//! The `Store` over Redis, standalone or Cluster.

use std::time::Duration;

use async_trait::async_trait;
use ratelimit_core::{Limit, Store, StoreError, Verdict, validate, validate_key};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, RedisError, Script};

use crate::error::to_store_error;
use crate::script::{self, DECIDE, LimitReply, MicroPolicy, UNDO};

/// The default prefix of every key the store writes.
pub const DEFAULT_PREFIX: &str = "ratelimit:";

/// The default deadline of one store call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

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
/// # Lost replies
/// A reply lost after Redis ran the script (a dropped connection) is an error to the caller, who
/// applies its failure policy, but the debit happened. Calls are not retried, so a lost reply
/// debits at most once more than was admitted: the error leans to denying.
///
/// [hash tag]: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
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

impl RedisStore {
    /// Connects to one Redis server: `redis://host:port/db` or, with the `tls` feature,
    /// `rediss://`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(to_store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(DEFAULT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(to_store_error)?;
        Ok(Self::new(Connection::Standalone(manager)))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each).
    pub async fn connect_cluster(seed_nodes: &[&str]) -> Result<Self, StoreError> {
        let client = ClusterClient::builder(seed_nodes.iter().copied())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(DEFAULT_TIMEOUT)
            .retries(3)
            .build()
            .map_err(to_store_error)?;
        let connection = client
            .get_async_connection()
            .await
            .map_err(to_store_error)?;
        Ok(Self::new(Connection::Cluster(connection)))
    }

    fn new(connection: Connection) -> Self {
        RedisStore {
            connection,
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
        let mut invocation = self.decide.prepare_invoke();
        invocation.arg(u8::from(commit));
        for limit in limits {
            let micro = MicroPolicy::from_policy(&limit.policy)?;
            invocation
                .key(self.redis_key(limit.key))
                .arg(micro.interval_us)
                .arg(micro.tolerance_us)
                .arg(limit.cost);
        }
        let call = async {
            match self.connection.clone() {
                Connection::Standalone(mut c) => invocation.invoke_async(&mut c).await,
                Connection::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
        };
        self.within_deadline(call).await
    }

    async fn undo(&self, limits: &[Limit<'_>], replies: &[LimitReply]) -> Result<(), StoreError> {
        let mut invocation = self.undo.prepare_invoke();
        for (limit, reply) in limits.iter().zip(replies) {
            invocation
                .key(self.redis_key(limit.key))
                .arg(reply.new_tat)
                .arg(reply.old_tat);
        }
        let call = async {
            match self.connection.clone() {
                Connection::Standalone(mut c) => invocation.invoke_async::<i64>(&mut c).await,
                Connection::Cluster(mut c) => invocation.invoke_async::<i64>(&mut c).await,
            }
        };
        self.within_deadline(call).await.map(drop)
    }

    async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(to_store_error),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// The limits grouped by cluster slot, in ascending slot order; one group on a single server.
    fn slot_groups<'a>(&self, limits: &[Limit<'a>]) -> Vec<Vec<Limit<'a>>> {
        if matches!(self.connection, Connection::Standalone(_)) {
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
                    self.undo(done, done_replies).await?;
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

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let key = self.redis_key(key);
        let call = async {
            let mut command = redis::cmd("DEL");
            command.arg(&key);
            match self.connection.clone() {
                Connection::Standalone(mut c) => c.req_packed_command(&command).await,
                Connection::Cluster(mut c) => c.req_packed_command(&command).await,
            }
        };
        self.within_deadline(call).await.map(drop)
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.connection {
                    Connection::Standalone(_) => "standalone",
                    Connection::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
