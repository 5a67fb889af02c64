//! Faults, webhook faults and quirks that tests switch on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An endpoint a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    /// Entra token endpoint (v1 and v2).
    Token,
    /// `POST /saas/subscriptions/resolve`.
    Resolve,
    /// `POST /saas/subscriptions/{id}/activate`.
    Activate,
    /// `GET /saas/subscriptions`.
    ListSubscriptions,
    /// `GET /saas/subscriptions/{id}`.
    GetSubscription,
    /// `GET /saas/subscriptions/{id}/listAvailablePlans`.
    ListPlans,
    /// `PATCH /saas/subscriptions/{id}` with `planId` (or any body without `quantity`).
    ChangePlan,
    /// `PATCH /saas/subscriptions/{id}` with `quantity` only.
    ChangeQuantity,
    /// `DELETE /saas/subscriptions/{id}`.
    DeleteSubscription,
    /// `GET /saas/subscriptions/{id}/operations`.
    ListOperations,
    /// `GET /saas/subscriptions/{id}/operations/{operationId}`.
    GetOperation,
    /// `PATCH /saas/subscriptions/{id}/operations/{operationId}`.
    UpdateOperation,
    /// `POST /usageEvent`.
    UsageEvent,
    /// `POST /batchUsageEvent`.
    BatchUsageEvent,
    /// `GET /usageEvents`.
    GetUsageEvents,
    /// The JWKS endpoints (v1 and v2 paths).
    Jwks,
    /// The sign-in (authorization) endpoint `…/oauth2/v2.0/authorize`.
    Authorize,
}

/// What is wrong with the publisher's app registration while it is set: the client-credentials
/// grant answers Entra ID's error for it (`AADSTS<code>`), whatever the request says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CredentialFault {
    /// AADSTS7000229: the app has no service principal in the tenant.
    NoServicePrincipal,
    /// AADSTS7000215: the client secret is not the app's.
    WrongSecret,
    /// AADSTS7000222: the client secret has expired.
    ExpiredSecret,
    /// AADSTS700016: no such app in the tenant.
    UnknownApp,
}

/// How the Metering API answers every usage event of one resource while it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MeteringFault {
    /// The app may not report usage for the resource, as seen on a fresh private plan: the item's
    /// status `ResourceNotAuthorized` in a batch, 403 for a single event.
    ResourceNotAuthorized,
    /// Microsoft failed on the item: status `Error` in a batch, 500 for a single event.
    Error,
}

/// A defect of the ID tokens the token endpoint issues (authorization-code grant) while it is
/// set, for tests of the relying party's ID-token checks. Everything else stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdTokenFault {
    /// `nonce` differs from the authorize request's (present even if none was sent).
    WrongNonce,
    /// `aud` is another app's id.
    WrongAudience,
    /// `iss` names another tenant than `tid` (same authority): `{authority}/{other}/v2.0`.
    WrongIssuer,
    /// `iss` is of another authority: `https://issuer.invalid/{tid}/v2.0`.
    ForeignIssuer,
    /// `exp` is an hour in the past (`iat`/`nbf` two hours).
    Expired,
    /// `nbf` (and `iat`) is an hour in the future.
    NotYetValid,
    /// RS256 with the published `kid`, but signed by another key (the signature does not verify).
    UnpublishedKey,
    /// `alg: none` and no signature.
    AlgNone,
    /// Signed by the published key, but the header's `kid` is not in the JWKS.
    UnknownKid,
}

/// What an injected fault does to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Fault {
    /// Answer with this status (and optional `Retry-After` raw value and JSON body) instead of handling.
    #[serde(rename_all = "camelCase")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Raw `Retry-After` header value: seconds or an HTTP-date.
        #[serde(default)]
        retry_after: Option<String>,
        /// JSON body; `None` gives Microsoft's body for that status (5xx) or an empty one.
        #[serde(default)]
        body: Option<serde_json::Value>,
    },
    /// Wait this long, then handle the call normally.
    Latency(#[serde(with = "millis")] Duration),
    /// Close the TCP connection without any HTTP response.
    DropConnection,
}

impl Fault {
    /// A status fault without `Retry-After` and with the default body.
    pub fn status(status: u16) -> Self {
        Self::Status { status, retry_after: None, body: None }
    }

    /// A status fault with a raw `Retry-After` value (e.g. 429 with "2").
    pub fn status_retry_after(status: u16, retry_after: &str) -> Self {
        Self::Status { status, retry_after: Some(retry_after.into()), body: None }
    }
}

/// Faults applied to webhook deliveries until cleared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookFaults {
    /// Each webhook is also delivered this many extra times.
    pub duplicates: u32,
    /// Wait this long before delivering.
    #[serde(with = "opt_millis")]
    pub delay: Option<Duration>,
    /// Hold deliveries; `flush_webhooks` sends them in reverse order.
    pub reorder: bool,
    /// Do not deliver (recorded as dropped).
    pub drop: bool,
    /// Do not deliver Partner-sourced webhooks (recorded as dropped).
    pub drop_partner_only: bool,
}

/// Deviations from the real API's shapes, or documented real-API oddities, switched on per test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Quirk {
    /// List outstanding operations returns a bare JSON array (Microsoft's emulator) instead of `{"operations":[…]}`.
    OutstandingOperationsAsBareArray,
    /// Emit `operationRequestedSource` (Microsoft emulator's spelling) instead of `operationRequestSource`.
    OperationRequestedSourceSpelling,
    /// List subscriptions answers 200 with an empty body when the publisher has none.
    EmptyBodyWhenNoSubscriptions,
    /// Render `quantity` as a string ("20"), as some doc samples do.
    QuantityAsString,
    /// Pad `saasSubscriptionStatus` with spaces (" Subscribed "), as some doc samples do.
    PaddedStatus,
    /// Render `lastModified` as the sentinel "0001-01-01T00:00:00".
    LastModifiedSentinel,
    /// Webhooks carry only id, activityId, operationRequestSource, subscriptionId, timeStamp, action.
    MinimalWebhookPayload,
    /// Get operation answers 400 for notify-only actions (Suspend, Reinstate, Renew, Azure Unsubscribe).
    NoOperationForNotifyOnly,
    /// Activate accepts a planId other than the purchased one (what the real API was observed to do).
    ActivateAcceptsAnyPlan,
    /// `GET /usageEvents` answers a JSON string holding the array, as the real API once did.
    UsageEventsAsJsonString,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
