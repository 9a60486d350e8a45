//! Consistent reads of the items, one key or a batch.
//!
//! Apart because a read never decides on its own: the decisions in `single.rs` and `many.rs` use it
//! where a failed condition returned no item or where a request of several keys starts.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use ratelimit_core::StoreError;

use super::{DynamoStore, backoff};
use crate::error::to_store_error;
use crate::item::{KEY_ATTRIBUTE, tat_of};

impl DynamoStore {
    /// One key's item, read consistently.
    pub(super) async fn read_item(
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
    pub(super) async fn read_many(
        &self,
        item_keys: &[String],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let items = self.read_items(item_keys).await?;
        item_keys
            .iter()
            .zip(&items)
            .map(|(key, item)| tat_of(item.as_ref(), key))
            .collect()
    }

    /// Several keys' items, read consistently with `BatchGetItem`, in the order of `item_keys`.
    pub(super) async fn read_items(
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
}
