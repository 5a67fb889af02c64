//! The intake's handler from `events/usage-intake/*.json` and built batches, on the in-memory store
//! and the Marketplace model: reports added once per key (a redelivery adds nothing twice); a
//! report refused for good is not retried; a message with a report that failed for now is named in
//! `batchItemFailures` so that SQS delivers it again; bad bodies are refused, not retried.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fulfillment::changes::{Event, record_event};
use fulfillment::domain::{OperationId, PlanId, Subscription, SubscriptionId, SubscriptionStatus, Timestamp};
use fulfillment::store::ChangeSource;
use fulfillment::store::usage::UsageStore;
use fulfillment::testing::{FakeMarketplace, ManualClock, MarketFault, MemoryStore, ScriptedStore};
use serde_json::{Value, json};
use usage_intake::{Intake, UsageIntake, batch_response};

/// The subscription the event files name.
const FILES_SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";

fn event(name: &str) -> Value {
    let path = format!("{}/../../events/usage-intake/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the event file")).expect("JSON")
}

/// The event files' reports are of 09:58 to 10:12 on 2 December 2026.
fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 30, 0).single().expect("time")
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

struct World {
    store: ScriptedStore<MemoryStore>,
    market: FakeMarketplace,
    intake: UsageIntake<ScriptedStore<MemoryStore>, FakeMarketplace, ManualClock>,
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::at(now());
        let market = FakeMarketplace::new(clock.clone(), &["team-monthly", "team-yearly"]);
        market.set_dimensions("team-monthly", &["api_calls", "gb_processed"]);
        market.set_dimensions("team-yearly", &["api_calls"]);
        let store = ScriptedStore::new(MemoryStore::new());
        let intake = UsageIntake::new(store.clone(), market.clone(), clock);
        Self { store, market, intake }
    }

    /// A Subscribed subscription on `plan`, in our records and Microsoft's.
    async fn subscribed(&self, id: &str, plan: &str) -> SubscriptionId {
        let id = SubscriptionId::parse(id).expect("id");
        let mut subscription = Subscription::new(id.clone());
        subscription.status = Some(SubscriptionStatus::Subscribed);
        subscription.plan_id = PlanId::parse(plan);
        self.market.insert_subscription(subscription.clone());
        let seen = Event::observed(
            subscription,
            now(),
            OperationId::parse("seed").expect("id"),
            ChangeSource::Landing,
        );
        record_event(&self.store, &seen, now()).await.expect("recorded");
        id
    }

    async fn handle(&self, event: Value) -> Intake {
        self.intake.handle(event, later()).await.expect("an SQS batch")
    }

    /// (quantity, reports) of `id`'s `dimension` in all hours.
    async fn total(&self, id: &SubscriptionId, dimension: &str) -> (f64, u64) {
        let hours = self.store.usage_of(id, now() - chrono::Duration::days(2), now()).await.expect("read");
        hours
            .iter()
            .filter(|h| h.dimension == dimension)
            .fold((0.0, 0), |(q, n), h| (q + h.quantity, n + h.reports))
    }
}

fn message(id: &str, body: &Value) -> Value {
    json!({ "messageId": id, "receiptHandle": format!("handle-{id}"), "body": body.to_string(), "eventSource": "aws:sqs" })
}

fn report(id: &SubscriptionId, dimension: &str, quantity: f64, key: &str) -> Value {
    json!({ "subscriptionId": id, "dimension": dimension, "quantity": quantity, "time": "2026-12-02T10:20:00Z", "key": key })
}

#[tokio::test]
async fn the_sample_batch_is_added_once_whatever_the_deliveries() {
    let world = World::new();
    let id = world.subscribed(FILES_SUBSCRIPTION, "team-monthly").await;
    let intake = world.handle(event("sqs-batch.json")).await;
    assert_eq!((intake.messages, intake.added, intake.repeated, intake.refused), (2, 3, 0, 0), "{intake:?}");
    assert_eq!(batch_response(&intake), json!({ "batchItemFailures": [] }));
    assert_eq!(world.total(&id, "api_calls").await, (150.0, 2));
    assert_eq!(world.total(&id, "gb_processed").await, (2.5, 1));

    // SQS delivers at least once: the same batch again adds nothing.
    let again = world.handle(event("sqs-batch.json")).await;
    assert_eq!((again.added, again.repeated, again.retry.len()), (0, 3, 0), "{again:?}");
    assert_eq!(world.total(&id, "api_calls").await, (150.0, 2));
}

#[tokio::test]
async fn refused_reports_are_dropped_and_failed_ones_redelivered() {
    let world = World::new();
    let monthly = world.subscribed(FILES_SUBSCRIPTION, "team-monthly").await;
    let yearly = world.subscribed("e7e70000-0000-4000-8000-000000000002", "team-yearly").await;
    // Microsoft fails the one read of team-yearly's dimensions (team-monthly's is read first).
    world.handle(json!({ "Records": [message("warm-up", &report(&monthly, "api_calls", 1.0, "w"))] })).await;
    world.market.fail_next("list_available_plans", MarketFault::Server, 1);
    let batch = json!({ "Records": [
        message("adds", &report(&monthly, "api_calls", 2.0, "a")),
        message("refused", &report(&monthly, "storage", 5.0, "r")),
        message("fails-for-now", &json!({ "usage": [
            report(&monthly, "gb_processed", 3.0, "m1"),
            report(&yearly, "api_calls", 4.0, "y1"),
            report(&monthly, "gb_processed", 6.0, "m2"),
        ] })),
    ] });
    let first = world.handle(batch.clone()).await;
    assert_eq!(
        batch_response(&first),
        json!({ "batchItemFailures": [{ "itemIdentifier": "fails-for-now" }] }),
        "the refused report is not retried: {first:?}"
    );
    assert_eq!((first.added, first.refused), (2, 1), "{first:?}");
    assert_eq!(world.total(&monthly, "gb_processed").await, (3.0, 1), "m1 taken before y1 failed");
    assert_eq!(world.total(&yearly, "api_calls").await, (0.0, 0));

    // SQS delivers the failed message again (Lambda's batch may hold the others again too).
    let second = world.handle(batch).await;
    assert_eq!(batch_response(&second), json!({ "batchItemFailures": [] }), "{second:?}");
    assert_eq!((second.added, second.repeated, second.refused), (2, 2, 1), "{second:?}");
    assert_eq!(world.total(&monthly, "gb_processed").await, (9.0, 2), "m1 once");
    assert_eq!(world.total(&yearly, "api_calls").await, (4.0, 1));
    assert_eq!(world.total(&monthly, "api_calls").await, (3.0, 2));
}

#[tokio::test]
async fn bad_bodies_are_refused_not_retried() {
    let world = World::new();
    let id = world.subscribed(FILES_SUBSCRIPTION, "team-monthly").await;
    let intake = world.handle(event("bad-body.json")).await;
    assert_eq!((intake.messages, intake.added, intake.refused), (4, 0, 4), "{intake:?}");
    assert_eq!(batch_response(&intake), json!({ "batchItemFailures": [] }));
    assert_eq!(world.total(&id, "api_calls").await, (0.0, 0));

    // A batch with one unreadable report: the others are taken.
    let mixed =
        json!({ "usage": [report(&id, "api_calls", 1.0, "ok"), json!({ "key": "no-fields" }), json!(7)] });
    let intake = world.handle(json!({ "Records": [message("mixed", &mixed)] })).await;
    assert_eq!((intake.added, intake.refused, intake.retry.len()), (1, 2, 0), "{intake:?}");
}

#[tokio::test]
async fn an_event_that_is_not_an_sqs_batch_is_an_error() {
    let world = World::new();
    assert!(world.intake.handle(json!({ "records": [] }), later()).await.is_err());
    assert!(world.intake.handle(json!("not even an object"), later()).await.is_err());
    assert!(
        world.intake.handle(json!({ "Records": [{ "body": "{}" }] }), later()).await.is_err(),
        "no messageId"
    );
}

#[tokio::test]
async fn out_of_time_every_message_not_taken_is_redelivered() {
    let world = World::new();
    let id = world.subscribed(FILES_SUBSCRIPTION, "team-monthly").await;
    let intake = world.intake.handle(event("sqs-batch.json"), Instant::now()).await.expect("a batch");
    let failures = batch_response(&intake)["batchItemFailures"].as_array().expect("a list").len();
    assert_eq!((intake.added, failures), (0, 2), "{intake:?}");
    assert_eq!(world.total(&id, "api_calls").await, (0.0, 0));
}

#[tokio::test]
async fn while_the_table_fails_every_message_is_redelivered_and_taken_once_back_up() {
    let world = World::new();
    let id = world.subscribed(FILES_SUBSCRIPTION, "team-monthly").await;
    world.store.set_down(true);
    let down = world.handle(event("sqs-batch.json")).await;
    assert_eq!(
        batch_response(&down),
        json!({ "batchItemFailures": [
            { "itemIdentifier": "3f1c8a3e-0000-4000-8000-000000000001" },
            { "itemIdentifier": "3f1c8a3e-0000-4000-8000-000000000002" },
        ] }),
        "{down:?}"
    );
    // A table that refuses (not for now: e.g. a missing permission) is no refusal of the report:
    // the message is delivered again, then lands in the dead-letter queue.
    world.store.set_down(false);
    world.store.set_refusing(true);
    let refusing = world.handle(event("sqs-batch.json")).await;
    assert_eq!((refusing.refused, refusing.retry.len()), (0, 2), "{refusing:?}");
    world.store.set_refusing(false);
    let up = world.handle(event("sqs-batch.json")).await;
    assert_eq!((up.added, up.retry.len()), (3, 0), "{up:?}");
    assert_eq!(world.total(&id, "api_calls").await, (150.0, 2));
}
