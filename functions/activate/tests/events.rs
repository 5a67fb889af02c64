//! Activation's handler from the `events/activate/` files, on the in-memory store and the
//! Marketplace model: forms without a valid confirmation are refused and activate nothing; the
//! tooling's IAM route activates once and answers JSON; a repeat is idempotent. Milliseconds; end
//! to end: tests/integration/tests/events.rs.

use activate::ActivatePage;
use chrono::{TimeZone, Utc};
use fulfillment::config::Environment;
use fulfillment::domain::{Subscription, SubscriptionId, SubscriptionStatus};
use fulfillment::store::SubscriptionStore;
use fulfillment::testing::{FakeMarketplace, ManualClock, MemoryStore, ScriptedStore, StoreStep};
use lambda_http::Request;
use lambda_http::http::StatusCode;

const SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";

fn event(file: &str) -> Request {
    let path = format!("{}/../../events/activate/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn text(response: &lambda_http::Response<lambda_http::Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

type Page = ActivatePage<ScriptedStore<MemoryStore>, FakeMarketplace, ManualClock>;

/// A subscription pending at Microsoft, not in our table yet; the page over a scriptable store.
fn fixture() -> (Page, ScriptedStore<MemoryStore>, FakeMarketplace) {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
    let market = FakeMarketplace::new(clock.clone(), &["team-monthly"]);
    let subscription: Subscription = serde_json::from_value(serde_json::json!({
        "id": SUBSCRIPTION, "offerId": "contoso-saas", "planId": "team-monthly", "quantity": 6,
        "saasSubscriptionStatus": "PendingFulfillmentStart"
    }))
    .expect("subscription");
    market.insert_subscription(subscription);
    let store = ScriptedStore::new(MemoryStore::new());
    // The pages' settings, as the deployed function reads them.
    let environment = Environment::from_pairs([
        ("FORM_SIGNING_KEY", "a-form-signing-key-of-at-least-32-bytes"),
        ("LANDING_URL", "https://app.example/landing"),
        ("PRODUCT_NAME", "Contoso Cloud"),
    ]);
    (ActivatePage::new(store.clone(), market.clone(), clock, &environment).expect("the page"), store, market)
}

#[tokio::test]
async fn an_activation_microsoft_made_but_we_could_not_record_says_so() {
    let (page, store, market) = fixture();
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    store.at_apply(1, StoreStep::Outage);
    let response = page.handle(event("admin.json")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", text(&response));
    assert!(text(&response).contains("ActivatedNotRecorded"), "{}", text(&response));
    assert_eq!(market.subscription(&id).and_then(|s| s.status), Some(SubscriptionStatus::Subscribed));
    assert!(store.get(&id).await.expect("read").is_none(), "not recorded");

    // Asking again while the store is still failing says the same: it is active.
    store.at_apply(1, StoreStep::Outage);
    let response = page.handle(event("admin.json")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", text(&response));
    assert!(text(&response).contains("ActivatedNotRecorded"), "{}", text(&response));

    // Asking again records what Microsoft did, without activating twice.
    let again = page.handle(event("admin.json")).await;
    assert_eq!(again.status(), StatusCode::OK, "{}", text(&again));
    assert_eq!(
        store.get(&id).await.expect("read").expect("recorded").status(),
        SubscriptionStatus::Subscribed
    );
    assert_eq!(market.calls().iter().filter(|c| **c == "activate").count(), 1, "activated once");
}

#[tokio::test]
async fn the_activate_events_get_their_answers() {
    let (page, store, market) = fixture();
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");

    for (file, status, needle) in [
        ("get.json", StatusCode::METHOD_NOT_ALLOWED, "Activation is a POST"),
        ("form-empty.json", StatusCode::BAD_REQUEST, "confirmation has expired"),
        ("form-forged.json", StatusCode::FORBIDDEN, "confirmation has expired"),
        // The admin route without IAM authorization is treated as a form, and has none.
        ("admin-without-iam.json", StatusCode::BAD_REQUEST, "confirmation has expired"),
    ] {
        let response = page.handle(event(file)).await;
        assert_eq!(response.status(), status, "{file}: {}", text(&response));
        assert!(text(&response).contains(needle), "{file}: {}", text(&response));
    }
    assert_eq!(
        market.subscription(&id).and_then(|s| s.status),
        Some(SubscriptionStatus::PendingFulfillmentStart)
    );
    assert!(!market.calls().contains(&"activate"), "nothing activated");

    let response = page.handle(event("admin.json")).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let answer: serde_json::Value = serde_json::from_str(&text(&response)).expect("JSON for tooling");
    assert_eq!(
        (answer["status"].as_str(), answer["quantity"].as_u64(), answer["activatedNow"].as_bool()),
        (Some("Subscribed"), Some(6), Some(true))
    );
    let again = page.handle(event("admin.json")).await;
    let answer: serde_json::Value = serde_json::from_str(&text(&again)).expect("JSON");
    assert_eq!(answer["activatedNow"], false, "idempotent");
    assert_eq!(market.calls().iter().filter(|c| **c == "activate").count(), 1, "activated once");
    let record = store.get(&id).await.expect("read").expect("recorded");
    assert_eq!(record.status(), SubscriptionStatus::Subscribed);
}
