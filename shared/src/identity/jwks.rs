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
    refreshed_at: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(http: reqwest::Client, url: impl Into<String>, min_refresh: Duration) -> Self {
        Self { http, url: url.into(), min_refresh, keys: RwLock::default(), refreshed_at: Mutex::default() }
    }

    /// The key with id `kid`.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, JwksError> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        {
            let mut refreshed_at = self.refreshed_at.lock().await;
            // Another caller may have refreshed while we waited; only refresh if still missing.
            if !self.keys.read().await.contains_key(kid)
                && refreshed_at.is_none_or(|at| at.elapsed() >= self.min_refresh)
            {
                let fetched = self.fetch().await?;
                *refreshed_at = Some(Instant::now());
                *self.keys.write().await = fetched;
            }
        }
        self.keys.read().await.get(kid).cloned().ok_or_else(|| JwksError::UnknownKey(kid.to_owned()))
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
