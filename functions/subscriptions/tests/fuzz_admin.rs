//! Fuzzing the admin API's request parsing in-process: change requests (the PATCH body), list
//! filters and page tokens (the query), and paths. Any request is answered without a panic;
//! what is invalid gets 400 `InvalidRequest` with a message that says what is wrong, before the
//! store or Microsoft is asked; what is valid reaches the store with exactly what it said. The
//! store is an empty in-memory table (it shows each request it got) and Microsoft never answers.

#[path = "../../../shared/tests/support/mod.rs"]
mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fulfillment::domain::{PlanId, SubscriptionStatus};
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::testing::ManualClock;
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::string::string_regex;
use serde_json::{Value, json};
use subscriptions::AdminApi;
use support::{EmptyTable, Unreachable, check, runtime};

struct Fixture {
    api: AdminApi<DynamoDbStore, Unreachable, ManualClock>,
    table: EmptyTable,
    marketplace: Unreachable,
    runtime: tokio::runtime::Runtime,
}

/// An answer: status, error code (empty on success), message, and the whole JSON.
struct Answer {
    status: StatusCode,
    code: String,
    message: String,
    json: Value,
}

impl Fixture {
    fn new() -> Self {
        let clock = ManualClock::at(chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time"));
        let table = EmptyTable::default();
        let marketplace = Unreachable::default();
        let environment = fulfillment::config::Environment::from_pairs([
            ("ENTRA_TENANT_ID", support::TENANT),
            ("ENTRA_CLIENT_ID", support::APP),
            ("WEBHOOK_JWKS_URL", "http://127.0.0.1:9/keys"),
        ]);
        let api =
            AdminApi::new(table.store(), marketplace.clone(), clock, &environment).expect("the admin API");
        Self { api, table, marketplace, runtime: runtime() }
    }

    /// `None` when `uri` is not a URI.
    fn send(&self, method: &str, uri: &str, body: Vec<u8>, iam: bool) -> Option<Answer> {
        let body = if body.is_empty() { Body::Empty } else { Body::Binary(body) };
        let request: Request =
            lambda_http::http::Request::builder().method(method).uri(uri).body(body).ok()?;
        // As Lambda hands it over: the path as API Gateway received it.
        let path = request.uri().path().to_owned();
        let mut request = request.with_raw_http_path(path);
        if iam {
            let mut context = ApiGatewayV2httpRequestContext::default();
            let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
            iam.user_arn = Some("arn:aws:iam::000000000000:user/fuzz".into());
            let mut authorizer = ApiGatewayRequestAuthorizer::default();
            authorizer.iam = Some(iam);
            context.authorizer = Some(authorizer);
            request.extensions_mut().insert(RequestContext::ApiGatewayV2(context));
        }
        let response = self.runtime.block_on(self.api.handle(request));
        let json: Value = serde_json::from_slice(response.body().as_ref()).expect("a JSON answer");
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Some(Answer {
            status: response.status(),
            code: text(&json["error"]["code"]),
            message: text(&json["error"]["message"]),
            json,
        })
    }

    /// The store's requests since the last call, and whether Microsoft was called.
    fn effects(&self) -> (Vec<(String, Value)>, bool) {
        (self.table.take(), self.marketplace.take_calls() > 0)
    }
}

// Change requests ----------------------------------------------------------------------------------

/// The message a PATCH body must be refused with, or `None` for a valid change (the API's
/// contract: `{"planId": "…"}` or `{"quantity": n}`, exactly one).
fn refusal(body: &[u8]) -> Option<&'static str> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return Some("the body is not JSON: ") };
    match (value.get("planId"), value.get("quantity")) {
        (Some(_), Some(_)) => Some("change the plan or the quantity, not both in one request"),
        (None, None) => Some("give planId or quantity"),
        (Some(plan), None) => {
            plan.as_str().and_then(PlanId::parse).is_none().then_some("planId must be a non-empty string")
        }
        (None, Some(quantity)) => {
            let seats = quantity.as_u64().filter(|q| (1..=u64::from(u32::MAX)).contains(q));
            seats.is_none().then_some("quantity must be a whole number of seats")
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(vec![
            json!(0),
            json!(1),
            json!(u32::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(-1),
            json!(2.0),
            json!(""),
            json!("  "),
            json!("team-yearly"),
            json!(" basic ")
        ]),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(
                prop_oneof![Just("planId".to_owned()), Just("quantity".to_owned()), ".{0,6}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_change(fixture: &Fixture, id: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let expected = refusal(&body);
    let answer = fixture.send("PATCH", &format!("/admin/subscriptions/{id}"), body, true).expect("a URI");
    let (store, microsoft) = fixture.effects();
    match expected {
        Some(message) => {
            prop_assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);
            prop_assert_eq!(answer.code, "InvalidRequest");
            prop_assert!(answer.message.starts_with(message), "{:?} is not {message:?}", answer.message);
            prop_assert!(store.is_empty() && !microsoft, "nothing is asked for an invalid change");
        }
        None => {
            prop_assert!(answer.code != "InvalidRequest", "a valid change is refused: {}", answer.json);
            prop_assert!(!store.is_empty() || microsoft, "a valid change goes on");
            // The empty table does not know the subscription.
            prop_assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.json);
        }
    }
    Ok(())
}

#[test]
fn change_requests_of_arbitrary_bytes_and_json_are_judged() {
    let fixture = Fixture::new();
    let body = prop_oneof![
        vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            btree_map("[a-z]{1,6}", json_value(), 0..3)
        )
            .prop_map(|(plan, quantity, others)| {
                let mut body: serde_json::Map<String, Value> = others.into_iter().collect();
                if let Some(plan) = plan {
                    body.insert("planId".into(), plan);
                }
                if let Some(quantity) = quantity {
                    body.insert("quantity".into(), quantity);
                }
                Value::Object(body).to_string().into_bytes()
            }),
    ];
    check(1500, body, |body| check_change(&fixture, "sub-1", body));
}

#[test]
fn valid_change_requests_reach_the_store() {
    let fixture = Fixture::new();
    let change = prop_oneof![
        "[ ]{0,2}[A-Za-z0-9._-]{1,30}[ ]{0,2}".prop_map(|plan| json!({ "planId": plan })),
        (1..=u32::MAX).prop_map(|seats| json!({ "quantity": seats })),
    ];
    // Each case goes through the DynamoDB SDK (signing, serialization): fewer cases.
    check(300, (change, "[a-z0-9-]{1,36}"), |(change, id)| {
        prop_assert_eq!(refusal(change.to_string().as_bytes()), None);
        check_change(&fixture, &id, change.to_string().into_bytes())
    });
    // Past the size limit, even a valid change is refused.
    let padded = format!("{{\"planId\": \"basic\"{}}}", " ".repeat(16 * 1024));
    let answer =
        fixture.send("PATCH", "/admin/subscriptions/sub-1", padded.into_bytes(), true).expect("a URI");
    assert_eq!((answer.status, answer.message.as_str()), (StatusCode::BAD_REQUEST, "the body is too large"));
}

// List filters and page tokens ---------------------------------------------------------------------

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Page {
    /// What the store itself hands out.
    Genuine(String),
    Junk(String),
}

#[test]
fn list_filters_reach_the_store_as_given() {
    let fixture = Fixture::new();
    let status = prop::option::of(prop_oneof![
        select(vec![
            "Subscribed",
            "subscribed",
            " Suspended ",
            "PendingFulfillmentStart",
            "Unsubscribed",
            ""
        ])
        .prop_map(str::to_owned),
        ".{0,12}",
    ]);
    let limit = prop::option::of(prop_oneof![
        (0u64..2000).prop_map(|l| l.to_string()),
        select(vec!["-1", "abc", "", "4294967296", "1e3", " 5"]).prop_map(str::to_owned),
    ]);
    let page = prop::option::of(prop_oneof![
        "[a-z0-9-]{1,36}".prop_map(|id| Page::Genuine(
            URL_SAFE_NO_PAD.encode(json!([format!("SUB#{id}"), "STATE"]).to_string())
        )),
        prop_oneof![".{1,30}", "[A-Za-z0-9_-]{1,40}"].prop_map(Page::Junk),
    ]);
    let query = (status, prop::option::of(".{0,20}"), limit, page, "([a-z]{1,5}=[a-z0-9]{0,5}&){0,2}");
    // Most cases go through the DynamoDB SDK: fewer cases than for the cheap parsers.
    check(600, query, |(status, offer, limit, page, noise)| {
        let mut pairs = vec![];
        if let Some(status) = &status {
            pairs.push(format!("status={}", percent_encode(status)));
        }
        if let Some(offer) = &offer {
            pairs.push(format!("offerId={}", percent_encode(offer)));
        }
        if let Some(limit) = &limit {
            pairs.push(format!("limit={}", percent_encode(limit)));
        }
        let token = match &page {
            Some(Page::Genuine(token) | Page::Junk(token)) => Some(token.clone()),
            None => None,
        };
        if let Some(token) = &token {
            pairs.push(format!("pageToken={}", percent_encode(token)));
        }
        let answer = fixture
            .send("GET", &format!("/admin/subscriptions?{noise}{}", pairs.join("&")), vec![], true)
            .expect("a URI");
        let (store, _) = fixture.effects();
        let scan = store.iter().find(|(op, _)| op == "Scan").map(|(_, body)| body);
        let junk = matches!(page, Some(Page::Junk(_)));
        if answer.status == StatusCode::BAD_REQUEST {
            prop_assert!(junk, "only a page token is refused: {}", answer.json);
            prop_assert_eq!(answer.code, "InvalidPageToken");
            prop_assert_eq!(answer.message, "the page token is not valid");
            prop_assert!(scan.is_none());
            return Ok(());
        }
        prop_assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
        prop_assert!(!matches!(page, Some(Page::Genuine(_))) || !junk);
        let scan = scan.ok_or_else(|| TestCaseError::fail("no scan"))?;
        let expected_limit =
            limit.as_deref().and_then(|l| l.parse::<u32>().ok()).unwrap_or(100).clamp(1, 1000);
        prop_assert_eq!(&scan["Limit"], &json!(expected_limit));
        let values = &scan["ExpressionAttributeValues"];
        let expected_status = status
            .filter(|s| !s.is_empty())
            .map(|s| SubscriptionStatus::from(s.as_str()).as_str().to_owned());
        prop_assert_eq!(values[":status"]["S"].as_str(), expected_status.as_deref());
        prop_assert_eq!(values[":offer"]["S"].as_str(), offer.as_deref().filter(|o| !o.is_empty()));
        match &page {
            Some(Page::Genuine(token)) => {
                let [pk, sk]: [String; 2] =
                    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token).expect("base64")).expect("JSON");
                prop_assert_eq!(&scan["ExclusiveStartKey"], &json!({ "pk": { "S": pk }, "sk": { "S": sk } }));
            }
            None => prop_assert!(scan.get("ExclusiveStartKey").is_none()),
            Some(Page::Junk(_)) => {} // happened to be a valid token
        }
        prop_assert_eq!(&answer.json, &json!({ "subscriptions": [], "nextPageToken": null }));
        Ok(())
    });
}

#[test]
fn arbitrary_queries_and_paths_are_answered_without_panic() {
    let fixture = Fixture::new();
    let uri_chars = "[A-Za-z0-9._~!$&'()*+,;=:@/%-]";
    let regex = |pattern: String| string_regex(&pattern).expect("a regular expression");
    let path = prop_oneof![
        regex(format!("/admin/subscriptions(/{uri_chars}{{0,20}}){{0,3}}/?")),
        regex(format!("/admin/tenants/{uri_chars}{{0,20}}/entitlements")),
        regex(format!("/{uri_chars}{{0,30}}")),
    ];
    let method = select(vec!["GET", "PATCH", "DELETE", "POST", "PUT"]);
    let request = (method, path, prop::option::of(regex(format!("{uri_chars}{{0,60}}"))), any::<bool>());
    check(1500, request, |(method, path, query, iam)| {
        let uri = match &query {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        let Some(answer) = fixture.send(method, &uri, br#"{"quantity": 3}"#.to_vec(), iam) else {
            return Err(TestCaseError::reject("not a URI"));
        };
        fixture.effects();
        if !iam {
            prop_assert_eq!((answer.status, answer.code.as_str()), (StatusCode::FORBIDDEN, "Forbidden"));
            return Ok(());
        }
        let known = ["NotFound", "SubscriptionNotFound", "InvalidRequest", "Unavailable", ""];
        prop_assert!(known.contains(&answer.code.as_str()), "{}", answer.json);
        if answer.code == "InvalidRequest" {
            prop_assert_eq!(answer.message, "the page token is not valid");
        }
        Ok(())
    });
}
