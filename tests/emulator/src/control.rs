//! The JSON control API under `/_control` (unauthenticated: a test tool on loopback) and a
//! client for it, used by the command line.
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `GET /_control/config` | | ids, URLs, timings |
//! | `POST /_control/purchase` | `Purchase` (camelCase) | `{"subscriptionId","token"}` |
//! | `POST /_control/seed` | `[Subscription…]` | `{"count"}` |
//! | `GET /_control/subscriptions` | | `[Subscription…]` |
//! | `GET /_control/subscriptions/{id}` | | `Subscription` |
//! | `POST /_control/subscriptions/{id}/landing-token` | | `{"token"}` |
//! | `POST /_control/subscriptions/{id}/change-plan` | `{"planId"}` | `{"subscriptionId","operationId"}` |
//! | `POST /_control/subscriptions/{id}/change-quantity` | `{"quantity"}` | same |
//! | `POST /_control/subscriptions/{id}/{suspend,reinstate,renew,unsubscribe}` | | same |
//! | `GET /_control/subscriptions/{id}/operations` | | `[OperationView…]` |
//! | `GET /_control/subscriptions/{id}/operations/{opId}` | | `SaaSOperation` |
//! | `GET /_control/webhooks` | | `[WebhookDelivery…]` |
//! | `POST /_control/webhooks/flush` | | `{"flushed"}` |
//! | `PUT /_control/webhook-faults` | `WebhookFaults` (delay in ms) | 204 |
//! | `POST /_control/faults` | `{"endpoint","fault","times"}` | 204 |
//! | `DELETE /_control/faults` | | 204 (clears every fault) |
//! | `PUT /_control/quirks/{Quirk}` | `{"on": bool}` | 204 |
//! | `GET /_control/requests` | | `[RecordedRequest…]` |
//! | `POST /_control/revoke-access-tokens` | | 204 |
//! | `GET /_control/signins` | | `[SigninRecord…]` |
//! | `GET /_control/signin-user`, `PUT` | `SigninUser` (PUT) | `SigninUser` (GET), 204 (PUT) |
//! | `PUT /_control/id-token-fault` | `{"fault": IdTokenFault or null}` | 204 |
//! | `PUT /_control/credential-fault` | `{"fault": CredentialFault or null}` | 204 |
//! | `PUT /_control/subscriptions/{id}/metering-fault` | `{"fault": MeteringFault or null}` | 204 |
//!
//! Errors: `{"error": message}` with 400 (rule), 404 (unknown), 409 (invalid transition).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::SigninUser;
use crate::engine::{self, ChangeRequest, Reject};
use crate::faults::{CredentialFault, Endpoint, Fault, IdTokenFault, MeteringFault, Quirk, WebhookFaults};
use crate::model::{Action, SeedSubscription};
use crate::server::{empty_response, json_response};
use crate::signin::SigninRecord;
use crate::state::Shared;
use crate::{
    EmulatorError, OperationHandle, OperationView, Purchase, Purchased, RecordedRequest, WebhookDelivery,
};

/// The routes, nested under `/_control`.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/config", get(config))
        .route("/purchase", post(purchase))
        .route("/seed", post(seed))
        .route("/subscriptions", get(subscriptions))
        .route("/subscriptions/{id}", get(subscription))
        .route("/subscriptions/{id}/landing-token", post(landing_token))
        .route("/subscriptions/{id}/operations", get(operations))
        .route("/subscriptions/{id}/operations/{op}", get(operation))
        .route("/subscriptions/{id}/metering-fault", put(metering_fault))
        .route("/subscriptions/{id}/{action}", post(action))
        .route("/webhooks", get(webhooks))
        .route("/webhook-token", get(webhook_token))
        .route("/webhooks/flush", post(flush))
        .route("/webhook-faults", put(webhook_faults))
        .route("/faults", post(inject).delete(clear_faults))
        .route("/quirks/{quirk}", put(quirk))
        .route("/requests", get(requests))
        .route("/revoke-access-tokens", post(revoke))
        .route("/signins", get(signins))
        .route("/signin-user", get(signin_user).put(set_signin_user))
        .route("/id-token-fault", put(id_token_fault))
        .route("/credential-fault", put(credential_fault))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({"error": message.into()}))
}

fn reject(r: Reject) -> Response {
    let status = match r {
        Reject::BadRequest { .. } => StatusCode::BAD_REQUEST,
        Reject::NotFound(_) => StatusCode::NOT_FOUND,
        Reject::Conflict(_) => StatusCode::CONFLICT,
        Reject::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, r.message())
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

fn bad_body(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn ok<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn config(State(shared): State<Arc<Shared>>) -> Response {
    let c = &shared.config;
    ok(&json!({
        "url": shared.base_url,
        "apiBase": shared.api_base(),
        "authority": format!("{}/entra", shared.base_url),
        "publisherId": c.publisher_id,
        "publisherTenantId": c.publisher_tenant_id,
        "publisherAppId": c.publisher_app_id,
        "publisherClientSecret": c.publisher_client_secret,
        "webhookUrl": c.webhook_url,
        "webhookTokenVersion": c.webhook_token_version,
        "ackWindowMs": c.ack_window.as_millis() as u64,
        "operationDelayMs": c.operation_delay.as_millis() as u64,
        "offers": c.offers,
        "signinAuthority": format!("{}/entra/organizations/v2.0", shared.base_url),
        "signinClientId": c.signin_client_id,
        "signinRedirectUris": c.signin_redirect_uris,
        "signinUser": shared.lock().signin_user,
    }))
}

async fn purchase(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let p: Purchase = match parse(&body) {
        Ok(p) => p,
        Err(m) => return bad_body(m),
    };
    match engine::purchase(&shared, p) {
        Ok(purchased) => json_response(StatusCode::CREATED, &json!(purchased)),
        Err(r) => reject(r),
    }
}

async fn seed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let items: Vec<SeedSubscription> = match parse(&body) {
        Ok(items) => items,
        Err(m) => return bad_body(m),
    };
    let now = chrono::Utc::now();
    let count = items.len();
    {
        let mut state = shared.lock();
        for item in items {
            state.insert_sub(item.into_sub(&shared.config, now));
        }
    }
    shared.changed();
    ok(&json!({"count": count}))
}

async fn subscriptions(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock();
    let list: Vec<Value> =
        state.order.iter().filter_map(|id| state.subs.get(id)).map(|s| s.to_json(&state.quirks)).collect();
    ok(&list)
}

async fn subscription(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = shared.lock();
    match state.sub(&id) {
        Some(s) => ok(&s.to_json(&state.quirks)),
        None => error(StatusCode::NOT_FOUND, format!("subscription {id} not found")),
    }
}

/// A bearer token as the webhook sender signs it now, for a delivery made by hand (an `events/`
/// file with `sam local invoke`).
async fn webhook_token(State(shared): State<Arc<Shared>>) -> Response {
    ok(&json!({ "token": shared.signer.sign(&crate::webhook::webhook_claims(&shared)) }))
}

async fn landing_token(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match engine::landing_token(&shared, &id) {
        Ok(token) => ok(&json!({"token": token})),
        Err(r) => reject(r),
    }
}

async fn operations(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = shared.lock();
    let mut ops: Vec<OperationView> = state
        .ops
        .values()
        .filter(|op| op.subscription_id.eq_ignore_ascii_case(&id))
        .map(OperationView::from)
        .collect();
    ops.sort_by_key(|o| o.time_stamp);
    ok(&ops)
}

async fn operation(State(shared): State<Arc<Shared>>, Path((id, op)): Path<(String, String)>) -> Response {
    let state = shared.lock();
    match state.op(&id, &op) {
        Some(o) => ok(&o.to_json(&state.quirks)),
        None => error(StatusCode::NOT_FOUND, format!("operation {op} of {id} not found")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeBody {
    plan_id: Option<String>,
    quantity: Option<i64>,
}

async fn action(
    State(shared): State<Arc<Shared>>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = match action.as_str() {
        "change-plan" | "change-quantity" => {
            let change: ChangeBody = match parse(&body) {
                Ok(c) => c,
                Err(m) => return bad_body(m),
            };
            let request = match (action.as_str(), change) {
                ("change-plan", ChangeBody { plan_id: Some(p), .. }) => ChangeRequest::Plan(p),
                ("change-quantity", ChangeBody { quantity: Some(q), .. }) => ChangeRequest::Quantity(q),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "planId (change-plan) or quantity (change-quantity) required",
                    );
                }
            };
            engine::customer_change(&shared, &id, request)
        }
        "suspend" => engine::customer_action(&shared, &id, Action::Suspend),
        "reinstate" => engine::customer_action(&shared, &id, Action::Reinstate),
        "renew" => engine::customer_action(&shared, &id, Action::Renew),
        "unsubscribe" => engine::customer_action(&shared, &id, Action::Unsubscribe),
        other => return error(StatusCode::NOT_FOUND, format!("unknown action {other}")),
    };
    match result {
        Ok(handle) => ok(&handle),
        Err(r) => reject(r),
    }
}

async fn webhooks(State(shared): State<Arc<Shared>>) -> Response {
    let deliveries = shared.lock().deliveries.clone();
    ok(&deliveries)
}

async fn flush(State(shared): State<Arc<Shared>>) -> Response {
    ok(&json!({"flushed": crate::webhook::flush(&shared)}))
}

async fn webhook_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<WebhookFaults>(&body) {
        Ok(faults) => {
            shared.lock().webhook_faults = faults;
            empty_response(StatusCode::NO_CONTENT)
        }
        Err(m) => bad_body(m),
    }
}

#[derive(Deserialize)]
struct InjectBody {
    endpoint: Endpoint,
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

async fn inject(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<InjectBody>(&body) {
        Ok(b) => {
            let mut state = shared.lock();
            let queue = state.faults.entry(b.endpoint).or_default();
            for _ in 0..b.times {
                queue.push_back(b.fault.clone());
            }
            empty_response(StatusCode::NO_CONTENT)
        }
        Err(m) => bad_body(m),
    }
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    let mut state = shared.lock();
    state.faults.clear();
    state.webhook_faults = WebhookFaults::default();
    state.id_token_fault = None;
    state.credential_fault = None;
    state.metering_faults.clear();
    empty_response(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct QuirkBody {
    on: bool,
}

async fn quirk(State(shared): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> Response {
    let Ok(quirk) = serde_json::from_value::<Quirk>(Value::String(name.clone())) else {
        return error(StatusCode::NOT_FOUND, format!("unknown quirk {name}"));
    };
    match parse::<QuirkBody>(&body) {
        Ok(b) => {
            let mut state = shared.lock();
            if b.on {
                state.quirks.insert(quirk);
            } else {
                state.quirks.remove(&quirk);
            }
            empty_response(StatusCode::NO_CONTENT)
        }
        Err(m) => bad_body(m),
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    let requests = shared.lock().requests.clone();
    ok(&requests)
}

async fn revoke(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().access_tokens.clear();
    empty_response(StatusCode::NO_CONTENT)
}

async fn signins(State(shared): State<Arc<Shared>>) -> Response {
    let signins = shared.lock().signins.clone();
    ok(&signins)
}

async fn signin_user(State(shared): State<Arc<Shared>>) -> Response {
    let user = shared.lock().signin_user.clone();
    ok(&user)
}

async fn set_signin_user(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<SigninUser>(&body) {
        Ok(user) => {
            shared.lock().set_signin_user(user);
            empty_response(StatusCode::NO_CONTENT)
        }
        Err(m) => bad_body(m),
    }
}

#[derive(Deserialize)]
struct IdTokenFaultBody {
    #[serde(default)]
    fault: Option<IdTokenFault>,
}

#[derive(Deserialize)]
struct CredentialFaultBody {
    #[serde(default)]
    fault: Option<CredentialFault>,
}

async fn credential_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<CredentialFaultBody>(&body) {
        Ok(b) => {
            shared.lock().credential_fault = b.fault;
            empty_response(StatusCode::NO_CONTENT)
        }
        Err(m) => bad_body(m),
    }
}

#[derive(Deserialize)]
struct MeteringFaultBody {
    #[serde(default)]
    fault: Option<MeteringFault>,
}

async fn metering_fault(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    match parse::<MeteringFaultBody>(&body) {
        Ok(b) => {
            let mut state = shared.lock();
            let id = id.to_ascii_lowercase();
            match b.fault {
                Some(f) => state.metering_faults.insert(id, f),
                None => state.metering_faults.remove(&id),
            };
            empty_response(StatusCode::NO_CONTENT)
        }
        Err(m) => bad_body(m),
    }
}

async fn id_token_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<IdTokenFaultBody>(&body) {
        Ok(b) => {
            shared.lock().id_token_fault = b.fault;
            empty_response(StatusCode::NO_CONTENT)
        }
        Err(m) => bad_body(m),
    }
}

/// A client of a running emulator's control API (what the command line uses).
#[derive(Debug, Clone)]
pub struct ControlClient {
    base: String,
    http: reqwest::Client,
}

impl ControlClient {
    /// A client for the emulator at `emulator_url` (e.g. "http://127.0.0.1:8600").
    pub fn new(emulator_url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        Self { base: format!("{}/_control", emulator_url.trim_end_matches('/')), http }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, EmulatorError> {
        let response = request.send().await.map_err(|e| EmulatorError::Control(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| EmulatorError::Control(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(text);
            return Err(match status.as_u16() {
                404 => EmulatorError::NotFound(message),
                400 | 409 => EmulatorError::Rejected(message),
                _ => EmulatorError::Control(format!("{status}: {message}")),
            });
        }
        let text = if text.is_empty() { "null".to_string() } else { text };
        serde_json::from_str(&text).map_err(|e| EmulatorError::Control(format!("unexpected answer: {e}")))
    }

    /// The running emulator's configuration summary.
    pub async fn config(&self) -> Result<Value, EmulatorError> {
        self.send(self.http.get(format!("{}/config", self.base))).await
    }

    /// Buys a plan.
    pub async fn purchase(&self, p: &Purchase) -> Result<Purchased, EmulatorError> {
        self.send(self.http.post(format!("{}/purchase", self.base)).json(p)).await
    }

    /// A webhook bearer token, signed as the webhook sender signs it now.
    pub async fn webhook_token(&self) -> Result<String, EmulatorError> {
        let v: Value = self.send(self.http.get(format!("{}/webhook-token", self.base))).await?;
        Ok(v.get("token").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// A fresh purchase token for a subscription.
    pub async fn landing_token(&self, id: &str) -> Result<String, EmulatorError> {
        let v: Value =
            self.send(self.http.post(format!("{}/subscriptions/{id}/landing-token", self.base))).await?;
        Ok(v.get("token").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// Customer plan change.
    pub async fn change_plan(&self, id: &str, plan_id: &str) -> Result<OperationHandle, EmulatorError> {
        let url = format!("{}/subscriptions/{id}/change-plan", self.base);
        self.send(self.http.post(url).json(&json!({"planId": plan_id}))).await
    }

    /// Customer seat change.
    pub async fn change_quantity(&self, id: &str, quantity: u32) -> Result<OperationHandle, EmulatorError> {
        let url = format!("{}/subscriptions/{id}/change-quantity", self.base);
        self.send(self.http.post(url).json(&json!({"quantity": quantity}))).await
    }

    /// `suspend`, `reinstate`, `renew` or `unsubscribe`.
    pub async fn action(&self, id: &str, action: &str) -> Result<OperationHandle, EmulatorError> {
        self.send(self.http.post(format!("{}/subscriptions/{id}/{action}", self.base))).await
    }

    /// All subscriptions.
    pub async fn subscriptions(&self) -> Result<Vec<Value>, EmulatorError> {
        self.send(self.http.get(format!("{}/subscriptions", self.base))).await
    }

    /// All webhook delivery records.
    pub async fn webhooks(&self) -> Result<Vec<WebhookDelivery>, EmulatorError> {
        self.send(self.http.get(format!("{}/webhooks", self.base))).await
    }

    /// All recorded Marketplace API requests.
    pub async fn requests(&self) -> Result<Vec<RecordedRequest>, EmulatorError> {
        self.send(self.http.get(format!("{}/requests", self.base))).await
    }

    /// Injects a fault for the next `times` calls of an endpoint.
    pub async fn inject(&self, endpoint: Endpoint, fault: &Fault, times: u32) -> Result<(), EmulatorError> {
        let body = json!({"endpoint": endpoint, "fault": fault, "times": times});
        self.send::<Value>(self.http.post(format!("{}/faults", self.base)).json(&body)).await.map(|_| ())
    }

    /// Every authorize request so far.
    pub async fn signins(&self) -> Result<Vec<SigninRecord>, EmulatorError> {
        self.send(self.http.get(format!("{}/signins", self.base))).await
    }

    /// Signs in `user` from now on.
    pub async fn set_signin_user(&self, user: &SigninUser) -> Result<(), EmulatorError> {
        self.send::<Value>(self.http.put(format!("{}/signin-user", self.base)).json(user)).await.map(|_| ())
    }

    /// The publisher's client-credentials grant fails with `fault`'s Entra error (`None`: works).
    pub async fn set_credential_fault(&self, fault: Option<CredentialFault>) -> Result<(), EmulatorError> {
        let url = format!("{}/credential-fault", self.base);
        self.send::<Value>(self.http.put(url).json(&json!({"fault": fault}))).await.map(|_| ())
    }

    /// The Metering API answers every usage event of `resource_id` with `fault` (`None`: as usual).
    pub async fn set_metering_fault(
        &self,
        resource_id: &str,
        fault: Option<MeteringFault>,
    ) -> Result<(), EmulatorError> {
        let url = format!("{}/subscriptions/{resource_id}/metering-fault", self.base);
        self.send::<Value>(self.http.put(url).json(&json!({"fault": fault}))).await.map(|_| ())
    }

    /// ID tokens issued from now on carry `fault`'s defect (`None`: valid ones).
    pub async fn set_id_token_fault(&self, fault: Option<IdTokenFault>) -> Result<(), EmulatorError> {
        let url = format!("{}/id-token-fault", self.base);
        self.send::<Value>(self.http.put(url).json(&json!({"fault": fault}))).await.map(|_| ())
    }

    /// Clears faults, webhook faults and the ID-token fault.
    pub async fn clear_faults(&self) -> Result<(), EmulatorError> {
        self.send::<Value>(self.http.delete(format!("{}/faults", self.base))).await.map(|_| ())
    }

    /// Sets webhook faults.
    pub async fn webhook_faults(&self, faults: &WebhookFaults) -> Result<(), EmulatorError> {
        self.send::<Value>(self.http.put(format!("{}/webhook-faults", self.base)).json(faults))
            .await
            .map(|_| ())
    }

    /// Switches a quirk.
    pub async fn set_quirk(&self, quirk: Quirk, on: bool) -> Result<(), EmulatorError> {
        let name =
            serde_json::to_value(quirk).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let url = format!("{}/quirks/{name}", self.base);
        self.send::<Value>(self.http.put(url).json(&json!({"on": on}))).await.map(|_| ())
    }
}
