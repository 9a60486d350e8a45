//! Typed errors: a bad policy, a bad request, and a store in trouble.

use std::time::Duration;

/// Why a [`Policy`](crate::Policy) could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A rate of zero requests admits nothing; use a block instead.
    #[error("a policy needs a count of at least 1 request per period")]
    ZeroCount,
    /// A period of zero length has no rate.
    #[error("a policy needs a period longer than zero")]
    ZeroPeriod,
    /// A bucket of capacity zero admits nothing.
    #[error("a policy needs a burst of at least 1")]
    ZeroBurst,
    /// The rate asks for more than one request per nanosecond.
    #[error("{count} requests per {period:?} is finer than the clock's one-nanosecond resolution")]
    RateTooFine {
        /// The requested count.
        count: u64,
        /// The requested period.
        period: Duration,
    },
    /// The period, or burst times the emission interval, does not fit the clock's range.
    #[error("the policy does not fit in the clock's range (period or burst too large)")]
    Overflow,
}

/// Why a request could not be decided at all, before any bucket was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A request must cost at least one token.
    #[error("a request must cost at least 1")]
    ZeroCost,
    /// The cost is larger than the bucket can ever hold: the request can never succeed,
    /// however long the caller waits.
    #[error("a cost of {cost} can never be admitted by a burst of {burst}")]
    CostExceedsBurst {
        /// The cost asked for.
        cost: u32,
        /// The capacity of the limit that can never hold it.
        burst: u32,
    },
    /// A request checked against no limit at all.
    #[error("a request must name at least one limit")]
    NoLimits,
    /// More limits than one atomic decision handles.
    #[error("a request names {count} limits; at most {max} are decided at once")]
    TooManyLimits {
        /// Limits in the request.
        count: usize,
        /// The most a request may name, [`MAX_LIMITS`](crate::MAX_LIMITS).
        max: usize,
    },
    /// An empty key names nothing.
    #[error("a limit key must not be empty")]
    EmptyKey,
    /// A key longer than the stores accept.
    #[error("a limit key of {len} bytes is longer than the {max} allowed")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The most allowed, [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
        max: usize,
    },
    /// The policy's emission interval is finer than the store's clock can count (Redis counts in
    /// microseconds).
    #[error(
        "an emission interval of {emission_interval_ns} ns is finer than the store's {resolution_ns} ns clock"
    )]
    RateTooFine {
        /// The policy's emission interval.
        emission_interval_ns: u64,
        /// The store's clock resolution.
        resolution_ns: u64,
    },
    /// The same key twice in one request would debit one bucket under two policies.
    #[error("the limit at position {position} repeats the key of an earlier limit")]
    DuplicateKey {
        /// The position of the repeating limit in the request.
        position: usize,
    },
}

/// Why a [`Store`](crate::Store) call failed.
///
/// The variants tell apart a store that could not be reached ([`Unavailable`](Self::Unavailable),
/// [`Timeout`](Self::Timeout)), one that answered something that makes no sense
/// ([`BadReply`](Self::BadReply)), one that is set up wrongly ([`Misconfigured`](Self::Misconfigured)),
/// and a request that was invalid whatever the store ([`Request`](Self::Request)).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, or refused the call (connection lost, throttled, failing over).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store did not answer within the deadline.
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answered, but the answer makes no sense (wrong type, out-of-range state, corrupt item).
    #[error("store answered nonsense: {0}")]
    BadReply(String),
    /// The store is reachable but not set up for this limiter (missing table, wrong schema).
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
    /// The request itself was invalid; no store could decide it.
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl StoreError {
    /// Wraps any error as [`StoreError::Unavailable`].
    pub fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Unavailable(err.into())
    }

    /// A small, copyable summary of this error, for counters and decision reports.
    pub fn kind(&self) -> StoreFailure {
        match self {
            StoreError::Unavailable(_) => StoreFailure::Unavailable,
            StoreError::Timeout(_) => StoreFailure::Timeout,
            StoreError::BadReply(_) => StoreFailure::BadReply,
            StoreError::Misconfigured(_) => StoreFailure::Misconfigured,
            StoreError::Request(_) => StoreFailure::Request,
        }
    }
}

/// What kind of trouble a store was in, without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreFailure {
    /// See [`StoreError::Unavailable`].
    Unavailable,
    /// See [`StoreError::Timeout`].
    Timeout,
    /// See [`StoreError::BadReply`].
    BadReply,
    /// See [`StoreError::Misconfigured`].
    Misconfigured,
    /// See [`StoreError::Request`].
    Request,
    /// The store was skipped because it failed recently (the circuit breaker is open).
    CircuitOpen,
}
