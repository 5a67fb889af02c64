//! The store port: our copy of every subscription, one item per operation, and its history.
//!
//! A [`Change`] is applied atomically: the new state (guarded by the version it was computed
//! from), the operation (written only if its id is new: the idempotency key) and the history
//! entry. So a retried or duplicated change is applied once, and of two concurrent writers one
//! wins and the other gets [`StoreError::Conflict`] and must re-read.

pub mod dynamodb;
pub mod usage;

/// The opaque page token of [`SubscriptionStore::list`]: the key of the last item examined
/// (base64url JSON), which is any item of the table for a scan, not only a state item.
pub mod page_token {
    use base64::Engine;

    use super::StoreError;
    use crate::domain::SubscriptionId;

    /// The listing goes on after the item with this key.
    pub fn new(partition: &str, sort: &str) -> String {
        let json = serde_json::json!([partition, sort]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// The listing goes on after this subscription's state item.
    pub fn after(id: &SubscriptionId) -> String {
        new(&super::dynamodb::layout::partition(id), super::dynamodb::layout::STATE)
    }

    /// The key a token goes on after; a token we did not make is refused.
    pub fn parse(token: &str) -> Result<(String, String), StoreError> {
        let refused = || StoreError::InvalidPageToken;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
        let [partition, sort]: [String; 2] = serde_json::from_slice(&json).map_err(|_| refused())?;
        // A scan's page may end on any item: a subscription's, a refused delivery's, or the
        // reconciliation's checkpoint.
        let ours =
            ["SUB#", "REJECTED#"].iter().any(|p| partition.len() > p.len() && partition.starts_with(p))
                || partition == super::dynamodb::layout::RECONCILE;
        if !ours || sort.is_empty() || new(&partition, &sort) != token {
            return Err(refused());
        }
        Ok((partition, sort))
    }

    /// The history entry (its sort key) a page of `id`'s history goes on after; a token of any
    /// other place is refused.
    pub fn history_position(token: &str, id: &SubscriptionId) -> Result<String, StoreError> {
        use super::dynamodb::layout;
        match parse(token)? {
            (partition, sort)
                if partition == layout::partition(id) && sort.starts_with(layout::EVENT_PREFIX) =>
            {
                Ok(sort)
            }
            _ => Err(StoreError::InvalidPageToken),
        }
    }
}

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::domain::lenient::{Timestamp, lenient_enum};
use crate::domain::{
    OperationAction, OperationId, OperationStatus, PlanId, RequestSource, Subscription, SubscriptionId,
    SubscriptionStatus,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Our copy of one subscription: Microsoft's view as last applied, plus what keeps writes safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRecord {
    pub subscription: Subscription,
    /// Starts at 1; every state change adds one. Writes are conditional on it.
    pub version: u64,
    /// When the newest applied operation happened (Microsoft's own `timeStamp`, never a sender's,
    /// never later than when we applied it): an older operation's change is stale.
    pub last_event_at: Option<Timestamp>,
    /// When Microsoft's view we hold was read (our clock): a view read earlier is stale.
    #[serde(default)]
    pub view_as_of: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// Once unsubscribed: the customer's data must be kept until then (7 days, docs/marketplace-api.md#data-retention).
    #[serde(default)]
    pub retain_data_until: Option<Timestamp>,
    /// A change the publisher asked Microsoft for that has not completed yet.
    #[serde(default)]
    pub pending_operation: Option<PendingOperation>,
}

/// A publisher-initiated change in flight at Microsoft (202 + `Operation-Location`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingOperation {
    pub id: OperationId,
    pub action: OperationAction,
    pub plan_id: Option<PlanId>,
    pub quantity: Option<u32>,
    pub requested_at: Timestamp,
}

impl SubscriptionRecord {
    /// The status we hold; `Unknown("")` when Microsoft never told us one.
    pub fn status(&self) -> SubscriptionStatus {
        self.subscription.status.clone().unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()))
    }
}

lenient_enum! {
    /// Which flow made a change (the history's `source`).
    pub enum ChangeSource {
        Landing = "landing",
        Activation = "activation",
        Webhook = "webhook",
        Publisher = "publisher",
        Reconcile = "reconcile",
    }
}

lenient_enum! {
    /// What applying an event did.
    pub enum Outcome {
        /// The state moved (status, plan, seats, term or other fields).
        Applied = "applied",
        /// Already reflected or notify-only: nothing to change.
        Unchanged = "unchanged",
        /// Older than the last applied event: recorded, state kept.
        Stale = "stale",
        /// The subscription is `Unsubscribed` for good: recorded, state kept.
        Ignored = "ignored",
        /// A customer's plan or seat change we refused: recorded, state kept.
        Rejected = "rejected",
        /// A change the publisher asked Microsoft for: pending until it completes.
        Requested = "requested",
        /// A requested change that failed at Microsoft: dropped.
        Dropped = "dropped",
    }
}

/// One operation on a subscription: a webhook delivery, a publisher request, a landing visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    pub id: OperationId,
    pub action: Option<OperationAction>,
    pub requested_by: Option<RequestSource>,
    /// Microsoft's status of the operation when we recorded it.
    pub status: Option<OperationStatus>,
    /// Microsoft's `timeStamp` of the operation.
    pub occurred_at: Option<Timestamp>,
    pub recorded_at: Timestamp,
    pub outcome: Outcome,
}

/// The fields a history entry shows before and after a change: what the lifecycle events
/// ([`crate::events`]), made from history entries on the table's stream, tell the product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub status: Option<SubscriptionStatus>,
    pub plan_id: Option<PlanId>,
    pub quantity: Option<u32>,
    // Absent from entries written before lifecycle events existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneficiary_tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchaser_tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_start: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_end: Option<Timestamp>,
}

impl From<&Subscription> for Snapshot {
    fn from(s: &Subscription) -> Self {
        let tenant = |who: &Option<crate::domain::AadIdentifier>| {
            who.as_ref()?.tenant_id.clone().filter(|t| !t.trim().is_empty())
        };
        Self {
            status: s.status.clone(),
            plan_id: s.plan_id.clone(),
            quantity: s.quantity,
            offer_id: s.offer_id.clone(),
            beneficiary_tenant_id: tenant(&s.beneficiary),
            purchaser_tenant_id: tenant(&s.purchaser),
            term_start: s.term.as_ref().and_then(|t| t.start_date),
            term_end: s.term.as_ref().and_then(|t| t.end_date),
        }
    }
}

/// One entry of a subscription's history: every event we recorded, applied or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub subscription_id: SubscriptionId,
    pub operation_id: OperationId,
    pub at: Timestamp,
    pub source: ChangeSource,
    /// The event, e.g. `Suspended` or `Observed(Subscribed)`.
    pub event: String,
    pub outcome: Outcome,
    pub from: Option<Snapshot>,
    pub to: Option<Snapshot>,
    /// The record's version after this entry (unchanged when the state did not move).
    pub version: u64,
    /// Why, or what differed.
    pub detail: Option<String>,
}

/// A webhook delivery refused before it named a subscription (not JSON, too large, no ids): kept
/// for investigation, with the start of its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedDelivery {
    pub id: String,
    pub received_at: Timestamp,
    pub reason: String,
    /// The body's size in bytes.
    pub size: usize,
    /// The body's first kilobyte, as text.
    pub excerpt: String,
}

impl RejectedDelivery {
    pub fn new(body: &[u8], reason: impl Into<String>, received_at: Timestamp) -> Self {
        let start = &body[..body.len().min(1024)];
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            received_at,
            reason: reason.into(),
            size: body.len(),
            excerpt: String::from_utf8_lossy(start).into_owned(),
        }
    }
}

/// Which subscriptions to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<SubscriptionStatus>,
    pub offer_id: Option<String>,
}

/// One page of subscriptions; `next` continues the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub subscriptions: Vec<SubscriptionRecord>,
    pub next: Option<String>,
}

/// A page of one subscription's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Where the next page starts; `None` when nothing follows. A full page may be followed by an
    /// empty one (DynamoDB cannot tell before it looks).
    pub next: Option<String>,
}

/// What a change does to the subscription's state item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// First sighting: written only if no record exists yet.
    Create(SubscriptionRecord),
    /// Written only if the stored version is still `expected_version`.
    Replace { expected_version: u64, record: SubscriptionRecord },
    /// The state stays as it is; only the operation and history are recorded, and only if the
    /// stored version is still `expected_version` (`None`: no record exists): a decision taken on
    /// a superseded record must be taken again, not recorded.
    Keep { expected_version: Option<u64> },
}

/// Everything one event writes, applied as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub operation: OperationRecord,
    pub state: StateWrite,
    pub history: HistoryEntry,
}

impl Change {
    pub fn subscription_id(&self) -> &SubscriptionId {
        &self.history.subscription_id
    }
}

/// What applying a change committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Written; the record is now at `version`.
    Written { version: u64 },
    /// This operation id was applied before: nothing was written.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the subscription first: re-read and decide again.
    #[error("subscription {subscription_id} was changed by another writer")]
    Conflict { subscription_id: SubscriptionId },
    /// The store could not be reached or is overloaded: retry later.
    #[error("the store is unavailable during {action}")]
    Unavailable {
        action: &'static str,
        #[source]
        source: BoxError,
    },
    /// The store refused the request (misconfiguration, missing table, invalid request).
    #[error("the store refused {action}")]
    Refused {
        action: &'static str,
        #[source]
        source: BoxError,
    },
    /// Another run of the reconciliation saved its checkpoint first: this one must stop.
    #[error("the reconciliation's checkpoint was changed by another run")]
    CheckpointTaken,
    /// A listing's page token that the store did not make (or that names no place to go on from).
    #[error("the page token is not valid")]
    InvalidPageToken,
    /// An item could not be read back into a record.
    #[error("the stored item {key} cannot be decoded")]
    Corrupt {
        key: String,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether the same request may succeed later (after a re-read, for a conflict).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::CheckpointTaken | Self::Unavailable { .. })
    }
}

/// Where the reconciliation stands (one item): the pass under way, the page it goes on from, the
/// last finished pass, and which run holds it. See [`crate::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileCheckpoint {
    /// The pass under way; `None` between passes.
    pub pass: Option<crate::reconcile::Summary>,
    /// Microsoft's continuation token of the pass's next page, as received; `None` for the first.
    pub next_page: Option<String>,
    /// The last pass that read every page.
    pub last_pass: Option<crate::reconcile::Summary>,
    /// The run working on the pass, until when; no other run starts before then.
    pub lease: Option<Lease>,
    /// 0 before the first save; every save adds one, and is conditional on it.
    pub version: u64,
}

/// A run's claim on the reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub holder: String,
    pub until: Timestamp,
}

/// Where subscriptions, operations and history are kept.
pub trait SubscriptionStore: Send + Sync {
    /// The current record, read consistently.
    fn get(
        &self,
        id: &SubscriptionId,
    ) -> impl Future<Output = Result<Option<SubscriptionRecord>, StoreError>> + Send;

    /// Applies a change atomically (see the module documentation).
    fn apply(&self, change: &Change) -> impl Future<Output = Result<Committed, StoreError>> + Send;

    /// The current records of these subscriptions (those that exist), read consistently.
    fn get_many(
        &self,
        ids: &[SubscriptionId],
    ) -> impl Future<Output = Result<Vec<SubscriptionRecord>, StoreError>> + Send;

    /// Up to `limit` subscriptions matching `filter`, from `page` (a previous answer's `next`).
    fn list(
        &self,
        filter: &ListFilter,
        page: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;

    /// The operation recorded under this id, if any.
    fn operation(
        &self,
        subscription_id: &SubscriptionId,
        operation_id: &OperationId,
    ) -> impl Future<Output = Result<Option<OperationRecord>, StoreError>> + Send;

    /// Every history entry of a subscription, oldest first.
    fn history(
        &self,
        id: &SubscriptionId,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send;

    /// Up to `limit` history entries of a subscription, oldest first, from `page` (a previous
    /// answer's `next`; a token of another subscription's history is refused).
    fn history_page(
        &self,
        id: &SubscriptionId,
        page: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;

    /// Keeps a delivery refused before it named a subscription.
    fn record_rejected(
        &self,
        delivery: &RejectedDelivery,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The deliveries refused on `day` (UTC).
    fn rejected_on(
        &self,
        day: chrono::NaiveDate,
    ) -> impl Future<Output = Result<Vec<RejectedDelivery>, StoreError>> + Send;

    /// The subscriptions whose beneficiary is this Entra tenant.
    fn by_beneficiary_tenant(
        &self,
        tenant_id: &str,
    ) -> impl Future<Output = Result<Vec<SubscriptionRecord>, StoreError>> + Send;

    /// The reconciliation's checkpoint, read consistently (`None` before the first save).
    fn checkpoint(&self) -> impl Future<Output = Result<Option<ReconcileCheckpoint>, StoreError>> + Send;

    /// Saves `checkpoint` at `checkpoint.version + 1` if the stored one is still at
    /// `checkpoint.version`; otherwise [`StoreError::CheckpointTaken`] and nothing is written.
    /// Returns the new version.
    fn save_checkpoint(
        &self,
        checkpoint: &ReconcileCheckpoint,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
