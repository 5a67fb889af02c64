use serde::{Deserialize, Serialize};

use super::lenient::{self, Timestamp, lenient_enum, string_id};
use super::{PlanId, SubscriptionId};

string_id!(
    /// An operation id: the webhook payload's `id`, the last path segment of `Operation-Location`,
    /// and our idempotency key.
    OperationId
);

lenient_enum! {
    /// What an operation or webhook is about (docs/marketplace-api.md#operation-object, #webhook-actions). `Subscribe` and `Transfer`
    /// are outside the spec's enum but have been documented; anything else is kept as `Unknown`.
    pub enum OperationAction {
        Subscribe = "Subscribe",
        ChangePlan = "ChangePlan",
        ChangeQuantity = "ChangeQuantity",
        Renew = "Renew",
        Suspend = "Suspend",
        Reinstate = "Reinstate",
        Unsubscribe = "Unsubscribe",
        Transfer = "Transfer",
    }
}

lenient_enum! {
    /// Status of an operation. Legacy docs printed `Success`, `In Progress` (and `Failure`).
    pub enum OperationStatus {
        NotStarted = "NotStarted",
        InProgress = "InProgress" | "In Progress",
        Succeeded = "Succeeded" | "Success",
        Failed = "Failed" | "Failure",
        Conflict = "Conflict",
    }
}

impl OperationStatus {
    /// `Succeeded`, `Failed` and `Conflict` are final; only those are acted on when polling.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Conflict)
    }
}

lenient_enum! {
    /// Who asked for the operation: the customer on Microsoft's side, or the publisher's API call.
    pub enum RequestSource {
        Azure = "Azure",
        Partner = "Partner",
    }
}

/// An operation of the Operations API (`SaaSOperation`, docs/marketplace-api.md#operation-object); also the body of a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: OperationId,
    pub subscription_id: SubscriptionId,
    /// The one old sample `{"subscriptionId": …, "operationType": "Reinstate"}` names it differently.
    #[serde(default, alias = "operationType")]
    pub action: Option<OperationAction>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub activity_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub publisher_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub offer_id: Option<String>,
    /// For `ChangePlan`: the target plan; otherwise the current one.
    #[serde(default)]
    pub plan_id: Option<PlanId>,
    /// For `ChangeQuantity`: the target seat count; otherwise the current one.
    #[serde(default, deserialize_with = "lenient::quantity")]
    pub quantity: Option<u32>,
    /// Note the capital S; `timestamp` is accepted too.
    #[serde(rename = "timeStamp", alias = "timestamp", default, deserialize_with = "lenient::timestamp")]
    pub time_stamp: Option<Timestamp>,
    #[serde(default)]
    pub status: Option<OperationStatus>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub error_status_code: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub error_message: Option<String>,
    /// Microsoft's emulator spells it `operationRequestedSource`.
    #[serde(default, alias = "operationRequestedSource")]
    pub operation_request_source: Option<RequestSource>,
}
