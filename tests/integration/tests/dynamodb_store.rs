//! The DynamoDB store against DynamoDB Local, on tables created from `template.yaml`.

use chrono::{TimeZone, Utc};
use fulfillment::changes::{Decision, Event, plan_change};
use fulfillment::domain::{PlanId, SubscriptionId, SubscriptionStatus, Timestamp};
use fulfillment::lifecycle::LifecycleEvent;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::{
    Applied, Change, ChangeSource, Outcome, StateWrite, StoreError, SubscriptionRecord, SubscriptionStore,
};
use integration_tests::fixtures::{event, guid, subscription};
use integration_tests::{client, fresh_store};

fn at(minute: u32) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 20, 14, minute, 0).single().expect("a valid time")
}

fn change(current: Option<&SubscriptionRecord>, event: Event) -> Change {
    match plan_change(current, event, Utc::now()) {
        Decision::Apply(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

/// Stores a subscription first seen in `status` and returns its record.
async fn seeded(store: &DynamoDbStore, status: SubscriptionStatus, tenant: &str) -> SubscriptionRecord {
    let observed = subscription(status.clone(), tenant);
    let id = observed.id.clone();
    let first =
        change(None, event(LifecycleEvent::Observed(status), ChangeSource::Landing, observed, Some(at(0))));
    assert_eq!(store.apply(&first).await.expect("create"), Applied::Recorded { version: 1 });
    store.get(&id).await.expect("read").expect("created")
}

#[tokio::test]
async fn a_stale_view_is_recorded_but_does_not_move_the_state() {
    let store = fresh_store().await;
    let seed = seeded(&store, SubscriptionStatus::Subscribed, &guid()).await;
    let id = seed.subscription.id.clone();
    let with_status = |status: SubscriptionStatus| {
        let mut s = seed.subscription.clone();
        s.status = Some(status);
        s
    };
    let delivered = |lifecycle, status, minute| Event {
        record_if_unchanged: true,
        ..event(lifecycle, ChangeSource::Webhook, with_status(status), Some(at(minute)))
    };

    let suspend = delivered(LifecycleEvent::Suspended, SubscriptionStatus::Suspended, 10);
    store.apply(&change(Some(&seed), suspend)).await.expect("suspend");
    let suspended = store.get(&id).await.expect("read").expect("exists");
    let reinstate = delivered(LifecycleEvent::Reinstated, SubscriptionStatus::Subscribed, 30);
    store.apply(&change(Some(&suspended), reinstate)).await.expect("reinstate");
    let reinstated = store.get(&id).await.expect("read").expect("exists");
    assert_eq!(reinstated.status(), SubscriptionStatus::Subscribed);

    // Microsoft's view read before the Reinstate's, delivered late.
    let late = delivered(LifecycleEvent::Suspended, SubscriptionStatus::Suspended, 20);
    let stale = change(Some(&reinstated), late.clone());
    assert_eq!(stale.state, StateWrite::Keep { expected_version: Some(reinstated.version) });
    assert_eq!(store.apply(&stale).await.expect("record stale"), Applied::Recorded { version: 3 });

    let after = store.get(&id).await.expect("read").expect("exists");
    assert_eq!(after, reinstated, "the state did not move");
    let history = store.history(&id).await.expect("history");
    let last = history.last().expect("entries");
    assert_eq!((last.outcome.clone(), &last.operation_id), (Outcome::Stale, &late.operation_id));
    let operation = store.operation(&id, &late.operation_id).await.expect("read op").expect("recorded");
    assert_eq!(operation.outcome, Outcome::Stale);
}

#[tokio::test]
async fn the_store_contract_holds_on_dynamodb_local() {
    fulfillment::testing::contract::run_all(fresh_store).await;
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
