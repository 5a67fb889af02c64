//! Customer-side actions, the ACK window, webhook JWTs and webhook faults.

mod common;

use std::time::Duration;

use common::{Api, Receiver, WAIT, fast_config, operation_id, start, subscribed};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use marketplace_emulator::{
    Emulator, EmulatorConfig, MARKETPLACE_RESOURCE_ID, Purchase, TokenVersion, WebhookFaults,
};
use serde_json::{Value, json};

async fn with_receiver(config: EmulatorConfig) -> (Emulator, Api, Receiver) {
    let receiver = Receiver::start().await;
    let emu = start(EmulatorConfig { webhook_url: Some(receiver.url.clone()), ..config }).await;
    let api = Api::new(&emu).await;
    (emu, api, receiver)
}

/// Verifies a webhook JWT against the JWKS the emulator serves, as a publisher would.
async fn verify(emu: &Emulator, jwt: &str, issuer: &str) -> Value {
    let tid = &emu.config().publisher_tenant_id;
    let jwks: JwkSet = reqwest::get(format!("{}/{tid}/discovery/v2.0/keys", emu.authority()))
        .await
        .unwrap()
        .json()
        .await
        .expect("JWKS");
    let header = decode_header(jwt).expect("JWT header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid");
    let key = DecodingKey::from_jwk(jwks.find(&kid).expect("kid in JWKS")).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[emu.config().publisher_app_id.as_str()]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    let data = decode::<Value>(jwt, &key, &validation).expect("JWT verifies");
    assert_eq!(data.claims["tid"], tid.as_str());
    assert!(data.claims["oid"].is_string());
    data.claims
}

#[tokio::test]
async fn when_the_publisher_does_not_answer_within_the_ack_window_a_customer_change_should_be_auto_accepted()
{
    let (emu, api, receiver) =
        with_receiver(EmulatorConfig { ack_window: Duration::from_secs(1), ..fast_config() }).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(3)).await;
    let id = &p.subscription_id;
    let handle = emu.change_quantity(id, 9).await.unwrap();

    let hook = receiver.next().await;
    assert_eq!(hook.content_type.as_deref(), Some("application/json"));
    let b = &hook.body;
    assert_eq!(b["id"], handle.operation_id);
    assert_eq!(b["action"], "ChangeQuantity");
    assert_eq!(b["status"], "InProgress");
    assert_eq!(b["operationRequestSource"], "Azure");
    assert_eq!(b["quantity"], 9, "payload carries the new quantity");
    assert_eq!(b["subscription"]["quantity"], 3, "subscription still shows the old one");
    assert!(b["purchaseToken"].is_null() && b.get("purchaseToken").is_some());
    for field in ["activityId", "publisherId", "offerId", "planId", "subscriptionId", "timeStamp"] {
        assert!(b.get(field).is_some(), "payload lacks {field}");
    }
    assert_eq!(emu.operation(id, &handle.operation_id).await.unwrap()["status"], "InProgress");

    let done = emu.wait_operation(id, &handle.operation_id, WAIT).await.unwrap();
    assert_eq!(done.status, "Succeeded");
    assert_eq!(emu.subscription(id).await.unwrap()["quantity"], 9);
    let late = api
        .patch(
            &format!("/saas/subscriptions/{id}/operations/{}", handle.operation_id),
            json!({"status": "Failure"}),
        )
        .await;
    assert_eq!(late.status, 409, "PATCH after the window is too late");
}

#[tokio::test]
async fn when_the_publisher_patches_failure_a_customer_change_should_fail_and_not_apply() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(3)).await;
    let id = &p.subscription_id;
    let handle = emu.change_quantity(id, 9).await.unwrap();
    let hook = receiver.next().await;
    let op = hook.body["id"].as_str().unwrap();
    let r =
        api.patch(&format!("/saas/subscriptions/{id}/operations/{op}"), json!({"status": "Failure"})).await;
    assert_eq!(r.status, 200);
    let done = emu.wait_operation(id, &handle.operation_id, WAIT).await.unwrap();
    assert_eq!(done.status, "Failed");
    assert_eq!(emu.subscription(id).await.unwrap()["quantity"], 3);
}

#[tokio::test]
async fn when_the_publisher_answers_the_webhook_with_4xx_a_customer_plan_change_should_fail() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(6)).await;
    let id = &p.subscription_id;
    receiver.respond_with(&[400]);
    let handle = emu.change_plan(id, "team-yearly").await.unwrap();
    let hook = receiver.next().await;
    assert_eq!(
        (hook.body["action"].as_str(), hook.body["planId"].as_str()),
        (Some("ChangePlan"), Some("team-yearly"))
    );
    assert_eq!(hook.body["subscription"]["planId"], "team-monthly");
    let done = emu.wait_operation(id, &handle.operation_id, WAIT).await.unwrap();
    assert_eq!(done.status, "Failed");
    assert_eq!(emu.subscription(id).await.unwrap()["planId"], "team-monthly");
    let attempts = emu.webhook_deliveries().await;
    assert_eq!(attempts.len(), 1, "a 4xx is not retried");
    assert_eq!(attempts[0].status, Some(400));
}

#[tokio::test]
async fn a_publisher_patch_should_complete_after_the_delay_and_then_send_the_partner_webhook() {
    let (emu, api, receiver) =
        with_receiver(EmulatorConfig { operation_delay: Duration::from_millis(200), ..fast_config() }).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(3)).await;
    let id = &p.subscription_id;
    let r = api.patch(&format!("/saas/subscriptions/{id}"), json!({"quantity": 12})).await;
    assert_eq!(r.status, 202);
    let op = operation_id(&r);
    let hook = receiver.next().await;
    let b = &hook.body;
    assert_eq!(b["id"], op.as_str());
    assert_eq!(b["action"], "ChangeQuantity");
    assert_eq!(b["status"], "Succeeded");
    assert_eq!(b["operationRequestSource"], "Partner");
    assert_eq!(b["quantity"], 12);
    assert_eq!(b["subscription"]["quantity"], 12, "already applied when the Partner webhook is sent");
    assert_eq!(emu.operation(id, &op).await.unwrap()["status"], "Succeeded", "webhook follows completion");
    verify(&emu, &hook.jwt(), &format!("https://sts.windows.net/{}/", emu.config().publisher_tenant_id))
        .await;
}

#[tokio::test]
async fn webhook_jwts_should_verify_against_the_served_jwks_with_v1_claims() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    emu.suspend(&p.subscription_id).await.unwrap();
    let hook = receiver.next().await;
    assert_eq!(
        (hook.body["action"].as_str(), hook.body["status"].as_str()),
        (Some("Suspend"), Some("Succeeded"))
    );
    let tid = &emu.config().publisher_tenant_id;
    let claims = verify(&emu, &hook.jwt(), &format!("https://sts.windows.net/{tid}/")).await;
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["appid"], MARKETPLACE_RESOURCE_ID);
    assert!(claims.get("azp").is_none());
    let recorded = emu.webhook_deliveries().await;
    assert_eq!(recorded[0].jwt.as_deref(), Some(hook.jwt().as_str()));
    assert_eq!(recorded[0].status, Some(200));
}

#[tokio::test]
async fn webhook_jwts_should_verify_against_the_served_jwks_with_v2_claims() {
    let (emu, api, receiver) =
        with_receiver(EmulatorConfig { webhook_token_version: TokenVersion::V2, ..fast_config() }).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    emu.renew(&p.subscription_id).await.unwrap();
    let hook = receiver.next().await;
    assert_eq!(hook.body["action"], "Renew");
    let tid = &emu.config().publisher_tenant_id;
    let claims = verify(&emu, &hook.jwt(), &format!("https://login.microsoftonline.com/{tid}/v2.0")).await;
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["azp"], MARKETPLACE_RESOURCE_ID);
    assert!(claims.get("appid").is_none());
}

#[tokio::test]
async fn suspend_reinstate_renew_and_unsubscribe_should_change_state_and_notify() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(2)).await;
    let id = &p.subscription_id;
    let before = emu.subscription(id).await.unwrap();

    emu.renew(id).await.unwrap();
    let renew = receiver.next().await.body;
    assert_eq!((renew["action"].as_str(), renew["status"].as_str()), (Some("Renew"), Some("Succeeded")));
    assert_ne!(renew["subscription"]["term"]["startDate"], before["term"]["startDate"], "term moved");

    assert!(emu.reinstate(id).await.is_err(), "reinstate needs Suspended");
    emu.suspend(id).await.unwrap();
    assert_eq!(receiver.next().await.body["subscription"]["saasSubscriptionStatus"], "Suspended");
    assert!(emu.change_quantity(id, 3).await.is_err(), "only Subscribed can change");
    emu.reinstate(id).await.unwrap();
    let reinstate = receiver.next().await.body;
    assert_eq!(
        (reinstate["action"].as_str(), reinstate["status"].as_str()),
        (Some("Reinstate"), Some("InProgress"))
    );
    assert_eq!(
        emu.subscription(id).await.unwrap()["saasSubscriptionStatus"],
        "Subscribed",
        "notify-only: no ACK"
    );

    emu.unsubscribe(id).await.unwrap();
    let gone = receiver.next().await.body;
    assert_eq!(gone["action"], "Unsubscribe");
    assert_eq!(gone["subscription"]["saasSubscriptionStatus"], "Unsubscribed");
    assert!(emu.unsubscribe(id).await.is_err());
}

#[tokio::test]
async fn cancelling_before_activation_should_send_no_webhook_and_a_purchase_none_either() {
    let (emu, _api, _receiver) = with_receiver(fast_config()).await;
    let p = emu.purchase(Purchase::default()).await;
    let handle = emu.unsubscribe(&p.subscription_id).await.unwrap();
    assert_eq!(emu.subscription(&p.subscription_id).await.unwrap()["saasSubscriptionStatus"], "Unsubscribed");
    assert_eq!(emu.operation(&p.subscription_id, &handle.operation_id).await.unwrap()["status"], "Succeeded");
    assert!(emu.webhook_deliveries().await.is_empty(), "no webhook for purchase nor pending cancellation");
}

#[tokio::test]
async fn a_failing_webhook_endpoint_should_be_retried_until_it_answers_2xx() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    receiver.respond_with(&[500, 503]);
    emu.suspend(&p.subscription_id).await.unwrap();
    for _ in 0..3 {
        assert_eq!(receiver.next().await.body["action"], "Suspend");
    }
    let last = emu.wait_webhook(WAIT, |d| d.status == Some(200)).await.unwrap();
    assert_eq!(last.attempt, 3);
    let statuses: Vec<Option<u16>> = emu.webhook_deliveries().await.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(200)]);
}

#[tokio::test]
async fn an_unreachable_webhook_endpoint_should_be_recorded_as_errors_after_the_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    drop(listener);
    let emu = start(EmulatorConfig { webhook_url: Some(url), webhook_retries: 2, ..fast_config() }).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    emu.suspend(&p.subscription_id).await.unwrap();
    emu.wait_webhook(WAIT, |d| d.attempt == 3).await.unwrap();
    let attempts = emu.webhook_deliveries().await;
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|d| d.status.is_none() && d.error.is_some()));
}

#[tokio::test]
async fn the_duplicates_fault_should_deliver_each_webhook_again() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    emu.webhook_faults(WebhookFaults { duplicates: 2, ..WebhookFaults::default() }).await;
    emu.suspend(&p.subscription_id).await.unwrap();
    let ids: Vec<Value> = [receiver.next().await, receiver.next().await, receiver.next().await]
        .into_iter()
        .map(|r| r.body["id"].clone())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "same operation id three times");
    let all = emu.wait_webhooks(WAIT, |ds| ds.iter().filter(|d| d.duplicate).count() == 2).await.unwrap();
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn the_reorder_fault_should_hold_webhooks_and_send_them_newest_first() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    emu.webhook_faults(WebhookFaults { reorder: true, ..WebhookFaults::default() }).await;
    emu.suspend(&p.subscription_id).await.unwrap();
    emu.reinstate(&p.subscription_id).await.unwrap();
    assert!(emu.webhook_deliveries().await.is_empty(), "held");
    assert_eq!(emu.flush_webhooks().await, 2);
    assert_eq!(receiver.next().await.body["action"], "Reinstate");
    assert_eq!(receiver.next().await.body["action"], "Suspend");
}

#[tokio::test]
async fn the_delay_fault_should_postpone_delivery() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    emu.webhook_faults(WebhookFaults { delay: Some(Duration::from_millis(300)), ..WebhookFaults::default() })
        .await;
    let started = tokio::time::Instant::now();
    emu.suspend(&p.subscription_id).await.unwrap();
    receiver.next().await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn the_drop_faults_should_record_but_not_deliver() {
    let (emu, api, receiver) = with_receiver(fast_config()).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(2)).await;
    let id = &p.subscription_id;
    emu.webhook_faults(WebhookFaults { drop_partner_only: true, ..WebhookFaults::default() }).await;
    let r = api.patch(&format!("/saas/subscriptions/{id}"), json!({"quantity": 4})).await;
    let op = operation_id(&r);
    emu.wait_webhook(WAIT, |d| d.operation_id == op).await.unwrap();
    emu.suspend(id).await.unwrap();
    assert_eq!(
        receiver.next().await.body["action"],
        "Suspend",
        "the Partner webhook was dropped, Azure ones pass"
    );

    emu.webhook_faults(WebhookFaults { drop: true, ..WebhookFaults::default() }).await;
    emu.reinstate(id).await.unwrap();
    let dropped: Vec<String> =
        emu.webhook_deliveries().await.iter().filter(|d| d.dropped).map(|d| d.action.clone()).collect();
    assert_eq!(dropped, ["ChangeQuantity", "Reinstate"]);
    emu.clear_faults().await;
    emu.renew(id).await.unwrap();
    assert_eq!(receiver.next().await.body["action"], "Renew");
}
