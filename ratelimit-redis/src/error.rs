//! Redis errors in the core's terms: unavailable, nonsense, or misconfigured.

use ratelimit_core::StoreError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Maps a Redis error onto [`StoreError`].
///
/// Connection trouble and a cluster in transition (failover, resharding, loading) are
/// `Unavailable`: the failure policy applies and the next call may succeed. A script that failed on
/// the data it found, or a reply of the wrong shape, is `BadReply`. Refused credentials or
/// permissions are `Misconfigured`: retrying will not help.
pub(crate) fn to_store_error(error: RedisError) -> StoreError {
    match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            StoreError::BadReply(error.to_string())
        }
        // An error the script raised on the data it found, or one Redis has no code for.
        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::ExecAbort)
        | ErrorKind::Extension => StoreError::BadReply(error.to_string()),
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::Server(ServerErrorKind::NoPerm | ServerErrorKind::CrossSlot) => {
            StoreError::Misconfigured(error.to_string())
        }
        _ => StoreError::unavailable(error),
    }
}
