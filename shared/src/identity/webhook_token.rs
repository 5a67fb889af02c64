//! The webhook's bearer token (docs/marketplace-api.md#webhook-authentication, #known-pitfalls items 3 and 5): an Entra access token that
//! Microsoft's marketplace app obtains from the publisher's tenant for the publisher's app.
//!
//! The order matters: the RS256 signature is verified against the tenant's keys first (header →
//! `alg` must be RS256 → `kid` → key → signature, `exp`, `nbf`), and only then are the claims
//! believed: `iss` (one of the two issuers of the tenant), `tid`, `aud` (our app) and `appid`/`azp`
//! (Microsoft's marketplace app — what tells Microsoft apart from any other app of our tenant).
//!
//! `ver` is not checked: the token version follows from `iss` (the tenant's v1 issuer
//! `https://sts.windows.net/{tid}/` or v2 issuer `https://login.microsoftonline.com/{tid}/v2.0`),
//! and `appid` / `azp` are accepted whichever is present (both must match when both are). A
//! genuine token never disagrees with itself, a signed one cannot be forged, and refusing a genuine
//! webhook with 401 would reject a customer's plan or seat change (docs/marketplace-api.md#webhook-responses).
//!
//! The token itself never appears in an error or a log line.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, JwksError};

/// Clock skew tolerated on `exp` and `nbf` by default.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The largest leeway used, whatever the settings say.
const MAX_LEEWAY: Duration = Duration::from_secs(600);
/// The keys are refetched for an unknown `kid` at most this often (forged `kid`s cannot make us
/// hammer Entra).
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Longer tokens are refused unread. Entra's app-only access tokens are 1–2 KB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How much of a header or claim value an error message quotes.
const QUOTE_CHARS: usize = 64;

const V1_ISSUER: (&str, &str) = ("https://sts.windows.net/", "/");
const V2_ISSUER: (&str, &str) = ("https://login.microsoftonline.com/", "/v2.0");
/// How some libraries name `tid` (docs/marketplace-api.md#webhook-authentication).
const TENANT_ID_URI_CLAIM: &str = "http://schemas.microsoft.com/identity/claims/tenantid";

/// What a webhook's token must say (docs/marketplace-api.md#webhook-authentication).
#[derive(Debug, Clone)]
pub struct WebhookTokenSettings {
    /// The publisher's tenant (`tid`; in both issuers).
    pub tenant_id: String,
    /// The publisher's app id: `aud` must be it or `api://<it>`.
    pub app_id: String,
    /// `appid` (v1) or `azp` (v2) must be it: [`crate::marketplace::MARKETPLACE_RESOURCE_ID`].
    pub marketplace_app_id: String,
    /// The tenant's keys: `{authority}/{tenant}/discovery/v2.0/keys`.
    pub jwks_url: String,
    /// Clock skew tolerated on `exp`/`nbf` (default 60 s; at most 10 minutes are used).
    pub leeway: Duration,
}

/// The Entra access-token version of a webhook token, as its `iss` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenVersion {
    /// `iss` = `https://sts.windows.net/{tenant}/`.
    V1,
    /// `iss` = `https://login.microsoftonline.com/{tenant}/v2.0`.
    V2,
}

/// Who called the webhook, once the token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookCaller {
    /// `oid`: the marketplace service principal's object id in our tenant, when present.
    pub object_id: Option<String>,
    pub version: TokenVersion,
}

/// Why a webhook's token is refused. Messages quote at most a short, escaped excerpt of a header
/// or claim value, never the token.
#[derive(Debug, thiserror::Error)]
pub enum WebhookAuthError {
    /// No `Authorization` header, or not `Bearer …`.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT (shape, base64url, JSON, size).
    #[error("the bearer token is not a JWT: {0}")]
    Malformed(String),
    /// Anything but RS256 (`none`, HS256, RS384…).
    #[error("the token's algorithm is refused (only RS256 is accepted): {0}")]
    Algorithm(String),
    /// No such `kid` even after a (rate-limited) refresh of the keys, or no `kid` at all; holds the
    /// quoted (truncated) key id or says there is none.
    #[error("the token names an unknown signing key: {0}")]
    UnknownKey(String),
    /// The signature does not verify against the named key.
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud`, `iss`, `tid`, `appid`/`azp` (or a malformed `exp`/`nbf`) wrong or missing.
    #[error("the token's {claim} claim is refused: {reason}")]
    Claim { claim: &'static str, reason: String },
    /// The keys could not be fetched: not the caller's fault; answer 503 so Microsoft retries.
    #[error("the signing keys are unavailable")]
    KeysUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl WebhookAuthError {
    /// Whether the token is to blame (401), rather than us (503): false only for
    /// [`WebhookAuthError::KeysUnavailable`].
    pub fn is_callers_fault(&self) -> bool {
        !matches!(self, Self::KeysUnavailable(_))
    }
}

impl From<JwksError> for WebhookAuthError {
    fn from(error: JwksError) -> Self {
        match error {
            JwksError::UnknownKey(kid) => Self::UnknownKey(quote(&kid)),
            JwksError::Unavailable(source) => Self::KeysUnavailable(source),
        }
    }
}

/// Verifies webhook tokens against the tenant's keys, which it caches (refreshed on an unknown
/// `kid`, at most once per refresh interval). One per process; share it (it is `Send + Sync`).
pub struct WebhookAuthenticator {
    settings: WebhookTokenSettings,
    keys: JwksCache,
    validation: Validation,
}

impl fmt::Debug for WebhookAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAuthenticator").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl WebhookAuthenticator {
    /// Refetches the keys for an unknown `kid` at most once a minute ([`KEY_REFRESH_INTERVAL`]).
    pub fn new(http: reqwest::Client, settings: WebhookTokenSettings) -> Self {
        Self::with_key_refresh_interval(http, settings, KEY_REFRESH_INTERVAL)
    }

    /// As [`WebhookAuthenticator::new`], with another minimum interval between key refetches
    /// (tests).
    pub fn with_key_refresh_interval(
        http: reqwest::Client,
        settings: WebhookTokenSettings,
        min_refresh: Duration,
    ) -> Self {
        let leeway = settings.leeway.min(MAX_LEEWAY);
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // `aud` and `iss` are checked below (case-insensitive GUIDs, two accepted forms each).
        validation.validate_aud = false;
        validation.leeway = leeway.as_secs() + u64::from(leeway.subsec_nanos() > 0);
        let keys = JwksCache::new(http, settings.jwks_url.clone(), min_refresh);
        Self { settings, keys, validation }
    }

    pub fn settings(&self) -> &WebhookTokenSettings {
        &self.settings
    }

    /// Fetches the signing keys now (at start: [`crate::wiring::warm_up`]); how many there are.
    pub async fn fetch_keys(&self) -> Result<usize, super::jwks::JwksError> {
        self.keys.refresh().await
    }

    /// Checks the `Authorization` header's value (`Bearer <jwt>`).
    pub async fn verify(&self, authorization: Option<&str>) -> Result<WebhookCaller, WebhookAuthError> {
        let token = bearer_token(authorization)?;
        let kid = rs256_key_id(token)?;
        let key = self.keys.key(&kid).await?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation)
            .map_err(refusal)?
            .claims;
        self.check_claims(&claims)
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<WebhookCaller, WebhookAuthError> {
        let tenant = self.settings.tenant_id.as_str();
        let iss = string_claim(claims, "iss")?.ok_or_else(|| missing("iss"))?;
        let version = if issuer_is(iss, V1_ISSUER, tenant) {
            TokenVersion::V1
        } else if issuer_is(iss, V2_ISSUER, tenant) {
            TokenVersion::V2
        } else {
            return Err(claim_error(
                "iss",
                format!(
                    "{} is neither {}{tenant}{} nor {}{tenant}{}",
                    quote(iss),
                    V1_ISSUER.0,
                    V1_ISSUER.1,
                    V2_ISSUER.0,
                    V2_ISSUER.1
                ),
            ));
        };

        let mut tenant_claims = 0;
        for name in ["tid", TENANT_ID_URI_CLAIM] {
            if let Some(tid) = string_claim(claims, name)? {
                tenant_claims += 1;
                if !tid.eq_ignore_ascii_case(tenant) {
                    return Err(claim_error("tid", format!("{} is not the tenant {tenant}", quote(tid))));
                }
            }
        }
        if tenant_claims == 0 {
            return Err(missing("tid"));
        }

        let app = self.settings.app_id.as_str();
        let is_our_app = |aud: &str| {
            aud.eq_ignore_ascii_case(app)
                || (aud.get(..6).is_some_and(|scheme| scheme.eq_ignore_ascii_case("api://"))
                    && aud.get(6..).is_some_and(|id| id.eq_ignore_ascii_case(app)))
        };
        match claims.get("aud") {
            None | Some(Value::Null) => return Err(missing("aud")),
            Some(Value::String(aud)) if is_our_app(aud) => {}
            Some(Value::Array(auds)) if auds.iter().any(|a| a.as_str().is_some_and(is_our_app)) => {}
            Some(Value::String(aud)) => {
                return Err(claim_error("aud", format!("{} is not {app} nor api://{app}", quote(aud))));
            }
            Some(_) => return Err(claim_error("aud", format!("does not name {app} nor api://{app}"))),
        }

        let marketplace = self.settings.marketplace_app_id.as_str();
        let mut caller_claims = 0;
        for name in ["appid", "azp"] {
            if let Some(id) = string_claim(claims, name)? {
                caller_claims += 1;
                if !id.eq_ignore_ascii_case(marketplace) {
                    return Err(claim_error(
                        name,
                        format!("{} is not the marketplace app {marketplace}", quote(id)),
                    ));
                }
            }
        }
        if caller_claims == 0 {
            let name = match version {
                TokenVersion::V1 => "appid",
                TokenVersion::V2 => "azp",
            };
            return Err(claim_error(name, "missing (the token has neither appid nor azp)".into()));
        }

        let object_id = claims.get("oid").and_then(Value::as_str).map(str::to_owned);
        Ok(WebhookCaller { object_id, version })
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer_token(authorization: Option<&str>) -> Result<&str, WebhookAuthError> {
    let (scheme, token) = authorization
        .map(str::trim)
        .and_then(|value| value.split_once([' ', '\t']))
        .ok_or(WebhookAuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(WebhookAuthError::Missing);
    }
    Ok(token)
}

/// Reads the header without trusting it: the token must have three base64url parts and an RS256
/// header object naming a key. Returns the key id.
fn rs256_key_id(token: &str) -> Result<String, WebhookAuthError> {
    let malformed = |reason: &str| WebhookAuthError::Malformed(reason.to_owned());
    if token.len() > MAX_TOKEN_BYTES {
        return Err(WebhookAuthError::Malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(malformed("not three dot-separated parts"));
    };
    let base64url = |part: &str| part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // The signature may be empty here so that `alg: none` is reported as such.
    if header.is_empty() || payload.is_empty() || ![header, payload, signature].into_iter().all(base64url) {
        return Err(malformed("a part is not base64url"));
    }
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed("the header is not base64url"))?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(malformed("the header is not a JSON object"));
    };
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "RS256" => {}
        Some(Value::String(alg)) => return Err(WebhookAuthError::Algorithm(quote(alg))),
        Some(_) => return Err(WebhookAuthError::Algorithm("alg is not a string".into())),
        None => return Err(WebhookAuthError::Algorithm("no alg".into())),
    }
    if header.contains_key("crit") {
        return Err(malformed("critical header parameters are not supported"));
    }
    match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => Ok(kid.clone()),
        Some(Value::String(_)) | None => {
            Err(WebhookAuthError::UnknownKey("the token names no key (kid)".into()))
        }
        Some(_) => Err(WebhookAuthError::UnknownKey("kid is not a string".into())),
    }
}

/// Why `jsonwebtoken` refused the token (signature, `exp`, `nbf`, shape), without quoting it.
fn refusal(error: jsonwebtoken::errors::Error) -> WebhookAuthError {
    match error.into_kind() {
        ErrorKind::ExpiredSignature => WebhookAuthError::Expired,
        ErrorKind::ImmatureSignature => WebhookAuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(_) => missing("exp"),
        ErrorKind::InvalidClaimFormat(name) => {
            let claim = if name == "nbf" { "nbf" } else { "exp" };
            claim_error(claim, "not a number of seconds since the epoch".into())
        }
        ErrorKind::InvalidToken => WebhookAuthError::Malformed("not a JWT".into()),
        ErrorKind::Base64(_) => WebhookAuthError::Malformed("a part is not base64url".into()),
        ErrorKind::Utf8(_) => WebhookAuthError::Malformed("a part is not UTF-8".into()),
        ErrorKind::Json(_) => {
            WebhookAuthError::Malformed("the header or the claims are not the JSON object expected".into())
        }
        // The header said RS256 (checked before), so the rest is a signature that does not verify
        // against the named key: a wrong signature, or a key of the wrong type or shape.
        _ => WebhookAuthError::Signature,
    }
}

/// `name`'s value if it is a string; `None` if absent (or null); an error if another type.
fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, WebhookAuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(claim_error(claim_label(name), "not a string".into())),
    }
}

fn claim_label(name: &'static str) -> &'static str {
    if name == TENANT_ID_URI_CLAIM { "tid" } else { name }
}

/// `iss` is `{prefix}{tenant}{suffix}`; the tenant GUID compared case-insensitively.
fn issuer_is(iss: &str, (prefix, suffix): (&str, &str), tenant: &str) -> bool {
    iss.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .is_some_and(|t| t.eq_ignore_ascii_case(tenant))
}

fn missing(claim: &'static str) -> WebhookAuthError {
    WebhookAuthError::Claim { claim, reason: "missing".into() }
}

fn claim_error(claim: &'static str, reason: String) -> WebhookAuthError {
    WebhookAuthError::Claim { claim, reason }
}

/// A short, escaped excerpt of an untrusted value, for error messages.
fn quote(value: &str) -> String {
    let mut excerpt: String = value.chars().take(QUOTE_CHARS).collect();
    if excerpt.len() < value.len() {
        excerpt.push('…');
    }
    format!("{excerpt:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplace::MARKETPLACE_RESOURCE_ID;

    const TENANT: &str = "72f988bf-0000-4000-8000-00000000e001";
    const APP: &str = "a1b2c3d4-0000-4000-8000-00000000a991";

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer_token(Some("Bearer abc")).ok(), Some("abc"));
        assert_eq!(bearer_token(Some("  bearer \t abc  ")).ok(), Some("abc"));
        assert_eq!(bearer_token(Some("BEARER abc")).ok(), Some("abc"));
        for value in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer   "),
            Some("Basic abc"),
            Some("abc"),
            Some("Bearerabc"),
        ] {
            assert!(matches!(bearer_token(value), Err(WebhookAuthError::Missing)), "{value:?}");
        }
    }

    #[test]
    fn issuers_are_exact_but_for_the_tenant_case() {
        let upper = TENANT.to_ascii_uppercase();
        assert!(issuer_is(&format!("https://sts.windows.net/{upper}/"), V1_ISSUER, TENANT));
        assert!(issuer_is(&format!("https://login.microsoftonline.com/{TENANT}/v2.0"), V2_ISSUER, TENANT));
        for iss in [
            format!("https://sts.windows.net/{TENANT}"),
            format!("https://sts.windows.net/{TENANT}//"),
            format!("http://sts.windows.net/{TENANT}/"),
            format!("https://login.microsoftonline.com/{TENANT}/v2.0/"),
            format!("https://login.microsoftonline.com/{TENANT}/"),
            format!("https://evil.example/{TENANT}/v2.0"),
            "https://sts.windows.net//".to_owned(),
        ] {
            assert!(!issuer_is(&iss, V1_ISSUER, TENANT) && !issuer_is(&iss, V2_ISSUER, TENANT), "{iss}");
        }
    }

    #[test]
    fn quotes_are_short() {
        assert_eq!(quote("RS256"), "\"RS256\"");
        let long = "é".repeat(1000);
        assert!(quote(&long).chars().count() <= QUOTE_CHARS + 3);
    }

    #[test]
    fn the_authenticator_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<WebhookAuthenticator>();
        fn send<T: Send>(_: &T) {}
        let authenticator = WebhookAuthenticator::new(
            crate::http::client().expect("a client"),
            WebhookTokenSettings {
                tenant_id: TENANT.into(),
                app_id: APP.into(),
                marketplace_app_id: MARKETPLACE_RESOURCE_ID.into(),
                jwks_url: "http://127.0.0.1:9/keys".into(),
                leeway: Duration::from_secs(60),
            },
        );
        send(&authenticator.verify(None));
    }
}
