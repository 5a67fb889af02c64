//! Cookies and confirmation-form tokens, all sealed with the web settings' key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::seal::{SealError, Sealer};
use crate::domain::Timestamp;
use crate::identity::{SignedInUser, SigninStart};

/// The signed-in visitor.
pub const SESSION_COOKIE: &str = "landing_session";
/// A sign-in in progress: state, nonce, PKCE verifier and the purchase token to come back to.
pub const SIGNIN_COOKIE: &str = "landing_signin";
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
pub const SIGNIN_LIFETIME: Duration = Duration::from_secs(10 * 60);

const FORM: &str = "activate-form";
const SESSION: &str = "session";
const SIGNIN: &str = "signin";

#[derive(Debug, Serialize, Deserialize)]
struct FormClaims {
    /// The subscription the form confirms.
    sub: String,
    /// The signed-in visitor it was shown to, when sign-in is on.
    uid: Option<String>,
    /// Unique per form: the activation's idempotency key.
    n: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the form was issued for another subscription")]
    OtherSubscription,
    #[error("the form was issued to another user")]
    OtherUser,
}

/// A confirmation-form token bound to the subscription (and the signed-in user).
pub fn form_token(
    sealer: &Sealer,
    subscription_id: &str,
    user: Option<&SignedInUser>,
    now: Timestamp,
    lifetime: Duration,
) -> String {
    let claims = FormClaims {
        sub: subscription_id.to_owned(),
        uid: user.map(|u| u.object_id.clone()),
        n: uuid::Uuid::new_v4().to_string(),
    };
    sealer.seal(FORM, &claims, now + lifetime)
}

/// Checks a confirmation-form token; returns its unique id.
pub fn check_form_token(
    sealer: &Sealer,
    token: &str,
    subscription_id: &str,
    user: Option<&SignedInUser>,
    now: Timestamp,
) -> Result<String, FormError> {
    let claims: FormClaims = sealer.open(FORM, token, now)?;
    if claims.sub != subscription_id {
        return Err(FormError::OtherSubscription);
    }
    if claims.uid.as_deref() != user.map(|u| u.object_id.as_str()) {
        return Err(FormError::OtherUser);
    }
    Ok(claims.n)
}

/// A sign-in in progress, with the purchase token to return to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignin {
    pub start: SigninStart,
    pub purchase_token: String,
}

pub fn seal_signin(sealer: &Sealer, pending: &PendingSignin, now: Timestamp) -> String {
    sealer.seal(SIGNIN, pending, now + SIGNIN_LIFETIME)
}

pub fn open_signin(sealer: &Sealer, cookie: &str, now: Timestamp) -> Result<PendingSignin, SealError> {
    sealer.open(SIGNIN, cookie, now)
}

pub fn seal_session(sealer: &Sealer, user: &SignedInUser, now: Timestamp) -> String {
    sealer.seal(SESSION, user, now + SESSION_LIFETIME)
}

/// The signed-in user of a `Cookie` header, if its session cookie is valid.
pub fn session_user(sealer: &Sealer, cookie_header: Option<&str>, now: Timestamp) -> Option<SignedInUser> {
    sealer.open(SESSION, cookie(cookie_header?, SESSION_COOKIE)?, now).ok()
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (it must survive the top-level redirect back from
/// the identity provider), whole site.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{secure}", max_age.as_secs())
}

pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(name, "", Duration::ZERO, secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().expect("time")
    }

    fn user(oid: &str) -> SignedInUser {
        SignedInUser { name: None, email: None, object_id: oid.into(), tenant_id: "t".into() }
    }

    #[test]
    fn a_form_token_is_bound_to_its_subscription_user_and_time() {
        let sealer = Sealer::new(&[3u8; 32]).expect("key");
        let lifetime = Duration::from_secs(60);
        let token = form_token(&sealer, "sub-1", Some(&user("u1")), now(), lifetime);
        assert!(check_form_token(&sealer, &token, "sub-1", Some(&user("u1")), now()).is_ok());
        assert_eq!(
            check_form_token(&sealer, &token, "sub-2", Some(&user("u1")), now()),
            Err(FormError::OtherSubscription)
        );
        assert_eq!(
            check_form_token(&sealer, &token, "sub-1", Some(&user("u2")), now()),
            Err(FormError::OtherUser)
        );
        assert_eq!(check_form_token(&sealer, &token, "sub-1", None, now()), Err(FormError::OtherUser));
        let later = now() + chrono::Duration::seconds(61);
        assert_eq!(
            check_form_token(&sealer, &token, "sub-1", Some(&user("u1")), later),
            Err(FormError::Seal(SealError::Expired))
        );
        let a = form_token(&sealer, "sub-1", None, now(), lifetime);
        let b = form_token(&sealer, "sub-1", None, now(), lifetime);
        assert_ne!(
            check_form_token(&sealer, &a, "sub-1", None, now()),
            check_form_token(&sealer, &b, "sub-1", None, now())
        );
    }

    /// A browser keeps 4,096 bytes of a cookie (name, value and attributes); past that it drops
    /// it, and the sign-in could never finish. The longest purchase token we take must fit.
    #[test]
    fn the_sign_in_cookie_fits_a_browser_with_the_longest_purchase_token() {
        let sealer = Sealer::new(&[3u8; 32]).expect("key");
        let pending = PendingSignin {
            start: SigninStart {
                state: "s".repeat(43),
                nonce: "n".repeat(43),
                code_verifier: "v".repeat(43),
            },
            purchase_token: "t".repeat(crate::marketplace::MAX_PURCHASE_TOKEN_LENGTH),
        };
        let sealed = seal_signin(&sealer, &pending, now());
        let header = set_cookie(SIGNIN_COOKIE, &sealed, SIGNIN_LIFETIME, true);
        assert!(header.len() <= 4096, "{} bytes", header.len());
        assert_eq!(open_signin(&sealer, &sealed, now()), Ok(pending));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "a=1; landing_session=abc.def; landing_session_x=no";
        assert_eq!(cookie(header, SESSION_COOKIE), Some("abc.def"));
        assert_eq!(cookie(header, "landing"), None);
        assert_eq!(
            set_cookie("n", "v", Duration::from_secs(5), true),
            "n=v; Max-Age=5; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
