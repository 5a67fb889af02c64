//! Configuration of an emulator instance and its offer catalog.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The Marketplace SaaS API application (resource) id: `resource` of v1 token requests, `aud` of
/// the access tokens, and `appid`/`azp` of webhook JWTs.
pub const MARKETPLACE_RESOURCE_ID: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";
/// The only `api-version` the Fulfillment, Operations and Metering APIs accept.
pub const API_VERSION: &str = "2018-08-31";

/// Everything an emulator instance needs; `Default` gives a working setup with fixed ids.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The publisher's marketplace id string (`publisherId` field), e.g. "contoso".
    pub publisher_id: String,
    /// Entra tenant of the publisher (GUID string): token endpoint tenant, webhook `tid`.
    pub publisher_tenant_id: String,
    /// The publisher's app (client) id: `client_id` at the token endpoint, `aud` of webhook JWTs.
    pub publisher_app_id: String,
    /// The client secret the token endpoint accepts.
    pub publisher_client_secret: String,
    /// Certificates (PEM) registered on the publisher's app: a client assertion signed by one of
    /// their keys (PS256, named by `x5t#S256`) is accepted instead of the secret.
    pub publisher_certificates: Vec<String>,
    /// Where webhooks are POSTed; `None` = nothing is sent (deliveries are only recorded).
    pub webhook_url: Option<String>,
    /// Decides webhook JWT `iss`, `ver` and `appid` (V1) vs `azp` (V2).
    pub webhook_token_version: TokenVersion,
    /// How long a customer ChangePlan/ChangeQuantity waits for a PATCH or 4xx before auto-accepting.
    pub ack_window: Duration,
    /// How long a publisher-initiated PATCH/DELETE takes to complete.
    pub operation_delay: Duration,
    /// Lifetime of a purchase (landing-page) token.
    pub purchase_token_ttl: Duration,
    /// Lifetime of an access token issued by the token endpoint.
    pub access_token_ttl: Duration,
    /// How many times a webhook delivery that got 5xx/timeout/connection error is retried.
    pub webhook_retries: u32,
    /// Delay before the first webhook retry; doubled for each further retry.
    pub webhook_retry_backoff: Duration,
    /// Timeout of one webhook POST.
    pub webhook_timeout: Duration,
    /// The offer catalog (plans, prices, dimensions).
    pub offers: Vec<Offer>,
    /// The user the sign-in endpoints (`…/oauth2/v2.0/authorize`) sign in at once, without a login
    /// page; changeable at run time with `Emulator::set_signin_user`.
    pub signin_user: SigninUser,
    /// The landing page's (multi-tenant) app id: the only `client_id` the authorize and
    /// authorization-code token requests accept; `None` accepts any non-empty one.
    pub signin_client_id: Option<String>,
    /// The landing page app's client secret; `None` = not checked (any or none is accepted).
    pub signin_client_secret: Option<String>,
    /// The landing page app's registered redirect URIs (exact match, as Entra's reply URLs);
    /// empty accepts any absolute http(s) URL without a fragment.
    pub signin_redirect_uris: Vec<String>,
    /// Lifetime of an authorization code (Entra: a few minutes; tests may set `Duration::ZERO`).
    pub authorization_code_ttl: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            publisher_id: "contoso".into(),
            publisher_tenant_id: "72f988bf-0000-4000-8000-00000000e001".into(),
            publisher_app_id: "a1b2c3d4-0000-4000-8000-00000000a991".into(),
            publisher_client_secret: "emulator-secret".into(),
            publisher_certificates: Vec::new(),
            webhook_url: None,
            webhook_token_version: TokenVersion::V1,
            ack_window: Duration::from_secs(10),
            operation_delay: Duration::from_secs(2),
            purchase_token_ttl: Duration::from_secs(24 * 3600),
            access_token_ttl: Duration::from_secs(3600),
            webhook_retries: 3,
            webhook_retry_backoff: Duration::from_millis(500),
            webhook_timeout: Duration::from_secs(5),
            offers: default_catalog(),
            signin_user: SigninUser::default(),
            signin_client_id: None,
            signin_client_secret: None,
            signin_redirect_uris: Vec::new(),
            authorization_code_ttl: Duration::from_secs(5 * 60),
        }
    }
}

/// The tenant id Entra uses for personal Microsoft accounts (the `consumers` tenant).
pub const MSA_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// The user the emulator's identity provider signs in (the buyer on the landing page).
///
/// `Default` is an admin of Fabrikam, a customer tenant (`tid` differs from the publisher's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SigninUser {
    /// Display name (`name` claim, with the `profile` scope).
    pub name: String,
    /// E-mail (`email` claim, with the `email` scope); empty = the user has none, no claim.
    pub email: String,
    /// Sign-in name, usually the UPN (`preferred_username` claim, with the `profile` scope).
    pub preferred_username: String,
    /// Object id of the user in its tenant (`oid` claim, with the `profile` scope).
    pub oid: String,
    /// The user's tenant (`tid` claim; the GUID in `iss`). [`MSA_TENANT_ID`] makes it a
    /// personal Microsoft account (signs in at `consumers`/`common`, not `organizations`).
    pub tid: String,
}

impl Default for SigninUser {
    fn default() -> Self {
        Self {
            name: "Fabrikam Admin".into(),
            email: "admin@fabrikam.example".into(),
            preferred_username: "admin@fabrikam.onmicrosoft.com".into(),
            oid: "3f6c2a51-0000-4000-8000-00000000ad01".into(),
            tid: "b4d1f00d-0000-4000-8000-0000000fab01".into(),
        }
    }
}

impl EmulatorConfig {
    /// Finds a plan of an offer in the catalog.
    pub fn plan(&self, offer_id: &str, plan_id: &str) -> Option<&PlanSpec> {
        self.offer(offer_id)?.plans.iter().find(|p| p.plan_id == plan_id)
    }

    /// Finds an offer in the catalog.
    pub fn offer(&self, offer_id: &str) -> Option<&Offer> {
        self.offers.iter().find(|o| o.offer_id == offer_id)
    }
}

/// Entra access-token version of the webhook JWT (follows the publisher app's accepted version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TokenVersion {
    /// `iss` = `https://sts.windows.net/{tid}/`, `ver` = "1.0", `appid` claim.
    #[default]
    V1,
    /// `iss` = `https://login.microsoftonline.com/{tid}/v2.0`, `ver` = "2.0", `azp` claim.
    V2,
}

/// A SaaS offer of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    /// Offer id as in Partner Center.
    pub offer_id: String,
    /// Its plans.
    pub plans: Vec<PlanSpec>,
}

/// A plan of an offer, rendered as Microsoft's `Plan` object by listAvailablePlans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSpec {
    /// Plan id (lowercase alnum, `-`, `_`).
    pub plan_id: String,
    /// Name shown in the marketplace.
    pub display_name: String,
    /// Plan description.
    pub description: String,
    /// Private (audience-restricted) plan; the emulator lists it to every beneficiary.
    pub is_private: bool,
    /// Per-user pricing: the subscription carries a seat quantity.
    pub is_price_per_seat: bool,
    /// Seat minimum (per-seat plans).
    pub min_quantity: Option<u32>,
    /// Seat maximum (per-seat plans).
    pub max_quantity: Option<u32>,
    /// The plan offers a one-month free trial.
    pub has_free_trials: bool,
    /// No longer sold: listed, but changes to it are refused.
    pub is_stop_sell: bool,
    /// Term unit: "P1M", "P1Y", "P2Y", "P3Y", "P4Y", "P5Y".
    pub term_unit: String,
    /// Price per term (per seat for per-seat plans).
    pub price: f64,
    /// ISO currency code.
    pub currency: String,
    /// Market code, e.g. "US".
    pub market: String,
    /// Custom metering dimensions (flat-rate plans).
    pub metering_dimensions: Vec<DimensionSpec>,
    /// Auto-activated (Microsoft, 2026): the purchase makes the subscription `Subscribed` at once
    /// and sends a `Subscribe` webhook; the publisher does not call Activate.
    pub auto_activate: bool,
}

/// A custom metering dimension of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DimensionSpec {
    /// Dimension id used in usage events.
    pub id: String,
    /// Name shown to customers.
    pub display_name: String,
    /// Unit of measure, e.g. "1000 calls".
    pub unit_of_measure: String,
    /// Price per unit above the included quantity.
    pub price_per_unit: f64,
    /// Units included in the base price per term (rendered as a string, as Microsoft does).
    pub included_quantity: u64,
}

impl PlanSpec {
    /// A flat-rate plan with a monthly term and no dimensions.
    pub fn flat(plan_id: &str, display_name: &str, price: f64) -> Self {
        Self {
            plan_id: plan_id.into(),
            display_name: display_name.into(),
            description: format!("{display_name} plan"),
            is_private: false,
            is_price_per_seat: false,
            min_quantity: None,
            max_quantity: None,
            has_free_trials: false,
            is_stop_sell: false,
            term_unit: "P1M".into(),
            price,
            currency: "USD".into(),
            market: "US".into(),
            metering_dimensions: Vec::new(),
            auto_activate: false,
        }
    }

    /// A per-seat plan with the given seat limits and term unit.
    pub fn per_seat(
        plan_id: &str,
        display_name: &str,
        min: u32,
        max: u32,
        term_unit: &str,
        price: f64,
    ) -> Self {
        Self {
            is_price_per_seat: true,
            min_quantity: Some(min),
            max_quantity: Some(max),
            term_unit: term_unit.into(),
            ..Self::flat(plan_id, display_name, price)
        }
    }

    /// Whether `dimension` is one of the plan's metering dimensions.
    pub fn has_dimension(&self, dimension: &str) -> bool {
        self.metering_dimensions.iter().any(|d| d.id == dimension)
    }
}

/// The default catalog: offer "contoso-saas" with plans "basic" (flat, P1M, dimension
/// "api-calls"), "team-monthly" (per seat 1–500, P1M), "team-yearly" (per seat 5–1000, P1Y) and
/// "enterprise" (private, per seat 10–5000, P1Y), and "team-auto" (per seat 1–500, P1M,
/// auto-activated).
pub fn default_catalog() -> Vec<Offer> {
    let mut basic = PlanSpec::flat("basic", "Basic", 49.0);
    basic.has_free_trials = false;
    basic.metering_dimensions.push(DimensionSpec {
        id: "api-calls".into(),
        display_name: "API calls".into(),
        unit_of_measure: "1000 calls".into(),
        price_per_unit: 0.5,
        included_quantity: 100,
    });
    let mut team_monthly = PlanSpec::per_seat("team-monthly", "Team (monthly)", 1, 500, "P1M", 10.0);
    team_monthly.has_free_trials = true;
    let team_yearly = PlanSpec::per_seat("team-yearly", "Team (yearly)", 5, 1000, "P1Y", 100.0);
    let mut enterprise = PlanSpec::per_seat("enterprise", "Enterprise", 10, 5000, "P1Y", 200.0);
    enterprise.is_private = true;
    let mut team_auto = PlanSpec::per_seat("team-auto", "Team (auto-activated)", 1, 500, "P1M", 10.0);
    team_auto.auto_activate = true;
    vec![Offer {
        offer_id: "contoso-saas".into(),
        plans: vec![basic, team_monthly, team_yearly, enterprise, team_auto],
    }]
}
