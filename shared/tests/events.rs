//! Lifecycle events: one per applied change, typed by what changed, valid by the published
//! schema, with stable ids; the relay's batches, retries and refusals (docs/events.md).

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fulfillment::domain::{OperationAction, SubscriptionId, SubscriptionStatus};
use fulfillment::events::relay::Relay;
use fulfillment::events::stream::StreamBatch;
use fulfillment::events::{EventType, SubscriptionEvent};
use fulfillment::marketplace::Call;
use fulfillment::onboarding::Onboarding;
use fulfillment::reconcile::Reconciler;
use fulfillment::store::{ChangeSource, SubscriptionStore};
use fulfillment::testing::{FakeMarketplace, ManualClock, MemoryBus, MemoryStore, event_schema};
use fulfillment::webhook::{ChangePolicy, Webhook};
use serde_json::{Value, json};

struct World {
    clock: ManualClock,
    market: FakeMarketplace,
    store: MemoryStore,
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
        let market = FakeMarketplace::new(clock.clone(), &["basic", "premium"]);
        Self { store: MemoryStore::new(), market, clock }
    }

    fn tick(&self) {
        self.clock.advance(chrono::Duration::seconds(1));
    }

    async fn land(&self, seats: u32, activate: bool) -> SubscriptionId {
        let (id, token) = self.market.purchase("basic", Some(seats), "7a0e3c4e-aaaa-4bbb-8ccc-0000000000aa");
        let onboarding =
            Onboarding::new(self.store.clone(), self.market.clone(), self.clock.clone(), activate);
        onboarding.land(&token, &Call::new()).await.expect("landed");
        self.tick();
        id
    }

    /// The buyer comes back through "Manage account" (a fresh token).
    async fn land_again(&self, id: &SubscriptionId) {
        let token = format!("again+{id}");
        self.market.insert_token(&token, id);
        let onboarding = Onboarding::new(self.store.clone(), self.market.clone(), self.clock.clone(), true);
        onboarding.land(&token, &Call::new()).await.expect("landed");
        self.tick();
    }

    async fn deliver(&self, payload: Option<fulfillment::domain::WebhookPayload>) {
        self.tick();
        let webhook = Webhook::new(
            self.store.clone(),
            self.market.clone(),
            self.clock.clone(),
            ChangePolicy::default(),
        );
        let payload = payload.expect("Microsoft allows the change");
        webhook.handle(&payload, Instant::now() + Duration::from_secs(8)).await.expect("handled");
    }

    /// The store's stream so far, relayed onto a fresh bus.
    async fn relayed(&self) -> Vec<SubscriptionEvent> {
        let bus = MemoryBus::new();
        let batch: StreamBatch = serde_json::from_value(self.store.stream_batch()).expect("a stream batch");
        let relayed = Relay::new(bus.clone()).handle(&batch, later()).await;
        assert_eq!(relayed.retry_from, None, "{relayed:?}");
        let events = bus.published();
        assert_eq!(relayed.published, events.len());
        for event in &events {
            event_schema(&serde_json::to_value(event).expect("json"));
        }
        events
    }
}

/// A deadline far enough not to matter.
fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn types(events: &[SubscriptionEvent]) -> Vec<EventType> {
    events.iter().map(|e| e.event_type).collect()
}

#[tokio::test]
async fn every_applied_change_of_a_whole_lifecycle_is_one_event_of_its_type_in_order() {
    let world = World::new();
    let id = world.land(5, true).await;
    world.deliver(world.market.customer_change_plan(&id, "premium")).await;
    world.deliver(world.market.customer_change_quantity(&id, 8)).await;
    world.deliver(world.market.lifecycle(&id, OperationAction::Suspend)).await;
    world.deliver(world.market.lifecycle(&id, OperationAction::Reinstate)).await;
    world.deliver(world.market.lifecycle(&id, OperationAction::Renew)).await;
    world.deliver(world.market.lifecycle(&id, OperationAction::Unsubscribe)).await;

    let events = world.relayed().await;
    use EventType as T;
    assert_eq!(
        types(&events),
        [
            T::SubscriptionPurchased,
            T::SubscriptionActivated,
            T::PlanChanged,
            T::SeatsChanged,
            T::SubscriptionSuspended,
            T::SubscriptionReinstated,
            T::SubscriptionRenewed,
            T::SubscriptionUnsubscribed
        ]
    );
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>(), "one version per event, in order");
    let plan_change = &events[2];
    assert_eq!(plan_change.plan_before.as_ref().map(|p| p.as_str()), Some("basic"));
    assert_eq!(plan_change.plan_id.as_ref().map(|p| p.as_str()), Some("premium"));
    assert_eq!((events[3].seats_before, events[3].seats), (Some(5), Some(8)));
    assert_eq!(events[4].status_before, Some(SubscriptionStatus::Subscribed));
    assert_eq!(events[4].status_after, Some(SubscriptionStatus::Suspended));
    assert!(events[6].term_end > events[5].term_end, "a renewal moves the term: {events:#?}");
    let first = &events[0];
    assert_eq!(first.status_before, None);
    assert_eq!(first.offer_id.as_deref(), Some("offer"));
    assert_eq!(first.beneficiary_tenant_id.as_deref(), Some("7a0e3c4e-aaaa-4bbb-8ccc-0000000000aa"));
    assert_eq!(first.purchaser_tenant_id.as_deref(), Some("7a0e3c4e-aaaa-4bbb-8ccc-0000000000aa"));
    assert_eq!(first.source, ChangeSource::Landing);
    assert_eq!(events[2].source, ChangeSource::Webhook);
    // History entries that changed nothing (a duplicate delivery, a confirmation) are no events.
    let history = world.store.history(&id).await.expect("history");
    assert!(history.len() >= events.len());
}

#[tokio::test]
async fn event_ids_are_stable_across_deliveries_and_unique_across_changes() {
    let world = World::new();
    world.land(3, true).await;
    world.land(4, false).await;
    let once = world.relayed().await;
    let again = world.relayed().await;
    assert_eq!(once, again, "the same stream gives the same events, ids included");
    let mut ids: Vec<&str> = once.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), once.len(), "{once:#?}");
}

#[tokio::test]
async fn the_reconciliation_types_what_it_repairs_and_calls_other_drift_drift() {
    let world = World::new();
    let suspended = world.land(3, true).await;
    let renamed = world.land(3, true).await;
    let new_term = world.land(3, true).await;
    let unseen = world.market.purchase("premium", Some(2), "7a0e3c4e-aaaa-4bbb-8ccc-0000000000bb").0;
    // Changes whose webhooks were lost.
    world.market.edit(&suspended, |s| s.status = Some(SubscriptionStatus::Suspended));
    world.market.edit(&renamed, |s| s.name = Some("Renamed by the customer".into()));
    let now = world.clock.advance(chrono::Duration::days(3));
    world.market.edit(&new_term, |s| {
        let term = s.term.as_mut().expect("a term");
        (term.start_date, term.end_date) = (Some(now), Some(now + chrono::Duration::days(365)));
    });
    world.tick();
    Reconciler::new(world.store.clone(), world.market.clone(), world.clock.clone()).pass("run-1").await;

    let events = world.relayed().await;
    let by_reconcile: Vec<(&SubscriptionId, EventType)> = events
        .iter()
        .filter(|e| e.source == ChangeSource::Reconcile)
        .map(|e| (&e.subscription_id, e.event_type))
        .collect();
    assert!(by_reconcile.contains(&(&suspended, EventType::SubscriptionSuspended)), "{by_reconcile:?}");
    assert!(by_reconcile.contains(&(&new_term, EventType::DriftRepaired)), "not a renewal: {by_reconcile:?}");
    assert!(by_reconcile.contains(&(&unseen, EventType::SubscriptionPurchased)), "{by_reconcile:?}");
    assert_eq!(by_reconcile.len(), 3, "a new name alone is nothing for the product: {by_reconcile:?}");
}

#[tokio::test]
async fn a_customer_change_read_again_later_is_no_second_event() {
    let world = World::new();
    let id = world.land(3, true).await;
    world.deliver(world.market.customer_change_plan(&id, "premium")).await;
    world.deliver(world.market.customer_change_quantity(&id, 5)).await;
    world.tick();
    // Microsoft's whole view, with its new lastModified, read by the reconciliation and a visit.
    Reconciler::new(world.store.clone(), world.market.clone(), world.clock.clone()).pass("run-1").await;
    world.land_again(&id).await;
    let events = world.relayed().await;
    use EventType as T;
    let history = world.store.history(&id).await.expect("history");
    assert_eq!(
        types(&events),
        [T::SubscriptionPurchased, T::SubscriptionActivated, T::PlanChanged, T::SeatsChanged],
        "{history:#?}"
    );
}

/// Three events of one subscription, as stream records with the numbers 1, 2, 3.
async fn three_changes() -> (World, Value) {
    let world = World::new();
    let id = world.land(3, true).await;
    world.deliver(world.market.customer_change_quantity(&id, 4)).await;
    let batch = world.store.stream_batch();
    (world, batch)
}

fn sequence_numbers(batch: &Value) -> Vec<String> {
    batch["Records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["dynamodb"]["SequenceNumber"].as_str().expect("number").to_owned())
        .collect()
}

#[tokio::test]
async fn a_refused_event_hands_the_batch_back_from_it_and_nothing_after_it_goes_first() {
    let (_world, batch) = three_changes().await;
    let numbers = sequence_numbers(&batch);
    let bus = MemoryBus::new();
    let relay = Relay::new(bus.clone()).with_backoff(Duration::ZERO);
    let parsed: StreamBatch = serde_json::from_value(batch.clone()).expect("batch");
    let first_only = StreamBatch { records: parsed.records[..1].to_vec() };
    assert_eq!(relay.handle(&first_only, later()).await.published, 1);
    // Refused on every try: the second record is where Lambda resumes.
    bus.refuse_next(3);
    let relayed = relay.handle(&StreamBatch { records: parsed.records[1..].to_vec() }, later()).await;
    assert_eq!(relayed.published, 0);
    assert_eq!(relayed.retry_from.as_deref(), Some(numbers[1].as_str()));
    assert_eq!(bus.published().len(), 1, "nothing after the refused event was published ahead of it");

    // Lambda retries from it: everything is published once more from there, in order.
    let retried = relay.handle(&StreamBatch { records: parsed.records[1..].to_vec() }, later()).await;
    assert_eq!(retried.retry_from, None);
    assert_eq!(
        types(&bus.published()),
        [EventType::SubscriptionPurchased, EventType::SubscriptionActivated, EventType::SeatsChanged]
    );
}

#[tokio::test]
async fn a_refusal_that_passes_is_retried_within_the_batch_from_the_refused_event() {
    let (_world, batch) = three_changes().await;
    let bus = MemoryBus::new();
    let relay = Relay::new(bus.clone()).with_backoff(Duration::ZERO);
    bus.refuse_next(1);
    bus.fail_next_calls(1);
    let relayed = relay.handle(&serde_json::from_value(batch).expect("batch"), later()).await;
    assert_eq!(relayed.retry_from, None, "{relayed:?}");
    assert_eq!(relayed.published, 3);
    // One subscription's events go one per request: an outage, a refusal, then one each.
    assert_eq!(bus.calls(), 5);
    assert_eq!(
        types(&bus.published()),
        [EventType::SubscriptionPurchased, EventType::SubscriptionActivated, EventType::SeatsChanged]
    );
}

#[tokio::test]
async fn a_record_that_cannot_be_read_is_never_skipped() {
    let (_world, mut batch) = three_changes().await;
    let numbers = sequence_numbers(&batch);
    batch["Records"][1]["dynamodb"]["NewImage"]["version"] = json!({ "S": "not a number" });
    let bus = MemoryBus::new();
    let relayed =
        Relay::new(bus.clone()).handle(&serde_json::from_value(batch).expect("batch"), later()).await;
    assert_eq!(relayed.published, 1, "the record before it");
    assert_eq!(relayed.retry_from.as_deref(), Some(numbers[1].as_str()));
}

#[tokio::test]
async fn other_items_and_changes_are_skipped() {
    let (_world, batch) = three_changes().await;
    let mut records = batch["Records"].as_array().expect("records").clone();
    let mut state = records[0].clone();
    state["dynamodb"]["NewImage"]["sk"] = json!({ "S": "STATE" });
    state["dynamodb"]["SequenceNumber"] = json!("900");
    let mut modified = records[0].clone();
    modified["eventName"] = json!("MODIFY");
    let mut removed = records[0].clone();
    removed["eventName"] = json!("REMOVE");
    removed["dynamodb"].as_object_mut().expect("change").remove("NewImage");
    records.extend([state, modified, removed]);
    let bus = MemoryBus::new();
    let relayed = Relay::new(bus.clone())
        .handle(&serde_json::from_value(json!({ "Records": records })).expect("batch"), later())
        .await;
    assert_eq!((relayed.published, relayed.skipped, relayed.retry_from), (3, 3, None));
}

#[test]
fn the_schema_refuses_what_the_documentation_rules_out() {
    let valid = json!({
        "schemaVersion": "1", "eventId": "1b4e28ba-2fa1-5ad2-9e3c-2c1f0b9a7e31", "eventType": "SubscriptionSuspended",
        "subscriptionId": "s", "offerId": "o", "planId": "p", "seats": 3, "beneficiaryTenantId": "t",
        "purchaserTenantId": "t", "statusBefore": "Subscribed", "statusAfter": "Suspended", "planBefore": "p",
        "seatsBefore": 3, "termStart": "2026-12-01T00:00:00Z", "termEnd": null, "operationId": "op",
        "source": "webhook", "version": 4, "committedAt": "2026-12-01T09:00:01.5Z"
    });
    event_schema(&valid);
    for (field, value) in [
        ("statusAfter", json!("Subscribed")),
        ("eventType", json!("Resumed")),
        ("source", json!("email")),
        ("version", json!(0)),
        ("committedAt", json!("yesterday")),
        ("schemaVersion", json!("2")),
        ("anUndocumentedField", json!(1)),
    ] {
        let mut invalid = valid.clone();
        invalid[field] = value;
        let refused = std::panic::catch_unwind(|| event_schema(&invalid));
        assert!(refused.is_err(), "{field} {invalid}");
    }
}

#[tokio::test]
async fn nothing_is_attempted_without_time_left_before_the_deadline() {
    let (_world, batch) = three_changes().await;
    let bus = MemoryBus::new();
    let relay = Relay::new(bus.clone()).with_backoff(Duration::ZERO);
    let batch: StreamBatch = serde_json::from_value(batch).expect("batch");
    let first = batch.records[0].dynamodb.sequence_number.clone();
    let relayed = relay.handle(&batch, Instant::now() + Duration::from_secs(1)).await;
    assert_eq!((relayed.published, relayed.retry_from), (0, Some(first)), "handed back whole");
    assert_eq!(bus.calls(), 0);
}

#[tokio::test]
async fn only_refused_events_are_sent_again_within_the_batch() {
    let world = World::new();
    for seats in 1..=3 {
        world.land(seats, false).await;
    }
    let bus = MemoryBus::new();
    bus.refuse_next(1);
    let batch: StreamBatch = serde_json::from_value(world.store.stream_batch()).expect("batch");
    let relayed = Relay::new(bus.clone()).with_backoff(Duration::ZERO).handle(&batch, later()).await;
    assert_eq!((relayed.published, relayed.retry_from), (3, None));
    assert_eq!(bus.calls(), 2, "three subscriptions in one request, then the refused one alone");
    assert_eq!(bus.published().len(), 3, "no duplicates");
}

/// docs/events.md shows one sample of every type, each valid by the schema.
#[test]
fn the_documented_samples_are_valid_and_cover_every_type() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
    let text = std::fs::read_to_string(path).expect("docs/events.md");
    let mut shown = Vec::new();
    for block in text.split("```json\n").skip(1) {
        let json = block.split("\n```").next().expect("a closed block");
        let sample: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let detail = sample.get("detail").unwrap_or(&sample);
        event_schema(detail);
        shown.push(detail["eventType"].as_str().expect("a type").to_owned());
    }
    for event_type in EventType::ALL {
        assert!(shown.contains(&event_type.to_string()), "no sample of {event_type} in {path}");
    }
}
