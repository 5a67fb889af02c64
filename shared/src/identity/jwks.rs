use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::{Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// No key with this id, even after a refresh.
    #[error("no signing key with id {0:?}")]
    UnknownKey(String),
    #[error("the signing keys could not be fetched")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The signing keys of an issuer, fetched once per process and refreshed when a token names a key
/// we do not have (keys rotate), at most once per `min_refresh` so forged `kid`s cannot make us
/// hammer the issuer.
pub struct JwksCache {
    http: reqwest::Client,
    url: String,
    min_refresh: Duration,
    keys: RwLock<HashMap<String, DecodingKey>>,
    refreshed_at: Mutex<Refreshes>,
}

#[derive(Default)]
struct Refreshes {
    succeeded: Option<Instant>,
    failed: Option<Instant>,
}

impl JwksCache {
    pub fn new(http: reqwest::Client, url: impl Into<String>, min_refresh: Duration) -> Self {
        super::rs256::install();
        Self { http, url: url.into(), min_refresh, keys: RwLock::default(), refreshed_at: Mutex::default() }
    }

    /// The key with id `kid`.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, JwksError> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        {
            let asked_at = Instant::now();
            let mut refreshes = self.refreshed_at.lock().await;
            // A fetch that failed while we queued for the lock failed for us too: during an outage
            // callers must not stack one timeout each. A later caller tries again at once.
            if refreshes.failed.is_some_and(|failed| failed >= asked_at) {
                return Err(JwksError::Unavailable("the signing keys could not be fetched just now".into()));
            }
            // Another caller may have refreshed while we waited; only refresh if still missing.
            if !self.keys.read().await.contains_key(kid)
                && refreshes.succeeded.is_none_or(|at| at.elapsed() >= self.min_refresh)
            {
                match self.fetch().await {
                    Ok(fetched) => {
                        refreshes.succeeded = Some(Instant::now());
                        *self.keys.write().await = fetched;
                    }
                    Err(error) => {
                        refreshes.failed = Some(Instant::now());
                        return Err(error);
                    }
                }
            }
        }
        self.keys.read().await.get(kid).cloned().ok_or_else(|| JwksError::UnknownKey(kid.to_owned()))
    }

    /// Fetches the keys now (a health check): how many usable keys the issuer publishes.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let fetched = self.fetch().await?;
        let count = fetched.len();
        *self.keys.write().await = fetched;
        Ok(count)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, JwksError> {
        let unavailable = |e: reqwest::Error| JwksError::Unavailable(e.into());
        let set: JwkSet = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        let keys: HashMap<_, _> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        tracing::info!(url = %self.url, keys = keys.len(), "signing keys fetched");
        Ok(keys)
    }
}
