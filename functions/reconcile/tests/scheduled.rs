//! The reconciliation's handler from `events/reconcile/scheduled.json`, on the in-memory store and
//! the Marketplace model: a complete run repairs and reports; a run that cannot list Microsoft's
//! subscriptions is an error for Lambda (its metric and alarms see it).

use chrono::{TimeZone, Utc};
use fulfillment::store::SubscriptionStore;
use fulfillment::testing::{FakeMarketplace, ManualClock, MarketFault, MemoryStore};
use reconcile::ReconcileJob;
use serde_json::Value;

fn scheduled() -> Value {
    let path = format!("{}/../../events/reconcile/scheduled.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the event file")).expect("JSON")
}

fn job() -> (ReconcileJob<MemoryStore, FakeMarketplace, ManualClock>, MemoryStore, FakeMarketplace) {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
    let (store, market) = (MemoryStore::new(), FakeMarketplace::new(clock.clone(), &["basic"]));
    (ReconcileJob::new(store.clone(), market.clone(), clock), store, market)
}

#[tokio::test]
async fn a_scheduled_run_records_what_microsoft_lists_and_is_named_by_the_event() {
    let (job, store, market) = job();
    let (id, _) = market.purchase("basic", Some(3), "tenant");
    let summary = job.handle(&scheduled()).await.expect("complete");
    assert_eq!((summary.seen, summary.added, summary.errors), (1, 1, 0));
    let history = store.history(&id).await.expect("history");
    let event_id = scheduled()["id"].as_str().expect("an id").to_owned();
    assert!(history[0].operation_id.as_str().contains(&event_id), "{history:?}");
}

#[tokio::test]
async fn a_run_that_cannot_list_microsofts_subscriptions_is_an_error() {
    let (job, _, market) = job();
    market.purchase("basic", Some(3), "tenant");
    market.fail_next("list_subscriptions", MarketFault::Server, 1);
    let failure = job.handle(&scheduled()).await.expect_err("incomplete");
    assert!(failure.to_string().contains("incomplete"), "{failure}");
    assert!(!failure.0.complete);
}
