//! Helpers shared by the emulator's tests: a plain reqwest client of the Marketplace API and a
//! tiny webhook receiver.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use marketplace_emulator::{Emulator, EmulatorConfig, MARKETPLACE_RESOURCE_ID, Purchase, Purchased};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config with short timings for tests.
pub fn fast_config() -> EmulatorConfig {
    EmulatorConfig {
        ack_window: Duration::from_secs(10),
        operation_delay: Duration::from_millis(100),
        webhook_retry_backoff: Duration::from_millis(10),
        webhook_timeout: Duration::from_secs(3),
        ..EmulatorConfig::default()
    }
}

/// Starts an emulator.
pub async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("emulator starts")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// A plain client of the emulator's Marketplace API (not the product's client).
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    /// Gets an access token from the v1 endpoint and builds the client.
    pub async fn new(emu: &Emulator) -> Api {
        let http = reqwest::Client::new();
        let c = emu.config();
        let response = http
            .post(emu.token_url_v1())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", c.publisher_app_id.as_str()),
                ("client_secret", c.publisher_client_secret.as_str()),
                ("resource", MARKETPLACE_RESOURCE_ID),
            ])
            .send()
            .await
            .expect("token endpoint reachable");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("token JSON");
        let token = body["access_token"].as_str().expect("access_token").to_string();
        Api { http, base: emu.api_base(), token }
    }

    /// `{base}{path}` with `api-version` appended.
    pub fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version=2018-08-31", self.base)
    }

    pub async fn send_raw(&self, request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        Resp { status, headers, text }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send_raw(request).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Resp {
        self.call(reqwest::Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    pub async fn resolve(&self, token: &str) -> Resp {
        let request = self
            .http
            .post(self.url("/saas/subscriptions/resolve"))
            .bearer_auth(&self.token)
            .header("x-ms-marketplace-token", token);
        self.send_raw(request).await
    }

    pub async fn activate(&self, id: &str, plan: &str, quantity: Option<u32>) -> Resp {
        let mut body = json!({"planId": plan});
        if let Some(q) = quantity {
            body["quantity"] = json!(q);
        }
        self.post(&format!("/saas/subscriptions/{id}/activate"), Some(body)).await
    }

    /// Polls an operation (the Operation-Location way) until it is terminal.
    pub async fn poll_operation(&self, id: &str, op: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.get(&format!("/saas/subscriptions/{id}/operations/{op}")).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let v = r.json();
            if v["status"] != "InProgress" {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "operation {op} still InProgress after {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Buys and activates a plan; returns the subscription id.
pub async fn subscribed(emu: &Emulator, api: &Api, p: Purchase) -> Purchased {
    let plan = p.plan_id.clone();
    let purchased = emu.purchase(p).await;
    let sub = emu.subscription(&purchased.subscription_id).await.expect("subscription");
    let quantity = sub["quantity"].as_u64().map(|q| q as u32);
    let r = api.activate(&purchased.subscription_id, &plan, quantity).await;
    assert_eq!(r.status, 200, "activate: {}", r.text);
    purchased
}

/// The operation id at the end of an `Operation-Location` header.
pub fn operation_id(r: &Resp) -> String {
    let location = r.header("operation-location").expect("Operation-Location");
    let url = url::Url::parse(&location).expect("absolute URL");
    url.path_segments().and_then(|mut s| s.next_back()).expect("operation id").to_string()
}

/// One webhook POST as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

impl Received {
    pub fn jwt(&self) -> String {
        self.authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .expect("bearer token")
            .to_string()
    }
}

#[derive(Clone)]
struct ReceiverState {
    tx: mpsc::UnboundedSender<Received>,
    responses: Arc<Mutex<VecDeque<u16>>>,
}

/// A tiny axum server standing in for the publisher's webhook endpoint.
pub struct Receiver {
    pub url: String,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    responses: Arc<Mutex<VecDeque<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let received = Received {
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let status = state.responses.lock().unwrap().pop_front().unwrap_or(200);
    let _ = state.tx.send(received);
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let responses = Arc::new(Mutex::new(VecDeque::new()));
        let state = ReceiverState { tx, responses: Arc::clone(&responses) };
        let app = axum::Router::new().route("/webhook", axum::routing::post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, rx: tokio::sync::Mutex::new(rx), responses, task }
    }

    /// The next answers (default 200).
    pub fn respond_with(&self, statuses: &[u16]) {
        self.responses.lock().unwrap().extend(statuses.iter().copied());
    }

    /// The next webhook received, waiting at most [`WAIT`].
    pub async fn next(&self) -> Received {
        match tokio::time::timeout(WAIT, self.rx.lock().await.recv()).await {
            Ok(Some(r)) => r,
            _ => panic!("no webhook received within {WAIT:?}"),
        }
    }

    /// Whether a webhook arrives within `d` (for "nothing is sent" checks).
    pub async fn try_next(&self, d: Duration) -> Option<Received> {
        tokio::time::timeout(d, self.rx.lock().await.recv()).await.ok().flatten()
    }
}
