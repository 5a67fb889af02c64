//! The Marketplace API port: Microsoft's Fulfillment, Operations and Metering APIs v2 as the use
//! cases need them, and the HTTP client behind it ([`HttpMarketplaceClient`]).

// Errors carry Microsoft's error body and request ids for support; they are rare and not hot.
#![allow(clippy::result_large_err)]

mod auth;
mod config;
mod credential;
mod error;
mod http;
mod retry;

use std::future::Future;
use std::time::{Duration, Instant};

pub use auth::{EntraTokenProvider, TokenError};
pub use config::{EntraConfig, MARKETPLACE_RESOURCE_ID, MarketplaceConfig, TokenEndpointVersion};
pub use credential::{Certificate, ClientCredential};
pub use error::{ApiError, MarketplaceError, ResponseMeta};
pub use http::HttpMarketplaceClient;
pub use retry::RetryPolicy;

/// The longest purchase token sent to Microsoft. Microsoft's are a few hundred characters (an
/// encrypted blob, base64); this leaves room, and still fits the sign-in cookie that carries the
/// token through the sign-in (a browser keeps 4,096 bytes a cookie).
pub const MAX_PURCHASE_TOKEN_LENGTH: usize = 2048;

/// Whether `token` may be a purchase token: not empty, not longer than
/// [`MAX_PURCHASE_TOKEN_LENGTH`], only printable ASCII (no header can carry the rest).
pub fn plausible_purchase_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_PURCHASE_TOKEN_LENGTH
        && token.bytes().all(|b| b.is_ascii_graphic())
}

use crate::domain::{
    BatchUsageEventResult, Operation, OperationId, Plan, PlanId, ResolvedSubscription, Subscription,
    SubscriptionId, UsageEvent, UsageEventResult, UsageQuery, UsageRecord,
};

/// One logical call (or a flow of several): the correlation id Microsoft sees on every request,
/// and the instant by which the call must be over (retries included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub correlation_id: String,
    pub deadline: Option<Instant>,
}

impl Call {
    /// A call with a new correlation id and no deadline of its own (the client's default applies).
    pub fn new() -> Self {
        Self { correlation_id: uuid::Uuid::new_v4().to_string(), deadline: None }
    }

    /// A call correlated by `correlation_id` (e.g. the webhook's operation id).
    pub fn correlated(correlation_id: impl Into<String>) -> Self {
        Self { correlation_id: correlation_id.into(), deadline: None }
    }

    /// The same call, over by `deadline`.
    pub fn until(self, deadline: Instant) -> Self {
        Self { deadline: Some(deadline), ..self }
    }

    /// The same call, over `budget` from now.
    pub fn within(self, budget: Duration) -> Self {
        self.until(Instant::now() + budget)
    }
}

impl Default for Call {
    fn default() -> Self {
        Self::new()
    }
}

/// Where to continue listing subscriptions: Microsoft's opaque continuation token, kept exactly as
/// received (still URL-encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken(pub String);

/// One page of `List subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscriptionsPage {
    pub subscriptions: Vec<Subscription>,
    /// `None` on the last page.
    pub next: Option<PageToken>,
}

/// The asynchronous operation a change plan, change quantity or delete started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationLocation {
    pub operation_id: OperationId,
    /// The `Operation-Location` URL as Microsoft gave it (absent if only the id was given).
    pub url: Option<String>,
}

/// The publisher's answer to a customer's plan or quantity change (exactly these two words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    Success,
    Failure,
}

impl AckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::Failure => "Failure",
        }
    }
}

/// What Microsoft did with a single usage event.
#[derive(Debug, Clone, PartialEq)]
pub enum UsageOutcome {
    Accepted(UsageEventResult),
    /// An event for this resource, dimension and hour was accepted before (409): this is it.
    Duplicate(Option<UsageEventResult>),
}

/// Microsoft's limit of usage events in one `batchUsageEvent` call.
pub const MAX_BATCH: usize = 25;

/// Microsoft's SaaS Fulfillment, Operations and Metering APIs v2 (docs/marketplace-api.md#subscription-api, #operations-api, #metering-api).
pub trait MarketplaceApi: Send + Sync {
    /// Resolves a landing-page purchase token (already URL-decoded once) to its subscription.
    fn resolve(
        &self,
        token: &str,
        call: &Call,
    ) -> impl Future<Output = Result<ResolvedSubscription, MarketplaceError>> + Send;

    /// Activates a purchase with the purchased plan and (per-seat plans) quantity. Not idempotent:
    /// a repeat answers 400.
    fn activate(
        &self,
        id: &SubscriptionId,
        plan: &PlanId,
        quantity: Option<u32>,
        call: &Call,
    ) -> impl Future<Output = Result<(), MarketplaceError>> + Send;

    /// One page of every subscription of the publisher; `None` for the first page.
    fn list_subscriptions(
        &self,
        page: Option<&PageToken>,
        call: &Call,
    ) -> impl Future<Output = Result<SubscriptionsPage, MarketplaceError>> + Send;

    fn get_subscription(
        &self,
        id: &SubscriptionId,
        call: &Call,
    ) -> impl Future<Output = Result<Subscription, MarketplaceError>> + Send;

    /// The plans the beneficiary may switch to (the current one included), or only `plan`.
    fn list_available_plans(
        &self,
        id: &SubscriptionId,
        plan: Option<&PlanId>,
        call: &Call,
    ) -> impl Future<Output = Result<Vec<Plan>, MarketplaceError>> + Send;

    fn change_plan(
        &self,
        id: &SubscriptionId,
        plan: &PlanId,
        call: &Call,
    ) -> impl Future<Output = Result<OperationLocation, MarketplaceError>> + Send;

    fn change_quantity(
        &self,
        id: &SubscriptionId,
        quantity: u32,
        call: &Call,
    ) -> impl Future<Output = Result<OperationLocation, MarketplaceError>> + Send;

    fn delete_subscription(
        &self,
        id: &SubscriptionId,
        call: &Call,
    ) -> impl Future<Output = Result<OperationLocation, MarketplaceError>> + Send;

    /// Operations still waiting for the publisher; one without `subscriptionId` takes the
    /// subscription asked for, one without its own `id` is left out.
    fn list_outstanding_operations(
        &self,
        id: &SubscriptionId,
        call: &Call,
    ) -> impl Future<Output = Result<Vec<Operation>, MarketplaceError>> + Send;

    /// One operation; an unknown one is [`MarketplaceError::NotFound`] (404) or, as the real service
    /// does, [`MarketplaceError::BadRequest`] (400), which may also mean something else: the
    /// callers decide. An answer without `id` or `subscriptionId` takes the ids asked for.
    fn get_operation(
        &self,
        id: &SubscriptionId,
        operation: &OperationId,
        call: &Call,
    ) -> impl Future<Output = Result<Operation, MarketplaceError>> + Send;

    /// Accepts or rejects a customer's plan or quantity change.
    fn update_operation_status(
        &self,
        id: &SubscriptionId,
        operation: &OperationId,
        status: AckStatus,
        call: &Call,
    ) -> impl Future<Output = Result<(), MarketplaceError>> + Send;

    fn post_usage_event(
        &self,
        event: &UsageEvent,
        call: &Call,
    ) -> impl Future<Output = Result<UsageOutcome, MarketplaceError>> + Send;

    /// 1 to 25 events; every item of the answer has its own status.
    fn post_usage_events(
        &self,
        events: &[UsageEvent],
        call: &Call,
    ) -> impl Future<Output = Result<BatchUsageEventResult, MarketplaceError>> + Send;

    fn get_usage_events(
        &self,
        query: &UsageQuery,
        call: &Call,
    ) -> impl Future<Output = Result<Vec<UsageRecord>, MarketplaceError>> + Send;

    /// Tries each configured credential of the publisher's app against Entra ID, uncached and
    /// without falling back: (the credential's name, whether Entra accepted it). A stand-in for
    /// Microsoft that holds no credentials answers nothing.
    fn probe_credentials(
        &self,
        _call: &Call,
    ) -> impl Future<Output = Vec<(String, Result<(), TokenError>)>> + Send {
        std::future::ready(Vec::new())
    }
}

/// Every subscription, following the pages to the end.
pub async fn all_subscriptions(
    api: &impl MarketplaceApi,
    call: &Call,
) -> Result<Vec<Subscription>, MarketplaceError> {
    let mut all = Vec::new();
    let mut next = None;
    loop {
        let page = api.list_subscriptions(next.as_ref(), call).await?;
        all.extend(page.subscriptions);
        match page.next {
            // A token we just used would loop forever: treat it as the end.
            Some(token) if Some(&token) != next.as_ref() => next = Some(token),
            _ => return Ok(all),
        }
    }
}
