//! The landing page: Microsoft sends the buyer here with `?token=…` after a purchase (and on every
//! "Manage account"). It resolves the token server-side, records the subscription, shows what was
//! bought and, while the subscription is pending, offers the confirmation form. With sign-in
//! configured, the visitor signs in with Entra ID first (authorization code flow with PKCE).

use std::time::Duration;

use fulfillment::clock::Clock;
use fulfillment::identity::{OidcClient, SignedInUser};
use fulfillment::marketplace::{Call, MarketplaceApi};
use fulfillment::onboarding::{Onboarding, OnboardingError};
use fulfillment::settings::WebSettings;
use fulfillment::store::SubscriptionStore;
use fulfillment::web::pages::{self, ConfirmForm, Frame};
use fulfillment::web::session::{
    self, PendingSignin, SESSION_COOKIE, SESSION_LIFETIME, SIGNIN_COOKIE, SIGNIN_LIFETIME,
};
use fulfillment::web::{query, respond};
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
        // The raw query, not a parsed map: the token must be decoded exactly once (reference §7.3).
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

    /// No session yet: either Entra is sending the visitor back (`code`, `state`), or the visitor
    /// arrives from the marketplace and is sent to sign in first, the token kept in a sealed cookie.
    async fn sign_in(&self, oidc: &OidcClient, raw_query: &str, cookies: Option<&str>) -> Response<String> {
        let now = self.clock.now();
        let secure = self.web.secure_cookies;
        if let Some(error) = query::parameter(raw_query, "error") {
            tracing::warn!(error = %error, "sign-in refused by the identity provider");
            let page = self.problem(
                "Sign-in did not complete",
                "Please open the subscription again from the marketplace and sign in.",
            );
            return respond::html(
                StatusCode::UNAUTHORIZED,
                page,
                &[session::clear_cookie(SIGNIN_COOKIE, secure)],
            );
        }
        if let (Some(code), Some(state)) =
            (query::parameter(raw_query, "code"), query::parameter(raw_query, "state"))
        {
            let pending = cookies
                .and_then(|c| session::cookie(c, SIGNIN_COOKIE))
                .and_then(|c| session::open_signin(&self.web.sealer, c, now).ok())
                .filter(|p| p.start.state == state);
            let Some(pending) = pending else {
                tracing::warn!("sign-in callback without a matching state");
                let page = self
                    .problem("Sign-in expired", "Please open the subscription again from the marketplace.");
                return respond::html(
                    StatusCode::BAD_REQUEST,
                    page,
                    &[session::clear_cookie(SIGNIN_COOKIE, secure)],
                );
            };
            return match oidc.finish(&code, &pending.start).await {
                Ok(user) => {
                    tracing::info!(user_object_id = %user.object_id, user_tenant_id = %user.tenant_id, "signed in");
                    let mut back = self.web.landing_url.clone();
                    back.query_pairs_mut().clear().append_pair("token", &pending.purchase_token);
                    let cookies = [
                        session::set_cookie(
                            SESSION_COOKIE,
                            &session::seal_session(&self.web.sealer, &user, now),
                            SESSION_LIFETIME,
                            secure,
                        ),
                        session::clear_cookie(SIGNIN_COOKIE, secure),
                    ];
                    respond::redirect(back.as_str(), &cookies)
                }
                Err(error) => {
                    tracing::warn!(error = %error, "sign-in failed");
                    let page = self.problem(
                        "Sign-in did not complete",
                        "Please open the subscription again from the marketplace and sign in.",
                    );
                    respond::html(
                        StatusCode::UNAUTHORIZED,
                        page,
                        &[session::clear_cookie(SIGNIN_COOKIE, secure)],
                    )
                }
            };
        }
        let Some(token) = query::purchase_token(raw_query) else {
            return respond::html(StatusCode::BAD_REQUEST, pages::invalid_link(&self.frame(None)), &[]);
        };
        match oidc.begin().await {
            Ok((authorize, start)) => {
                let pending = PendingSignin { start, purchase_token: token };
                let cookie = session::seal_signin(&self.web.sealer, &pending, now);
                respond::redirect(
                    authorize.as_str(),
                    &[session::set_cookie(SIGNIN_COOKIE, &cookie, SIGNIN_LIFETIME, secure)],
                )
            }
            Err(error) => {
                tracing::error!(error = %error, "identity provider unavailable");
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
