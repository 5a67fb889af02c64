//! The landing page: Microsoft sends the buyer here with `?token=…` after a purchase (and on every
//! "Manage account"). It resolves the token server-side, records the subscription, shows what was
//! bought and, while the subscription is pending, offers the confirmation form. With sign-in
//! configured, the visitor signs in with Entra ID first (authorization code flow with PKCE).

use std::time::Duration;

use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::Environment;
use fulfillment::identity::{OidcClient, SignedInUser};
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi};
use fulfillment::onboarding::{Onboarding, OnboardingError};
use fulfillment::store::SubscriptionStore;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::web::WebSettings;
use fulfillment::web::pages::{self, ConfirmForm, Frame};
use fulfillment::web::signin::{self, SigninStep};
use fulfillment::web::{query, respond, session};
use fulfillment::wiring::{Services, StartupError};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

/// Microsoft must answer within this (retries included); the page should not hang longer.
const MARKETPLACE_BUDGET: Duration = Duration::from_secs(15);

pub struct LandingPage<S, M, C> {
    pub onboarding: Onboarding<S, M, C>,
    pub web: WebSettings,
    pub signin: Option<OidcClient>,
    pub clock: C,
}

/// The landing page as deployed: DynamoDB, Microsoft's API, Entra ID, the system clock.
pub type Deployed = LandingPage<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

impl Deployed {
    /// The one way to build the deployed landing page (its `main.rs`, the local stack, the benchmarks).
    pub async fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        let services = Services::load(environment).await?;
        let marketplace = services.marketplace_client()?;
        services.warm_up("landing", &marketplace).await;
        Self::new(services.store, marketplace, SystemClock, &services.environment)
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock + Clone> LandingPage<S, M, C> {
    /// The landing page over these ports, with its settings (the pages, sign-in, automatic
    /// activation) from `environment`: what the deployed function and the tests build.
    pub fn new(store: S, marketplace: M, clock: C, environment: &Environment) -> Result<Self, StartupError> {
        let web = environment.web()?;
        let signin = match &web.signin {
            Some(settings) => Some(OidcClient::new(fulfillment::http::client()?, settings.clone())),
            None => None,
        };
        let onboarding = Onboarding::new(store, marketplace, clock.clone(), web.auto_activate);
        Ok(Self { onboarding, web, signin, clock })
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> LandingPage<S, M, C> {
    pub async fn handle(&self, request: Request) -> Response<Body> {
        self.respond(request).await.map(Body::from)
    }

    async fn respond(&self, request: Request) -> Response<String> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return respond::html(
                StatusCode::METHOD_NOT_ALLOWED,
                self.problem("Not allowed", "This page only answers GET."),
                &[],
            );
        }
        // The raw query, not a parsed map: the token must be decoded exactly once (docs/marketplace-api.md#token-decoding).
        let raw_query = request.uri().query().unwrap_or_default().to_owned();
        let cookies = request.headers().get("cookie").and_then(|v| v.to_str().ok());
        let now = self.clock.now();

        let user = match &self.signin {
            None => None,
            Some(oidc) => match session::session_user(&self.web.sealer, cookies, now) {
                Some(user) => Some(user),
                None => return self.sign_in(oidc, &raw_query, cookies).await,
            },
        };
        let Some(token) = query::purchase_token(&raw_query) else {
            tracing::info!("landing without a usable token");
            return respond::html(
                StatusCode::BAD_REQUEST,
                pages::invalid_link(&self.frame(user.as_ref())),
                &[],
            );
        };
        let call = Call::correlated(format!("landing-{}", uuid::Uuid::new_v4())).within(MARKETPLACE_BUDGET);
        match self.onboarding.land(&token, &call).await {
            Ok(landed) => {
                let subscription = &landed.subscription;
                let form_token;
                let confirm = if landed.activated {
                    None
                } else {
                    form_token = session::form_token(
                        &self.web.sealer,
                        subscription.id.as_str(),
                        user.as_ref(),
                        now,
                        self.web.form_lifetime,
                    );
                    Some(ConfirmForm {
                        action: self.web.activate_url.as_str(),
                        subscription_id: subscription.id.as_str(),
                        form_token: &form_token,
                    })
                };
                let page =
                    pages::landing(&self.frame(user.as_ref()), subscription, landed.plan.as_ref(), confirm);
                respond::html(StatusCode::OK, page, &[])
            }
            Err(error) => self.failure(&error, user.as_ref(), &raw_query),
        }
    }

    /// No session yet: the sign-in's next step.
    async fn sign_in(&self, oidc: &OidcClient, raw_query: &str, cookies: Option<&str>) -> Response<String> {
        match signin::next_step(oidc, &self.web, raw_query, cookies, self.clock.now()).await {
            SigninStep::Redirect { location, cookies } => respond::redirect(&location, &cookies),
            SigninStep::Failed { failure, cookies } => {
                tracing::warn!(error = %fulfillment::error_chain(&failure), "sign-in failed");
                let (status, page) = if failure.is_expired() {
                    let page = self.problem(
                        "Sign-in expired",
                        "Please open the subscription again from the marketplace.",
                    );
                    (StatusCode::BAD_REQUEST, page)
                } else {
                    let page = self.problem(
                        "Sign-in did not complete",
                        "Please open the subscription again from the marketplace and sign in.",
                    );
                    (StatusCode::UNAUTHORIZED, page)
                };
                respond::html(status, page, &cookies)
            }
            SigninStep::NoToken => {
                respond::html(StatusCode::BAD_REQUEST, pages::invalid_link(&self.frame(None)), &[])
            }
            SigninStep::Unavailable(error) => {
                tracing::error!(error = %fulfillment::error_chain(&error), "identity provider unavailable");
                respond::retry_later(pages::unavailable(&self.frame(None), &self.retry_url(raw_query)), 30)
            }
        }
    }

    fn failure(
        &self,
        error: &OnboardingError,
        user: Option<&SignedInUser>,
        raw_query: &str,
    ) -> Response<String> {
        let frame = self.frame(user);
        match error {
            OnboardingError::InvalidToken(_) => {
                tracing::info!(error = %fulfillment::error_chain(error), "purchase token refused");
                respond::html(StatusCode::BAD_REQUEST, pages::invalid_link(&frame), &[])
            }
            _ if error.is_retryable() => {
                tracing::warn!(error = %fulfillment::error_chain(error), "landing unavailable");
                respond::retry_later(pages::unavailable(&frame, &self.retry_url(raw_query)), 30)
            }
            OnboardingError::NotActivatable { status, .. } => {
                respond::html(StatusCode::CONFLICT, pages::not_activatable(&frame, status), &[])
            }
            OnboardingError::ActivatedNotRecorded { .. } => {
                tracing::error!(error = %fulfillment::error_chain(error), "activated but not recorded");
                let page = self.problem(
                    "Subscription activated",
                    "Your subscription is active. We are still finishing its set-up on our side: \
                     open it again from the marketplace in a few minutes.",
                );
                respond::html(StatusCode::ACCEPTED, page, &[])
            }
            _ => {
                tracing::error!(error = %fulfillment::error_chain(error), "landing failed");
                let page = self.problem(
                    "Something went wrong",
                    "We could not set up your subscription. Please try again later or contact support.",
                );
                respond::html(StatusCode::BAD_GATEWAY, page, &[])
            }
        }
    }

    fn retry_url(&self, raw_query: &str) -> String {
        let mut url = self.web.landing_url.clone();
        url.set_query(Some(raw_query).filter(|q| !q.is_empty()));
        url.to_string()
    }

    fn frame<'a>(&'a self, user: Option<&'a SignedInUser>) -> Frame<'a> {
        Frame { product_name: &self.web.product_name, user }
    }

    fn problem(&self, title: &str, message: &str) -> String {
        pages::problem(&self.frame(None), title, message)
    }
}
