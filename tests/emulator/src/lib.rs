//! An emulator of Microsoft's commercial-marketplace SaaS Fulfillment, Operations and Metering
//! APIs v2, of the Entra token endpoint and JWKS the publisher uses, and of the webhook sender —
//! behaving as our notes on Microsoft's API (`docs/marketplace-api.md`) describe Microsoft's service.
//!
//! One [`Emulator`] is one HTTP server on loopback:
//!
//! | path | what |
//! | --- | --- |
//! | `/api/…` | Marketplace API (as under `https://marketplaceapi.microsoft.com/api`) |
//! | `/entra/{tenant}/…` | token endpoints (v1, v2), JWKS, OpenID configuration, OIDC sign-in |
//! | `/_control/…` | unauthenticated JSON control API for tests and the command line |
//!
//! Tests drive the customer side with the methods of [`Emulator`] (purchase, change plan, …),
//! inspect what the product did ([`Emulator::requests`], [`Emulator::webhook_deliveries`]) and
//! inject faults ([`Emulator::inject`], [`Emulator::webhook_faults`], [`Emulator::set_quirk`]).
//!
//! It is also the landing page's OpenID Connect provider (Entra ID v2.0, authorization code flow
//! with PKCE) at [`Emulator::signin_authority`]: it signs in [`Emulator::set_signin_user`]'s user
//! at once, records each sign-in ([`Emulator::signins`]) and can issue defective ID tokens
//! ([`Emulator::set_id_token_fault`]).

mod api;
mod config;
mod control;
mod engine;
mod entra;
mod faults;
mod keys;
mod metering;
mod model;
mod server;
mod signin;
mod state;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    API_VERSION, DimensionSpec, EmulatorConfig, MARKETPLACE_RESOURCE_ID, MSA_TENANT_ID, Offer, PlanSpec,
    SigninUser, TokenVersion, default_catalog,
};
pub use control::ControlClient;
pub use faults::{CredentialFault, Endpoint, Fault, IdTokenFault, MeteringFault, Quirk, WebhookFaults};
pub use signin::SigninRecord;

use engine::{ChangeRequest, Reject};
use model::{Action, OpStatus, SeedSubscription};
use server::{ConnKill, KillableListener};
use state::{Shared, State};

/// Errors of the customer-side actions, waits and the control client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmulatorError {
    /// The subscription or operation does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The action breaks a rule (wrong status, unknown plan, same quantity, pending operation lock…).
    #[error("rejected: {0}")]
    Rejected(String),
    /// A bounded wait ended before its condition held.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The control API could not be reached or answered unexpectedly.
    #[error("control API: {0}")]
    Control(String),
}

impl From<Reject> for EmulatorError {
    fn from(r: Reject) -> Self {
        match r {
            Reject::NotFound(m) => Self::NotFound(m),
            other => Self::Rejected(other.message()),
        }
    }
}

/// A customer purchase; `Default` buys plan "basic" of offer "contoso-saas" in a new tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Purchase {
    /// Offer id.
    pub offer_id: String,
    /// Plan id.
    pub plan_id: String,
    /// Seats (per-seat plans; defaults to the plan's minimum).
    pub quantity: Option<u32>,
    /// End customer's tenant (random when `None`).
    pub beneficiary_tenant_id: Option<String>,
    /// Buyer's tenant; differs from the beneficiary's = reseller (CSP): `allowedCustomerOperations: ["Read"]`.
    pub purchaser_tenant_id: Option<String>,
    /// End customer's e-mail.
    pub beneficiary_email: Option<String>,
    /// Buyer's e-mail.
    pub purchaser_email: Option<String>,
    /// Subscription name.
    pub name: Option<String>,
    /// Bought as a free trial (`isFreeTrial: true`; the plan must offer one).
    pub is_free_trial: bool,
    /// `autoRenew` (default `true`).
    pub auto_renew: bool,
    /// `isTest`.
    pub is_test: bool,
    /// `sandboxType: "Csp"`.
    pub csp_sandbox: bool,
    /// `sessionMode: "DryRun"`.
    pub dry_run: bool,
    /// Fixed subscription id instead of a random GUID.
    pub subscription_id: Option<String>,
    /// Fixed purchase token instead of a random one (so a committed event file can resolve).
    pub token: Option<String>,
}

impl Default for Purchase {
    fn default() -> Self {
        Self {
            offer_id: "contoso-saas".into(),
            plan_id: "basic".into(),
            quantity: None,
            beneficiary_tenant_id: None,
            purchaser_tenant_id: None,
            beneficiary_email: None,
            purchaser_email: None,
            name: None,
            is_free_trial: false,
            auto_renew: true,
            is_test: false,
            csp_sandbox: false,
            dry_run: false,
            subscription_id: None,
            token: None,
        }
    }
}

impl Purchase {
    /// A purchase of `plan_id` of the default offer.
    pub fn plan(plan_id: &str) -> Self {
        Self { plan_id: plan_id.into(), ..Self::default() }
    }

    /// Sets the seat count.
    pub fn quantity(mut self, quantity: u32) -> Self {
        self.quantity = Some(quantity);
        self
    }

    /// Sets the offer.
    pub fn offer(mut self, offer_id: &str) -> Self {
        self.offer_id = offer_id.into();
        self
    }

    /// Sets the beneficiary (end customer) tenant.
    pub fn tenant(mut self, tenant_id: &str) -> Self {
        self.beneficiary_tenant_id = Some(tenant_id.into());
        self
    }

    /// Makes it a reseller (CSP) purchase from `reseller_tenant_id`.
    pub fn reseller(mut self, reseller_tenant_id: &str) -> Self {
        self.purchaser_tenant_id = Some(reseller_tenant_id.into());
        self
    }

    /// Makes it a free-trial purchase.
    pub fn free_trial(mut self) -> Self {
        self.is_free_trial = true;
        self
    }
}

/// A purchase's subscription id and its first purchase token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purchased {
    /// SaaS subscription id.
    pub subscription_id: String,
    /// Purchase token (what the landing page receives, before URL encoding).
    pub token: String,
}

/// Identifies an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationHandle {
    /// SaaS subscription id.
    pub subscription_id: String,
    /// Operation id.
    pub operation_id: String,
}

/// A typed view of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationView {
    /// Operation id.
    pub id: String,
    /// SaaS subscription id.
    pub subscription_id: String,
    /// `ChangePlan`, `ChangeQuantity`, `Suspend`, `Reinstate`, `Renew`, `Unsubscribe`.
    pub action: String,
    /// `InProgress`, `Succeeded`, `Failed`.
    pub status: String,
    /// `Azure` or `Partner`.
    pub source: String,
    /// Target (ChangePlan) or current plan.
    pub plan_id: String,
    /// Target (ChangeQuantity) or current quantity.
    pub quantity: Option<u32>,
    /// Creation time.
    pub time_stamp: DateTime<Utc>,
    /// Why it failed, if it did.
    pub error_message: String,
}

impl From<&model::Op> for OperationView {
    fn from(op: &model::Op) -> Self {
        Self {
            id: op.id.clone(),
            subscription_id: op.subscription_id.clone(),
            action: op.action.as_str().into(),
            status: op.status.as_str().into(),
            source: op.source.as_str().into(),
            plan_id: op.plan_id.clone(),
            quantity: op.quantity,
            time_stamp: op.time_stamp,
            error_message: op.error_message.clone(),
        }
    }
}

/// One webhook POST attempt (or a delivery that was dropped or had no URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// Operation id (payload `id`).
    pub operation_id: String,
    /// SaaS subscription id.
    pub subscription_id: String,
    /// Payload `action`.
    pub action: String,
    /// Target URL (`None` when none is configured).
    pub url: Option<String>,
    /// The JSON body.
    pub payload: Value,
    /// The bearer JWT sent (`None` when nothing was sent).
    pub jwt: Option<String>,
    /// 1 for the first try of a delivery, 2… for retries; 0 when nothing was sent.
    pub attempt: u32,
    /// An extra copy sent by the `duplicates` fault.
    pub duplicate: bool,
    /// HTTP status of the publisher's answer.
    pub status: Option<u16>,
    /// Transport error (or why nothing was sent).
    pub error: Option<String>,
    /// Dropped by a webhook fault.
    pub dropped: bool,
    /// When the attempt finished.
    pub at: DateTime<Utc>,
}

/// One Marketplace API request as received, and the answer's status and ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path below the API base, e.g. "/saas/subscriptions/{id}/activate".
    pub path: String,
    /// Raw query string (still percent-encoded).
    pub query: String,
    /// `x-ms-requestid` sent by the client.
    pub request_id: Option<String>,
    /// `x-ms-correlationid` sent by the client.
    pub correlation_id: Option<String>,
    /// Request body, when it was JSON.
    pub body: Option<Value>,
    /// Response status; `None` when the connection was dropped by a fault.
    pub status: Option<u16>,
    /// `x-ms-requestid` of the response (echoed or generated).
    pub response_request_id: String,
    /// `x-ms-correlationid` of the response (echoed or generated).
    pub response_correlation_id: String,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

/// A running emulator; dropping it (or [`Emulator::shutdown`]) stops the server and its timers.
pub struct Emulator {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl Emulator {
    /// Starts an emulator on 127.0.0.1 with a free port.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts an emulator on `addr`.
    pub async fn start_on(addr: SocketAddr, config: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(addr).await?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let signer = keys::Signer::generate()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let http = reqwest::Client::builder().build().map_err(std::io::Error::other)?;
        let mut paging_key = [0u8; 12];
        rand::fill(&mut paging_key);
        let shared = Arc::new(Shared {
            config,
            base_url: format!("http://{local}"),
            signer,
            rogue_signer: std::sync::OnceLock::new(),
            state: std::sync::Mutex::new(State::default()),
            changes: watch::channel(0).0,
            shutdown: shutdown_rx.clone(),
            http,
            tokens_issued: AtomicU64::new(0),
            marketplace_oid: model::guid(),
            paging_key: format!("{}+/", base64_std(&paging_key)),
        });
        let app = server::router(Arc::clone(&shared)).into_make_service_with_connect_info::<ConnKill>();
        let mut stop = shutdown_rx;
        let server = tokio::spawn(async move {
            axum::serve(KillableListener(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|down| *down).await;
                })
                .await
        });
        shared.lock().set_signin_user(shared.config.signin_user.clone());
        tracing::info!(url = %shared.base_url, "marketplace emulator listening");
        Ok(Emulator { shared, shutdown, server: Some(server) })
    }

    /// Stops the server and its timers and waits (at most 5 s) for open connections to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The Marketplace API base, "http://127.0.0.1:PORT/api".
    pub fn api_base(&self) -> String {
        self.shared.api_base()
    }

    /// The Entra-like authority, "http://127.0.0.1:PORT/entra" (tenant paths hang off it).
    pub fn authority(&self) -> String {
        format!("{}/entra", self.shared.base_url)
    }

    /// The v1 token endpoint of the publisher tenant.
    pub fn token_url_v1(&self) -> String {
        format!("{}/{}/oauth2/token", self.authority(), self.shared.config.publisher_tenant_id)
    }

    /// The v2 token endpoint of the publisher tenant.
    pub fn token_url_v2(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority(), self.shared.config.publisher_tenant_id)
    }

    /// The v2 JWKS URL of the publisher tenant.
    pub fn jwks_url(&self) -> String {
        format!("{}/{}/discovery/v2.0/keys", self.authority(), self.shared.config.publisher_tenant_id)
    }

    /// The landing page's (multi-tenant) OpenID Connect authority: `{authority}/organizations/v2.0`.
    /// Its discovery document is at `…/v2.0/.well-known/openid-configuration`; its `issuer` is the
    /// template `{authority}/{tenantid}/v2.0`, and ID tokens carry `{authority}/{tid}/v2.0`.
    pub fn signin_authority(&self) -> String {
        format!("{}/organizations/v2.0", self.authority())
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// Buys a plan: a `PendingFulfillmentStart` subscription and a fresh purchase token.
    /// Panics if the offer/plan is not in the catalog or the quantity is outside its limits
    /// (a test bug); use [`Emulator::try_purchase`] for a `Result`.
    pub async fn purchase(&self, p: Purchase) -> Purchased {
        match self.try_purchase(p).await {
            Ok(purchased) => purchased,
            Err(e) => panic!("Emulator::purchase: {e}"),
        }
    }

    /// Buys a plan, or says why the catalog refuses it.
    pub async fn try_purchase(&self, p: Purchase) -> Result<Purchased, EmulatorError> {
        engine::purchase(&self.shared, p).map_err(Into::into)
    }

    /// A fresh purchase token for an existing subscription ("Manage account"); empty if unknown.
    pub async fn landing_token(&self, subscription_id: &str) -> String {
        engine::landing_token(&self.shared, subscription_id).unwrap_or_default()
    }

    /// Customer changes the plan (source `Azure`): ACK-able `ChangePlan` webhook.
    pub async fn change_plan(
        &self,
        subscription_id: &str,
        plan_id: &str,
    ) -> Result<OperationHandle, EmulatorError> {
        Ok(engine::customer_change(&self.shared, subscription_id, ChangeRequest::Plan(plan_id.into()))?)
    }

    /// Customer changes the seat count (source `Azure`): ACK-able `ChangeQuantity` webhook.
    pub async fn change_quantity(
        &self,
        subscription_id: &str,
        quantity: u32,
    ) -> Result<OperationHandle, EmulatorError> {
        Ok(engine::customer_change(
            &self.shared,
            subscription_id,
            ChangeRequest::Quantity(i64::from(quantity)),
        )?)
    }

    /// Payment failed: `Subscribed` → `Suspended`, `Suspend` webhook.
    pub async fn suspend(&self, id: &str) -> Result<OperationHandle, EmulatorError> {
        Ok(engine::customer_action(&self.shared, id, Action::Suspend)?)
    }

    /// Payment fixed: `Suspended` → `Subscribed`, notify-only `Reinstate` webhook (status InProgress).
    pub async fn reinstate(&self, id: &str) -> Result<OperationHandle, EmulatorError> {
        Ok(engine::customer_action(&self.shared, id, Action::Reinstate)?)
    }

    /// Term renewal: the term moves to the next period, `Renew` webhook.
    pub async fn renew(&self, id: &str) -> Result<OperationHandle, EmulatorError> {
        Ok(engine::customer_action(&self.shared, id, Action::Renew)?)
    }

    /// Customer cancels: → `Unsubscribed`, `Unsubscribe` webhook (none from `PendingFulfillmentStart`).
    pub async fn unsubscribe(&self, id: &str) -> Result<OperationHandle, EmulatorError> {
        Ok(engine::customer_action(&self.shared, id, Action::Unsubscribe)?)
    }

    /// Waits (bounded) until the operation is terminal (`Succeeded`/`Failed`/`Conflict`).
    pub async fn wait_operation(
        &self,
        subscription_id: &str,
        operation_id: &str,
        timeout: Duration,
    ) -> Result<OperationView, EmulatorError> {
        // Operations exist as soon as their handle or 202 is returned: a missing one is an error now.
        if self.shared.lock().op(subscription_id, operation_id).is_none() {
            return Err(EmulatorError::NotFound(format!("operation {operation_id} of {subscription_id}")));
        }
        self.wait_until(timeout, |state| {
            let op = state.op(subscription_id, operation_id)?;
            (op.status != OpStatus::InProgress).then(|| OperationView::from(op))
        })
        .await
        .ok_or_else(|| {
            EmulatorError::Timeout(format!("operation {operation_id} still in progress after {timeout:?}"))
        })
    }

    /// Waits (bounded) for a webhook delivery record matching `predicate`.
    pub async fn wait_webhook(
        &self,
        timeout: Duration,
        predicate: impl Fn(&WebhookDelivery) -> bool,
    ) -> Result<WebhookDelivery, EmulatorError> {
        self.wait_until(timeout, |state| state.deliveries.iter().find(|d| predicate(d)).cloned())
            .await
            .ok_or_else(|| EmulatorError::Timeout(format!("no matching webhook delivery within {timeout:?}")))
    }

    /// Waits (bounded) until the list of webhook delivery records satisfies `predicate`; returns it.
    pub async fn wait_webhooks(
        &self,
        timeout: Duration,
        predicate: impl Fn(&[WebhookDelivery]) -> bool,
    ) -> Result<Vec<WebhookDelivery>, EmulatorError> {
        self.wait_until(timeout, |state| predicate(&state.deliveries).then(|| state.deliveries.clone()))
            .await
            .ok_or_else(|| {
                EmulatorError::Timeout(format!("webhook deliveries not as expected within {timeout:?}"))
            })
    }

    /// Waits (bounded) until the subscription's JSON satisfies `predicate`.
    pub async fn wait_subscription(
        &self,
        id: &str,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Result<Value, EmulatorError> {
        self.wait_until(timeout, |state| {
            state.sub(id).map(|s| s.to_json(&state.quirks)).filter(|v| predicate(v))
        })
        .await
        .ok_or_else(|| {
            EmulatorError::Timeout(format!("subscription {id} did not reach the state within {timeout:?}"))
        })
    }

    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(found) = check(&self.shared.lock()) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return check(&self.shared.lock()),
            }
        }
    }

    /// Exactly what `GET /saas/subscriptions/{id}` would return.
    pub async fn subscription(&self, id: &str) -> Option<Value> {
        let state = self.shared.lock();
        state.sub(id).map(|s| s.to_json(&state.quirks))
    }

    /// All subscriptions in Microsoft's shape, in creation order.
    pub async fn subscriptions(&self) -> Vec<Value> {
        let state = self.shared.lock();
        state.order.iter().filter_map(|id| state.subs.get(id)).map(|s| s.to_json(&state.quirks)).collect()
    }

    /// The operation as `GET …/operations/{id}` would return it (ignoring the notify-only quirk).
    pub async fn operation(&self, subscription_id: &str, operation_id: &str) -> Option<Value> {
        let state = self.shared.lock();
        state.op(subscription_id, operation_id).map(|op| op.to_json(&state.quirks))
    }

    /// Every operation of a subscription, oldest first.
    pub async fn operations(&self, subscription_id: &str) -> Vec<OperationView> {
        let state = self.shared.lock();
        let mut ops: Vec<OperationView> = state
            .ops
            .values()
            .filter(|op| op.subscription_id.eq_ignore_ascii_case(subscription_id))
            .map(OperationView::from)
            .collect();
        ops.sort_by_key(|o| o.time_stamp);
        ops
    }

    /// Every webhook POST attempt so far (and dropped / unsent deliveries).
    pub async fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Every Marketplace API request so far.
    pub async fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Client-credentials access tokens issued by the token endpoint so far (sign-ins not counted).
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens_issued.load(Ordering::SeqCst)
    }

    /// Every access token issued so far is rejected (403) from now on.
    pub async fn revoke_access_tokens(&self) {
        self.shared.lock().access_tokens.clear();
    }

    /// The JWKS served at the discovery endpoints.
    pub fn jwks(&self) -> Value {
        self.shared.signer.jwks()
    }

    /// Signs `claims` as an RS256 JWT with the emulator's key and `kid`.
    pub fn sign_jwt(&self, claims: &Value) -> String {
        self.shared.signer.sign(claims)
    }

    /// The claims a webhook JWT would carry now (tests forge variants from them).
    pub fn webhook_claims(&self) -> Value {
        webhook::webhook_claims(&self.shared)
    }

    /// The `kid` of the signing key.
    pub fn kid(&self) -> String {
        self.shared.signer.kid().to_string()
    }

    /// The next `times` calls to `endpoint` get `fault` (queued after faults already injected).
    pub async fn inject(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        let mut state = self.shared.lock();
        let queue = state.faults.entry(endpoint).or_default();
        for _ in 0..times {
            queue.push_back(fault.clone());
        }
    }

    /// Sets the webhook faults (replacing the previous ones).
    pub async fn webhook_faults(&self, faults: WebhookFaults) {
        self.shared.lock().webhook_faults = faults;
    }

    /// Sends the webhooks held by the `reorder` fault, newest first; returns how many.
    pub async fn flush_webhooks(&self) -> usize {
        webhook::flush(&self.shared)
    }

    /// Removes every injected fault, webhook fault, ID-token, credential and metering fault (held
    /// webhooks stay until flushed).
    pub async fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.faults.clear();
        state.webhook_faults = WebhookFaults::default();
        state.id_token_fault = None;
        state.credential_fault = None;
        state.metering_faults.clear();
    }

    /// Signs in `user` from now on (codes already issued keep their user). Its tenant becomes known
    /// (discovery, JWKS, authorize at `{authority}/{tid}/…`).
    pub async fn set_signin_user(&self, user: SigninUser) {
        self.shared.lock().set_signin_user(user);
    }

    /// The user signed in now.
    pub async fn signin_user(&self) -> SigninUser {
        self.shared.lock().signin_user.clone()
    }

    /// The publisher's client-credentials grant fails with `fault`'s Entra error from now on
    /// (`None`: it works again).
    pub async fn set_credential_fault(&self, fault: Option<CredentialFault>) {
        self.shared.lock().credential_fault = fault;
    }

    /// The Metering API answers every usage event of `resource_id` with `fault` from now on
    /// (`None`: as usual again).
    pub async fn set_metering_fault(&self, resource_id: &str, fault: Option<MeteringFault>) {
        let mut state = self.shared.lock();
        match fault {
            Some(f) => state.metering_faults.insert(resource_id.to_ascii_lowercase(), f),
            None => state.metering_faults.remove(&resource_id.to_ascii_lowercase()),
        };
    }

    /// ID tokens issued from now on carry `fault`'s defect (`None`: valid ones again).
    pub async fn set_id_token_fault(&self, fault: Option<IdTokenFault>) {
        self.shared.lock().id_token_fault = fault;
    }

    /// Every authorize request so far (refused ones too), oldest first.
    pub async fn signins(&self) -> Vec<SigninRecord> {
        self.shared.lock().signins.clone()
    }

    /// Waits (bounded) for a sign-in record matching `predicate` (e.g. `|s| s.redeemed`).
    pub async fn wait_signin(
        &self,
        timeout: Duration,
        predicate: impl Fn(&SigninRecord) -> bool,
    ) -> Result<SigninRecord, EmulatorError> {
        self.wait_until(timeout, |state| state.signins.iter().find(|s| predicate(s)).cloned())
            .await
            .ok_or_else(|| EmulatorError::Timeout(format!("no matching sign-in within {timeout:?}")))
    }

    /// Switches a quirk on or off.
    pub async fn set_quirk(&self, quirk: Quirk, on: bool) {
        let mut state = self.shared.lock();
        if on {
            state.quirks.insert(quirk);
        } else {
            state.quirks.remove(&quirk);
        }
    }

    /// Inserts subscriptions given in Microsoft's shape (missing fields get purchase defaults;
    /// entries that are not JSON objects are skipped). Returns how many were inserted.
    pub async fn seed(&self, subscriptions: Vec<Value>) -> usize {
        let now = Utc::now();
        let mut state = self.shared.lock();
        let mut count = 0;
        for value in subscriptions {
            match serde_json::from_value::<SeedSubscription>(value) {
                Ok(seed) => {
                    state.insert_sub(seed.into_sub(&self.shared.config, now));
                    count += 1;
                }
                Err(e) => tracing::warn!(error = %e, "seed: skipped an entry"),
            }
        }
        drop(state);
        self.shared.changed();
        count
    }
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}
