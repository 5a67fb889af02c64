//! Fuzzing the webhook's body handling in-process, behind a genuine bearer token (signed by a local
//! test key, served over loopback): any body is answered without a panic; one that is not a
//! webhook payload gets 400 `InvalidPayload` with the reason, and is kept as a rejected delivery;
//! one that is goes on to the core (here the store is an empty in-memory table and Microsoft never
//! answers, so it ends in a 5xx that asks for a retry, or the core's own refusal of a payload that
//! contradicts itself; never a 400 about the body).

#[path = "../../../shared/tests/support/mod.rs"]
mod support;

use fulfillment::clock::SystemClock;
use fulfillment::config::Environment;
use fulfillment::domain::WebhookPayload;
use fulfillment::store::dynamodb::DynamoDbStore;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use support::{EmptyTable, KeyServer, TestKey, Unreachable, check, runtime};
use webhook::{MAX_BODY, WebhookFunction};

struct Fixture {
    function: WebhookFunction<DynamoDbStore, Unreachable, SystemClock>,
    table: EmptyTable,
    token: String,
    runtime: tokio::runtime::Runtime,
    _keys: KeyServer,
}

impl Fixture {
    fn new() -> Self {
        let key = TestKey::load();
        let keys = KeyServer::start(&key.jwks());
        let table = EmptyTable::default();
        // The token's issuer and keys as the deployed function reads them.
        let environment = Environment::from_pairs([
            ("ENTRA_TENANT_ID", support::TENANT),
            ("ENTRA_CLIENT_ID", support::APP),
            ("WEBHOOK_JWKS_URL", keys.url.as_str()),
        ]);
        let function = WebhookFunction::new(table.store(), Unreachable::default(), SystemClock, &environment)
            .expect("the webhook");
        let token = key.webhook_token(false, "marketplace-sp");
        Self { function, table, token: format!("Bearer {token}"), runtime: runtime(), _keys: keys }
    }

    /// The answer to `method` with `body`, authorized unless `authorization` says otherwise: its
    /// status and JSON body.
    fn answer(&self, method: &str, body: Vec<u8>, authorization: Option<&str>) -> (StatusCode, Value) {
        let mut request = lambda_http::http::Request::builder()
            .method(method)
            .uri("/webhook")
            .header("content-type", "application/json");
        if let Some(authorization) = authorization.or(Some(&self.token)).filter(|a| !a.is_empty()) {
            request = request.header("authorization", authorization);
        }
        let body = if body.is_empty() { Body::Empty } else { Body::Binary(body) };
        let request: Request = request.body(body).expect("a request");
        let response = self.runtime.block_on(self.function.handle(request));
        let status = response.status();
        let json = serde_json::from_slice(response.body().as_ref()).expect("a JSON answer");
        (status, json)
    }

    fn wrote_a_rejected_delivery(&self) -> bool {
        self.table.take().iter().any(|(operation, body)| {
            operation == "PutItem"
                && body["Item"]["pk"]["S"].as_str().is_some_and(|pk| pk.starts_with("REJECTED#"))
        })
    }
}

/// The webhook samples' bodies (`events/webhook/*.json`).
fn samples() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/webhook");
    let mut paths: Vec<_> =
        std::fs::read_dir(dir).expect("events/webhook").map(|e| e.expect("entry").path()).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| {
            let event: Value = serde_json::from_slice(&std::fs::read(path).expect("readable")).expect("JSON");
            event["body"].as_str().map(|body| body.as_bytes().to_vec())
        })
        .collect()
}

fn error_of(json: &Value) -> (&str, &str) {
    (
        json["error"]["code"].as_str().unwrap_or_default(),
        json["error"]["message"].as_str().unwrap_or_default(),
    )
}

/// What the webhook must answer to an authorized POST of `body`.
fn judge(fixture: &Fixture, body: Vec<u8>) -> Result<(), TestCaseError> {
    let parses = serde_json::from_slice::<WebhookPayload>(&body).is_ok();
    let (status, json) = fixture.answer("POST", body, None);
    let (code, message) = error_of(&json);
    if parses {
        // The core's own answers: a retry, or a payload that contradicts itself refused.
        let core = status.is_server_error()
            || status == StatusCode::OK
            || status == StatusCode::BAD_REQUEST && matches!(code, "OperationMismatch" | "ChangeRejected");
        prop_assert!(core, "{status} {json}");
        prop_assert!(!fixture.wrote_a_rejected_delivery());
    } else {
        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", json);
        prop_assert_eq!(code, "InvalidPayload");
        prop_assert!(message.starts_with("not a webhook payload: ") && message.len() > 24, "{message}");
        prop_assert!(fixture.wrote_a_rejected_delivery(), "the refused body is kept");
    }
    Ok(())
}

fn json_byte() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![any::<u8>(), select(b"{}[]\":,0123456789-+.eEtrufalsn \\".to_vec())]
}

#[test]
fn arbitrary_bodies_are_refused_with_the_reason() {
    let fixture = Fixture::new();
    check(1000, prop_oneof![vec(any::<u8>(), 0..200), vec(json_byte(), 0..200)], |body| {
        judge(&fixture, body)
    });
}

#[test]
fn mutated_samples_are_answered_without_panic() {
    let fixture = Fixture::new();
    let samples = samples();
    let edit = (any::<usize>(), json_byte(), 0u8..3);
    check(500, (0..samples.len(), vec(edit, 0..4)), |(sample, edits)| {
        let mut body = samples[sample].clone();
        for (at, byte, kind) in edits {
            let at = at % (body.len() + 1);
            match kind {
                0 if at < body.len() => body[at] = byte,
                1 => body.insert(at, byte),
                _ => body.truncate(at),
            }
        }
        judge(&fixture, body)
    });
}

#[test]
fn fields_of_any_type_are_answered_without_panic() {
    let fixture = Fixture::new();
    let samples: Vec<Value> = samples()
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .filter(Value::is_object)
        .collect();
    let field = select(vec![
        "id",
        "subscriptionId",
        "action",
        "quantity",
        "timeStamp",
        "planId",
        "status",
        "subscription",
        "purchaseToken",
    ]);
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!(" ")),
    ];
    check(500, (0..samples.len(), field, prop::option::of(value)), |(sample, field, value)| {
        let mut body = samples[sample].clone();
        match value {
            Some(value) => body[field] = value,
            None => drop(body.as_object_mut().expect("an object").remove(field)),
        }
        judge(&fixture, body.to_string().into_bytes())
    });
}

#[test]
fn the_size_limit_is_exact() {
    let fixture = Fixture::new();
    let sample = samples()
        .into_iter()
        .find(|b| serde_json::from_slice::<WebhookPayload>(b).is_ok())
        .expect("a sample");
    // 20 cases: each body is a quarter of a megabyte.
    check(20, (MAX_BODY - 2..=MAX_BODY + 2, any::<bool>()), |(size, padded_before)| {
        let padding = vec![b' '; size - sample.len()];
        let body = if padded_before {
            [padding, sample.clone()].concat()
        } else {
            [sample.clone(), padding].concat()
        };
        let (status, json) = fixture.answer("POST", body, None);
        let (code, message) = error_of(&json);
        if size > MAX_BODY {
            prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            prop_assert_eq!(message, format!("the body has {size} bytes, more than {MAX_BODY}"));
            prop_assert!(fixture.wrote_a_rejected_delivery());
        } else {
            prop_assert!(code != "InvalidPayload", "{status} {json}");
        }
        Ok(())
    });
}

#[test]
fn bad_tokens_and_methods_are_refused_before_the_body_is_read() {
    let fixture = Fixture::new();
    let authorization = prop_oneof![Just(String::new()), "[ -~]{0,60}", "Bearer [A-Za-z0-9._-]{0,200}"];
    let method = select(vec!["POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]);
    check(1000, (method, authorization, vec(any::<u8>(), 0..64)), |(method, authorization, body)| {
        let header = if authorization.is_empty() { "" } else { authorization.as_str() };
        let (status, json) = fixture.answer(method, body, Some(header));
        let (code, message) = error_of(&json);
        if method != "POST" {
            prop_assert_eq!((status, code), (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"));
        } else {
            prop_assert_eq!(
                (status, code, message),
                (StatusCode::UNAUTHORIZED, "Unauthorized", "the bearer token is not valid")
            );
        }
        prop_assert!(fixture.table.take().is_empty(), "nothing is read or written");
        Ok(())
    });
}
