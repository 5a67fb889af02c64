//! The webhook's handler from the `events/webhook/` files (the same ones `sam local invoke` and
//! `cargo lambda invoke` use), on the in-memory store, the Marketplace model and a local signing
//! key: every answer, and what each event does to the record, in milliseconds. The end-to-end
//! versions (emulator, DynamoDB Local) are in tests/integration/tests/events.rs.

#[path = "../../../shared/tests/support/mod.rs"]
mod support;

use chrono::{TimeZone, Utc};
use fulfillment::clock::Clock;
use fulfillment::config::Environment;
use fulfillment::domain::{
    OperationStatus, Subscription, SubscriptionId, SubscriptionStatus, WebhookPayload,
};
use fulfillment::store::SubscriptionStore;
use fulfillment::testing::{FakeMarketplace, ManualClock, MemoryStore, ScriptedStore, StoreStep};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use serde_json::Value;
use support::{KeyServer, TestKey};
use webhook::WebhookFunction;

const SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";

struct Fixture {
    function: WebhookFunction<ScriptedStore<MemoryStore>, FakeMarketplace, ManualClock>,
    store: MemoryStore,
    /// The function's view of `store`, where outages are scripted.
    scripted: ScriptedStore<MemoryStore>,
    market: FakeMarketplace,
    token: String,
    _keys: KeyServer,
}

/// Microsoft holds the subscription (Subscribed, 6 seats on team-monthly) and each event's
/// operation as that event says; we hold the subscription as Microsoft showed it before.
async fn fixture() -> Fixture {
    fixture_with(&[]).await
}

/// [`fixture`], with more settings (e.g. the policy for customers' changes).
async fn fixture_with(settings: &[(&str, &str)]) -> Fixture {
    let key = TestKey::load();
    let keys = KeyServer::start(&key.jwks());
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 5, 20, 14, 30, 0).single().expect("time"));
    let market = FakeMarketplace::new(clock.clone(), &["team-monthly", "team-yearly"]);
    let store = MemoryStore::new();
    let mut subscription: Subscription = serde_json::from_value(serde_json::json!({
        "id": SUBSCRIPTION, "offerId": "contoso-saas", "planId": "team-monthly", "quantity": 6,
        "saasSubscriptionStatus": "Subscribed", "allowedCustomerOperations": ["Read", "Update", "Delete"]
    }))
    .expect("subscription");
    subscription.last_modified = Utc.with_ymd_and_hms(2026, 5, 20, 14, 0, 0).single();
    support::seed(&market, &store, subscription, clock.now()).await;
    let scripted = ScriptedStore::new(store.clone());
    // The token's issuer and keys as the deployed function reads them.
    let environment = Environment::from_pairs(
        [
            ("ENTRA_TENANT_ID", support::TENANT),
            ("ENTRA_CLIENT_ID", support::APP),
            ("WEBHOOK_JWKS_URL", keys.url.as_str()),
        ]
        .into_iter()
        .chain(settings.iter().copied()),
    );
    let function =
        WebhookFunction::new(scripted.clone(), market.clone(), clock, &environment).expect("the webhook");
    Fixture {
        function,
        store,
        scripted,
        market,
        token: format!("Bearer {}", key.webhook_token(false, "marketplace")),
        _keys: keys,
    }
}

/// The event file as Lambda hands it over, with a valid token where it carries one.
fn request(fixture: &Fixture, file: &str) -> (Request, Option<WebhookPayload>) {
    request_received(fixture, file, None)
}

/// [`request`], received by API Gateway at `received` (its `timeEpoch`, ms since the epoch)
/// rather than at the file's time.
fn request_received(
    fixture: &Fixture,
    file: &str,
    received: Option<i64>,
) -> (Request, Option<WebhookPayload>) {
    let path = format!("{}/../../events/webhook/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if let Some(received) = received {
        let mut event: Value = serde_json::from_str(&text).expect("JSON");
        event["requestContext"]["timeEpoch"] = received.into();
        text = event.to_string();
    }
    let mut request = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    if request.headers().contains_key("authorization") {
        request.headers_mut().insert("authorization", fixture.token.parse().expect("header"));
    }
    let payload = match request.body() {
        Body::Text(text) => serde_json::from_str(text).ok(),
        Body::Binary(bytes) => serde_json::from_slice(bytes).ok(),
        _ => None,
    };
    (request, payload)
}

/// Microsoft's side of `payload`: its operation, and the subscription as the action leaves it.
fn at_microsoft(fixture: &Fixture, payload: &WebhookPayload) {
    let mut operation = payload.operation.clone();
    // Microsoft's ack-able changes wait for us; everything else is done.
    if operation.status.is_none() {
        operation.status = Some(OperationStatus::Succeeded);
    }
    operation.time_stamp = Utc.with_ymd_and_hms(2026, 5, 20, 14, 10, 0).single();
    fixture.market.insert_operation(operation.clone());
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    let status = match operation.action.as_ref().map(|a| a.as_str()) {
        Some("Suspend") => Some(SubscriptionStatus::Suspended),
        Some("Unsubscribe") => Some(SubscriptionStatus::Unsubscribed),
        _ => None,
    };
    let finished = operation.status == Some(OperationStatus::Succeeded);
    fixture.market.edit(&id, |s| {
        if let Some(status) = status {
            s.status = Some(status);
        }
        if finished && operation.action.as_ref().map(|a| a.as_str()) == Some("ChangePlan") {
            s.plan_id = operation.plan_id.clone();
        }
    });
}

async fn answer(fixture: &Fixture, file: &str) -> (StatusCode, Value) {
    answer_received(fixture, file, None).await
}

/// [`answer`] to a request API Gateway received at `received` (ms since the epoch).
async fn answer_received(fixture: &Fixture, file: &str, received: Option<i64>) -> (StatusCode, Value) {
    let (request, payload) = request_received(fixture, file, received);
    if let Some(payload) = &payload {
        at_microsoft(fixture, payload);
    }
    let response = fixture.function.handle(request).await;
    let status = response.status();
    let body = match response.into_body() {
        Body::Text(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, body)
}

async fn record(fixture: &Fixture) -> fulfillment::store::SubscriptionRecord {
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    fixture.store.get(&id).await.expect("read").expect("record")
}

#[tokio::test]
async fn bad_requests_get_their_4xx_and_change_nothing() {
    let fixture = fixture().await;
    for (file, status, code) in [
        ("bad-get.json", StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        ("bad-no-authorization.json", StatusCode::UNAUTHORIZED, "Unauthorized"),
        ("bad-not-json.json", StatusCode::BAD_REQUEST, "InvalidPayload"),
        ("bad-missing-ids.json", StatusCode::BAD_REQUEST, "InvalidPayload"),
    ] {
        let (request, _) = request(&fixture, file);
        let response = fixture.function.handle(request).await;
        let body = match response.body() {
            Body::Text(text) => text.clone(),
            _ => String::new(),
        };
        assert_eq!(response.status(), status, "{file}: {body}");
        assert!(body.contains(code), "{file}: {body}");
    }
    assert_eq!(record(&fixture).await.version, 1, "nothing changed");
}

#[tokio::test]
async fn a_customers_changes_are_accepted_applied_and_acknowledged() {
    let fixture = fixture().await;
    let (status, body) = answer(&fixture, "change-quantity-customer.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(record(&fixture).await.subscription.quantity, Some(40));
    let (status, body) = answer(&fixture, "change-plan-customer.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        record(&fixture).await.subscription.plan_id.map(|p| p.to_string()),
        Some("team-yearly".into())
    );
    assert!(
        fixture.market.calls().iter().filter(|c| **c == "update_operation_status").count() == 2,
        "both acknowledged"
    );
}

#[tokio::test]
async fn a_store_outage_answers_5xx_and_the_redelivery_applies_once() {
    let fixture = fixture().await;
    fixture.scripted.at_apply(1, StoreStep::Outage);
    let (status, body) = answer(&fixture, "suspend.json").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "Microsoft will deliver again: {body}");
    assert_eq!(record(&fixture).await.status(), SubscriptionStatus::Subscribed, "nothing half-written");
    let (status, body) = answer(&fixture, "suspend.json").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("recorded")), "{body}");
    let (status, body) = answer(&fixture, "suspend.json").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{body}");
    assert_eq!(record(&fixture).await.status(), SubscriptionStatus::Suspended);
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    let history = fixture.store.history(&id).await.expect("history");
    assert_eq!(history.iter().filter(|h| h.operation_id.as_str() != "seed").count(), 1, "applied once");
}

/// Microsoft waits 10 seconds, counted from its request: with the table and Microsoft both slow
/// (1.5 s a call each, a dozen calls) and the request received by API Gateway 2 seconds before
/// the function got it (a cold start: the secret, the keys), the answer still comes within the
/// webhook's budget of 8 seconds from when API Gateway received it; and the redelivery, once both
/// are quick again, applies the change once.
#[tokio::test]
async fn with_the_store_and_microsoft_slow_an_answer_comes_within_the_budget_counted_from_api_gateway() {
    let fixture = fixture().await;
    let received = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let received_ms = received.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64;
    fixture.scripted.set_delay(std::time::Duration::from_millis(1500));
    fixture.market.set_delay(std::time::Duration::from_millis(1500));
    let (status, body) = answer_received(&fixture, "suspend.json", Some(received_ms)).await;
    let waited = received.elapsed().expect("a time in the past");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "Microsoft will deliver again: {body}");
    assert!(
        waited <= webhook::BUDGET + std::time::Duration::from_millis(500),
        "answered {waited:?} after API Gateway received it, over the budget of {:?}",
        webhook::BUDGET
    );

    // An event file's own time (years ago) is not the request's: the budget starts on arrival.
    fixture.scripted.set_delay(std::time::Duration::ZERO);
    fixture.market.set_delay(std::time::Duration::ZERO);
    let (status, body) = answer(&fixture, "suspend.json").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("recorded")), "{body}");
    assert_eq!(record(&fixture).await.status(), SubscriptionStatus::Suspended);
}

/// A refusal (a plan the policy does not allow) is answered 400 within the budget even when what
/// follows the decision (telling Microsoft, recording it, checking it held) is slow: a 503 instead
/// would let Microsoft accept the change when its 10 seconds run out.
#[tokio::test]
async fn a_refused_change_is_answered_400_within_the_budget_when_microsoft_and_the_store_are_slow() {
    let began = std::time::Instant::now();
    let fixture = fixture_with(&[("ALLOWED_PLANS", "team-monthly")]).await;
    fixture.scripted.set_delay(std::time::Duration::from_millis(1000));
    fixture.market.set_delay(std::time::Duration::from_millis(2500));
    let (status, body) = answer(&fixture, "change-plan-customer.json").await;
    let waited = began.elapsed();
    assert_eq!(status, StatusCode::BAD_REQUEST, "the refusal itself: {body}");
    assert!(
        waited <= webhook::BUDGET + std::time::Duration::from_millis(500),
        "answered after {waited:?}, over the budget of {:?}",
        webhook::BUDGET
    );
    fixture.scripted.set_delay(std::time::Duration::ZERO);
    fixture.market.set_delay(std::time::Duration::ZERO);
    assert_eq!(
        record(&fixture).await.subscription.plan_id.map(|p| p.to_string()),
        Some("team-monthly".into()),
        "the plan is kept"
    );
}

#[tokio::test]
async fn the_publishers_finished_change_records_microsofts_view() {
    let fixture = fixture().await;
    let (status, body) = answer(&fixture, "change-plan-publisher.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        record(&fixture).await.subscription.plan_id.map(|p| p.to_string()),
        Some("team-yearly".into())
    );
    assert!(
        !fixture.market.calls().contains(&"update_operation_status"),
        "a Partner operation is not acknowledged"
    );
}

#[tokio::test]
async fn notifications_record_what_microsoft_shows_and_a_duplicate_changes_nothing() {
    let fixture = fixture().await;
    for (file, expected) in [
        ("renew.json", SubscriptionStatus::Subscribed),
        ("subscribe.json", SubscriptionStatus::Subscribed),
        ("transfer-unknown-action.json", SubscriptionStatus::Subscribed),
        ("suspend.json", SubscriptionStatus::Suspended),
        ("unsubscribe.json", SubscriptionStatus::Unsubscribed),
    ] {
        let (status, body) = answer(&fixture, file).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("recorded")), "{file}: {body}");
        assert_eq!(record(&fixture).await.status(), expected, "{file}");
    }
    let version = record(&fixture).await.version;
    let (status, body) = answer(&fixture, "suspend.json").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{body}");
    assert_eq!(record(&fixture).await.version, version);
}

#[tokio::test]
async fn a_reinstatement_microsofts_view_does_not_show_yet_is_asked_for_again() {
    let fixture = fixture().await;
    // Reinstate-minimal arrives InProgress; Microsoft's view still says Suspended.
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    fixture.market.edit(&id, |s| s.status = Some(SubscriptionStatus::Suspended));
    let (status, body) = answer(&fixture, "reinstate-minimal.json").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    fixture.market.edit(&id, |s| s.status = Some(SubscriptionStatus::Subscribed));
    let (status, body) = answer(&fixture, "reinstate-minimal.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(record(&fixture).await.status(), SubscriptionStatus::Subscribed);
}
