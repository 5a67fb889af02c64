//! Lifecycle events for the publisher's product (docs/events.md): one event per applied change,
//! made from the history entries the table's DynamoDB stream carries, so that an event exists
//! exactly when its change was committed, with no second write in any request path.
//!
//! [`SubscriptionEvent::from_history`] decides which entries are events and of which type;
//! [`stream`] reads Lambda's stream batches; [`relay`] publishes them on a [`bus::EventBus`]
//! (Amazon EventBridge when deployed).

pub mod bus;
pub mod relay;
pub mod stream;

use serde::{Deserialize, Serialize};

use crate::domain::{OperationId, PlanId, SubscriptionId, SubscriptionStatus, Timestamp};
use crate::lifecycle::LifecycleEvent;
use crate::store::{ChangeSource, HistoryEntry, Outcome, Snapshot};

/// The version of the event's `detail` (docs/events.md#versioning): a new optional field keeps it,
/// anything a consumer could break on raises it.
pub const SCHEMA_VERSION: &str = "1";

/// The EventBridge `source` of every event.
pub const EVENT_SOURCE: &str = "saas-fulfillment";

/// The event's EventBridge `detail-type`: what happened to the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Recorded for the first time, waiting for activation (`PendingFulfillmentStart`): the buyer
    /// is not billed yet.
    SubscriptionPurchased,
    /// Active and billed: activated by us, auto-activated by Microsoft, or first seen active.
    SubscriptionActivated,
    PlanChanged,
    SeatsChanged,
    /// Payment failed: block access, keep the data.
    SubscriptionSuspended,
    /// Payment fixed: restore access.
    SubscriptionReinstated,
    /// A new term started.
    SubscriptionRenewed,
    /// Cancelled for good: schedule deletion (keep the data for 7 days at least).
    SubscriptionUnsubscribed,
    /// Another field an event carries changed (the offer, a tenant, the term other than by a
    /// renewal: a plan change's new term, read after the change), told by a webhook or a landing
    /// visit.
    SubscriptionUpdated,
    /// The same, found by the reconciliation: our record differed from Microsoft's there (a
    /// status, plan or seat change it repairs has its own type).
    DriftRepaired,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        Self::SubscriptionPurchased,
        Self::SubscriptionActivated,
        Self::PlanChanged,
        Self::SeatsChanged,
        Self::SubscriptionSuspended,
        Self::SubscriptionReinstated,
        Self::SubscriptionRenewed,
        Self::SubscriptionUnsubscribed,
        Self::SubscriptionUpdated,
        Self::DriftRepaired,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SubscriptionPurchased => "SubscriptionPurchased",
            Self::SubscriptionActivated => "SubscriptionActivated",
            Self::PlanChanged => "PlanChanged",
            Self::SeatsChanged => "SeatsChanged",
            Self::SubscriptionSuspended => "SubscriptionSuspended",
            Self::SubscriptionReinstated => "SubscriptionReinstated",
            Self::SubscriptionRenewed => "SubscriptionRenewed",
            Self::SubscriptionUnsubscribed => "SubscriptionUnsubscribed",
            Self::SubscriptionUpdated => "SubscriptionUpdated",
            Self::DriftRepaired => "DriftRepaired",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's `detail` (docs/events/subscription-event.schema.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionEvent {
    pub schema_version: String,
    /// The same for every delivery of this event: the key to deduplicate on.
    pub event_id: String,
    pub event_type: EventType,
    pub subscription_id: SubscriptionId,
    pub offer_id: Option<String>,
    /// After the change.
    pub plan_id: Option<PlanId>,
    /// After the change (`quantity`); `null` for a plan without seats.
    pub seats: Option<u32>,
    pub beneficiary_tenant_id: Option<String>,
    pub purchaser_tenant_id: Option<String>,
    /// `null` when the subscription was recorded for the first time.
    pub status_before: Option<SubscriptionStatus>,
    pub status_after: Option<SubscriptionStatus>,
    pub plan_before: Option<PlanId>,
    pub seats_before: Option<u32>,
    pub term_start: Option<Timestamp>,
    pub term_end: Option<Timestamp>,
    /// The operation (Microsoft's, or ours for a landing visit or a reconciliation) that made it.
    pub operation_id: OperationId,
    /// Which flow recorded it.
    pub source: ChangeSource,
    /// The record's version after the change: it orders one subscription's events.
    pub version: u64,
    /// When the change was committed.
    pub committed_at: Timestamp,
}

impl SubscriptionEvent {
    /// The event a history entry stands for: `None` unless it changed what an event tells (a
    /// change of Microsoft's `lastModified`, the name or auto-renewal alone is none: a product
    /// has nothing to do about it).
    pub fn from_history(entry: &HistoryEntry) -> Option<Self> {
        if entry.outcome != Outcome::Applied {
            return None;
        }
        let after = entry.to.as_ref()?;
        let before = entry.from.as_ref();
        if before == Some(after) {
            return None;
        }
        Some(Self {
            schema_version: SCHEMA_VERSION.to_owned(),
            event_id: event_id(&entry.subscription_id, entry.version),
            event_type: classify(before, after, entry),
            subscription_id: entry.subscription_id.clone(),
            offer_id: after.offer_id.clone(),
            plan_id: after.plan_id.clone(),
            seats: after.quantity,
            beneficiary_tenant_id: after.beneficiary_tenant_id.clone(),
            purchaser_tenant_id: after.purchaser_tenant_id.clone(),
            status_before: before.and_then(|b| b.status.clone()),
            status_after: after.status.clone(),
            plan_before: before.and_then(|b| b.plan_id.clone()),
            seats_before: before.and_then(|b| b.quantity),
            term_start: after.term_start,
            term_end: after.term_end,
            operation_id: entry.operation_id.clone(),
            source: entry.source.clone(),
            version: entry.version,
            committed_at: entry.at,
        })
    }
}

/// A UUID derived from the subscription and the version the change made (each applied change
/// makes a new version): the same however often the stream delivers the entry.
fn event_id(subscription_id: &SubscriptionId, version: u64) -> String {
    // A fixed namespace of our own (a random UUID, chosen once).
    const NAMESPACE: uuid::Uuid = uuid::uuid!("6f3a0d52-8c1e-4b7a-9e45-2d1c0b9a7e31");
    uuid::Uuid::new_v5(&NAMESPACE, format!("{subscription_id}/{version}").as_bytes()).to_string()
}

/// A new term that starts where the old one ended (or later): a renewal, not a plan change's new
/// term nor a first term filled in.
fn renewed(before: &Snapshot, after: &Snapshot) -> bool {
    match (before.term_end, after.term_start) {
        (Some(ended), Some(started)) => started >= ended && after.term_end > before.term_end,
        _ => false,
    }
}

/// The type of a change: the status it moved first, then plan, seats and term; other fields last.
fn classify(before: Option<&Snapshot>, after: &Snapshot, entry: &HistoryEntry) -> EventType {
    use EventType as T;
    use SubscriptionStatus as S;
    let status_before = before.and_then(|b| b.status.as_ref());
    let status_after = after.status.as_ref();
    if status_before != status_after {
        match (status_before, status_after) {
            (_, Some(S::Unsubscribed)) => return T::SubscriptionUnsubscribed,
            (_, Some(S::Suspended)) => return T::SubscriptionSuspended,
            (Some(S::Suspended), Some(S::Subscribed)) => return T::SubscriptionReinstated,
            (_, Some(S::Subscribed)) => return T::SubscriptionActivated,
            (None, Some(S::PendingFulfillmentStart | S::NotStarted)) => return T::SubscriptionPurchased,
            // A status this version does not know, or a move back to pending: other fields below.
            _ => {}
        }
    }
    let Some(before) = before else {
        return T::SubscriptionPurchased;
    };
    if before.plan_id != after.plan_id {
        T::PlanChanged
    } else if before.quantity != after.quantity {
        T::SeatsChanged
    } else if entry.event == crate::changes::describe(&LifecycleEvent::Renewed) || renewed(before, after) {
        T::SubscriptionRenewed
    } else if entry.source == ChangeSource::Reconcile {
        T::DriftRepaired
    } else {
        T::SubscriptionUpdated
    }
}
