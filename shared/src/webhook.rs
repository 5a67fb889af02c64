//! Microsoft's webhook: every change made on its side (plan and seat changes, suspension,
//! reinstatement, renewal, cancellation) arrives here. Confirm it with the Operations API, decide
//! (accept or reject a customer's plan or seat change), apply it exactly once, all inside the
//! 10-second window (docs/marketplace-api.md#webhook).

use std::time::{Duration, Instant};

use crate::changes::{Effect, Event, Seen, record_event, record_event_on, record_kept};
use crate::clock::Clock;
use crate::domain::{
    Operation, OperationAction, OperationId, OperationStatus, PlanId, RequestSource, Subscription,
    SubscriptionId, SubscriptionStatus, WebhookPayload,
};
use crate::lifecycle::LifecycleEvent;
use crate::marketplace::{AckStatus, Call, MarketplaceApi, MarketplaceError};
use crate::store::{
    ChangeSource, Outcome, RejectedDelivery, StoreError, SubscriptionRecord, SubscriptionStore,
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
    /// A customer's plan or seat change we refused (and told Microsoft): 4xx. A redelivery of a
    /// refused change is refused again.
    Rejected(String),
    /// The delivery does not match what Microsoft says happened, or contradicts itself: 4xx.
    Mismatched(String),
    /// Microsoft confirms neither the operation nor the subscription: no record changed; the
    /// delivery is kept aside for investigation and answered 200 (asking again cannot change
    /// Microsoft's answer; the reconciliation picks up whatever Microsoft does list).
    KeptAside(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Microsoft could not confirm in time or failed: answer 5xx, Microsoft retries.
    #[error("the marketplace could not be consulted")]
    Marketplace(#[source] MarketplaceError),
    /// The operation is not final at Microsoft yet: answer 5xx so that Microsoft delivers it again.
    #[error("operation {0} is still in progress at Microsoft")]
    NotFinal(OperationId),
    #[error("the subscription store failed")]
    Store(#[from] StoreError),
    /// Microsoft answered 400 for a plan or seat change's operation, which it has been seen to do
    /// in passing: the customer is not refused on it; answer 5xx, Microsoft delivers again.
    #[error("Microsoft could not confirm operation {operation_id} now")]
    Unconfirmed {
        operation_id: OperationId,
        #[source]
        source: MarketplaceError,
    },
}

impl WebhookError {
    /// Whether a redelivery may succeed as things are (503), rather than only after someone fixes
    /// something on our side (500). Microsoft delivers again after either.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Marketplace(error) => error.is_retryable(),
            Self::NotFinal(_) | Self::Unconfirmed { .. } => true,
            Self::Store(error) => error.is_retryable(),
        }
    }
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

    pub fn marketplace(&self) -> &M {
        &self.marketplace
    }

    /// Handles one authenticated delivery; everything must be over by `deadline`.
    ///
    /// Only what Microsoft confirms becomes state: the operation as Get operation returns it, the
    /// subscription as Get subscription returns it. The payload only says where to look.
    pub async fn handle(&self, payload: &WebhookPayload, deadline: Instant) -> Result<Handled, WebhookError> {
        let delivered = &payload.operation;
        let (subscription_id, operation_id) = (&delivered.subscription_id, &delivered.id);
        if let Some(snapshot) = &payload.subscription
            && snapshot.id != *subscription_id
        {
            let reason = format!("subscription.id {} is not subscriptionId {subscription_id}", snapshot.id);
            tracing::warn!(%subscription_id, %operation_id, %reason, "delivery contradicts itself");
            return Ok(Handled::Mismatched(reason));
        }
        let call = Call::correlated(operation_id.as_str()).until(deadline);
        if let Some(recorded) = self.store.operation(subscription_id, operation_id).await? {
            tracing::info!(%subscription_id, %operation_id, outcome = %recorded.outcome, "duplicate delivery");
            // Microsoft asks again when it did not get our answer: a refusal is repeated.
            return Ok(match recorded.outcome {
                Outcome::Rejected => Handled::Rejected("the change was refused before".to_owned()),
                _ => Handled::Duplicate,
            });
        }
        let action = delivered.action.clone().unwrap_or_else(|| OperationAction::Unknown(String::new()));
        let ackable = matches!(action, OperationAction::ChangePlan | OperationAction::ChangeQuantity);

        // Confirm with Microsoft (docs/marketplace-api.md#webhook-confirmation); its operation is the source of truth.
        let confirmed = match self.marketplace.get_operation(subscription_id, operation_id, &call).await {
            Ok(operation) => {
                if let Err(mismatch) = matches(delivered, &operation) {
                    tracing::warn!(%subscription_id, %operation_id, %mismatch, "delivery does not match Microsoft's operation");
                    return Ok(Handled::Mismatched(mismatch));
                }
                Some(operation)
            }
            Err(MarketplaceError::NotFound { .. }) if ackable => {
                tracing::warn!(%subscription_id, %operation_id, "Microsoft knows no such operation");
                return Ok(Handled::Mismatched("Microsoft knows no such operation".into()));
            }
            // Some notify-only actions have no operation (404, or 400 from the real service): act
            // on Microsoft's view of the subscription instead.
            Err(MarketplaceError::NotFound { .. } | MarketplaceError::BadRequest { .. }) if !ackable => None,
            // A 400 for a change may be passing: never refuse a customer on it; Microsoft retries.
            Err(source @ MarketplaceError::BadRequest { .. }) => {
                return Err(WebhookError::Unconfirmed { operation_id: operation_id.clone(), source });
            }
            Err(error) => return Err(WebhookError::Marketplace(error)),
        };
        tracing::info!(
            %subscription_id,
            %operation_id,
            action = %action,
            source = ?confirmed.as_ref().and_then(|o| o.operation_request_source.as_ref()),
            status = ?confirmed.as_ref().and_then(|o| o.status.as_ref()),
            "webhook confirmed"
        );
        // Microsoft's action decides the path; the delivery's only where Microsoft's operation has none.
        let action = confirmed.as_ref().and_then(|o| o.action.clone()).unwrap_or(action);
        match confirmed {
            Some(operation)
                if matches!(action, OperationAction::ChangePlan | OperationAction::ChangeQuantity) =>
            {
                self.change(payload, &operation, action, &call).await
            }
            confirmed => self.notification(payload, confirmed.as_ref(), &call).await,
        }
    }

    /// `ChangePlan` / `ChangeQuantity`: from the customer, judged by the policy and acknowledged;
    /// from the publisher (or already final at Microsoft), applied from Microsoft's view.
    async fn change(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        action: OperationAction,
        call: &Call,
    ) -> Result<Handled, WebhookError> {
        let id = &operation.subscription_id;
        let is_plan = action == OperationAction::ChangePlan;
        let stored = self.store.get(id).await?;
        // The publisher's own change is never judged.
        let from_customer = !publishers_own(payload, operation, stored.as_ref());
        match &operation.status {
            Some(OperationStatus::Failed | OperationStatus::Conflict) => {
                let note = "the change did not happen at Microsoft";
                self.keep(payload, operation, Outcome::Unchanged, note).await?;
                Ok(Handled::Recorded)
            }
            Some(OperationStatus::InProgress | OperationStatus::NotStarted) | None if from_customer => {
                let before = match &stored {
                    Some(record) => record.subscription.clone(),
                    None => self.view(id, call).await?.0,
                };
                // Judged on Microsoft's values; the delivery's only where Microsoft's operation
                // has none yet (they never become state: see below).
                let (plan, seats) = if is_plan {
                    (operation.plan_id.clone().or(payload.operation.plan_id.clone()), None)
                } else {
                    (None, operation.quantity.or(payload.operation.quantity))
                };
                // Already what Microsoft shows ("revert"): accept, never reject (docs/marketplace-api.md#webhook-actions).
                let revert = (is_plan && plan.is_some() && plan == before.plan_id)
                    || (!is_plan && seats.is_some() && seats == before.quantity);
                if let (false, Err(reason)) = (revert, self.policy.judge(plan.as_ref(), seats)) {
                    return self.reject(payload, operation, reason, call).await;
                }
                let confirmed_delta = if is_plan {
                    operation
                        .plan_id
                        .clone()
                        .map(|plan_id| Seen::Delta { plan_id: Some(plan_id), quantity: None })
                } else {
                    operation.quantity.map(|quantity| Seen::Delta { plan_id: None, quantity: Some(quantity) })
                };
                // Recorded before the answer (a 200 is a receipt); when the change cannot be applied
                // onto our record, or Microsoft's operation does not say the new value, Microsoft's
                // view is recorded instead, once it has applied the change.
                let recorded = match confirmed_delta {
                    Some(seen) => {
                        let lifecycle = if is_plan {
                            LifecycleEvent::PlanChanged
                        } else {
                            LifecycleEvent::QuantityChanged
                        };
                        self.record(payload, operation, lifecycle, seen, stored).await?
                    }
                    None => false,
                };
                let acknowledged = self.acknowledge(operation, AckStatus::Success, call).await?;
                match acknowledged {
                    Acknowledged::Done | Acknowledged::AlreadyDecided(OperationStatus::Succeeded)
                        if recorded => {}
                    Acknowledged::Done | Acknowledged::AlreadyDecided(OperationStatus::Succeeded) => {
                        self.observe_as(payload, operation, operation.id.clone(), call).await?;
                    }
                    Acknowledged::AlreadyDecided(other) => {
                        tracing::warn!(subscription_id = %id, status = %other, "accepted too late: Microsoft decided otherwise");
                        self.resync(payload, operation, call).await?;
                    }
                }
                Ok(Handled::Recorded)
            }
            Some(OperationStatus::Succeeded) => {
                // Done at Microsoft (the publisher's own change, or already decided): its view now
                // has everything the change moved (a new plan can bring a new term).
                self.observe_as(payload, operation, operation.id.clone(), call).await?;
                Ok(Handled::Recorded)
            }
            // The publisher's own change before Microsoft finished it: its view still shows the old
            // plan. Kept apart from the operation, which the reconciliation (or a later delivery)
            // completes.
            _ => self.early(payload, operation).await,
        }
    }

    /// Refuses a customer's change: tell Microsoft (`Failure`), record it, keep plan and seats.
    async fn reject(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        reason: String,
        call: &Call,
    ) -> Result<Handled, WebhookError> {
        let (id, operation_id) = (&operation.subscription_id, &operation.id);
        tracing::info!(subscription_id = %id, %operation_id, %reason, "rejecting the change");
        // Decided: the answer must leave within the window whatever follows, or Microsoft takes
        // the silence as a failed delivery and accepts the change. Telling it, recording the
        // refusal and checking it held all end a little before the call's deadline.
        let answer_by = call.deadline.and_then(|deadline| deadline.checked_sub(REFUSAL_ANSWER_RESERVE));
        let ack_call = match answer_by {
            Some(at) => call.clone().until(at),
            None => call.clone(),
        };
        let acknowledged = match self.acknowledge(operation, AckStatus::Failure, &ack_call).await {
            Ok(acknowledged) => acknowledged,
            // Our 4xx inside the window is itself the rejection (docs/marketplace-api.md#webhook-responses): answer it.
            Err(error) => {
                tracing::warn!(subscription_id = %id, error = %crate::error_chain(&error), "Failure not acknowledged; rejecting by the answer");
                Acknowledged::Done
            }
        };
        match acknowledged {
            Acknowledged::Done | Acknowledged::AlreadyDecided(OperationStatus::Failed) => {
                let follow_up = self.after_refusal(payload, operation, &reason, &ack_call);
                match answer_by {
                    Some(at) => {
                        if tokio::time::timeout_at(at.into(), follow_up).await.is_err() {
                            tracing::warn!(subscription_id = %id, %operation_id, "the refusal is answered before it was recorded; the reconciliation checks it held");
                        }
                    }
                    None => follow_up.await,
                }
                Ok(Handled::Rejected(reason))
            }
            // Too late: Microsoft already accepted it (the 10 seconds had passed). Follow Microsoft.
            Acknowledged::AlreadyDecided(status) => {
                tracing::warn!(subscription_id = %id, %status, "rejection came too late");
                self.resync(payload, operation, call).await?;
                Ok(Handled::Recorded)
            }
        }
    }

    /// What follows a refusal: record it (plan and seats kept), and look whether Microsoft
    /// applied the change anyway (it has been seen to); failures are only logged.
    async fn after_refusal(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        reason: &str,
        call: &Call,
    ) {
        let (id, operation_id) = (&operation.subscription_id, &operation.id);
        if let Err(error) = self.keep(payload, operation, Outcome::Rejected, reason).await {
            // Still a rejection: Microsoft keeps the old plan and seats either way.
            tracing::error!(subscription_id = %id, error = %crate::error_chain(&error), "refusal not recorded");
        }
        match self.view(id, call).await {
            Ok(read) if applied_anyway(operation, &read.0) => {
                tracing::warn!(subscription_id = %id, %operation_id, "Microsoft applied the change although we refused it");
                let drift = OperationId::parse(&format!("{operation_id}-applied-anyway")).expect("not empty");
                // The view just read is the one recorded: no second read.
                let recorded = self.record_view(payload, Some(operation), drift, Some(read), call).await;
                if let Err(error) = recorded {
                    tracing::error!(subscription_id = %id, error = %crate::error_chain(&error), "the drift was not recorded; the reconciliation will");
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(subscription_id = %id, error = %crate::error_chain(&error), "could not check that the refusal held; the reconciliation will")
            }
        }
    }

    /// Notify-only actions: Microsoft already changed the subscription; record what it says now.
    async fn notification(
        &self,
        payload: &WebhookPayload,
        confirmed: Option<&Operation>,
        call: &Call,
    ) -> Result<Handled, WebhookError> {
        let delivered = &payload.operation;
        let id = &delivered.subscription_id;
        let (view, as_of) = match self.view(id, call).await {
            Ok(view) => view,
            Err(WebhookError::Marketplace(MarketplaceError::NotFound { .. })) => {
                let reason = match confirmed {
                    None => "Microsoft confirms neither the operation nor the subscription",
                    Some(_) => "Microsoft confirms the operation but knows no such subscription",
                };
                tracing::warn!(subscription_id = %id, operation_id = %delivered.id, reason, "delivery kept aside");
                let body = serde_json::to_vec(payload).unwrap_or_default();
                self.store.record_rejected(&RejectedDelivery::new(&body, reason, self.clock.now())).await?;
                return Ok(Handled::KeptAside(reason.to_owned()));
            }
            Err(error) => return Err(error),
        };
        let operation = confirmed.unwrap_or(delivered);
        let action = operation.action.clone().unwrap_or_else(|| OperationAction::Unknown(String::new()));
        if !shows_effect(&action, &view) {
            // Microsoft's view may lag its own operation (a Suspend whose subscription still says
            // Subscribed, the publisher's cancellation still in progress): a recent or unfinished
            // operation is asked for again rather than spent on a view without its effect. An old
            // one was since undone: Microsoft's view is recorded.
            let happened_at = confirmed.and_then(|o| o.time_stamp);
            // Microsoft changed the subscription after the operation: the view has moved past it.
            let superseded = view.last_modified.zip(happened_at).is_some_and(|(modified, at)| modified > at);
            let recent = !superseded && happened_at.is_some_and(|at| self.clock.now() - at < VIEW_LAG);
            let unfinished = confirmed.and_then(|o| o.status.as_ref()).is_some_and(|s| !s.is_terminal());
            // The publisher's own (its cancellation): kept apart, the reconciliation finishes it.
            if let (true, Some(operation)) = (unfinished, confirmed)
                && publishers_own(payload, operation, self.store.get(id).await?.as_ref())
            {
                return self.early(payload, operation).await;
            }
            // Microsoft's (a Reinstate arrives InProgress): delivered again until the view shows it.
            if recent || unfinished {
                return Err(WebhookError::NotFinal(delivered.id.clone()));
            }
        }
        self.record_view(payload, confirmed, delivered.id.clone(), Some((view, as_of)), call).await?;
        Ok(Handled::Recorded)
    }

    /// Records a confirmed change onto our record (`stored`, as just read; re-read when another
    /// writer got in). `false` when it cannot follow from our record: nothing was written.
    async fn record(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        lifecycle: LifecycleEvent,
        seen: Seen,
        stored: Option<SubscriptionRecord>,
    ) -> Result<bool, WebhookError> {
        let event = self.event(payload, Some(operation), lifecycle, seen);
        Ok(!matches!(record_event_on(&self.store, &event, self.clock.now(), stored).await?, Effect::Resync))
    }

    /// Records Microsoft's view of the subscription now, under `operation_id`.
    async fn observe_as(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        operation_id: OperationId,
        call: &Call,
    ) -> Result<(), WebhookError> {
        self.record_view(payload, Some(operation), operation_id, None, call).await
    }

    /// Records Microsoft's view (`read`, or read now) under `operation_id`; a view older than the
    /// one we hold (another writer read later) is read again, a few times at most.
    async fn record_view(
        &self,
        payload: &WebhookPayload,
        confirmed: Option<&Operation>,
        operation_id: OperationId,
        mut read: Option<(Subscription, crate::domain::Timestamp)>,
        call: &Call,
    ) -> Result<(), WebhookError> {
        let operation = confirmed.unwrap_or(&payload.operation);
        let action = operation.action.clone().unwrap_or_else(|| OperationAction::Unknown(String::new()));
        for _ in 0..3 {
            let (view, as_of) = match read.take() {
                Some(read) => read,
                None => self.view(&operation.subscription_id, call).await?,
            };
            // The action names the event when Microsoft's view shows its effect; else the view does.
            let lifecycle = if shows_effect(&action, &view) {
                LifecycleEvent::from_action(&action)
            } else {
                let status =
                    view.status.clone().unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()));
                LifecycleEvent::Observed(status)
            };
            let mut event =
                self.event(payload, confirmed, lifecycle, Seen::View { subscription: view, as_of });
            event.operation_id = operation_id.clone();
            if !matches!(record_event(&self.store, &event, self.clock.now()).await?, Effect::Resync) {
                return Ok(());
            }
        }
        Err(WebhookError::NotFinal(operation_id))
    }

    /// An operation delivered before Microsoft finished it: answered 200 (Microsoft may fail an
    /// operation whose webhook is not answered) and recorded under its own key, so that the
    /// operation id stays free for the change itself, which the reconciliation or a later
    /// delivery records once Microsoft's view shows it.
    async fn early(&self, payload: &WebhookPayload, operation: &Operation) -> Result<Handled, WebhookError> {
        tracing::info!(subscription_id = %operation.subscription_id, operation_id = %operation.id, status = ?operation.status, "operation not finished at Microsoft yet");
        let lifecycle = LifecycleEvent::Unrecognized(
            operation.action.as_ref().map_or_else(String::new, |a| a.to_string()),
        );
        let mut event =
            self.event(payload, Some(operation), lifecycle, Seen::Delta { plan_id: None, quantity: None });
        event.operation_id = OperationId::parse(&format!("{}-unfinished", operation.id)).expect("not empty");
        let detail = "delivered before Microsoft finished the operation; applied when it has";
        record_kept(&self.store, &event, Outcome::Unchanged, detail, self.clock.now()).await?;
        Ok(Handled::Recorded)
    }

    /// Records the delivery without changing the state (rejected, or failed at Microsoft).
    async fn keep(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        outcome: Outcome,
        detail: &str,
    ) -> Result<(), WebhookError> {
        let lifecycle = LifecycleEvent::Unrecognized(
            operation.action.as_ref().map_or_else(String::new, |a| a.to_string()),
        );
        let event =
            self.event(payload, Some(operation), lifecycle, Seen::Delta { plan_id: None, quantity: None });
        record_kept(&self.store, &event, outcome, detail, self.clock.now()).await?;
        Ok(())
    }

    /// Records Microsoft's current view under this delivery's own resync key (its id may already
    /// be recorded: applied before the acknowledgement said otherwise).
    async fn resync(
        &self,
        payload: &WebhookPayload,
        operation: &Operation,
        call: &Call,
    ) -> Result<(), WebhookError> {
        let resync = OperationId::parse(&format!("{}-resync", operation.id)).expect("not empty");
        self.observe_as(payload, operation, resync, call).await
    }

    /// Microsoft's view of the subscription now (docs/marketplace-api.md#get-subscription: the source of truth), and when
    /// it was read.
    async fn view(
        &self,
        id: &SubscriptionId,
        call: &Call,
    ) -> Result<(Subscription, crate::domain::Timestamp), WebhookError> {
        let as_of = self.clock.now();
        let view = self.marketplace.get_subscription(id, call).await.map_err(WebhookError::Marketplace)?;
        Ok((view, as_of))
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

    /// The event of this delivery: ordered by Microsoft's operation time, never the sender's.
    fn event(
        &self,
        payload: &WebhookPayload,
        confirmed: Option<&Operation>,
        lifecycle: LifecycleEvent,
        seen: Seen,
    ) -> Event {
        let delivered = &payload.operation;
        Event {
            subscription_id: delivered.subscription_id.clone(),
            operation_id: delivered.id.clone(),
            lifecycle,
            source: ChangeSource::Webhook,
            action: confirmed.and_then(|o| o.action.clone()).or(delivered.action.clone()),
            requested_by: confirmed.and_then(|o| o.operation_request_source.clone()),
            operation_status: confirmed.and_then(|o| o.status.clone()),
            occurred_at: confirmed.and_then(|o| o.time_stamp),
            seen,
            record_if_unchanged: true,
        }
    }
}

/// Kept, once a refusal is decided, for answering it: what follows the decision ends this long
/// before the call's deadline.
const REFUSAL_ANSWER_RESERVE: Duration = Duration::from_millis(500);

/// How long Microsoft's view may lag its own operation before the operation counts as undone.
const VIEW_LAG: chrono::Duration = chrono::Duration::minutes(10);

/// Whether Microsoft's view shows what `action` does to the status (actions that leave the status
/// as it is, or that we do not know, show nothing to check).
fn shows_effect(action: &OperationAction, view: &Subscription) -> bool {
    let expected = match action {
        OperationAction::Suspend => SubscriptionStatus::Suspended,
        OperationAction::Reinstate | OperationAction::Renew => SubscriptionStatus::Subscribed,
        OperationAction::Unsubscribe => SubscriptionStatus::Unsubscribed,
        _ => return true,
    };
    view.status.as_ref() == Some(&expected)
}

/// The publisher's own operation, by Microsoft's word, the delivery's, or because it is the
/// operation our record waits for (Microsoft does not always say who asked).
fn publishers_own(
    payload: &WebhookPayload,
    operation: &Operation,
    stored: Option<&SubscriptionRecord>,
) -> bool {
    let source =
        operation.operation_request_source.as_ref().or(payload.operation.operation_request_source.as_ref());
    source == Some(&RequestSource::Partner)
        || stored.and_then(|r| r.pending_operation.as_ref()).is_some_and(|p| p.id == operation.id)
}

enum Acknowledged {
    Done,
    AlreadyDecided(OperationStatus),
}

/// Whether Microsoft's view shows the change of `operation` although it was refused.
fn applied_anyway(operation: &Operation, view: &Subscription) -> bool {
    match operation.action {
        Some(OperationAction::ChangePlan) => operation.plan_id.is_some() && operation.plan_id == view.plan_id,
        _ => operation.quantity.is_some() && operation.quantity == view.quantity,
    }
}

/// The delivery must name Microsoft's operation: same id, subscription and action (ids are
/// canonical since they were parsed).
fn matches(delivered: &Operation, confirmed: &Operation) -> Result<(), String> {
    if delivered.id != confirmed.id {
        return Err(format!("operation {} is not {}", confirmed.id, delivered.id));
    }
    if delivered.subscription_id != confirmed.subscription_id {
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
