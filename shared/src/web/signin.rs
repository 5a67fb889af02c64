//! The landing page's sign-in with Entra ID (authorization code flow with PKCE), one step per
//! visit. A visitor without a session is sent to Entra, the purchase token kept in a sealed
//! cookie; Entra sends the browser back with `code` and `state` (or `error`); the code is redeemed,
//! the session cookie set, and the visitor returned to the landing page with the token.

use super::WebSettings;
use super::query;
use super::session::{self, PendingSignin, SESSION_COOKIE, SESSION_LIFETIME, SIGNIN_COOKIE, SIGNIN_LIFETIME};
use crate::domain::Timestamp;
use crate::identity::{OidcClient, OidcError};

/// What the visit leads to.
#[derive(Debug)]
pub enum SigninStep {
    /// Send the browser to `location`, setting `cookies` (to Entra, or back to the landing page).
    Redirect { location: String, cookies: Vec<String> },
    /// The sign-in cannot go on; `cookies` clear the pending sign-in.
    Failed { failure: SigninFailure, cookies: Vec<String> },
    /// The visit carries no purchase token to sign in for.
    NoToken,
    /// Entra cannot be reached now.
    Unavailable(OidcError),
}

#[derive(Debug, thiserror::Error)]
pub enum SigninFailure {
    /// Entra sent the visitor back with an `error` (e.g. consent denied).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// A callback whose `state` matches no sign-in of this browser (expired, or not started here).
    #[error("the sign-in callback matches no sign-in in progress")]
    Expired,
    /// The code could not be redeemed or the ID token is not valid.
    #[error("the sign-in could not be completed")]
    NotCompleted(#[source] OidcError),
}

impl SigninFailure {
    /// Whether starting again from the marketplace is all the visitor can do (no code to redeem).
    pub fn is_expired(&self) -> bool {
        matches!(self, Self::Expired)
    }
}

/// The next step of the sign-in for a visit without a session: `raw_query` as the browser sent
/// it, `cookies` its `Cookie` header.
pub async fn next_step(
    oidc: &OidcClient,
    web: &WebSettings,
    raw_query: &str,
    cookies: Option<&str>,
    now: Timestamp,
) -> SigninStep {
    let secure = web.secure_cookies;
    let failed =
        |failure| SigninStep::Failed { failure, cookies: vec![session::clear_cookie(SIGNIN_COOKIE, secure)] };
    if let Some(error) = query::parameter(raw_query, "error") {
        return failed(SigninFailure::Refused(error));
    }
    if let (Some(code), Some(state)) =
        (query::parameter(raw_query, "code"), query::parameter(raw_query, "state"))
    {
        let pending = cookies
            .and_then(|c| session::cookie(c, SIGNIN_COOKIE))
            .and_then(|c| session::open_signin(&web.sealer, c, now).ok())
            .filter(|p| p.start.state == state);
        let Some(pending) = pending else {
            return failed(SigninFailure::Expired);
        };
        return match oidc.finish(&code, &pending.start).await {
            Ok(user) => {
                tracing::info!(user_object_id = %user.object_id, user_tenant_id = %user.tenant_id, "signed in");
                let mut back = web.landing_url.clone();
                back.query_pairs_mut().clear().append_pair("token", &pending.purchase_token);
                let session = session::seal_session(&web.sealer, &user, now);
                SigninStep::Redirect {
                    location: back.to_string(),
                    cookies: vec![
                        session::set_cookie(SESSION_COOKIE, &session, SESSION_LIFETIME, secure),
                        session::clear_cookie(SIGNIN_COOKIE, secure),
                    ],
                }
            }
            // A code is redeemed once: whatever went wrong, the visitor starts again.
            Err(error) => failed(SigninFailure::NotCompleted(error)),
        };
    }
    let Some(token) = query::purchase_token(raw_query) else {
        return SigninStep::NoToken;
    };
    match oidc.begin().await {
        Ok((authorize, start)) => {
            let pending = PendingSignin { start, purchase_token: token };
            let cookie = session::seal_signin(&web.sealer, &pending, now);
            SigninStep::Redirect {
                location: authorize.to_string(),
                cookies: vec![session::set_cookie(SIGNIN_COOKIE, &cookie, SIGNIN_LIFETIME, secure)],
            }
        }
        Err(error) => SigninStep::Unavailable(error),
    }
}
