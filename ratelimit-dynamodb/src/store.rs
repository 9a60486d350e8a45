//! [`DynamoStore`]: the core's `Store` over DynamoDB conditional writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use ratelimit_core::{
    Clock, Decision, Limit, MonotonicClock, Policy, Store, StoreError, Verdict, gcra, validate,
    validate_key,
};

use crate::error::to_store_error;
use crate::hint::Hints;
use crate::item::{
    KEY_ATTRIBUTE, OP_ATTRIBUTE, TAT_ATTRIBUTE, TTL_ATTRIBUTE, expiry_seconds, number, op_of,
    op_token, tat_of,
};
use crate::table::check_table;

/// What every item key starts with unless [`DynamoStore::with_prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "ratelimit:";

/// How many conditional writes one decision may spend on lost races before it gives up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

// The two conditional writes. A full bucket (no state, or a state at or before now) is set to
// `now + cost·T`; a partly spent one is advanced by `cost·T` in place, on the condition that the
// result stays within the tolerance. Because the second is an increment, concurrent admissions on a
// busy key never conflict with one another: only a bucket crossing between full and spent, or
// running out, fails a condition. Both conditions also ask for a number of the right range, so that
// an item written by hand as a string or a negative fails them and is read (and refused as
// malformed) rather than overwritten; the type test comes first because some emulators fail on
// comparing a string with a number. A fraction of a nanosecond in the past is not caught: it is
// overwritten as the full bucket it describes.
const SET_FULL: &str = "SET #tat = :tat, #exp = :exp, #op = :op";
const IF_FULL: &str =
    "attribute_not_exists(#tat) OR (attribute_type(#tat, :number) AND #tat BETWEEN :zero AND :now)";
// The advance also refuses to apply a second time for the same decision: an SDK retry after a
// reply lost on the way back (the write was applied) must not debit twice. The failed condition
// then returns the item, and its `op` tells the decision that its own write is the one there.
const ADVANCE: &str = "SET #tat = #tat + :inc, #exp = :exp, #op = :op";
const IF_ROOM: &str = "attribute_type(#tat, :number) AND #tat > :now AND #tat <= :last \
                       AND (attribute_not_exists(#op) OR #op <> :op)";
// A give-back restores the state before one decision's write, only while that write is still the
// item's last one (its `op`, and the state it left). Anything else there (a later debit, a reset
// and a new item, an earlier give-back of the same write retried by the SDK) keeps the debit: the
// store then under-admits by that one request, never over-admits, and a give-back never applies
// twice. An unconditional `tat - inc` would turn each of those into credit nobody was given.
const GIVE_BACK: &str = "SET #tat = :before REMOVE #op";
const IF_OURS: &str = "#op = :op AND #tat = :ours";

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

/// Why a conditional write was not applied.
enum Refusal {
    /// The condition failed; the item as it was, when the endpoint returned it.
    Condition(Option<HashMap<String, AttributeValue>>),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        Refusal::Store(error)
    }
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

    /// One key's decision: conditional writes until one is applied or the item read back denies.
    /// Every write carries `token`, the decision's own; an admitted decision returns the state it
    /// wrote, which a give-back needs.
    ///
    /// `seen` is the key's state as just read from the store in this call, if it was; a hint from
    /// earlier calls only picks which write to try first and never decides a denial.
    async fn acquire_one(
        &self,
        item_key: &str,
        limit: &Limit<'_>,
        now: u64,
        token: &str,
        mut seen: Option<Option<u64>>,
    ) -> Result<(Decision, Option<u64>), StoreError> {
        let (policy, cost) = (limit.policy, limit.cost);
        let mut spent = self.hints.get(item_key).is_some_and(|tat| tat > now);
        for attempt in 0..self.max_attempts {
            if let Some(state) = seen {
                let step = gcra::decide(state.unwrap_or(0), now, &policy, cost)?;
                if step.new_tat.is_none() {
                    // A denial from the store's own state: no write, no retry.
                    if let Some(state) = state {
                        self.hints.set(item_key, state);
                    }
                    return Ok((step.decision, None));
                }
                spent = state.is_some_and(|tat| tat > now);
                if attempt >= 2 {
                    // Lost the race twice: spread the contenders out.
                    backoff(attempt).await;
                }
            }
            let written = if spent {
                self.advance(item_key, &policy, cost, now, token).await
            } else {
                self.set_full(item_key, &policy, cost, now, token).await
            };
            let item = match written {
                Ok(new_tat) => return self.admitted(item_key, limit, now, new_tat),
                Err(Refusal::Condition(Some(item))) => Some(item),
                Err(Refusal::Condition(None)) => self.read_item(item_key).await?,
                Err(Refusal::Store(error)) => return Err(error),
            };
            let state = tat_of(item.as_ref(), item_key)?;
            if let (Some(tat), Some(item)) = (state, &item) {
                if op_of(item) == Some(token) {
                    // This decision's own write is there: an earlier attempt was applied and its
                    // reply lost, and the SDK sent it again. That write is the decision; writing
                    // once more would debit twice.
                    return self.admitted(item_key, limit, now, tat);
                }
            }
            seen = Some(state);
        }
        Err(StoreError::unavailable(format!(
            "lost {} races in a row on DynamoDB item {item_key:?}",
            self.max_attempts
        )))
    }

    /// The decision of a write that was applied and left `new_tat`, checked against what its
    /// condition allows.
    fn admitted(
        &self,
        item_key: &str,
        limit: &Limit<'_>,
        now: u64,
        new_tat: u64,
    ) -> Result<(Decision, Option<u64>), StoreError> {
        self.hints.set(item_key, new_tat);
        let increment = increment(&limit.policy, limit.cost);
        let before = new_tat.checked_sub(increment).ok_or_else(|| {
            StoreError::BadReply(format!(
                "item {item_key:?}: state {new_tat} after adding {increment}"
            ))
        })?;
        let step = gcra::decide(before, now, &limit.policy, limit.cost)?;
        if step.new_tat != Some(new_tat) {
            return Err(StoreError::BadReply(format!(
                "item {item_key:?}: DynamoDB applied a write its condition forbids \
                 (state {before} at {now})"
            )));
        }
        Ok((step.decision, Some(new_tat)))
    }

    /// Writes a full bucket's new state, `now + cost·T`, if it is still full.
    async fn set_full(
        &self,
        item_key: &str,
        policy: &Policy,
        cost: u32,
        now: u64,
        token: &str,
    ) -> Result<u64, Refusal> {
        let new_tat = now.saturating_add(increment(policy, cost));
        self.count_request();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.to_string()))
            .update_expression(SET_FULL)
            .condition_expression(IF_FULL)
            .expression_attribute_names("#tat", TAT_ATTRIBUTE)
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_names("#op", OP_ATTRIBUTE)
            .expression_attribute_values(":op", AttributeValue::S(token.to_string()))
            .expression_attribute_values(":tat", number(new_tat))
            .expression_attribute_values(":exp", number(expiry_seconds(new_tat)))
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":number", number_type())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(new_tat),
            Err(error) => Err(self.refusal(error)),
        }
    }

    /// Advances a spent bucket by `cost·T` in place, if the result stays within the tolerance.
    async fn advance(
        &self,
        item_key: &str,
        policy: &Policy,
        cost: u32,
        now: u64,
        token: &str,
    ) -> Result<u64, Refusal> {
        let increment = increment(policy, cost);
        // The highest state that still admits: `tat + inc - τ <= now`. cost <= burst, so inc <= τ.
        let last = now
            .saturating_add(policy.tolerance_ns())
            .saturating_sub(increment);
        let full_by = now.saturating_add(policy.tolerance_ns());
        self.count_request();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.to_string()))
            .update_expression(ADVANCE)
            .condition_expression(IF_ROOM)
            .expression_attribute_names("#tat", TAT_ATTRIBUTE)
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_names("#op", OP_ATTRIBUTE)
            .expression_attribute_values(":op", AttributeValue::S(token.to_string()))
            .expression_attribute_values(":inc", number(increment))
            .expression_attribute_values(":exp", number(expiry_seconds(full_by)))
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":last", number(last))
            .expression_attribute_values(":number", number_type())
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match tat_of(output.attributes(), item_key)? {
                Some(new_tat) => Ok(new_tat),
                None => Err(Refusal::Store(StoreError::BadReply(format!(
                    "item {item_key:?}: UpdateItem returned no {TAT_ATTRIBUTE:?}"
                )))),
            },
            Err(error) => Err(self.refusal(error)),
        }
    }

    fn refusal<R>(&self, error: aws_sdk_dynamodb::error::SdkError<UpdateItemError, R>) -> Refusal
    where
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        if let Some(UpdateItemError::ConditionalCheckFailedException(failed)) =
            error.as_service_error()
        {
            return Refusal::Condition(failed.item().cloned());
        }
        Refusal::Store(to_store_error(&self.table, error))
    }

    /// Gives back what the decision `token` took from a key, where it left the state `ours`: the
    /// state goes back to `ours - cost·T` if that write is still the item's last (see [`GIVE_BACK`]).
    /// Sent twice (an SDK retry after a lost reply), the second finds the token gone and does nothing.
    async fn give_back(
        &self,
        item_key: &str,
        limit: &Limit<'_>,
        token: &str,
        ours: u64,
    ) -> Result<(), StoreError> {
        let increment = increment(&limit.policy, limit.cost);
        let before = ours.checked_sub(increment).ok_or_else(|| {
            StoreError::BadReply(format!(
                "item {item_key:?}: state {ours} below the {increment} it took"
            ))
        })?;
        self.count_request();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.to_string()))
            .update_expression(GIVE_BACK)
            .condition_expression(IF_OURS)
            .expression_attribute_names("#tat", TAT_ATTRIBUTE)
            .expression_attribute_names("#op", OP_ATTRIBUTE)
            .expression_attribute_values(":op", AttributeValue::S(token.to_string()))
            .expression_attribute_values(":ours", number(ours))
            .expression_attribute_values(":before", number(before))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Another write came after ours, the item was reset, or this give-back was already
            // applied: the debit stays (or is already gone), which can only deny, never admit.
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(to_store_error(&self.table, error)),
        }
    }

    /// One key's item, read consistently.
    async fn read_item(
        &self,
        item_key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        self.count_request();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| to_store_error(&self.table, error))?;
        Ok(output.item)
    }

    /// Several keys' states, read consistently with `BatchGetItem`, in the order of `item_keys`.
    async fn read_many(&self, item_keys: &[String]) -> Result<Vec<Option<u64>>, StoreError> {
        let items = self.read_items(item_keys).await?;
        item_keys
            .iter()
            .zip(&items)
            .map(|(key, item)| tat_of(item.as_ref(), key))
            .collect()
    }

    /// Several keys' items, read consistently with `BatchGetItem`, in the order of `item_keys`.
    async fn read_items(
        &self,
        item_keys: &[String],
    ) -> Result<Vec<Option<HashMap<String, AttributeValue>>>, StoreError> {
        if let [item_key] = item_keys {
            return Ok(vec![self.read_item(item_key).await?]);
        }
        let mut found: HashMap<String, HashMap<String, AttributeValue>> = HashMap::new();
        let mut wanted: Vec<HashMap<String, AttributeValue>> = item_keys
            .iter()
            .map(|k| HashMap::from([(KEY_ATTRIBUTE.to_string(), AttributeValue::S(k.clone()))]))
            .collect();
        for attempt in 0..self.max_attempts {
            if attempt > 0 {
                backoff(attempt + 1).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(wanted))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Misconfigured(e.to_string()))?;
            self.count_request();
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|error| to_store_error(&self.table, error))?;
            for item in output
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                if let Some(AttributeValue::S(key)) = item.get(KEY_ATTRIBUTE) {
                    found.insert(key.clone(), item.clone());
                }
            }
            // DynamoDB may leave keys unprocessed when throttled; ask for those again.
            wanted = output
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if wanted.is_empty() {
                return Ok(item_keys.iter().map(|k| found.remove(k)).collect());
            }
        }
        Err(StoreError::unavailable(format!(
            "BatchGetItem left keys unprocessed {} times in a row",
            self.max_attempts
        )))
    }

    /// A request of several keys, all or nothing.
    async fn acquire_many(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        let item_keys: Vec<String> = limits.iter().map(|l| self.item_key(l.key)).collect();
        let now = self.now();
        let mut states = self.read_many(&item_keys).await?;
        for attempt in 0..self.max_attempts {
            let mut decisions = Vec::with_capacity(limits.len());
            let mut allowed = true;
            for (limit, state) in limits.iter().zip(&states) {
                let step = gcra::decide(state.unwrap_or(0), now, &limit.policy, limit.cost)?;
                allowed &= step.new_tat.is_some();
                decisions.push(step.decision);
            }
            if !allowed {
                return Ok(Verdict::new(false, decisions));
            }
            // Relaxed: see the field.
            if !self.transactions.load(Ordering::Relaxed) {
                return self
                    .acquire_key_by_key(limits, &item_keys, now, states)
                    .await;
            }
            let token = op_token();
            let mut written = self
                .transact(limits, &item_keys, &states, now, &token)
                .await;
            if let Err(TransactOutcome::Conflict) = written {
                let items = self.read_items(&item_keys).await?;
                if items
                    .iter()
                    .all(|item| item.as_ref().and_then(op_of) == Some(token.as_str()))
                {
                    // Every item carries this transaction's token: it was applied, its reply was
                    // lost, and the SDK's retry failed on the writes already made. It is the
                    // decision; another transaction would debit every key twice.
                    written = Ok(());
                } else {
                    states = item_keys
                        .iter()
                        .zip(&items)
                        .map(|(key, item)| tat_of(item.as_ref(), key))
                        .collect::<Result<_, _>>()?;
                }
            }
            match written {
                Ok(()) => {
                    for (item_key, (limit, state)) in
                        item_keys.iter().zip(limits.iter().zip(&states))
                    {
                        let base = state.unwrap_or(0).max(now);
                        self.hints.set(
                            item_key,
                            base.saturating_add(increment(&limit.policy, limit.cost)),
                        );
                    }
                    return Ok(Verdict::new(true, decisions));
                }
                Err(TransactOutcome::Conflict) => {
                    // `states` holds the items as just read back.
                    if attempt >= 1 {
                        backoff(attempt + 1).await;
                    }
                }
                Err(TransactOutcome::Unsupported) => {
                    self.transactions.store(false, Ordering::Relaxed);
                    return self
                        .acquire_key_by_key(limits, &item_keys, now, states)
                        .await;
                }
                Err(TransactOutcome::Store(error)) => return Err(error),
            }
        }
        Err(StoreError::unavailable(format!(
            "TransactWriteItems lost {} races in a row",
            self.max_attempts
        )))
    }

    /// One `TransactWriteItems` of the same conditional writes [`acquire_one`](Self::acquire_one)
    /// would make, chosen by each key's state as read.
    async fn transact(
        &self,
        limits: &[Limit<'_>],
        item_keys: &[String],
        states: &[Option<u64>],
        now: u64,
        token: &str,
    ) -> Result<(), TransactOutcome> {
        let mut items = Vec::with_capacity(limits.len());
        for ((limit, item_key), state) in limits.iter().zip(item_keys).zip(states) {
            let increment = increment(&limit.policy, limit.cost);
            let update = Update::builder()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.clone()))
                .expression_attribute_names("#tat", TAT_ATTRIBUTE)
                .expression_attribute_names("#exp", TTL_ATTRIBUTE)
                .expression_attribute_names("#op", OP_ATTRIBUTE)
                .expression_attribute_values(":op", AttributeValue::S(token.to_string()))
                .expression_attribute_values(":now", number(now))
                .expression_attribute_values(":number", number_type());
            let update = if state.is_some_and(|tat| tat > now) {
                let tolerance = limit.policy.tolerance_ns();
                update
                    .update_expression(ADVANCE)
                    .condition_expression(IF_ROOM)
                    .expression_attribute_values(":inc", number(increment))
                    .expression_attribute_values(
                        ":last",
                        number(now.saturating_add(tolerance).saturating_sub(increment)),
                    )
                    .expression_attribute_values(
                        ":exp",
                        number(expiry_seconds(now.saturating_add(tolerance))),
                    )
            } else {
                let new_tat = now.saturating_add(increment);
                update
                    .update_expression(SET_FULL)
                    .condition_expression(IF_FULL)
                    .expression_attribute_values(":zero", number(0))
                    .expression_attribute_values(":tat", number(new_tat))
                    .expression_attribute_values(":exp", number(expiry_seconds(new_tat)))
            };
            let update = update
                .build()
                .map_err(|e| TransactOutcome::Store(StoreError::Misconfigured(e.to_string())))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        self.count_request();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                    error.as_service_error()
                {
                    let raced = cancelled.cancellation_reasons().iter().any(|reason| {
                        matches!(
                            reason.code(),
                            Some("ConditionalCheckFailed" | "TransactionConflict")
                        )
                    });
                    if raced {
                        return Err(TransactOutcome::Conflict);
                    }
                }
                if matches!(
                    error.code(),
                    Some("TransactionConflictException" | "TransactionInProgressException")
                ) {
                    return Err(TransactOutcome::Conflict);
                }
                if matches!(
                    error.code(),
                    Some("UnknownOperationException" | "UnknownOperation")
                ) {
                    return Err(TransactOutcome::Unsupported);
                }
                Err(TransactOutcome::Store(to_store_error(&self.table, error)))
            }
        }
    }

    /// All or nothing without transactions: each key in turn, giving back what was taken from the
    /// earlier keys when a later one denies or fails.
    ///
    /// A give-back that fails leaves that debit in place: the request is still denied (or its error
    /// returned), so the outcome can only under-admit.
    async fn acquire_key_by_key(
        &self,
        limits: &[Limit<'_>],
        item_keys: &[String],
        now: u64,
        states: Vec<Option<u64>>,
    ) -> Result<Verdict, StoreError> {
        let token = op_token();
        let mut decisions = Vec::with_capacity(limits.len());
        let mut taken: Vec<u64> = Vec::with_capacity(limits.len());
        for (position, (limit, item_key)) in limits.iter().zip(item_keys).enumerate() {
            let decided = self
                .acquire_one(item_key, limit, now, &token, Some(states[position]))
                .await;
            let denied = match decided {
                Ok((decision, Some(ours))) if decision.is_allowed() => {
                    decisions.push(decision);
                    taken.push(ours);
                    continue;
                }
                Ok((decision, _)) => Ok(decision),
                Err(error) => Err(error),
            };
            for ((limit, item_key), ours) in limits.iter().zip(item_keys).zip(&taken) {
                // Every key is given back even when one fails, so one bad reply costs one debit.
                // A give-back that fails leaves that debit in place, which only under-admits: the
                // request stays denied. Returning the error instead would hand a denied request
                // to the failure policy, which may admit it.
                if let Err(error) = self.give_back(item_key, limit, &token, *ours).await {
                    tracing::warn!(%error, key = limit.key, "give-back failed; the debit stays");
                }
            }
            decisions.push(denied?);
            // The keys after the denying one were not asked; report what their state said.
            for (limit, state) in limits.iter().zip(&states).skip(position + 1) {
                decisions.push(
                    gcra::decide(state.unwrap_or(0), now, &limit.policy, limit.cost)?.decision,
                );
            }
            return Ok(Verdict::new(false, decisions));
        }
        Ok(Verdict::new(true, decisions))
    }
}

/// What a transaction came to, short of success.
enum TransactOutcome {
    /// A condition failed or another transaction held an item: read again and retry.
    Conflict,
    /// The endpoint has no `TransactWriteItems`.
    Unsupported,
    /// The store failed.
    Store(StoreError),
}

/// The operand of `attribute_type` that names DynamoDB's number type.
fn number_type() -> AttributeValue {
    AttributeValue::S("N".to_string())
}

/// `cost·T` in nanoseconds; `cost <= burst` keeps it within the tolerance, below 2^62.
fn increment(policy: &Policy, cost: u32) -> u64 {
    policy
        .emission_interval_ns()
        .saturating_mul(u64::from(cost))
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
mod tests {
    //! The hints' promise, checked on real emulators: a wrong guess costs requests, never a
    //! decision. Each hint here is wrong on purpose, set before every decision.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use aws_config::BehaviorVersion;
    use aws_sdk_dynamodb::config::Credentials;
    use aws_smithy_http_client::tls;
    use ratelimit_core::conformance::fresh_key;

    async fn store(endpoint: &str) -> DynamoStore {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region("us-east-1")
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .http_client(http)
            .load()
            .await;
        let client = Client::new(&config);
        crate::create_table(&client, "ratelimit_tests")
            .await
            .unwrap();
        DynamoStore::connect(client, "ratelimit_tests")
            .await
            .unwrap()
    }

    const HOUR: u64 = 3_600_000_000_000;

    /// A wrong hint, from the time now.
    type Hint = fn(u64) -> u64;

    async fn wrong_hints_never_change_a_decision(endpoint: &str) {
        let store = store(endpoint).await;
        let policy = Policy::per_hour(3).unwrap();
        let wrong: [(&str, Hint); 4] = [
            ("spent, when it is not", |now| now + HOUR / 3),
            ("full, when it is not", |now| now.saturating_sub(HOUR)),
            ("spent for ever", |_| u64::MAX),
            ("never written", |_| 0),
        ];
        for (what, hint) in wrong {
            let key = fresh_key("wrong-hint");
            let item_key = store.item_key(&key);
            for n in 0..5u32 {
                store.hints.set(&item_key, hint(store.now()));
                let sent = store.requests_sent();
                let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                let decision = verdict.decision().unwrap();
                // Nothing refills in the test: the first three are admitted, counting down.
                assert_eq!(
                    verdict.is_allowed(),
                    n < 3,
                    "{endpoint}: hint {what}, request {n}"
                );
                assert_eq!(
                    decision.remaining(),
                    2u32.saturating_sub(n),
                    "{endpoint}: hint {what}"
                );
                // A wrong write, the item read back (where the failed condition does not return
                // it), and the right write.
                let spent = store.requests_sent() - sent;
                assert!(
                    spent <= 3,
                    "{endpoint}: hint {what}: {spent} requests for a decision"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_hints_on_dynalite() {
        let endpoint =
            std::env::var("DYNALITE_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8005".into());
        wrong_hints_never_change_a_decision(&endpoint).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_hints_on_moto() {
        let endpoint =
            std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5005".into());
        wrong_hints_never_change_a_decision(&endpoint).await;
    }
}
