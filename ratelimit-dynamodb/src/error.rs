//! DynamoDB errors in the core's terms: unavailable, nonsense, or misconfigured.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use ratelimit_core::StoreError;

/// Maps an SDK error onto [`StoreError`].
///
/// Throttling, capacity and server-side trouble, timeouts and lost connections are `Unavailable`:
/// the failure policy applies and a later call may succeed. A missing table, a key schema that does
/// not match, refused credentials or a client without a region are `Misconfigured`: retrying will
/// not help.
pub(crate) fn to_store_error<E, R>(table: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let SdkError::ConstructionFailure(_) = &error {
        // The request could not even be built: no region, no credentials provider, bad endpoint.
        return StoreError::Misconfigured(format!("DynamoDB client: {}", describe(&error)));
    }
    match error.code() {
        Some("ResourceNotFoundException") => StoreError::Misconfigured(format!(
            "DynamoDB table {table:?} does not exist (create it with ratelimit_dynamodb::create_table)"
        )),
        Some("ValidationException") => StoreError::Misconfigured(format!(
            "DynamoDB refused the request on table {table:?} (is its key schema the one \
             ratelimit_dynamodb::create_table makes?): {}",
            error.message().unwrap_or("no message")
        )),
        Some(
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException",
        ) => StoreError::Misconfigured(format!(
            "DynamoDB refused the credentials: {}",
            describe(&error)
        )),
        _ => StoreError::unavailable(error),
    }
}

/// The code and message of an error, or its display when it has neither.
fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => std::error::Error::source(error)
            .map(ToString::to_string)
            .unwrap_or_else(|| error.to_string()),
    }
}
