//! Faults, each in a test: the emulator going away under load, a missing table, a table of the
//! wrong shape, a hand-written item the limiter cannot read, and TTL.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveStatus,
};
use ratelimit_core::conformance::fresh_key;
use ratelimit_core::{FailurePolicy, Limit, Limiter, Policy, Store, StoreError, StoreFailure};
use ratelimit_dynamodb::{
    DynamoStore, KEY_ATTRIBUTE, TAT_ATTRIBUTE, TTL_ATTRIBUTE, TimeToLive, check_table, create_table,
};

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Writes an item by hand, as an operator or another program might.
async fn put_raw(client: &Client, item_key: &str, tat: AttributeValue) {
    client
        .put_item()
        .table_name(common::TABLE)
        .item(KEY_ATTRIBUTE, AttributeValue::S(item_key.into()))
        .item(TAT_ATTRIBUTE, tat)
        .send()
        .await
        .unwrap();
}

async fn get_raw(client: &Client, item_key: &str) -> Option<HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(common::TABLE)
        .key(KEY_ATTRIBUTE, AttributeValue::S(item_key.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emulator_stopped_under_load() {
    let mut dynalite = common::OwnDynalite::start(8016).await;
    let client = common::client(&dynalite.endpoint()).await;
    create_table(&client, common::TABLE).await.unwrap();
    let store = Arc::new(
        DynamoStore::connect(client.clone(), common::TABLE)
            .await
            .unwrap(),
    );
    let policy = Policy::per_second(50).unwrap().with_burst(10).unwrap();
    let closed = Arc::new(
        Limiter::from_arc(store.clone())
            .with_failure_policy(FailurePolicy::Closed)
            .with_deadline(Duration::from_millis(300))
            .with_cooldown(Duration::from_millis(200)),
    );
    let open = Arc::new(
        Limiter::from_arc(store.clone())
            .with_failure_policy(FailurePolicy::Open)
            .with_deadline(Duration::from_millis(300))
            .with_cooldown(Duration::from_millis(200)),
    );

    // Load through both limiters while the emulator is killed in the middle.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (n, limiter) in [closed.clone(), open.clone()]
        .into_iter()
        .cycle()
        .take(8)
        .enumerate()
    {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("{}-{n}", fresh_key("fault"));
            let (mut healthy, mut degraded) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let verdict = limiter.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                match verdict.degraded_by() {
                    None => healthy += 1,
                    Some(_) => {
                        degraded += 1;
                        // The failure policy decides: closed denies, open admits.
                        let closed = limiter.failure_policy() == FailurePolicy::Closed;
                        assert_eq!(verdict.is_allowed(), !closed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (healthy, degraded)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    dynalite.kill().await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // While it is down, the store itself answers with a typed error.
    let direct = store.acquire(&[Limit::new("direct", policy)]).await;
    assert!(
        matches!(
            direct,
            Err(StoreError::Unavailable(_) | StoreError::Timeout(_))
        ),
        "{direct:?}"
    );
    assert!(!closed.store_healthy() || !open.store_healthy());

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        let (healthy, degraded) = task.await.unwrap();
        assert!(
            healthy > 0,
            "no decision was made before the emulator stopped"
        );
        assert!(
            degraded > 0,
            "no decision was degraded after the emulator stopped"
        );
    }

    // Back, but empty: the table is gone, which is a configuration error, not an outage.
    dynalite.restart().await;
    let missing = store.acquire(&[Limit::new("after-restart", policy)]).await;
    assert!(
        matches!(missing, Err(StoreError::Misconfigured(_))),
        "{missing:?}"
    );
    create_table(&client, common::TABLE).await.unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        let verdict = closed
            .acquire(&[Limit::new("after-restart", policy)])
            .await
            .unwrap();
        if verdict.degraded_by().is_none() {
            assert!(verdict.is_allowed());
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the limiter did not use the store again once it was back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_table_is_a_configuration_error() {
    for endpoint in [common::dynalite_endpoint(), common::moto_endpoint()] {
        let client = common::client(&endpoint).await;
        let connect = DynamoStore::connect(client.clone(), "no_such_table").await;
        match connect {
            Err(StoreError::Misconfigured(message)) => {
                assert!(message.contains("no_such_table"), "{message}")
            }
            other => panic!("{endpoint}: expected Misconfigured, got {other:?}"),
        }
        let store = DynamoStore::new(client, "no_such_table");
        let policy = Policy::per_second(5).unwrap();
        let acquire = store.acquire(&[Limit::new("k", policy)]).await;
        assert!(
            matches!(acquire, Err(StoreError::Misconfigured(_))),
            "{acquire:?}"
        );
        let limiter = Limiter::new(store).with_failure_policy(FailurePolicy::Closed);
        let verdict = limiter.acquire(&[Limit::new("k", policy)]).await.unwrap();
        assert_eq!(verdict.degraded_by(), Some(StoreFailure::Misconfigured));
        assert!(!verdict.is_allowed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn table_of_the_wrong_shape_is_refused() {
    let client = common::client(&common::dynalite_endpoint()).await;
    let table = "ratelimit_wrong_schema";
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    if let Err(error) = created {
        assert_eq!(
            aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&error),
            Some("ResourceInUseException")
        );
    }
    for attempt in 0.. {
        match check_table(&client, table).await {
            Err(StoreError::Misconfigured(message)) if message.contains("key schema") => break,
            other if attempt < 30 => {
                let _ = other;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected a key-schema error, got {other:?}"),
        }
    }
    assert!(matches!(
        DynamoStore::connect(client.clone(), table).await,
        Err(StoreError::Misconfigured(_))
    ));
    assert!(matches!(
        create_table(&client, table).await,
        Err(StoreError::Misconfigured(_))
    ));
    // Used without the check, DynamoDB's refusal is still a configuration error.
    let store = DynamoStore::new(client, table);
    let acquire = store
        .acquire(&[Limit::new("k", Policy::per_second(5).unwrap())])
        .await;
    assert!(
        matches!(acquire, Err(StoreError::Misconfigured(_))),
        "{acquire:?}"
    );
}

/// Items written by hand with a state the limiter cannot read are errors on every path (one key,
/// several keys, peek), and are left as they were: never read as a full bucket, never overwritten.
async fn malformed_items_are_typed_errors(endpoint: &str) {
    let store = common::store(endpoint).await;
    let client = common::client(endpoint).await;
    let policy = Policy::per_second(5).unwrap();
    for bad in [
        AttributeValue::S("soon".into()),
        AttributeValue::N("-3".into()),
        AttributeValue::N("9000000000000000000.5".into()),
        AttributeValue::N("123456789012345678901234567890".into()),
        AttributeValue::Bool(true),
    ] {
        let key = fresh_key("malformed");
        let item_key = store.item_key(&key);
        put_raw(&client, &item_key, bad.clone()).await;
        let other = fresh_key("malformed-other");
        for limits in [
            vec![Limit::new(&key, policy)],
            vec![Limit::new(&other, policy), Limit::new(&key, policy)],
        ] {
            let acquired = store.acquire(&limits).await;
            assert!(
                matches!(acquired, Err(StoreError::BadReply(_))),
                "{endpoint}: {bad:?} in acquire gave {acquired:?}"
            );
            let peeked = store.peek(&limits).await;
            assert!(
                matches!(peeked, Err(StoreError::BadReply(_))),
                "{endpoint}: {bad:?} in peek gave {peeked:?}"
            );
        }
        let after = get_raw(&client, &item_key).await.unwrap();
        assert_eq!(
            after.get(TAT_ATTRIBUTE),
            Some(&bad),
            "the bad item was overwritten"
        );
        // And nothing of the request was taken from the good key.
        let verdict = store.peek(&[Limit::new(&other, policy)]).await.unwrap();
        assert_eq!(verdict.decision().unwrap().remaining(), policy.burst() - 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_items_on_dynalite() {
    malformed_items_are_typed_errors(&common::dynalite_endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_items_on_moto() {
    malformed_items_are_typed_errors(&common::moto_endpoint()).await;
}

/// An item whose TTL has passed but which DynamoDB has not deleted yet reads as a full bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_items_read_as_full_buckets() {
    let store = common::dynalite().await;
    let client = common::client(&common::dynalite_endpoint()).await;
    let key = fresh_key("stale");
    let an_hour_ago = unix_nanos() - 3_600_000_000_000;
    client
        .put_item()
        .table_name(common::TABLE)
        .item(KEY_ATTRIBUTE, AttributeValue::S(store.item_key(&key)))
        .item(TAT_ATTRIBUTE, AttributeValue::N(an_hour_ago.to_string()))
        .item(
            TTL_ATTRIBUTE,
            AttributeValue::N((an_hour_ago / 1_000_000_000).to_string()),
        )
        .send()
        .await
        .unwrap();
    let policy = Policy::per_minute(10).unwrap();
    let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(verdict.is_allowed());
    assert_eq!(verdict.decision().unwrap().remaining(), 9);
}

/// The helper enables TTL where the endpoint has the API, and every write sets the TTL attribute
/// to a second after the bucket is full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_is_enabled_and_set() {
    let moto = common::client(&common::moto_endpoint()).await;
    let report = create_table(&moto, "ratelimit_ttl").await.unwrap();
    assert_eq!(report.ttl, TimeToLive::Enabled);
    let described = moto
        .describe_time_to_live()
        .table_name("ratelimit_ttl")
        .send()
        .await
        .unwrap();
    let ttl = described.time_to_live_description().unwrap();
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE));
    // Asking again is fine.
    assert!(!create_table(&moto, "ratelimit_ttl").await.unwrap().created);

    let dynalite = common::client(&common::dynalite_endpoint()).await;
    let report = create_table(&dynalite, "ratelimit_ttl").await.unwrap();
    assert_eq!(report.ttl, TimeToLive::Unsupported);

    let store = DynamoStore::connect(moto.clone(), "ratelimit_ttl")
        .await
        .unwrap();
    let key = fresh_key("ttl");
    let policy = Policy::per_second(2).unwrap().with_burst(4).unwrap();
    for _ in 0..3 {
        assert!(
            store
                .acquire(&[Limit::new(&key, policy)])
                .await
                .unwrap()
                .is_allowed()
        );
    }
    let item = moto
        .get_item()
        .table_name("ratelimit_ttl")
        .key(KEY_ATTRIBUTE, AttributeValue::S(store.item_key(&key)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
        .unwrap();
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<u64>().unwrap(),
        other => panic!("{name}: {other:?}"),
    };
    let (tat, expires_at) = (number(TAT_ATTRIBUTE), number(TTL_ATTRIBUTE));
    assert!(
        expires_at * 1_000_000_000 >= tat,
        "TTL {expires_at} before the bucket is full at {tat}"
    );
    assert!(
        expires_at <= unix_nanos() / 1_000_000_000 + 4,
        "TTL {expires_at} far past the tolerance of 2 s"
    );
}
