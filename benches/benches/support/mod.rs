//! What the benches that drive servers from many tasks share: the concurrent driver, and a
//! DynamoDB client for the emulators. Each bench uses what it needs of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time for `tasks` tasks to make `iters` calls between them.
pub async fn concurrently<F, Fut>(tasks: u64, iters: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let call = call.clone();
            let share = iters / tasks + u64::from(t < iters % tasks);
            tokio::spawn(async move {
                for i in 0..share {
                    call(t * 1_000_000 + i).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}

/// A DynamoDB client for an emulator at `endpoint` (any region, dummy credentials).
pub async fn dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region("us-east-1")
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .http_client(http)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}
