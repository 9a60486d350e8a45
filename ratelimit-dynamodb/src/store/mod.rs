//! [`DynamoStore`]: the core's `Store` over DynamoDB conditional writes.
//!
//! This file holds the store's configuration and the `Store` contract; the ways a decision is made
//! sit beside it, one per file: the expressions of every write (`write.rs`), one key
//! (`single.rs`), several keys (`many.rs`) and the reads they share (`read.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use ratelimit_core::{
    Clock, Decision, Limit, MonotonicClock, Policy, Store, StoreError, Verdict, gcra, validate,
    validate_key,
};

use crate::error::to_store_error;
use crate::hint::Hints;
use crate::item::{KEY_ATTRIBUTE, op_token};
use crate::table::check_table;

mod many;
mod read;
mod single;
mod write;

/// What every item key starts with unless [`DynamoStore::with_prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "ratelimit:";

/// How many conditional writes one decision may spend on lost races before it gives up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// The core's [`Store`] over a DynamoDB table, one item per key.
///
/// A decision on one key is one conditional `UpdateItem` with no read first: DynamoDB applies it
/// only when the request is admitted, and a failed condition returns the item
/// (`ReturnValuesOnConditionCheckFailure`), from which a denial is decided with no second request.
/// Where an endpoint returns no item on a failed condition (some emulators), one consistent
/// `GetItem` reads it instead. A request with several keys is read with one consistent
/// `BatchGetItem` and written with one `TransactWriteItems`, all or nothing; where an endpoint has
/// no transactions, it falls back to conditional writes key by key, giving back what was taken when
/// a later key denies (a concurrent request may then see those tokens spent for a moment: it can be
/// denied, never over-admitted).
///
/// # Retries and give-backs
/// Every write carries a token of its decision (attribute `op`). An SDK retry of a write whose reply
/// was lost finds its own token and takes that write as the decision instead of debiting again; a
/// transaction whose retry fails finds its token on every item and is taken as applied. A
/// give-back restores the state from before its own write only while that write is still the item's
/// last (its token and the state it left are there): after a later debit, a reset or a give-back
/// already applied, it does nothing and the debit stays. Both lean toward denying, never admit.
///
/// Time is this process's clock (DynamoDB has none): see the crate documentation on clock skew.
pub struct DynamoStore {
    client: Client,
    table: String,
    prefix: String,
    clock: Arc<dyn Clock>,
    max_attempts: u32,
    hints: Hints,
    // Relaxed: a flag learned once from the endpoint; a racing request that still tries a
    // transaction just learns it again.
    transactions: AtomicBool,
    // Relaxed: a statistic.
    requests: AtomicU64,
}

impl DynamoStore {
    /// A store on `table` through `client`, without checking the table (see [`connect`](Self::connect)).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            prefix: DEFAULT_PREFIX.to_string(),
            clock: Arc::new(MonotonicClock::new()),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            hints: Hints::new(),
            transactions: AtomicBool::new(true),
            requests: AtomicU64::new(0),
        }
    }

    /// A store on `table`, after checking that the table exists with the expected key schema.
    pub async fn connect(client: Client, table: impl Into<String>) -> Result<Self, StoreError> {
        let store = DynamoStore::new(client, table);
        check_table(&store.client, &store.table).await?;
        Ok(store)
    }

    /// The same store with items keyed `prefix` + key (default [`DEFAULT_PREFIX`]), so several
    /// limiters can share a table.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same store reading time from `clock` (default: [`MonotonicClock`], anchored to the
    /// system's wall clock). Its [`Clock::unix_now`] must be wall-clock time shared with the other
    /// replicas: that is what the items hold.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same store spending at most `attempts` (at least 1) conditional writes per decision on
    /// lost races; past that the decision fails with [`StoreError::Unavailable`].
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// With `false`, the same store takes requests of several keys one key at a time, giving back
    /// on a denial, instead of in one `TransactWriteItems`: for endpoints without transactions that
    /// do not answer `UnknownOperationException` (from those, the store learns it by itself).
    pub fn with_transactions(self, enabled: bool) -> Self {
        self.transactions.store(enabled, Ordering::Relaxed);
        self
    }

    /// The table this store uses.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The item key of `key`: the prefix followed by the key.
    pub fn item_key(&self, key: &str) -> String {
        let mut item_key = String::with_capacity(self.prefix.len() + key.len());
        item_key.push_str(&self.prefix);
        item_key.push_str(key);
        item_key
    }

    /// Whether requests with several keys go through `TransactWriteItems`: true until the endpoint
    /// answers that it has none (then they are taken key by key, see above).
    pub fn uses_transactions(&self) -> bool {
        self.transactions.load(Ordering::Relaxed)
    }

    /// How many requests this store has sent to DynamoDB, of every kind: divide by decisions to see
    /// what contention costs.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        let unix = self.clock.unix_now();
        unix.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(unix.subsec_nanos()))
    }

    fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sleeps a random time up to 1 ms doubled per attempt past the second (at most 64 ms), so that
/// contenders that keep colliding spread out.
async fn backoff(attempt: u32) {
    let ceiling_us = 1_000u64 << attempt.saturating_sub(2).min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=ceiling_us))).await;
}

/// How many more requests than `burst + rate × w` replicas whose clocks differ by up to `max_skew`
/// can admit together over any window: `rate × max_skew`, rounded up.
///
/// A replica whose clock runs ahead sees buckets refill early by its lead; the items carry no
/// time of their own to correct it. Keep clocks synchronised (NTP, or Amazon Time Sync at well under
/// a millisecond) and this is a fraction of one request for most policies.
pub fn skew_slack(policy: &Policy, max_skew: Duration) -> u64 {
    let skew = u64::try_from(max_skew.as_nanos()).unwrap_or(u64::MAX);
    skew.div_ceil(policy.emission_interval_ns())
}

#[async_trait]
impl Store for DynamoStore {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        validate(limits)?;
        if let [limit] = limits {
            let item_key = self.item_key(limit.key);
            let token = op_token();
            let (decision, _) = self
                .acquire_one(&item_key, limit, self.now(), &token, None)
                .await?;
            return Ok(Verdict::single(decision));
        }
        self.acquire_many(limits).await
    }

    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        validate(limits)?;
        let item_keys: Vec<String> = limits.iter().map(|l| self.item_key(l.key)).collect();
        let now = self.now();
        let states = self.read_many(&item_keys).await?;
        let mut decisions = Vec::with_capacity(limits.len());
        for (limit, state) in limits.iter().zip(states) {
            decisions
                .push(gcra::decide(state.unwrap_or(0), now, &limit.policy, limit.cost)?.decision);
        }
        let allowed = decisions.iter().all(Decision::is_allowed);
        Ok(Verdict::new(allowed, decisions))
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.count_request();
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(self.item_key(key)))
            .send()
            .await
            .map_err(|error| to_store_error(&self.table, error))?;
        Ok(())
    }
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .field("prefix", &self.prefix)
            .field("max_attempts", &self.max_attempts)
            .field("transactions", &self.transactions.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
