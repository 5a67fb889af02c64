//! The emission's handler from `events/metering/scheduled.json`, on the in-memory store and a
//! scripted Microsoft: a run sends each closed hour and returns its report, named by the event;
//! Microsoft's refusals, a 403 and a failed batch are in the report, not errors; a run in which the
//! table failed is an error for Lambda (its Errors metric and MeteringErrorsAlarm see it).

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fulfillment::domain::{PlanId, SubscriptionId, Timestamp, UsageEventStatus};
use fulfillment::store::usage::{Added, HourKey, HourState, UsageReport, UsageStore, hour_of};
use fulfillment::testing::{ManualClock, MemoryStore, ScriptedStore};
use metering::MeteringJob;
use metering::testing::{BatchFault, ScriptedMicrosoft};
use serde_json::{Value, json};

fn scheduled() -> Value {
    let path = format!("{}/../../events/metering/scheduled.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the event file")).expect("JSON")
}

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 30, 0).single().expect("time")
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(300)
}

fn subscription(n: u32) -> SubscriptionId {
    SubscriptionId::parse(&format!("e7e70000-0000-4000-8000-{n:012x}")).expect("id")
}

/// Usage of `id` in the hour before `now()` (closed at 10:00, sent from 10:10).
async fn used(store: &impl UsageStore, id: &SubscriptionId, quantity: f64, key: &str) {
    let report = UsageReport {
        subscription_id: id.clone(),
        dimension: "api_calls".into(),
        quantity,
        at: hour_of(now()) - chrono::Duration::minutes(30),
        key: key.into(),
    };
    let plan = PlanId::parse("team-monthly").expect("plan");
    assert_eq!(store.add_usage(&report, &plan, now()).await.expect("added"), Added::Added);
}

async fn state(store: &MemoryStore, id: &SubscriptionId) -> HourState {
    let key = HourKey {
        subscription_id: id.clone(),
        dimension: "api_calls".into(),
        hour: hour_of(now()) - chrono::Duration::hours(1),
    };
    let hours = store.usage_of(id, key.hour, key.hour).await.expect("read");
    hours.into_iter().next().expect("the hour").state
}

#[tokio::test]
async fn a_scheduled_run_sends_each_closed_hour_and_is_named_by_the_event() {
    let (store, microsoft) = (MemoryStore::new(), ScriptedMicrosoft::new());
    let job = MeteringJob::new(store.clone(), microsoft.clone(), ManualClock::at(now()));
    used(&store, &subscription(1), 2.5, "a").await;
    used(&store, &subscription(1), 1.5, "b").await;
    used(&store, &subscription(2), 10.0, "c").await;

    let report = job.handle(&scheduled(), later()).await.expect("no store error");
    assert_eq!((report.hours, report.closed, report.calls, report.accepted), (2, 2, 1, 2), "{report:?}");
    let event_id = scheduled()["id"].as_str().expect("an id").to_owned();
    assert_eq!(microsoft.correlation_ids(), [event_id], "Microsoft sees the run's id");
    let sent: Vec<f64> = microsoft.sent().iter().map(|e| e.quantity).collect();
    assert_eq!(sent, [4.0, 10.0], "each hour once, at its total");
    assert!(matches!(state(&store, &subscription(1)).await, HourState::Accepted { duplicate: false, .. }));

    // What Lambda returns: the report as JSON.
    let returned = serde_json::to_value(&report).expect("JSON");
    assert_eq!(returned["accepted"], json!(2));
    assert_eq!(returned["storeErrors"], json!(0));

    // The next tick finds nothing to send; a tick without an id gets one of its own.
    let again = job.handle(&json!({}), later()).await.expect("no store error");
    assert_eq!((again.hours, again.calls), (0, 0), "{again:?}");
}

#[tokio::test]
async fn microsofts_refusals_and_failures_are_reported_not_errors() {
    let (store, microsoft) = (MemoryStore::new(), ScriptedMicrosoft::new());
    let job = MeteringJob::new(store.clone(), microsoft.clone(), ManualClock::at(now()));
    for n in 1..=3 {
        used(&store, &subscription(n), 1.0, "k").await;
    }
    microsoft.answer(&subscription(2), UsageEventStatus::ResourceNotActive);
    microsoft.answer(&subscription(3), UsageEventStatus::ResourceNotAuthorized);
    let report = job.handle(&scheduled(), later()).await.expect("refusals are not errors");
    assert_eq!(report.accepted, 1);
    assert_eq!(report.refused.get("ResourceNotActive"), Some(&1), "{report:?}");
    assert_eq!(report.not_authorized, 1, "{report:?}");
    assert!(matches!(state(&store, &subscription(2)).await, HourState::Refused { .. }));
    assert!(matches!(state(&store, &subscription(3)).await, HourState::Sending { attempts: 1, .. }));

    // A 403 for the whole batch, then Microsoft down: left for the next tick, not an error.
    microsoft.fail_next(BatchFault::Forbidden);
    let forbidden = job.handle(&scheduled(), later()).await.expect("a 403 is not an error");
    assert_eq!((forbidden.not_authorized, forbidden.store_errors), (1, 0), "{forbidden:?}");
    microsoft.fail_next(BatchFault::Unavailable);
    let down = job.handle(&scheduled(), later()).await.expect("a failed batch is not an error");
    assert_eq!((down.retried, down.store_errors), (1, 0), "{down:?}");
    assert!(matches!(state(&store, &subscription(3)).await, HourState::Sending { attempts: 3, .. }));
}

#[tokio::test]
async fn a_run_in_which_the_table_failed_is_an_error_with_its_report() {
    let store = ScriptedStore::new(MemoryStore::new());
    let microsoft = ScriptedMicrosoft::new();
    let job = MeteringJob::new(store.clone(), microsoft.clone(), ManualClock::at(now()));
    used(&store, &subscription(1), 3.0, "k").await;
    store.set_down(true);
    let failed = job.handle(&scheduled(), later()).await.expect_err("the table failed");
    assert!(failed.0.store_errors > 0, "{:?}", failed.0);
    assert_eq!(failed.0.calls, 0, "nothing could be read, nothing sent");
    assert!(failed.to_string().contains("could not read or write the table"), "{failed}");

    // Back up: the next tick sends the hour.
    store.set_down(false);
    let report = job.handle(&scheduled(), later()).await.expect("no store error");
    assert_eq!((report.accepted, report.store_errors), (1, 0), "{report:?}");
    assert!(matches!(state(store.inner(), &subscription(1)).await, HourState::Accepted { .. }));
}
