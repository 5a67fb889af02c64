//! The webhook end to end: the emulator's signed deliveries into the function (in the local
//! stack), against DynamoDB Local; every action, both sources, both policy answers, duplicates,
//! reordering, replays and faults.

use std::time::Duration;

use fulfillment::domain::{OperationId, PlanId, SubscriptionId, SubscriptionStatus};
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi, RetryPolicy};
use fulfillment::store::{ChangeSource, HistoryEntry, Outcome, RejectedDelivery, SubscriptionStore};
use fulfillment::webhook::ChangePolicy;
use integration_tests::flows::buy_and_activate;
use integration_tests::flows::{delivered, history, record};
use integration_tests::flows::{lifecycle_events, types};
use integration_tests::stack_options;
use local_stack::{LocalStack, Options};
use marketplace_emulator::{EmulatorConfig, Endpoint, Fault, Purchase, WebhookFaults};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

async fn stack_with(options: Options) -> LocalStack {
    LocalStack::start(options).await.expect("the local stack starts")
}

fn options() -> Options {
    Options {
        emulator: EmulatorConfig {
            ack_window: Duration::from_secs(30),
            operation_delay: Duration::from_millis(200),
            ..EmulatorConfig::default()
        },
        ..stack_options()
    }
}

fn id(raw: &str) -> SubscriptionId {
    SubscriptionId::parse(raw).expect("id")
}

/// POSTs a delivery to the stack's webhook as Microsoft does.
async fn post(stack: &LocalStack, payload: &Value, jwt: Option<&str>) -> (StatusCode, Value) {
    post_to(format!("{}/webhook", stack.url), payload.clone(), jwt.map(str::to_owned)).await
}

async fn post_to(url: String, payload: Value, jwt: Option<String>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().post(url).json(&payload);
    if let Some(jwt) = jwt {
        request = request.bearer_auth(jwt);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A fresh, valid token from Microsoft's (the emulator's) side.
fn token(stack: &LocalStack) -> String {
    stack.emulator.sign_jwt(&stack.emulator.webhook_claims())
}

// Customer-initiated changes --------------------------------------------------------------------

#[tokio::test]
async fn a_customer_seat_change_is_accepted_applied_and_acknowledged_in_time() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;
    let change = stack.emulator.change_quantity(&sub, 25).await.expect("customer change");

    let done = stack.emulator.wait_operation(&sub, &change.operation_id, WAIT).await.expect("decided");
    assert_eq!(done.status, "Succeeded");
    assert_eq!(delivered(&stack, &change.operation_id).await.status, Some(200));
    let patched = stack.emulator.requests().await.into_iter().any(|r| {
        r.method == "PATCH"
            && r.path.ends_with(&change.operation_id)
            && r.body.as_ref().is_some_and(|b| b.to_string().contains("Success"))
    });
    assert!(patched, "decided by our PATCH Success, well inside the 30 s the emulator would wait");

    let record = record(&stack, &sub).await;
    assert_eq!(record.subscription.quantity, Some(25));
    let last = history(&stack, &sub).await.pop().expect("history");
    assert_eq!(
        (last.source, last.outcome, last.operation_id.as_str()),
        (ChangeSource::Webhook, Outcome::Applied, change.operation_id.as_str())
    );
    assert_eq!((last.from.and_then(|s| s.quantity), last.to.and_then(|s| s.quantity)), (Some(10), Some(25)));

    let events = lifecycle_events(&stack, &sub).await;
    assert_eq!(types(&events), ["SubscriptionPurchased", "SubscriptionActivated", "SeatsChanged"]);
    assert_eq!((events[2]["seatsBefore"].as_u64(), events[2]["seats"].as_u64()), (Some(10), Some(25)));
    assert_eq!(events[2]["operationId"], change.operation_id.as_str());
    assert_eq!(events[2]["source"], "webhook");
}

// The start's warm-up ---------------------------------------------------------------------------

/// The webhook gets its token (and keys, and connections) as it starts: its first delivery needs
/// no token from Entra, even when Entra has just stopped issuing them.
#[tokio::test]
async fn the_first_delivery_uses_the_token_the_start_fetched() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;
    stack
        .emulator
        .inject(Endpoint::Token, Fault::Status { status: 503, retry_after: None, body: None }, 1000)
        .await;
    let fetched = || stack.functions.webhook.webhook.marketplace().tokens().fetches();
    assert_eq!(fetched(), 1, "the webhook fetched its token as it started");

    let change = stack.emulator.change_quantity(&sub, 12).await.expect("customer change");
    let done = stack.emulator.wait_operation(&sub, &change.operation_id, WAIT).await.expect("decided");
    assert_eq!(done.status, "Succeeded");
    assert_eq!(delivered(&stack, &change.operation_id).await.status, Some(200), "at the first delivery");
    assert_eq!(fetched(), 1, "no token fetched for the delivery");
    assert_eq!(record(&stack, &sub).await.subscription.quantity, Some(12));
}

/// Signing keys that cannot be fetched at start do not stop the start from getting its token.
#[tokio::test]
async fn a_start_whose_keys_fail_still_fetches_its_token() {
    let stack = stack_with(options()).await;
    let no_keys = integration_tests::changed_settings(
        &stack.environment,
        &[],
        &[("WEBHOOK_JWKS_URL", "http://127.0.0.1:9/keys")],
    );
    let function = webhook::Deployed::from_environment(no_keys).await.expect("the webhook starts");
    assert_eq!(function.webhook.marketplace().tokens().fetches(), 1, "the token was fetched at start");
}

/// A warm-up that cannot be done (every service hangs) does not stop or hold up the start
/// beyond its budget: the first request does the work, as without it.
#[tokio::test]
async fn a_start_whose_services_hang_is_not_held_up_beyond_the_warm_up_budget() {
    let stack = stack_with(options()).await;
    // Accepts connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", hung.local_addr().expect("address"));
    let _held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            sockets.push(socket);
        }
    });
    let hanging = integration_tests::changed_settings(
        &stack.environment,
        &[],
        &[
            ("ENTRA_AUTHORITY", url.as_str()),
            ("MARKETPLACE_API_BASE", &format!("{url}/api")),
            ("WEBHOOK_JWKS_URL", &format!("{url}/keys")),
            ("DYNAMODB_ENDPOINT", url.as_str()),
        ],
    );
    // Each step would give up on its own after 2 to 5 s: the budget must cut them off before.
    let bound = fulfillment::wiring::WARM_UP_BUDGET + Duration::from_secs(1);
    let begun = std::time::Instant::now();
    let started = tokio::time::timeout(Duration::from_secs(30), webhook::Deployed::from_environment(hanging))
        .await
        .expect("the start ends");
    assert!(started.is_ok(), "the start does not fail for its warm-up");
    assert!(begun.elapsed() < bound, "the start waited {:?}, past the budget", begun.elapsed());
}

#[tokio::test]
async fn a_customer_plan_change_is_accepted() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;
    let change = stack.emulator.change_plan(&sub, "team-yearly").await.expect("customer change");
    assert_eq!(
        stack.emulator.wait_operation(&sub, &change.operation_id, WAIT).await.expect("decided").status,
        "Succeeded"
    );
    delivered(&stack, &change.operation_id).await;
    assert_eq!(record(&stack, &sub).await.subscription.plan_id, PlanId::parse("team-yearly"));

    let events = lifecycle_events(&stack, &sub).await;
    assert_eq!(types(&events), ["SubscriptionPurchased", "SubscriptionActivated", "PlanChanged"]);
    assert_eq!(
        (events[2]["planBefore"].as_str(), events[2]["planId"].as_str()),
        (Some("team-monthly"), Some("team-yearly"))
    );
}

#[tokio::test]
async fn a_customer_change_outside_the_policy_is_rejected_and_the_old_seats_kept() {
    let policy = ChangePolicy {
        max_seats: Some(20),
        allowed_plans: PlanId::parse("team-monthly").map(|p| vec![p]),
        ..ChangePolicy::default()
    };
    let stack = stack_with(Options { policy, ..options() }).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;

    let seats = stack.emulator.change_quantity(&sub, 40).await.expect("customer change");
    assert_eq!(
        stack.emulator.wait_operation(&sub, &seats.operation_id, WAIT).await.expect("decided").status,
        "Failed"
    );
    assert_eq!(delivered(&stack, &seats.operation_id).await.status, Some(400), "a 4xx is the rejection");
    let plan = stack.emulator.change_plan(&sub, "team-yearly").await.expect("customer change");
    assert_eq!(
        stack.emulator.wait_operation(&sub, &plan.operation_id, WAIT).await.expect("decided").status,
        "Failed"
    );
    // Our answer comes after the durable write: wait for it before reading the history.
    assert_eq!(delivered(&stack, &plan.operation_id).await.status, Some(400));

    let at_microsoft = stack.emulator.subscription(&sub).await.expect("exists");
    assert_eq!(
        (at_microsoft["quantity"].as_u64(), at_microsoft["planId"].as_str()),
        (Some(10), Some("team-monthly"))
    );
    let ours = record(&stack, &sub).await;
    assert_eq!(
        (ours.subscription.quantity, ours.subscription.plan_id.clone()),
        (Some(10), PlanId::parse("team-monthly"))
    );
    let outcomes: Vec<Outcome> = history(&stack, &sub)
        .await
        .into_iter()
        .filter(|h| h.source == ChangeSource::Webhook)
        .map(|h| h.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Rejected, Outcome::Rejected]);
    // Within the policy the same subscription still changes.
    let fine = stack.emulator.change_quantity(&sub, 15).await.expect("customer change");
    assert_eq!(
        stack.emulator.wait_operation(&sub, &fine.operation_id, WAIT).await.expect("decided").status,
        "Succeeded"
    );
}

// Publisher-initiated changes -------------------------------------------------------------------

fn publisher(stack: &LocalStack) -> HttpMarketplaceClient {
    let mut config = stack.environment.marketplace().expect("config");
    config.retry = RetryPolicy {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    HttpMarketplaceClient::new(config).expect("client")
}

#[tokio::test]
async fn publisher_changes_are_applied_from_the_partner_webhook_without_acknowledgement() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;
    let client = publisher(&stack);

    let seats = client.change_quantity(&id(&sub), 12, &Call::new()).await.expect("202");
    assert_eq!(delivered(&stack, seats.operation_id.as_str()).await.status, Some(200));
    assert_eq!(record(&stack, &sub).await.subscription.quantity, Some(12));
    let plan = client
        .change_plan(&id(&sub), &PlanId::parse("team-yearly").expect("plan"), &Call::new())
        .await
        .expect("202");
    assert_eq!(delivered(&stack, plan.operation_id.as_str()).await.status, Some(200));
    let changed = record(&stack, &sub).await;
    assert_eq!(changed.subscription.plan_id, PlanId::parse("team-yearly"));
    // The new plan brought a new (yearly) term: the record takes Microsoft's whole view.
    let at_microsoft = stack.emulator.subscription(&sub).await.expect("exists");
    assert_eq!(
        changed.subscription.term.as_ref().and_then(|t| t.term_unit.clone()).map(|u| u.to_string()),
        at_microsoft["term"]["termUnit"].as_str().map(str::to_owned)
    );
    assert_eq!(at_microsoft["term"]["termUnit"], "P1Y");

    let acknowledgements = stack
        .emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/operations/"))
        .count();
    assert_eq!(acknowledgements, 0, "Partner operations are never PATCHed (Microsoft answers 500)");
    let cancel = client.delete_subscription(&id(&sub), &Call::new()).await.expect("202");
    assert_eq!(delivered(&stack, cancel.operation_id.as_str()).await.status, Some(200));
    let ours = record(&stack, &sub).await;
    assert_eq!(ours.status(), SubscriptionStatus::Unsubscribed);
}

// Notify-only actions ---------------------------------------------------------------------------

#[tokio::test]
async fn suspend_reinstate_renew_and_unsubscribe_follow_microsoft() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(5)).await;
    let term_before = record(&stack, &sub).await.subscription.term.clone();

    let suspend = stack.emulator.suspend(&sub).await.expect("suspended");
    assert_eq!(delivered(&stack, &suspend.operation_id).await.status, Some(200));
    let suspended = record(&stack, &sub).await;
    assert_eq!(suspended.status(), SubscriptionStatus::Suspended);
    assert_eq!(suspended.subscription.quantity, Some(5), "all data kept");

    let reinstate = stack.emulator.reinstate(&sub).await.expect("reinstated");
    assert_eq!(delivered(&stack, &reinstate.operation_id).await.status, Some(200));
    assert_eq!(record(&stack, &sub).await.status(), SubscriptionStatus::Subscribed);

    let renew = stack.emulator.renew(&sub).await.expect("renewed");
    assert_eq!(delivered(&stack, &renew.operation_id).await.status, Some(200));
    let renewed = record(&stack, &sub).await;
    assert_ne!(renewed.subscription.term, term_before, "the term was refreshed from Microsoft");
    assert_eq!(
        renewed.subscription.term.as_ref().map(|t| t.start_date),
        stack
            .emulator
            .subscription(&sub)
            .await
            .map(|s| s["term"]["startDate"].as_str().and_then(|d| d.parse().ok()))
    );

    let unsubscribe = stack.emulator.unsubscribe(&sub).await.expect("cancelled");
    assert_eq!(delivered(&stack, &unsubscribe.operation_id).await.status, Some(200));
    let gone = record(&stack, &sub).await;
    assert_eq!(gone.status(), SubscriptionStatus::Unsubscribed);
    let keep_until = gone.retain_data_until.expect("a date from which data may be deleted");
    let days = (keep_until - gone.updated_at).num_days();
    assert_eq!(days, 7);

    let entries = history(&stack, &sub).await;
    let webhook_events: Vec<String> =
        entries.iter().filter(|h| h.source == ChangeSource::Webhook).map(|h| h.event.clone()).collect();
    assert_eq!(webhook_events, ["Suspended", "Reinstated", "Renewed", "Unsubscribed"]);

    let events = lifecycle_events(&stack, &sub).await;
    assert_eq!(
        types(&events),
        [
            "SubscriptionPurchased",
            "SubscriptionActivated",
            "SubscriptionSuspended",
            "SubscriptionReinstated",
            "SubscriptionRenewed",
            "SubscriptionUnsubscribed"
        ]
    );
    assert!(events[4]["termEnd"].as_str() > events[3]["termEnd"].as_str(), "a new term: {events:#?}");
}

#[tokio::test]
async fn unknown_actions_are_recorded_and_answered_200() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(5)).await;
    for action in ["Transfer", "Subscribe", "SomethingNew"] {
        let operation = uuid::Uuid::new_v4().to_string();
        let payload = json!({ "id": operation, "subscriptionId": sub, "action": action, "timeStamp": chrono::Utc::now(), "status": "Succeeded" });
        let (status, body) = post(&stack, &payload, Some(&token(&stack))).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        let recorded = stack
            .store
            .operation(&id(&sub), &OperationId::parse(&operation).expect("id"))
            .await
            .expect("read");
        assert!(recorded.is_some(), "{action} recorded");
    }
    assert_eq!(record(&stack, &sub).await.status(), SubscriptionStatus::Subscribed);
}

// Authentication and bad input ---------------------------------------------------------------------

#[tokio::test]
async fn bad_tokens_get_401_and_change_nothing() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(5)).await;
    let payload =
        json!({ "id": uuid::Uuid::new_v4().to_string(), "subscriptionId": sub, "action": "Suspend" });
    let claims = stack.emulator.webhook_claims();
    let with = |name: &str, value: Value| {
        let mut changed = claims.clone();
        changed[name] = value;
        stack.emulator.sign_jwt(&changed)
    };
    let now = chrono::Utc::now().timestamp();
    let cases = [
        ("no header", None),
        ("not a JWT", Some("not-a-jwt".to_owned())),
        ("alg none", Some(format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims)))),
        ("wrong aud", Some(with("aud", json!("00000000-0000-0000-0000-00000000beef")))),
        ("wrong tid", Some(with("tid", json!("00000000-0000-0000-0000-00000000beef")))),
        (
            "wrong iss",
            Some(with("iss", json!("https://sts.windows.net/00000000-0000-0000-0000-00000000beef/"))),
        ),
        ("wrong appid", Some(with("appid", json!("00000000-0000-0000-0000-00000000beef")))),
        ("expired", Some(with("exp", json!(now - 3600)))),
        ("not yet valid", Some(with("nbf", json!(now + 3600)))),
    ];
    for (name, jwt) in cases {
        let (status, body) = post(&stack, &payload, jwt.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(body["error"]["code"], "Unauthorized", "{name}");
    }
    assert_eq!(record(&stack, &sub).await.status(), SubscriptionStatus::Subscribed);
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn bad_bodies_get_400_and_are_recorded_as_rejected() {
    let stack = stack_with(options()).await;
    let jwt = token(&stack);
    let big = format!("{{\"id\":\"x\",\"subscriptionId\":\"y\",\"pad\":\"{}\"}}", "a".repeat(300 * 1024));
    // Rejections are kept by the day they arrived: a run across midnight reads both days.
    let first_day = chrono::Utc::now().date_naive();
    let bodies = [
        ("not JSON", "{ this is not json".to_owned()),
        ("no id", json!({"subscriptionId": "s"}).to_string()),
        ("no subscriptionId", json!({"id": "o"}).to_string()),
        ("too large", big),
    ];
    for (name, body) in &bodies {
        let response = reqwest::Client::new()
            .post(format!("{}/webhook", stack.url))
            .bearer_auth(&jwt)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
    }
    let mut rejected: Vec<RejectedDelivery> = stack.store.rejected_on(first_day).await.expect("read");
    let last_day = chrono::Utc::now().date_naive();
    if last_day != first_day {
        rejected.extend(stack.store.rejected_on(last_day).await.expect("read"));
    }
    assert!(rejected.len() >= bodies.len(), "{rejected:?}");
    assert!(rejected.iter().any(|r| r.size > 256 * 1024 && r.excerpt.len() <= 1024));
}

// Duplicates, order, replays ---------------------------------------------------------------------

#[tokio::test]
async fn the_same_delivery_ten_times_also_concurrently_changes_things_once() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(5)).await;
    stack.emulator.webhook_faults(WebhookFaults { duplicates: 9, ..WebhookFaults::default() }).await;
    let suspend = stack.emulator.suspend(&sub).await.expect("suspended");
    stack
        .emulator
        .wait_webhooks(WAIT, |all| {
            all.iter().filter(|d| d.operation_id == suspend.operation_id && d.status.is_some()).count() == 10
        })
        .await
        .expect("ten deliveries answered");
    let original = delivered(&stack, &suspend.operation_id).await;
    // And ten more at once.
    let posts: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(post_to(
                format!("{}/webhook", stack.url),
                original.payload.clone(),
                original.jwt.clone(),
            ))
        })
        .collect();
    for post in posts {
        let (status, body) = post.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let entries: Vec<HistoryEntry> = history(&stack, &sub)
        .await
        .into_iter()
        .filter(|h| h.operation_id.as_str() == suspend.operation_id)
        .collect();
    assert_eq!(entries.len(), 1, "one history entry for twenty deliveries");
    assert_eq!(record(&stack, &sub).await.status(), SubscriptionStatus::Suspended);
    let events = lifecycle_events(&stack, &sub).await;
    assert_eq!(types(&events), ["SubscriptionPurchased", "SubscriptionActivated", "SubscriptionSuspended"]);
}

#[tokio::test]
async fn a_suspend_delivered_after_a_later_reinstate_does_not_win() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(5)).await;
    stack.emulator.webhook_faults(WebhookFaults { reorder: true, ..WebhookFaults::default() }).await;
    let suspend = stack.emulator.suspend(&sub).await.expect("suspended");
    let reinstate = stack.emulator.reinstate(&sub).await.expect("reinstated");
    assert_eq!(stack.emulator.flush_webhooks().await, 2);
    delivered(&stack, &suspend.operation_id).await;
    delivered(&stack, &reinstate.operation_id).await;

    assert_eq!(
        stack.emulator.subscription(&sub).await.expect("exists")["saasSubscriptionStatus"],
        "Subscribed"
    );
    assert_eq!(record(&stack, &sub).await.status(), SubscriptionStatus::Subscribed, "equal to Microsoft's");
    let entries = history(&stack, &sub).await;
    for operation in [&suspend.operation_id, &reinstate.operation_id] {
        assert_eq!(
            entries.iter().filter(|h| h.operation_id.as_str() == operation).count(),
            1,
            "each change once"
        );
    }
}

#[tokio::test]
async fn a_thirty_minute_old_replay_changes_nothing() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(5)).await;
    let suspend = stack.emulator.suspend(&sub).await.expect("suspended");
    let original = delivered(&stack, &suspend.operation_id).await;
    let reinstate = stack.emulator.reinstate(&sub).await.expect("reinstated");
    delivered(&stack, &reinstate.operation_id).await;
    let before = (record(&stack, &sub).await, history(&stack, &sub).await.len());

    // The same Suspend, replayed: its original token (still within its hour) and body.
    let (status, _) = post(&stack, &original.payload, original.jwt.as_deref()).await;
    assert_eq!(status, StatusCode::OK);
    // A Suspend from 30 minutes ago Microsoft never confirmed as a new operation, with a fresh token.
    let mut old = original.payload.clone();
    old["id"] = json!(uuid::Uuid::new_v4().to_string());
    old["timeStamp"] = json!((chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339());
    let (status, _) = post(&stack, &old, Some(&token(&stack))).await;
    assert_eq!(status, StatusCode::OK);

    let after = record(&stack, &sub).await;
    assert_eq!(
        (after.status(), after.version),
        (before.0.status(), before.0.version),
        "the state did not move back"
    );
    assert_eq!(after.status(), SubscriptionStatus::Subscribed);
    // Its date is the sender's word, not Microsoft's: Microsoft's view (Subscribed) is what counts.
    let recorded: Vec<(Outcome, Option<String>)> =
        history(&stack, &sub).await.into_iter().skip(before.1).map(|h| (h.outcome, h.detail)).collect();
    assert_eq!(
        recorded,
        [(Outcome::Unchanged, Some("already as Microsoft says".to_owned()))],
        "the unconfirmed event is recorded with Microsoft's view"
    );
}

// Faults ------------------------------------------------------------------------------------------

#[tokio::test]
async fn microsoft_failing_inside_the_window_ends_right_or_in_a_5xx() {
    let stack = stack_with(options()).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;

    // Transient: two 500s on the confirmation and a 429 on the acknowledgement, then success.
    stack
        .emulator
        .inject(Endpoint::GetOperation, Fault::Status { status: 500, retry_after: None, body: None }, 2)
        .await;
    stack
        .emulator
        .inject(
            Endpoint::UpdateOperation,
            Fault::Status { status: 429, retry_after: Some("1".into()), body: None },
            1,
        )
        .await;
    let change = stack.emulator.change_quantity(&sub, 14).await.expect("customer change");
    assert_eq!(
        stack.emulator.wait_operation(&sub, &change.operation_id, WAIT).await.expect("decided").status,
        "Succeeded"
    );
    assert_eq!(delivered(&stack, &change.operation_id).await.status, Some(200));
    assert_eq!(record(&stack, &sub).await.subscription.quantity, Some(14));

    // Down for good: 5xx every time, never a wrong state; Microsoft's auto-accept settles it.
    stack
        .emulator
        .inject(Endpoint::GetOperation, Fault::Status { status: 500, retry_after: None, body: None }, 1000)
        .await;
    stack
        .emulator
        .inject(Endpoint::GetSubscription, Fault::Status { status: 500, retry_after: None, body: None }, 1000)
        .await;
    let suspend = stack.emulator.suspend(&sub).await.expect("suspended");
    let answer = delivered(&stack, &suspend.operation_id).await;
    assert!(answer.status.is_some_and(|s| s >= 500), "{answer:?}");
    assert_eq!(
        record(&stack, &sub).await.status(),
        SubscriptionStatus::Subscribed,
        "not applied unconfirmed"
    );
    stack.emulator.clear_faults().await;
    let (status, _) = post(&stack, &answer.payload, Some(&token(&stack))).await;
    assert_eq!(status, StatusCode::OK, "Microsoft's next retry goes through");
    assert_eq!(record(&stack, &sub).await.status(), SubscriptionStatus::Suspended);
}

#[tokio::test]
async fn a_refusal_stands_even_when_microsoft_fails_the_failure_acknowledgement() {
    let policy = ChangePolicy { max_seats: Some(20), ..ChangePolicy::default() };
    let stack = stack_with(Options { policy, ..options() }).await;
    let sub = buy_and_activate(&stack, Purchase::plan("team-monthly").quantity(10)).await;
    stack
        .emulator
        .inject(Endpoint::UpdateOperation, Fault::Status { status: 500, retry_after: None, body: None }, 1000)
        .await;

    let seats = stack.emulator.change_quantity(&sub, 40).await.expect("customer change");
    // Our 4xx inside the window is the rejection, PATCH or no PATCH.
    assert_eq!(delivered(&stack, &seats.operation_id).await.status, Some(400));
    assert_eq!(
        stack.emulator.wait_operation(&sub, &seats.operation_id, WAIT).await.expect("decided").status,
        "Failed"
    );
    assert_eq!(record(&stack, &sub).await.subscription.quantity, Some(10));
    assert_eq!(stack.emulator.subscription(&sub).await.expect("exists")["quantity"].as_u64(), Some(10));
}
