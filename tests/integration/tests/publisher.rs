//! The publisher's own changes end to end (issue 6): `Publisher::request` against the emulator, the
//! pending operation on our record, completion by the `Partner` webhook or, when that webhook is
//! lost, by the reconciliation; every refusal before Microsoft is asked; entitlements.

use std::time::Duration;

use fulfillment::admin::{ChangeRequest, Publisher, PublisherError, Refusal};
use fulfillment::clock::SystemClock;
use fulfillment::domain::{PlanId, SubscriptionId, SubscriptionStatus};
use fulfillment::marketplace::{Call, HttpMarketplaceClient};
use fulfillment::reconcile::Reconciler;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::{ChangeSource, Outcome, PendingOperation};
use integration_tests::flows::buy_and_activate;
use integration_tests::flows::{delivered, history, lifecycle_events, record, types};
use integration_tests::stack_options;
use local_stack::{LocalStack, Options};
use marketplace_emulator::{EmulatorConfig, Purchase, WebhookFaults};

const WAIT: Duration = Duration::from_secs(15);

type Core = Publisher<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

fn options() -> Options {
    Options {
        emulator: EmulatorConfig {
            ack_window: Duration::from_secs(30),
            operation_delay: Duration::from_millis(100),
            ..EmulatorConfig::default()
        },
        ..stack_options()
    }
}

async fn stack_with(options: Options) -> LocalStack {
    LocalStack::start(options).await.expect("the local stack starts")
}

/// The admin API's core as the deployed function builds it.
fn publisher(stack: &LocalStack) -> &Core {
    &stack.functions.subscriptions.publisher
}

/// The reconciliation as the deployed function builds it.
fn reconciler(stack: &LocalStack) -> &Reconciler<DynamoDbStore, HttpMarketplaceClient, SystemClock> {
    &stack.functions.reconcile.reconciler
}

fn run_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn id(raw: &str) -> SubscriptionId {
    SubscriptionId::parse(raw).expect("id")
}

fn plan(raw: &str) -> PlanId {
    PlanId::parse(raw).expect("plan")
}

/// PATCH and DELETE requests on the subscription itself (the publisher's changes) Microsoft received.
async fn changes_sent(stack: &LocalStack, subscription: &str) -> usize {
    let path = format!("/saas/subscriptions/{subscription}");
    stack
        .emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| (r.method == "PATCH" || r.method == "DELETE") && r.path.eq_ignore_ascii_case(&path))
        .count()
}

/// Requests `change`, which must be refused without a PATCH or DELETE reaching Microsoft.
async fn refused(core: &Core, stack: &LocalStack, subscription: &str, change: ChangeRequest) -> Refusal {
    let before = changes_sent(stack, subscription).await;
    let refusal = match core.request(&id(subscription), change.clone(), &Call::new()).await {
        Err(PublisherError::Refused(refusal)) => refusal,
        other => panic!("{change:?} must be refused, got {other:?}"),
    };
    assert_eq!(changes_sent(stack, subscription).await, before, "{change:?}: nothing was sent to Microsoft");
    refusal
}

/// Requests `change`: Microsoft answers 202, the operation is pending on our record, and a second
/// change is refused while it is.
async fn requested(
    core: &Core,
    stack: &LocalStack,
    subscription: &str,
    change: ChangeRequest,
) -> PendingOperation {
    let before = changes_sent(stack, subscription).await;
    let pending = core.request(&id(subscription), change.clone(), &Call::new()).await.expect("202 Accepted");
    assert_eq!(changes_sent(stack, subscription).await, before + 1, "{change:?} sent once");
    let ours = record(stack, subscription).await;
    assert_eq!(ours.pending_operation.as_ref(), Some(&pending), "{change:?} is pending on our record");
    let requested = history(stack, subscription).await.pop().expect("history");
    assert_eq!(
        (requested.source, requested.outcome, requested.operation_id.as_str()),
        (ChangeSource::Publisher, Outcome::Requested, format!("request-{}", pending.id).as_str())
    );
    let other = ChangeRequest::Seats(ours.subscription.quantity.map_or(7, |q| q + 3));
    assert_eq!(
        refused(core, stack, subscription, other).await,
        Refusal::Pending(pending.id.to_string()),
        "a second change while {change:?} is pending"
    );
    pending
}

/// The operation is over at Microsoft.
async fn succeeded(stack: &LocalStack, subscription: &str, pending: &PendingOperation) {
    let done = stack.emulator.wait_operation(subscription, pending.id.as_str(), WAIT).await.expect("decided");
    assert_eq!(done.status, "Succeeded", "{done:?}");
    assert_eq!(done.source, "Partner");
}

// Publisher-initiated changes, completed by the Partner webhook ---------------------------------

#[tokio::test]
async fn seats_plan_and_cancel_complete_through_the_partner_webhook() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;
    // Microsoft's webhooks are held until flushed: the pending state can be looked at in peace.
    stack.emulator.webhook_faults(WebhookFaults { reorder: true, ..WebhookFaults::default() }).await;
    let core = publisher(&stack);

    let complete = |pending: PendingOperation| {
        let stack = &stack;
        let sub = sub.clone();
        async move {
            succeeded(stack, &sub, &pending).await;
            assert_eq!(
                record(stack, &sub).await.pending_operation.as_ref(),
                Some(&pending),
                "done at Microsoft, still pending here until the webhook"
            );
            assert_eq!(stack.emulator.flush_webhooks().await, 1, "the Partner webhook");
            assert_eq!(delivered(stack, pending.id.as_str()).await.status, Some(200));
            let ours = record(stack, &sub).await;
            assert_eq!(ours.pending_operation, None, "settled by its webhook");
            let last = history(stack, &sub).await.pop().expect("history");
            assert_eq!(
                (last.source, last.outcome, last.operation_id.as_str()),
                (ChangeSource::Webhook, Outcome::Applied, pending.id.as_str())
            );
            ours
        }
    };

    let seats = requested(core, &stack, &sub, ChangeRequest::Seats(12)).await;
    assert_eq!((seats.quantity, seats.plan_id.clone()), (Some(12), None));
    assert_eq!(record(&stack, &sub).await.subscription.quantity, Some(10), "not before Microsoft is done");
    let ours = complete(seats).await;
    assert_eq!(ours.subscription.quantity, Some(12));

    let new_plan = requested(core, &stack, &sub, ChangeRequest::Plan(plan("team-yearly"))).await;
    assert_eq!(new_plan.plan_id, Some(plan("team-yearly")));
    let ours = complete(new_plan).await;
    assert_eq!(ours.subscription.plan_id, Some(plan("team-yearly")));

    let cancel = requested(core, &stack, &sub, ChangeRequest::Cancel).await;
    let ours = complete(cancel).await;
    assert_eq!(ours.status(), SubscriptionStatus::Unsubscribed);
    assert!(ours.retain_data_until.is_some(), "the data is kept for a while");

    let acknowledgements = stack
        .emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/operations/"))
        .count();
    assert_eq!(acknowledgements, 0, "Partner operations are never acknowledged");

    let events = lifecycle_events(&stack, &sub).await;
    assert_eq!(types(&events), SEATS_PLAN_CANCEL, "a request is no event; its completion is");
    assert!(events[2..].iter().all(|e| e["source"] == "webhook"), "{events:#?}");
}

/// The lifecycle events of a bought subscription whose seats, then plan the publisher changes, then
/// cancels.
const SEATS_PLAN_CANCEL: [&str; 5] = [
    "SubscriptionPurchased",
    "SubscriptionActivated",
    "SeatsChanged",
    "PlanChanged",
    "SubscriptionUnsubscribed",
];

// Publisher-initiated changes, completed by the reconciliation -----------------------------------

#[tokio::test]
async fn seats_plan_and_cancel_complete_through_reconcile_when_the_partner_webhook_is_lost() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;
    stack
        .emulator
        .webhook_faults(WebhookFaults { drop_partner_only: true, ..WebhookFaults::default() })
        .await;
    let core = publisher(&stack);
    let reconciler = reconciler(&stack);

    let complete = |pending: PendingOperation| {
        let (stack, reconciler) = (&stack, &reconciler);
        let sub = sub.clone();
        async move {
            succeeded(stack, &sub, &pending).await;
            stack
                .emulator
                .wait_webhook(WAIT, |d| d.operation_id == pending.id.as_str() && d.dropped)
                .await
                .expect("the Partner webhook was lost");
            assert_eq!(record(stack, &sub).await.pending_operation.as_ref(), Some(&pending));

            let summary = reconciler.pass(&run_id()).await;
            assert_eq!(
                (summary.seen, summary.operations_finished, summary.operations_dropped, summary.errors),
                (1, 1, 0, 0),
                "{summary:?}"
            );
            assert_eq!((summary.changed, summary.complete), (1, true), "{summary:?}");
            let ours = record(stack, &sub).await;
            assert_eq!(ours.pending_operation, None, "settled by the reconciliation");
            let last = history(stack, &sub).await.pop().expect("history");
            assert_eq!(
                (last.source, last.outcome, last.operation_id.as_str()),
                (ChangeSource::Reconcile, Outcome::Applied, pending.id.as_str())
            );
            let at_microsoft = stack.emulator.subscription(&sub).await.expect("exists");
            let theirs: fulfillment::domain::Subscription =
                serde_json::from_value(at_microsoft).expect("Microsoft's shape");
            assert_eq!(ours.subscription, theirs, "equal to Microsoft's view");
            ours
        }
    };

    let seats = requested(core, &stack, &sub, ChangeRequest::Seats(12)).await;
    let ours = complete(seats).await;
    assert_eq!(ours.subscription.quantity, Some(12));

    let new_plan = requested(core, &stack, &sub, ChangeRequest::Plan(plan("team-yearly"))).await;
    let ours = complete(new_plan).await;
    assert_eq!(ours.subscription.plan_id, Some(plan("team-yearly")));

    let cancel = requested(core, &stack, &sub, ChangeRequest::Cancel).await;
    let ours = complete(cancel).await;
    assert_eq!(ours.status(), SubscriptionStatus::Unsubscribed);
    assert!(ours.retain_data_until.is_some());

    let again = reconciler.pass(&run_id()).await;
    assert_eq!((again.unchanged, again.changed, again.operations_finished), (1, 0, 0), "{again:?}");

    let events = lifecycle_events(&stack, &sub).await;
    assert_eq!(types(&events), SEATS_PLAN_CANCEL);
    assert!(events[2..].iter().all(|e| e["source"] == "reconcile"), "{events:#?}");
}

// Refusals ----------------------------------------------------------------------------------------

#[tokio::test]
async fn changes_microsoft_would_refuse_are_refused_before_asking_it() {
    let stack = stack_with(options()).await;
    let core = publisher(&stack);
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;

    assert_eq!(
        refused(core, &stack, &sub, ChangeRequest::Plan(plan("team-monthly"))).await,
        Refusal::SamePlan(plan("team-monthly"))
    );
    assert_eq!(refused(core, &stack, &sub, ChangeRequest::Seats(10)).await, Refusal::SameSeats(10));
    assert_eq!(
        refused(core, &stack, &sub, ChangeRequest::Plan(plan("no-such-plan"))).await,
        Refusal::PlanNotAvailable(plan("no-such-plan"))
    );
    // team-monthly admits 1 to 500 seats.
    assert_eq!(
        refused(core, &stack, &sub, ChangeRequest::Seats(501)).await,
        Refusal::SeatsOutOfBounds { seats: 501, min: Some(1), max: Some(500) }
    );
    assert_eq!(
        refused(core, &stack, &sub, ChangeRequest::Seats(0)).await,
        Refusal::SeatsOutOfBounds { seats: 0, min: Some(1), max: Some(500) }
    );
    assert_eq!(changes_sent(&stack, &sub).await, 0);
    let ours = record(&stack, &sub).await;
    assert_eq!((ours.pending_operation, ours.subscription.quantity), (None, Some(10)), "nothing changed");
}

#[tokio::test]
async fn a_resellers_customer_may_only_read() {
    let stack = stack_with(options()).await;
    let core = publisher(&stack);
    let reseller = uuid::Uuid::new_v4().to_string();
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10).reseller(&reseller)).await;
    assert!(record(&stack, &sub).await.subscription.bought_for_someone_else());

    for change in [ChangeRequest::Seats(12), ChangeRequest::Plan(plan("team-yearly")), ChangeRequest::Cancel]
    {
        assert_eq!(refused(core, &stack, &sub, change).await, Refusal::ReadOnly);
    }
    assert_eq!(changes_sent(&stack, &sub).await, 0);
}

#[tokio::test]
async fn a_second_change_is_refused_while_one_is_pending() {
    // The Partner webhook never comes: the operation stays pending here until reconciled.
    let stack = stack_with(options()).await;
    stack
        .emulator
        .webhook_faults(WebhookFaults { drop_partner_only: true, ..WebhookFaults::default() })
        .await;
    let core = publisher(&stack);
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;

    let pending = core.request(&id(&sub), ChangeRequest::Seats(12), &Call::new()).await.expect("202");
    succeeded(&stack, &sub, &pending).await;
    let expected = Refusal::Pending(pending.id.to_string());
    for change in [ChangeRequest::Seats(20), ChangeRequest::Plan(plan("team-yearly")), ChangeRequest::Cancel]
    {
        assert_eq!(refused(core, &stack, &sub, change).await, expected);
    }
    assert_eq!(changes_sent(&stack, &sub).await, 1, "only the first change reached Microsoft");

    // Once settled, changes are possible again.
    assert_eq!(reconciler(&stack).pass(&run_id()).await.operations_finished, 1);
    let next = core.request(&id(&sub), ChangeRequest::Seats(20), &Call::new()).await.expect("202");
    assert_eq!(next.quantity, Some(20));
}

#[tokio::test]
async fn only_a_subscribed_subscription_changes_and_a_cancelled_one_is_not_cancelled_again() {
    let stack = stack_with(options()).await;
    let core = publisher(&stack);
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;

    let suspend = stack.emulator.suspend(&sub).await.expect("suspended");
    assert_eq!(delivered(&stack, &suspend.operation_id).await.status, Some(200));
    let not_subscribed = Refusal::NotSubscribed(SubscriptionStatus::Suspended);
    assert_eq!(refused(core, &stack, &sub, ChangeRequest::Seats(12)).await, not_subscribed);
    assert_eq!(refused(core, &stack, &sub, ChangeRequest::Plan(plan("team-yearly"))).await, not_subscribed);

    let unsubscribe = stack.emulator.unsubscribe(&sub).await.expect("cancelled");
    assert_eq!(delivered(&stack, &unsubscribe.operation_id).await.status, Some(200));
    assert_eq!(refused(core, &stack, &sub, ChangeRequest::Cancel).await, Refusal::AlreadyCancelled);
    assert_eq!(
        refused(core, &stack, &sub, ChangeRequest::Seats(12)).await,
        Refusal::NotSubscribed(SubscriptionStatus::Unsubscribed)
    );
    assert_eq!(changes_sent(&stack, &sub).await, 0);
    assert!(matches!(
        core.request(&id(&uuid::Uuid::new_v4().to_string()), ChangeRequest::Cancel, &Call::new()).await,
        Err(PublisherError::NotFound(_))
    ));
}

// Entitlements ------------------------------------------------------------------------------------

#[tokio::test]
async fn access_is_allowed_only_while_subscribed_by_subscription_and_by_tenant() {
    let stack = stack_with(options()).await;
    let core = publisher(&stack);
    let tenant = uuid::Uuid::new_v4().to_string();
    let bought = || Purchase::plan("team-monthly").quantity(10).tenant(&tenant);

    let active = buy_and_activate(&stack, bought()).await;
    let suspended = buy_and_activate(&stack, bought()).await;
    let cancelled = buy_and_activate(&stack, bought()).await;
    // Bought and landed, never activated.
    let pending = stack.emulator.purchase(bought()).await;
    let landing = reqwest::get(stack.landing_url(&pending.token)).await.expect("landing");
    assert!(landing.status().is_success(), "{}", landing.status());
    let pending = pending.subscription_id;

    let suspend = stack.emulator.suspend(&suspended).await.expect("suspended");
    assert_eq!(delivered(&stack, &suspend.operation_id).await.status, Some(200));
    let unsubscribe = stack.emulator.unsubscribe(&cancelled).await.expect("cancelled");
    assert_eq!(delivered(&stack, &unsubscribe.operation_id).await.status, Some(200));

    let entitlement = |sub: String| {
        let core = &core;
        async move { core.entitlement(&id(&sub)).await.expect("entitlement") }
    };
    let e = entitlement(active.clone()).await;
    assert_eq!((e.status, e.access_allowed), (SubscriptionStatus::Subscribed, true));
    assert_eq!(
        (e.beneficiary_tenant_id.as_deref(), e.plan_id.clone(), e.seats, e.retain_data_until),
        (Some(tenant.as_str()), Some(plan("team-monthly")), Some(10), None)
    );
    assert!(e.term.is_some());
    let e = entitlement(pending.clone()).await;
    assert_eq!((e.status, e.access_allowed), (SubscriptionStatus::PendingFulfillmentStart, false));
    let e = entitlement(suspended.clone()).await;
    assert_eq!((e.status, e.access_allowed, e.seats), (SubscriptionStatus::Suspended, false, Some(10)));
    let e = entitlement(cancelled.clone()).await;
    assert_eq!((e.status.clone(), e.access_allowed), (SubscriptionStatus::Unsubscribed, false));
    assert!(e.retain_data_until.is_some_and(|until| until > chrono::Utc::now()), "{e:?}");

    let of_tenant = core.entitlements_of_tenant(&tenant).await.expect("by tenant");
    assert_eq!(of_tenant.len(), 4, "{of_tenant:?}");
    assert_eq!(of_tenant[0].subscription_id, id(&active), "the active one first");
    let allowed: Vec<&str> =
        of_tenant.iter().filter(|e| e.access_allowed).map(|e| e.subscription_id.as_str()).collect();
    assert_eq!(allowed, [active.as_str()]);
    let mut listed: Vec<String> = of_tenant.iter().map(|e| e.subscription_id.to_string()).collect();
    let mut expected = vec![active.clone(), suspended.clone(), cancelled.clone(), pending.clone()];
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(core.entitlements_of_tenant(&uuid::Uuid::new_v4().to_string()).await.expect("none").is_empty());
    assert!(matches!(
        core.entitlement(&id(&uuid::Uuid::new_v4().to_string())).await,
        Err(PublisherError::NotFound(_))
    ));

    // Reinstated: access again, for the subscription and in the tenant's list.
    let reinstate = stack.emulator.reinstate(&suspended).await.expect("reinstated");
    assert_eq!(delivered(&stack, &reinstate.operation_id).await.status, Some(200));
    assert!(entitlement(suspended.clone()).await.access_allowed);
    let allowed = core
        .entitlements_of_tenant(&tenant)
        .await
        .expect("by tenant")
        .into_iter()
        .filter(|e| e.access_allowed)
        .count();
    assert_eq!(allowed, 2);
}
