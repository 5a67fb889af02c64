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
    let store = DynamoDbStore::new(client(&format!("http://127.0.0.1:{port}")), "subscriptions", "usage");
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
    let absent = integration_tests::table::TableNames::suffixed(&format!("absent-{}", guid()));
    let store = absent.store(client(&integration_tests::dynamodb_endpoint()));
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

/// What DynamoDB's TTL removes: a report's key after three days, a settled hour 400 days after
/// it; an hour not yet settled never. Usage is kept in the usage table, never among the
/// subscriptions.
#[tokio::test]
async fn settled_usage_hours_and_report_keys_expire_and_pending_hours_do_not() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use fulfillment::store::dynamodb::layout;
    use fulfillment::store::dynamodb::{SETTLED_HOUR_RETENTION, USAGE_KEY_RETENTION};
    use fulfillment::store::usage::{HourKey, HourState, UsageReport, UsageStore, hour_of};

    let client = client(&integration_tests::dynamodb_endpoint());
    let tables = integration_tests::table::TableNames::fresh();
    integration_tests::table::create_tables(&client, &tables).await;
    let store = tables.store(client.clone());
    let table = tables.usage.clone();
    let id = SubscriptionId::parse(&guid()).expect("id");
    let now = Utc::now();
    let hour = hour_of(now) - chrono::Duration::hours(1);
    let report = UsageReport {
        subscription_id: id.clone(),
        dimension: "api-calls".into(),
        quantity: 2.0,
        at: hour,
        key: "k1".into(),
    };
    store.add_usage(&report, &PlanId::parse("basic").expect("plan"), now).await.expect("added");
    let expires_at = |sort: String| {
        let (client, table, id) = (client.clone(), table.clone(), id.clone());
        async move {
            let item = client
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(layout::partition(&id)))
                .key("sk", AttributeValue::S(sort))
                .consistent_read(true)
                .send()
                .await
                .expect("read")
                .item
                .expect("the item");
            item.get(layout::EXPIRES_AT).map(|v| v.as_n().expect("a number").parse::<i64>().expect("seconds"))
        }
    };
    let hour_sort = layout::usage(hour, "api-calls");
    assert_eq!(expires_at(layout::usage_key("k1")).await, Some((now + USAGE_KEY_RETENTION).timestamp()));
    assert_eq!(expires_at(hour_sort.clone()).await, None, "an open hour is kept");

    let key = HourKey { subscription_id: id.clone(), dimension: "api-calls".into(), hour };
    let mut closed = store.close_hour(&key, now).await.expect("closed").expect("the hour");
    assert_eq!(expires_at(hour_sort.clone()).await, None, "an hour being sent is kept");
    closed.state = HourState::Sending { sent_quantity: 2.0, attempts: 1, last_error: Some("503".into()) };
    store.record_send(&closed).await.expect("recorded");
    assert_eq!(expires_at(hour_sort.clone()).await, None, "an hour still to send is kept");
    closed.state = HourState::Accepted {
        sent_quantity: 2.0,
        usage_event_id: Some(guid()),
        message_time: Some(now),
        duplicate: false,
    };
    store.record_send(&closed).await.expect("recorded");
    assert_eq!(expires_at(hour_sort).await, Some((hour + SETTLED_HOUR_RETENTION).timestamp()));
    let among_subscriptions =
        client.scan().table_name(&tables.subscriptions).consistent_read(true).send().await.expect("scanned");
    assert_eq!(among_subscriptions.count, 0, "no usage item in the subscriptions table");
}
