use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use ring::digest;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use url::Url;

use super::jwks::{JwksCache, JwksError};

/// The landing page's (multi-tenant) app registration.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// e.g. `https://login.microsoftonline.com/organizations/v2.0`; its metadata is at
    /// `{authority}/.well-known/openid-configuration`.
    pub authority: Url,
    pub client_id: String,
    /// Only for a confidential client; PKCE protects the code either way.
    pub client_secret: Option<SecretString>,
    /// Where Entra sends the browser back: the landing page itself.
    pub redirect_uri: Url,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
}

impl From<JwksError> for OidcError {
    fn from(error: JwksError) -> Self {
        match error {
            JwksError::UnknownKey(kid) => Self::InvalidToken(format!("unknown signing key {kid:?}")),
            other => Self::Unavailable(other.into()),
        }
    }
}

/// What must survive the round trip to the identity provider (kept in a sealed cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigninStart {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
}

/// The signed-in visitor, from the verified ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedInUser {
    pub name: Option<String>,
    pub email: Option<String>,
    pub object_id: String,
    pub tenant_id: String,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Debug, Deserialize)]
struct IdTokenClaims {
    iss: String,
    tid: String,
    oid: String,
    nonce: Option<String>,
    name: Option<String>,
    email: Option<String>,
    preferred_username: Option<String>,
}

/// Sign-in with the OpenID Connect authorization code flow, with PKCE, `state` and `nonce`; the
/// ID token's signature and claims are checked against the issuer's keys.
pub struct OidcClient {
    http: reqwest::Client,
    settings: OidcSettings,
    metadata: OnceCell<(Metadata, JwksCache)>,
}

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 120;

impl OidcClient {
    pub fn new(http: reqwest::Client, settings: OidcSettings) -> Self {
        Self { http, settings, metadata: OnceCell::new() }
    }

    /// Where to send the browser to sign in, and what to remember until it comes back.
    pub async fn begin(&self) -> Result<(Url, SigninStart), OidcError> {
        let (metadata, _) = self.metadata().await?;
        let start = SigninStart { state: random(), nonce: random(), code_verifier: random() };
        let challenge =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, start.code_verifier.as_bytes()));
        let mut url = Url::parse(&metadata.authorization_endpoint)
            .map_err(|e| OidcError::Unavailable(format!("authorization_endpoint: {e}").into()))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", self.settings.redirect_uri.as_str())
            .append_pair("response_mode", "query")
            .append_pair("scope", "openid profile email")
            .append_pair("state", &start.state)
            .append_pair("nonce", &start.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url, start))
    }

    /// Redeems the code and verifies the ID token it brings.
    pub async fn finish(&self, code: &str, start: &SigninStart) -> Result<SignedInUser, OidcError> {
        let (metadata, keys) = self.metadata().await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", self.settings.redirect_uri.to_string()),
            ("client_id", self.settings.client_id.clone()),
            ("code_verifier", start.code_verifier.clone()),
            ("scope", "openid profile email".to_owned()),
        ];
        if let Some(secret) = &self.settings.client_secret {
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        let response = self
            .http
            .post(&metadata.token_endpoint)
            .form(&form)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(e.into()))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| OidcError::Unavailable(e.into()))?;
        if !status.is_success() {
            let error = body.get("error").and_then(|e| e.as_str()).unwrap_or("unknown error");
            return Err(OidcError::Refused(format!("HTTP {status}: {error}")));
        }
        let id_token = body
            .get("id_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| OidcError::Refused("no id_token in the answer".into()))?;
        self.verify(id_token, &start.nonce, metadata, keys).await
    }

    async fn verify(
        &self,
        id_token: &str,
        nonce: &str,
        metadata: &Metadata,
        keys: &JwksCache,
    ) -> Result<SignedInUser, OidcError> {
        let invalid = |reason: String| OidcError::InvalidToken(reason);
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(invalid(format!("algorithm {:?} is not RS256", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| invalid("no key id".into()))?;
        let key = keys.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.settings.client_id]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let claims = jsonwebtoken::decode::<IdTokenClaims>(id_token, &key, &validation)
            .map_err(|e| invalid(e.to_string()))?
            .claims;
        // Multi-tenant metadata names the issuer as a template: https://…/{tenantid}/v2.0.
        let expected_issuer = metadata.issuer.replace("{tenantid}", &claims.tid);
        if claims.iss != expected_issuer {
            return Err(invalid(format!("issuer {:?} is not {expected_issuer:?}", claims.iss)));
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(invalid("the nonce does not match this sign-in".into()));
        }
        Ok(SignedInUser {
            name: claims.name,
            email: claims.email.or(claims.preferred_username),
            object_id: claims.oid,
            tenant_id: claims.tid,
        })
    }

    async fn metadata(&self) -> Result<&(Metadata, JwksCache), OidcError> {
        self.metadata
            .get_or_try_init(|| async {
                let mut url = self.settings.authority.clone();
                url.path_segments_mut()
                    .map_err(|()| OidcError::Unavailable("the authority is not an http(s) URL".into()))?
                    .pop_if_empty()
                    .extend([".well-known", "openid-configuration"]);
                let metadata: Metadata = self
                    .http
                    .get(url)
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| OidcError::Unavailable(e.into()))?
                    .json()
                    .await
                    .map_err(|e| OidcError::Unavailable(e.into()))?;
                let keys =
                    JwksCache::new(self.http.clone(), metadata.jwks_uri.clone(), Duration::from_secs(60));
                Ok((metadata, keys))
            })
            .await
    }
}

/// 256 random bits, base64url: for `state`, `nonce` and the PKCE verifier (43 characters).
fn random() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}
