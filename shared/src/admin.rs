//! What the publisher's own systems do: ask whether a customer may use the product now
//! (entitlement), list and inspect subscriptions, and change a plan or seat count or cancel
//! (docs/marketplace-api.md#subscription-api). Changes are checked first as Microsoft would check them, then
//! requested; the pending operation is recorded and settled by the `Partner` webhook or by the
//! reconciliation.

use serde::Serialize;

use crate::changes::settled;
use crate::clock::Clock;
use crate::domain::{
    CustomerOperation, OperationAction, OperationStatus, PlanId, SubscriptionId, SubscriptionStatus, Term,
    Timestamp,
};
use crate::marketplace::{ApiError, Call, MarketplaceApi, MarketplaceError};
use crate::store::{
    Change, ChangeSource, Committed, HistoryEntry, ListFilter, ListPage, OperationRecord, Outcome,
    PendingOperation, Snapshot, StateWrite, StoreError, SubscriptionRecord, SubscriptionStore,
};

/// May this customer use the product right now, on which plan, with how many seats?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    pub subscription_id: SubscriptionId,
    pub beneficiary_tenant_id: Option<String>,
    pub offer_id: Option<String>,
    pub status: SubscriptionStatus,
    pub plan_id: Option<PlanId>,
    pub seats: Option<u32>,
    pub term: Option<Term>,
    pub is_free_trial: bool,
    /// Only while `Subscribed`: not before activation, not while suspended (data kept), not after
    /// cancellation.
    pub access_allowed: bool,
    /// Once cancelled: the customer's data is kept until then.
    pub retain_data_until: Option<Timestamp>,
}

impl From<&SubscriptionRecord> for Entitlement {
    fn from(record: &SubscriptionRecord) -> Self {
        let s = &record.subscription;
        let status = record.status();
        Self {
            subscription_id: s.id.clone(),
            beneficiary_tenant_id: s.beneficiary_tenant_id().map(str::to_owned),
            offer_id: s.offer_id.clone(),
            access_allowed: status == SubscriptionStatus::Subscribed,
            status,
            plan_id: s.plan_id.clone(),
            seats: s.quantity,
            term: s.term.clone(),
            is_free_trial: s.is_free_trial,
            retain_data_until: record.retain_data_until,
        }
    }
}

/// A change the publisher asks Microsoft for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRequest {
    Plan(PlanId),
    Seats(u32),
    Cancel,
}

/// Why a change is refused before (or by) Microsoft; each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the subscription is {0}; only a Subscribed subscription can change")]
    NotSubscribed(SubscriptionStatus),
    #[error("the subscription was bought through a reseller: its customer may only read it")]
    ReadOnly,
    #[error("operation {0} is still pending at Microsoft")]
    Pending(String),
    #[error("the subscription is already on plan {0}")]
    SamePlan(PlanId),
    #[error("the subscription already has {0} seats")]
    SameSeats(u32),
    #[error("plan {0} is not available to this subscription")]
    PlanNotAvailable(PlanId),
    #[error("{seats} seats are outside the plan's {min:?} to {max:?}")]
    SeatsOutOfBounds { seats: u32, min: Option<u32>, max: Option<u32> },
    #[error("the subscription is already cancelled")]
    AlreadyCancelled,
    #[error("Microsoft refused: {0}")]
    Microsoft(ApiError),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotSubscribed(_) => "NotSubscribed",
            Self::ReadOnly => "ReadOnly",
            Self::Pending(_) => "OperationPending",
            Self::SamePlan(_) => "SamePlan",
            Self::SameSeats(_) => "SameSeats",
            Self::PlanNotAvailable(_) => "PlanNotAvailable",
            Self::SeatsOutOfBounds { .. } => "SeatsOutOfBounds",
            Self::AlreadyCancelled => "AlreadyCancelled",
            Self::Microsoft(_) => "RefusedByMicrosoft",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("subscription {0} is not known")]
    NotFound(SubscriptionId),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The listing's page token is not one the listing gave out.
    #[error("the page token is not valid")]
    InvalidPageToken,
    #[error("the Marketplace API call failed")]
    Marketplace(#[source] MarketplaceError),
    #[error("the subscription store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for PublisherError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidPageToken => Self::InvalidPageToken,
            other => Self::Store(other),
        }
    }
}

impl PublisherError {
    /// Whether the same request may succeed later as things are.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Marketplace(error) => error.is_retryable(),
            Self::Store(error) => error.is_retryable(),
            _ => false,
        }
    }
}

/// A subscription with a page of what happened to it (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub record: SubscriptionRecord,
    pub entitlement: Entitlement,
    pub history: Vec<HistoryEntry>,
    /// Where the history goes on; `None` at its end.
    pub history_next_page_token: Option<String>,
}

pub struct Publisher<S, M, C> {
    store: S,
    marketplace: M,
    clock: C,
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> Publisher<S, M, C> {
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self { store, marketplace, clock }
    }

    /// The self-check ([`crate::self_check`]): Entra ID and the Marketplace API as this function
    /// calls them, the webhook's signing keys, the table, the secret's age.
    pub async fn self_check(
        &self,
        keys: &crate::identity::JwksCache,
        secret_changed: Result<Option<Timestamp>, String>,
        call: &Call,
    ) -> Vec<crate::self_check::Finding> {
        use crate::self_check;
        // At once: one slow dependency must not push the others past the function's timeout.
        let (marketplace, credentials, keys, table) = futures::join!(
            self_check::marketplace(&self.marketplace, call),
            self_check::credentials(&self.marketplace, call),
            self_check::signing_keys(keys),
            self_check::table(&self.store),
        );
        let mut findings = Vec::from(marketplace);
        findings.extend(credentials);
        findings.extend([keys, table, self_check::secret_age(secret_changed, self.clock.now())]);
        findings
    }

    pub async fn list(
        &self,
        filter: &ListFilter,
        page: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, PublisherError> {
        Ok(self.store.list(filter, page, limit).await?)
    }

    /// The record, its entitlement, and up to `limit` history entries from `page`.
    pub async fn view(
        &self,
        id: &SubscriptionId,
        page: Option<&str>,
        limit: u32,
    ) -> Result<SubscriptionView, PublisherError> {
        let record = self.record(id).await?;
        let history = self.store.history_page(id, page, limit).await?;
        Ok(SubscriptionView {
            entitlement: Entitlement::from(&record),
            record,
            history: history.entries,
            history_next_page_token: history.next,
        })
    }

    pub async fn entitlement(&self, id: &SubscriptionId) -> Result<Entitlement, PublisherError> {
        Ok(Entitlement::from(&self.record(id).await?))
    }

    /// Every subscription of a customer tenant, active ones first.
    pub async fn entitlements_of_tenant(&self, tenant_id: &str) -> Result<Vec<Entitlement>, PublisherError> {
        // Stored in canonical form (lowercase GUIDs), however Microsoft or the caller spells it.
        let tenant_id =
            crate::domain::lenient::canonical_guid(tenant_id).unwrap_or_else(|| tenant_id.trim().to_owned());
        let mut all: Vec<Entitlement> =
            self.store.by_beneficiary_tenant(&tenant_id).await?.iter().map(Entitlement::from).collect();
        all.sort_by_key(|e| (!e.access_allowed, e.subscription_id.clone()));
        Ok(all)
    }

    /// Checks the change as Microsoft would, asks Microsoft for it, and records it as pending.
    pub async fn request(
        &self,
        id: &SubscriptionId,
        change: ChangeRequest,
        call: &Call,
    ) -> Result<PendingOperation, PublisherError> {
        let record = self.record(id).await?;
        let subscription = &record.subscription;
        if let Some(pending) = &record.pending_operation {
            return Err(Refusal::Pending(pending.id.to_string()).into());
        }
        let status = record.status();
        let (action, plan_id, quantity) = match &change {
            ChangeRequest::Cancel => {
                if status == SubscriptionStatus::Unsubscribed {
                    return Err(Refusal::AlreadyCancelled.into());
                }
                if !subscription.allows(&CustomerOperation::Delete) {
                    return Err(Refusal::ReadOnly.into());
                }
                (OperationAction::Unsubscribe, None, None)
            }
            ChangeRequest::Plan(plan) => {
                self.check_update(&record)?;
                if subscription.plan_id.as_ref() == Some(plan) {
                    return Err(Refusal::SamePlan(plan.clone()).into());
                }
                let plans =
                    self.marketplace.list_available_plans(id, Some(plan), call).await.map_err(refused)?;
                if !plans.iter().any(|p| &p.plan_id == plan && !p.is_stop_sell) {
                    return Err(Refusal::PlanNotAvailable(plan.clone()).into());
                }
                (OperationAction::ChangePlan, Some(plan.clone()), None)
            }
            ChangeRequest::Seats(seats) => {
                self.check_update(&record)?;
                if subscription.quantity == Some(*seats) {
                    return Err(Refusal::SameSeats(*seats).into());
                }
                let current = subscription.plan_id.as_ref();
                let plans =
                    self.marketplace.list_available_plans(id, current, call).await.map_err(refused)?;
                let plan = plans.iter().find(|p| Some(&p.plan_id) == current);
                if let Some(plan) = plan
                    && !plan.admits_seats(*seats)
                {
                    return Err(Refusal::SeatsOutOfBounds {
                        seats: *seats,
                        min: plan.min_quantity,
                        max: plan.max_quantity,
                    }
                    .into());
                }
                (OperationAction::ChangeQuantity, None, Some(*seats))
            }
        };
        let started = match &change {
            ChangeRequest::Plan(plan) => self.marketplace.change_plan(id, plan, call).await,
            ChangeRequest::Seats(seats) => self.marketplace.change_quantity(id, *seats, call).await,
            ChangeRequest::Cancel => self.marketplace.delete_subscription(id, call).await,
        };
        let operation_id = match started {
            Ok(started) => started.operation_id,
            // The request may have reached Microsoft although its answer did not reach us (it is
            // never sent twice): find the operation it started before reporting anything.
            Err(error) => {
                match self.started_anyway(id, &action, plan_id.as_ref(), quantity, &error, call).await {
                    Some(operation_id) => operation_id,
                    None => return Err(refused(error)),
                }
            }
        };

        let now = self.clock.now();
        let pending = PendingOperation { id: operation_id, action, plan_id, quantity, requested_at: now };
        tracing::info!(subscription_id = %id, operation_id = %pending.id, action = %pending.action, "change requested");
        self.record_request(&record, &pending, now).await?;
        Ok(pending)
    }

    /// After a failed change request that may still have happened (no answer, 408 or 5xx, or the
    /// 400 a lost first request's lock gives): the operation Microsoft is running for exactly this
    /// change, if any.
    async fn started_anyway(
        &self,
        id: &SubscriptionId,
        action: &OperationAction,
        plan_id: Option<&PlanId>,
        quantity: Option<u32>,
        error: &MarketplaceError,
        call: &Call,
    ) -> Option<crate::domain::OperationId> {
        let uncertain = matches!(
            error,
            MarketplaceError::Server { .. }
                | MarketplaceError::Transport { .. }
                | MarketplaceError::DeadlineExceeded { .. }
                | MarketplaceError::BadRequest { .. }
        );
        if !uncertain {
            return None;
        }
        let outstanding = match self.marketplace.list_outstanding_operations(id, call).await {
            Ok(operations) => operations,
            Err(lookup) => {
                tracing::warn!(subscription_id = %id, error = %crate::error_chain(&lookup), "could not look for the operation a failed request may have started");
                return None;
            }
        };
        let found = outstanding
            .into_iter()
            .filter(|o| o.action.as_ref() == Some(action))
            .filter(|o| o.operation_request_source != Some(crate::domain::RequestSource::Azure))
            .filter(|o| {
                !o.status.as_ref().is_some_and(OperationStatus::is_terminal)
                    || o.status == Some(OperationStatus::Succeeded)
            })
            .filter(|o| plan_id.is_none() || o.plan_id.as_ref() == plan_id)
            .filter(|o| quantity.is_none() || o.quantity == quantity)
            .max_by_key(|o| o.time_stamp)?;
        tracing::warn!(subscription_id = %id, operation_id = %found.id, error = %crate::error_chain(&error), "the request failed but Microsoft started the change");
        Some(found.id)
    }

    fn check_update(&self, record: &SubscriptionRecord) -> Result<(), Refusal> {
        let status = record.status();
        if status != SubscriptionStatus::Subscribed {
            return Err(Refusal::NotSubscribed(status));
        }
        if !record.subscription.allows(&CustomerOperation::Update) {
            return Err(Refusal::ReadOnly);
        }
        Ok(())
    }

    /// The pending operation goes on the record (so a second change is refused) and into the history.
    async fn record_request(
        &self,
        read: &SubscriptionRecord,
        pending: &PendingOperation,
        now: Timestamp,
    ) -> Result<(), PublisherError> {
        let mut current = read.clone();
        for _ in 0..8 {
            // Microsoft may be faster than us: its webhook already applied the operation.
            if self.store.operation(&current.subscription.id, &pending.id).await?.is_some() {
                return Ok(());
            }
            let mut record = current.clone();
            record.pending_operation = Some(pending.clone());
            record.version += 1;
            record.updated_at = now;
            let requested = Snapshot {
                status: match pending.action {
                    OperationAction::Unsubscribe => Some(SubscriptionStatus::Unsubscribed),
                    _ => current.subscription.status.clone(),
                },
                plan_id: pending.plan_id.clone().or(current.subscription.plan_id.clone()),
                quantity: pending.quantity.or(current.subscription.quantity),
                ..Snapshot::from(&current.subscription)
            };
            let operation_id =
                crate::domain::OperationId::parse(&format!("request-{}", pending.id)).expect("not empty");
            let change = Change {
                operation: OperationRecord {
                    id: operation_id.clone(),
                    action: Some(pending.action.clone()),
                    requested_by: Some(crate::domain::RequestSource::Partner),
                    status: Some(crate::domain::OperationStatus::InProgress),
                    occurred_at: Some(now),
                    recorded_at: now,
                    outcome: Outcome::Requested,
                },
                state: StateWrite::Replace { expected_version: current.version, record: record.clone() },
                history: HistoryEntry {
                    subscription_id: current.subscription.id.clone(),
                    operation_id,
                    at: now,
                    source: ChangeSource::Publisher,
                    event: format!("{}Requested", pending.action),
                    outcome: Outcome::Requested,
                    from: Some(Snapshot::from(&current.subscription)),
                    to: Some(requested),
                    version: record.version,
                    detail: Some(format!("Microsoft operation {}", pending.id)),
                },
            };
            match self.store.apply(&change).await {
                Ok(Committed::Written { .. } | Committed::Duplicate) => return Ok(()),
                // A webhook changed the record meanwhile: keep the request on the newer record.
                Err(StoreError::Conflict { .. }) => current = self.record(&current.subscription.id).await?,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Conflict { subscription_id: read.subscription.id.clone() }.into())
    }

    async fn record(&self, id: &SubscriptionId) -> Result<SubscriptionRecord, PublisherError> {
        self.store.get(id).await?.ok_or_else(|| PublisherError::NotFound(id.clone()))
    }
}

/// Microsoft's 400 is a refusal with its reason; anything else is the marketplace failing.
fn refused(error: MarketplaceError) -> PublisherError {
    match error {
        MarketplaceError::BadRequest { error, .. } => Refusal::Microsoft(error).into(),
        other => PublisherError::Marketplace(other),
    }
}

/// Drops a pending operation that failed at Microsoft (history: dropped).
pub fn drop_pending(current: &SubscriptionRecord, reason: &str, now: Timestamp) -> Option<Change> {
    let pending = current.pending_operation.as_ref()?;
    // Under its own key: if Microsoft's webhook for the operation comes after all, it still applies.
    let dropped = crate::domain::OperationId::parse(&format!("dropped-{}", pending.id)).expect("not empty");
    let state = settled(current, now);
    let version = match &state {
        StateWrite::Replace { record, .. } => record.version,
        _ => current.version,
    };
    Some(Change {
        operation: OperationRecord {
            id: dropped.clone(),
            action: Some(pending.action.clone()),
            requested_by: Some(crate::domain::RequestSource::Partner),
            status: None,
            occurred_at: None,
            recorded_at: now,
            outcome: Outcome::Dropped,
        },
        state,
        history: HistoryEntry {
            subscription_id: current.subscription.id.clone(),
            operation_id: dropped,
            at: now,
            source: ChangeSource::Reconcile,
            event: pending.action.to_string(),
            outcome: Outcome::Dropped,
            from: Some(Snapshot::from(&current.subscription)),
            to: None,
            version,
            detail: Some(reason.to_owned()),
        },
    })
}
