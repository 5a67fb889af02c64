//! The usage store contract: what every [`UsageStore`] must do, run against the in-memory store
//! (`shared/tests/store_contract.rs`) and DynamoDB Local (`tests/integration/tests/dynamodb_store.rs`).
//! Each check takes a fresh, empty store.

use chrono::{Duration, TimeZone, Utc};

use crate::domain::{PlanId, SubscriptionId, Timestamp};
use crate::store::StoreError;
use crate::store::usage::{Added, HourKey, HourState, UsageReport, UsageStore};

fn at(minute: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).single().expect("time") + Duration::minutes(minute)
}

fn fresh_id() -> SubscriptionId {
    SubscriptionId::parse(&uuid::Uuid::new_v4().to_string()).expect("id")
}

fn plan() -> PlanId {
    PlanId::parse("metered").expect("a plan")
}

fn report(id: &SubscriptionId, dimension: &str, quantity: f64, minute: i64, key: &str) -> UsageReport {
    UsageReport {
        subscription_id: id.clone(),
        dimension: dimension.into(),
        quantity,
        at: at(minute),
        key: key.into(),
    }
}

fn hour_key(id: &SubscriptionId, dimension: &str, minute: i64) -> HourKey {
    HourKey {
        subscription_id: id.clone(),
        dimension: dimension.into(),
        hour: crate::store::usage::hour_of(at(minute)),
    }
}

/// Adds, retrying what the store says may succeed later (as the ingestion does).
async fn add(store: &impl UsageStore, report: &UsageReport) -> Added {
    for _ in 0..20 {
        match store.add_usage(report, &plan(), at(70)).await {
            Err(error) if error.is_retryable() => continue,
            other => return other.expect("added"),
        }
    }
    panic!("{report:?} could not be added in 20 tries");
}

pub async fn run_all<S, F, Fut>(fresh: F)
where
    S: UsageStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    reports_add_up_per_subscription_dimension_and_hour(&fresh().await).await;
    a_repeated_key_adds_nothing_and_a_reused_one_is_told_apart(&fresh().await).await;
    a_closed_hour_takes_no_more_usage_and_sends_its_total(&fresh().await).await;
    only_unsettled_hours_of_the_hour_asked_are_listed(&fresh().await).await;
    a_send_is_recorded_only_on_an_hour_still_sending(&fresh().await).await;
    concurrent_reports_to_one_hour_lose_nothing(&fresh().await).await;
    late_usage_goes_to_a_later_hour_and_its_key_still_knows_it(&fresh().await).await;
}

pub async fn reports_add_up_per_subscription_dimension_and_hour(store: &impl UsageStore) {
    let (id, other) = (fresh_id(), fresh_id());
    for (i, (dimension, quantity, minute)) in
        [("api_calls", 1.5, 0), ("api_calls", 2.25, 59), ("gb", 10.0, 30), ("api_calls", 4.0, 60)]
            .into_iter()
            .enumerate()
    {
        assert_eq!(
            add(store, &report(&id, dimension, quantity, minute, &format!("k{i}"))).await,
            Added::Added
        );
    }
    assert_eq!(
        add(store, &report(&other, "api_calls", 7.0, 10, "k0")).await,
        Added::Added,
        "keys are per subscription"
    );
    let hours = store.usage_of(&id, at(0), at(60)).await.expect("read");
    let seen: Vec<(Timestamp, &str, f64, u64)> =
        hours.iter().map(|h| (h.hour, h.dimension.as_str(), h.quantity, h.reports)).collect();
    assert_eq!(seen, [(at(0), "api_calls", 3.75, 2), (at(0), "gb", 10.0, 1), (at(60), "api_calls", 4.0, 1)]);
    for hour in &hours {
        assert_eq!((&hour.plan_id, &hour.state, &hour.subscription_id), (&plan(), &HourState::Open, &id));
    }
    assert_eq!(store.usage_of(&id, at(60), at(60)).await.expect("read").len(), 1, "one hour asked");
    assert!(store.usage_of(&id, at(120), at(180)).await.expect("read").is_empty());
}

pub async fn a_repeated_key_adds_nothing_and_a_reused_one_is_told_apart(store: &impl UsageStore) {
    let id = fresh_id();
    let first = report(&id, "api_calls", 5.0, 10, "order-1");
    assert_eq!(add(store, &first).await, Added::Added);
    assert_eq!(add(store, &first).await, Added::Repeated);
    let other_quantity = UsageReport { quantity: 6.0, ..first.clone() };
    assert_eq!(add(store, &other_quantity).await, Added::KeyReused);
    let other_dimension = UsageReport { dimension: "gb".into(), ..first.clone() };
    assert_eq!(add(store, &other_dimension).await, Added::KeyReused);
    let hours = store.usage_of(&id, at(0), at(60)).await.expect("read");
    assert_eq!(hours.iter().map(|h| (h.quantity, h.reports)).collect::<Vec<_>>(), [(5.0, 1)], "added once");
}

pub async fn a_closed_hour_takes_no_more_usage_and_sends_its_total(store: &impl UsageStore) {
    let id = fresh_id();
    add(store, &report(&id, "api_calls", 2.0, 5, "a")).await;
    add(store, &report(&id, "api_calls", 3.0, 6, "b")).await;
    let key = hour_key(&id, "api_calls", 0);
    let closed = store.close_hour(&key, at(75)).await.expect("closed").expect("the hour");
    assert_eq!(closed.state, HourState::Sending { sent_quantity: 5.0, attempts: 0, last_error: None });
    let late = add(store, &report(&id, "api_calls", 1.0, 50, "c")).await;
    assert_eq!(late, Added::HourClosed(closed.state.clone()), "nothing added to a closed hour");
    let again = store.close_hour(&key, at(80)).await.expect("closed").expect("the hour");
    assert_eq!((again.state, again.quantity), (closed.state, 5.0), "closing twice changes nothing");
    assert_eq!(store.close_hour(&hour_key(&id, "gb", 0), at(80)).await.expect("read"), None, "no such hour");
}

pub async fn only_unsettled_hours_of_the_hour_asked_are_listed(store: &impl UsageStore) {
    let (a, b) = (fresh_id(), fresh_id());
    add(store, &report(&a, "api_calls", 1.0, 0, "1")).await;
    add(store, &report(&a, "gb", 1.0, 0, "2")).await;
    add(store, &report(&b, "api_calls", 1.0, 10, "1")).await;
    add(store, &report(&a, "api_calls", 1.0, 70, "3")).await;
    let listed = |hours: Vec<crate::store::usage::UsageHour>| {
        let mut keys: Vec<HourKey> = hours.iter().map(|h| h.key()).collect();
        keys.sort();
        keys
    };
    let mut expected =
        vec![hour_key(&a, "api_calls", 0), hour_key(&a, "gb", 0), hour_key(&b, "api_calls", 0)];
    expected.sort();
    assert_eq!(listed(store.unsettled(at(0)).await.expect("listed")), expected);

    // Sending is still unsettled; accepted is not.
    let mut sending = store.close_hour(&hour_key(&a, "gb", 0), at(75)).await.expect("closed").expect("hour");
    assert_eq!(listed(store.unsettled(at(0)).await.expect("listed")), expected);
    sending.state = HourState::Accepted {
        sent_quantity: 1.0,
        usage_event_id: Some("u1".into()),
        message_time: Some(at(76)),
        duplicate: false,
    };
    store.record_send(&sending).await.expect("recorded");
    expected.retain(|k| k != &hour_key(&a, "gb", 0));
    assert_eq!(listed(store.unsettled(at(0)).await.expect("listed")), expected);
    assert_eq!(listed(store.unsettled(at(60)).await.expect("listed")), [hour_key(&a, "api_calls", 60)]);
}

pub async fn a_send_is_recorded_only_on_an_hour_still_sending(store: &impl UsageStore) {
    let id = fresh_id();
    add(store, &report(&id, "api_calls", 8.0, 0, "1")).await;
    let key = hour_key(&id, "api_calls", 0);
    let mut hour = store.close_hour(&key, at(75)).await.expect("closed").expect("hour");
    hour.state =
        HourState::Sending { sent_quantity: 8.0, attempts: 1, last_error: Some("503 from Microsoft".into()) };
    store.record_send(&hour).await.expect("a failed attempt recorded");
    let read = store.usage_of(&id, at(0), at(0)).await.expect("read");
    assert_eq!(read[0].state, hour.state);
    hour.state =
        HourState::Refused { sent_quantity: 8.0, status: "Expired".into(), message: "too old".into() };
    store.record_send(&hour).await.expect("settled");
    assert_eq!(store.usage_of(&id, at(0), at(0)).await.expect("read")[0].state, hour.state);
    let mut again = hour.clone();
    again.state =
        HourState::Accepted { sent_quantity: 8.0, usage_event_id: None, message_time: None, duplicate: true };
    match store.record_send(&again).await {
        Err(StoreError::Conflict { subscription_id }) => assert_eq!(subscription_id, id),
        other => panic!("a settled hour is not written again: {other:?}"),
    }
    assert_eq!(store.usage_of(&id, at(0), at(0)).await.expect("read")[0].state, hour.state);
    let open = crate::store::usage::UsageHour { hour: at(60), ..hour };
    assert!(matches!(store.record_send(&open).await, Err(StoreError::Conflict { .. })), "no such hour");
}

pub async fn concurrent_reports_to_one_hour_lose_nothing(store: &impl UsageStore) {
    let id = fresh_id();
    let reports: Vec<UsageReport> =
        (0..20).map(|i| report(&id, "api_calls", 0.5 + i as f64, 15, &format!("r{i}"))).collect();
    let added = futures::future::join_all(reports.iter().map(|r| add(store, r))).await;
    assert!(added.iter().all(|a| *a == Added::Added), "{added:?}");
    let hours = store.usage_of(&id, at(0), at(0)).await.expect("read");
    let expected: f64 = reports.iter().map(|r| r.quantity).sum();
    assert_eq!(hours.iter().map(|h| (h.quantity, h.reports)).collect::<Vec<_>>(), [(expected, 20)]);
}

/// A report whose hour was closed is added to a later hour; its key is remembered as of its own
/// hour, so that a repeat (the same report sent again, or a transaction that went through although
/// its answer was lost) adds nothing, wherever the first one went.
pub async fn late_usage_goes_to_a_later_hour_and_its_key_still_knows_it(store: &impl UsageStore) {
    let id = fresh_id();
    add(store, &report(&id, "api_calls", 2.0, 5, "a")).await;
    store.close_hour(&hour_key(&id, "api_calls", 0), at(75)).await.expect("closed").expect("the hour");
    // Sent again after the close: a repeat, not a closed hour.
    assert_eq!(add(store, &report(&id, "api_calls", 2.0, 5, "a")).await, Added::Repeated);

    let late = report(&id, "api_calls", 1.5, 50, "late");
    let next = crate::store::usage::hour_of(at(70));
    let added = store.add_usage_to(&late, next, &plan(), at(70)).await.expect("added");
    assert_eq!(added, Added::Added);
    assert_eq!(add(store, &late).await, Added::Repeated, "its key knows it, as of its own hour");
    let moved = store.add_usage_to(&late, next, &plan(), at(71)).await.expect("answered");
    assert_eq!(moved, Added::Repeated);
    let hours = store.usage_of(&id, at(0), at(119)).await.expect("read");
    let quantities: Vec<(Timestamp, f64, u64)> =
        hours.iter().map(|h| (h.hour, h.quantity, h.reports)).collect();
    assert_eq!(quantities, [(at(0), 2.0, 1), (next, 1.5, 1)]);
}
