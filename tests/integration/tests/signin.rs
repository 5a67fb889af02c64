//! Entra ID sign-in before the landing page (authorization code flow with PKCE, `state`, `nonce`),
//! with the emulator as the identity provider.

use std::collections::BTreeMap;

use local_stack::{LocalStack, Options};
use marketplace_emulator::{IdTokenFault, Purchase};
use reqwest::StatusCode;

async fn stack() -> LocalStack {
    LocalStack::start(Options { signin: true, ..integration_tests::stack_options() })
        .await
        .expect("the local stack starts")
}

/// A browser's cookie jar and its GETs, redirects taken one at a time.
#[derive(Default)]
struct Visitor {
    cookies: BTreeMap<String, String>,
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    page: String,
    set_cookies: Vec<String>,
}

impl Visitor {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let header = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let response = request.header("cookie", header).send().await.expect("an answer");
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for cookie in &set_cookies {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Answer {
            status: response.status(),
            location: response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned),
            set_cookies,
            page: response.text().await.expect("a body"),
        }
    }

    async fn get(&mut self, url: &str) -> Answer {
        self.send(client().get(url)).await
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Lands, goes to the identity provider and comes back with the code: returns the callback's answer.
async fn sign_in(stack: &LocalStack, visitor: &mut Visitor, token: &str) -> Answer {
    let first = visitor.get(&stack.landing_url(token)).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "sent to sign in first: {}", first.page);
    let authorize = first.location.expect("to the authorize endpoint");
    assert!(authorize.starts_with(&stack.emulator.authority()), "{authorize}");
    for parameter in
        ["code_challenge=", "code_challenge_method=S256", "state=", "nonce=", "response_type=code"]
    {
        assert!(authorize.contains(parameter), "{parameter} in {authorize}");
    }
    assert!(first.set_cookies.iter().any(|c| c.starts_with("landing_signin=") && c.contains("HttpOnly")));
    let provider = visitor.get(&authorize).await;
    let callback = provider.location.expect("the provider sends the browser back");
    assert!(callback.starts_with(&format!("{}/landing?", stack.url)), "{callback}");
    visitor.get(&callback).await
}

#[tokio::test]
async fn the_visitor_signs_in_then_sees_and_confirms_the_purchase() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(4)).await;
    let mut visitor = Visitor::default();

    let back = sign_in(&stack, &mut visitor, &bought.token).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.page);
    let landing = back.location.expect("back to the landing page with the token");
    assert!(
        visitor.cookies.contains_key("landing_session") && !visitor.cookies.contains_key("landing_signin")
    );

    let page = visitor.get(&landing).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.page);
    let user = stack.emulator.signin_user().await;
    assert!(page.page.contains(&format!("Signed in as {}", user.name)), "{}", page.page);
    assert!(page.page.contains("Confirm your subscription"));

    let marker = "name=\"form_token\" value=\"";
    let start = page.page.find(marker).expect("a form") + marker.len();
    let form_token = page.page[start..].split('"').next().expect("token").to_owned();
    let form = [("subscription_id", bought.subscription_id.as_str()), ("form_token", form_token.as_str())];
    // The form is bound to the signed-in user: without the session it is refused.
    let anonymous =
        Visitor::default().send(client().post(format!("{}/activate", stack.url)).form(&form)).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    let confirmed = visitor.send(client().post(format!("{}/activate", stack.url)).form(&form)).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.page);
    assert!(confirmed.page.contains("now active"));
}

#[tokio::test]
async fn every_defective_id_token_is_refused() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(4)).await;
    for fault in [
        IdTokenFault::WrongNonce,
        IdTokenFault::WrongAudience,
        IdTokenFault::WrongIssuer,
        IdTokenFault::ForeignIssuer,
        IdTokenFault::Expired,
        IdTokenFault::NotYetValid,
        IdTokenFault::UnpublishedKey,
        IdTokenFault::AlgNone,
        IdTokenFault::UnknownKid,
    ] {
        stack.emulator.set_id_token_fault(Some(fault)).await;
        let mut visitor = Visitor::default();
        let back = sign_in(&stack, &mut visitor, &bought.token).await;
        assert_eq!(back.status, StatusCode::UNAUTHORIZED, "{fault:?}: {}", back.page);
        assert!(back.page.contains("Sign-in did not complete"), "{fault:?}");
        assert!(!visitor.cookies.contains_key("landing_session"), "{fault:?}: no session");
    }
    stack.emulator.set_id_token_fault(None).await;
    let mut visitor = Visitor::default();
    assert_eq!(
        sign_in(&stack, &mut visitor, &bought.token).await.status,
        StatusCode::SEE_OTHER,
        "a good token still works"
    );
}

#[tokio::test]
async fn a_callback_without_the_matching_state_is_refused() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(4)).await;
    let mut visitor = Visitor::default();
    let first = visitor.get(&stack.landing_url(&bought.token)).await;
    let provider = visitor.get(&first.location.expect("authorize")).await;
    let callback = provider.location.expect("callback");
    let forged = callback.replace("state=", "state=x");
    let answer = visitor.get(&forged).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.page);
    // A callback in another browser (no sign-in cookie) fails the same way.
    let answer = Visitor::default().get(&callback).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(stack.emulator.signins().await.iter().all(|s| !s.redeemed), "no code was redeemed");
}

#[tokio::test]
async fn a_refusal_from_the_identity_provider_is_explained() {
    let stack = stack().await;
    let answer = Visitor::default()
        .get(&format!(
            "{}/landing?error=access_denied&error_description=The+user+cancelled&state=x",
            stack.url
        ))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.page.contains("Sign-in did not complete"));
}
