//! What the buyer's browser sees: the query string as Microsoft sends it, sealed form tokens and
//! cookies, and the HTML pages. Knows no Lambda: the functions adapt HTTP to it.

pub mod confirmation;
pub mod pages;
pub mod query;
pub mod respond;
pub mod seal;
pub mod session;
pub mod signin;

use std::time::Duration;

use url::Url;

use crate::identity::OidcSettings;
use seal::Sealer;

/// How long a confirmation form stays valid.
pub const FORM_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// What the buyer-facing pages need.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Signs form tokens and cookies.
    pub sealer: Sealer,
    pub product_name: String,
    /// Where a buyer goes once subscribed.
    pub product_url: Option<String>,
    /// The landing page's public URL (Partner Center's *Landing page URL*).
    pub landing_url: Url,
    /// The confirmation form's target.
    pub activate_url: Url,
    /// Activate as soon as the buyer lands, without the confirmation step.
    pub auto_activate: bool,
    /// Mark cookies `Secure` (off only for plain-HTTP local runs).
    pub secure_cookies: bool,
    /// Entra ID sign-in before the landing page; `None` runs without it (local use).
    pub signin: Option<OidcSettings>,
    /// How long a confirmation form stays valid.
    pub form_lifetime: Duration,
}
