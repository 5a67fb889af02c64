//! Microsoft's webhook: every change made on its side (plan and seat changes, suspension,
//! reinstatement, renewal, cancellation) arrives here. Confirm it with the Operations API, decide
//! (accept or reject a customer's plan or seat change), apply it exactly once, all inside the
//! 10-second window (reference §4).

use std::time::Instant;

use crate::changes::{Event, Recorded, record_event, record_event_on};
use crate::clock::Clock;
use crate::domain::{
    Operation, OperationAction, OperationStatus, PlanId, RequestSource, Subscription, SubscriptionStatus,
    WebhookPayload,
};
use crate::lifecycle::LifecycleEvent;
use crate::marketplace::{AckStatus, Call, ConfigError, MarketplaceApi, MarketplaceError};
use crate::settings::Environment;
use crate::store::{
    Change, ChangeSource, HistoryEntry, OperationRecord, Outcome, Snapshot, StateWrite, StoreError,
    SubscriptionRecord, SubscriptionStore,
};

/// Which customer plan and seat changes the publisher accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePolicy {
    /// `false` refuses every customer-initiated change.
    pub accept_changes: bool,
    /// Plans a customer may switch to; `None` allows every plan Microsoft offers.
    pub allowed_plans: Option<Vec<PlanId>>,
    pub min_seats: Option<u32>,
    pub max_seats: Option<u32>,
}

impl Default for ChangePolicy {
    fn default() -> Self {
        Self { accept_changes: true, allowed_plans: None, min_seats: None, max_seats: None }
    }
}

impl ChangePolicy {
    /// From `ACCEPT_CUSTOMER_CHANGES`, `ALLOWED_PLANS` (comma-separated), `MIN_SEATS`, `MAX_SEATS`.
    pub fn from_environment(environment: &Environment) -> Result<Self, ConfigError> {
        let seats = |name: &'static str| {
            environment
                .get(name)
                .map(|v| v.parse::<u32>().map_err(|e| ConfigError::Invalid { name, reason: e.to_string() }))
                .transpose()
        };
        Ok(Self {
            accept_changes: environment.flag("ACCEPT_CUSTOMER_CHANGES", true)?,
            allowed_plans: environment
                .get("ALLOWED_PLANS")
                .map(|plans| plans.split(',').filter_map(PlanId::parse).collect()),
            min_seats: seats("MIN_SEATS")?,
            max_seats: seats("MAX_SEATS")?,
        })
    }

    /// `Err(reason)` when the change to `plan`/`seats` is refused.
    pub fn judge(&self, plan: Option<&PlanId>, seats: Option<u32>) -> Result<(), String> {
        if !self.accept_changes {
            return Err("customer changes are not accepted".into());
        }
        if let (Some(allowed), Some(plan)) = (&self.allowed_plans, plan)
            && !allowed.contains(plan)
        {
            return Err(format!("plan {plan} is not offered"));
        }
        if let Some(seats) = seats
            && (self.min_seats.is_some_and(|min| seats < min)
                || self.max_seats.is_some_and(|max| seats > max))
        {
            return Err(format!("{seats} seats are outside the allowed range"));
        }
        Ok(())
    }
}

/// What happened to a delivery; each maps to one HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Recorded (and applied, when it changed something): 200.
    Recorded,
    /// This operation was recorded before: 200, nothing changed.
    Duplicate,
    /// A customer's plan or seat change we refused (and told Microsoft): 4xx.
    Rejected(String),
    /// The delivery does not match what Microsoft says happened: 4xx.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Microsoft could not confirm in time or failed: answer 5xx, Microsoft retries.
    #[error("the marketplace could not be consulted")]
    Marketplace(#[source] MarketplaceError),
    #[error("the subscription store failed")]
    Store(#[from] StoreError),
}

/// Handles webhook deliveries over the store, the Marketplace API and the clock.
pub struct Webhook<S, M, C> {
    store: S,
    marketplace: M,
    clock: C,
    policy: ChangePolicy,
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> Webhook<S, M, C> {
    pub fn new(store: S, marketplace: M, clock: C, policy: ChangePolicy) -> Self {
        Self { store, marketplace, clock, policy }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one authenticated delivery; everything must be over by `deadline`.
    pub async fn handle(&self, payload: &WebhookPayload, deadline: Instant) -> Result<Handled, WebhookError> {
        let delivered = &payload.operation;
        let (subscription_id, operation_id) = (&delivered.subscription_id, &delivered.id);
        let call = Call::correlated(operation_id.as_str()).until(deadline);
        if self.store.operation(subscription_id, operation_id).await?.is_some() {
            tracing::info!(%subscription_id, %operation_id, "duplicate delivery");
            return Ok(Handled::Duplicate);
        }
        let action = delivered.action.clone().unwrap_or_else(|| OperationAction::Unknown(String::new()));
        let ackable = matches!(action, OperationAction::ChangePlan | OperationAction::ChangeQuantity);

        // Confirm with Microsoft (reference §4.6); its operation is the source of truth.
        let confirmed = match self.marketplace.get_operation(subscription_id, operation_id, &call).await {
            Ok(operation) => {
                if let Err(mismatch) = matches(delivered, &operation) {
                    tracing::warn!(%subscription_id, %operation_id, %mismatch, "delivery does not match Microsoft's operation");
                    return Ok(Handled::Refused(mismatch));
                }
                Some(operation)
            }
            Err(MarketplaceError::NotFound { .. }) if ackable => {
                tracing::warn!(%subscription_id, %operation_id, "Microsoft knows no such operation");
                return Ok(Handled::Refused("Microsoft knows no such operation".into()));
            }
            // Some notify-only actions have no operation: act on the subscription instead.
            Err(MarketplaceError::NotFound { .. }) => None,
            Err(error) => return Err(WebhookError::Marketplace(error)),
        };
        let operation = merged(delivered, confirmed.as_ref());
        tracing::info!(
            %subscription_id,
            %operation_id,
            action = %action,
            source = ?operation.operation_request_source,
            status = ?operation.status,
            "webhook confirmed"
        );
        if ackable {
            self.change(payload, &operation, &call).await
        } else {
            self.notification(payload, &operation, &call).await
        }
    }

    /// `ChangePlan` / `ChangeQuantity`: from the customer, judged by the policy and acknowledged;
    /// from the publisher (or already final at Microsoft), applied.
    async fn change(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        call: &Call,
    ) -> Result<Handled, WebhookError> {
        let id = &operation.subscription_id;
        let stored = self.store.get(id).await?;
        let before = match &stored {
            Some(record) => record.subscription.clone(),
            None => self.subscription(id, payload, call).await?,
        };
        let mut after = before.clone();
        let lifecycle = match operation.action {
            Some(OperationAction::ChangePlan) => {
                after.plan_id = operation.plan_id.clone().or(after.plan_id);
                LifecycleEvent::PlanChanged
            }
            _ => {
                after.quantity = operation.quantity.or(after.quantity);
                LifecycleEvent::QuantityChanged
            }
        };
        let from_customer = operation.operation_request_source != Some(RequestSource::Partner);
        match &operation.status {
            Some(OperationStatus::Failed | OperationStatus::Conflict) => {
                let note = "the change did not happen at Microsoft";
                return self.keep(payload, operation, &before, Outcome::Unchanged, note).await;
            }
            Some(OperationStatus::InProgress | OperationStatus::NotStarted) | None if from_customer => {
                // The plan list limits plan changes only; seat bounds limit seat changes.
                let judged = match operation.action {
                    Some(OperationAction::ChangePlan) => (after.plan_id.as_ref(), None),
                    _ => (None, after.quantity),
                };
                // Already what Microsoft shows ("revert"): accept, never reject (reference §4.3).
                let revert = after == before;
                if let (false, Err(reason)) = (revert, self.policy.judge(judged.0, judged.1)) {
                    return self.reject(payload, operation, &before, reason, call).await;
                }
                self.apply_on(payload, operation, lifecycle, after, stored).await?;
                match self.acknowledge(operation, AckStatus::Success, call).await? {
                    Acknowledged::Done | Acknowledged::AlreadyDecided(OperationStatus::Succeeded) => {}
                    Acknowledged::AlreadyDecided(other) => {
                        tracing::warn!(subscription_id = %id, status = %other, "accepted too late: Microsoft decided otherwise");
                        self.resync(payload, call).await?;
                    }
                }
                Ok(Handled::Recorded)
            }
            _ => {
                // Done at Microsoft (the publisher's own change, or already decided): its view now
                // has everything the change moved (a new plan can bring a new term).
                let mut now = self.subscription(id, payload, call).await?;
                if now.plan_id != after.plan_id || now.quantity != after.quantity {
                    tracing::warn!(subscription_id = %id, "Microsoft's view differs from the operation; keeping Microsoft's");
                }
                now.status = now.status.or(after.status);
                // Re-read: our record may have changed during the call to Microsoft.
                self.apply(payload, operation, lifecycle, now).await?;
                Ok(Handled::Recorded)
            }
        }
    }

    /// Refuses a customer's change: tell Microsoft (`Failure`), record it, keep plan and seats.
    async fn reject(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        before: &Subscription,
        reason: String,
        call: &Call,
    ) -> Result<Handled, WebhookError> {
        tracing::info!(subscription_id = %operation.subscription_id, operation_id = %operation.id, %reason, "rejecting the change");
        let acknowledged = match self.acknowledge(operation, AckStatus::Failure, call).await {
            Ok(acknowledged) => acknowledged,
            // Our 4xx inside the window is itself the rejection (reference §4.4): answer it.
            Err(error) => {
                tracing::warn!(subscription_id = %operation.subscription_id, error = %error, "Failure not acknowledged; rejecting by the answer");
                Acknowledged::Done
            }
        };
        match acknowledged {
            Acknowledged::Done | Acknowledged::AlreadyDecided(OperationStatus::Failed) => {
                if let Err(error) = self.keep(payload, operation, before, Outcome::Rejected, &reason).await {
                    // Still a rejection: Microsoft keeps the old plan and seats either way.
                    tracing::error!(subscription_id = %operation.subscription_id, error = %error, "refusal not recorded");
                }
                Ok(Handled::Rejected(reason))
            }
            // Too late: Microsoft already accepted it (the 10 seconds had passed). Follow Microsoft.
            Acknowledged::AlreadyDecided(status) => {
                tracing::warn!(subscription_id = %operation.subscription_id, %status, "rejection came too late");
                self.resync(payload, call).await?;
                Ok(Handled::Recorded)
            }
        }
    }

    /// Notify-only actions: Microsoft already changed the subscription; record what it says now.
    async fn notification(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        call: &Call,
    ) -> Result<Handled, WebhookError> {
        let now = self.subscription(&operation.subscription_id, payload, call).await?;
        let action = operation.action.clone().unwrap_or_else(|| OperationAction::Unknown(String::new()));
        let mut lifecycle = LifecycleEvent::from_action(&action);
        let expected = match lifecycle {
            LifecycleEvent::Suspended => Some(SubscriptionStatus::Suspended),
            LifecycleEvent::Reinstated | LifecycleEvent::Renewed => Some(SubscriptionStatus::Subscribed),
            LifecycleEvent::Unsubscribed => Some(SubscriptionStatus::Unsubscribed),
            _ => None,
        };
        // A delayed event whose effect Microsoft has since undone: store what Microsoft says.
        if expected.is_some() && expected != now.status {
            let status = now.status.clone().unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()));
            lifecycle = LifecycleEvent::Observed(status);
        }
        self.apply(payload, operation, lifecycle, now).await?;
        Ok(Handled::Recorded)
    }

    async fn apply(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        lifecycle: LifecycleEvent,
        after: Subscription,
    ) -> Result<(), WebhookError> {
        let stored = self.store.get(&operation.subscription_id).await?;
        self.apply_on(payload, operation, lifecycle, after, stored).await
    }

    /// Applies the event to `stored`, our record as just read (re-read if another writer got in).
    async fn apply_on(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        lifecycle: LifecycleEvent,
        after: Subscription,
        stored: Option<SubscriptionRecord>,
    ) -> Result<(), WebhookError> {
        let event = self.event(payload, operation, lifecycle, after);
        match record_event_on(&self.store, &event, self.clock.now(), stored).await? {
            Recorded::Resync => {
                // The event cannot follow from our record (a missed webhook): store Microsoft's view.
                let status =
                    event.after.status.clone().unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()));
                let observed = Event { lifecycle: LifecycleEvent::Observed(status), ..event };
                record_event(&self.store, &observed, self.clock.now()).await?;
            }
            Recorded::Written { .. } | Recorded::Duplicate | Recorded::Nothing => {}
        }
        Ok(())
    }

    /// Records the delivery without changing the state (rejected, or failed at Microsoft).
    async fn keep(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        before: &Subscription,
        outcome: Outcome,
        detail: &str,
    ) -> Result<Handled, WebhookError> {
        let now = self.clock.now();
        let version = self.store.get(&operation.subscription_id).await?.map_or(0, |r| r.version);
        let event =
            self.event(payload, operation, LifecycleEvent::Unrecognized(String::new()), before.clone());
        let change = Change {
            operation: OperationRecord {
                id: event.operation_id.clone(),
                action: event.action.clone(),
                requested_by: event.requested_by.clone(),
                status: event.operation_status.clone(),
                occurred_at: event.occurred_at,
                recorded_at: now,
                outcome: outcome.clone(),
            },
            state: StateWrite::Keep,
            history: HistoryEntry {
                subscription_id: operation.subscription_id.clone(),
                operation_id: operation.id.clone(),
                at: now,
                source: ChangeSource::Webhook,
                event: operation.action.as_ref().map_or_else(String::new, |a| a.to_string()),
                outcome,
                from: Some(Snapshot::from(before)),
                to: None,
                version,
                detail: Some(detail.to_owned()),
            },
        };
        self.store.apply(&change).await?;
        Ok(Handled::Recorded)
    }

    /// Records Microsoft's current view under this delivery's operation id.
    async fn resync(&self, payload: &WebhookPayload, call: &Call) -> Result<(), WebhookError> {
        let id = &payload.operation.subscription_id;
        let now = self.subscription(id, payload, call).await?;
        let status = now.status.clone().unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()));
        // Under its own key: the delivery's own id may already be recorded (applied before the ACK).
        let mut operation = payload.operation.clone();
        operation.id =
            crate::domain::OperationId::parse(&format!("{}-resync", operation.id)).expect("not empty");
        self.apply(payload, &operation, LifecycleEvent::Observed(status), now).await
    }

    /// Microsoft's view of the subscription now (reference §2.4: the source of truth).
    async fn subscription(
        &self,
        id: &crate::domain::SubscriptionId,
        payload: &WebhookPayload,
        call: &Call,
    ) -> Result<Subscription, WebhookError> {
        match self.marketplace.get_subscription(id, call).await {
            Ok(subscription) => Ok(subscription),
            // Not retryable and not found: the payload's own snapshot is all there is.
            Err(MarketplaceError::NotFound { .. }) if payload.subscription.is_some() => {
                Ok(payload.subscription.clone().expect("checked"))
            }
            Err(error) => Err(WebhookError::Marketplace(error)),
        }
    }

    async fn acknowledge(
        &self,
        operation: &Operation,
        status: AckStatus,
        call: &Call,
    ) -> Result<Acknowledged, WebhookError> {
        let (id, op) = (&operation.subscription_id, &operation.id);
        match self.marketplace.update_operation_status(id, op, status, call).await {
            Ok(()) => Ok(Acknowledged::Done),
            // Already decided (acknowledged before, or auto-accepted after 10 seconds).
            Err(MarketplaceError::Conflict { .. }) => {
                let now =
                    self.marketplace.get_operation(id, op, call).await.map_err(WebhookError::Marketplace)?;
                Ok(Acknowledged::AlreadyDecided(
                    now.status.unwrap_or(OperationStatus::Unknown(String::new())),
                ))
            }
            Err(error) => Err(WebhookError::Marketplace(error)),
        }
    }

    fn event(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        lifecycle: LifecycleEvent,
        after: Subscription,
    ) -> Event {
        Event {
            operation_id: operation.id.clone(),
            lifecycle,
            source: ChangeSource::Webhook,
            action: operation.action.clone(),
            requested_by: operation.operation_request_source.clone(),
            operation_status: operation.status.clone(),
            // The delivery's time orders events; Microsoft's operation time when it has none.
            occurred_at: payload.operation.time_stamp.or(operation.time_stamp),
            after,
            record_if_unchanged: true,
        }
    }
}

enum Acknowledged {
    Done,
    AlreadyDecided(OperationStatus),
}

/// The delivery must name Microsoft's operation: same id, subscription and action.
fn matches(delivered: &Operation, confirmed: &Operation) -> Result<(), String> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if !same(delivered.id.as_str(), confirmed.id.as_str()) {
        return Err(format!("operation {} is not {}", confirmed.id, delivered.id));
    }
    if !same(delivered.subscription_id.as_str(), confirmed.subscription_id.as_str()) {
        return Err(format!(
            "operation {} belongs to subscription {}",
            confirmed.id, confirmed.subscription_id
        ));
    }
    if let (Some(a), Some(b)) = (&delivered.action, &confirmed.action)
        && a != b
    {
        return Err(format!("operation {} is a {b}, not a {a}", confirmed.id));
    }
    Ok(())
}

/// Microsoft's operation, with the delivery's values where Microsoft's are missing.
fn merged(delivered: &Operation, confirmed: Option<&Operation>) -> Operation {
    let Some(confirmed) = confirmed else { return delivered.clone() };
    Operation {
        action: confirmed.action.clone().or(delivered.action.clone()),
        plan_id: confirmed.plan_id.clone().or(delivered.plan_id.clone()),
        quantity: confirmed.quantity.or(delivered.quantity),
        time_stamp: confirmed.time_stamp.or(delivered.time_stamp),
        status: confirmed.status.clone().or(delivered.status.clone()),
        operation_request_source: confirmed
            .operation_request_source
            .clone()
            .or(delivered.operation_request_source.clone()),
        ..confirmed.clone()
    }
}
