//! The in-process store: the keyed table behind the `Store` contract.

use async_trait::async_trait;
use smallvec::SmallVec;

use crate::clock::{Clock, MonotonicClock};
use crate::decision::Decision;
use crate::error::StoreError;
use crate::keyed::DEFAULT_MAX_KEYS;
use crate::keyed_state::{KeyedItem, KeyedState};
use crate::store::{Limit, Store, Verdict, validate};

/// A [`Store`] in this process's memory: the default, and the local fallback of a shared store.
///
/// It keeps the same bounded table as [`KeyedLimiter`](crate::KeyedLimiter): at most `max_keys`
/// buckets, full ones dropped as it goes, and when it is full of active keys the least indebted
/// evicted into an overflow sketch that never lets a returning key start with more than it had.
///
/// ```
/// use ratelimit_core::{Limit, MemoryStore, Policy, Store};
///
/// # tokio_test_block_on(async {
/// let store = MemoryStore::new();
/// let per_client = Policy::per_second(10)?;
/// let global = Policy::per_second(1000)?;
/// let verdict = store
///     .acquire(&[Limit::new("ip:10.0.0.1", per_client), Limit::new("global", global)])
///     .await?;
/// assert!(verdict.is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct MemoryStore<C: Clock = MonotonicClock> {
    state: KeyedState<String>,
    clock: C,
}

impl MemoryStore<MonotonicClock> {
    /// A store of at most [`DEFAULT_MAX_KEYS`] buckets on the monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(DEFAULT_MAX_KEYS, MonotonicClock::new())
    }

    /// A store of at most `max_keys` buckets.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self::with_clock(max_keys, MonotonicClock::new())
    }
}

impl Default for MemoryStore<MonotonicClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> MemoryStore<C> {
    /// A store of at most `max_keys` buckets on `clock`.
    pub fn with_clock(max_keys: usize, clock: C) -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        MemoryStore {
            state: KeyedState::new(max_keys, cores.saturating_mul(8)),
            clock,
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many requests were refused because the table was full of active keys that could not
    /// be evicted.
    pub fn refused_when_full(&self) -> u64 {
        self.state.refused_when_full()
    }

    /// How many buckets still in debt were moved into the overflow sketch to make room (see
    /// [`KeyedLimiter`](crate::KeyedLimiter)).
    pub fn evicted(&self) -> u64 {
        self.state.evicted()
    }

    /// The decision, synchronously: [`Store::acquire_sync`] (always `Some` for this store) and the
    /// limiter's local fallback answer with it.
    pub(crate) fn acquire_local(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        validate(limits)?;
        let now = self.clock.now();
        if let [limit] = limits {
            let decision = self
                .state
                .acquire(limit.key, &limit.policy, limit.cost, now);
            return Ok(Verdict::single(decision));
        }
        // Inline for a few limits, as the table's own lists are: no allocation per request.
        let items: SmallVec<[KeyedItem<'_, str>; 4]> = limits
            .iter()
            .map(|l| KeyedItem {
                key: l.key,
                policy: l.policy,
                cost: l.cost,
            })
            .collect();
        let (allowed, decisions) = self.state.acquire_all(&items, now);
        Ok(Verdict::from_decisions(allowed, decisions))
    }

    /// [`Store::peek`], synchronously.
    pub(crate) fn peek_local(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        validate(limits)?;
        let now = self.clock.now();
        let decisions: SmallVec<[Decision; 2]> = limits
            .iter()
            .map(|l| self.state.peek(l.key, &l.policy, l.cost, now))
            .collect();
        let allowed = decisions.iter().all(|d| d.is_allowed());
        Ok(Verdict::from_decisions(allowed, decisions))
    }
}

#[async_trait]
impl<C: Clock> Store for MemoryStore<C> {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.acquire_local(limits)
    }

    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.peek_local(limits)
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        crate::store::validate_key(key)?;
        self.state.remove(key);
        Ok(())
    }

    fn acquire_sync(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, StoreError>> {
        Some(self.acquire_local(limits))
    }
}

impl<C: Clock> std::fmt::Debug for MemoryStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.state.len())
            .field("max_keys", &self.state.max_keys())
            .finish_non_exhaustive()
    }
}
