//! The Marketplace contract: what the in-memory [`super::FakeMarketplace`] must do like Microsoft
//! (as our emulator and docs/marketplace-api.md describe it), run against the fake
//! (`shared/tests/market_contract.rs`) and against the emulator through the production HTTP
//! client (`tests/integration/tests/marketplace_client.rs`), so the model cannot drift from it.
//! Only what is decided at once is checked (no operation timers).

use std::future::Future;

use crate::domain::{
    OperationAction, OperationId, OperationStatus, PlanId, RequestSource, SubscriptionId, SubscriptionStatus,
    Timestamp, UsageEvent, UsageEventStatus, UsageQuery, UsageRecord,
};
use crate::marketplace::{
    AckStatus, Call, MarketplaceApi, MarketplaceError, UsageOutcome, all_subscriptions,
};
use crate::store::usage::hour_of;

/// The customer's side of the marketplace under test.
pub trait CustomerSide {
    /// A purchase of `plan` with `seats`: the subscription and the landing page's token.
    fn purchase(&self, plan: &PlanId, seats: u32) -> impl Future<Output = (SubscriptionId, String)>;
    /// The customer changes the seat count: the operation waiting for the publisher.
    fn change_quantity(&self, id: &SubscriptionId, seats: u32) -> impl Future<Output = OperationId>;
    /// Microsoft suspends the subscription (payment failed).
    fn suspend(&self, id: &SubscriptionId) -> impl Future<Output = ()>;
}

/// Runs every check; `plan` is a per-seat plan admitting 3 to 8 seats, `other_plan` another plan.
pub async fn run_all(
    api: &impl MarketplaceApi,
    customer: &impl CustomerSide,
    plan: &PlanId,
    other_plan: &PlanId,
) {
    let call = Call::new();

    // Resolve names the purchase, pending; an unknown token is refused as a client error.
    let (id, token) = customer.purchase(plan, 5).await;
    let resolved = api.resolve(&token, &call).await.expect("resolved");
    assert_eq!(resolved.id, id);
    let pending = match resolved.subscription {
        Some(s) => s,
        None => api.get_subscription(&id, &call).await.expect("read"),
    };
    assert_eq!(pending.status, Some(SubscriptionStatus::PendingFulfillmentStart));
    assert_eq!((pending.plan_id.as_ref(), pending.quantity), (Some(plan), Some(5)));
    let unknown = api.resolve("not-a-purchase-token", &call).await;
    assert!(
        matches!(unknown, Err(MarketplaceError::BadRequest { .. } | MarketplaceError::NotFound { .. })),
        "{unknown:?}"
    );

    // Activate starts the term; a second activation is refused (not idempotent).
    api.activate(&id, plan, Some(5), &call).await.expect("activated");
    let active = api.get_subscription(&id, &call).await.expect("read");
    assert_eq!(active.status, Some(SubscriptionStatus::Subscribed));
    assert!(active.term.as_ref().and_then(|t| t.start_date).is_some(), "a term: {active:?}");
    let again = api.activate(&id, plan, Some(5), &call).await;
    assert!(matches!(again, Err(MarketplaceError::BadRequest { .. })), "{again:?}");

    // Unknown subscriptions and operations.
    let nobody = SubscriptionId::parse("00000000-0000-4000-8000-0000000dead0").expect("id");
    assert!(matches!(api.get_subscription(&nobody, &call).await, Err(MarketplaceError::NotFound { .. })));
    let no_operation = OperationId::parse("00000000-0000-4000-8000-0000000dead1").expect("id");
    let missing = api.get_operation(&id, &no_operation, &call).await;
    assert!(
        matches!(missing, Err(MarketplaceError::NotFound { .. } | MarketplaceError::BadRequest { .. })),
        "{missing:?}"
    );

    // The listing has it.
    let all = all_subscriptions(api, &call).await.expect("listed");
    assert!(all.iter().any(|s| s.id == id));

    // A customer's change waits for the publisher, names its target, and is decided once.
    let operation = customer.change_quantity(&id, 8).await;
    let waiting = api.get_operation(&id, &operation, &call).await.expect("operation");
    assert_eq!(
        (waiting.action, waiting.operation_request_source, waiting.quantity, waiting.status),
        (
            Some(OperationAction::ChangeQuantity),
            Some(RequestSource::Azure),
            Some(8),
            Some(OperationStatus::InProgress)
        )
    );
    api.update_operation_status(&id, &operation, AckStatus::Failure, &call).await.expect("refused");
    let twice = api.update_operation_status(&id, &operation, AckStatus::Success, &call).await;
    assert!(matches!(twice, Err(MarketplaceError::Conflict { .. })), "{twice:?}");
    let refused = api.get_operation(&id, &operation, &call).await.expect("operation");
    assert_eq!(refused.status, Some(OperationStatus::Failed));
    assert_eq!(api.get_subscription(&id, &call).await.expect("read").quantity, Some(5), "the refusal held");

    // The publisher's own change: an operation of the publisher's, and Microsoft refuses what it
    // would refuse (the current plan, a second change while one is pending is not checked: timing).
    let same = api.change_plan(&id, plan, &call).await;
    assert!(matches!(same, Err(MarketplaceError::BadRequest { .. })), "{same:?}");
    let started = api.change_plan(&id, other_plan, &call).await.expect("started");
    let mine = api.get_operation(&id, &started.operation_id, &call).await.expect("operation");
    assert_eq!(
        (mine.action, mine.operation_request_source, mine.plan_id.as_ref()),
        (Some(OperationAction::ChangePlan), Some(RequestSource::Partner), Some(other_plan))
    );

    // Only a Subscribed subscription changes.
    let (suspended, _) = customer.purchase(plan, 3).await;
    api.activate(&suspended, plan, Some(3), &call).await.expect("activated");
    customer.suspend(&suspended).await;
    assert_eq!(
        api.get_subscription(&suspended, &call).await.expect("read").status,
        Some(SubscriptionStatus::Suspended)
    );
    let refused = api.change_quantity(&suspended, 4, &call).await;
    assert!(matches!(refused, Err(MarketplaceError::BadRequest { .. })), "{refused:?}");
}

/// The Metering API's rules (docs/marketplace-api.md#metering-api) for `id`, a `Subscribed`
/// subscription of `plan`, which has the metering `dimension`; `now` is the marketplace's time.
/// At the end `id` is suspended.
pub async fn run_metering(
    api: &impl MarketplaceApi,
    customer: &impl CustomerSide,
    id: &SubscriptionId,
    plan: &PlanId,
    dimension: &str,
    now: Timestamp,
) {
    let call = Call::new();
    let hour = |back: i64| hour_of(now) - chrono::Duration::hours(back);
    let event = |resource: &SubscriptionId, dimension: &str, quantity: f64, at: Timestamp| UsageEvent {
        resource_id: resource.clone(),
        quantity,
        dimension: dimension.to_owned(),
        effective_start_time: at,
        plan_id: plan.clone(),
    };
    let nobody = SubscriptionId::parse("00000000-0000-4000-8000-00000000dead").expect("id");

    // A batch is answered item by item, in order.
    let batch = [
        event(id, dimension, 5.0, hour(3)),
        event(id, dimension, 6.0, hour(3)),
        event(id, dimension, 1.0, hour(30)),
        event(id, "no-such-dimension", 1.0, hour(3)),
        event(&nobody, dimension, 1.0, hour(3)),
        event(id, dimension, 0.0, hour(4)),
    ];
    let answer = api.post_usage_events(&batch, &call).await.expect("answered");
    let statuses: Vec<Option<UsageEventStatus>> = answer.result.iter().map(|r| r.status.clone()).collect();
    use UsageEventStatus::*;
    assert_eq!(
        statuses,
        [Accepted, Duplicate, Expired, InvalidDimension, ResourceNotFound, InvalidQuantity].map(Some)
    );
    let accepted = &answer.result[0];
    assert!(accepted.usage_event_id.as_deref().is_some_and(|i| !i.is_empty()), "{accepted:?}");
    assert_eq!((accepted.quantity, accepted.dimension.as_deref()), (Some(5.0), Some(dimension)));
    assert!(answer.result[1..].iter().all(|r| r.error.is_some()), "each refusal says why: {answer:?}");

    // One event: accepted once per resource, dimension and hour; a repeat is the first one.
    let first = api.post_usage_event(&event(id, dimension, 2.5, hour(2)), &call).await.expect("accepted");
    let UsageOutcome::Accepted(first) = first else { panic!("accepted: {first:?}") };
    let again = api.post_usage_event(&event(id, dimension, 9.0, hour(2)), &call).await.expect("answered");
    match again {
        UsageOutcome::Duplicate(Some(earlier)) => {
            assert_eq!((earlier.usage_event_id, earlier.quantity), (first.usage_event_id, Some(2.5)))
        }
        other => panic!("a duplicate with the accepted event: {other:?}"),
    }
    let expired = api.post_usage_event(&event(id, dimension, 1.0, hour(30)), &call).await;
    assert!(matches!(expired, Err(MarketplaceError::BadRequest { .. })), "{expired:?}");
    let future =
        api.post_usage_event(&event(id, dimension, 1.0, now + chrono::Duration::hours(2)), &call).await;
    assert!(matches!(future, Err(MarketplaceError::BadRequest { .. })), "{future:?}");

    // At most 25 to a batch, and at least one.
    let too_many: Vec<UsageEvent> = (0..26).map(|_| event(id, dimension, 1.0, hour(1))).collect();
    assert!(api.post_usage_events(&too_many, &call).await.is_err());
    assert!(api.post_usage_events(&[], &call).await.is_err());

    // Microsoft's record holds what it accepted, once.
    let query = UsageQuery {
        usage_start_date: now - chrono::Duration::days(3),
        usage_end_date: None,
        offer_id: None,
        plan_id: None,
        dimension: None,
    };
    let records = api.get_usage_events(&query, &call).await.expect("the record");
    let mine: Vec<&UsageRecord> =
        records.iter().filter(|r| r.usage_resource_id.as_deref() == Some(id.as_str())).collect();
    let total: f64 = mine.iter().filter_map(|r| r.submitted_quantity).sum();
    let count: u64 = mine.iter().filter_map(|r| r.submitted_count).sum();
    assert_eq!((total, count), (7.5, 2), "{mine:?}");
    assert!(mine.iter().all(|r| r.dimension.as_deref() == Some(dimension) && r.plan_id.as_deref() == Some(plan.as_str())));

    // Only a Subscribed subscription is billed.
    customer.suspend(id).await;
    let answer = api.post_usage_events(&[event(id, dimension, 1.0, hour(1))], &call).await.expect("answered");
    assert_eq!(answer.result[0].status, Some(ResourceNotActive), "{answer:?}");
}
