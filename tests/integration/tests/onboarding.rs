//! Landing and activation end to end: the functions (in one local process, as `scripts/run` runs
//! them) against the Marketplace emulator and DynamoDB Local.

use std::time::Duration;

use fulfillment::domain::{SubscriptionId, SubscriptionStatus};
use fulfillment::store::{ChangeSource, Outcome, SubscriptionStore};
use integration_tests::flows::{lifecycle_events, types};
use integration_tests::stack_options;
use local_stack::{LocalStack, Options};
use marketplace_emulator::{EmulatorConfig, Endpoint, Fault, Purchase};
use reqwest::StatusCode;

async fn stack() -> LocalStack {
    stack_with(stack_options()).await
}

async fn stack_with(options: Options) -> LocalStack {
    LocalStack::start(options).await.expect("the local stack starts")
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// GETs `url` and returns the status and the page.
async fn get(url: &str) -> (StatusCode, String) {
    let response = browser().get(url).send().await.expect("an answer");
    (response.status(), response.text().await.expect("a page"))
}

/// The value of a hidden form field in `page`.
fn field(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    Some(page[start..start + page[start..].find('"')?].to_owned())
}

async fn confirm(stack: &LocalStack, subscription_id: &str, form_token: &str) -> (StatusCode, String) {
    let response = browser()
        .post(format!("{}/activate", stack.url))
        .form(&[("subscription_id", subscription_id), ("form_token", form_token)])
        .send()
        .await
        .expect("an answer");
    (response.status(), response.text().await.expect("a page"))
}

fn id(raw: &str) -> SubscriptionId {
    SubscriptionId::parse(raw).expect("id")
}

#[tokio::test]
async fn a_purchase_lands_is_confirmed_and_activated() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(12)).await;

    let (status, page) = get(&stack.landing_url(&bought.token)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Confirm your subscription"));
    assert!(page.contains("Team (monthly)") && page.contains("<dd>12</dd>"), "plan and seats shown: {page}");
    let pending =
        stack.store.get(&id(&bought.subscription_id)).await.expect("read").expect("recorded on landing");
    assert_eq!(pending.status(), SubscriptionStatus::PendingFulfillmentStart);

    let form_token = field(&page, "form_token").expect("a confirmation form");
    assert_eq!(field(&page, "subscription_id").as_deref(), Some(bought.subscription_id.as_str()));
    let (status, page) = confirm(&stack, &bought.subscription_id, &form_token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Your subscription is now active"), "{page}");

    let record = stack.store.get(&id(&bought.subscription_id)).await.expect("read").expect("recorded");
    assert_eq!(record.status(), SubscriptionStatus::Subscribed);
    assert_eq!(record.subscription.plan_id.as_ref().map(|p| p.as_str()), Some("team-monthly"));
    assert_eq!(record.subscription.quantity, Some(12));
    assert!(
        record.subscription.term.as_ref().is_some_and(|t| t.start_date.is_some()),
        "the term Microsoft set"
    );
    let history = stack.store.history(&id(&bought.subscription_id)).await.expect("history");
    let steps: Vec<_> = history.iter().map(|h| (h.source.clone(), h.outcome.clone())).collect();
    assert_eq!(
        steps,
        [(ChangeSource::Landing, Outcome::Applied), (ChangeSource::Activation, Outcome::Applied)]
    );
    assert_eq!(history[1].to.as_ref().and_then(|s| s.status.clone()), Some(SubscriptionStatus::Subscribed));

    let at_microsoft = stack.emulator.subscription(&bought.subscription_id).await.expect("exists");
    assert_eq!(at_microsoft["saasSubscriptionStatus"], "Subscribed");

    let events = lifecycle_events(&stack, &bought.subscription_id).await;
    assert_eq!(types(&events), ["SubscriptionPurchased", "SubscriptionActivated"], "{events:#?}");
    assert_eq!(
        (events[0]["source"].as_str(), events[1]["source"].as_str()),
        (Some("landing"), Some("activation"))
    );
    assert_eq!(events[1]["statusBefore"], "PendingFulfillmentStart");
    assert_eq!((events[1]["planId"].as_str(), events[1]["seats"].as_u64()), (Some("team-monthly"), Some(12)));
    assert_eq!(events[1]["beneficiaryTenantId"], at_microsoft["beneficiary"]["tenantId"]);
    assert_eq!(events[1]["purchaserTenantId"], at_microsoft["purchaser"]["tenantId"]);
}

#[tokio::test]
async fn a_replayed_form_changes_nothing_more() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(3)).await;
    let (_, page) = get(&stack.landing_url(&bought.token)).await;
    let form_token = field(&page, "form_token").expect("form");
    assert!(confirm(&stack, &bought.subscription_id, &form_token).await.1.contains("now active"));
    let activations =
        || async { stack.emulator.requests().await.iter().filter(|r| r.path.ends_with("/activate")).count() };
    let before =
        (activations().await, stack.store.history(&id(&bought.subscription_id)).await.expect("h").len());

    let (status, page) = confirm(&stack, &bought.subscription_id, &form_token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("was already active"), "{page}");
    let after =
        (activations().await, stack.store.history(&id(&bought.subscription_id)).await.expect("h").len());
    assert_eq!(after, before, "no second Activate call, no second history entry");
}

#[tokio::test]
async fn forged_expired_and_misbound_forms_are_refused() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(3)).await;
    let other = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(4)).await;
    let (_, page) = get(&stack.landing_url(&bought.token)).await;
    let form_token = field(&page, "form_token").expect("form");

    let mut tampered = form_token.clone();
    tampered.insert(5, 'x');
    for (subscription, token) in [
        (bought.subscription_id.as_str(), tampered.as_str()),
        (bought.subscription_id.as_str(), "eyJwIjoiYWN0aXZhdGUtZm9ybSJ9.Zm9yZ2Vk"),
        (bought.subscription_id.as_str(), ""),
        (other.subscription_id.as_str(), form_token.as_str()),
    ] {
        let (status, page) = confirm(&stack, subscription, token).await;
        assert!(status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST, "{status}");
        assert!(page.contains("confirmation has expired"), "{page}");
    }
    // An expired form: sealed with the stack's key, but an hour ago.
    let web = stack.environment.web().expect("settings");
    let old = chrono::Utc::now() - chrono::Duration::hours(1);
    let expired = fulfillment::web::session::form_token(
        &web.sealer,
        &bought.subscription_id,
        None,
        old,
        Duration::from_secs(1800),
    );
    assert_eq!(confirm(&stack, &bought.subscription_id, &expired).await.0, StatusCode::FORBIDDEN);

    let activations =
        stack.emulator.requests().await.iter().filter(|r| r.path.ends_with("/activate")).count();
    assert_eq!(activations, 0, "nothing reached Microsoft");
    let record = stack.store.get(&id(&bought.subscription_id)).await.expect("read").expect("landed");
    assert_eq!(record.status(), SubscriptionStatus::PendingFulfillmentStart);
}

#[tokio::test]
async fn an_unsubscribed_subscription_is_explained_and_cannot_be_activated() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(3)).await;
    let (_, page) = get(&stack.landing_url(&bought.token)).await;
    let form_token = field(&page, "form_token").expect("form");
    stack.emulator.unsubscribe(&bought.subscription_id).await.expect("cancelled before activation");

    let (status, page) = confirm(&stack, &bought.subscription_id, &form_token).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("cannot be activated") && page.contains("cancelled"), "{page}");
    let (status, page) =
        get(&stack.landing_url(&stack.emulator.landing_token(&bought.subscription_id).await)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("This subscription was cancelled") && !page.contains("<form"), "{page}");
    let record = stack.store.get(&id(&bought.subscription_id)).await.expect("read").expect("recorded");
    assert_eq!(record.status(), SubscriptionStatus::Unsubscribed);
}

#[tokio::test]
async fn every_status_has_its_page() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(3)).await;
    let (_, page) = get(&stack.landing_url(&bought.token)).await;
    confirm(&stack, &bought.subscription_id, &field(&page, "form_token").expect("form")).await;

    let visit = || async {
        get(&stack.landing_url(&stack.emulator.landing_token(&bought.subscription_id).await)).await.1
    };
    let page = visit().await;
    assert!(page.contains("Your subscription is active") && !page.contains("<form"), "{page}");
    stack.emulator.suspend(&bought.subscription_id).await.expect("suspended");
    let page = visit().await;
    assert!(page.contains("Your subscription is suspended") && page.contains("data is kept"), "{page}");
    let record = stack.store.get(&id(&bought.subscription_id)).await.expect("read").expect("recorded");
    assert_eq!(record.status(), SubscriptionStatus::Suspended, "the visit recorded what Microsoft says");
}

#[tokio::test]
async fn token_encodings_are_decoded_exactly_once() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(2)).await;
    let token = &bought.token;
    assert!(token.contains('+') && token.contains('/'));
    let base = format!("{}/landing?token=", stack.url);
    let encoded = url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>();
    let cases = [
        ("percent-encoded (%2B, %2F)", format!("{base}{}", encoded.replace('+', "%20"))),
        ("not encoded at all", format!("{base}{token}")),
        ("+ turned into a space", format!("{base}{}", token.replace('+', "%20"))),
    ];
    for (name, url) in cases {
        let (status, page) = get(&url).await;
        assert_eq!(status, StatusCode::OK, "{name}: {page}");
        assert!(page.contains("Confirm your subscription"), "{name}");
    }
}

#[tokio::test]
async fn bad_tokens_get_the_reopen_guidance() {
    let stack = stack_with(Options {
        emulator: EmulatorConfig {
            purchase_token_ttl: Duration::from_millis(300),
            ..EmulatorConfig::default()
        },
        ..stack_options()
    })
    .await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(2)).await;
    let encoded = url::form_urlencoded::byte_serialize(bought.token.as_bytes()).collect::<String>();
    let double = url::form_urlencoded::byte_serialize(encoded.as_bytes()).collect::<String>();
    let base = format!("{}/landing", stack.url);
    let junk = "A%2Bz".repeat(1024);
    let cases = [
        ("double-encoded", format!("{base}?token={double}")),
        ("unknown", format!("{base}?token=bm90LWEtdG9rZW4%2B%2F")),
        ("missing", base.clone()),
        ("empty", format!("{base}?token=")),
        ("4 KB of junk", format!("{base}?token={junk}")),
    ];
    for (name, url) in cases {
        let (status, page) = get(&url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert!(
            page.contains("This link is no longer valid") && page.contains("Microsoft 365 admin"),
            "{name}: {page}"
        );
    }
    // Expiry is a matter of time passing.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, page) = get(&stack.landing_url(&bought.token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "expired");
    assert!(page.contains("no longer valid"));
    assert!(stack.store.get(&id(&bought.subscription_id)).await.expect("read").is_none(), "nothing recorded");
}

#[tokio::test]
async fn a_token_no_header_can_carry_is_refused_before_any_call() {
    let stack = stack().await;
    for (name, token) in [("a newline", "abc%0Adef"), ("a NUL", "abc%00def"), ("non-ASCII", "ab%C3%A9c")] {
        let (status, page) = get(&format!("{}/landing?token={token}", stack.url)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {page}");
        assert!(page.contains("This link is no longer valid"), "{name}: {page}");
    }
    let calls = stack.emulator.requests().await.into_iter().filter(|r| r.path.contains("resolve")).count();
    assert_eq!(calls, 0, "Microsoft was not asked");
}

#[tokio::test]
async fn microsoft_being_unreachable_gets_a_retry_page_and_loses_nothing() {
    let stack = stack().await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(2)).await;
    stack
        .emulator
        .inject(Endpoint::Resolve, Fault::Status { status: 503, retry_after: None, body: None }, 10)
        .await;
    let (status, page) = get(&stack.landing_url(&bought.token)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("Please try again") && page.contains("Try again"), "{page}");
    assert!(!page.contains("Error {") && !page.contains("panicked"));

    stack.emulator.clear_faults().await;
    let (status, page) = get(&stack.landing_url(&bought.token)).await;
    assert_eq!(status, StatusCode::OK, "the same link works once Microsoft is back: {page}");

    stack.emulator.inject(Endpoint::Activate, Fault::DropConnection, 1).await;
    let (status, page) =
        confirm(&stack, &bought.subscription_id, &field(&page, "form_token").expect("form")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    let retry = field(&page, "form_token").expect("a fresh form to confirm again");
    let (status, page) = confirm(&stack, &bought.subscription_id, &retry).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let record = stack.store.get(&id(&bought.subscription_id)).await.expect("read").expect("recorded");
    assert_eq!(record.status(), SubscriptionStatus::Subscribed);
}

#[tokio::test]
async fn automatic_activation_activates_on_landing() {
    let stack = stack_with(Options { auto_activate: true, ..stack_options() }).await;
    let bought = stack.emulator.purchase(Purchase::plan("team-yearly").quantity(7)).await;
    let (status, page) = get(&stack.landing_url(&bought.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Your subscription is active") && !page.contains("<form"), "{page}");
    let record = stack.store.get(&id(&bought.subscription_id)).await.expect("read").expect("recorded");
    assert_eq!((record.status(), record.subscription.quantity), (SubscriptionStatus::Subscribed, Some(7)));
}

#[tokio::test]
async fn a_reseller_purchase_names_purchaser_and_beneficiary() {
    let stack = stack().await;
    let bought = stack
        .emulator
        .purchase(Purchase::plan("team-monthly").quantity(5).reseller("c5b00000-0000-4000-8000-0000000000c5"))
        .await;
    let (status, page) = get(&stack.landing_url(&bought.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("bought on behalf of another organisation"), "{page}");
    assert!(page.contains("c5b00000-0000-4000-8000-0000000000c5"));
}

#[tokio::test]
async fn the_landing_page_only_answers_get() {
    let stack = stack().await;
    let response = browser().post(format!("{}/landing", stack.url)).send().await.expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = browser().get(format!("{}/activate", stack.url)).send().await.expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}
