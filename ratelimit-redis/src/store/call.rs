//! The script calls: a decision or an undo, by SHA with a fallback to the source, each within the
//! store's deadline.
//!
//! Apart because the deadline and what a call that got no answer does to the connection are
//! decided here, for every call alike.

use ratelimit_core::{Limit, StoreError};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

use crate::error::to_store_error;
use crate::script::{DECIDE, LimitReply, MicroPolicy, UNDO};

use super::RedisStore;
use super::connection::{Connection, InFlight, query};

impl RedisStore {
    pub(super) async fn decide(
        &self,
        limits: &[Limit<'_>],
        commit: bool,
    ) -> Result<Vec<i64>, StoreError> {
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

    pub(super) async fn undo(
        &self,
        limits: &[Limit<'_>],
        replies: &[LimitReply],
    ) -> Result<(), StoreError> {
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
    pub(super) async fn within_deadline<T>(
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
}
