//! The production client against our Marketplace emulator: every call, its success and its
//! documented errors, retries, deadlines and the token cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fulfillment::domain::{
    OperationAction, OperationId, OperationStatus, PlanId, RequestSource, SubscriptionId, SubscriptionStatus,
    UsageEvent, UsageEventStatus, UsageQuery,
};
use fulfillment::marketplace::{
    AckStatus, Call, ClientCredential, EntraConfig, HttpMarketplaceClient, MarketplaceApi, MarketplaceConfig,
    MarketplaceError, RetryPolicy, UsageOutcome, all_subscriptions,
};
use integration_tests::stub::{Canned, Stub};
use marketplace_emulator::{Emulator, EmulatorConfig, Endpoint, Fault, Purchase, Quirk};

const FAST: RetryPolicy = RetryPolicy {
    max_retries: 3,
    base_delay: Duration::from_millis(10),
    max_delay: Duration::from_millis(40),
    max_retry_after: Duration::from_secs(5),
};

async fn emulator() -> Emulator {
    emulator_with(EmulatorConfig { operation_delay: Duration::from_millis(100), ..EmulatorConfig::default() })
        .await
}

async fn emulator_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("the emulator starts")
}

fn client_of(emulator: &Emulator) -> HttpMarketplaceClient {
    let settings = emulator.config();
    let entra = EntraConfig::new(
        &settings.publisher_tenant_id,
        &settings.publisher_app_id,
        vec![ClientCredential::secret("ENTRA_CLIENT_SECRET", settings.publisher_client_secret.clone())],
        emulator.authority().parse().expect("authority url"),
    );
    let mut config = MarketplaceConfig::new(entra);
    config.api_base = emulator.api_base().parse().expect("api url");
    config.retry = FAST;
    config.attempt_timeout = Duration::from_secs(5);
    HttpMarketplaceClient::new(config).expect("client")
}

fn id(raw: &str) -> SubscriptionId {
    SubscriptionId::parse(raw).expect("id")
}

fn plan(raw: &str) -> PlanId {
    PlanId::parse(raw).expect("plan")
}

fn seats(plan_id: &str, quantity: u32) -> Purchase {
    Purchase { plan_id: plan_id.into(), quantity: Some(quantity), ..Purchase::default() }
}

/// A purchased and activated per-seat subscription.
async fn subscribed(emulator: &Emulator, client: &HttpMarketplaceClient) -> SubscriptionId {
    let bought = emulator.purchase(seats("team-monthly", 10)).await;
    let sub = id(&bought.subscription_id);
    client.activate(&sub, &plan("team-monthly"), Some(10), &Call::new()).await.expect("activated");
    sub
}

fn is_bad_request(result: Result<impl std::fmt::Debug, MarketplaceError>) -> bool {
    matches!(result, Err(MarketplaceError::BadRequest { .. }))
}

fn is_not_found(result: Result<impl std::fmt::Debug, MarketplaceError>) -> bool {
    matches!(result, Err(MarketplaceError::NotFound { .. }))
}

#[tokio::test]
async fn a_purchase_resolves_activates_and_reads_back_subscribed() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let bought = emulator.purchase(seats("team-monthly", 12)).await;
    assert!(bought.token.contains('+') && bought.token.contains('/'), "opaque tokens test URL decoding");

    let resolved = client.resolve(&bought.token, &Call::new()).await.expect("resolved");
    assert_eq!(resolved.id.as_str(), bought.subscription_id);
    assert_eq!((resolved.plan_id, resolved.quantity), (Some(plan("team-monthly")), Some(12)));
    let pending = resolved.subscription.expect("the full subscription");
    assert_eq!(pending.status, Some(SubscriptionStatus::PendingFulfillmentStart));

    client.activate(&resolved.id, &plan("team-monthly"), Some(12), &Call::new()).await.expect("activated");
    let subscription = client.get_subscription(&resolved.id, &Call::new()).await.expect("read");
    assert_eq!(subscription.status, Some(SubscriptionStatus::Subscribed));
    assert_eq!(subscription.quantity, Some(12));
    let term = subscription.term.expect("a term once subscribed");
    assert!(term.start_date.is_some() && term.end_date > term.start_date);
}

#[tokio::test]
async fn resolve_refuses_unknown_mangled_and_expired_tokens() {
    let emulator = emulator_with(EmulatorConfig {
        purchase_token_ttl: Duration::from_millis(300),
        ..EmulatorConfig::default()
    })
    .await;
    let client = client_of(&emulator);
    let bought = emulator.purchase(seats("team-monthly", 1)).await;
    assert!(is_bad_request(client.resolve("not-a-token", &Call::new()).await));
    // A `+` turned into another character by a careless decoder: Microsoft cannot decrypt it.
    assert!(is_bad_request(client.resolve(&bought.token.replace('+', "-"), &Call::new()).await));
    // Turned into a space, it is no token at all, and is not sent.
    let spaced = client.resolve(&bought.token.replace('+', " "), &Call::new()).await;
    assert!(matches!(spaced, Err(MarketplaceError::Invalid(_))), "{spaced:?}");
    assert!(client.resolve(&bought.token, &Call::new()).await.is_ok());
    // Expiry is a matter of time passing, not of an event to wait for.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(is_bad_request(client.resolve(&bought.token, &Call::new()).await), "expired");
    assert!(matches!(client.resolve(" ", &Call::new()).await, Err(MarketplaceError::Invalid(_))));
}

#[tokio::test]
async fn a_token_no_header_can_carry_is_refused_before_any_request() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let too_long = "a".repeat(fulfillment::marketplace::MAX_PURCHASE_TOKEN_LENGTH + 1);
    for token in ["abc\ndef", "abc\u{0}def", "abc\u{7f}", "ab\u{e9}c", too_long.as_str()] {
        let answer = client.resolve(token, &Call::new()).await;
        assert!(matches!(answer, Err(MarketplaceError::Invalid(_))), "{token:?}: {answer:?}");
    }
    let resolves = emulator.requests().await.into_iter().filter(|r| r.path.contains("resolve")).count();
    assert_eq!(resolves, 0, "nothing sent, nothing retried");
}

/// A request that cannot be built (here: a correlation id with a newline, which no header can
/// carry) fails at once, as refused: sending it again would fail the same way.
#[tokio::test]
async fn a_request_that_cannot_be_built_is_not_retried() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let id = subscribed(&emulator, &client).await;
    let before = emulator.requests().await.len();
    let answer = client.get_subscription(&id, &Call::correlated("run\nid")).await;
    match &answer {
        Err(error @ MarketplaceError::Unsendable { action: "get subscription", .. }) => {
            assert!(!error.is_retryable(), "{error:?}");
        }
        other => panic!("a typed, final error: {other:?}"),
    }
    assert_eq!(emulator.requests().await.len(), before, "nothing sent");
}

#[tokio::test]
async fn activation_refuses_what_microsoft_refuses() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let bought = emulator.purchase(seats("team-monthly", 5)).await;
    let sub = id(&bought.subscription_id);
    assert!(
        is_bad_request(client.activate(&sub, &plan("team-monthly"), Some(6), &Call::new()).await),
        "other quantity"
    );
    client.activate(&sub, &plan("team-monthly"), Some(5), &Call::new()).await.expect("activated");
    assert!(
        is_bad_request(client.activate(&sub, &plan("team-monthly"), Some(5), &Call::new()).await),
        "already subscribed"
    );
    assert!(is_not_found(
        client
            .activate(
                &id("00000000-0000-0000-0000-000000000000"),
                &plan("team-monthly"),
                Some(5),
                &Call::new()
            )
            .await
    ));

    emulator.unsubscribe(&bought.subscription_id).await.expect("cancelled");
    assert!(
        is_not_found(client.activate(&sub, &plan("team-monthly"), Some(5), &Call::new()).await),
        "unsubscribed"
    );
}

#[tokio::test]
async fn listing_reads_every_page_once() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let mut expected = std::collections::BTreeSet::new();
    for _ in 0..3 {
        expected.insert(emulator.purchase(seats("team-monthly", 1)).await.subscription_id);
    }
    let seeded: Vec<serde_json::Value> = (0..247)
        .map(|n| {
            let sub = format!("5eed0000-0000-4000-8000-{n:012}");
            expected.insert(sub.clone());
            serde_json::json!({ "id": sub, "offerId": "contoso-saas", "planId": "team-monthly", "quantity": 3, "saasSubscriptionStatus": "Subscribed" })
        })
        .collect();
    emulator.seed(seeded).await;

    let first = client.list_subscriptions(None, &Call::new()).await.expect("first page");
    assert_eq!(first.subscriptions.len(), 100);
    assert!(first.next.is_some());
    let all = all_subscriptions(&client, &Call::new()).await.expect("all pages");
    let ids: std::collections::BTreeSet<String> = all.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(all.len(), 250, "no duplicates across pages");
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn an_empty_publisher_lists_nothing_with_or_without_a_body() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    assert!(all_subscriptions(&client, &Call::new()).await.expect("listed").is_empty());
    emulator.set_quirk(Quirk::EmptyBodyWhenNoSubscriptions, true).await;
    assert!(all_subscriptions(&client, &Call::new()).await.expect("listed").is_empty());
}

#[tokio::test]
async fn get_and_plans_answer_and_refuse_unknown_subscriptions() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let unknown = id("00000000-0000-0000-0000-000000000000");
    assert!(is_not_found(client.get_subscription(&unknown, &Call::new()).await));

    let plans = client.list_available_plans(&sub, None, &Call::new()).await.expect("plans");
    let names: Vec<&str> = plans.iter().map(|p| p.plan_id.as_str()).collect();
    assert!(names.contains(&"team-monthly"), "the current plan is included: {names:?}");
    let team = plans.iter().find(|p| p.plan_id.as_str() == "team-monthly").expect("team plan");
    assert!(team.is_price_per_seat && team.admits_seats(10));
    let only =
        client.list_available_plans(&sub, Some(&plan("team-yearly")), &Call::new()).await.expect("filtered");
    assert_eq!(only.iter().map(|p| p.plan_id.as_str()).collect::<Vec<_>>(), ["team-yearly"]);
    assert!(is_not_found(client.list_available_plans(&unknown, None, &Call::new()).await));
}

#[tokio::test]
async fn a_publisher_plan_change_completes_as_an_operation_and_locks_meanwhile() {
    let emulator = emulator_with(EmulatorConfig {
        operation_delay: Duration::from_millis(500),
        ..EmulatorConfig::default()
    })
    .await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;

    let started = client.change_plan(&sub, &plan("team-yearly"), &Call::new()).await.expect("202");
    let operation = client.get_operation(&sub, &started.operation_id, &Call::new()).await.expect("operation");
    assert_eq!(operation.action, Some(OperationAction::ChangePlan));
    assert_eq!(operation.operation_request_source, Some(RequestSource::Partner));
    assert!(is_bad_request(client.change_quantity(&sub, 20, &Call::new()).await), "locked while pending");

    let done = emulator
        .wait_operation(sub.as_str(), started.operation_id.as_str(), Duration::from_secs(10))
        .await
        .expect("completes");
    assert_eq!(done.status, "Succeeded");
    let after = client.get_operation(&sub, &started.operation_id, &Call::new()).await.expect("operation");
    assert_eq!(after.status, Some(OperationStatus::Succeeded));
    assert_eq!(
        client.get_subscription(&sub, &Call::new()).await.expect("read").plan_id,
        Some(plan("team-yearly"))
    );
}

#[tokio::test]
async fn plan_and_quantity_changes_are_refused_as_microsoft_refuses_them() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    assert!(is_bad_request(client.change_plan(&sub, &plan("team-monthly"), &Call::new()).await), "same plan");
    assert!(
        is_bad_request(client.change_plan(&sub, &plan("no-such-plan"), &Call::new()).await),
        "unknown plan"
    );
    assert!(is_bad_request(client.change_quantity(&sub, 10, &Call::new()).await), "same quantity");
    assert!(
        is_bad_request(client.change_quantity(&sub, 501, &Call::new()).await),
        "above the plan's maximum"
    );
    assert!(is_bad_request(client.change_quantity(&sub, 0, &Call::new()).await), "below the plan's minimum");
    assert!(is_bad_request(client.change_quantity(&sub, 2_000_000, &Call::new()).await), "absurd");
    let unknown = id("00000000-0000-0000-0000-000000000000");
    assert!(is_not_found(client.change_plan(&unknown, &plan("team-yearly"), &Call::new()).await));
    assert!(is_not_found(client.delete_subscription(&unknown, &Call::new()).await));

    let pending = emulator.purchase(seats("team-monthly", 3)).await;
    assert!(
        is_bad_request(client.change_quantity(&id(&pending.subscription_id), 4, &Call::new()).await),
        "not subscribed yet"
    );

    // A reseller's customer may only read.
    let resold = emulator
        .purchase(Purchase {
            purchaser_tenant_id: Some("c5b00000-0000-4000-8000-000000000001".into()),
            beneficiary_tenant_id: Some("c5b00000-0000-4000-8000-000000000002".into()),
            ..seats("team-monthly", 3)
        })
        .await;
    let resold_id = id(&resold.subscription_id);
    client.activate(&resold_id, &plan("team-monthly"), Some(3), &Call::new()).await.expect("activated");
    assert!(is_bad_request(client.change_quantity(&resold_id, 4, &Call::new()).await), "no Update allowed");
    assert!(is_bad_request(client.delete_subscription(&resold_id, &Call::new()).await), "no Delete allowed");
}

#[tokio::test]
async fn a_quantity_change_and_a_cancellation_complete() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let change = client.change_quantity(&sub, 25, &Call::new()).await.expect("202");
    emulator
        .wait_operation(sub.as_str(), change.operation_id.as_str(), Duration::from_secs(10))
        .await
        .expect("done");
    assert_eq!(client.get_subscription(&sub, &Call::new()).await.expect("read").quantity, Some(25));

    let cancel = client.delete_subscription(&sub, &Call::new()).await.expect("202");
    emulator
        .wait_operation(sub.as_str(), cancel.operation_id.as_str(), Duration::from_secs(10))
        .await
        .expect("done");
    let gone = client.get_subscription(&sub, &Call::new()).await.expect("still listed");
    assert_eq!(gone.status, Some(SubscriptionStatus::Unsubscribed));
}

#[tokio::test]
async fn a_customer_change_is_outstanding_until_acknowledged_once() {
    let emulator =
        emulator_with(EmulatorConfig { ack_window: Duration::from_secs(30), ..EmulatorConfig::default() })
            .await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let handle = emulator.change_quantity(sub.as_str(), 40).await.expect("customer change");
    let operation_id = OperationId::parse(&handle.operation_id).expect("id");

    let outstanding = client.list_outstanding_operations(&sub, &Call::new()).await.expect("listed");
    let pending = outstanding.iter().find(|o| o.id == operation_id).expect("the change is outstanding");
    assert_eq!((pending.action.clone(), pending.quantity), (Some(OperationAction::ChangeQuantity), Some(40)));
    assert_eq!(pending.operation_request_source, Some(RequestSource::Azure));

    client
        .update_operation_status(&sub, &operation_id, AckStatus::Success, &Call::new())
        .await
        .expect("acknowledged");
    let decided = client.get_operation(&sub, &operation_id, &Call::new()).await.expect("operation");
    assert_eq!(decided.status, Some(OperationStatus::Succeeded));
    let again = client.update_operation_status(&sub, &operation_id, AckStatus::Failure, &Call::new()).await;
    assert!(matches!(again, Err(MarketplaceError::Conflict { .. })), "already decided: {again:?}");
    assert_eq!(client.get_subscription(&sub, &Call::new()).await.expect("read").quantity, Some(40));
    assert!(
        client
            .list_outstanding_operations(&sub, &Call::new())
            .await
            .expect("listed")
            .iter()
            .all(|o| o.id != operation_id)
    );
}

#[tokio::test]
async fn a_rejected_customer_change_keeps_the_old_seats() {
    let emulator =
        emulator_with(EmulatorConfig { ack_window: Duration::from_secs(30), ..EmulatorConfig::default() })
            .await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let handle = emulator.change_quantity(sub.as_str(), 40).await.expect("customer change");
    let operation_id = OperationId::parse(&handle.operation_id).expect("id");
    client
        .update_operation_status(&sub, &operation_id, AckStatus::Failure, &Call::new())
        .await
        .expect("rejected");
    let decided = client.get_operation(&sub, &operation_id, &Call::new()).await.expect("operation");
    assert_eq!(decided.status, Some(OperationStatus::Failed));
    assert_eq!(client.get_subscription(&sub, &Call::new()).await.expect("read").quantity, Some(10));
}

#[tokio::test]
async fn operations_quirks_are_tolerated() {
    let emulator =
        emulator_with(EmulatorConfig { ack_window: Duration::from_secs(30), ..EmulatorConfig::default() })
            .await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let handle = emulator.change_plan(sub.as_str(), "team-yearly").await.expect("customer change");

    emulator.set_quirk(Quirk::OutstandingOperationsAsBareArray, true).await;
    emulator.set_quirk(Quirk::OperationRequestedSourceSpelling, true).await;
    let outstanding = client.list_outstanding_operations(&sub, &Call::new()).await.expect("bare array");
    let pending = outstanding.iter().find(|o| o.id.as_str() == handle.operation_id).expect("listed");
    assert_eq!(pending.operation_request_source, Some(RequestSource::Azure), "the emulator-bug spelling");

    let unknown_op = OperationId::parse("00000000-0000-0000-0000-0000000000ff").expect("id");
    assert!(
        is_bad_request(client.get_operation(&sub, &unknown_op, &Call::new()).await),
        "the real service's 400 stays a 400: the callers decide"
    );
    assert!(
        client
            .list_outstanding_operations(&id("00000000-0000-0000-0000-000000000000"), &Call::new())
            .await
            .expect("an unknown subscription lists nothing")
            .is_empty()
    );
}

#[tokio::test]
async fn acknowledging_a_publisher_operation_fails_as_the_real_service_does() {
    let emulator = emulator_with(EmulatorConfig {
        operation_delay: Duration::from_secs(30),
        ..EmulatorConfig::default()
    })
    .await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let started = client.change_quantity(&sub, 11, &Call::new()).await.expect("202");
    let result =
        client.update_operation_status(&sub, &started.operation_id, AckStatus::Success, &Call::new()).await;
    let Err(MarketplaceError::Server { meta, .. }) = result else { panic!("{result:?}") };
    assert_eq!(meta.status, 500);
}

#[tokio::test]
async fn metering_accepts_once_per_hour_and_dimension() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let bought =
        emulator.purchase(Purchase { plan_id: "basic".into(), quantity: None, ..Purchase::default() }).await;
    let sub = id(&bought.subscription_id);
    client.activate(&sub, &plan("basic"), None, &Call::new()).await.expect("activated");
    let hour = chrono::Utc::now() - chrono::Duration::hours(1);
    let event = UsageEvent {
        resource_id: sub.clone(),
        quantity: 12.5,
        dimension: "api-calls".into(),
        effective_start_time: hour,
        plan_id: plan("basic"),
    };

    let UsageOutcome::Accepted(first) = client.post_usage_event(&event, &Call::new()).await.expect("posted")
    else {
        panic!("accepted")
    };
    assert_eq!(first.status, Some(UsageEventStatus::Accepted));
    let UsageOutcome::Duplicate(previous) =
        client.post_usage_event(&event, &Call::new()).await.expect("posted")
    else {
        panic!("duplicate")
    };
    assert_eq!(previous.and_then(|p| p.usage_event_id), first.usage_event_id);

    let stale = UsageEvent {
        effective_start_time: chrono::Utc::now() - chrono::Duration::hours(30),
        ..event.clone()
    };
    assert!(is_bad_request(client.post_usage_event(&stale, &Call::new()).await), "older than 24 hours");
    let unknown_dimension = UsageEvent {
        dimension: "nope".into(),
        effective_start_time: hour - chrono::Duration::hours(1),
        ..event.clone()
    };
    assert!(is_bad_request(client.post_usage_event(&unknown_dimension, &Call::new()).await));

    let batch = vec![
        UsageEvent { effective_start_time: hour - chrono::Duration::hours(2), ..event.clone() },
        event.clone(),
    ];
    let result = client.post_usage_events(&batch, &Call::new()).await.expect("batch");
    let statuses: Vec<_> = result.result.iter().map(|r| r.status.clone()).collect();
    assert_eq!(statuses, [Some(UsageEventStatus::Accepted), Some(UsageEventStatus::Duplicate)]);

    let query = UsageQuery {
        usage_start_date: chrono::Utc::now() - chrono::Duration::days(2),
        usage_end_date: None,
        offer_id: None,
        plan_id: None,
        dimension: None,
    };
    let records = client.get_usage_events(&query, &Call::new()).await.expect("records");
    assert!(records.iter().any(|r| r.usage_resource_id.as_deref() == Some(sub.as_str())), "{records:?}");
}

// Retries, deadlines, tokens -------------------------------------------------------------------

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_the_pause() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    emulator
        .inject(
            Endpoint::GetSubscription,
            Fault::Status { status: 429, retry_after: Some("1".into()), body: None },
            1,
        )
        .await;
    let started = Instant::now();
    client.get_subscription(&sub, &Call::new()).await.expect("succeeds after the pause");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was honoured: {:?}", started.elapsed());
}

#[tokio::test]
async fn three_500s_then_success_succeeds_with_new_request_ids_and_one_correlation_id() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    emulator
        .inject(Endpoint::GetSubscription, Fault::Status { status: 500, retry_after: None, body: None }, 3)
        .await;
    client.get_subscription(&sub, &Call::correlated("flow-7")).await.expect("fourth attempt succeeds");

    let path = format!("/saas/subscriptions/{sub}");
    let attempts: Vec<_> =
        emulator.requests().await.into_iter().filter(|r| r.method == "GET" && r.path == path).collect();
    assert_eq!(
        attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(500), Some(200)]
    );
    let request_ids: std::collections::HashSet<_> = attempts.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(request_ids.len(), 4, "a new x-ms-requestid per attempt");
    assert!(attempts.iter().all(|r| r.correlation_id.as_deref() == Some("flow-7")));
}

#[tokio::test]
async fn four_500s_exhaust_the_retries_with_a_typed_error() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    emulator
        .inject(Endpoint::GetSubscription, Fault::Status { status: 503, retry_after: None, body: None }, 4)
        .await;
    let error = client.get_subscription(&sub, &Call::new()).await.expect_err("retries exhausted");
    assert_eq!(error.status(), Some(503));
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_deadline_that_expires_returns_a_typed_error_in_time() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    emulator.inject(Endpoint::GetSubscription, Fault::Latency(Duration::from_secs(20)), 1).await;
    let started = Instant::now();
    let error = client
        .get_subscription(&sub, &Call::new().within(Duration::from_millis(500)))
        .await
        .expect_err("too slow");
    assert!(matches!(error, MarketplaceError::DeadlineExceeded { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "returned at the deadline, not after: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_gives_up_at_once() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    emulator
        .inject(
            Endpoint::GetSubscription,
            Fault::Status { status: 429, retry_after: Some("4".into()), body: None },
            1,
        )
        .await;
    let started = Instant::now();
    let error = client
        .get_subscription(&sub, &Call::new().within(Duration::from_secs(2)))
        .await
        .expect_err("no time");
    assert!(
        matches!(error, MarketplaceError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(4)),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_dropped_connection_is_retried_for_reads_but_not_resent_for_activation() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    emulator.inject(Endpoint::GetSubscription, Fault::DropConnection, 1).await;
    client.get_subscription(&sub, &Call::new()).await.expect("the read is retried");

    let bought = emulator.purchase(seats("team-monthly", 2)).await;
    emulator.inject(Endpoint::Activate, Fault::DropConnection, 1).await;
    let error =
        client.activate(&id(&bought.subscription_id), &plan("team-monthly"), Some(2), &Call::new()).await;
    assert!(matches!(error, Err(MarketplaceError::Transport { .. })), "{error:?}");
    let path = format!("/saas/subscriptions/{}/activate", bought.subscription_id);
    assert_eq!(emulator.requests().await.iter().filter(|r| r.path == path).count(), 1, "not sent twice");
}

#[tokio::test]
async fn fifty_concurrent_calls_share_one_token_refresh() {
    let emulator = emulator().await;
    let setup = client_of(&emulator);
    let sub = subscribed(&emulator, &setup).await;
    let before = emulator.tokens_issued();

    let client = Arc::new(client_of(&emulator));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (client, sub) = (client.clone(), sub.clone());
            tokio::spawn(async move { client.get_subscription(&sub, &Call::new()).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("call");
    }
    assert_eq!(emulator.tokens_issued() - before, 1);
    assert_eq!(client.tokens().fetches(), 1);
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_call_succeeds() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let before = emulator.tokens_issued();
    emulator.revoke_access_tokens().await;
    client.get_subscription(&sub, &Call::new()).await.expect("succeeds with a new token");
    assert_eq!(emulator.tokens_issued() - before, 1);
}

#[tokio::test]
async fn a_token_endpoint_outage_is_retried_then_reported() {
    let emulator = emulator().await;
    let client = client_of(&emulator);
    emulator.inject(Endpoint::Token, Fault::Status { status: 503, retry_after: None, body: None }, 1).await;
    client.list_subscriptions(None, &Call::new()).await.expect("the second token request succeeds");

    let fresh = client_of(&emulator);
    emulator.inject(Endpoint::Token, Fault::Status { status: 503, retry_after: None, body: None }, 10).await;
    let error = fresh.list_subscriptions(None, &Call::new()).await.expect_err("no token");
    assert!(matches!(&error, MarketplaceError::Authentication(cause) if cause.is_retryable()), "{error:?}");
}

/// Calls `endpoint` for `sub` (a Subscribed per-seat subscription) with `token` for resolve.
async fn invoke(
    client: &HttpMarketplaceClient,
    endpoint: &Endpoint,
    sub: &SubscriptionId,
    token: &str,
) -> Result<(), MarketplaceError> {
    let call = Call::new();
    let op = OperationId::parse("00000000-0000-0000-0000-0000000000aa").expect("id");
    let event = UsageEvent {
        resource_id: sub.clone(),
        quantity: 1.0,
        dimension: "api-calls".into(),
        effective_start_time: chrono::Utc::now() - chrono::Duration::hours(1),
        plan_id: plan("team-monthly"),
    };
    match endpoint {
        Endpoint::Resolve => client.resolve(token, &call).await.map(drop),
        Endpoint::Activate => client.activate(sub, &plan("team-monthly"), Some(10), &call).await,
        Endpoint::ListSubscriptions => client.list_subscriptions(None, &call).await.map(drop),
        Endpoint::GetSubscription => client.get_subscription(sub, &call).await.map(drop),
        Endpoint::ListPlans => client.list_available_plans(sub, None, &call).await.map(drop),
        Endpoint::ChangePlan => client.change_plan(sub, &plan("team-yearly"), &call).await.map(drop),
        Endpoint::ChangeQuantity => client.change_quantity(sub, 11, &call).await.map(drop),
        Endpoint::DeleteSubscription => client.delete_subscription(sub, &call).await.map(drop),
        Endpoint::ListOperations => client.list_outstanding_operations(sub, &call).await.map(drop),
        Endpoint::GetOperation => client.get_operation(sub, &op, &call).await.map(drop),
        Endpoint::UpdateOperation => {
            client.update_operation_status(sub, &op, AckStatus::Success, &call).await
        }
        Endpoint::UsageEvent => client.post_usage_event(&event, &call).await.map(drop),
        Endpoint::BatchUsageEvent => client.post_usage_events(&[event], &call).await.map(drop),
        Endpoint::GetUsageEvents => {
            let query = UsageQuery {
                usage_start_date: chrono::Utc::now() - chrono::Duration::days(1),
                usage_end_date: None,
                offer_id: None,
                plan_id: None,
                dimension: None,
            };
            client.get_usage_events(&query, &call).await.map(drop)
        }
        other => panic!("{other:?} is not a Marketplace API call"),
    }
}

#[tokio::test]
async fn every_call_reports_403_and_500_as_typed_errors() {
    let endpoints = [
        Endpoint::Resolve,
        Endpoint::Activate,
        Endpoint::ListSubscriptions,
        Endpoint::GetSubscription,
        Endpoint::ListPlans,
        Endpoint::ChangePlan,
        Endpoint::ChangeQuantity,
        Endpoint::DeleteSubscription,
        Endpoint::ListOperations,
        Endpoint::GetOperation,
        Endpoint::UpdateOperation,
        Endpoint::UsageEvent,
        Endpoint::BatchUsageEvent,
        Endpoint::GetUsageEvents,
    ];
    let emulator = emulator().await;
    let client = client_of(&emulator);
    let sub = subscribed(&emulator, &client).await;
    let token = emulator.landing_token(sub.as_str()).await;
    for endpoint in endpoints {
        // 403 survives one token refresh: the app is not the offer's.
        emulator.inject(endpoint, Fault::Status { status: 403, retry_after: None, body: None }, 2).await;
        let forbidden = invoke(&client, &endpoint, &sub, &token).await;
        assert!(matches!(forbidden, Err(MarketplaceError::Forbidden { .. })), "{endpoint:?}: {forbidden:?}");

        // 500 on the first attempt and every retry.
        let body = serde_json::json!({"error": {"code": "UnexpectedError", "message": "An unexpected error has occurred."}});
        emulator
            .inject(endpoint, Fault::Status { status: 500, retry_after: None, body: Some(body) }, 4)
            .await;
        let failed = invoke(&client, &endpoint, &sub, &token).await;
        let Err(MarketplaceError::Server { error, meta }) = &failed else {
            panic!("{endpoint:?}: {failed:?}")
        };
        assert_eq!((meta.status, error.code.as_deref()), (500, Some("UnexpectedError")), "{endpoint:?}");
        emulator.clear_faults().await;
    }
}

// Resending, and answers the emulator does not give: against the scripted stub ------------------

const STUB_TENANT: &str = "7a2d0000-0000-4000-8000-0000000000aa";
const STUB_SUB: &str = "3f9c1b7e-0000-4000-8000-00000000a001";
const STUB_OP: &str = "6d5e0000-0000-4000-8000-0000000000b1";

/// A stub that hands out tokens, and a client of it with fast retries.
async fn stub_and_client() -> (Stub, HttpMarketplaceClient) {
    let stub = Stub::start().await;
    stub.on(
        "POST",
        &format!("/entra/{STUB_TENANT}/oauth2/v2.0/token"),
        Canned::json(200, r#"{"token_type":"Bearer","expires_in":3599,"access_token":"stub-token"}"#),
    );
    let entra = EntraConfig::new(
        STUB_TENANT,
        "app-id",
        vec![ClientCredential::secret("ENTRA_CLIENT_SECRET", "secret")],
        format!("{}/entra", stub.url).parse().expect("authority url"),
    );
    let mut config = MarketplaceConfig::new(entra);
    config.api_base = format!("{}/api", stub.url).parse().expect("api url");
    config.retry = FAST;
    config.attempt_timeout = Duration::from_secs(5);
    (stub, HttpMarketplaceClient::new(config).expect("client"))
}

fn stub_sub() -> SubscriptionId {
    id(STUB_SUB)
}

fn stub_op() -> OperationId {
    OperationId::parse(STUB_OP).expect("id")
}

const SUBSCRIPTION_PATH: &str = "/api/saas/subscriptions/3f9c1b7e-0000-4000-8000-00000000a001";
const OPERATION_PATH: &str = "/api/saas/subscriptions/3f9c1b7e-0000-4000-8000-00000000a001/operations/6d5e0000-0000-4000-8000-0000000000b1";

/// A 202 of change plan, change quantity or delete.
fn accepted() -> Canned {
    Canned::empty(202).header(
        "operation-location",
        &format!("https://marketplaceapi.microsoft.com{OPERATION_PATH}?api-version=2018-08-31"),
    )
}

/// Change plan, change quantity or delete (by `method` and `body`), as the stub saw it.
async fn start_change(client: &HttpMarketplaceClient, which: &str) -> Result<(), MarketplaceError> {
    let call = Call::new();
    let started = match which {
        "change plan" => client.change_plan(&stub_sub(), &plan("gold"), &call).await,
        "change quantity" => client.change_quantity(&stub_sub(), 7, &call).await,
        "delete" => client.delete_subscription(&stub_sub(), &call).await,
        other => panic!("{other}"),
    }?;
    assert_eq!(started.operation_id, stub_op());
    Ok(())
}

fn method_of(which: &str) -> &'static str {
    if which == "delete" { "DELETE" } else { "PATCH" }
}

#[tokio::test]
async fn a_change_answered_408_or_5xx_is_not_sent_again() {
    // Microsoft may have acted on it: a second request would come back 400/409 and the
    // operation id of the first would be lost.
    for which in ["change plan", "change quantity", "delete"] {
        for status in [500, 502, 503, 408] {
            let (stub, client) = stub_and_client().await;
            let method = method_of(which);
            stub.on(
                method,
                SUBSCRIPTION_PATH,
                Canned::json(status, r#"{"error":{"code":"UnexpectedError"}}"#),
            );
            stub.on(method, SUBSCRIPTION_PATH, accepted());
            let error = start_change(&client, which).await.expect_err("the error, at once");
            let MarketplaceError::Server { error: body, meta } = &error else {
                panic!("{which} {status}: {error:?}")
            };
            assert_eq!((meta.status, body.code.as_deref()), (status, Some("UnexpectedError")), "{which}");
            assert!(error.is_retryable(), "the caller may check and decide: {which} {status}");
            assert_eq!(stub.seen_at(method, SUBSCRIPTION_PATH).len(), 1, "{which} after {status}: sent once");
        }
    }
}

#[tokio::test]
async fn an_activation_answered_500_is_not_sent_again() {
    let (stub, client) = stub_and_client().await;
    let path = format!("{SUBSCRIPTION_PATH}/activate");
    stub.on("POST", &path, Canned::empty(500));
    stub.on("POST", &path, Canned::empty(200));
    let error = client.activate(&stub_sub(), &plan("gold"), None, &Call::new()).await.expect_err("500");
    assert_eq!(error.status(), Some(500), "{error:?}");
    assert!(matches!(error, MarketplaceError::Server { .. }), "{error:?}");
    assert_eq!(stub.seen_at("POST", &path).len(), 1, "sent once");
}

#[tokio::test]
async fn a_throttled_change_is_sent_again_and_succeeds() {
    // A 429 says Microsoft did nothing.
    for which in ["change plan", "change quantity", "delete"] {
        let (stub, client) = stub_and_client().await;
        let method = method_of(which);
        stub.on(method, SUBSCRIPTION_PATH, Canned::empty(429).header("retry-after", "0"));
        stub.on(method, SUBSCRIPTION_PATH, Canned::empty(429));
        stub.on(method, SUBSCRIPTION_PATH, accepted());
        start_change(&client, which).await.expect("accepted at the third attempt");
        assert_eq!(stub.seen_at(method, SUBSCRIPTION_PATH).len(), 3, "{which}");
    }
    // Throttled on every attempt: the typed error once the retries are used up.
    let (stub, client) = stub_and_client().await;
    stub.on("PATCH", SUBSCRIPTION_PATH, Canned::empty(429));
    let error = start_change(&client, "change quantity").await.expect_err("throttled");
    assert!(matches!(error, MarketplaceError::Throttled { .. }), "{error:?}");
    assert_eq!(stub.seen_at("PATCH", SUBSCRIPTION_PATH).len(), 4, "the first attempt and 3 retries");
}

#[tokio::test]
async fn reads_resolve_the_acknowledgement_and_metering_are_still_retried_after_a_500() {
    let subscription = format!(
        r#"{{"id":"{STUB_SUB}","offerId":"o","planId":"gold","quantity":3,"saasSubscriptionStatus":"Subscribed"}}"#
    );

    let (stub, client) = stub_and_client().await;
    stub.on("GET", SUBSCRIPTION_PATH, Canned::empty(500));
    stub.on("GET", SUBSCRIPTION_PATH, Canned::json(200, &subscription));
    client.get_subscription(&stub_sub(), &Call::new()).await.expect("the read is retried");
    assert_eq!(stub.seen_at("GET", SUBSCRIPTION_PATH).len(), 2);

    let resolve = "/api/saas/subscriptions/resolve";
    stub.on("POST", resolve, Canned::empty(503));
    stub.on("POST", resolve, Canned::json(200, &format!(r#"{{"id":"{STUB_SUB}","planId":"gold"}}"#)));
    client.resolve("a-token", &Call::new()).await.expect("resolve is retried");
    assert_eq!(stub.seen_at("POST", resolve).len(), 2);

    // A repeated acknowledgement only gets a 409, which the caller handles.
    stub.on("PATCH", OPERATION_PATH, Canned::empty(500));
    stub.on("PATCH", OPERATION_PATH, Canned::empty(200));
    client
        .update_operation_status(&stub_sub(), &stub_op(), AckStatus::Success, &Call::new())
        .await
        .expect("the acknowledgement is retried");
    assert_eq!(stub.seen_at("PATCH", OPERATION_PATH).len(), 2);

    // A repeated usage event only gets the 409 "duplicate", which the client reads as such.
    let event = UsageEvent {
        resource_id: stub_sub(),
        quantity: 1.0,
        dimension: "emails".into(),
        effective_start_time: chrono::Utc::now() - chrono::Duration::hours(1),
        plan_id: plan("gold"),
    };
    stub.on("POST", "/api/usageEvent", Canned::empty(500));
    stub.on("POST", "/api/usageEvent", Canned::json(200, r#"{"usageEventId":"u-1","status":"Accepted"}"#));
    let outcome = client.post_usage_event(&event, &Call::new()).await.expect("the usage event is retried");
    assert!(matches!(outcome, UsageOutcome::Accepted(_)), "{outcome:?}");
    assert_eq!(stub.seen_at("POST", "/api/usageEvent").len(), 2);
    stub.on("POST", "/api/batchUsageEvent", Canned::empty(500));
    stub.on(
        "POST",
        "/api/batchUsageEvent",
        Canned::json(200, r#"{"count":1,"result":[{"status":"Accepted"}]}"#),
    );
    client.post_usage_events(&[event], &Call::new()).await.expect("the batch is retried");
    assert_eq!(stub.seen_at("POST", "/api/batchUsageEvent").len(), 2);
}

#[tokio::test]
async fn get_operation_tells_a_400_from_a_404() {
    let (stub, client) = stub_and_client().await;
    stub.on("GET", OPERATION_PATH, Canned::json(400, r#"{"code":"BadArgument","message":"try again"}"#));
    let error = client.get_operation(&stub_sub(), &stub_op(), &Call::new()).await.expect_err("400");
    let MarketplaceError::BadRequest { error, meta } = &error else { panic!("{error:?}") };
    assert_eq!((meta.status, error.code.as_deref()), (400, Some("BadArgument")));

    let (stub, client) = stub_and_client().await;
    stub.on("GET", OPERATION_PATH, Canned::json(404, r#"{"error":{"code":"EntityNotFound"}}"#));
    let error = client.get_operation(&stub_sub(), &stub_op(), &Call::new()).await.expect_err("404");
    let MarketplaceError::NotFound { error, meta } = &error else { panic!("{error:?}") };
    assert_eq!((meta.status, error.code.as_deref()), (404, Some("EntityNotFound")));
}

#[tokio::test]
async fn an_operation_without_its_ids_takes_the_ids_asked_for() {
    let rest =
        r#""action":"ChangeQuantity","quantity":7,"status":"InProgress","timeStamp":"2025-05-20T14:03:11Z""#;
    let bodies = [
        format!(r#"{{"id":"{STUB_OP}",{rest}}}"#),
        format!(r#"{{"id":"{STUB_OP}","subscriptionId":null,{rest}}}"#),
        format!(r#"{{"id":"{STUB_OP}","subscriptionId":"  ",{rest}}}"#),
        format!(r#"{{"subscriptionId":"{STUB_SUB}",{rest}}}"#),
        format!(r#"{{{rest}}}"#),
    ];
    for body in bodies {
        let (stub, client) = stub_and_client().await;
        stub.on("GET", OPERATION_PATH, Canned::json(200, &body));
        let operation = client.get_operation(&stub_sub(), &stub_op(), &Call::new()).await.expect(&body);
        assert_eq!((&operation.id, &operation.subscription_id), (&stub_op(), &stub_sub()), "{body}");
        assert_eq!(operation.action, Some(OperationAction::ChangeQuantity));
        assert_eq!((operation.quantity, operation.status), (Some(7), Some(OperationStatus::InProgress)));
    }
    // The ids Microsoft gives win.
    let other = "00000000-0000-4000-8000-00000000ffff";
    let (stub, client) = stub_and_client().await;
    stub.on(
        "GET",
        OPERATION_PATH,
        Canned::json(200, &format!(r#"{{"id":"{STUB_OP}","subscriptionId":"{other}",{rest}}}"#)),
    );
    let operation = client.get_operation(&stub_sub(), &stub_op(), &Call::new()).await.expect("operation");
    assert_eq!(operation.subscription_id.as_str(), other);
    // Not an object at all is still a decode error.
    let (stub, client) = stub_and_client().await;
    stub.on("GET", OPERATION_PATH, Canned::json(200, "[]"));
    let error = client.get_operation(&stub_sub(), &stub_op(), &Call::new()).await.expect_err("not one");
    assert!(matches!(error, MarketplaceError::Decode { .. }), "{error:?}");
}

#[tokio::test]
async fn outstanding_operations_without_a_subscription_id_take_the_one_asked_for() {
    let path = format!("{SUBSCRIPTION_PATH}/operations");
    let items = format!(
        r#"{{"id":"{STUB_OP}","action":"Reinstate","status":"InProgress"}},
           {{"id":"op-2","subscriptionId":null,"action":"Reinstate"}},
           {{"action":"Reinstate","subscriptionId":"{STUB_SUB}"}},
           {{"id":" ","action":"Reinstate"}},
           {{"id":"op-3","subscriptionId":"{STUB_SUB}","action":"Renew"}}"#
    );
    for body in [format!(r#"{{"operations":[{items}]}}"#), format!("[{items}]")] {
        let (stub, client) = stub_and_client().await;
        stub.on("GET", &path, Canned::json(200, &body));
        let operations = client.list_outstanding_operations(&stub_sub(), &Call::new()).await.expect(&body);
        let ids: Vec<&str> = operations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, [STUB_OP, "op-2", "op-3"], "an item without an id is skipped");
        assert!(operations.iter().all(|o| o.subscription_id == stub_sub()), "{operations:?}");
    }
}

// The Marketplace contract ---------------------------------------------------------------------

/// The emulator's customer side, for the contract the in-memory model keeps too.
struct EmulatorCustomer<'a>(&'a Emulator);

impl fulfillment::testing::market_contract::CustomerSide for EmulatorCustomer<'_> {
    async fn purchase(&self, plan: &PlanId, seats: u32) -> (SubscriptionId, String) {
        let bought = self
            .0
            .purchase(Purchase { plan_id: plan.to_string(), quantity: Some(seats), ..Purchase::default() })
            .await;
        (id(&bought.subscription_id), bought.token)
    }

    async fn change_quantity(&self, sub: &SubscriptionId, seats: u32) -> OperationId {
        let handle = self.0.change_quantity(sub.as_str(), seats).await.expect("customer change");
        OperationId::parse(&handle.operation_id).expect("operation id")
    }

    async fn suspend(&self, sub: &SubscriptionId) {
        self.0.suspend(sub.as_str()).await.expect("suspended");
    }
}

#[tokio::test]
async fn the_emulator_keeps_the_marketplace_contract_the_model_keeps() {
    let emulator =
        emulator_with(EmulatorConfig { ack_window: Duration::from_secs(60), ..EmulatorConfig::default() })
            .await;
    let client = client_of(&emulator);
    fulfillment::testing::market_contract::run_all(
        &client,
        &EmulatorCustomer(&emulator),
        &plan("team-monthly"),
        &plan("team-yearly"),
    )
    .await;
}

#[tokio::test]
async fn the_emulator_keeps_the_metering_contract_the_model_keeps() {
    let emulator = emulator_with(EmulatorConfig::default()).await;
    let client = client_of(&emulator);
    let basic = plan("basic");
    let bought = emulator.purchase(Purchase::plan("basic")).await;
    let subscription = id(&bought.subscription_id);
    client.activate(&subscription, &basic, None, &Call::new()).await.expect("activated");
    fulfillment::testing::market_contract::run_metering(
        &client,
        &EmulatorCustomer(&emulator),
        &subscription,
        &basic,
        "api-calls",
        chrono::Utc::now(),
    )
    .await;
}

/// Microsoft once answered `GET usageEvents` with a JSON string holding the array
/// (docs/marketplace-api.md#retrieve-usage-events): it is read all the same.
#[tokio::test]
async fn usage_events_as_a_json_string_are_read() {
    let emulator = emulator_with(EmulatorConfig::default()).await;
    let client = client_of(&emulator);
    let basic = plan("basic");
    let bought = emulator.purchase(Purchase::plan("basic")).await;
    let sub = id(&bought.subscription_id);
    client.activate(&sub, &basic, None, &Call::new()).await.expect("activated");
    let hour = fulfillment::store::usage::hour_of(chrono::Utc::now()) - chrono::Duration::hours(1);
    let event = fulfillment::domain::UsageEvent {
        resource_id: sub.clone(),
        quantity: 4.5,
        dimension: "api-calls".into(),
        effective_start_time: hour,
        plan_id: basic,
    };
    client.post_usage_event(&event, &Call::new()).await.expect("accepted");
    emulator.set_quirk(Quirk::UsageEventsAsJsonString, true).await;
    let query = fulfillment::domain::UsageQuery {
        usage_start_date: hour - chrono::Duration::days(1),
        usage_end_date: None,
        offer_id: None,
        plan_id: None,
        dimension: None,
    };
    let records = client.get_usage_events(&query, &Call::new()).await.expect("read despite the quirk");
    let mine: Vec<_> =
        records.iter().filter(|r| r.usage_resource_id.as_deref() == Some(sub.as_str())).collect();
    assert_eq!(mine.iter().filter_map(|r| r.submitted_quantity).sum::<f64>(), 4.5, "{records:?}");
}
