//! The DynamoDB store against DynamoDB Local, on tables created from `template.yaml`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use fulfillment::changes::{Decision, Event, plan_change};
use fulfillment::domain::{PlanId, SubscriptionId, SubscriptionStatus, Timestamp};
use fulfillment::lifecycle::LifecycleEvent;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::{
    Applied, Change, ChangeSource, Outcome, StateWrite, StoreError, SubscriptionRecord, SubscriptionStore,
};
use integration_tests::fixtures::{event, guid, subscription};
use integration_tests::{client, fresh_store};
use tokio::sync::Barrier;

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
    let first = change(None, event(LifecycleEvent::Observed(status), ChangeSource::Landing, observed, None));
    assert_eq!(store.apply(&first).await.expect("create"), Applied::Recorded { version: 1 });
    store.get(&id).await.expect("read").expect("created")
}

#[tokio::test]
async fn a_record_reads_back_exactly_as_written() {
    let store = fresh_store().await;
    let mut observed = subscription(SubscriptionStatus::Subscribed, &guid());
    observed.term = Some(fulfillment::domain::Term {
        start_date: Some(at(0)),
        end_date: Some(at(0) + Duration::days(30)),
        term_unit: Some(fulfillment::domain::TermUnit::P1M),
        charge_duration: None,
    });
    observed.last_modified = Some(at(3) + Duration::nanoseconds(123_456_700));
    observed.auto_renew = Some(true);
    let first = change(
        None,
        event(
            LifecycleEvent::Observed(SubscriptionStatus::Subscribed),
            ChangeSource::Landing,
            observed.clone(),
            Some(at(1)),
        ),
    );
    store.apply(&first).await.expect("create");

    let record = store.get(&observed.id).await.expect("read").expect("created");
    assert_eq!(record.subscription, observed);
    assert_eq!(record.version, 1);
    assert_eq!(record.last_event_at, Some(at(1)));
    let operation =
        store.operation(&observed.id, &first.operation.id).await.expect("read op").expect("op recorded");
    assert_eq!(operation, first.operation);
    assert_eq!(store.history(&observed.id).await.expect("history"), vec![first.history]);
}

#[tokio::test]
async fn a_missing_subscription_reads_as_none() {
    let store = fresh_store().await;
    let id = SubscriptionId::parse(&guid()).expect("id");
    assert_eq!(store.get(&id).await.expect("read"), None);
    assert!(store.history(&id).await.expect("history").is_empty());
}

#[tokio::test]
async fn the_same_change_applied_twice_changes_state_and_history_once() {
    let store = fresh_store().await;
    let pending = seeded(&store, SubscriptionStatus::PendingFulfillmentStart, &guid()).await;
    let activation =
        event(LifecycleEvent::Activated, ChangeSource::Activation, pending.subscription.clone(), Some(at(5)));

    let first = change(Some(&pending), activation.clone());
    assert_eq!(store.apply(&first).await.expect("apply"), Applied::Recorded { version: 2 });
    // The identical change again (a retry of the same write) ...
    assert_eq!(store.apply(&first).await.expect("apply again"), Applied::Duplicate);
    // ... and the same operation re-decided from a fresh read (a redelivered webhook).
    let now = store.get(&pending.subscription.id).await.expect("read").expect("exists");
    let again = change(Some(&now), activation);
    assert_eq!(store.apply(&again).await.expect("apply redelivery"), Applied::Duplicate);

    let after = store.get(&pending.subscription.id).await.expect("read").expect("exists");
    assert_eq!(after.version, 2);
    assert_eq!(after.status(), SubscriptionStatus::Subscribed);
    let history = store.history(&pending.subscription.id).await.expect("history");
    assert_eq!(history.len(), 2, "creation and one activation: {history:#?}");
    assert_eq!(history[1].event, "Activated");
    assert_eq!(
        history[1].from.as_ref().and_then(|s| s.status.clone()),
        Some(SubscriptionStatus::PendingFulfillmentStart)
    );
    assert_eq!(history[1].to.as_ref().and_then(|s| s.status.clone()), Some(SubscriptionStatus::Subscribed));
}

#[tokio::test]
async fn twenty_concurrent_writers_lose_no_update() {
    const WRITERS: usize = 20;
    let store = Arc::new(fresh_store().await);
    let seed = seeded(&store, SubscriptionStatus::Subscribed, &guid()).await;
    let id = seed.subscription.id.clone();
    let barrier = Arc::new(Barrier::new(WRITERS));

    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), id.clone());
            tokio::spawn(async move {
                let seats = 100 + writer as u32;
                let read = store.get(&id).await.expect("read").expect("exists");
                let mut after = read.subscription.clone();
                after.quantity = Some(seats);
                let delivery = event(LifecycleEvent::QuantityChanged, ChangeSource::Webhook, after, None);
                let planned = change(Some(&read), delivery.clone());
                // Everyone has read version 1 before anyone writes: at most one can win this round.
                barrier.wait().await;
                let first_try = store.apply(&planned).await;
                let mut attempts = 1;
                let mut outcome = match &first_try {
                    Ok(applied) => Some(*applied),
                    Err(StoreError::Conflict { .. }) => None,
                    Err(other) => panic!("writer {writer}: expected a conflict, got {other:?}"),
                };
                // Losers re-read and decide again, as a redelivered webhook would.
                while outcome.is_none() {
                    attempts += 1;
                    assert!(attempts <= 200, "writer {writer} never got its change in");
                    let read = store.get(&id).await.expect("read").expect("exists");
                    match store.apply(&change(Some(&read), delivery.clone())).await {
                        Ok(applied) => outcome = Some(applied),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(other) => panic!("writer {writer}: {other:?}"),
                    }
                }
                (delivery.operation_id, seats, first_try.is_ok(), outcome.expect("set above"))
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("writer task"));
    }

    let first_round_wins = results.iter().filter(|(_, _, won, _)| *won).count();
    assert!(first_round_wins <= 1, "{first_round_wins} writers won on the same version");
    assert!(results.iter().all(|(_, _, _, applied)| matches!(applied, Applied::Recorded { .. })));

    let history = store.history(&id).await.expect("history");
    assert_eq!(history.len(), WRITERS + 1, "creation plus every writer once");
    let versions: Vec<u64> = history.iter().map(|h| h.version).collect();
    assert_eq!(
        versions,
        (1..=WRITERS as u64 + 1).collect::<Vec<_>>(),
        "versions strictly increase in history order"
    );
    let recorded: HashMap<_, _> = history.iter().map(|h| (h.operation_id.clone(), h)).collect();
    for (operation_id, seats, _, applied) in &results {
        let entry =
            recorded.get(operation_id).unwrap_or_else(|| panic!("{operation_id} missing from history"));
        assert_eq!(entry.to.as_ref().and_then(|s| s.quantity), Some(*seats));
        assert_eq!(*applied, Applied::Recorded { version: entry.version });
        assert!(store.operation(&id, operation_id).await.expect("read op").is_some());
    }
    let last = store.get(&id).await.expect("read").expect("exists");
    assert_eq!(last.version, WRITERS as u64 + 1);
    assert_eq!(last.subscription.quantity, history.last().and_then(|h| h.to.as_ref()?.quantity));
}

#[tokio::test]
async fn a_stale_change_is_recorded_but_does_not_move_the_state() {
    let store = fresh_store().await;
    let seed = seeded(&store, SubscriptionStatus::Subscribed, &guid()).await;
    let id = seed.subscription.id.clone();

    let suspend =
        event(LifecycleEvent::Suspended, ChangeSource::Webhook, seed.subscription.clone(), Some(at(10)));
    store.apply(&change(Some(&seed), suspend)).await.expect("suspend");
    let suspended = store.get(&id).await.expect("read").expect("exists");
    let reinstate = event(
        LifecycleEvent::Reinstated,
        ChangeSource::Webhook,
        suspended.subscription.clone(),
        Some(at(30)),
    );
    store.apply(&change(Some(&suspended), reinstate)).await.expect("reinstate");
    let reinstated = store.get(&id).await.expect("read").expect("exists");
    assert_eq!(reinstated.status(), SubscriptionStatus::Subscribed);

    // A Suspend from before the Reinstate, delivered late.
    let late = event(
        LifecycleEvent::Suspended,
        ChangeSource::Webhook,
        reinstated.subscription.clone(),
        Some(at(20)),
    );
    let stale = change(Some(&reinstated), late.clone());
    assert_eq!(stale.state, StateWrite::Keep);
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
async fn creating_a_record_that_exists_is_a_conflict() {
    let store = fresh_store().await;
    let seed = seeded(&store, SubscriptionStatus::Subscribed, &guid()).await;
    let again = change(
        None,
        event(
            LifecycleEvent::Observed(SubscriptionStatus::Subscribed),
            ChangeSource::Reconcile,
            seed.subscription.clone(),
            None,
        ),
    );
    let error = store.apply(&again).await.expect_err("a second creation must fail");
    assert!(
        matches!(&error, StoreError::Conflict { subscription_id } if *subscription_id == seed.subscription.id)
    );
    assert!(error.is_retryable());
    assert_eq!(store.history(&seed.subscription.id).await.expect("history").len(), 1);
}

#[tokio::test]
async fn lookup_by_beneficiary_tenant_returns_exactly_that_tenants_subscriptions() {
    let store = fresh_store().await;
    let (tenant_a, tenant_b) = (guid(), guid());
    let mut expected_a = HashSet::new();
    for status in
        [SubscriptionStatus::Subscribed, SubscriptionStatus::Suspended, SubscriptionStatus::Unsubscribed]
    {
        expected_a.insert(seeded(&store, status, &tenant_a).await.subscription.id);
    }
    let mut expected_b = HashSet::new();
    for _ in 0..2 {
        expected_b.insert(seeded(&store, SubscriptionStatus::Subscribed, &tenant_b).await.subscription.id);
    }
    // One without a beneficiary tenant: in no tenant's list.
    let mut anonymous = subscription(SubscriptionStatus::Subscribed, "");
    anonymous.beneficiary = None;
    let create = change(
        None,
        event(
            LifecycleEvent::Observed(SubscriptionStatus::Subscribed),
            ChangeSource::Reconcile,
            anonymous,
            None,
        ),
    );
    store.apply(&create).await.expect("create");

    let ids = |records: Vec<SubscriptionRecord>| {
        records.into_iter().map(|r| r.subscription.id).collect::<HashSet<_>>()
    };
    assert_eq!(ids(store.by_beneficiary_tenant(&tenant_a).await.expect("query a")), expected_a);
    assert_eq!(ids(store.by_beneficiary_tenant(&tenant_b).await.expect("query b")), expected_b);
    assert!(store.by_beneficiary_tenant(&guid()).await.expect("query unknown").is_empty());
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
