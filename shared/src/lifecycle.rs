//! The subscription lifecycle as a pure state machine (docs/marketplace-api.md#subscription-lifecycle).
//!
//! Microsoft owns the lifecycle; our record follows it. [`transition`] says what an event does to
//! the status we hold: move it, leave it, or, when the event cannot follow from what we hold
//! (a missed webhook), ask for the truth from Microsoft. The ledger ([`crate::changes`]) adds the
//! ordering: an event older than the last one applied never moves the state back
//! (docs/marketplace-api.md#webhook-delivery).

use crate::domain::{OperationAction, SubscriptionStatus};

/// Something that happened to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// Our Activate call succeeded (or a retry found the subscription already `Subscribed`).
    Activated,
    /// `ChangePlan` completed.
    PlanChanged,
    /// `ChangeQuantity` completed.
    QuantityChanged,
    /// `Renew`: a new term started.
    Renewed,
    /// `Suspend`: payment failed.
    Suspended,
    /// `Reinstate`: payment fixed within the grace period.
    Reinstated,
    /// `Unsubscribe` (or our DELETE completed).
    Unsubscribed,
    /// The notify-only `Subscribe` webhook of the newest docs: activation stays the landing page's.
    SubscribeNotified,
    /// An action this version does not know (`Transfer`, anything new): recorded, nothing applied.
    Unrecognized(String),
    /// Microsoft's own view (Get subscription, resolve, list): the source of truth.
    Observed(SubscriptionStatus),
}

impl LifecycleEvent {
    /// The event a completed operation of this action stands for.
    pub fn from_action(action: &OperationAction) -> Self {
        match action {
            OperationAction::ChangePlan => Self::PlanChanged,
            OperationAction::ChangeQuantity => Self::QuantityChanged,
            OperationAction::Renew => Self::Renewed,
            OperationAction::Suspend => Self::Suspended,
            OperationAction::Reinstate => Self::Reinstated,
            OperationAction::Unsubscribe => Self::Unsubscribed,
            OperationAction::Subscribe => Self::SubscribeNotified,
            OperationAction::Transfer => Self::Unrecognized("Transfer".into()),
            OperationAction::Unknown(raw) => Self::Unrecognized(raw.clone()),
        }
    }
}

/// What an event does to the status we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Apply the event; the record takes this status (possibly the same one, for plan, seats and
    /// renewal, which change other fields).
    Move(SubscriptionStatus),
    /// Already reflected, or notify-only: record the event, change nothing.
    Unchanged,
    /// The event cannot follow from the status we hold, so our record is behind: re-read the
    /// subscription from Microsoft and apply that as [`LifecycleEvent::Observed`].
    Resync,
    /// `Unsubscribed` is final: record the event, never revive the subscription from it.
    Terminal,
    /// Older than the last event applied: record it, do not move the state back.
    Stale,
}

/// What `event` does to a subscription whose status is `from`. Defined for every pair.
pub fn transition(from: &SubscriptionStatus, event: &LifecycleEvent) -> Transition {
    use LifecycleEvent as E;
    use SubscriptionStatus as S;
    use Transition::*;

    match (event, from) {
        // Microsoft's view always wins; equal views change nothing. Unsubscribed is final at
        // Microsoft too, so a view that shows anything else after it is an old one.
        (E::Observed(seen), _) if seen == from => Unchanged,
        (E::Observed(_), S::Unsubscribed) => Terminal,
        (E::Observed(seen), _) => Move(seen.clone()),

        (E::SubscribeNotified | E::Unrecognized(_), _) => Unchanged,

        // Cancellation is possible from every state and is final.
        (E::Unsubscribed, S::Unsubscribed) => Unchanged,
        (E::Unsubscribed, _) => Move(S::Unsubscribed),
        (_, S::Unsubscribed) => Terminal,

        (E::Activated, S::PendingFulfillmentStart | S::NotStarted) => Move(S::Subscribed),
        (E::Activated, S::Subscribed) => Unchanged,

        // Only a Subscribed subscription is updated, renewed or suspended (docs/marketplace-api.md#transitions).
        (E::PlanChanged | E::QuantityChanged | E::Renewed, S::Subscribed) => Move(S::Subscribed),
        (E::Suspended, S::Subscribed) => Move(S::Suspended),
        (E::Suspended, S::Suspended) => Unchanged,

        // Only a Suspended subscription is reinstated.
        (E::Reinstated, S::Suspended) => Move(S::Subscribed),
        (E::Reinstated, S::Subscribed) => Unchanged,

        // Everything else means we missed something (or hold a status we do not know).
        (
            E::Activated | E::PlanChanged | E::QuantityChanged | E::Renewed | E::Suspended | E::Reinstated,
            _,
        ) => Resync,
    }
}
