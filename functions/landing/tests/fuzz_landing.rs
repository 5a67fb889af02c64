//! Fuzzing the landing page's query handling in-process (sign-in off): any query string is
//! answered without a panic; one without a usable purchase token gets the "link is no longer
//! valid" page (400) before Microsoft is called; one with a token sends Microsoft exactly that
//! token, decoded once, however the link encoded it. Microsoft never answers here, so a usable
//! token ends in the "try again" page.

#[path = "../../../shared/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use fulfillment::onboarding::Onboarding;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::testing::ManualClock;
use fulfillment::web::WebSettings;
use fulfillment::web::query;
use fulfillment::web::seal::Sealer;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use landing::LandingPage;
use proptest::prelude::*;
use proptest::sample::select;
use support::{EmptyTable, Unreachable, check, runtime};

struct Fixture {
    page: LandingPage<DynamoDbStore, Unreachable, ManualClock>,
    marketplace: Unreachable,
    runtime: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Self {
        let clock = ManualClock::at(chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time"));
        let web = WebSettings {
            sealer: Sealer::new(&[5u8; 32]).expect("a key"),
            product_name: "Fuzz".into(),
            product_url: None,
            landing_url: "https://app.example/landing".parse().expect("a URL"),
            activate_url: "https://app.example/activate".parse().expect("a URL"),
            auto_activate: false,
            secure_cookies: true,
            signin: None,
            form_lifetime: Duration::from_secs(1800),
        };
        let marketplace = Unreachable::default();
        let onboarding =
            Onboarding::new(EmptyTable::default().store(), marketplace.clone(), clock.clone(), false);
        Self { page: LandingPage { onboarding, web, signin: None, clock }, marketplace, runtime: runtime() }
    }

    /// The status and page for `method` on `/landing?{query}`; `None` when that is not a URI.
    fn get(&self, method: &str, query: &str) -> Option<(StatusCode, String)> {
        let request: Request = lambda_http::http::Request::builder()
            .method(method)
            .uri(format!("/landing?{query}"))
            .body(Body::Empty)
            .ok()?;
        let response = self.runtime.block_on(self.page.handle(request));
        Some((response.status(), String::from_utf8_lossy(response.body().as_ref()).into_owned()))
    }
}

const INVALID_LINK: &str = "This link is no longer valid";

/// Every byte of `value` but the unreserved ones, percent-encoded.
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

#[test]
fn any_query_string_is_answered_without_panic() {
    let fixture = Fixture::new();
    // What a URI's query may hold (RFC 3986), stray `%` included.
    let raw = prop_oneof![
        "[A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,120}",
        "([a-z]{0,6}=[A-Za-z0-9%+/=]{0,30}&){0,3}token=[A-Za-z0-9%+/=._-]{0,80}(&[a-z]{1,5}=[a-z]{0,5}){0,2}",
    ];
    check(1500, raw, |raw| {
        let Some((status, page)) = fixture.get("GET", &raw) else {
            return Err(TestCaseError::reject("not a URI"));
        };
        let resolved = fixture.marketplace.take_resolved();
        match query::purchase_token(&raw) {
            None => {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                prop_assert!(page.contains(INVALID_LINK));
                prop_assert!(resolved.is_empty(), "Microsoft is not asked: {resolved:?}");
            }
            Some(token) => {
                prop_assert_eq!(resolved, vec![token]);
                prop_assert_eq!(
                    status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Microsoft did not answer: try again"
                );
                prop_assert!(!page.contains(INVALID_LINK));
            }
        }
        Ok(())
    });
}

#[test]
fn the_purchase_token_reaches_microsoft_decoded_exactly_once() {
    let fixture = Fixture::new();
    let token = "[A-Za-z0-9+/=_-]{1,300}";
    check(1000, (token, any::<bool>(), "([a-z]{1,5}=[a-z0-9]{0,5}&){0,3}"), |(token, encoded, before)| {
        let written = if encoded { percent_encode(&token) } else { token.clone() };
        let (status, _) =
            fixture.get("GET", &format!("{before}token={written}&utm_source=x")).expect("a URI");
        prop_assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        prop_assert_eq!(fixture.marketplace.take_resolved(), vec![token]);
        Ok(())
    });
}

#[test]
fn only_get_and_head_are_answered() {
    let fixture = Fixture::new();
    let method = select(vec!["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]);
    check(200, (method, "token=[A-Za-z0-9]{1,20}"), |(method, raw)| {
        let (status, _) = fixture.get(method, &raw).expect("a URI");
        prop_assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        prop_assert!(fixture.marketplace.take_resolved().is_empty());
        Ok(())
    });
}
