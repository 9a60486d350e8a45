//! One key's decision: the conditional `UpdateItem` loop, and the give-back that undoes one.
//!
//! Apart from the requests of several keys (`many.rs`) because this is the hot path, one write per
//! decision, and the one those requests fall back on when an endpoint has no transactions.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use ratelimit_core::{Decision, Limit, Policy, StoreError, gcra};

use super::write::{Write, increment};
use super::{DynamoStore, backoff};
use crate::error::to_store_error;
use crate::item::{KEY_ATTRIBUTE, TAT_ATTRIBUTE, op_of, tat_of};

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
    /// The conditional `UpdateItem` that carries `write` to one item: the one request shape of
    /// every single-key write (a debit, a give-back).
    fn update_item(&self, item_key: &str, write: Write) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.to_string()))
            .update_expression(write.update)
            .condition_expression(write.condition)
            .set_expression_attribute_names(Some(write.names))
            .set_expression_attribute_values(Some(write.values))
    }

    /// One key's decision: conditional writes until one is applied or the item read back denies.
    /// Every write carries `token`, the decision's own; an admitted decision returns the state it
    /// wrote, which a give-back needs.
    ///
    /// `seen` is the key's state as just read from the store in this call, if it was; a hint from
    /// earlier calls only picks which write to try first and never decides a denial.
    pub(super) async fn acquire_one(
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
            let written = self.debit(item_key, &policy, cost, now, token, spent).await;
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

    /// Debits a key by `cost·T`: a full bucket is set to `now + cost·T` if it is still full, a
    /// spent one advanced in place if the result stays within the tolerance.
    async fn debit(
        &self,
        item_key: &str,
        policy: &Policy,
        cost: u32,
        now: u64,
        token: &str,
        spent: bool,
    ) -> Result<u64, Refusal> {
        let write = Write::debit(policy, cost, now, token, spent);
        let leaves = write.leaves;
        self.count_request();
        let mut request = self
            .update_item(item_key, write)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if leaves.is_none() {
            // An advance's result depends on what was there: have DynamoDB say it.
            request = request.return_values(ReturnValue::UpdatedNew);
        }
        let result = request.send().await;
        match (result, leaves) {
            (Ok(_), Some(new_tat)) => Ok(new_tat),
            (Ok(output), None) => match tat_of(output.attributes(), item_key)? {
                Some(new_tat) => Ok(new_tat),
                None => Err(Refusal::Store(StoreError::BadReply(format!(
                    "item {item_key:?}: UpdateItem returned no {TAT_ATTRIBUTE:?}"
                )))),
            },
            (Err(error), _) => Err(self.refusal(error)),
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
    /// state goes back to `ours - cost·T` if that write is still the item's last (see [`Write::give_back`]).
    /// Sent twice (an SDK retry after a lost reply), the second finds the token gone and does nothing.
    pub(super) async fn give_back(
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
        let write = Write::give_back(token, ours, before);
        let result = self.update_item(item_key, write).send().await;
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
}
