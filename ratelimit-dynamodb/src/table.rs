//! The table: its schema, a helper that creates it, and a check that an existing one fits.
//!
//! | attribute | type | meaning |
//! | --- | --- | --- |
//! | `pk` | S, partition key | the store's prefix and the limit's key |
//! | `tat` | N | theoretical arrival time, integer nanoseconds since the Unix epoch |
//! | `expires_at` | N, TTL attribute | epoch seconds after which the bucket is full again |
//! | `op` | S | a token of the decision that wrote `tat` last (retries and give-backs check it) |
//!
//! The table has no sort key and no other index. On-demand billing suits most limiters; a
//! provisioned table works the same, and throttling is reported as `StoreError::Unavailable`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};
use ratelimit_core::StoreError;

use crate::error::to_store_error;
use crate::item::{KEY_ATTRIBUTE, TTL_ATTRIBUTE};

/// How long [`create_table`] waits for a new table to become active.
const ACTIVE_WITHIN: Duration = Duration::from_secs(60);

/// What [`create_table`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableReport {
    /// Whether the table was created now (false: it existed, with the right schema).
    pub created: bool,
    /// Whether idle items are deleted by DynamoDB's TTL.
    pub ttl: TimeToLive,
}

/// The state of the table's TTL, as far as [`create_table`] could set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeToLive {
    /// TTL is enabled on `expires_at`: idle buckets are deleted some time after they are full.
    Enabled,
    /// The endpoint has no TTL API (some emulators): items stay, and still read as full buckets.
    Unsupported,
}

/// Creates the limiter's table (on-demand billing) unless it exists, waits until it is active,
/// and enables TTL on `expires_at`.
///
/// An existing table is checked with [`check_table`]: one with another key schema is an error,
/// never silently used.
pub async fn create_table(client: &Client, table: &str) -> Result<TableReport, StoreError> {
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(KEY_ATTRIBUTE)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(KEY_ATTRIBUTE)
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    let created = match created {
        Ok(_) => true,
        Err(error) if error.code() == Some("ResourceInUseException") => false,
        Err(error) => return Err(to_store_error(table, error)),
    };
    wait_until_active(client, table).await?;
    check_table(client, table).await?;
    let ttl = enable_ttl(client, table).await?;
    Ok(TableReport { created, ttl })
}

/// Checks that `table` exists and has the schema above; a typed `Misconfigured` error otherwise.
pub async fn check_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|error| to_store_error(table, error))?;
    let Some(description) = described.table() else {
        return Err(StoreError::BadReply(format!(
            "DescribeTable {table:?} returned no table"
        )));
    };
    let schema: Vec<(&str, &KeyType)> = description
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type()))
        .collect();
    let key_is_string = description.attribute_definitions().iter().any(|d| {
        d.attribute_name() == KEY_ATTRIBUTE && d.attribute_type() == &ScalarAttributeType::S
    });
    if schema != [(KEY_ATTRIBUTE, &KeyType::Hash)] || !key_is_string {
        return Err(StoreError::Misconfigured(format!(
            "DynamoDB table {table:?} has key schema {schema:?}; the limiter needs a single \
             partition key {KEY_ATTRIBUTE:?} of type S and no sort key"
        )));
    }
    Ok(())
}

async fn wait_until_active(client: &Client, table: &str) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|error| to_store_error(table, error))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Misconfigured(format!(
                "DynamoDB table {table:?} did not become active within {ACTIVE_WITHIN:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn enable_ttl(client: &Client, table: &str) -> Result<TimeToLive, StoreError> {
    let specification = TimeToLiveSpecification::builder()
        .attribute_name(TTL_ATTRIBUTE)
        .enabled(true)
        .build()
        .map_err(|e| StoreError::Misconfigured(e.to_string()))?;
    let result = client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(specification)
        .send()
        .await;
    match result {
        Ok(_) => Ok(TimeToLive::Enabled),
        // Enabling it twice is refused; it is on, which is what was asked.
        Err(error)
            if error.code() == Some("ValidationException")
                && error
                    .message()
                    .is_some_and(|m| m.contains("already enabled")) =>
        {
            Ok(TimeToLive::Enabled)
        }
        Err(error)
            if matches!(
                error.code(),
                Some("UnknownOperationException" | "UnknownOperation")
            ) =>
        {
            Ok(TimeToLive::Unsupported)
        }
        Err(error) => Err(to_store_error(table, error)),
    }
}
