//! The trigger payloads in `events/` (the files `sam local invoke` and `cargo lambda invoke` use),
//! handed to the handlers as Lambda would, against the emulator and DynamoDB Local.

use fulfillment::domain::{SubscriptionId, SubscriptionStatus};
use fulfillment::reconcile::Outcome;
use fulfillment::store::SubscriptionStore;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use local_stack::LocalStack;
use marketplace_emulator::Purchase;

/// The purchase the event files name.
const TOKEN: &str = "Qm9vdHN0cmFw+TG9jYWwvVG9rZW4=/Rml4ZWQrUHVyY2hhc2U=+c3Vic2NyaXB0aW9uL2V2ZW50cw==";
const SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";
const TENANT: &str = "7e7a0000-0000-4000-8000-00000007e7a0";

fn event(name: &str) -> Request {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&json)
        .unwrap_or_else(|e| panic!("{path} is not an API Gateway event: {e}"))
}

fn text(response: &Response<Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

/// A stack whose emulator holds the purchase the event files name.
async fn stack() -> LocalStack {
    let stack = LocalStack::start(integration_tests::stack_options()).await.expect("starts");
    stack
        .emulator
        .purchase(Purchase {
            subscription_id: Some(SUBSCRIPTION.into()),
            token: Some(TOKEN.into()),
            ..Purchase::plan("team-monthly").quantity(6).tenant(TENANT)
        })
        .await;
    stack
}

#[tokio::test]
async fn the_landing_events_get_their_pages() {
    let stack = stack().await;
    let landing = &stack.functions.landing;
    for (file, status, needle) in [
        ("landing/purchase.json", StatusCode::OK, "Confirm your subscription"),
        ("landing/token-unencoded.json", StatusCode::OK, "Confirm your subscription"),
        ("landing/token-plus-as-space.json", StatusCode::OK, "Confirm your subscription"),
        ("landing/token-double-encoded.json", StatusCode::BAD_REQUEST, "This link is no longer valid"),
        ("landing/token-missing.json", StatusCode::BAD_REQUEST, "This link is no longer valid"),
        ("landing/token-junk-4kb.json", StatusCode::BAD_REQUEST, "This link is no longer valid"),
        ("landing/post.json", StatusCode::METHOD_NOT_ALLOWED, "only answers GET"),
    ] {
        let response = landing.handle(event(file)).await;
        assert_eq!(response.status(), status, "{file}: {}", text(&response));
        assert!(text(&response).contains(needle), "{file}: {}", text(&response));
    }
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    let record = stack.store.get(&id).await.expect("read").expect("recorded by the landing events");
    assert_eq!(record.status(), SubscriptionStatus::PendingFulfillmentStart);
}

#[tokio::test]
async fn the_activate_events_get_their_answers() {
    let stack = stack().await;
    let activate = &stack.functions.activate;
    for (file, status, needle) in [
        ("activate/get.json", StatusCode::METHOD_NOT_ALLOWED, "Activation is a POST"),
        ("activate/form-empty.json", StatusCode::BAD_REQUEST, "confirmation has expired"),
        ("activate/form-forged.json", StatusCode::FORBIDDEN, "confirmation has expired"),
        // The admin route without IAM authorization is treated as a form, and has none.
        ("activate/admin-without-iam.json", StatusCode::BAD_REQUEST, "confirmation has expired"),
    ] {
        let response = activate.handle(event(file)).await;
        assert_eq!(response.status(), status, "{file}: {}", text(&response));
        assert!(text(&response).contains(needle), "{file}: {}", text(&response));
    }
    assert_eq!(
        stack.emulator.subscription(SUBSCRIPTION).await.expect("exists")["saasSubscriptionStatus"],
        "PendingFulfillmentStart"
    );

    let response = activate.handle(event("activate/admin.json")).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let answer: serde_json::Value = serde_json::from_str(&text(&response)).expect("JSON for tooling");
    assert_eq!(answer["status"], "Subscribed");
    assert_eq!(
        (answer["planId"].as_str(), answer["quantity"].as_u64(), answer["activatedNow"].as_bool()),
        (Some("team-monthly"), Some(6), Some(true))
    );
    let again = activate.handle(event("activate/admin.json")).await;
    let answer: serde_json::Value = serde_json::from_str(&text(&again)).expect("JSON");
    assert_eq!(answer["activatedNow"], false, "idempotent");
}

/// A webhook event file, with a token freshly signed by the emulator in place of the placeholder.
fn signed(stack: &LocalStack, name: &str) -> Request {
    let mut request = event(name);
    if request.headers().contains_key("authorization") {
        let jwt = stack.emulator.sign_jwt(&stack.emulator.webhook_claims());
        request.headers_mut().insert("authorization", format!("Bearer {jwt}").parse().expect("header"));
    }
    request
}

#[tokio::test]
async fn the_webhook_events_get_their_answers() {
    let stack = stack().await;
    let activated = stack.functions.activate.handle(event("activate/admin.json")).await;
    assert_eq!(activated.status(), StatusCode::OK, "{}", text(&activated));
    let webhook = &stack.functions.webhook;
    for (file, status, needle) in [
        ("webhook/bad-get.json", StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        ("webhook/bad-no-authorization.json", StatusCode::UNAUTHORIZED, "Unauthorized"),
        ("webhook/bad-not-json.json", StatusCode::BAD_REQUEST, "InvalidPayload"),
        ("webhook/bad-missing-ids.json", StatusCode::BAD_REQUEST, "InvalidPayload"),
        // Microsoft knows none of these operations and answers 400, as the real service does: a plan
        // or seat change it does not confirm changes nothing and is asked for again (a 400 may pass)…
        ("webhook/change-quantity-customer.json", StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        ("webhook/change-plan-customer.json", StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        ("webhook/change-plan-publisher.json", StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        // …while notifications are checked against the subscription itself.
        ("webhook/suspend.json", StatusCode::OK, "recorded"),
        ("webhook/reinstate-minimal.json", StatusCode::OK, "recorded"),
        ("webhook/renew.json", StatusCode::OK, "recorded"),
        ("webhook/subscribe.json", StatusCode::OK, "recorded"),
        ("webhook/transfer-unknown-action.json", StatusCode::OK, "recorded"),
        ("webhook/unsubscribe.json", StatusCode::OK, "recorded"),
        ("webhook/suspend.json", StatusCode::OK, "duplicate"),
    ] {
        let response = webhook.handle(signed(&stack, file)).await;
        assert_eq!(response.status(), status, "{file}: {}", text(&response));
        assert!(text(&response).contains(needle), "{file}: {}", text(&response));
    }
    // Microsoft never suspended or cancelled it: our record stays equal to Microsoft's.
    let id = SubscriptionId::parse(SUBSCRIPTION).expect("id");
    let record = stack.store.get(&id).await.expect("read").expect("recorded");
    assert_eq!(record.status(), SubscriptionStatus::Subscribed);
    let notifications = stack
        .store
        .history(&id)
        .await
        .expect("history")
        .into_iter()
        .filter(|h| h.source == fulfillment::store::ChangeSource::Webhook)
        .count();
    assert_eq!(notifications, 6, "each notification recorded once");
}

#[tokio::test]
async fn the_admin_api_events_get_their_answers() {
    let stack = stack().await;
    let activated = stack.functions.activate.handle(event("activate/admin.json")).await;
    assert_eq!(activated.status(), StatusCode::OK, "{}", text(&activated));
    let api = &stack.functions.subscriptions;
    for (file, status, needle) in [
        ("subscriptions/bad-without-iam.json", StatusCode::FORBIDDEN, "Forbidden"),
        ("subscriptions/list.json", StatusCode::OK, SUBSCRIPTION),
        ("subscriptions/get.json", StatusCode::OK, "\"history\""),
        ("subscriptions/entitlement.json", StatusCode::OK, "\"accessAllowed\":true"),
        ("subscriptions/tenant-entitlements.json", StatusCode::OK, SUBSCRIPTION),
        ("subscriptions/bad-unknown-subscription.json", StatusCode::NOT_FOUND, "SubscriptionNotFound"),
        ("subscriptions/bad-both-plan-and-quantity.json", StatusCode::BAD_REQUEST, "InvalidRequest"),
        ("subscriptions/change-quantity.json", StatusCode::ACCEPTED, "pendingOperation"),
        ("subscriptions/change-plan.json", StatusCode::CONFLICT, "OperationPending"),
        ("subscriptions/cancel.json", StatusCode::CONFLICT, "OperationPending"),
    ] {
        let response = api.handle(event(file)).await;
        assert_eq!(response.status(), status, "{file}: {}", text(&response));
        assert!(text(&response).contains(needle), "{file}: {}", text(&response));
    }
}

#[tokio::test]
async fn the_scheduled_event_runs_a_reconciliation() {
    let stack = stack().await;
    let path = format!("{}/../../events/reconcile/scheduled.json", env!("CARGO_MANIFEST_DIR"));
    let scheduled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("JSON");
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let report = stack.functions.reconcile.handle(&scheduled, deadline).await.expect("a complete run");
    assert_eq!(report.outcome, Outcome::Finished, "{report:?}");
    let pass = report.pass.expect("the pass");
    assert_eq!(
        (pass.seen, pass.added, pass.errors, pass.complete),
        (1, 1, 0, true),
        "the purchase is recorded: {pass:?}"
    );
    // The local stack has no schedule: every tick starts a pass, which now finds nothing to do.
    let again = stack.functions.reconcile.handle(&scheduled, deadline).await.expect("a run");
    let again = again.pass.expect("the pass");
    assert_eq!((again.added, again.changed, again.unchanged), (0, 0, 1), "{again:?}");
}
