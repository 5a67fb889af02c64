//! The Metering API rules, and injected faults on API endpoints.

mod common;

use std::time::Duration;

use chrono::{Duration as Span, Timelike, Utc};
use common::{Api, fast_config, start, subscribed};
use marketplace_emulator::{Endpoint, Fault, MeteringFault, Purchase};
use serde_json::{Value, json};

fn hour_ago(hours: i64) -> String {
    let t = Utc::now() - Span::hours(hours);
    t.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).unwrap().to_rfc3339()
}

fn event(resource: &str, dimension: &str, quantity: f64, start: &str) -> Value {
    json!({"resourceId": resource, "quantity": quantity, "dimension": dimension, "effectiveStartTime": start, "planId": "basic"})
}

#[tokio::test]
async fn a_usage_event_should_be_accepted_once_per_resource_dimension_and_hour() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    let id = &p.subscription_id;
    let start = hour_ago(1);
    let r = api.post("/usageEvent", Some(event(id, "api-calls", 12.5, &start))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let accepted = r.json();
    assert_eq!(accepted["status"], "Accepted");
    assert!(accepted["usageEventId"].is_string() && accepted["messageTime"].is_string());
    assert_eq!(accepted["quantity"], 12.5);

    let dup = api.post("/usageEvent", Some(event(id, "api-calls", 3.0, &start))).await;
    assert_eq!(dup.status, 409);
    let body = dup.json();
    assert_eq!(body["code"], "Conflict");
    let original = &body["additionalInfo"]["acceptedMessage"];
    assert_eq!(original["status"], "Duplicate");
    assert_eq!(original["usageEventId"], accepted["usageEventId"]);
    assert_eq!(original["quantity"], 12.5);

    // Another hour is a new event.
    assert_eq!(api.post("/usageEvent", Some(event(id, "api-calls", 1.0, &hour_ago(2)))).await.status, 200);

    let usage = api
        .get(&format!("/usageEvents?usageStartDate={}", (Utc::now() - Span::days(2)).format("%Y-%m-%d")))
        .await;
    assert_eq!(usage.status, 200);
    let rows = usage.json();
    let total: f64 = rows.as_array().unwrap().iter().map(|r| r["submittedQuantity"].as_f64().unwrap()).sum();
    assert_eq!(total, 13.5);
    assert_eq!(rows[0]["usageResourceId"], id.as_str());
    assert_eq!(api.get("/usageEvents").await.status, 400, "usageStartDate is required");
}

#[tokio::test]
async fn usage_events_with_bad_data_should_be_rejected_with_bad_argument() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    let id = p.subscription_id.as_str();
    let pending = emu.purchase(Purchase::plan("basic")).await;
    let future = (Utc::now() + Span::hours(2)).to_rfc3339();
    let cases = [
        ("too old", event(id, "api-calls", 1.0, &hour_ago(25))),
        ("future", event(id, "api-calls", 1.0, &future)),
        ("zero quantity", event(id, "api-calls", 0.0, &hour_ago(1))),
        ("negative quantity", event(id, "api-calls", -1.0, &hour_ago(1))),
        ("unknown dimension", event(id, "storage", 1.0, &hour_ago(1))),
        ("not Subscribed", event(&pending.subscription_id, "api-calls", 1.0, &hour_ago(1))),
        ("unknown resource", event(&uuid::Uuid::new_v4().to_string(), "api-calls", 1.0, &hour_ago(1))),
        ("no date", json!({"resourceId": id, "quantity": 1, "dimension": "api-calls", "planId": "basic"})),
        (
            "wrong plan",
            json!({"resourceId": id, "quantity": 1, "dimension": "api-calls", "planId": "team-monthly", "effectiveStartTime": hour_ago(1)}),
        ),
    ];
    for (what, body) in cases {
        let r = api.post("/usageEvent", Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.json()["code"], "BadArgument", "{what}");
    }
}

#[tokio::test]
async fn a_batch_should_hold_1_to_25_events_and_report_each_item() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    let id = p.subscription_id.as_str();
    let too_many: Vec<Value> = (0..26).map(|h| event(id, "api-calls", 1.0, &hour_ago(h % 20 + 1))).collect();
    let r = api.post("/batchUsageEvent", Some(json!({"request": too_many}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "BadArgument");
    assert_eq!(api.post("/batchUsageEvent", Some(json!({"request": []}))).await.status, 400);

    let batch = json!({"request": [
        event(id, "api-calls", 5.0, &hour_ago(3)),
        event(id, "api-calls", 6.0, &hour_ago(3)),
        event(id, "api-calls", 1.0, &hour_ago(30)),
        event(id, "storage", 1.0, &hour_ago(3)),
        event(id, "api-calls", 0.0, &hour_ago(4)),
        event(&uuid::Uuid::new_v4().to_string(), "api-calls", 1.0, &hour_ago(3)),
    ]});
    let r = api.post("/batchUsageEvent", Some(batch)).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["count"], 6);
    let statuses: Vec<&str> =
        body["result"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["Accepted", "Duplicate", "Expired", "InvalidDimension", "InvalidQuantity", "ResourceNotFound"]
    );
}

#[tokio::test]
async fn a_metering_fault_should_refuse_only_its_resources_events_until_cleared() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let faulty = subscribed(&emu, &api, Purchase::plan("basic")).await.subscription_id;
    let healthy = subscribed(&emu, &api, Purchase::plan("basic")).await.subscription_id;
    let start = hour_ago(2);
    let statuses = |body: Value| -> Vec<String> {
        body["result"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap().to_string()).collect()
    };

    emu.set_metering_fault(&faulty.to_uppercase(), Some(MeteringFault::ResourceNotAuthorized)).await;
    let batch = json!({"request": [event(&faulty, "api-calls", 1.0, &start), event(&healthy, "api-calls", 1.0, &start)]});
    let r = api.post("/batchUsageEvent", Some(batch)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["result"][0]["error"]["code"], "ResourceNotAuthorized");
    assert_eq!(statuses(body), ["ResourceNotAuthorized", "Accepted"]);
    let single = api.post("/usageEvent", Some(event(&faulty, "api-calls", 1.0, &start))).await;
    assert_eq!(single.status, 403, "{}", single.text);

    emu.set_metering_fault(&faulty, Some(MeteringFault::Error)).await;
    let r = api
        .post("/batchUsageEvent", Some(json!({"request": [event(&faulty, "api-calls", 1.0, &start)]})))
        .await;
    assert_eq!(statuses(r.json()), ["Error"]);
    assert_eq!(api.post("/usageEvent", Some(event(&faulty, "api-calls", 1.0, &start))).await.status, 500);

    // Nothing was recorded while it was refused: once cleared, the hour is accepted.
    emu.set_metering_fault(&faulty, None).await;
    let r = api
        .post("/batchUsageEvent", Some(json!({"request": [event(&faulty, "api-calls", 1.0, &start)]})))
        .await;
    assert_eq!(statuses(r.json()), ["Accepted"]);

    // Through the control API, and cleared with the other faults.
    let control = marketplace_emulator::ControlClient::new(&emu.url());
    control.set_metering_fault(&healthy, Some(MeteringFault::Error)).await.unwrap();
    let r = api
        .post("/batchUsageEvent", Some(json!({"request": [event(&healthy, "api-calls", 1.0, &hour_ago(3))]})))
        .await;
    assert_eq!(statuses(r.json()), ["Error"]);
    control.clear_faults().await.unwrap();
    let r = api
        .post("/batchUsageEvent", Some(json!({"request": [event(&healthy, "api-calls", 1.0, &hour_ago(3))]})))
        .await;
    assert_eq!(statuses(r.json()), ["Accepted"]);
}

#[tokio::test]
async fn a_status_fault_should_answer_with_that_status_retry_after_and_body_then_recover() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    emu.inject(Endpoint::ListSubscriptions, Fault::status_retry_after(429, "2"), 1).await;
    emu.inject(
        Endpoint::ListSubscriptions,
        Fault::status_retry_after(503, "Wed, 21 Oct 2015 07:28:00 GMT"),
        1,
    )
    .await;
    emu.inject(Endpoint::ListSubscriptions, Fault::Status { status: 500, retry_after: None, body: None }, 1)
        .await;
    emu.inject(
        Endpoint::ListSubscriptions,
        Fault::Status { status: 400, retry_after: None, body: Some(json!({"code": "Custom"})) },
        1,
    )
    .await;
    let r = api.get("/saas/subscriptions").await;
    assert_eq!((r.status, r.header("retry-after").as_deref()), (429, Some("2")));
    let r = api.get("/saas/subscriptions").await;
    assert_eq!((r.status, r.header("retry-after").as_deref()), (503, Some("Wed, 21 Oct 2015 07:28:00 GMT")));
    let r = api.get("/saas/subscriptions").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "UnexpectedError", "message": "An unexpected error has occurred."}})
    );
    assert!(r.header("x-ms-requestid").is_some(), "faulted answers carry request ids too");
    let r = api.get("/saas/subscriptions").await;
    assert_eq!((r.status, r.json()), (400, json!({"code": "Custom"})));
    assert_eq!(api.get("/saas/subscriptions").await.status, 200, "faults are used up");
}

#[tokio::test]
async fn a_fault_should_hit_only_its_endpoint_and_patch_faults_follow_the_body() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(2)).await;
    let path = format!("/saas/subscriptions/{}", p.subscription_id);
    emu.inject(Endpoint::ChangeQuantity, Fault::status(503), 1).await;
    assert_eq!(api.get(&path).await.status, 200);
    assert_eq!(
        api.patch(&path, json!({"planId": "no-such-plan"})).await.status,
        400,
        "ChangePlan is not faulted"
    );
    assert_eq!(api.patch(&path, json!({"quantity": 3})).await.status, 503);
    emu.inject(Endpoint::GetSubscription, Fault::status(500), 5).await;
    emu.clear_faults().await;
    assert_eq!(api.get(&path).await.status, 200);
}

#[tokio::test]
async fn a_latency_fault_should_delay_then_answer_normally() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    emu.inject(Endpoint::ListSubscriptions, Fault::Latency(Duration::from_millis(300)), 1).await;
    let started = std::time::Instant::now();
    let r = api.get("/saas/subscriptions").await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_drop_connection_fault_should_give_the_client_a_transport_error_without_a_response() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = emu.purchase(Purchase::default()).await;
    emu.inject(Endpoint::Resolve, Fault::DropConnection, 1).await;
    let result = api
        .http
        .post(api.url("/saas/subscriptions/resolve"))
        .bearer_auth(&api.token)
        .header("x-ms-marketplace-token", &p.token)
        .send()
        .await;
    let error = result.expect_err("the connection is closed without a response");
    assert!(!error.is_status() && error.status().is_none(), "{error:?}");
    assert_eq!(api.resolve(&p.token).await.status, 200, "the next call works");
    let requests = emu.requests().await;
    assert_eq!(requests[0].status, None, "recorded as dropped");
    assert_eq!(requests[1].status, Some(200));

    // A raw socket sees EOF without a single byte of HTTP.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    emu.inject(Endpoint::ListSubscriptions, Fault::DropConnection, 1).await;
    let addr = emu.url().trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /api/saas/subscriptions?api-version=2018-08-31 HTTP/1.1\r\nHost: x\r\n\r\n";
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    // EOF or a reset: either way the server closed the connection.
    let _ =
        tokio::time::timeout(common::WAIT, socket.read_to_end(&mut received)).await.expect("closed in time");
    assert!(received.is_empty(), "no response bytes: {:?}", String::from_utf8_lossy(&received));
}

#[tokio::test]
async fn token_and_jwks_faults_should_apply_to_the_entra_endpoints() {
    let emu = start(fast_config()).await;
    emu.inject(Endpoint::Jwks, Fault::status(503), 1).await;
    let jwks_url = emu.jwks_url();
    assert_eq!(reqwest::get(&jwks_url).await.unwrap().status(), 503);
    let jwks: Value = reqwest::get(&jwks_url).await.unwrap().json().await.unwrap();
    assert_eq!(jwks, emu.jwks());

    emu.inject(Endpoint::Token, Fault::DropConnection, 1).await;
    let c = emu.config();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", c.publisher_app_id.as_str()),
        ("client_secret", c.publisher_client_secret.as_str()),
        ("scope", "20e940b3-4c77-4b0b-9a53-9e16a1b010a7/.default"),
    ];
    let http = reqwest::Client::new();
    assert!(http.post(emu.token_url_v2()).form(&form).send().await.is_err());
    assert_eq!(emu.tokens_issued(), 0);
    assert_eq!(http.post(emu.token_url_v2()).form(&form).send().await.unwrap().status(), 200);
    assert_eq!(emu.tokens_issued(), 1);
}
