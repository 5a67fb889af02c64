use serde::{Deserialize, Serialize};

use super::lenient;
use super::{Operation, Subscription};

/// The body Microsoft POSTs to the webhook (docs/marketplace-api.md#webhook-payload): an operation, plus (in the full shape)
/// the subscription as Microsoft saw it when it sent the notification. Only `id`, `subscriptionId`
/// and `action` can be relied on; everything else is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    #[serde(flatten)]
    pub operation: Operation,
    /// For a customer's `ChangePlan`/`ChangeQuantity` it still shows the old plan and seats. Never
    /// state (Microsoft's view is read instead): a snapshot that does not parse is left out rather
    /// than failing the delivery (a 4xx would refuse a customer's change).
    #[serde(default, deserialize_with = "lenient::or_none")]
    pub subscription: Option<Subscription>,
    /// Always `null` in every sample.
    #[serde(default, deserialize_with = "lenient::text")]
    pub purchase_token: Option<String>,
}
