//! The emulator's answers have Microsoft's shapes: every field of Microsoft's documented samples, with
//! the same JSON types. (The client's tests check that we read them; these check that the emulator
//! does not drift into a dialect only our client understands.)

use marketplace_emulator::{Emulator, EmulatorConfig, Purchase};
use serde_json::{Value, json};

/// Every key of `sample` is in `actual` with the same JSON type (a `null` on either side matches
/// anything: Microsoft's documentation marks those fields optional or nullable). Arrays are checked by their
/// first element.
fn assert_shape(sample: &Value, actual: &Value, path: &str) {
    match (sample, actual) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(expected), Value::Object(got)) => {
            for (key, value) in expected {
                let inner = got.get(key).unwrap_or_else(|| panic!("{path}.{key} is missing in {actual}"));
                assert_shape(value, inner, &format!("{path}.{key}"));
            }
        }
        (Value::Array(expected), Value::Array(got)) => {
            if let (Some(e), Some(g)) = (expected.first(), got.first()) {
                assert_shape(e, g, &format!("{path}[0]"));
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => panic!("{path}: Microsoft documents {sample}, the emulator {actual}"),
    }
}

/// docs/marketplace-api.md#subscription-object.
fn subscription_sample() -> Value {
    json!({
      "id": "3f9c1b7e-0000-4000-8000-00000000a001", "publisherId": "ourpublisher", "offerId": "our-saas-offer",
      "name": "Fabrikam production", "saasSubscriptionStatus": "Subscribed",
      "beneficiary": { "emailId": "ops@fabrikam.example", "objectId": "g", "tenantId": "g", "puid": "1003200012345678" },
      "purchaser": { "emailId": "buyer@reseller.example", "objectId": "g", "tenantId": "g", "puid": null },
      "planId": "team-monthly", "quantity": 25,
      "term": { "startDate": "2025-05-04T00:00:00Z", "endDate": "2025-06-03T00:00:00Z", "termUnit": "P1M", "chargeDuration": null },
      "autoRenew": true, "isTest": false, "isFreeTrial": false, "allowedCustomerOperations": ["Read", "Update", "Delete"],
      "sandboxType": "None", "sessionMode": "None", "created": "2025-05-04T09:12:44.1234567Z", "lastModified": "2025-05-04T09:15:02.7654321Z"
    })
}

/// docs/marketplace-api.md#operation-object.
fn operation_sample() -> Value {
    json!({
      "id": "g", "activityId": "g", "subscriptionId": "g", "offerId": "o", "publisherId": "p", "planId": "p",
      "quantity": 40, "action": "ChangeQuantity", "timeStamp": "2025-05-20T14:03:11.5120037Z", "status": "InProgress",
      "errorStatusCode": "", "errorMessage": "", "operationRequestSource": "Azure"
    })
}

async fn token(emulator: &Emulator) -> String {
    let config = emulator.config();
    let answer: Value = reqwest::Client::new()
        .post(emulator.token_url_v2())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.publisher_app_id.as_str()),
            ("client_secret", config.publisher_client_secret.as_str()),
            ("scope", "20e940b3-4c77-4b0b-9a53-9e16a1b010a7/.default"),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    // docs/marketplace-api.md#token-request, v2 answer.
    assert_shape(
        &json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "x"}),
        &answer,
        "token",
    );
    answer["access_token"].as_str().expect("a token").to_owned()
}

async fn call(
    emulator: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Value {
    let bearer = token(emulator).await;
    let mut request = reqwest::Client::new()
        .request(
            method,
            format!(
                "{}{path}{}api-version=2018-08-31",
                emulator.api_base(),
                if path.contains('?') { "&" } else { "?" }
            ),
        )
        .bearer_auth(bearer)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("answer");
    assert!(response.status().is_success(), "{path}: HTTP {}", response.status());
    response.json().await.expect("json")
}

/// Activates through the raw API (the client's own tests cover the call).
async fn activate(emulator: &Emulator, id: &str, body: Value) {
    let bearer = token(emulator).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/saas/subscriptions/{id}/activate?api-version=2018-08-31", emulator.api_base()))
        .bearer_auth(bearer)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200, "activation of {id}");
}

#[tokio::test]
async fn subscriptions_resolve_and_list_have_microsofts_shape() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.expect("starts");
    let bought = emulator.purchase(Purchase::plan("team-monthly").quantity(25)).await;
    emulator.seed(vec![json!({"id": "5eed0000-0000-4000-8000-000000000001", "planId": "team-monthly", "quantity": 2, "saasSubscriptionStatus": "Subscribed"})]).await;

    let resolved = call(
        &emulator,
        reqwest::Method::POST,
        "/saas/subscriptions/resolve",
        None,
        &[("x-ms-marketplace-token", &bought.token)],
    )
    .await;
    // docs/marketplace-api.md#resolvedsubscription-object.
    assert_shape(
        &json!({"id": "g", "subscriptionName": "n", "offerId": "o", "planId": "p", "quantity": 25, "subscription": subscription_sample()}),
        &resolved,
        "resolve",
    );

    let id = &bought.subscription_id;
    activate(&emulator, id, json!({"planId": "team-monthly", "quantity": 25})).await;
    let subscription =
        call(&emulator, reqwest::Method::GET, &format!("/saas/subscriptions/{id}"), None, &[]).await;
    assert_shape(&subscription_sample(), &subscription, "subscription");
    assert_eq!(
        emulator.subscription(id).await.as_ref(),
        Some(&subscription),
        "inspection shows what GET shows"
    );

    let list = call(&emulator, reqwest::Method::GET, "/saas/subscriptions", None, &[]).await;
    assert_shape(&json!({"subscriptions": [subscription_sample()]}), &list, "list");
}

#[tokio::test]
async fn plans_have_microsofts_shape() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.expect("starts");
    let bought = emulator.purchase(Purchase::plan("basic")).await;
    let plans = call(
        &emulator,
        reqwest::Method::GET,
        &format!("/saas/subscriptions/{}/listAvailablePlans?planId=basic", bought.subscription_id),
        None,
        &[],
    )
    .await;
    // docs/marketplace-api.md#plan-object.
    let plan = json!({
        "planId": "basic", "displayName": "Basic", "isPrivate": false, "description": "d", "minQuantity": null, "maxQuantity": null,
        "hasFreeTrials": false, "isPricePerSeat": false, "isStopSell": false, "market": "US",
        "planComponents": {
            "recurrentBillingTerms": [{"currency": "USD", "price": 10.0, "termUnit": "P1M", "termDescription": "1 month",
                "meteredQuantityIncluded": [{"dimensionId": "api-calls", "units": "1000"}]}],
            "meteringDimensions": [{"id": "api-calls", "currency": "USD", "pricePerUnit": 0.01, "unitOfMeasure": "per call", "displayName": "API calls"}]
        },
        "sourceOffers": []
    });
    assert_shape(&json!({"plans": [plan]}), &plans, "plans");
}

#[tokio::test]
async fn operations_and_webhooks_have_microsofts_shape() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.expect("starts");
    let bought = emulator.purchase(Purchase::plan("team-monthly").quantity(25)).await;
    let id = bought.subscription_id.clone();
    call(&emulator, reqwest::Method::GET, &format!("/saas/subscriptions/{id}"), None, &[]).await;
    activate(&emulator, &id, json!({"planId": "team-monthly", "quantity": 25})).await;

    let handle = emulator.change_quantity(&id, 40).await.expect("customer change");
    let operation = call(
        &emulator,
        reqwest::Method::GET,
        &format!("/saas/subscriptions/{id}/operations/{}", handle.operation_id),
        None,
        &[],
    )
    .await;
    assert_shape(&operation_sample(), &operation, "operation");
    let outstanding =
        call(&emulator, reqwest::Method::GET, &format!("/saas/subscriptions/{id}/operations"), None, &[])
            .await;
    assert_shape(&json!({"operations": [operation_sample()]}), &outstanding, "outstanding");

    // docs/marketplace-api.md#webhook-payload: the full webhook shape, with the new seats in the payload and the old in `subscription`.
    let delivery = emulator
        .wait_webhook(std::time::Duration::from_secs(5), |d| d.operation_id == handle.operation_id)
        .await
        .expect("a webhook is recorded");
    let mut webhook = operation_sample();
    for operation_only in ["errorStatusCode", "errorMessage"] {
        webhook.as_object_mut().expect("object").remove(operation_only);
    }
    webhook["subscription"] = subscription_sample();
    webhook["purchaseToken"] = Value::Null;
    assert_shape(&webhook, &delivery.payload, "webhook");
    assert_eq!(delivery.payload["quantity"], 40);
    assert_eq!(delivery.payload["subscription"]["quantity"], 25);
}

#[tokio::test]
async fn usage_answers_have_microsofts_shape() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.expect("starts");
    let bought = emulator.purchase(Purchase::plan("basic")).await;
    let id = bought.subscription_id.clone();
    activate(&emulator, &id, json!({"planId": "basic"})).await;
    let hour = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:00:00Z").to_string();
    let event = json!({"resourceId": id, "quantity": 5.0, "dimension": "api-calls", "effectiveStartTime": hour, "planId": "basic"});
    let accepted = call(&emulator, reqwest::Method::POST, "/usageEvent", Some(event.clone()), &[]).await;
    // docs/marketplace-api.md#single-usage-event.
    let result = json!({"usageEventId": "g", "status": "Accepted", "messageTime": "t", "resourceId": "g", "quantity": 5.0, "dimension": "d", "effectiveStartTime": "t", "planId": "p"});
    assert_shape(&result, &accepted, "usageEvent");
    let earlier = (chrono::Utc::now() - chrono::Duration::hours(2)).format("%Y-%m-%dT%H:00:00Z").to_string();
    let fresh = json!({"resourceId": id, "quantity": 2.0, "dimension": "api-calls", "effectiveStartTime": earlier, "planId": "basic"});
    let batch = call(
        &emulator,
        reqwest::Method::POST,
        "/batchUsageEvent",
        Some(json!({"request": [fresh, event]})),
        &[],
    )
    .await;
    // docs/marketplace-api.md#batch-usage-events: each item has its own status; the repeat is a Duplicate inside the 200, with the
    // accepted event in its error, as in Microsoft's sample.
    assert_shape(&json!({"count": 2, "result": [result]}), &batch, "batchUsageEvent");
    assert_eq!(batch["result"][1]["status"], "Duplicate");
    assert_eq!(batch["result"][1]["error"]["code"], "Conflict");
    assert_eq!(
        batch["result"][1]["error"]["additionalInfo"]["acceptedMessage"]["usageEventId"],
        accepted["usageEventId"]
    );
}
