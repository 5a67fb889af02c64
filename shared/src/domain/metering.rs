use serde::{Deserialize, Serialize};

use super::lenient::{self, Timestamp, lenient_enum};
use super::{PlanId, SubscriptionId};

/// Usage above what the plan includes, for one dimension and one hour (docs/marketplace-api.md#single-usage-event).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEvent {
    /// The SaaS subscription id.
    pub resource_id: SubscriptionId,
    /// More than zero.
    pub quantity: f64,
    pub dimension: String,
    /// The hour the usage happened; within the past 24 hours.
    #[serde(serialize_with = "rfc3339")]
    pub effective_start_time: Timestamp,
    pub plan_id: PlanId,
}

fn rfc3339<S: serde::Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

lenient_enum! {
    /// Status of one usage event (docs/marketplace-api.md#single-usage-event, #batch-usage-events).
    pub enum UsageEventStatus {
        Accepted = "Accepted",
        Duplicate = "Duplicate",
        Expired = "Expired",
        Error = "Error",
        ResourceNotFound = "ResourceNotFound",
        ResourceNotAuthorized = "ResourceNotAuthorized",
        ResourceNotActive = "ResourceNotActive",
        InvalidDimension = "InvalidDimension",
        InvalidQuantity = "InvalidQuantity",
        BadArgument = "BadArgument",
    }
}

lenient_enum! {
    /// Reconciliation status of reported usage (docs/marketplace-api.md#retrieve-usage-events).
    pub enum ReconStatus {
        Submitted = "Submitted",
        Accepted = "Accepted",
        Rejected = "Rejected",
        Mismatch = "Mismatch",
        TestHeaders = "TestHeaders",
        DryRun = "DryRun",
    }
}

/// Microsoft's answer about one usage event (single call, or one item of a batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEventResult {
    #[serde(default, deserialize_with = "lenient::text")]
    pub usage_event_id: Option<String>,
    #[serde(default)]
    pub status: Option<UsageEventStatus>,
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub message_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub quantity: Option<f64>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub dimension: Option<String>,
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub effective_start_time: Option<Timestamp>,
    #[serde(default)]
    pub plan_id: Option<PlanId>,
    /// Set on items of a batch that were not accepted.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// The answer to a batch of usage events: inspect every item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchUsageEventResult {
    #[serde(default, deserialize_with = "lenient::quantity")]
    pub count: Option<u32>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub result: Vec<UsageEventResult>,
}

/// Reported usage as `GET /usageEvents` lists it (docs/marketplace-api.md#retrieve-usage-events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub usage_date: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub usage_resource_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub dimension: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub plan_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub plan_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub offer_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub offer_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub offer_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub azure_subscription_id: Option<String>,
    #[serde(default)]
    pub recon_status: Option<ReconStatus>,
    #[serde(default)]
    pub submitted_quantity: Option<f64>,
    #[serde(default)]
    pub processed_quantity: Option<f64>,
    #[serde(default)]
    pub submitted_count: Option<u64>,
}

/// Filters of `GET /usageEvents`; only the start date is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub usage_start_date: Timestamp,
    pub usage_end_date: Option<Timestamp>,
    pub offer_id: Option<String>,
    pub plan_id: Option<PlanId>,
    pub dimension: Option<String>,
}
