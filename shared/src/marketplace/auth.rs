use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::config::{EntraConfig, TokenEndpointVersion};
use super::credential::ClientCredential;
use super::retry::RetryPolicy;

/// Refresh this long before expiry (or at half-life for short-lived tokens).
const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Entra refused the client credentials (wrong secret, unknown app, missing service principal).
    #[error("Entra ID refused the client credentials (HTTP {status}): {error}")]
    Rejected { status: u16, error: String },
    /// The token endpoint could not be reached or failed.
    #[error("the Entra ID token endpoint is unavailable")]
    Unavailable {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The answer held no usable token.
    #[error("Entra ID answered without a usable token")]
    Decode {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no token could be obtained before the deadline")]
    DeadlineExceeded,
}

/// Entra ID's codes for a credential it does not accept: a wrong or expired secret, an unknown,
/// expired or badly signed client assertion.
const CREDENTIAL_REFUSALS: [&str; 6] =
    ["AADSTS7000215", "AADSTS7000222", "AADSTS700027", "AADSTS700024", "AADSTS700021", "AADSTS700023"];

impl TokenError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::DeadlineExceeded)
    }

    /// Whether Entra refused the credential itself (another one may be accepted).
    pub fn is_credential_refused(&self) -> bool {
        matches!(self, Self::Rejected { error, .. } if CREDENTIAL_REFUSALS.iter().any(|code| error.contains(code)))
    }
}

/// A bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

#[derive(Clone)]
struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

/// Client-credentials tokens from Entra ID, cached for the life of the process (a warm Lambda),
/// refreshed ahead of expiry, one refresh at a time however many calls wait for it.
pub struct EntraTokenProvider {
    http: reqwest::Client,
    config: EntraConfig,
    retry: RetryPolicy,
    cached: RwLock<Option<Cached>>,
    refreshing: Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
    /// The credential Entra accepted last (index into the configuration's).
    active: std::sync::atomic::AtomicUsize,
}

impl EntraTokenProvider {
    pub fn new(http: reqwest::Client, config: EntraConfig, retry: RetryPolicy) -> Self {
        Self {
            http,
            config,
            retry,
            cached: RwLock::new(None),
            refreshing: Mutex::new(()),
            fetches: 0.into(),
            active: 0.into(),
        }
    }

    /// How many tokens this provider has fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token, from the cache or freshly fetched.
    pub async fn token(&self, deadline: Instant) -> Result<AccessToken, TokenError> {
        if let Some(token) = self.fresh().await {
            return Ok(token);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(token) = self.fresh().await {
            return Ok(token);
        }
        let fetched = self.fetch(deadline).await?;
        let token = fetched.token.clone();
        *self.cached.write().await = Some(fetched);
        Ok(token)
    }

    /// Asks Entra ID for a token with each configured credential in turn, bypassing the cache and
    /// the fallback (the self-check: during a rotation, the next credential must work before the
    /// current one is removed).
    pub async fn probe_each(&self, deadline: Instant) -> Vec<(String, Result<(), TokenError>)> {
        let mut results = Vec::new();
        for credential in &self.config.credentials {
            let result = self.fetch_with(credential, deadline).await.map(|_| ());
            results.push((credential.describe(), result));
        }
        results
    }

    /// Forgets `rejected` (Microsoft answered 401/403 to it), unless it was already replaced.
    pub async fn invalidate(&self, rejected: &AccessToken) {
        let mut cached = self.cached.write().await;
        if cached.as_ref().is_some_and(|c| &c.token == rejected) {
            *cached = None;
        }
    }

    async fn fresh(&self) -> Option<AccessToken> {
        let cached = self.cached.read().await;
        cached.as_ref().filter(|c| Instant::now() < c.refresh_at).map(|c| c.token.clone())
    }

    /// A token with the credential that worked last; when Entra refuses it, with the next ones
    /// (a rotation in progress), which then become the one to use.
    async fn fetch(&self, deadline: Instant) -> Result<Cached, TokenError> {
        let credentials = &self.config.credentials;
        let active = self.active.load(std::sync::atomic::Ordering::Relaxed);
        let mut first_refusal = None;
        for offset in 0..credentials.len() {
            let index = (active + offset) % credentials.len();
            match self.fetch_with(&credentials[index], deadline).await {
                Ok(cached) => {
                    if index != active {
                        tracing::warn!(
                            refused = %credentials[active].describe(),
                            accepted = %credentials[index].describe(),
                            "Entra ID refused a credential and accepted the next: renew or remove the refused one"
                        );
                        self.active.store(index, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(cached);
                }
                // Only a refused credential makes the next one worth trying: a wrong app, tenant
                // or scope is refused whatever the credential.
                Err(refusal) if refusal.is_credential_refused() => {
                    tracing::warn!(credential = %credentials[index].describe(), error = %refusal, "credential refused");
                    first_refusal.get_or_insert(refusal);
                }
                Err(other) => return Err(other),
            }
        }
        Err(first_refusal
            .unwrap_or(TokenError::Rejected { status: 0, error: "no client credential configured".into() }))
    }

    async fn fetch_with(
        &self,
        credential: &ClientCredential,
        deadline: Instant,
    ) -> Result<Cached, TokenError> {
        let url = self.config.token_url();
        let mut retry = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(TokenError::DeadlineExceeded);
            }
            // Built per attempt: a client assertion is single-use (its own `jti`, a fresh `exp`).
            let mut form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", self.config.client_id.clone()),
            ];
            form.extend(
                credential
                    .form_fields(&self.config.client_id, url.as_str())
                    .map_err(|e| TokenError::Decode { source: e.into() })?,
            );
            match self.config.version {
                TokenEndpointVersion::V2 => {
                    form.push(("scope", format!("{}/.default", self.config.resource)))
                }
                TokenEndpointVersion::V1 => form.push(("resource", self.config.resource.clone())),
            }
            let attempt = self.http.post(url.clone()).form(&form).timeout(remaining).send();
            let failure: Box<dyn std::error::Error + Send + Sync> = match attempt.await {
                Ok(response) if response.status().is_success() => {
                    let body =
                        response.bytes().await.map_err(|e| TokenError::Unavailable { source: e.into() })?;
                    self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return parse_token(&body);
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.bytes().await.unwrap_or_default();
                    if !(status == 408 || status == 429 || status >= 500) {
                        return Err(TokenError::Rejected { status, error: describe_error(&body) });
                    }
                    format!("HTTP {status}: {}", describe_error(&body)).into()
                }
                Err(error) => error.into(),
            };
            retry += 1;
            let delay = self.retry.delay(retry, None);
            if retry > self.retry.max_retries || Instant::now() + delay >= deadline {
                return Err(TokenError::Unavailable { source: failure });
            }
            tracing::warn!(retry, error = %crate::error_chain(failure.as_ref()), "token endpoint failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// v1 answers carry `expires_in` as a string (`"3600"`), v2 as a number.
fn parse_token(body: &[u8]) -> Result<Cached, TokenError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default, deserialize_with = "crate::domain::lenient::quantity")]
        expires_in: Option<u32>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| TokenError::Decode { source: e.into() })?;
    if answer.access_token.trim().is_empty() {
        return Err(TokenError::Decode { source: "empty access_token".into() });
    }
    let lifetime = Duration::from_secs(answer.expires_in.map_or(3600, u64::from));
    let ahead = REFRESH_AHEAD.min(lifetime / 2);
    Ok(Cached {
        token: AccessToken(answer.access_token.into()),
        refresh_at: Instant::now() + lifetime - ahead,
    })
}

/// `error: error_description` of an OAuth error answer, without anything secret.
fn describe_error(body: &[u8]) -> String {
    #[derive(Deserialize, Default)]
    struct OAuthError {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    let parsed: OAuthError = serde_json::from_slice(body).unwrap_or_default();
    match (parsed.error, parsed.error_description) {
        (Some(error), Some(description)) => {
            format!("{error}: {}", description.lines().next().unwrap_or_default())
        }
        (Some(error), None) => error,
        _ => "no details".into(),
    }
}
