//! The connection: standalone or cluster, how to make another, and when a dead one is replaced.
//!
//! Apart from the store because its rules (strikes for calls that got no answer, at most one
//! replacement per interval, TCP keepalive and user timeout) are about the socket, not decisions.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{Client, RedisError};

use super::{DEAD_AFTER, REPLACE_AT_MOST_EVERY};

/// TCP keepalive on every connection: the kernel probes an idle connection after this long...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// ...every this long...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// ...and gives up after this many probes go unanswered.
const KEEPALIVE_PROBES: u32 = 3;
/// And a connection whose sent bytes stay unacknowledged this long is closed (Linux).
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const USER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How a new connection is made, to replace a dead one.
pub(super) enum Source {
    Standalone(Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

impl Source {
    pub(super) async fn connect(&self) -> Result<Connection, RedisError> {
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
pub(super) struct Shared {
    // Read on every call (a clone of the handle), written when a dead connection is replaced.
    connection: RwLock<Connection>,
    pub(super) source: Source,
    // The instants below are nanoseconds since `epoch`. Relaxed everywhere: these are heuristics
    // that decide when to reconnect, and publish no other memory.
    epoch: Instant,
    strikes: AtomicU32,
    last_answer: AtomicU64,
    last_replacement: AtomicU64,
    replacing: AtomicBool,
    pub(super) replaced: AtomicU64,
}

impl Shared {
    pub(super) fn new(connection: Connection, source: Source) -> Self {
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

    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn connection(&self) -> Connection {
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
    pub(super) fn replace(self: &Arc<Self>) {
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
pub(super) struct InFlight<'a> {
    shared: &'a Arc<Shared>,
    started: u64,
    answered: bool,
}

impl<'a> InFlight<'a> {
    pub(super) fn new(shared: &'a Arc<Shared>) -> Self {
        InFlight {
            shared,
            started: shared.now(),
            answered: false,
        }
    }

    pub(super) fn answered(mut self) {
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
pub(super) async fn query<T: redis::FromRedisValue>(
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
pub(super) fn tcp_settings(base: TcpSettings) -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let settings = base.set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(USER_TIMEOUT);
    settings
}
