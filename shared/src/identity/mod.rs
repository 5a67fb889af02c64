//! Entra ID as an identity provider: signing keys (JWKS) and the OpenID Connect sign-in of the
//! landing page, and the webhook's bearer token.

mod jwks;
mod oidc;
mod rs256;
mod webhook_token;

pub use jwks::{JwksCache, JwksError};
pub use oidc::{OidcClient, OidcError, OidcSettings, SignedInUser, SigninStart};
pub use webhook_token::{
    DEFAULT_LEEWAY, KEY_REFRESH_INTERVAL, TokenVersion, WebhookAuthError, WebhookAuthenticator,
    WebhookCaller, WebhookTokenSettings,
};
