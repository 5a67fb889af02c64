//! The reconciliation's handler from `events/reconcile/scheduled.json`, on the in-memory store and
//! the Marketplace model: a run repairs and reports; a run that cannot list Microsoft's
//! subscriptions is an error for Lambda (its metric and alarms see it); the interval is read from
//! the configuration.

use chrono::{Duration, TimeZone, Utc};
use fulfillment::config::Environment;
use fulfillment::reconcile::Outcome;
use fulfillment::store::SubscriptionStore;
use fulfillment::testing::{FakeMarketplace, ManualClock, MarketFault, MemoryStore};
use reconcile::ReconcileJob;
use serde_json::Value;

fn scheduled() -> Value {
    let path = format!("{}/../../events/reconcile/scheduled.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the event file")).expect("JSON")
}

type Job = ReconcileJob<MemoryStore, FakeMarketplace, ManualClock>;

fn job(environment: &[(&str, &str)]) -> (Job, MemoryStore, FakeMarketplace, ManualClock) {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
    let (store, market) = (MemoryStore::new(), FakeMarketplace::new(clock.clone(), &["basic"]));
    let settings = Environment::from_pairs(environment.iter().copied()).reconcile().expect("settings");
    (ReconcileJob::new(store.clone(), market.clone(), clock.clone(), &settings), store, market, clock)
}

#[tokio::test]
async fn a_scheduled_run_records_what_microsoft_lists_and_is_named_by_the_event() {
    let (job, store, market, clock) = job(&[]);
    let (id, _) = market.purchase("basic", Some(3), "tenant");
    let report = job.handle(&scheduled(), clock.now_plus(15)).await.expect("complete");
    let pass = report.pass.expect("the pass");
    assert_eq!((report.outcome, pass.seen, pass.added, pass.errors), (Outcome::Finished, 1, 1, 0));
    let history = store.history(&id).await.expect("history");
    let event_id = scheduled()["id"].as_str().expect("an id").to_owned();
    assert!(history[0].operation_id.as_str().contains(&event_id), "{history:?}");
    assert_eq!(pass.pass_id, event_id);
}

#[tokio::test]
async fn a_run_that_cannot_list_microsofts_subscriptions_is_an_error() {
    let (job, _, market, clock) = job(&[]);
    market.purchase("basic", Some(3), "tenant");
    market.fail_next("list_subscriptions", MarketFault::Server, 1);
    let failure = job.handle(&scheduled(), clock.now_plus(15)).await.expect_err("incomplete");
    assert!(failure.to_string().contains("could not go on"), "{failure}");
    assert_eq!(failure.0.outcome, Outcome::Failed);
    assert!(!failure.0.pass.expect("the pass under way").complete);
}

#[tokio::test]
async fn the_interval_between_passes_is_configured() {
    let (job, _, market, clock) = job(&[("RECONCILE_INTERVAL_MINUTES", "15")]);
    market.purchase("basic", Some(3), "tenant");
    assert_eq!(job.handle(&scheduled(), clock.now_plus(15)).await.expect("run").outcome, Outcome::Finished);
    clock.advance(Duration::minutes(10));
    assert_eq!(job.handle(&scheduled(), clock.now_plus(15)).await.expect("run").outcome, Outcome::Idle);
    clock.advance(Duration::minutes(5));
    assert_eq!(job.handle(&scheduled(), clock.now_plus(15)).await.expect("run").outcome, Outcome::Finished);

    let refused = Environment::from_pairs([("RECONCILE_INTERVAL_MINUTES", "hourly")]).reconcile();
    assert!(refused.is_err(), "a bad interval stops the start: {refused:?}");
}

trait Deadline {
    fn now_plus(&self, minutes: i64) -> fulfillment::domain::Timestamp;
}

impl Deadline for ManualClock {
    fn now_plus(&self, minutes: i64) -> fulfillment::domain::Timestamp {
        use fulfillment::clock::Clock;
        self.now() + Duration::minutes(minutes)
    }
}

#[tokio::test]
async fn an_operator_starts_a_pass_now_whatever_the_interval() {
    let (job, _, market, clock) = job(&[]);
    market.purchase("basic", Some(3), "tenant");
    assert_eq!(job.handle(&scheduled(), clock.now_plus(5)).await.expect("run").outcome, Outcome::Finished);
    assert_eq!(job.handle(&scheduled(), clock.now_plus(5)).await.expect("run").outcome, Outcome::Idle);
    let now = serde_json::json!({ "id": "operator-1", "startPass": true });
    let report = job.handle(&now, clock.now_plus(5)).await.expect("run");
    assert_eq!(report.outcome, Outcome::Finished, "{report:?}");
    assert_eq!(report.pass.map(|p| (p.pass_id, p.unchanged)), Some(("operator-1".to_owned(), 1)));
}
