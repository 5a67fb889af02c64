//! The buyer's first contact: the landing page resolves the purchase token and records the
//! subscription; activation starts billing (docs/marketplace-api.md#resolve, #activate, #landing-page).

use crate::changes::{Event, record_event};
use crate::clock::Clock;
use crate::domain::{
    OperationAction, OperationId, Plan, Subscription, SubscriptionId, SubscriptionStatus, Timestamp,
};
use crate::lifecycle::LifecycleEvent;
use crate::marketplace::{Call, MarketplaceApi, MarketplaceError};
use crate::store::{ChangeSource, StoreError, SubscriptionStore};

/// What the buyer's visit found.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    /// Microsoft's view of the subscription (after activation, when it happened).
    pub subscription: Subscription,
    /// The purchased plan as the marketplace shows it, when Microsoft could say.
    pub plan: Option<Plan>,
    /// Activated during this visit (automatic activation).
    pub activated: bool,
}

/// The result of an activation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub subscription: Subscription,
    pub plan: Option<Plan>,
    /// `false` when the subscription was already active (a repeated or replayed request).
    pub activated_now: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    /// The purchase token is missing, malformed, expired or unknown.
    #[error("the purchase token is not valid")]
    InvalidToken(#[source] Option<MarketplaceError>),
    #[error("subscription {0} does not exist")]
    UnknownSubscription(SubscriptionId),
    /// Suspended, unsubscribed, or a status this version does not know.
    #[error("subscription {id} cannot be activated while {status}")]
    NotActivatable { id: SubscriptionId, status: SubscriptionStatus },
    /// Microsoft is unreachable, slow or failing: try again later.
    #[error("the marketplace is unavailable")]
    MarketplaceUnavailable(#[source] MarketplaceError),
    /// Microsoft refused in a way that retrying will not fix (configuration, unexpected answers).
    #[error("the marketplace refused the request")]
    Marketplace(#[source] MarketplaceError),
    #[error("the subscription store failed")]
    Store(#[from] StoreError),
    /// Microsoft activated the subscription, but our record of it could not be written: billing
    /// has started; the next visit, activation request or reconciliation records it.
    #[error("subscription {id} is active at Microsoft, but recording it failed")]
    ActivatedNotRecorded {
        id: SubscriptionId,
        #[source]
        source: StoreError,
    },
}

impl OnboardingError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::MarketplaceUnavailable(_) => true,
            Self::Store(error) => error.is_retryable(),
            _ => false,
        }
    }
}

fn marketplace(error: MarketplaceError) -> OnboardingError {
    if error.is_retryable() {
        OnboardingError::MarketplaceUnavailable(error)
    } else {
        OnboardingError::Marketplace(error)
    }
}

/// Landing and activation, over the store, the Marketplace API and the clock.
pub struct Onboarding<S, M, C> {
    store: S,
    marketplace: M,
    clock: C,
    auto_activate: bool,
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> Onboarding<S, M, C> {
    /// `auto_activate`: activate as soon as the buyer lands (no confirmation step).
    pub fn new(store: S, marketplace: M, clock: C, auto_activate: bool) -> Self {
        Self { store, marketplace, clock, auto_activate }
    }

    /// Resolves a landing-page token (already decoded once), records what it names, and
    /// activates it when configured to.
    pub async fn land(&self, token: &str, call: &Call) -> Result<Landed, OnboardingError> {
        if token.trim().is_empty() {
            return Err(OnboardingError::InvalidToken(None));
        }
        let read_at = self.clock.now();
        let resolved = match self.marketplace.resolve(token, call).await {
            Ok(resolved) => resolved,
            Err(error @ (MarketplaceError::BadRequest { .. } | MarketplaceError::NotFound { .. })) => {
                return Err(OnboardingError::InvalidToken(Some(error)));
            }
            Err(MarketplaceError::Invalid(_)) => return Err(OnboardingError::InvalidToken(None)),
            Err(error) => return Err(marketplace(error)),
        };
        let subscription = match resolved.subscription {
            Some(subscription) => subscription,
            // The 2019 API answered without the full subscription.
            None => self.marketplace.get_subscription(&resolved.id, call).await.map_err(marketplace)?,
        };
        tracing::info!(subscription_id = %subscription.id, status = ?subscription.status, "landed");
        self.observe(&subscription, read_at, ChangeSource::Landing, &landing_operation()).await?;

        let pending = matches!(
            subscription.status,
            Some(SubscriptionStatus::PendingFulfillmentStart | SubscriptionStatus::NotStarted)
        );
        if self.auto_activate && pending {
            let activation = self.activate(&subscription.id, &landing_operation(), call).await?;
            return Ok(Landed {
                subscription: activation.subscription,
                plan: activation.plan,
                activated: activation.activated_now,
            });
        }
        let plan = self.plan_of(&subscription, call).await;
        Ok(Landed { subscription, plan, activated: false })
    }

    /// Activates the subscription with its purchased plan and seats. Safe to repeat: a request
    /// that finds it already active (a lost answer, a double click, a replayed form) changes nothing.
    /// `operation_id` identifies this request in the store, so a replay is recorded once.
    pub async fn activate(
        &self,
        id: &SubscriptionId,
        operation_id: &OperationId,
        call: &Call,
    ) -> Result<Activation, OnboardingError> {
        let read_at = self.clock.now();
        let current = self.read(id, call).await?;
        match current.status.clone() {
            Some(SubscriptionStatus::Subscribed) => {
                // Active at Microsoft already (an earlier request, maybe one whose record was lost).
                self.observe(&current, read_at, ChangeSource::Activation, operation_id).await.map_err(
                    |error| match error {
                        OnboardingError::Store(source) => {
                            OnboardingError::ActivatedNotRecorded { id: id.clone(), source }
                        }
                        other => other,
                    },
                )?;
                let plan = self.plan_of(&current, call).await;
                return Ok(Activation { subscription: current, plan, activated_now: false });
            }
            Some(SubscriptionStatus::PendingFulfillmentStart | SubscriptionStatus::NotStarted) => {}
            other => {
                let status = other.unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()));
                return Err(OnboardingError::NotActivatable { id: id.clone(), status });
            }
        }
        let plan_id = current.plan_id.clone().ok_or_else(|| {
            OnboardingError::Marketplace(MarketplaceError::Invalid("the subscription names no plan"))
        })?;

        match self.marketplace.activate(id, &plan_id, current.quantity, call).await {
            Ok(()) => {}
            // Not idempotent at Microsoft: a 400 may follow a 200 that got lost (docs/marketplace-api.md#activate).
            Err(error @ MarketplaceError::BadRequest { .. }) => {
                let now = self.read(id, call).await?;
                if now.status != Some(SubscriptionStatus::Subscribed) {
                    return Err(OnboardingError::Marketplace(error));
                }
            }
            Err(MarketplaceError::NotFound { .. }) => {
                return Err(OnboardingError::UnknownSubscription(id.clone()));
            }
            Err(error) => return Err(marketplace(error)),
        }
        tracing::info!(subscription_id = %id, plan_id = %plan_id, quantity = ?current.quantity, "activated");

        // Read back for the term Microsoft just set; without it, Microsoft's earlier view with the
        // status its 200 (or the re-read after a 400) confirmed.
        let activated_at = self.clock.now();
        let mut after = self.marketplace.get_subscription(id, call).await.unwrap_or_else(|_| current.clone());
        after.status = Some(SubscriptionStatus::Subscribed);
        let event = Event {
            lifecycle: LifecycleEvent::Activated,
            action: Some(OperationAction::Unknown("Activate".into())),
            ..Event::observed(after.clone(), activated_at, operation_id.clone(), ChangeSource::Activation)
        };
        record_event(&self.store, &event, self.clock.now())
            .await
            .map_err(|source| OnboardingError::ActivatedNotRecorded { id: id.clone(), source })?;
        let plan = self.plan_of(&after, call).await;
        Ok(Activation { subscription: after, plan, activated_now: true })
    }

    async fn read(&self, id: &SubscriptionId, call: &Call) -> Result<Subscription, OnboardingError> {
        match self.marketplace.get_subscription(id, call).await {
            Ok(subscription) => Ok(subscription),
            Err(MarketplaceError::NotFound { .. }) => Err(OnboardingError::UnknownSubscription(id.clone())),
            Err(error) => Err(marketplace(error)),
        }
    }

    /// Records Microsoft's view of the subscription.
    async fn observe(
        &self,
        subscription: &Subscription,
        read_at: Timestamp,
        source: ChangeSource,
        operation_id: &OperationId,
    ) -> Result<(), OnboardingError> {
        let event = Event::observed(subscription.clone(), read_at, operation_id.clone(), source);
        record_event(&self.store, &event, self.clock.now()).await?;
        Ok(())
    }

    /// The plan's display name and terms; the page does without them if Microsoft cannot say.
    async fn plan_of(&self, subscription: &Subscription, call: &Call) -> Option<Plan> {
        let plan_id = subscription.plan_id.as_ref()?;
        match self.marketplace.list_available_plans(&subscription.id, Some(plan_id), call).await {
            Ok(plans) => plans.into_iter().find(|p| &p.plan_id == plan_id),
            Err(error) => {
                tracing::warn!(subscription_id = %subscription.id, error = %crate::error_chain(&error), "plan details unavailable");
                None
            }
        }
    }
}

/// Each landing visit is its own operation.
fn landing_operation() -> OperationId {
    OperationId::parse(&format!("landing-{}", uuid::Uuid::new_v4())).expect("not empty")
}
