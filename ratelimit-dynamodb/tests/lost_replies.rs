//! Replies lost after DynamoDB applied the request, which the SDK answers by sending the request
//! again: a debit applied twice must not debit twice, and a give-back applied twice must not give
//! back twice (that would be credit the client never had). On dynalite (a failed condition returns
//! no item: the store reads it) and moto (it returns the item), both key by key, where give-backs
//! happen.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::LoseReplies;
use ratelimit_core::conformance::fresh_key;
use ratelimit_core::{Limit, Policy, Store};
use ratelimit_dynamodb::{DynamoStore, create_table};

/// A store key by key on `endpoint` whose client loses the replies `LoseReplies` is armed for.
async fn losing_store(endpoint: &str) -> (DynamoStore, LoseReplies) {
    let lose = LoseReplies::default();
    let client = common::losing_client(endpoint, &lose).await;
    create_table(&client, common::TABLE).await.unwrap();
    let store = DynamoStore::connect(client, common::TABLE)
        .await
        .unwrap()
        .with_transactions(false);
    (store, lose)
}

/// How many of `n` single-key requests on `key` are admitted.
async fn admitted(store: &DynamoStore, key: &str, policy: Policy, n: usize) -> u64 {
    let mut admitted = 0;
    for _ in 0..n {
        let verdict = store.acquire(&[Limit::new(key, policy)]).await.unwrap();
        admitted += u64::from(verdict.is_allowed());
    }
    admitted
}

/// Another replica's store on `endpoint` takes one token of `key` (a step run from inside the SDK).
fn other_replica_takes(endpoint: String, key: String, policy: Policy, reset_first: bool) {
    common::block_on(async move {
        let other = common::store(&endpoint).await;
        if reset_first {
            other.reset(&key).await.unwrap();
        }
        let verdict = other.acquire(&[Limit::new(&key, policy)]).await.unwrap();
        assert!(verdict.is_allowed(), "the other replica found no token");
    });
}

/// A request on `a` and `b` finds both with tokens, debits `a`, and then finds `b` spent (another
/// replica took its last token in between, made to happen every time): `a` is given back, and
/// that give-back's reply is lost, so the SDK sends it again. `a` then holds exactly what it held
/// before the request: the second give-back must not give back again.
async fn give_back_sent_twice_gives_back_once(endpoint: &str) {
    let (store, lose) = losing_store(endpoint).await;
    let (a, b) = (fresh_key("giveback-a"), fresh_key("giveback-b"));
    // One token an hour: nothing refills during the test, so the bound over it is the burst.
    let (policy_a, policy_b) = (Policy::per_hour(3).unwrap(), Policy::per_hour(1).unwrap());
    let started = Instant::now();
    let mut admitted_a = admitted(&store, &a, policy_a, 1).await;
    assert_eq!(admitted_a, 1);

    lose.before("UpdateItem", &store.item_key(&b), None, {
        let (endpoint, b) = (endpoint.to_string(), b.clone());
        move || other_replica_takes(endpoint, b, policy_b, false)
    });
    // The give-back is the one UpdateItem on `a` that does not ask for the item on a failed
    // condition (the debits do).
    lose.arm(
        "UpdateItem",
        &store.item_key(&a),
        Some("ReturnValuesOnConditionCheckFailure"),
        1,
    );
    let verdict = store
        .acquire(&[Limit::new(&a, policy_a), Limit::new(&b, policy_b)])
        .await
        .unwrap();
    assert!(
        !verdict.is_allowed(),
        "b's token was taken by the other replica"
    );
    assert_eq!(lose.lost(), 1, "{endpoint}: no give-back reply was lost");
    lose.disarm();

    // `a` had 2 tokens left before the denied request, and has 2 after it.
    admitted_a += admitted(&store, &a, policy_a, 4).await;
    let bound = policy_a.max_admitted(started.elapsed());
    assert!(
        admitted_a <= bound,
        "{endpoint}: {admitted_a} admitted on a key whose bound over the test is {bound}: \
         the give-back was applied twice"
    );
    assert_eq!(
        admitted_a, 3,
        "{endpoint}: the give-back did not give back the debit"
    );
}

/// As above, but between the debit of `a` and its give-back, `a` is reset and another replica
/// takes a token of the new bucket. The give-back belongs to a write that is no longer there and
/// must not apply to the new item: from the reset on, `a` admits at most its burst.
async fn give_back_to_a_replaced_item_does_nothing(endpoint: &str) {
    let (store, lose) = losing_store(endpoint).await;
    let (a, b) = (fresh_key("replaced-a"), fresh_key("replaced-b"));
    let (policy_a, policy_b) = (Policy::per_hour(3).unwrap(), Policy::per_hour(1).unwrap());
    lose.before("UpdateItem", &store.item_key(&b), None, {
        let (endpoint, b) = (endpoint.to_string(), b.clone());
        move || other_replica_takes(endpoint, b, policy_b, false)
    });
    let reset_at = std::sync::Arc::new(std::sync::Mutex::new(None));
    lose.before(
        "UpdateItem",
        &store.item_key(&a),
        Some("ReturnValuesOnConditionCheckFailure"),
        {
            let (endpoint, a, reset_at) = (endpoint.to_string(), a.clone(), reset_at.clone());
            move || {
                *reset_at.lock().unwrap() = Some(Instant::now());
                other_replica_takes(endpoint, a, policy_a, true);
            }
        },
    );
    let verdict = store
        .acquire(&[Limit::new(&a, policy_a), Limit::new(&b, policy_b)])
        .await
        .unwrap();
    assert!(!verdict.is_allowed());
    let reset_at = reset_at.lock().unwrap().expect("a was never reset");
    // The other replica took 1 of the new bucket's 3.
    let after = admitted(&store, &a, policy_a, 4).await;
    let since_reset = 1 + after;
    let bound = policy_a.max_admitted(reset_at.elapsed());
    assert!(
        since_reset <= bound,
        "{endpoint}: {} admitted on a since its reset, over the bound of {bound}: the give-back \
         gave the new item credit",
        since_reset
    );
    assert_eq!(after, 2, "{endpoint}: the new bucket lost a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_back_sent_twice_on_dynalite() {
    give_back_sent_twice_gives_back_once(&common::dynalite_endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_back_sent_twice_on_moto() {
    give_back_sent_twice_gives_back_once(&common::moto_endpoint()).await;
}

/// Every debit's first reply is lost and the SDK sends it again: each admitted request debits one
/// token, not two, and no more than the burst is admitted.
async fn debit_sent_twice_debits_once(endpoint: &str) {
    let (store, lose) = losing_store(endpoint).await;
    let key = fresh_key("debit-twice");
    let policy = Policy::per_hour(3).unwrap();
    let started = Instant::now();
    lose.arm(
        "UpdateItem",
        &store.item_key(&key),
        Some("REMOVE"),
        usize::MAX,
    );
    let admitted = admitted(&store, &key, policy, 5).await;
    assert!(
        lose.lost() >= 3,
        "{endpoint}: only {} replies lost",
        lose.lost()
    );
    let bound = policy.max_admitted(started.elapsed());
    assert!(
        admitted <= bound,
        "{endpoint}: {admitted} admitted, over the bound of {bound}"
    );
    assert_eq!(
        admitted, 3,
        "{endpoint}: a retried debit was applied twice (under-admits)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_back_to_a_replaced_item_on_dynalite() {
    give_back_to_a_replaced_item_does_nothing(&common::dynalite_endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_back_to_a_replaced_item_on_moto() {
    give_back_to_a_replaced_item_does_nothing(&common::moto_endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debit_sent_twice_on_dynalite() {
    debit_sent_twice_debits_once(&common::dynalite_endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debit_sent_twice_on_moto() {
    debit_sent_twice_debits_once(&common::moto_endpoint()).await;
}

/// On moto, which has transactions: every transaction's first reply is lost and the SDK sends it
/// again. Each admitted request debits each of its keys once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_sent_twice_on_moto() {
    let lose = LoseReplies::default();
    let client = common::losing_client(&common::moto_endpoint(), &lose).await;
    create_table(&client, common::TABLE).await.unwrap();
    let store = DynamoStore::connect(client, common::TABLE).await.unwrap();
    let (a, b) = (fresh_key("tx-twice-a"), fresh_key("tx-twice-b"));
    let policy = Policy::per_hour(3).unwrap();
    let started = Instant::now();
    lose.arm("TransactWriteItems", &store.item_key(&a), None, usize::MAX);
    let mut admitted = 0u64;
    for _ in 0..5 {
        let verdict = store
            .acquire(&[Limit::new(&a, policy), Limit::new(&b, policy)])
            .await
            .unwrap();
        admitted += u64::from(verdict.is_allowed());
    }
    assert!(store.uses_transactions(), "moto has transactions");
    assert!(lose.lost() >= 3, "only {} replies lost", lose.lost());
    let bound = policy.max_admitted(started.elapsed());
    assert!(
        admitted <= bound,
        "{admitted} admitted, over the bound of {bound}"
    );
    assert_eq!(
        admitted, 3,
        "a retried transaction debited twice (under-admits)"
    );
}
