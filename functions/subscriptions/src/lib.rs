//! The publisher's admin API, for its own systems only (API Gateway lets only IAM-signed requests
//! through; the handler checks that too). JSON in and out, with stable error bodies
//! `{"error": {"code", "message"}}`.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /admin/self-check` | Entra ID, the Marketplace API, the webhook's keys, the table, the secret: 200 or 500 |
//! | `GET /admin/subscriptions?status=&offerId=&limit=&pageToken=` | a page of subscriptions |
//! | `GET /admin/subscriptions/{id}` | the record, its entitlement and a page of its history |
//! | `GET /admin/subscriptions/{id}/entitlement` | may it be used now, on which plan, with how many seats |
//! | `GET /admin/tenants/{tenantId}/entitlements` | the same for every subscription of a customer tenant |
//! | `PATCH /admin/subscriptions/{id}` `{"planId"}` or `{"quantity"}` | 202 with the pending operation |
//! | `DELETE /admin/subscriptions/{id}` | 202 with the pending cancellation |
//! | `POST /admin/usage` `{"usage": [...]}` | 200 with each report's result (503 when every one is to be sent again) |
//! | `GET /admin/subscriptions/{id}/usage?from=&to=&compare=` | the usage per dimension and hour, where it stands; with Microsoft's records |
//!
//! The metering routes are in [`usage`].

pub mod usage;

use std::time::Duration;

use fulfillment::admin::{ChangeRequest, Publisher, PublisherError, Refusal};
use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::Environment;
use fulfillment::domain::{PlanId, SubscriptionId, SubscriptionStatus};
use fulfillment::identity::JwksCache;
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi, MarketplaceError};
use fulfillment::metering::Meter;
use fulfillment::self_check;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::usage::UsageStore;
use fulfillment::store::{ListFilter, SubscriptionStore};
use fulfillment::web::{query, respond};
use fulfillment::wiring::{SecretSource, Services, StartupError};
use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

const MARKETPLACE_BUDGET: Duration = Duration::from_secs(20);
/// The self-check's checks run at once, well inside the function's timeout.
const SELF_CHECK_BUDGET: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 16 * 1024;
/// History entries in one answer at most: a few kilobytes each, well inside Lambda's 6 MB.
const MAX_HISTORY_PAGE: u32 = 500;

pub struct AdminApi<S, M, C> {
    pub publisher: Publisher<S, M, C>,
    /// The webhook's signing keys, for the self-check.
    pub signing_keys: JwksCache,
    /// The settings' secret, for the self-check.
    pub secret: SecretSource,
    /// Takes the product's usage (metered billing).
    pub meter: Meter<S, M, C>,
    /// The usage routes' default window ends now.
    clock: C,
}

/// The admin API as deployed: DynamoDB, Microsoft's API, the system clock.
pub type Deployed = AdminApi<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

impl Deployed {
    /// The one way to build the deployed admin API (its `main.rs`, the local stack, the benchmarks).
    pub async fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        let services = Services::load(environment).await?;
        let marketplace = services.marketplace_client()?;
        // The client is not Clone: metering gets its own (its token is fetched when first used).
        let metering = services.marketplace_client()?;
        let mut api = Self::assemble(
            services.store.clone(),
            services.store,
            marketplace,
            metering,
            SystemClock,
            &services.environment,
        )?;
        api.secret = services.secret;
        Ok(api)
    }

    /// The self-check as its command prints it: one line per check; `false` when one failed.
    pub async fn self_check_report(&self) -> (String, bool) {
        let findings = self.self_check().await;
        (self_check::render(&findings), self_check::healthy(&findings))
    }
}

impl<S, M, C> AdminApi<S, M, C>
where
    S: SubscriptionStore + UsageStore + Clone,
    M: MarketplaceApi + Clone,
    C: Clock + Clone,
{
    /// The admin API over these ports, with the webhook's key location from `environment` (for
    /// the self-check): what the tests build (the deployed function: [`Deployed::from_environment`]).
    pub fn new(store: S, marketplace: M, clock: C, environment: &Environment) -> Result<Self, StartupError> {
        Self::assemble(store.clone(), store, marketplace.clone(), marketplace, clock, environment)
    }
}

impl<S: SubscriptionStore + UsageStore, M: MarketplaceApi, C: Clock + Clone> AdminApi<S, M, C> {
    /// `metering`: the Marketplace client the meter calls (a second one where it cannot be cloned).
    fn assemble(
        store: S,
        usage: S,
        marketplace: M,
        metering: M,
        clock: C,
        environment: &Environment,
    ) -> Result<Self, StartupError> {
        let keys = JwksCache::new(
            fulfillment::http::client()?,
            environment.webhook_token()?.jwks_url,
            Duration::ZERO,
        );
        Ok(Self {
            publisher: Publisher::new(store, marketplace, clock.clone()),
            signing_keys: keys,
            secret: SecretSource::Environment,
            meter: Meter::new(usage, metering, clock.clone()),
            clock,
        })
    }
}

impl<S: SubscriptionStore + UsageStore, M: MarketplaceApi, C: Clock> AdminApi<S, M, C> {
    async fn self_check(&self) -> Vec<self_check::Finding> {
        let call =
            Call::correlated(format!("self-check-{}", uuid::Uuid::new_v4())).within(MARKETPLACE_BUDGET);
        let secret_changed = tokio::time::timeout(SELF_CHECK_BUDGET, self.secret.changed_at())
            .await
            .unwrap_or_else(|_| Err("the secret's description did not come within the budget".into()));
        let (mut findings, usage) = futures::join!(
            self.publisher.self_check(&self.signing_keys, secret_changed, &call),
            self_check::usage_table(self.meter.store(), self.clock.now()),
        );
        findings.push(usage);
        findings
    }
}

enum Route {
    SelfCheck,
    List,
    Get(SubscriptionId),
    Entitlement(SubscriptionId),
    TenantEntitlements(String),
    Change(SubscriptionId),
    Cancel(SubscriptionId),
    ReportUsage,
    Usage(SubscriptionId),
}

impl<S: SubscriptionStore + UsageStore, M: MarketplaceApi, C: Clock> AdminApi<S, M, C> {
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let response = match iam_caller(&request) {
            None => {
                respond::error(StatusCode::FORBIDDEN, "Forbidden", "the admin API needs IAM-signed requests")
            }
            Some(caller) => {
                let response = self.route(&request).await;
                tracing::info!(caller = %caller, method = %request.method(), path = %request.raw_http_path(), status = response.status().as_u16(), "admin request");
                response
            }
        };
        response.map(Body::from)
    }

    async fn route(&self, request: &Request) -> Response<String> {
        let path = request.raw_http_path();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let id = |raw: &str| SubscriptionId::parse(raw);
        let route = match (request.method(), segments.as_slice()) {
            (&Method::GET, ["admin", "self-check"]) => Some(Route::SelfCheck),
            (&Method::GET, ["admin", "subscriptions"]) => Some(Route::List),
            (&Method::GET, ["admin", "subscriptions", raw]) => id(raw).map(Route::Get),
            (&Method::GET, ["admin", "subscriptions", raw, "entitlement"]) => id(raw).map(Route::Entitlement),
            (&Method::GET, ["admin", "tenants", tenant, "entitlements"]) if !tenant.is_empty() => {
                Some(Route::TenantEntitlements((*tenant).to_owned()))
            }
            (&Method::PATCH, ["admin", "subscriptions", raw]) => id(raw).map(Route::Change),
            (&Method::DELETE, ["admin", "subscriptions", raw]) => id(raw).map(Route::Cancel),
            (&Method::POST, ["admin", "usage"]) => Some(Route::ReportUsage),
            (&Method::GET, ["admin", "subscriptions", raw, "usage"]) => id(raw).map(Route::Usage),
            _ => None,
        };
        let Some(route) = route else {
            return respond::error(StatusCode::NOT_FOUND, "NotFound", "no such route");
        };
        let result = match route {
            Route::SelfCheck => {
                let findings = self.self_check().await;
                let healthy = self_check::healthy(&findings);
                for finding in findings.iter().filter(|f| f.verdict == self_check::Verdict::Fail) {
                    tracing::error!(check = finding.check, detail = %finding.detail, advice = %finding.advice, "self-check failed");
                }
                let status = if healthy { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
                return respond::json(status, &json!({ "healthy": healthy, "findings": findings }));
            }
            Route::List => self.list(request).await,
            Route::Get(id) => self.view(request, &id).await,
            Route::Entitlement(id) => {
                self.publisher.entitlement(&id).await.map(|e| (StatusCode::OK, json!(e)))
            }
            Route::TenantEntitlements(tenant) => self
                .publisher
                .entitlements_of_tenant(&tenant)
                .await
                .map(|all| (StatusCode::OK, json!({ "tenantId": tenant, "entitlements": all }))),
            Route::Change(id) => match change_request(request.body().as_ref()) {
                Ok(change) => self.request(&id, change).await,
                Err(message) => return respond::error(StatusCode::BAD_REQUEST, "InvalidRequest", &message),
            },
            Route::Cancel(id) => self.request(&id, ChangeRequest::Cancel).await,
            Route::ReportUsage => return self.report_usage(request.body().as_ref()).await,
            Route::Usage(id) => return self.usage(request, &id).await,
        };
        match result {
            Ok((status, body)) => respond::json(status, &body),
            Err(failure) => failure_response(&failure),
        }
    }

    async fn list(&self, request: &Request) -> Result<(StatusCode, Value), PublisherError> {
        let raw = request.uri().query().unwrap_or_default();
        let filter = ListFilter {
            status: query::parameter(raw, "status")
                .filter(|s| !s.is_empty())
                .map(|s| SubscriptionStatus::from(s.as_str())),
            offer_id: query::parameter(raw, "offerId").filter(|s| !s.is_empty()),
        };
        let limit =
            query::parameter(raw, "limit").and_then(|l| l.parse().ok()).unwrap_or(100u32).clamp(1, 1000);
        let page = query::parameter(raw, "pageToken").filter(|p| !p.is_empty());
        let page = self.publisher.list(&filter, page.as_deref(), limit).await?;
        let subscriptions: Vec<Value> =
            page.subscriptions.iter().map(|r| json!({ "subscription": r.subscription, "version": r.version, "pendingOperation": r.pending_operation, "updatedAt": r.updated_at })).collect();
        Ok((StatusCode::OK, json!({ "subscriptions": subscriptions, "nextPageToken": page.next })))
    }

    /// A page of the history comes with the record: Lambda answers at most 6 MB, and a history
    /// only grows. `historyLimit` (100, at most [`MAX_HISTORY_PAGE`]) and `historyPageToken`.
    async fn view(
        &self,
        request: &Request,
        id: &SubscriptionId,
    ) -> Result<(StatusCode, Value), PublisherError> {
        let raw = request.uri().query().unwrap_or_default();
        let limit = query::parameter(raw, "historyLimit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100u32)
            .clamp(1, MAX_HISTORY_PAGE);
        let page = query::parameter(raw, "historyPageToken").filter(|p| !p.is_empty());
        let view = self.publisher.view(id, page.as_deref(), limit).await?;
        Ok((StatusCode::OK, json!(view)))
    }

    async fn request(
        &self,
        id: &SubscriptionId,
        change: ChangeRequest,
    ) -> Result<(StatusCode, Value), PublisherError> {
        let call = Call::correlated(format!("admin-{}", uuid::Uuid::new_v4())).within(MARKETPLACE_BUDGET);
        let pending = self.publisher.request(id, change, &call).await?;
        Ok((StatusCode::ACCEPTED, json!({ "subscriptionId": id, "pendingOperation": pending })))
    }
}

/// `{"planId": "…"}` or `{"quantity": n}`, exactly one.
fn change_request(body: &[u8]) -> Result<ChangeRequest, String> {
    if body.len() > MAX_BODY {
        return Err("the body is too large".into());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match (value.get("planId"), value.get("quantity")) {
        (Some(plan), None) => plan
            .as_str()
            .and_then(PlanId::parse)
            .map(ChangeRequest::Plan)
            .ok_or_else(|| "planId must be a non-empty string".into()),
        (None, Some(quantity)) => quantity
            .as_u64()
            .and_then(|q| u32::try_from(q).ok())
            .filter(|q| *q > 0)
            .map(ChangeRequest::Seats)
            .ok_or_else(|| "quantity must be a whole number of seats".into()),
        (Some(_), Some(_)) => Err("change the plan or the quantity, not both in one request".into()),
        (None, None) => Err("give planId or quantity".into()),
    }
}

fn failure_response(failure: &PublisherError) -> Response<String> {
    let message = failure.to_string();
    let (status, code) = match failure {
        PublisherError::NotFound(_) => (StatusCode::NOT_FOUND, "SubscriptionNotFound"),
        PublisherError::InvalidPageToken => (StatusCode::BAD_REQUEST, "InvalidPageToken"),
        PublisherError::Refused(refusal) => {
            let status = match refusal {
                Refusal::SamePlan(_)
                | Refusal::SameSeats(_)
                | Refusal::PlanNotAvailable(_)
                | Refusal::SeatsOutOfBounds { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            (status, refusal.code())
        }
        other => {
            tracing::error!(error = %fulfillment::error_chain(other), "admin request failed");
            let message = fulfillment::error_chain(other);
            return match other {
                _ if other.is_retryable() => respond::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    &format!("{message}; try again"),
                ),
                PublisherError::Marketplace(MarketplaceError::NotFound { .. }) => {
                    respond::error(StatusCode::NOT_FOUND, "NotFoundAtMicrosoft", &message)
                }
                PublisherError::Marketplace(MarketplaceError::Conflict { .. }) => {
                    respond::error(StatusCode::CONFLICT, "ConflictAtMicrosoft", &message)
                }
                // Our configuration or Microsoft's answer is wrong (403 wrong app, an unexpected
                // answer): retrying will not help.
                PublisherError::Marketplace(_) => {
                    respond::error(StatusCode::BAD_GATEWAY, "MarketplaceRefused", &message)
                }
                // The table refused the call (a missing table or permission) or holds what we cannot read.
                _ => respond::error(StatusCode::INTERNAL_SERVER_ERROR, "StoreFailed", &message),
            };
        }
    };
    respond::error(status, code, &message)
}

/// The IAM caller API Gateway authorized, if it did.
fn iam_caller(request: &Request) -> Option<String> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => {
            let iam = context.authorizer.as_ref()?.iam.as_ref()?;
            Some(iam.user_arn.clone().or(iam.caller_id.clone()).unwrap_or_else(|| "iam".into()))
        }
        _ => None,
    }
}
