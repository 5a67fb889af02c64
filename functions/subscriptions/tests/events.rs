//! The admin API's handler from the `events/subscriptions/` files, on the in-memory store and the
//! Marketplace model: every answer in milliseconds. End to end: tests/integration/tests/events.rs.

mod common;
#[path = "../../../shared/tests/support/mod.rs"]
mod support;

use chrono::{TimeZone, Utc};
use common::Api;
use fulfillment::changes::{Event, record_event};
use fulfillment::clock::Clock;
use fulfillment::domain::OperationId;
use fulfillment::store::{ChangeSource, SubscriptionStore};
use fulfillment::testing::{FakeMarketplace, ManualClock, MarketFault, MemoryStore, ScriptedStore};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};

const SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";
const TENANT: &str = "7e7a0000-0000-4000-8000-00000007e7a0";

fn event(file: &str) -> Request {
    let path = format!("{}/../../events/subscriptions/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// An active subscription of the events' tenant, at Microsoft and in our table.
async fn api() -> Api {
    fixture().await.0
}

/// [`api`], with the store (where failures are scripted) and Microsoft behind it.
async fn fixture() -> (Api, ScriptedStore<MemoryStore>, FakeMarketplace) {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
    let market = FakeMarketplace::new(clock.clone(), &["team-monthly", "team-yearly"]);
    market.set_dimensions("team-monthly", &["api-calls"]);
    let store = MemoryStore::new();
    let subscription = common::subscription(SUBSCRIPTION, "team-monthly", "Subscribed", TENANT);
    support::seed(&market, &store, subscription, clock.now()).await;
    let store = ScriptedStore::new(store);
    (common::admin_api(&store, &market, clock), store, market)
}

/// The answer's status and its error code.
async fn answer(api: &Api, file: &str) -> (StatusCode, String, String) {
    let response = api.handle(event(file)).await;
    let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (response.status(), code, body)
}

#[tokio::test]
async fn failures_are_reported_as_what_they_are() {
    let (api, store, market) = fixture().await;
    let (status, code, body) = answer(&api, "bad-page-token.json").await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "InvalidPageToken"), "{body}");

    // A store that refuses (a missing table, a missing permission) is not a bad page token, and
    // not something to try again.
    store.set_refusing(true);
    for file in ["bad-page-token.json", "list.json", "get.json"] {
        let (status, code, body) = answer(&api, file).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "StoreFailed"),
            "{file}: {body}"
        );
        assert!(body.contains("the store refused"), "{file}: {body}");
    }
    store.set_refusing(false);
    store.set_down(true);
    let (status, code, body) = answer(&api, "list.json").await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"), "{body}");
    store.set_down(false);

    // Microsoft's refusals that retrying will not fix are not "503 try again".
    for (fault, expected, expected_code) in [
        (MarketFault::Forbidden, StatusCode::BAD_GATEWAY, "MarketplaceRefused"),
        (MarketFault::NotFound, StatusCode::NOT_FOUND, "NotFoundAtMicrosoft"),
        (MarketFault::Throttled, StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
    ] {
        market.fail_next("list_available_plans", fault, 1);
        let (status, code, body) = answer(&api, "change-quantity.json").await;
        assert_eq!((status, code.as_str()), (expected, expected_code), "{fault:?}: {body}");
    }
    assert!(!market.calls().contains(&"change_quantity"), "nothing was asked of Microsoft");
}

#[tokio::test]
async fn the_admin_events_get_their_answers() {
    let api = api().await;
    for (file, status, needle) in [
        ("bad-without-iam.json", StatusCode::FORBIDDEN, "Forbidden"),
        ("list.json", StatusCode::OK, SUBSCRIPTION),
        ("get.json", StatusCode::OK, "\"history\""),
        ("entitlement.json", StatusCode::OK, "\"accessAllowed\":true"),
        ("tenant-entitlements.json", StatusCode::OK, SUBSCRIPTION),
        ("bad-unknown-subscription.json", StatusCode::NOT_FOUND, "SubscriptionNotFound"),
        ("bad-page-token.json", StatusCode::BAD_REQUEST, "InvalidPageToken"),
        // The fixture's key location is a closed port: the self-check says so.
        ("self-check.json", StatusCode::INTERNAL_SERVER_ERROR, "webhook-signing-keys"),
        ("bad-both-plan-and-quantity.json", StatusCode::BAD_REQUEST, "InvalidRequest"),
        // The fixture's clock is the files' usage time (2026-12-01T09:00Z).
        ("usage-report.json", StatusCode::OK, "\"added\":2"),
        ("usage-get.json", StatusCode::OK, "\"reported\":150.5"),
        ("change-quantity.json", StatusCode::ACCEPTED, "pendingOperation"),
        ("change-plan.json", StatusCode::CONFLICT, "OperationPending"),
        ("cancel.json", StatusCode::CONFLICT, "OperationPending"),
    ] {
        let response = api.handle(event(file)).await;
        let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        assert_eq!(response.status(), status, "{file}: {body}");
        assert!(body.contains(needle), "{file}: {body}");
    }
}

/// Every file of `events/subscriptions/` is a request the handler answers with JSON.
#[tokio::test]
async fn every_event_file_is_answered_with_json() {
    let directory = format!("{}/../../events/subscriptions", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&directory)
        .expect("the events directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 14, "{files:?}");
    for file in files {
        let (status, code, body) = answer(&api().await, &file).await;
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "{file}: {status} {body}");
        assert_ne!(code, "NotFound", "{file} names no route: {body}");
    }
}

#[tokio::test]
async fn each_change_event_alone_is_accepted() {
    for file in ["change-plan.json", "cancel.json"] {
        let api = api().await;
        let response = api.handle(event(file)).await;
        let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{file}: {body}");
        assert!(matches!(response.body(), Body::Text(_) | Body::Binary(_)));
    }
}

/// A subscription's history grows for ever; Lambda answers at most 6 MB. The record comes with a
/// page of it (100 entries unless `historyLimit` says fewer, at most 500), and
/// `historyNextPageToken` leads on.
#[tokio::test]
async fn a_long_history_comes_in_pages() {
    let (api, store, _) = fixture().await;
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).single().expect("time"));
    let id = fulfillment::domain::SubscriptionId::parse(SUBSCRIPTION).expect("id");
    for seats in 11..260 {
        let mut subscription = store.inner().get(&id).await.expect("read").expect("there").subscription;
        subscription.quantity = Some(seats);
        let operation = OperationId::parse(&format!("change-{seats}")).expect("id");
        let seen = Event::observed(subscription, clock.now(), operation, ChangeSource::Webhook);
        record_event(store.inner(), &seen, clock.now()).await.expect("recorded");
        clock.advance(chrono::Duration::seconds(1));
    }
    let get = |query: String| {
        let mut request = event("get.json");
        let path = request.uri().path().to_owned();
        *request.uri_mut() = format!("{path}?{query}").parse().expect("a URI");
        let api = &api;
        async move {
            let response = api.handle(request).await;
            let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).expect("JSON");
            (response.status(), body)
        }
    };
    let (status, first) = get(String::new()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["history"].as_array().map(Vec::len), Some(100), "a page of 100 by default");
    assert_eq!(first["record"]["subscription"]["quantity"], 259);

    let (mut seen, mut token, mut pages) = (0, None::<String>, 0);
    loop {
        let query = match &token {
            None => "historyLimit=40".to_owned(),
            Some(token) => format!("historyLimit=40&historyPageToken={token}"),
        };
        let (status, page) = get(query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let entries = page["history"].as_array().expect("history");
        assert!(entries.len() <= 40);
        seen += entries.len();
        pages += 1;
        token = page["historyNextPageToken"].as_str().map(str::to_owned);
        if token.is_none() || pages > 20 {
            break;
        }
    }
    assert_eq!((seen, token), (250, None), "every entry once, over {pages} pages");

    let (status, refused) = get("historyPageToken=not-ours".to_owned()).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidPageToken"))
    );
}
