//! Entra ID as an identity provider: signing keys (JWKS) and the OpenID Connect sign-in of the
//! landing page.

mod jwks;
mod oidc;

pub use jwks::{JwksCache, JwksError};
pub use oidc::{OidcClient, OidcError, OidcSettings, SignedInUser, SigninStart};
