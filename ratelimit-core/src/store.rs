//! The contract every shared store keeps: one atomic, all-or-nothing decision per request.

use async_trait::async_trait;
use smallvec::SmallVec;

use crate::decision::Decision;
use crate::error::{RequestError, StoreError, StoreFailure};
use crate::gcra;
use crate::policy::Policy;

/// The most limits one request may be checked against at once.
pub const MAX_LIMITS: usize = 16;

/// The longest key a store accepts, in bytes. Longer keys are refused, not truncated, so two keys
/// that differ only past the limit are never confused.
pub const MAX_KEY_LEN: usize = 1024;

/// One limit a request is checked against: a key, its policy, and what the request costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit<'a> {
    /// The bucket's name, such as `"ip:10.0.0.1"` or `"route:/login"`.
    pub key: &'a str,
    /// The rate and burst of this limit.
    pub policy: Policy,
    /// What the request costs against this limit (at least 1).
    pub cost: u32,
}

impl<'a> Limit<'a> {
    /// A limit of cost 1.
    pub fn new(key: &'a str, policy: Policy) -> Self {
        Limit {
            key,
            policy,
            cost: 1,
        }
    }

    /// The same limit with another cost.
    pub fn with_cost(self, cost: u32) -> Self {
        Limit { cost, ..self }
    }
}

/// The answer for a whole request: admitted by every limit, or by none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    allowed: bool,
    // Inline for the common one or two limits: a verdict costs no allocation.
    decisions: SmallVec<[Decision; 2]>,
    degraded: Option<StoreFailure>,
}

impl Verdict {
    /// A verdict from each limit's decision, in the order of the request's limits.
    ///
    /// When `allowed` is false nothing was debited; each decision then says whether its limit alone
    /// would have admitted the request, and what it holds now.
    pub fn new(allowed: bool, decisions: Vec<Decision>) -> Self {
        Verdict {
            allowed,
            decisions: SmallVec::from_vec(decisions),
            degraded: None,
        }
    }

    /// [`new`](Self::new) from decisions already gathered inline.
    pub(crate) fn from_decisions(allowed: bool, decisions: SmallVec<[Decision; 2]>) -> Self {
        Verdict {
            allowed,
            decisions,
            degraded: None,
        }
    }

    /// The verdict of a request of one limit.
    pub fn single(decision: Decision) -> Self {
        let mut decisions = SmallVec::new();
        decisions.push(decision);
        Verdict {
            allowed: decision.is_allowed(),
            decisions,
            degraded: None,
        }
    }

    /// This verdict, marked as decided by the failure policy because the store was in trouble.
    pub fn degraded(self, failure: StoreFailure) -> Self {
        Verdict {
            degraded: Some(failure),
            ..self
        }
    }

    /// Whether the request was admitted (and debited from every limit).
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Each limit's decision, in the order of the request's limits.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// When the store failed and the failure policy decided instead: what kind of failure it was.
    pub fn degraded_by(&self) -> Option<StoreFailure> {
        self.degraded
    }

    /// The one decision to show the client: when denied, the denying limit that asks for the longest
    /// wait; when admitted, the limit with the fewest requests left.
    pub fn decision(&self) -> Option<Decision> {
        if self.allowed {
            self.decisions.iter().min_by_key(|d| d.remaining()).copied()
        } else {
            self.decisions
                .iter()
                .filter(|d| !d.is_allowed())
                .max_by_key(|d| d.retry_after())
                .or_else(|| self.decisions.first())
                .copied()
        }
    }
}

/// Shared rate-limit state: the one operation every backend implements with the same meaning.
///
/// Every implementation is linearizable per request: `acquire` checks all the request's limits at
/// one instant of the store's clock and debits all of them or none, so concurrent callers, in one
/// process or many, together never exceed any limit's bound. A new backend proves that by passing
/// the conformance suite (the `conformance` feature).
#[async_trait]
pub trait Store: Send + Sync {
    /// Checks a request against all of `limits` (distinct keys, at most [`MAX_LIMITS`]) and debits
    /// every limit's cost if every limit admits it; otherwise debits nothing.
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError>;

    /// What [`acquire`](Self::acquire) would answer now, debiting nothing.
    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError>;

    /// Fills `key`'s bucket up again (forgets its state).
    async fn reset(&self, key: &str) -> Result<(), StoreError>;

    /// [`acquire`](Self::acquire) without a future, for stores that decide in this process without
    /// I/O ([`MemoryStore`](crate::MemoryStore)); every other store returns `None` (the default).
    ///
    /// A [`Limiter`](crate::Limiter) tries this first: an answer here needs no deadline, no circuit
    /// breaker, and no boxed future on the request path.
    fn acquire_sync(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, StoreError>> {
        let _ = limits;
        None
    }

    /// The finest emission interval this store can count, in nanoseconds (1 unless the store's
    /// clock is coarser: Redis counts microseconds). A policy finer than this is refused with
    /// [`RequestError::RateTooFine`]; check policies with [`check_policy`] when a configuration
    /// loads, so that no request meets that error.
    fn resolution_ns(&self) -> u64 {
        1
    }

    /// Which of the store's nodes holds `key`, as a small number (0 for a store of one node). A
    /// [`Limiter`](crate::Limiter) keeps one circuit breaker per node, so one failed node of a
    /// cluster does not send every key to the failure policy.
    fn node_of(&self, key: &str) -> usize {
        let _ = key;
        0
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        (**self).acquire(limits).await
    }

    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        (**self).peek(limits).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        (**self).reset(key).await
    }

    fn acquire_sync(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, StoreError>> {
        (**self).acquire_sync(limits)
    }

    fn resolution_ns(&self) -> u64 {
        (**self).resolution_ns()
    }

    fn node_of(&self, key: &str) -> usize {
        (**self).node_of(key)
    }
}

/// Whether `store` can represent `policy`: its emission interval is no finer than the store's
/// [resolution](Store::resolution_ns). Configuration loaders call this so that a policy a store
/// cannot count is refused at load time, not per request.
pub fn check_policy(store: &dyn Store, policy: &Policy) -> Result<(), RequestError> {
    let resolution_ns = store.resolution_ns();
    let emission_interval_ns = policy.emission_interval_ns();
    if emission_interval_ns < resolution_ns {
        return Err(RequestError::RateTooFine {
            emission_interval_ns,
            resolution_ns,
        });
    }
    Ok(())
}

/// Checks a request before any store sees it: limit count, keys, costs. Every backend calls this
/// first, so all of them refuse the same requests with the same errors.
pub fn validate(limits: &[Limit<'_>]) -> Result<(), RequestError> {
    crate::keyed::check_request_shape(limits.len())?;
    for (position, limit) in limits.iter().enumerate() {
        validate_key(limit.key)?;
        gcra::validate_cost(&limit.policy, limit.cost)?;
        if limits
            .iter()
            .take(position)
            .any(|other| other.key == limit.key)
        {
            return Err(RequestError::DuplicateKey { position });
        }
    }
    Ok(())
}

/// Checks one key: not empty, at most [`MAX_KEY_LEN`] bytes.
pub fn validate_key(key: &str) -> Result<(), RequestError> {
    if key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(RequestError::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}
