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
