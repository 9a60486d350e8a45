//! A request of several keys, all or nothing: one `TransactWriteItems`, or key by key with
//! give-backs where the endpoint has no transactions.
//!
//! Apart from one key's decision because it has its own retry loop, its own outcome of a
//! transaction, and its own way of recognising a write that was applied and whose reply was lost.

use std::sync::atomic::Ordering;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use ratelimit_core::{Limit, StoreError, Verdict, gcra};

use super::write::{Write, increment};
use super::{DynamoStore, backoff};
use crate::error::to_store_error;
use crate::item::{KEY_ATTRIBUTE, op_of, op_token, tat_of};

impl DynamoStore {
    /// A request of several keys, all or nothing.
    pub(super) async fn acquire_many(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
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
            let spent = state.is_some_and(|tat| tat > now);
            let write = Write::debit(&limit.policy, limit.cost, now, token, spent);
            let update = Update::builder()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.clone()))
                .update_expression(write.update)
                .condition_expression(write.condition)
                .set_expression_attribute_names(Some(write.names))
                .set_expression_attribute_values(Some(write.values))
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
