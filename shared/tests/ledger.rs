//! The ledger converges to Microsoft's truth: each way it went wrong (issue 11), on the fakes,
//! with a second writer let in deterministically where a race matters.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fulfillment::admin::{ChangeRequest, Entitlement, Publisher};
use fulfillment::changes::{Event, record_event};
use fulfillment::domain::{
    OperationAction, OperationId, PlanId, SubscriptionId, SubscriptionStatus, WebhookPayload,
};
use fulfillment::marketplace::Call;
use fulfillment::onboarding::Onboarding;
use fulfillment::reconcile::Reconciler;
use fulfillment::store::{ChangeSource, SubscriptionRecord, SubscriptionStore};
use fulfillment::testing::{
    FakeMarketplace, ManualClock, MarketFault, MemoryStore, ScriptedStore, StoreStep,
};
use fulfillment::webhook::{ChangePolicy, Handled, Webhook, WebhookError};

type Store = ScriptedStore<MemoryStore>;

struct World {
    clock: ManualClock,
    market: FakeMarketplace,
    store: Store,
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
        let market = FakeMarketplace::new(clock.clone(), &["basic", "premium", "gold"]);
        Self { store: ScriptedStore::new(MemoryStore::new()), market, clock }
    }

    fn webhook(&self, policy: ChangePolicy) -> Webhook<Store, FakeMarketplace, ManualClock> {
        Webhook::new(self.store.clone(), self.market.clone(), self.clock.clone(), policy)
    }

    fn tick(&self) {
        self.clock.advance(chrono::Duration::seconds(1));
    }

    /// A bought and activated subscription, recorded by the landing page.
    async fn active(&self, seats: u32) -> SubscriptionId {
        let (id, token) = self.market.purchase("basic", Some(seats), "7a0e3c4e-aaaa-4bbb-8ccc-0000000000aa");
        let onboarding = Onboarding::new(self.store.clone(), self.market.clone(), self.clock.clone(), true);
        onboarding.land(&token, &Call::new()).await.expect("landed and activated");
        self.tick();
        id
    }

    async fn record(&self, id: &SubscriptionId) -> SubscriptionRecord {
        self.store.get(id).await.expect("read").expect("recorded")
    }

    async fn deliver(&self, policy: ChangePolicy, payload: &WebhookPayload) -> Result<Handled, WebhookError> {
        self.tick();
        self.webhook(policy).handle(payload, Instant::now() + Duration::from_secs(8)).await
    }

    fn microsoft(&self, id: &SubscriptionId) -> fulfillment::domain::Subscription {
        self.market.subscription(id).expect("at Microsoft")
    }

    async fn reconcile(&self, run: &str) -> fulfillment::reconcile::Summary {
        self.tick();
        Reconciler::new(self.store.clone(), self.market.clone(), self.clock.clone()).pass(run).await
    }
}

fn seats(max: u32) -> ChangePolicy {
    ChangePolicy { max_seats: Some(max), ..ChangePolicy::default() }
}

// 1. Nothing that only the payload says becomes state ---------------------------------------------

#[tokio::test]
async fn a_delivery_microsoft_confirms_neither_by_operation_nor_by_subscription_changes_no_record() {
    let world = World::new();
    let forged: WebhookPayload = serde_json::from_value(serde_json::json!({
        "id": "11111111-2222-4333-8444-555555555555",
        "subscriptionId": "99999999-0000-4000-8000-000000000099",
        "action": "Reinstate", "status": "Succeeded",
        "subscription": { "id": "99999999-0000-4000-8000-000000000099", "saasSubscriptionStatus": "Subscribed",
                          "planId": "gold", "beneficiary": { "tenantId": "attacker" } }
    }))
    .expect("payload");
    let handled = world.deliver(ChangePolicy::default(), &forged).await.expect("answered");
    assert!(matches!(handled, Handled::KeptAside(_)), "{handled:?}");
    let id = forged.operation.subscription_id.clone();
    assert_eq!(world.store.get(&id).await.expect("read"), None, "no record from a payload");
    let kept = world.store.rejected_on(world.clock_day()).await.expect("kept aside");
    assert_eq!(kept.len(), 1);
}

#[tokio::test]
async fn a_payload_cannot_cancel_or_revive_a_real_subscription() {
    let world = World::new();
    let id = world.active(5).await;
    // Microsoft knows no such operation; its view says Subscribed; the payload says Unsubscribed.
    let forged: WebhookPayload = serde_json::from_value(serde_json::json!({
        "id": "11111111-2222-4333-8444-555555555555", "subscriptionId": id.as_str(),
        "action": "Unsubscribe", "status": "Succeeded",
        "subscription": { "id": id.as_str(), "saasSubscriptionStatus": "Unsubscribed" }
    }))
    .expect("payload");
    world.deliver(ChangePolicy::default(), &forged).await.expect("answered");
    let record = world.record(&id).await;
    assert_eq!(record.status(), SubscriptionStatus::Subscribed);
    assert!(Entitlement::from(&record).access_allowed);
}

#[tokio::test]
async fn a_payload_naming_two_subscriptions_is_refused_before_any_call() {
    let world = World::new();
    let id = world.active(5).await;
    let calls = world.market.calls().len();
    let forged: WebhookPayload = serde_json::from_value(serde_json::json!({
        "id": "11111111-2222-4333-8444-555555555555", "subscriptionId": id.as_str(), "action": "Suspend",
        "subscription": { "id": "99999999-0000-4000-8000-000000000099", "saasSubscriptionStatus": "Subscribed" }
    }))
    .expect("payload");
    let handled = world.deliver(ChangePolicy::default(), &forged).await.expect("answered");
    assert!(
        matches!(handled, Handled::Mismatched(ref reason) if reason.contains("is not subscriptionId")),
        "{handled:?}"
    );
    assert_eq!(world.market.calls().len(), calls, "Microsoft was not asked");
}

impl World {
    fn clock_day(&self) -> chrono::NaiveDate {
        use fulfillment::clock::Clock;
        self.clock.now().date_naive()
    }
}

// 2. No lost update after a write conflict -------------------------------------------------------

#[tokio::test]
async fn a_seat_change_that_loses_a_race_to_a_renewal_keeps_the_renewal() {
    let world = World::new();
    let id = world.active(5).await;
    let change = world.market.customer_change_quantity(&id, 8).expect("customer change");
    let renewal = world.market.lifecycle(&id, OperationAction::Renew).expect("renewed");
    let renewed_view = world.microsoft(&id);
    // Between the webhook's read and its write, the renewal is written.
    let (clock, renewal_id) = (world.clock.clone(), renewal.operation.id.clone());
    world.store.at_apply(
        1,
        StoreStep::interleave(move |store: MemoryStore| async move {
            let now = clock.advance(chrono::Duration::milliseconds(1));
            let event = Event::observed(renewed_view, now, renewal_id, ChangeSource::Webhook);
            record_event(&store, &event, now).await.expect("renewal written");
        }),
    );
    assert_eq!(world.deliver(ChangePolicy::default(), &change).await.expect("handled"), Handled::Recorded);
    let record = world.record(&id).await;
    assert_eq!(record.subscription.quantity, Some(8));
    assert_eq!(record.subscription.term, world.microsoft(&id).term, "the renewal's term survived");
    // All but `lastModified`, which only Microsoft's next view brings.
    let microsoft = fulfillment::domain::Subscription {
        last_modified: record.subscription.last_modified,
        ..world.microsoft(&id)
    };
    assert_eq!(record.subscription, microsoft);
}

#[tokio::test]
async fn a_change_our_record_cannot_take_stores_microsofts_view_after_the_change() {
    let world = World::new();
    let id = world.active(5).await;
    // We missed a suspension and a reinstatement: our record says Suspended.
    world.market.lifecycle(&id, OperationAction::Suspend).expect("suspended");
    let suspended = world.microsoft(&id);
    world.tick();
    use fulfillment::clock::Clock;
    let event = Event::observed(
        suspended,
        world.clock.now(),
        OperationId::parse("seen").expect("id"),
        ChangeSource::Reconcile,
    );
    record_event(&world.store, &event, world.clock.now()).await.expect("written");
    world.market.lifecycle(&id, OperationAction::Reinstate).expect("reinstated");
    let change = world.market.customer_change_quantity(&id, 12).expect("customer change");
    assert_eq!(world.deliver(ChangePolicy::default(), &change).await.expect("handled"), Handled::Recorded);
    let record = world.record(&id).await;
    assert_eq!(record.subscription, world.microsoft(&id), "Microsoft's view, not ours replayed");
    assert_eq!((record.status(), record.subscription.quantity), (SubscriptionStatus::Subscribed, Some(12)));
}

// 3. The reconciliation never overwrites newer state ---------------------------------------------

#[tokio::test]
async fn a_cancellation_during_a_reconciliation_run_stays_cancelled() {
    let world = World::new();
    let id = world.active(5).await;
    // A seat change we missed, so the run has something to repair.
    world.market.edit(&id, |s| s.quantity = Some(6));
    // The customer cancels after the listing; its webhook is written before the run's repair.
    let (market, store, clock) = (world.market.clone(), world.store.clone(), world.clock.clone());
    let cancel_id = id.clone();
    world.store.at_apply(
        1,
        StoreStep::interleave(move |_inner: MemoryStore| async move {
            clock.advance(chrono::Duration::seconds(1));
            let cancel = market.lifecycle(&cancel_id, OperationAction::Unsubscribe).expect("cancelled");
            let webhook = Webhook::new(store, market, clock, ChangePolicy::default());
            let handled = webhook.handle(&cancel, Instant::now() + Duration::from_secs(8)).await;
            assert_eq!(handled.expect("handled"), Handled::Recorded);
        }),
    );
    world.reconcile("run-1").await;
    let record = world.record(&id).await;
    assert_eq!(record.status(), SubscriptionStatus::Unsubscribed);
    assert!(!Entitlement::from(&record).access_allowed, "no access back for a cancelled customer");
}

// 4. "Nothing to change" is decided on the record it is written on -------------------------------

#[tokio::test]
async fn a_keep_decided_on_a_superseded_record_is_decided_again() {
    let world = World::new();
    let id = world.active(5).await;
    // A notification of nothing Microsoft changed: "keep the state" is decided on our record ...
    let transfer: WebhookPayload = serde_json::from_value(serde_json::json!({
        "id": "22222222-3333-4444-8555-666666666666", "subscriptionId": id.as_str(), "action": "Transfer"
    }))
    .expect("payload");
    // ... but an older writer (a view read before the delivery's) gets in before it is written.
    let mut older = world.microsoft(&id);
    older.quantity = Some(9);
    let clock = world.clock.clone();
    world.store.at_apply(
        1,
        StoreStep::interleave(move |store: MemoryStore| async move {
            let read_at =
                clock.advance(chrono::Duration::milliseconds(1)) - chrono::Duration::milliseconds(500);
            let event = Event::observed(
                older,
                read_at,
                OperationId::parse("older").expect("id"),
                ChangeSource::Reconcile,
            );
            record_event(&store, &event, read_at).await.expect("older writer");
        }),
    );
    assert_eq!(world.deliver(ChangePolicy::default(), &transfer).await.expect("handled"), Handled::Recorded);
    let record = world.record(&id).await;
    assert_eq!(record.subscription, world.microsoft(&id), "decided again: the delivery's newer view won");
    assert!(world.store.operation(&id, &transfer.operation.id).await.expect("read").is_some());
}

// 5. Nobody's clock freezes a subscription --------------------------------------------------------

#[tokio::test]
async fn a_delivery_dated_in_9999_freezes_nothing() {
    let world = World::new();
    let id = world.active(5).await;
    let mut change = world.market.customer_change_quantity(&id, 7).expect("customer change");
    change.operation.time_stamp =
        chrono::DateTime::parse_from_rfc3339("9999-12-31T00:00:00Z").ok().map(|t| t.with_timezone(&Utc));
    world.deliver(ChangePolicy::default(), &change).await.expect("handled");
    let suspend = world.market.lifecycle(&id, OperationAction::Suspend).expect("suspended");
    world.deliver(ChangePolicy::default(), &suspend).await.expect("handled");
    let record = world.record(&id).await;
    assert_eq!(record.status(), SubscriptionStatus::Suspended);
    assert!(record.last_event_at.is_some_and(|t| t.timestamp() < 10_000_000_000));
}

// 6. A change Microsoft started is found, not lost ------------------------------------------------

#[tokio::test]
async fn a_publisher_change_whose_answer_is_lost_is_found_among_outstanding_operations() {
    let world = World::new();
    let id = world.active(5).await;
    world.market.fail_next("change_quantity", MarketFault::LostAnswer, 1);
    let publisher = Publisher::new(world.store.clone(), world.market.clone(), world.clock.clone());
    let pending = publisher.request(&id, ChangeRequest::Seats(9), &Call::new()).await.expect("found");
    let at_microsoft = world.market.operation(&pending.id).expect("Microsoft's operation");
    assert_eq!(at_microsoft.quantity, Some(9));
    assert_eq!(world.record(&id).await.pending_operation.map(|p| p.id), Some(pending.id));
    // The webhook for it settles it.
    for payload in world.market.complete_publisher_operations() {
        world.deliver(ChangePolicy::default(), &payload).await.expect("handled");
    }
    let record = world.record(&id).await;
    assert_eq!((record.subscription.quantity, record.pending_operation), (Some(9), None));
}

// 7. A refusal Microsoft ignores is recorded as Microsoft's state ---------------------------------

#[tokio::test]
async fn a_change_microsoft_applies_despite_our_refusal_is_recorded_with_the_drift() {
    let world = World::new();
    let id = world.active(5).await;
    world.market.ignore_refusals(true);
    let change = world.market.customer_change_quantity(&id, 50).expect("customer change");
    let handled = world.deliver(seats(10), &change).await.expect("handled");
    assert!(matches!(handled, Handled::Rejected(_)), "{handled:?}");
    let record = world.record(&id).await;
    assert_eq!(record.subscription.quantity, Some(50), "Microsoft's state");
    let history = world.store.history(&id).await.expect("history");
    assert!(history.iter().any(|h| h.operation_id.as_str().ends_with("-applied-anyway")), "{history:#?}");
}

// 8. Smaller ways the ledger went wrong -----------------------------------------------------------

#[tokio::test]
async fn a_passing_400_from_get_operation_refuses_no_customer() {
    let world = World::new();
    let id = world.active(5).await;
    let change = world.market.customer_change_quantity(&id, 9).expect("customer change");
    world.market.fail_next("get_operation", MarketFault::BadRequest, 1);
    assert!(world.deliver(seats(100), &change).await.is_err(), "5xx: Microsoft delivers again");
    assert_eq!(world.store.operation(&id, &change.operation.id).await.expect("read"), None);
    assert!(!world.market.calls().contains(&"update_operation_status"), "nothing refused");
    assert_eq!(world.deliver(seats(100), &change).await.expect("handled"), Handled::Recorded);
    assert_eq!(world.record(&id).await.subscription.quantity, Some(9));
}

#[tokio::test]
async fn a_passing_400_keeps_a_recent_pending_operation() {
    let world = World::new();
    let id = world.active(5).await;
    let publisher = Publisher::new(world.store.clone(), world.market.clone(), world.clock.clone());
    let pending = publisher
        .request(&id, ChangeRequest::Plan(PlanId::parse("gold").expect("plan")), &Call::new())
        .await
        .expect("requested");
    world.market.fail_next("get_operation", MarketFault::BadRequest, 1);
    world.reconcile("run-1").await;
    assert_eq!(world.record(&id).await.pending_operation.map(|p| p.id), Some(pending.id));
}

#[tokio::test]
async fn a_redelivered_refusal_is_refused_again() {
    let world = World::new();
    let id = world.active(5).await;
    let change = world.market.customer_change_quantity(&id, 50).expect("customer change");
    assert!(matches!(world.deliver(seats(10), &change).await.expect("handled"), Handled::Rejected(_)));
    assert!(matches!(world.deliver(seats(10), &change).await.expect("handled"), Handled::Rejected(_)));
    assert_eq!(world.record(&id).await.subscription.quantity, Some(5));
}

#[tokio::test]
async fn a_view_without_a_status_revokes_nothing() {
    let world = World::new();
    let id = world.active(5).await;
    let renewal = world.market.lifecycle(&id, OperationAction::Renew).expect("renewed");
    world.market.edit(&id, |s| s.status = None);
    // Asked for again (5xx): a view without a status shows nothing to record.
    let handled = world.deliver(ChangePolicy::default(), &renewal).await;
    assert!(matches!(handled, Err(WebhookError::NotFinal(_))), "{handled:?}");
    let record = world.record(&id).await;
    assert_eq!(record.status(), SubscriptionStatus::Subscribed);
    assert!(Entitlement::from(&record).access_allowed);
    world.reconcile("run-1").await;
    assert_eq!(world.record(&id).await.status(), SubscriptionStatus::Subscribed);
}

#[tokio::test]
async fn the_publishers_own_change_is_not_settled_before_microsoft_finishes_it() {
    let world = World::new();
    let id = world.active(5).await;
    let publisher = Publisher::new(world.store.clone(), world.market.clone(), world.clock.clone());
    let pending = publisher
        .request(&id, ChangeRequest::Plan(PlanId::parse("gold").expect("plan")), &Call::new())
        .await
        .expect("requested");
    let early = WebhookPayload {
        operation: world.market.operation(&pending.id).expect("operation"),
        subscription: Some(world.microsoft(&id)),
        purchase_token: None,
    };
    assert_eq!(world.deliver(ChangePolicy::default(), &early).await.expect("answered"), Handled::Recorded);
    assert_eq!(world.record(&id).await.pending_operation.map(|p| p.id), Some(pending.id.clone()));
    assert_eq!(
        world.store.operation(&id, &pending.id).await.expect("read"),
        None,
        "the operation id stays free"
    );
    for payload in world.market.complete_publisher_operations() {
        world.deliver(ChangePolicy::default(), &payload).await.expect("handled");
    }
    let record = world.record(&id).await;
    assert_eq!((record.subscription.plan_id, record.pending_operation), (PlanId::parse("gold"), None));
}

#[tokio::test]
async fn ids_in_any_case_name_the_same_subscription() {
    let world = World::new();
    let id = world.active(5).await;
    let suspend = world.market.lifecycle(&id, OperationAction::Suspend).expect("suspended");
    // Microsoft spells the same GUIDs in capitals (and braces) this time.
    let mut shouted = serde_json::to_value(&suspend).expect("json");
    shouted["subscriptionId"] = format!("{{{}}}", id.as_str().to_uppercase()).into();
    shouted["id"] = suspend.operation.id.as_str().to_uppercase().into();
    shouted["subscription"]["id"] = id.as_str().to_uppercase().into();
    let shouted: WebhookPayload = serde_json::from_value(shouted).expect("payload");
    assert_eq!(shouted.operation.subscription_id, id, "normalised where it entered");
    assert_eq!(shouted.operation.id, suspend.operation.id);
    assert_eq!(world.deliver(ChangePolicy::default(), &shouted).await.expect("handled"), Handled::Recorded);
    assert_eq!(world.record(&id).await.status(), SubscriptionStatus::Suspended);
    // A redelivery in the original spelling is the same operation.
    assert_eq!(world.deliver(ChangePolicy::default(), &suspend).await.expect("handled"), Handled::Duplicate);
    let publisher = Publisher::new(world.store.clone(), world.market.clone(), world.clock.clone());
    let found =
        publisher.entitlements_of_tenant("7A0E3C4E-AAAA-4BBB-8CCC-0000000000AA").await.expect("lookup");
    assert_eq!(found.len(), 1);
}

// Found by review: views that lag, changes that lose to other operations, routing by the payload --

#[tokio::test]
async fn a_notification_whose_effect_microsofts_view_does_not_show_yet_is_asked_for_again() {
    let world = World::new();
    let id = world.active(5).await;
    let suspend = world.market.lifecycle(&id, OperationAction::Suspend).expect("suspended");
    world.market.edit(&id, |s| s.status = Some(SubscriptionStatus::Subscribed)); // the view lags
    let early = world.deliver(ChangePolicy::default(), &suspend).await;
    assert!(matches!(early, Err(WebhookError::NotFinal(_))), "{early:?}");
    assert_eq!(world.store.operation(&id, &suspend.operation.id).await.expect("read"), None, "not spent");
    world.market.edit(&id, |s| s.status = Some(SubscriptionStatus::Suspended));
    assert_eq!(world.deliver(ChangePolicy::default(), &suspend).await.expect("handled"), Handled::Recorded);
    assert_eq!(world.record(&id).await.status(), SubscriptionStatus::Suspended);
}

#[tokio::test]
async fn the_publishers_cancellation_is_not_settled_before_microsoft_finishes_it() {
    let world = World::new();
    let id = world.active(5).await;
    let publisher = Publisher::new(world.store.clone(), world.market.clone(), world.clock.clone());
    let pending = publisher.request(&id, ChangeRequest::Cancel, &Call::new()).await.expect("requested");
    let early = WebhookPayload {
        operation: world.market.operation(&pending.id).expect("operation"),
        subscription: Some(world.microsoft(&id)),
        purchase_token: None,
    };
    assert_eq!(world.deliver(ChangePolicy::default(), &early).await.expect("answered"), Handled::Recorded);
    let record = world.record(&id).await;
    assert_eq!(
        (record.status(), record.pending_operation.map(|p| p.id)),
        (SubscriptionStatus::Subscribed, Some(pending.id))
    );
    for payload in world.market.complete_publisher_operations() {
        world.deliver(ChangePolicy::default(), &payload).await.expect("handled");
    }
    let record = world.record(&id).await;
    assert_eq!((record.status(), record.pending_operation), (SubscriptionStatus::Unsubscribed, None));
}

#[tokio::test]
async fn the_publishers_unfinished_cancellation_is_known_by_our_pending_operation_without_a_source() {
    let world = World::new();
    let id = world.active(5).await;
    let publisher = Publisher::new(world.store.clone(), world.market.clone(), world.clock.clone());
    let pending = publisher.request(&id, ChangeRequest::Cancel, &Call::new()).await.expect("requested");
    // Microsoft's operation and its delivery do not say who asked: it is still ours.
    let mut operation = world.market.operation(&pending.id).expect("operation");
    operation.operation_request_source = None;
    world.market.insert_operation(operation.clone());
    let early = WebhookPayload { operation, subscription: Some(world.microsoft(&id)), purchase_token: None };
    assert_eq!(world.deliver(ChangePolicy::default(), &early).await.expect("kept apart"), Handled::Recorded);
    let record = world.record(&id).await;
    assert_eq!(
        (record.status(), record.pending_operation.map(|p| p.id)),
        (SubscriptionStatus::Subscribed, Some(pending.id))
    );
}

#[tokio::test]
async fn a_seat_change_delivered_after_a_later_renewal_is_still_applied() {
    let world = World::new();
    let id = world.active(5).await;
    let change = world.market.customer_change_quantity(&id, 8).expect("customer change");
    world.tick();
    let renewal = world.market.lifecycle(&id, OperationAction::Renew).expect("renewed");
    world.deliver(ChangePolicy::default(), &renewal).await.expect("renewal");
    assert_eq!(world.deliver(ChangePolicy::default(), &change).await.expect("change"), Handled::Recorded);
    assert_eq!(world.record(&id).await.subscription.quantity, Some(8));
    assert_eq!(world.microsoft(&id).quantity, Some(8));
}

#[tokio::test]
async fn a_change_delivered_without_its_action_is_judged_by_microsofts() {
    let world = World::new();
    let id = world.active(5).await;
    let mut change = world.market.customer_change_plan(&id, "gold").expect("customer change");
    change.operation.action = None;
    let only_basic =
        ChangePolicy { allowed_plans: PlanId::parse("basic").map(|p| vec![p]), ..ChangePolicy::default() };
    let handled = world.deliver(only_basic, &change).await.expect("handled");
    assert!(matches!(handled, Handled::Rejected(_)), "{handled:?}");
    assert_eq!(world.microsoft(&id).plan_id, PlanId::parse("basic"), "Microsoft was told Failure");
}

#[test]
fn a_snapshot_that_does_not_parse_does_not_fail_the_delivery() {
    let payload: WebhookPayload = serde_json::from_value(serde_json::json!({
        "id": "11111111-2222-4333-8444-555555555555",
        "subscriptionId": "99999999-0000-4000-8000-000000000099",
        "action": "ChangeQuantity", "quantity": 9,
        "subscription": { "id": 42, "autoRenew": "maybe" }
    }))
    .expect("parsed without its snapshot");
    assert_eq!(payload.subscription, None);
    assert_eq!(payload.operation.quantity, Some(9));
}

#[tokio::test]
async fn a_publisher_change_that_failed_at_microsoft_is_no_longer_pending() {
    let world = World::new();
    let id = world.active(5).await;
    let publisher = Publisher::new(world.store.clone(), world.market.clone(), world.clock.clone());
    let pending = publisher.request(&id, ChangeRequest::Seats(9), &Call::new()).await.expect("requested");
    let mut failed = world.market.operation(&pending.id).expect("operation");
    failed.status = Some(fulfillment::domain::OperationStatus::Failed);
    world.market.forget_operation(&pending.id);
    // Microsoft's operation now says Failed (the fake is told through its own record of it).
    let payload = WebhookPayload { operation: failed.clone(), subscription: None, purchase_token: None };
    world.market.insert_operation(failed);
    assert_eq!(world.deliver(ChangePolicy::default(), &payload).await.expect("handled"), Handled::Recorded);
    let record = world.record(&id).await;
    assert_eq!((record.subscription.quantity, record.pending_operation), (Some(5), None));
}

#[tokio::test]
async fn a_reinstatement_in_progress_is_applied_once_microsofts_view_shows_it() {
    let world = World::new();
    let id = world.active(5).await;
    let suspend = world.market.lifecycle(&id, OperationAction::Suspend).expect("suspended");
    world.deliver(ChangePolicy::default(), &suspend).await.expect("suspend");
    let mut reinstate = world.market.lifecycle(&id, OperationAction::Reinstate).expect("reinstated");
    // Reinstate arrives InProgress (docs/marketplace-api.md#webhook-actions) and the view still says Suspended.
    reinstate.operation.status = Some(fulfillment::domain::OperationStatus::InProgress);
    world.market.insert_operation(reinstate.operation.clone());
    world.market.edit(&id, |s| s.status = Some(SubscriptionStatus::Suspended));
    let early = world.deliver(ChangePolicy::default(), &reinstate).await;
    assert!(matches!(early, Err(WebhookError::NotFinal(_))), "5xx, delivered again: {early:?}");
    world.market.edit(&id, |s| s.status = Some(SubscriptionStatus::Subscribed));
    assert_eq!(world.deliver(ChangePolicy::default(), &reinstate).await.expect("handled"), Handled::Recorded);
    assert_eq!(world.record(&id).await.status(), SubscriptionStatus::Subscribed);
}
