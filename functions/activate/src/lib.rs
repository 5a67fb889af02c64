//! Activation: the buyer's confirmation form on the landing page POSTs here (guarded by a sealed,
//! expiring form token bound to the subscription and the signed-in user), and so may the
//! publisher's own tooling on the IAM-authorized admin route. Activation is idempotent.

use std::time::Duration;

use fulfillment::clock::Clock;
use fulfillment::domain::{OperationId, SubscriptionId};
use fulfillment::identity::SignedInUser;
use fulfillment::marketplace::{Call, MarketplaceApi};
use fulfillment::onboarding::{Activation, Onboarding, OnboardingError};
use fulfillment::settings::WebSettings;
use fulfillment::store::SubscriptionStore;
use fulfillment::web::pages::{self, ConfirmForm, Frame};
use fulfillment::web::{query, respond, session};
use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

const MARKETPLACE_BUDGET: Duration = Duration::from_secs(15);
/// A confirmation form is a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

pub struct ActivatePage<S, M, C> {
    pub onboarding: Onboarding<S, M, C>,
    pub web: WebSettings,
    pub clock: C,
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
        let body = request.body().as_ref();
        if body.len() > MAX_BODY {
            return respond::html(
                StatusCode::PAYLOAD_TOO_LARGE,
                self.problem("Too large", "This form is too large."),
                &[],
            );
        }
        let form = std::str::from_utf8(body).unwrap_or_default();
        let (Some(subscription_id), Some(form_token)) = (
            query::parameter(&form.replace('+', "%20"), "subscription_id"),
            query::parameter(&form.replace('+', "%20"), "form_token"),
        ) else {
            return respond::html(StatusCode::BAD_REQUEST, pages::form_rejected(&frame), &[]);
        };
        if self.web.signin.is_some() && user.is_none() {
            tracing::warn!(subscription_id = %subscription_id, "confirmation without a signed-in session");
            return respond::html(StatusCode::FORBIDDEN, pages::form_rejected(&frame), &[]);
        }
        let nonce = match session::check_form_token(
            &self.web.sealer,
            &form_token,
            &subscription_id,
            user.as_ref(),
            now,
        ) {
            Ok(nonce) => nonce,
            Err(error) => {
                tracing::warn!(subscription_id = %subscription_id, error = %error, "confirmation form refused");
                return respond::html(StatusCode::FORBIDDEN, pages::form_rejected(&frame), &[]);
            }
        };
        let (Some(id), Some(operation_id)) =
            (SubscriptionId::parse(&subscription_id), OperationId::parse(&format!("activate-{nonce}")))
        else {
            return respond::html(StatusCode::BAD_REQUEST, pages::form_rejected(&frame), &[]);
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
                    e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
                    _ => (StatusCode::BAD_GATEWAY, "MarketplaceRefused"),
                };
                respond::json(status, &json!({ "error": { "code": code, "message": error.to_string() } }))
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
