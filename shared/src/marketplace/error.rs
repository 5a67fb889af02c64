use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::auth::TokenError;

/// What Microsoft said about a request, for logs and support cases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    pub status: u16,
    /// The `x-ms-requestid` we sent with the last attempt.
    pub request_id: String,
    /// The `x-ms-requestid` / `x-ms-correlationid` Microsoft answered with.
    pub response_request_id: Option<String>,
    pub response_correlation_id: Option<String>,
}

impl std::fmt::Display for ResponseMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}, x-ms-requestid {}", self.status, self.request_id)?;
        if let Some(id) = &self.response_request_id {
            write!(f, " (answered {id})")?;
        }
        Ok(())
    }
}

/// Microsoft's error body in any of its shapes (docs/marketplace-api.md#error-bodies): `{"error":{"code","message"}}`,
/// `{"code","message","target","details"}`, `{"Error":{"Code","Message"}}`, or nothing at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    pub code: Option<String>,
    pub message: Option<String>,
    pub target: Option<String>,
    pub details: Vec<ApiError>,
    /// The whole body when it was not JSON (cut to 1 KB).
    pub raw: Option<String>,
}

impl ApiError {
    pub fn parse(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            let raw = (!text.is_empty()).then(|| text.chars().take(1024).collect());
            return Self { raw, ..Self::default() };
        };
        let inner = ["error", "Error"].iter().find_map(|k| value.get(k).filter(|v| v.is_object()));
        Self::from_object(inner.unwrap_or(&value))
    }

    fn from_object(value: &Value) -> Self {
        #[derive(Deserialize, Default)]
        struct Shape {
            #[serde(alias = "Code", default, deserialize_with = "crate::domain::lenient::text")]
            code: Option<String>,
            #[serde(alias = "Message", default, deserialize_with = "crate::domain::lenient::text")]
            message: Option<String>,
            #[serde(alias = "Target", default, deserialize_with = "crate::domain::lenient::text")]
            target: Option<String>,
            #[serde(alias = "Details", default, deserialize_with = "crate::domain::lenient::list")]
            details: Vec<Value>,
        }
        let shape = Shape::deserialize(value).unwrap_or_default();
        Self {
            code: shape.code,
            message: shape.message,
            target: shape.target,
            details: shape.details.iter().map(Self::from_object).collect(),
            raw: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.message, &self.raw) {
            (Some(code), Some(message), _) => write!(f, "{code}: {message}"),
            (Some(text), None, _) | (None, Some(text), _) | (None, None, Some(text)) => f.write_str(text),
            _ => f.write_str("no details"),
        }
    }
}

/// Why a Marketplace API call failed.
#[derive(Debug, thiserror::Error)]
pub enum MarketplaceError {
    /// 400: invalid request, or a state Microsoft refuses (already subscribed, same plan, locked…).
    #[error("Microsoft refused the request ({meta}): {error}")]
    BadRequest { error: ApiError, meta: ResponseMeta },
    /// 401/403 even with a fresh token: the app is not the one registered for the offer.
    #[error("Microsoft denied access ({meta}): {error}")]
    Forbidden { error: ApiError, meta: ResponseMeta },
    /// 404 (list available plans: also an empty answer). Get operation's 400 for an unknown
    /// operation stays [`Self::BadRequest`].
    #[error("not found at Microsoft ({meta}): {error}")]
    NotFound { error: ApiError, meta: ResponseMeta },
    /// 409: e.g. the operation was already decided.
    #[error("conflict at Microsoft ({meta}): {error}")]
    Conflict { error: ApiError, meta: ResponseMeta },
    /// 429 after every retry.
    #[error("throttled by Microsoft ({meta})")]
    Throttled { retry_after: Option<Duration>, meta: ResponseMeta },
    /// 408 or 5xx: after every retry, or at once for a request that is not idempotent (Microsoft
    /// may have acted on it); or another unexpected status.
    #[error("Microsoft failed ({meta}): {error}")]
    Server { error: ApiError, meta: ResponseMeta },
    /// The request did not get an answer (connection, TLS, timeout of an attempt).
    #[error("no answer from Microsoft during {action}")]
    Transport {
        action: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The request could not be built (a value no HTTP request can carry): nothing was sent, and
    /// sending again would fail the same way.
    #[error("the request for {action} could not be built")]
    Unsendable {
        action: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The call's deadline passed before an answer came.
    #[error("{action} did not finish before its deadline")]
    DeadlineExceeded { action: &'static str },
    /// The answer was not what the API documents.
    #[error("unexpected answer from Microsoft to {action} ({meta})")]
    Decode {
        action: &'static str,
        meta: ResponseMeta,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No access token could be obtained from Entra ID.
    #[error("could not authenticate to the Marketplace API")]
    Authentication(#[from] TokenError),
    /// The request was invalid before it was sent.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

impl MarketplaceError {
    /// Whether the same call may succeed later (Microsoft's side was unavailable or slow).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Throttled { .. }
            | Self::Server { .. }
            | Self::Transport { .. }
            | Self::DeadlineExceeded { .. } => true,
            Self::Authentication(error) => error.is_retryable(),
            _ => false,
        }
    }

    /// The HTTP status Microsoft answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::BadRequest { meta, .. }
            | Self::Forbidden { meta, .. }
            | Self::NotFound { meta, .. }
            | Self::Conflict { meta, .. }
            | Self::Throttled { meta, .. }
            | Self::Server { meta, .. }
            | Self::Decode { meta, .. } => Some(meta.status),
            _ => None,
        }
    }
}
