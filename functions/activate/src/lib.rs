//! Activation: the buyer's confirmation form on the landing page POSTs here (guarded by a sealed,
//! expiring form token bound to the subscription and the signed-in user), and so may the
//! publisher's own tooling on the IAM-authorized admin route. Activation is idempotent.

use std::time::Duration;

use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::Environment;
use fulfillment::domain::{OperationId, SubscriptionId};
use fulfillment::identity::SignedInUser;
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi};
use fulfillment::onboarding::{Activation, Onboarding, OnboardingError};
use fulfillment::store::SubscriptionStore;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::web::WebSettings;
use fulfillment::web::confirmation::{self, Confirmation, ConfirmationError};
use fulfillment::web::pages::{self, ConfirmForm, Frame};
use fulfillment::web::{respond, session};
use fulfillment::wiring::{Services, StartupError};
use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

const MARKETPLACE_BUDGET: Duration = Duration::from_secs(15);

pub struct ActivatePage<S, M, C> {
    pub onboarding: Onboarding<S, M, C>,
    pub web: WebSettings,
    pub clock: C,
}

/// Activation as deployed: DynamoDB, Microsoft's API, the system clock.
pub type Deployed = ActivatePage<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

impl Deployed {
    /// The one way to build the deployed activation (its `main.rs`, the local stack, the benchmarks).
    pub async fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        let services = Services::load(environment).await?;
        let marketplace = services.marketplace_client()?;
        services.warm_up("activate", &marketplace).await;
        Self::new(services.store, marketplace, SystemClock, &services.environment)
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock + Clone> ActivatePage<S, M, C> {
    /// Activation over these ports, with the pages' settings from `environment`: what the
    /// deployed function and the tests build.
    pub fn new(store: S, marketplace: M, clock: C, environment: &Environment) -> Result<Self, StartupError> {
        // Activation is what this function does when asked: never on its own.
        let onboarding = Onboarding::new(store, marketplace, clock.clone(), false);
        Ok(Self { onboarding, web: environment.web()?, clock })
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> ActivatePage<S, M, C> {
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let response = if request.method() != Method::POST {
            respond::html(
                StatusCode::METHOD_NOT_ALLOWED,
                self.problem("Not allowed", "Activation is a POST."),
                &[],
            )
        } else if let Some(id) = admin_subscription(&request) {
            self.tooling(id, &request).await
        } else {
            self.confirmation(&request).await
        };
        response.map(Body::from)
    }

    /// The landing page's confirmation form.
    async fn confirmation(&self, request: &Request) -> Response<String> {
        let now = self.clock.now();
        let cookies = request.headers().get("cookie").and_then(|v| v.to_str().ok());
        let user = session::session_user(&self.web.sealer, cookies, now);
        let frame = self.frame(user.as_ref());
        let Confirmation { subscription_id: id, operation_id } =
            match confirmation::read(&self.web, request.body().as_ref(), user.as_ref(), now) {
                Ok(confirmation) => confirmation,
                Err(error) => {
                    tracing::warn!(error = %fulfillment::error_chain(&error), "confirmation form refused");
                    let status = match error {
                        ConfirmationError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                        ConfirmationError::Incomplete => StatusCode::BAD_REQUEST,
                        ConfirmationError::NotSignedIn { .. } | ConfirmationError::Token { .. } => {
                            StatusCode::FORBIDDEN
                        }
                    };
                    return respond::html(status, pages::form_rejected(&frame), &[]);
                }
            };
        match self.activate(&id, &operation_id).await {
            Ok(activation) => {
                let page = pages::activated(
                    &frame,
                    &activation.subscription,
                    activation.plan.as_ref(),
                    activation.activated_now,
                    self.web.product_url.as_deref(),
                );
                respond::html(StatusCode::OK, page, &[])
            }
            Err(error) => self.page_for(&error, &id, user.as_ref()),
        }
    }

    /// The publisher's tooling, on the IAM-authorized admin route: JSON in the answer.
    async fn tooling(&self, id: SubscriptionId, request: &Request) -> Response<String> {
        let request_id = request.lambda_context_ref().map(|c| c.request_id.clone()).filter(|r| !r.is_empty());
        let operation =
            format!("activate-{}", request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()));
        let operation_id = OperationId::parse(&operation).expect("not empty");
        match self.activate(&id, &operation_id).await {
            Ok(activation) => respond::json(
                StatusCode::OK,
                &json!({
                    "subscriptionId": id,
                    "status": activation.subscription.status,
                    "planId": activation.subscription.plan_id,
                    "quantity": activation.subscription.quantity,
                    "activatedNow": activation.activated_now,
                }),
            ),
            Err(error) => {
                let (status, code) = match &error {
                    OnboardingError::UnknownSubscription(_) => {
                        (StatusCode::NOT_FOUND, "SubscriptionNotFound")
                    }
                    OnboardingError::NotActivatable { .. } => (StatusCode::CONFLICT, "NotActivatable"),
                    // Done at Microsoft; asking again records it.
                    OnboardingError::ActivatedNotRecorded { .. } => {
                        (StatusCode::ACCEPTED, "ActivatedNotRecorded")
                    }
                    e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
                    OnboardingError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "StoreFailed"),
                    _ => (StatusCode::BAD_GATEWAY, "MarketplaceRefused"),
                };
                respond::error(status, code, &error.to_string())
            }
        }
    }

    async fn activate(
        &self,
        id: &SubscriptionId,
        operation_id: &OperationId,
    ) -> Result<Activation, OnboardingError> {
        let call = Call::correlated(operation_id.as_str()).within(MARKETPLACE_BUDGET);
        let result = self.onboarding.activate(id, operation_id, &call).await;
        match &result {
            Ok(activation) => tracing::info!(
                subscription_id = %id,
                operation_id = %operation_id,
                activated_now = activation.activated_now,
                "activation done"
            ),
            Err(error) => {
                tracing::warn!(subscription_id = %id, operation_id = %operation_id, error = %fulfillment::error_chain(error), "activation failed")
            }
        }
        result
    }

    fn page_for(
        &self,
        error: &OnboardingError,
        id: &SubscriptionId,
        user: Option<&SignedInUser>,
    ) -> Response<String> {
        let frame = self.frame(user);
        match error {
            OnboardingError::NotActivatable { status, .. } => {
                respond::html(StatusCode::CONFLICT, pages::not_activatable(&frame, status), &[])
            }
            OnboardingError::UnknownSubscription(_) => respond::html(
                StatusCode::NOT_FOUND,
                self.problem("Subscription not found", "Microsoft does not know this subscription."),
                &[],
            ),
            OnboardingError::ActivatedNotRecorded { .. } => respond::html(
                StatusCode::ACCEPTED,
                self.problem(
                    "Subscription activated",
                    "Your subscription is active. We are still finishing its set-up on our side: \
                     open it again from the marketplace in a few minutes.",
                ),
                &[],
            ),
            e if e.is_retryable() => {
                // A fresh form, so the buyer can simply press the button again.
                let token = session::form_token(
                    &self.web.sealer,
                    id.as_str(),
                    user,
                    self.clock.now(),
                    self.web.form_lifetime,
                );
                let form = ConfirmForm {
                    action: self.web.activate_url.as_str(),
                    subscription_id: id.as_str(),
                    form_token: &token,
                };
                respond::retry_later(pages::confirm_again(&frame, form), 30)
            }
            _ => respond::html(
                StatusCode::BAD_GATEWAY,
                self.problem(
                    "Activation failed",
                    "We could not activate your subscription. Please contact support.",
                ),
                &[],
            ),
        }
    }

    fn frame<'a>(&'a self, user: Option<&'a SignedInUser>) -> Frame<'a> {
        Frame { product_name: &self.web.product_name, user }
    }

    fn problem(&self, title: &str, message: &str) -> String {
        pages::problem(&self.frame(None), title, message)
    }
}

/// `POST /admin/subscriptions/{id}/activate`, only when API Gateway authorized the caller with IAM.
fn admin_subscription(request: &Request) -> Option<SubscriptionId> {
    let path = request.raw_http_path();
    let id = path.strip_prefix("/admin/subscriptions/")?.strip_suffix("/activate")?;
    let iam = match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.authorizer.as_ref().is_some_and(|a| a.iam.is_some()),
        _ => false,
    };
    if !iam {
        tracing::warn!("admin activation without IAM authorization");
        return None;
    }
    SubscriptionId::parse(id)
}
