//! Every route the README documents for the local run, through the local stack's HTTP port, as a
//! user of `scripts/run` calls them (the admin routes carry their path exactly as API Gateway would).

use integration_tests::stack_options;
use local_stack::LocalStack;
use marketplace_emulator::Purchase;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("an answer");
    (response.status(), response.text().await.expect("a body"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("JSON expected ({e}): {text}"))
}

/// The value of the page's hidden form field `name`.
fn hidden_field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in {page}")) + marker.len();
    page[start..].split('"').next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn every_documented_local_route_answers_through_the_http_port() {
    use reqwest::Method as M;
    let stack = LocalStack::start(stack_options()).await.expect("the local stack starts");
    let tenant = "0f1e2d3c-0000-4000-8000-00000000beef";
    let bought = stack
        .emulator
        .purchase(
            Purchase { plan_id: "team-monthly".into(), quantity: Some(10), ..Purchase::default() }
                .tenant(tenant),
        )
        .await;
    let (id, base) = (bought.subscription_id.clone(), format!("{}/admin", stack.url));

    let (status, page) = call(M::GET, stack.landing_url(&bought.token), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("form_token"), "the confirmation form: {page}");

    // The buyer confirms with the page's form; the tooling's activation then finds it active.
    let form_token = hidden_field(&page, "form_token");
    let confirmed = reqwest::Client::new()
        .post(format!("{}/activate", stack.url))
        .form(&[("subscription_id", id.as_str()), ("form_token", form_token.as_str())])
        .send()
        .await
        .expect("an answer");
    let status = confirmed.status();
    let page = confirmed.text().await.expect("a page");
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, body) = call(M::POST, format!("{base}/subscriptions/{id}/activate"), None).await;
    assert_eq!((status, json(&body)["activatedNow"].clone()), (StatusCode::OK, json!(false)), "{body}");

    let (status, body) = call(M::GET, format!("{base}/subscriptions"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = json(&body)["subscriptions"].as_array().cloned().unwrap_or_default();
    assert!(listed.iter().any(|s| s["subscription"]["id"] == id.as_str()), "{body}");

    let (status, body) = call(M::GET, format!("{base}/subscriptions/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!json(&body)["history"].as_array().cloned().unwrap_or_default().is_empty(), "{body}");

    let (status, body) = call(M::GET, format!("{base}/subscriptions/{id}/entitlement"), None).await;
    assert_eq!((status, json(&body)["accessAllowed"].clone()), (StatusCode::OK, json!(true)), "{body}");

    let (status, body) = call(M::GET, format!("{base}/tenants/{tenant}/entitlements"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&id), "{body}");

    let (status, body) =
        call(M::PATCH, format!("{base}/subscriptions/{id}"), Some(json!({ "quantity": 12 }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = call(M::DELETE, format!("{base}/subscriptions/{id}"), None).await;
    assert_eq!(
        (status, json(&body)["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("OperationPending")),
        "{body}"
    );

    let (status, body) = call(M::GET, format!("{base}/no-such-route"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = call(M::POST, format!("{}/webhook", stack.url), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no bearer token: {body}");

    let (status, body) = call(M::POST, format!("{}/_local/reconcile", stack.url), None).await;
    assert_eq!((status, json(&body)["complete"].clone()), (StatusCode::OK, json!(true)), "{body}");
}

/// Metered billing through the local routes: usage reported for the last hour with
/// `POST /admin/usage`, sent by `POST /_local/metering`, and shown accepted by
/// `GET /admin/subscriptions/{id}/usage`.
#[tokio::test]
async fn usage_reported_locally_is_sent_by_a_local_metering_tick() {
    use reqwest::Method as M;
    let stack = LocalStack::start(stack_options()).await.expect("the local stack starts");
    let id = integration_tests::flows::buy_and_activate(&stack, Purchase::plan("basic")).await;
    // Two hours ago: its hour ended more than the tick's 10 minutes of grace ago, at any time.
    let hour = chrono::Utc::now() - chrono::Duration::hours(2);
    let report = json!({ "usage": [{ "subscriptionId": id, "dimension": "api-calls", "quantity": 12.5, "time": hour.to_rfc3339(), "key": "local-1" }] });
    let (status, body) = call(M::POST, format!("{}/admin/usage", stack.url), Some(report)).await;
    assert_eq!((status, json(&body)["added"].clone()), (StatusCode::OK, json!(1)), "{body}");

    let (status, body) = call(M::POST, format!("{}/_local/metering", stack.url), None).await;
    assert_eq!((status, json(&body)["accepted"].clone()), (StatusCode::OK, json!(1)), "{body}");

    let (status, body) = call(M::GET, format!("{}/admin/subscriptions/{id}/usage", stack.url), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hours = json(&body)["hours"].clone();
    assert_eq!(
        (hours[0]["state"].clone(), hours[0]["reported"].clone()),
        (json!("accepted"), json!(12.5)),
        "{body}"
    );
}
