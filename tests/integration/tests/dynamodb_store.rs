//! The DynamoDB store against DynamoDB Local, on tables created from `template.yaml`.

use chrono::Utc;
use fulfillment::changes::{Decision, Event, plan_change};
use fulfillment::domain::{PlanId, SubscriptionId, SubscriptionStatus};
use fulfillment::lifecycle::LifecycleEvent;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::{Change, ChangeSource, StoreError, SubscriptionRecord, SubscriptionStore};
use integration_tests::fixtures::{event, guid, subscription};
use integration_tests::{client, fresh_store};

fn change(current: Option<&SubscriptionRecord>, event: Event) -> Change {
    match plan_change(current, event, Utc::now()) {
        Decision::Apply(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn the_store_contract_holds_on_dynamodb_local() {
    fulfillment::testing::contract::run_all(fresh_store).await;
}

#[tokio::test]
async fn the_usage_store_contract_holds_on_dynamodb_local() {
    fulfillment::testing::usage_contract::run_all(fresh_store).await;
}

#[tokio::test]
async fn an_unreachable_dynamodb_gives_a_typed_retryable_error() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let store = DynamoDbStore::new(client(&format!("http://127.0.0.1:{port}")), "subscriptions");
    let id = SubscriptionId::parse(&guid()).expect("id");

    let read = store.get(&id).await.expect_err("nothing listens");
    assert!(matches!(read, StoreError::Unavailable { .. }), "{read:?}");
    assert!(read.is_retryable());

    let mut observed = subscription(SubscriptionStatus::Subscribed, &guid());
    observed.plan_id = PlanId::parse("basic");
    let create = change(
        None,
        event(
            LifecycleEvent::Observed(SubscriptionStatus::Subscribed),
            ChangeSource::Landing,
            observed,
            None,
        ),
    );
    let write = store.apply(&create).await.expect_err("nothing listens");
    assert!(matches!(write, StoreError::Unavailable { .. }), "{write:?}");
    assert!(std::error::Error::source(&write).is_some(), "the SDK error is kept as the source");
}

#[tokio::test]
async fn a_missing_table_is_a_refusal_not_a_retry() {
    let store =
        DynamoDbStore::new(client(&integration_tests::dynamodb_endpoint()), format!("absent-{}", guid()));
    let error = store.get(&SubscriptionId::parse(&guid()).expect("id")).await.expect_err("no such table");
    assert!(matches!(error, StoreError::Refused { .. }), "{error:?}");
    assert!(!error.is_retryable());
}

/// The model-based property test of the ledger (see `fulfillment::testing::convergence`) on
/// DynamoDB Local, each case on a fresh table: fewer cases than on the in-memory store.
#[test]
fn the_ledger_converges_on_dynamodb_local() {
    fulfillment::testing::convergence::check_convergence(20, fresh_store);
}
