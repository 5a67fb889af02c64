//! The usage ledger's port (metered billing, [`crate::metering`]): the product's usage added up
//! per subscription, dimension and hour, and each hour's way to Microsoft.
//!
//! An hour takes usage while it is [`HourState::Open`]. Emission closes it at its total
//! ([`HourState::Sending`]): from then on it takes no more usage, and every send is of that same
//! quantity, so a send whose answer was lost can be repeated (Microsoft answers `Duplicate` with
//! what it accepted). Microsoft's answer settles it: accepted or refused, for good.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{PlanId, SubscriptionId, Timestamp};

/// Usage as the publisher's product reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub subscription_id: SubscriptionId,
    /// A metering dimension of the subscription's plan, as defined in Partner Center.
    pub dimension: String,
    /// More than zero: usage beyond what the plan includes.
    pub quantity: f64,
    /// When the usage happened.
    pub at: Timestamp,
    /// The product's own idempotency key: a report with a key seen before adds nothing.
    pub key: String,
}

/// One subscription's usage of one dimension in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourKey {
    pub subscription_id: SubscriptionId,
    pub dimension: String,
    /// The start of the hour (UTC).
    pub hour: Timestamp,
}

/// The hour `at` falls in: its start.
pub fn hour_of(at: Timestamp) -> Timestamp {
    // From the seconds since the epoch: a leap second (`:60`) then falls in its hour too.
    let seconds = at.timestamp();
    chrono::DateTime::from_timestamp(seconds - seconds.rem_euclid(3600), 0).unwrap_or(at)
}

/// One hour of usage and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageHour {
    pub subscription_id: SubscriptionId,
    pub dimension: String,
    pub hour: Timestamp,
    /// The subscription's plan when the hour's first usage was reported: what is sent.
    pub plan_id: PlanId,
    /// Every report's quantity, added up.
    pub quantity: f64,
    /// Reports added up.
    pub reports: u64,
    #[serde(flatten)]
    pub state: HourState,
    pub updated_at: Timestamp,
}

impl UsageHour {
    pub fn key(&self) -> HourKey {
        HourKey {
            subscription_id: self.subscription_id.clone(),
            dimension: self.dimension.clone(),
            hour: self.hour,
        }
    }
}

/// Where an hour stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum HourState {
    /// Taking usage.
    Open,
    /// Closed at `sent_quantity`, which every send carries; not yet settled (never sent, the
    /// answer was lost, or Microsoft could not take it yet: `last_error`).
    Sending { sent_quantity: f64, attempts: u32, last_error: Option<String> },
    /// Microsoft accepted it (`duplicate`: it had already, from an earlier send).
    Accepted {
        sent_quantity: f64,
        usage_event_id: Option<String>,
        message_time: Option<Timestamp>,
        duplicate: bool,
    },
    /// Microsoft refused it for good (`Expired`, `ResourceNotActive`, `InvalidDimension`, ...).
    Refused { sent_quantity: f64, status: String, message: String },
}

impl HourState {
    /// As the table and the admin API spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Sending { .. } => "sending",
            Self::Accepted { .. } => "accepted",
            Self::Refused { .. } => "refused",
        }
    }

    /// Accepted or refused: nothing more happens to it.
    pub fn is_settled(&self) -> bool {
        matches!(self, Self::Accepted { .. } | Self::Refused { .. })
    }
}

/// What adding a report did.
#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    /// Added to its hour.
    Added,
    /// Its key was seen before, with the same usage: nothing added.
    Repeated,
    /// Its key was seen before with other usage: nothing added.
    KeyReused,
    /// Its hour is closed (being sent, or settled): nothing added.
    HourClosed(HourState),
}

/// Where usage is kept.
pub trait UsageStore: Send + Sync {
    /// Adds `report` to its hour (opened for `plan` if new) and records its key, atomically.
    fn add_usage(
        &self,
        report: &UsageReport,
        plan: &PlanId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Added, StoreError>> + Send {
        self.add_usage_to(report, hour_of(report.at), plan, now)
    }

    /// Adds `report` to `hour`, its own or a later one (when its own was closed for sending),
    /// and records its key as of its own hour, atomically.
    fn add_usage_to(
        &self,
        report: &UsageReport,
        hour: Timestamp,
        plan: &PlanId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Added, StoreError>> + Send;

    /// Every hour starting at `hour` that is not settled (open or sending), of any subscription
    /// and dimension.
    fn unsettled(&self, hour: Timestamp) -> impl Future<Output = Result<Vec<UsageHour>, StoreError>> + Send;

    /// Closes an open hour at its total (`Sending`, no attempt yet); an hour already closed is
    /// returned as it is; `None` if there is no such hour.
    fn close_hour(
        &self,
        key: &HourKey,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<UsageHour>, StoreError>> + Send;

    /// Records where a closed hour stands after a send: `hour.state` (another `Sending`, or
    /// settled). Only an hour still `Sending` is written; otherwise [`StoreError::Conflict`].
    fn record_send(&self, hour: &UsageHour) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A subscription's hours from `from` to `to` (hour starts, inclusive), oldest first.
    fn usage_of(
        &self,
        id: &SubscriptionId,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<Vec<UsageHour>, StoreError>> + Send;
}
