use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::retry::RetryPolicy;

/// The Entra ID application id of Microsoft's Marketplace SaaS API: the resource tokens are for.
pub const MARKETPLACE_RESOURCE_ID: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";
const API_BASE: &str = "https://marketplaceapi.microsoft.com/api";
const API_VERSION: &str = "2018-08-31";
const AUTHORITY: &str = "https://login.microsoftonline.com";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Which Entra token endpoint to use (reference §5.2): v2 `…/oauth2/v2.0/token` with a `scope`, or
/// v1 `…/oauth2/token` with a `resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointVersion {
    V1,
    V2,
}

/// The publisher's single-tenant app registration, used for service-to-service calls.
#[derive(Debug, Clone)]
pub struct EntraConfig {
    pub authority: Url,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub resource: String,
    pub version: TokenEndpointVersion,
}

impl EntraConfig {
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self {
            authority: Url::parse(AUTHORITY).expect("the default authority is a URL"),
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret,
            resource: MARKETPLACE_RESOURCE_ID.into(),
            version: TokenEndpointVersion::V2,
        }
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token` (v2) or `{authority}/{tenant}/oauth2/token` (v1).
    pub fn token_url(&self) -> Url {
        let mut url = self.authority.clone();
        {
            let mut path = url.path_segments_mut().expect("an http(s) authority has a path");
            path.pop_if_empty().push(&self.tenant_id).push("oauth2");
            if self.version == TokenEndpointVersion::V2 {
                path.push("v2.0");
            }
            path.push("token");
        }
        url
    }
}

/// Everything the Marketplace client needs; read once at start.
#[derive(Debug, Clone)]
pub struct MarketplaceConfig {
    /// `https://marketplaceapi.microsoft.com/api`, or the emulator's.
    pub api_base: Url,
    pub api_version: String,
    pub entra: EntraConfig,
    pub connect_timeout: Duration,
    /// The longest one HTTP attempt may take.
    pub attempt_timeout: Duration,
    /// The deadline of a call that brings none of its own, retries included.
    pub call_timeout: Duration,
    pub retry: RetryPolicy,
}

impl MarketplaceConfig {
    pub fn new(entra: EntraConfig) -> Self {
        Self {
            api_base: Url::parse(API_BASE).expect("the default API base is a URL"),
            api_version: API_VERSION.into(),
            entra,
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let url = |name: &'static str, value: String| {
            Url::parse(&value).map_err(|e| ConfigError::Invalid { name, reason: e.to_string() })
        };
        let millis = |name: &'static str, default: Duration| match get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| ConfigError::Invalid { name, reason: e.to_string() }),
        };

        let mut entra = EntraConfig::new(
            required("ENTRA_TENANT_ID")?,
            required("ENTRA_CLIENT_ID")?,
            SecretString::from(required("ENTRA_CLIENT_SECRET")?),
        );
        if let Some(authority) = get("ENTRA_AUTHORITY") {
            entra.authority = url("ENTRA_AUTHORITY", authority)?;
        }
        if let Some(resource) = get("MARKETPLACE_RESOURCE_ID") {
            entra.resource = resource;
        }
        entra.version = match get("ENTRA_TOKEN_VERSION").as_deref() {
            None | Some("v2") | Some("2") => TokenEndpointVersion::V2,
            Some("v1") | Some("1") => TokenEndpointVersion::V1,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "ENTRA_TOKEN_VERSION",
                    reason: format!("{other:?} is not v1 or v2"),
                });
            }
        };

        let mut config = Self::new(entra);
        if let Some(base) = get("MARKETPLACE_API_BASE") {
            config.api_base = url("MARKETPLACE_API_BASE", base)?;
        }
        if let Some(version) = get("MARKETPLACE_API_VERSION") {
            config.api_version = version;
        }
        config.connect_timeout = millis("MARKETPLACE_CONNECT_TIMEOUT_MS", config.connect_timeout)?;
        config.attempt_timeout = millis("MARKETPLACE_ATTEMPT_TIMEOUT_MS", config.attempt_timeout)?;
        config.call_timeout = millis("MARKETPLACE_CALL_TIMEOUT_MS", config.call_timeout)?;
        if let Some(retries) = get("MARKETPLACE_MAX_RETRIES") {
            config.retry.max_retries = retries.parse().map_err(|e: std::num::ParseIntError| {
                ConfigError::Invalid { name: "MARKETPLACE_MAX_RETRIES", reason: e.to_string() }
            })?;
        }
        Ok(config)
    }
}
