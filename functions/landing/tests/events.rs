//! The landing page's handler from the `events/landing/` files, on the in-memory store and the
//! Marketplace model: the token decoded exactly once whatever the link did to it, every page, and
//! the subscription recorded, in milliseconds. End to end: tests/integration/tests/events.rs.

use chrono::{TimeZone, Utc};
use fulfillment::config::Environment;
use fulfillment::domain::{Subscription, SubscriptionId, SubscriptionStatus};
use fulfillment::store::SubscriptionStore;
use fulfillment::testing::{FakeMarketplace, ManualClock, MemoryStore};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use landing::LandingPage;

const TOKEN: &str = "Qm9vdHN0cmFw+TG9jYWwvVG9rZW4=/Rml4ZWQrUHVyY2hhc2U=+c3Vic2NyaXB0aW9uL2V2ZW50cw==";
const SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";

fn event(file: &str) -> Request {
    let path = format!("{}/../../events/landing/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A purchase Microsoft knows by the events' token; nothing in our table yet.
fn page() -> (LandingPage<MemoryStore, FakeMarketplace, ManualClock>, MemoryStore) {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
    let market = FakeMarketplace::new(clock.clone(), &["team-monthly"]);
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    let subscription: Subscription = serde_json::from_value(serde_json::json!({
        "id": SUBSCRIPTION, "offerId": "contoso-saas", "name": "Fabrikam", "planId": "team-monthly",
        "quantity": 10, "saasSubscriptionStatus": "PendingFulfillmentStart"
    }))
    .expect("subscription");
    market.insert_subscription(subscription);
    market.insert_token(TOKEN, &id);
    let store = MemoryStore::new();
    let page = LandingPage::new(store.clone(), market, clock, &environment()).expect("the page");
    (page, store)
}

#[tokio::test]
async fn the_landing_events_get_their_pages() {
    let (page, store) = page();
    for (file, status, needle) in [
        ("purchase.json", StatusCode::OK, "Confirm your subscription"),
        ("token-unencoded.json", StatusCode::OK, "Confirm your subscription"),
        ("token-plus-as-space.json", StatusCode::OK, "Confirm your subscription"),
        ("token-double-encoded.json", StatusCode::BAD_REQUEST, "This link is no longer valid"),
        ("token-missing.json", StatusCode::BAD_REQUEST, "This link is no longer valid"),
        ("token-junk-4kb.json", StatusCode::BAD_REQUEST, "This link is no longer valid"),
        ("post.json", StatusCode::METHOD_NOT_ALLOWED, "only answers GET"),
    ] {
        let response = page.handle(event(file)).await;
        let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        assert_eq!(response.status(), status, "{file}: {body}");
        assert!(body.contains(needle), "{file}: {body}");
    }
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    let record = store.get(&id).await.expect("read").expect("recorded by the visit");
    assert_eq!(record.status(), SubscriptionStatus::PendingFulfillmentStart);
    assert_eq!(record.version, 1, "visits that change nothing write nothing");
}

/// The pages' settings, as the deployed function reads them.
fn environment() -> Environment {
    Environment::from_pairs([
        ("FORM_SIGNING_KEY", "a-form-signing-key-of-at-least-32-bytes"),
        ("LANDING_URL", "https://app.example/landing"),
        ("PRODUCT_NAME", "Contoso Cloud"),
    ])
}
