use std::time::Duration;

use url::Url;

use super::credential::ClientCredential;
use super::retry::RetryPolicy;

/// The Entra ID application id of Microsoft's Marketplace SaaS API: the resource tokens are for.
pub const MARKETPLACE_RESOURCE_ID: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";
const API_BASE: &str = "https://marketplaceapi.microsoft.com/api";
const API_VERSION: &str = "2018-08-31";

/// Which Entra token endpoint to use (docs/marketplace-api.md#token-request): v2 `…/oauth2/v2.0/token` with a `scope`, or
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
    /// Tried in order: the current credential first, then the next one of a rotation.
    pub credentials: Vec<ClientCredential>,
    pub resource: String,
    pub version: TokenEndpointVersion,
}

impl EntraConfig {
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        credentials: Vec<ClientCredential>,
        authority: Url,
    ) -> Self {
        Self {
            authority,
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            credentials,
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
}
