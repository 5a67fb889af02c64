//! The metering routes on the in-memory store and the Marketplace model: `POST /admin/usage`
//! (each report's answer, in order) and `GET /admin/subscriptions/{id}/usage` (each hour's state,
//! the totals). The model does not take Metering API calls, so `compare=true` is tested here only
//! where Microsoft fails; its success path needs the emulator.

mod common;
#[path = "../../../shared/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, TimeZone, Utc};
use common::Api;
use fulfillment::clock::Clock;
use fulfillment::domain::{SubscriptionId, Timestamp};
use fulfillment::store::usage::{HourKey, HourState, UsageStore};
use fulfillment::testing::{FakeMarketplace, ManualClock, MarketFault, MemoryStore, ScriptedStore};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use serde_json::{Value, json};

/// Subscribed to `team-monthly`, metered on `api-calls` and `storage-gb`.
const METERED: &str = "0e7e0000-0000-4000-8000-000000000001";
/// Suspended, on the same plan.
const SUSPENDED: &str = "0e7e0000-0000-4000-8000-000000000002";
/// Subscribed to `team-yearly`, which has no metering dimensions.
const FLAT: &str = "0e7e0000-0000-4000-8000-000000000003";
const UNKNOWN: &str = "0e7e0000-0000-4000-8000-0000000000ff";

struct Fixture {
    api: Api,
    store: ScriptedStore<MemoryStore>,
    market: FakeMarketplace,
    clock: ManualClock,
}

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time")
}

fn at(hour: u32, minute: u32) -> String {
    Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, 0).single().expect("time").to_rfc3339()
}

fn id(raw: &str) -> SubscriptionId {
    SubscriptionId::parse(raw).expect("id")
}

async fn fixture() -> Fixture {
    let clock = ManualClock::at(now());
    let market = FakeMarketplace::new(clock.clone(), &["team-monthly", "team-yearly"]);
    market.set_dimensions("team-monthly", &["api-calls", "storage-gb"]);
    let store = MemoryStore::new();
    for (id, plan, status) in [
        (METERED, "team-monthly", "Subscribed"),
        (SUSPENDED, "team-monthly", "Suspended"),
        (FLAT, "team-yearly", "Subscribed"),
    ] {
        support::seed(&market, &store, common::subscription(id, plan, status, METERED), clock.now()).await;
    }
    let store = ScriptedStore::new(store);
    let api = common::admin_api(&store, &market, clock.clone());
    Fixture { api, store, market, clock }
}

/// An IAM-signed request, as API Gateway hands it over.
fn request(method: &str, uri: &str, body: Vec<u8>) -> Request {
    let body = if body.is_empty() { Body::Empty } else { Body::Binary(body) };
    let request: Request =
        lambda_http::http::Request::builder().method(method).uri(uri).body(body).expect("a request");
    let path = request.uri().path().to_owned();
    let mut request = request.with_raw_http_path(path);
    let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
    iam.user_arn = Some("arn:aws:iam::123456789012:user/product".into());
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.iam = Some(iam);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.authorizer = Some(authorizer);
    request.extensions_mut().insert(RequestContext::ApiGatewayV2(context));
    request
}

impl Fixture {
    async fn send(&self, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self.api.handle(request(method, uri, body)).await;
        let json = serde_json::from_slice(response.body().as_ref()).expect("a JSON answer");
        (response.status(), json)
    }

    async fn report(&self, usage: Vec<Value>) -> (StatusCode, Value) {
        self.send("POST", "/admin/usage", json!({ "usage": usage }).to_string().into_bytes()).await
    }

    async fn usage(&self, id: &str, query: &str) -> (StatusCode, Value) {
        self.send("GET", &format!("/admin/subscriptions/{id}/usage{query}"), vec![]).await
    }
}

/// The hour of `METERED`'s usage of `dimension` that begins at `hour`:00 on the test's day.
fn hour_key(dimension: &str, hour: u32) -> HourKey {
    HourKey {
        subscription_id: id(METERED),
        dimension: dimension.into(),
        hour: Utc.with_ymd_and_hms(2026, 12, 1, hour, 0, 0).single().expect("time"),
    }
}

fn item(subscription: &str, dimension: &str, quantity: f64, time: &str, key: &str) -> Value {
    json!({ "subscriptionId": subscription, "dimension": dimension, "quantity": quantity, "time": time, "key": key })
}

/// Each result's (key, status, code).
fn results(body: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (text(&r["key"]), text(&r["status"]), text(&r["code"])))
        .collect()
}

fn row(key: &str, status: &str, code: &str) -> (String, String, String) {
    (key.to_owned(), status.to_owned(), code.to_owned())
}

#[tokio::test]
async fn each_report_is_answered_in_order_with_its_code() {
    let f = fixture().await;
    // An hour already closed for sending takes no more usage: it goes to the current hour.
    let (status, _) = f.report(vec![item(METERED, "storage-gb", 1.0, &at(3, 10), "early")]).await;
    assert_eq!(status, StatusCode::OK);
    f.store.close_hour(&hour_key("storage-gb", 3), now()).await.expect("closed").expect("there");

    let (status, body) = f
        .report(vec![
            item(METERED, "api-calls", 120.0, &at(8, 15), "a-1"),
            item(METERED, "api-calls", 30.5, &at(8, 40), "a-2"),
            item(METERED, "api-calls", 1.0, &at(8, 40), ""),
            item(METERED, "api calls", 1.0, &at(8, 40), "bad-dimension"),
            item(METERED, "api-calls", 0.0, &at(8, 40), "zero"),
            item(METERED, "api-calls", 1.0, &at(9, 30), "future"),
            item(METERED, "api-calls", 1.0, &(now() - TimeDelta::hours(24)).to_rfc3339(), "old"),
            item(UNKNOWN, "api-calls", 1.0, &at(8, 0), "unknown"),
            item(SUSPENDED, "api-calls", 1.0, &at(8, 0), "suspended"),
            item(FLAT, "api-calls", 1.0, &at(8, 0), "flat"),
            item(METERED, "gpu-hours", 1.0, &at(8, 0), "gpu"),
            item(METERED, "storage-gb", 2.0, &at(3, 20), "late"),
            json!({ "subscriptionId": METERED, "dimension": "api-calls", "quantity": 1, "key": "no-time" }),
            item("sub-1", "api-calls", 1.0, &at(8, 0), "not-a-guid"),
            item(METERED, "api-calls", 1.0, "yesterday", "bad-time"),
            json!({ "subscriptionId": METERED, "dimension": "api-calls", "quantity": "5", "time": at(8, 0), "key": "text-quantity" }),
            json!(42),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        results(&body),
        vec![
            row("a-1", "added", ""),
            row("a-2", "added", ""),
            row("", "refused", "InvalidKey"),
            row("bad-dimension", "refused", "InvalidDimension"),
            row("zero", "refused", "InvalidQuantity"),
            row("future", "refused", "InFuture"),
            row("old", "refused", "TooOld"),
            row("unknown", "refused", "UnknownSubscription"),
            row("suspended", "refused", "NotSubscribed"),
            row("flat", "refused", "Unmetered"),
            row("gpu", "refused", "UnknownDimension"),
            row("late", "added", "AddedToLaterHour"),
            row("no-time", "refused", "InvalidReport"),
            row("not-a-guid", "refused", "InvalidReport"),
            row("bad-time", "refused", "InvalidReport"),
            row("text-quantity", "refused", "InvalidReport"),
            row("", "refused", "InvalidReport"),
        ]
    );
    assert_eq!(
        (&body["added"], &body["repeated"], &body["refused"], &body["retry"]),
        (&json!(3), &json!(0), &json!(14), &json!(0))
    );
    let items = body["results"].as_array().expect("results");
    assert_eq!(items[0]["subscriptionId"], METERED);
    assert!(items[0].get("code").is_none() && items[0].get("message").is_none(), "{}", items[0]);
    // Every refusal says why; an item that does not parse says what is wrong with it.
    assert!(items[10]["message"].as_str().expect("message").contains("api-calls, storage-gb"));
    assert_eq!(items[12]["message"], "time must be an RFC 3339 timestamp");
    assert_eq!(items[13]["subscriptionId"], "sub-1", "what was given is echoed");
    assert_eq!(items[13]["message"], "subscriptionId must be a GUID");
    assert_eq!(items[15]["message"], "quantity must be a number");
    assert_eq!((&items[16]["key"], &items[16]["subscriptionId"]), (&Value::Null, &Value::Null));

    // The same key again adds nothing; a key used for other usage is told apart.
    let (status, body) = f
        .report(vec![
            item(METERED, "api-calls", 120.0, &at(8, 15), "a-1"),
            item(METERED, "api-calls", 99.0, &at(8, 15), "a-2"),
            item(METERED, "api-calls", 1.0, &at(8, 50), "a-3"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        results(&body),
        vec![row("a-1", "repeated", ""), row("a-2", "refused", "KeyReused"), row("a-3", "added", "")]
    );
    let hours = f.store.usage_of(&id(METERED), now() - TimeDelta::hours(1), now()).await.expect("read");
    let summary: Vec<(&str, f64, u64)> =
        hours.iter().map(|h| (h.dimension.as_str(), h.quantity, h.reports)).collect();
    // The late storage report went to the current hour.
    assert_eq!(summary, [("api-calls", 151.5, 3), ("storage-gb", 2.0, 1)], "added once per key");
}

#[tokio::test]
async fn reports_the_store_or_microsoft_cannot_take_now_are_to_be_sent_again() {
    let f = fixture().await;
    f.store.set_down(true);
    let usage = vec![
        item(METERED, "api-calls", 1.0, &at(8, 0), "k-1"),
        item(METERED, "storage-gb", 2.0, &at(8, 0), "k-2"),
    ];
    let (status, body) = f.report(usage.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "every report is to be retried: {body}");
    assert_eq!(results(&body), vec![row("k-1", "retry", "Unavailable"), row("k-2", "retry", "Unavailable")]);
    assert_eq!(body["retry"], 2);
    assert!(
        body["results"][0]["message"].as_str().expect("message").contains("send it again with the same key")
    );

    // With one refused among them, the request itself was answered.
    let mut mixed = usage.clone();
    mixed.push(item(METERED, "api-calls", 1.0, "now", "k-3"));
    let (status, body) = f.report(mixed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["retry"], &body["refused"]), (&json!(2), &json!(1)));

    // Sent again with the same keys once the store is back: added, once.
    f.store.set_down(false);
    let (status, body) = f.report(usage.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(results(&body), vec![row("k-1", "added", ""), row("k-2", "added", "")]);

    // Microsoft throttling the plan's dimensions read is for now; refusing our app is not.
    let f = fixture().await;
    f.market.fail_next("list_available_plans", MarketFault::Throttled, 10);
    let (status, body) = f.report(usage.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(results(&body)[0], row("k-1", "retry", "Unavailable"));
    let f = fixture().await;
    f.market.fail_next("list_available_plans", MarketFault::Forbidden, 10);
    let (status, body) = f.report(usage[..1].to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(results(&body), vec![row("k-1", "refused", "MarketplaceRefused")]);
    // A table that refuses (a missing permission) is not "try again" either.
    f.market.clear_faults();
    f.store.set_refusing(true);
    let (status, body) = f.report(usage[..1].to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(results(&body), vec![row("k-1", "refused", "StoreFailed")]);
}

#[tokio::test]
async fn many_reports_are_taken_a_few_at_a_time_and_answered_in_order() {
    let f = fixture().await;
    let delay = Duration::from_millis(20);
    f.store.set_delay(delay);
    let usage: Vec<Value> = (0..40)
        .map(|i| {
            if i % 7 == 3 {
                item(METERED, "api-calls", 1.0, "not a time", &format!("key-{i}"))
            } else {
                item(
                    METERED,
                    ["api-calls", "storage-gb"][i % 2],
                    1.0 + i as f64,
                    &at(i as u32 % 8, 5),
                    &format!("key-{i}"),
                )
            }
        })
        .collect();
    let started = Instant::now();
    let (status, body) = f.report(usage).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: Vec<_> = (0..40)
        .map(|i| {
            if i % 7 == 3 {
                row(&format!("key-{i}"), "refused", "InvalidReport")
            } else {
                row(&format!("key-{i}"), "added", "")
            }
        })
        .collect();
    assert_eq!(results(&body), expected);
    // One at a time, 34 reports of two store calls each would take 34 × 2 × 20 ms.
    assert!(elapsed < delay * 34, "{elapsed:?}: the reports were taken one by one");
}

#[tokio::test]
async fn a_request_that_is_not_a_list_of_reports_is_refused_whole() {
    let f = fixture().await;
    let one = item(METERED, "api-calls", 1.0, &at(8, 0), "k");
    let padded = json!({ "usage": [one.clone()], "padding": "x".repeat(70 * 1024) });
    for (body, needle) in [
        (b"not json".to_vec(), "the body is not JSON"),
        (vec![], "the body is not JSON"),
        (json!([one.clone()]).to_string().into_bytes(), "give {\"usage\": [...]}"),
        (json!({ "usage": one.clone() }).to_string().into_bytes(), "give {\"usage\": [...]}"),
        (json!({ "reports": [one.clone()] }).to_string().into_bytes(), "give {\"usage\": [...]}"),
        (json!({ "usage": [] }).to_string().into_bytes(), "give 1 to 100 usage reports, not 0"),
        (
            json!({ "usage": vec![one.clone(); 101] }).to_string().into_bytes(),
            "give 1 to 100 usage reports, not 101",
        ),
        (padded.to_string().into_bytes(), "the body is too large"),
    ] {
        let (status, answer) = f.send("POST", "/admin/usage", body).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (StatusCode::BAD_REQUEST, &json!("InvalidRequest")),
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.starts_with(needle), "{message:?} is not {needle:?}");
    }
    // 100 reports with long keys fit.
    let many: Vec<Value> =
        (0..100).map(|i| item(METERED, "api-calls", 1.0, &at(8, 0), &format!("{i:0>200}"))).collect();
    let (status, body) = f.report(many).await;
    assert_eq!((status, &body["added"]), (StatusCode::OK, &json!(100)), "{body}");
    // Without IAM, nothing.
    let mut unsigned = request("POST", "/admin/usage", json!({ "usage": [one] }).to_string().into_bytes());
    unsigned.extensions_mut().remove::<RequestContext>();
    assert_eq!(f.api.handle(unsigned).await.status(), StatusCode::FORBIDDEN);
}

/// Usage in four hours of two dimensions, each hour in another state.
async fn usage_in_every_state(f: &Fixture) {
    let (status, body) = f
        .report(vec![
            item(METERED, "api-calls", 10.0, &at(2, 5), "r-1"),
            item(METERED, "api-calls", 5.0, &at(2, 55), "r-2"),
            item(METERED, "api-calls", 7.0, &at(5, 0), "r-3"),
            item(METERED, "storage-gb", 3.0, &at(6, 30), "r-4"),
            item(METERED, "api-calls", 4.0, &at(8, 30), "r-5"),
        ])
        .await;
    assert_eq!((status, &body["added"]), (StatusCode::OK, &json!(5)), "{body}");
    let mut accepted =
        f.store.close_hour(&hour_key("api-calls", 2), now()).await.expect("close").expect("there");
    accepted.state = HourState::Accepted {
        sent_quantity: 15.0,
        usage_event_id: Some("evt-2".into()),
        message_time: Some(now()),
        duplicate: false,
    };
    f.store.record_send(&accepted).await.expect("accepted");
    let mut refused =
        f.store.close_hour(&hour_key("api-calls", 5), now()).await.expect("close").expect("there");
    refused.state = HourState::Refused {
        sent_quantity: 7.0,
        status: "ResourceNotActive".into(),
        message: "the subscription is suspended".into(),
    };
    f.store.record_send(&refused).await.expect("refused");
    let mut sending =
        f.store.close_hour(&hour_key("storage-gb", 6), now()).await.expect("close").expect("there");
    sending.state = HourState::Sending {
        sent_quantity: 3.0,
        attempts: 2,
        last_error: Some("Microsoft answered 503".into()),
    };
    f.store.record_send(&sending).await.expect("sending");
}

#[tokio::test]
async fn the_usage_view_shows_each_hour_where_it_stands_and_the_totals() {
    let f = fixture().await;
    usage_in_every_state(&f).await;
    let (status, body) = f.usage(METERED, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["subscriptionId"], METERED);
    assert_eq!(
        (&body["from"], &body["to"]),
        (&json!("2026-11-29T09:00:00Z"), &json!("2026-12-01T09:00:00Z"))
    );
    let hours = body["hours"].as_array().expect("hours");
    assert_eq!(
        hours[0],
        json!({ "hour": "2026-12-01T02:00:00Z", "dimension": "api-calls", "planId": "team-monthly", "reported": 15.0,
                "reports": 2, "state": "accepted", "sent": 15.0, "usageEventId": "evt-2", "duplicate": false })
    );
    assert_eq!(
        hours[1],
        json!({ "hour": "2026-12-01T05:00:00Z", "dimension": "api-calls", "planId": "team-monthly", "reported": 7.0,
                "reports": 1, "state": "refused", "sent": 7.0,
                "refusal": { "status": "ResourceNotActive", "message": "the subscription is suspended" } })
    );
    assert_eq!(
        hours[2],
        json!({ "hour": "2026-12-01T06:00:00Z", "dimension": "storage-gb", "planId": "team-monthly", "reported": 3.0,
                "reports": 1, "state": "sending", "sent": 3.0, "attempts": 2, "lastError": "Microsoft answered 503" })
    );
    assert_eq!(
        hours[3],
        json!({ "hour": "2026-12-01T08:00:00Z", "dimension": "api-calls", "planId": "team-monthly", "reported": 4.0,
                "reports": 1, "state": "open" })
    );
    assert_eq!(hours.len(), 4);
    assert_eq!(
        body["totals"],
        json!({
            "api-calls": { "reported": 26.0, "accepted": 15.0, "refused": 7.0, "pending": 4.0 },
            "storage-gb": { "reported": 3.0, "accepted": 0.0, "refused": 0.0, "pending": 3.0 },
        })
    );
    assert!(body.get("microsoft").is_none(), "no comparison unless asked");

    // A window: the hours that overlap it.
    let (status, body) = f.usage(METERED, "?from=2026-12-01T05:30:00Z&to=2026-12-01T07:00:00%2B01:00").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown: Vec<&str> =
        body["hours"].as_array().expect("hours").iter().map(|h| h["hour"].as_str().expect("hour")).collect();
    assert_eq!(shown, ["2026-12-01T05:00:00Z", "2026-12-01T06:00:00Z"]);
    assert_eq!(body["to"], "2026-12-01T06:00:00Z");
    assert_eq!(
        body["totals"]["api-calls"],
        json!({ "reported": 7.0, "accepted": 0.0, "refused": 7.0, "pending": 0.0 })
    );

    // 47 hours later the default window has moved on: only the last hour is in it.
    f.clock.advance(TimeDelta::hours(47));
    let (_, body) = f.usage(METERED, "").await;
    assert_eq!(body["hours"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(
        (&body["hours"][0]["hour"], &body["totals"]),
        (
            &json!("2026-12-01T08:00:00Z"),
            &json!({ "api-calls": { "reported": 4.0, "accepted": 0.0, "refused": 0.0, "pending": 4.0 } })
        )
    );
}

#[tokio::test]
async fn comparing_with_microsoft_when_it_fails_still_shows_ours() {
    let f = fixture().await;
    usage_in_every_state(&f).await;
    f.market.fail_next("get_usage_events", fulfillment::testing::MarketFault::Server, 3);
    let (status, body) = f.usage(METERED, "?compare=true").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["microsoft"], Value::Null);
    assert!(body["microsoftError"].as_str().expect("why").contains("500"), "{body}");
    assert_eq!(body["hours"].as_array().map(Vec::len), Some(4));
    let (status, body) = f.usage(METERED, "?compare=false").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("microsoft").is_none() && body.get("microsoftError").is_none(), "{body}");
}

#[tokio::test]
async fn a_bad_window_an_unknown_subscription_and_a_store_down_are_told_apart() {
    let f = fixture().await;
    for (query, needle) in [
        ("?from=yesterday", "from must be an RFC 3339 timestamp"),
        ("?to=2026-12-01", "to must be an RFC 3339 timestamp"),
        ("?from=2026-12-01T08:00:00Z&to=2026-12-01T07:00:00Z", "from must not be after to"),
        ("?from=2026-10-01T00:00:00Z", "the window is at most 31 days"),
        ("?from=2026-11-01T00:00:00Z&to=2026-12-02T00:00:01Z", "the window is at most 31 days"),
        ("?compare=yes", "compare must be true or false"),
    ] {
        let (status, body) = f.usage(METERED, query).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::BAD_REQUEST, &json!("InvalidRequest")),
            "{query}: {body}"
        );
        assert!(body["error"]["message"].as_str().expect("message").starts_with(needle), "{query}: {body}");
    }
    let (status, _) = f.usage(METERED, "?from=2026-11-01T00:00:00Z&to=2026-12-02T00:00:00Z").await;
    assert_eq!(status, StatusCode::OK, "31 days exactly");

    let (status, body) = f.usage(UNKNOWN, "").await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::NOT_FOUND, &json!("SubscriptionNotFound")));

    f.store.set_down(true);
    let (status, body) = f.usage(METERED, "").await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::SERVICE_UNAVAILABLE, &json!("Unavailable")));
    f.store.set_down(false);
    f.store.set_refusing(true);
    let (status, body) = f.usage(METERED, "").await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::INTERNAL_SERVER_ERROR, &json!("StoreFailed")));
}
