//! Subscriptions and events for tests.

use chrono::{DateTime, Utc};
use fulfillment::changes::{Event, Seen};
use fulfillment::domain::{
    AadIdentifier, CustomerOperation, OperationId, PlanId, Subscription, SubscriptionId, SubscriptionStatus,
};
use fulfillment::lifecycle::LifecycleEvent;
use fulfillment::store::ChangeSource;

/// A fresh GUID-shaped id.
pub fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A per-seat subscription bought directly by its beneficiary tenant.
pub fn subscription(status: SubscriptionStatus, tenant: &str) -> Subscription {
    let mut s = Subscription::new(SubscriptionId::parse(&guid()).expect("a guid is not empty"));
    s.publisher_id = Some("contoso".into());
    s.offer_id = Some("contoso-saas".into());
    s.name = Some("Fabrikam production".into());
    s.status = Some(status);
    s.plan_id = PlanId::parse("team-monthly");
    s.quantity = Some(10);
    s.beneficiary = Some(AadIdentifier {
        email_id: Some("ops@fabrikam.example".into()),
        object_id: Some(guid()),
        tenant_id: Some(tenant.into()),
        puid: None,
    });
    s.purchaser = s.beneficiary.clone();
    s.allowed_customer_operations =
        vec![CustomerOperation::Read, CustomerOperation::Update, CustomerOperation::Delete];
    s
}

/// An event with a new operation id.
pub fn event(
    lifecycle: LifecycleEvent,
    source: ChangeSource,
    after: Subscription,
    occurred_at: Option<DateTime<Utc>>,
) -> Event {
    // Microsoft's view, read when it happened (or now).
    let as_of = occurred_at.unwrap_or_else(Utc::now);
    Event {
        subscription_id: after.id.clone(),
        operation_id: OperationId::parse(&guid()).expect("a guid is not empty"),
        lifecycle,
        source,
        action: None,
        requested_by: None,
        operation_status: None,
        occurred_at,
        seen: Seen::View { subscription: after, as_of },
        record_if_unchanged: false,
    }
}
