//! Fuzzing the activation function's form handling in-process: any body, cookie and form token
//! is answered without a panic; a form that is not a confirmation for this subscription (missing
//! fields, a token that is forged, changed, expired or made for another subscription or visitor)
//! is refused with the "confirmation has expired" page before anything is read or called; a
//! genuine confirmation, however the browser encoded it, goes on to the activation. The store is an
//! empty in-memory table and Microsoft never answers.

#[path = "../../../shared/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use activate::ActivatePage;
use fulfillment::domain::{SubscriptionId, Timestamp};
use fulfillment::identity::SignedInUser;
use fulfillment::onboarding::Onboarding;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::testing::ManualClock;
use fulfillment::web::WebSettings;
use fulfillment::web::seal::Sealer;
use fulfillment::web::session::{self, SESSION_COOKIE};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use proptest::collection::vec;
use proptest::prelude::*;
use support::{EmptyTable, Unreachable, check, runtime};

const KEY: [u8; 32] = [9u8; 32];
const LIFETIME: Duration = Duration::from_secs(1800);

fn now() -> Timestamp {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
}

struct Fixture {
    page: ActivatePage<DynamoDbStore, Unreachable, ManualClock>,
    table: EmptyTable,
    marketplace: Unreachable,
    runtime: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Self {
        let table = EmptyTable::default();
        let clock = ManualClock::at(now());
        let web = WebSettings {
            sealer: sealer(),
            product_name: "Fuzz".into(),
            product_url: None,
            landing_url: "https://app.example/landing".parse().expect("a URL"),
            activate_url: "https://app.example/activate".parse().expect("a URL"),
            auto_activate: false,
            secure_cookies: true,
            signin: None,
            form_lifetime: LIFETIME,
        };
        let marketplace = Unreachable::default();
        let onboarding = Onboarding::new(table.store(), marketplace.clone(), clock.clone(), false);
        Self { page: ActivatePage { onboarding, web, clock }, table, marketplace, runtime: runtime() }
    }

    /// The status of the answer to a POST of `body` with `cookie`, and whether it is the page that
    /// refuses the form.
    fn post(&self, body: Vec<u8>, cookie: Option<&str>) -> (StatusCode, bool) {
        let (status, text) = self.send("/activate", body, cookie, false);
        (status, text.contains("This confirmation has expired"))
    }

    /// The status and body of the answer to a POST to `path`, IAM-authorized or not.
    fn send(&self, path: &str, body: Vec<u8>, cookie: Option<&str>, iam: bool) -> (StatusCode, String) {
        let mut request = lambda_http::http::Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let body = if body.is_empty() { Body::Empty } else { Body::Binary(body) };
        // As Lambda hands it over: the path as API Gateway received it.
        let mut request: Request = request.body(body).expect("a request").with_raw_http_path(path);
        if iam {
            let mut context = ApiGatewayV2httpRequestContext::default();
            let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
            iam.user_arn = Some("arn:aws:iam::000000000000:user/fuzz".into());
            let mut authorizer = ApiGatewayRequestAuthorizer::default();
            authorizer.iam = Some(iam);
            context.authorizer = Some(authorizer);
            request.extensions_mut().insert(RequestContext::ApiGatewayV2(context));
        }
        let response = self.runtime.block_on(self.page.handle(request));
        (response.status(), String::from_utf8_lossy(response.body().as_ref()).into_owned())
    }

    /// Whether the store or Microsoft was asked anything since the last call.
    fn went_on(&self) -> bool {
        let marketplace = self.marketplace.take_calls() > 0;
        !self.table.take().is_empty() || marketplace
    }
}

fn sealer() -> Sealer {
    Sealer::new(&KEY).expect("a key")
}

fn user() -> impl Strategy<Value = SignedInUser> {
    ("[a-z0-9-]{1,12}", "[a-z0-9-]{1,12}").prop_map(|(object_id, tenant_id)| SignedInUser {
        name: None,
        email: None,
        object_id,
        tenant_id,
    })
}

/// `name=value` pairs as a browser posts them (`+` for a space), or with every byte
/// percent-encoded (`%20`), in any order, among other fields.
fn encode(fields: &[(String, String)], plus_for_space: bool) -> Vec<u8> {
    if plus_for_space {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in fields {
            form.append_pair(name, value);
        }
        form.finish().into_bytes()
    } else {
        let encode = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        fields.iter().map(|(n, v)| format!("{n}={}", encode(v))).collect::<Vec<_>>().join("&").into_bytes()
    }
}

#[test]
fn arbitrary_bodies_and_cookies_are_refused_before_anything_is_called() {
    let fixture = Fixture::new();
    let body = prop_oneof![
        vec(any::<u8>(), 0..200),
        "([a-z_]{0,16}=[A-Za-z0-9%+._-]{0,40}&?){0,4}".prop_map(String::into_bytes),
        ("[a-z0-9 %+-]{0,40}", "[A-Za-z0-9%+._-]{0,80}")
            .prop_map(|(id, token)| format!("subscription_id={id}&form_token={token}").into_bytes()),
    ];
    let cookie = prop::option::of(prop_oneof![
        "[ -~]{0,60}",
        "[A-Za-z0-9._-]{0,60}".prop_map(|v| format!("{SESSION_COOKIE}={v}"))
    ]);
    check(1500, (body, cookie), |(body, cookie)| {
        let (status, refused) = fixture.post(body, cookie.as_deref());
        prop_assert!(refused, "{status}");
        prop_assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN, "{status}");
        prop_assert!(!fixture.went_on());
        Ok(())
    });
}

/// How a genuine form token may have been spoiled.
#[derive(Debug, Clone)]
enum Token {
    Genuine,
    /// A character replaced, inserted or removed.
    Changed(usize, char, u8),
    /// Issued for another subscription, to another visitor, or expired.
    OtherSubscription,
    OtherUser,
    Expired,
    /// Signed with another key.
    Forged,
}

#[test]
fn only_a_genuine_confirmation_goes_on_to_the_activation() {
    let fixture = Fixture::new();
    let token = prop_oneof![
        3 => Just(Token::Genuine),
        3 => (any::<usize>(), proptest::char::range('-', 'z'), 0u8..3).prop_map(|(i, c, k)| Token::Changed(i, c, k)),
        1 => Just(Token::OtherSubscription),
        1 => Just(Token::OtherUser),
        1 => Just(Token::Expired),
        1 => Just(Token::Forged),
    ];
    let extra = vec(("[a-z_]{1,10}", ".{0,10}"), 0..3);
    let case = (".{1,40}", prop::option::of(user()), token, extra, any::<bool>(), any::<bool>());
    check(1500, case, |(subscription_id, user, token, extra, plus_for_space, token_first)| {
        let sealer = sealer();
        let issue = |id: &str, user: Option<&SignedInUser>, at: Timestamp| {
            session::form_token(&sealer, id, user, at, LIFETIME)
        };
        let genuine = issue(&subscription_id, user.as_ref(), now());
        let form_token = match &token {
            Token::Genuine => genuine.clone(),
            Token::Changed(at, c, kind) => {
                let mut chars: Vec<char> = genuine.chars().collect();
                let at = at % (chars.len() + 1);
                match kind {
                    0 if at < chars.len() => chars[at] = *c,
                    1 => chars.insert(at, *c),
                    _ if at < chars.len() => drop(chars.remove(at)),
                    _ => chars.push(*c),
                }
                chars.into_iter().collect()
            }
            Token::OtherSubscription => issue(&format!("{subscription_id}x"), user.as_ref(), now()),
            Token::OtherUser => {
                let other = SignedInUser {
                    object_id: "someone-else".into(),
                    tenant_id: "t".into(),
                    name: None,
                    email: None,
                };
                issue(&subscription_id, Some(&other), now())
            }
            Token::Expired => issue(&subscription_id, user.as_ref(), now() - chrono::Duration::seconds(1800)),
            Token::Forged => {
                let forger = Sealer::new(&[1u8; 32]).expect("a key");
                session::form_token(&forger, &subscription_id, user.as_ref(), now(), LIFETIME)
            }
        };
        let mut fields: Vec<(String, String)> =
            extra.into_iter().filter(|(n, _)| n != "subscription_id" && n != "form_token").collect();
        let ours = [
            ("subscription_id".to_owned(), subscription_id.clone()),
            ("form_token".to_owned(), form_token.clone()),
        ];
        let ours: Vec<_> =
            if token_first { ours.into_iter().rev().collect() } else { ours.into_iter().collect() };
        fields.splice(fields.len() / 2..fields.len() / 2, ours);
        let cookie = user
            .as_ref()
            .map(|u| format!("theme=dark; {SESSION_COOKIE}={}", session::seal_session(&sealer, u, now())));

        let (status, refused) = fixture.post(encode(&fields, plus_for_space), cookie.as_deref());
        let genuine = form_token == genuine || form_token.trim() == genuine;
        if genuine && !subscription_id.trim().is_empty() {
            prop_assert!(!refused, "{status}: a genuine confirmation is refused");
            prop_assert!(fixture.went_on(), "the activation goes on");
        } else {
            prop_assert!(refused, "{status}: {token:?} accepted");
            prop_assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN, "{status}");
            prop_assert!(!fixture.went_on());
        }
        Ok(())
    });
}

#[test]
fn oversized_forms_are_refused() {
    let fixture = Fixture::new();
    check(50, 16 * 1024 + 1..64 * 1024usize, |size| {
        let (status, _) = fixture.post(vec![b'a'; size], None);
        prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        prop_assert!(!fixture.went_on());
        Ok(())
    });
}

/// The publisher's tooling route: only with IAM, a subscription id in the path, JSON in the answer.
#[test]
fn the_admin_route_needs_iam_and_a_subscription_id() {
    let fixture = Fixture::new();
    let id = "[A-Za-z0-9._~!$&'()*+,;=:@%-]{0,40}";
    check(1000, (id, any::<bool>(), "[a-z_=&]{0,20}"), |(id, iam, body)| {
        let path = format!("/admin/subscriptions/{id}/activate");
        let (status, text) = fixture.send(&path, body.into_bytes(), None, iam);
        if iam && SubscriptionId::parse(&id).is_some() {
            let json: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
            let code = json["error"]["code"].as_str().unwrap_or_default();
            let known = ["SubscriptionNotFound", "NotActivatable", "Unavailable", "MarketplaceRefused"];
            prop_assert!(known.contains(&code), "{status} {json}");
            prop_assert!(fixture.went_on());
        } else {
            // Not the tooling: a confirmation form, and this body is none.
            prop_assert!(text.contains("This confirmation has expired"), "{status}");
            prop_assert!(!fixture.went_on());
        }
        Ok(())
    });
}
