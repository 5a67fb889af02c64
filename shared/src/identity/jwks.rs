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

/// How long fetched keys are trusted without asking the issuer again: a key it withdrew (rotated
/// out, or revoked) stops being accepted within this, however long the process lives.
pub const KEY_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The signing keys of an issuer, fetched once per process and refreshed when a token names a key
/// we do not have (keys rotate), at most once per `min_refresh` so forged `kid`s cannot make us
/// hammer the issuer, and when they are older than `max_age`.
pub struct JwksCache {
    http: reqwest::Client,
    url: String,
    min_refresh: Duration,
    max_age: Duration,
    keys: RwLock<Keys>,
    refreshed_at: Mutex<Refreshes>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Held while fetching: one fetch at a time.
#[derive(Default)]
struct Refreshes {
    failed: Option<Instant>,
}

impl JwksCache {
    pub fn new(http: reqwest::Client, url: impl Into<String>, min_refresh: Duration) -> Self {
        super::rs256::install();
        Self {
            http,
            url: url.into(),
            min_refresh,
            max_age: KEY_MAX_AGE,
            keys: RwLock::default(),
            refreshed_at: Mutex::default(),
        }
    }

    /// The same cache with another maximum age of its keys.
    pub fn with_max_age(self, max_age: Duration) -> Self {
        Self { max_age, ..self }
    }

    /// The key with id `kid`.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, JwksError> {
        let asked_at = Instant::now();
        let fresh = |fetched_at: Option<Instant>| fetched_at.is_some_and(|at| at.elapsed() < self.max_age);
        {
            // Read without waiting for a fetch in progress.
            let keys = self.keys.read().await;
            if let (true, Some(key)) = (fresh(keys.fetched_at), keys.by_id.get(kid)) {
                return Ok(key.clone());
            }
        }
        let mut refreshes = self.refreshed_at.lock().await;
        let (cached, fetched_at) = {
            let keys = self.keys.read().await;
            (keys.by_id.get(kid).cloned(), keys.fetched_at)
        };
        // A fetch that failed while we queued for the lock failed for us too: during an outage
        // callers must not stack one timeout each. A later caller tries again at once.
        if refreshes.failed.is_some_and(|failed| failed >= asked_at) {
            return cached.ok_or_else(|| {
                JwksError::Unavailable("the signing keys could not be fetched just now".into())
            });
        }
        // Another caller may have refreshed while we waited: fetch only if the key is still missing
        // (at most once per `min_refresh`) or the keys are too old (and no refresh of them failed
        // within `min_refresh`: while the issuer is down, each request would wait on it again).
        let missing = cached.is_none() && fetched_at.is_none_or(|at| at.elapsed() >= self.min_refresh);
        let failed_lately = refreshes.failed.is_some_and(|failed| failed.elapsed() < self.min_refresh);
        if missing || (cached.is_some() && !fresh(fetched_at) && !failed_lately) {
            match self.fetch().await {
                Ok(fetched) => {
                    *self.keys.write().await = Keys { by_id: fetched, fetched_at: Some(Instant::now()) };
                }
                Err(error) => {
                    refreshes.failed = Some(Instant::now());
                    // The issuer is down: keys it published are still better than none.
                    return match cached {
                        Some(key) => {
                            tracing::warn!(url = %self.url, error = %crate::error_chain(&error), "the signing keys are old and could not be refreshed: using them");
                            Ok(key)
                        }
                        None => Err(error),
                    };
                }
            }
        }
        drop(refreshes);
        self.keys.read().await.by_id.get(kid).cloned().ok_or_else(|| JwksError::UnknownKey(kid.to_owned()))
    }

    /// Fetches the keys now (a health check): how many usable keys the issuer publishes.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let fetched = self.fetch().await?;
        let count = fetched.len();
        *self.keys.write().await = Keys { by_id: fetched, fetched_at: Some(Instant::now()) };
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
