//! The relay's handler from `events/events-relay/*.json`, on the in-memory bus: each history
//! entry that changed the subscription is one event, valid by the published schema; other items
//! are skipped; a batch that is not one is an error (Lambda retries it, then the dead-letter queue).

use std::time::{Duration, Instant};

use events_relay::{EventsRelay, batch_response};
use fulfillment::events::EventType;
use fulfillment::testing::{MemoryBus, event_schema};
use serde_json::{Value, json};

fn event(name: &str) -> Value {
    let path = format!("{}/../../events/events-relay/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the event file")).expect("JSON")
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn a_purchase_and_its_activation_are_two_events_in_order() {
    let bus = MemoryBus::new();
    let relay = EventsRelay::new(bus.clone());
    let relayed = relay.handle(event("purchase-and-activation.json"), later()).await.expect("a stream batch");
    assert_eq!((relayed.published, relayed.skipped), (2, 1), "the operation item is no event");
    assert_eq!(batch_response(&relayed), json!({ "batchItemFailures": [] }));
    let published = bus.published();
    let types: Vec<EventType> = published.iter().map(|e| e.event_type).collect();
    assert_eq!(types, [EventType::SubscriptionPurchased, EventType::SubscriptionActivated]);
    for event in &published {
        assert_eq!(event.subscription_id.as_str(), "e7e70000-0000-4000-8000-0000000e7e70");
        assert_eq!(event.offer_id.as_deref(), Some("contoso-saas"));
        event_schema(&serde_json::to_value(event).expect("json"));
    }
}

#[tokio::test]
async fn a_batch_that_is_not_a_stream_batch_is_an_error() {
    let relay = EventsRelay::new(MemoryBus::new());
    assert!(relay.handle(event("bad-not-a-stream.json"), later()).await.is_err());
    assert!(relay.handle(json!("not even an object"), later()).await.is_err());
    assert!(relay.handle(json!({ "records": [] }), later()).await.is_err(), "no Records");
}

#[tokio::test]
async fn a_refused_event_is_where_lambda_retries_from() {
    let bus = MemoryBus::new();
    bus.refuse_next(u32::MAX);
    let relay =
        EventsRelay { relay: fulfillment::events::relay::Relay::new(bus).with_backoff(Duration::ZERO) };
    let relayed = relay.handle(event("purchase-and-activation.json"), later()).await.expect("a stream batch");
    // The first record is the operation item (no event); the second the purchase's history entry.
    assert_eq!(
        batch_response(&relayed),
        json!({ "batchItemFailures": [{ "itemIdentifier": "000000000000000000002" }] })
    );
}
