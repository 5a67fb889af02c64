//! Prints how long the webhook takes against the emulator and DynamoDB Local: the first delivery
//! of a fresh function (signing keys and Entra token not cached yet), warm deliveries, and the
//! slow path where Microsoft answers 500 twice and 429 (Retry-After: 1) once.
//!
//! `DYNAMODB_ENDPOINT=http://127.0.0.1:8000 cargo run --release -p local-stack --bin bench-webhook`

use std::time::{Duration, Instant};

use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi};
use local_stack::{LocalStack, Options};
use marketplace_emulator::{EmulatorConfig, Endpoint, Fault, Purchase, WebhookFaults};
use serde_json::Value;

const WARM_DELIVERIES: usize = 200;

/// A webhook function as a fresh Lambda instance would have it: nothing cached.
async fn fresh_function(stack: &LocalStack) -> webhook::Deployed {
    webhook::Deployed::from_environment(stack.environment.clone()).await.expect("the webhook starts")
}

fn request(payload: &Value, jwt: &str) -> lambda_http::Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/webhook")
        .header("authorization", format!("Bearer {jwt}"))
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(payload.to_string()))
        .expect("request")
}

/// Suspends or reinstates at the emulator (deliveries dropped) and returns the payload Microsoft sent.
async fn notification(stack: &LocalStack, subscription: &str, suspend: bool) -> Value {
    let handle = if suspend {
        stack.emulator.suspend(subscription).await
    } else {
        stack.emulator.reinstate(subscription).await
    };
    let handle = handle.expect("a customer-side action");
    stack
        .emulator
        .wait_webhook(Duration::from_secs(10), |d| d.operation_id == handle.operation_id)
        .await
        .expect("recorded")
        .payload
}

async fn timed(function: &webhook::Deployed, payload: &Value, jwt: &str) -> Duration {
    let started = Instant::now();
    let response = function.handle(request(payload, jwt)).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200, "{:?}", response.body());
    elapsed
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let endpoint = std::env::var("DYNAMODB_ENDPOINT").expect("DYNAMODB_ENDPOINT: DynamoDB Local's URL");
    let options = Options {
        emulator: EmulatorConfig {
            webhook_url: Some("http://127.0.0.1:9/dropped".into()),
            ..EmulatorConfig::default()
        },
        ..Options::new(endpoint)
    };
    let stack = LocalStack::start(options).await.expect("the local stack starts");
    stack.emulator.webhook_faults(WebhookFaults { drop: true, ..WebhookFaults::default() }).await;
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(5)).await;
    // Activate as the landing page would (the API directly: this measures the webhook).
    let config = stack.environment.marketplace().expect("config");
    let marketplace = HttpMarketplaceClient::new(config).expect("client");
    let id = fulfillment::domain::SubscriptionId::parse(&bought.subscription_id).expect("id");
    marketplace
        .activate(
            &id,
            &fulfillment::domain::PlanId::parse("team-monthly").expect("plan"),
            Some(5),
            &Call::new(),
        )
        .await
        .expect("activated");

    let jwt = stack.emulator.sign_jwt(&stack.emulator.webhook_claims());
    let cold = timed(
        &fresh_function(&stack).await,
        &notification(&stack, &bought.subscription_id, true).await,
        &jwt,
    )
    .await;

    let function = fresh_function(&stack).await;
    timed(&function, &notification(&stack, &bought.subscription_id, false).await, &jwt).await;
    let mut warm = Vec::with_capacity(WARM_DELIVERIES);
    for n in 0..WARM_DELIVERIES {
        let payload = notification(&stack, &bought.subscription_id, n % 2 == 0).await;
        warm.push(timed(&function, &payload, &jwt).await);
    }
    warm.sort();
    let at = |q: f64| warm[((warm.len() as f64 - 1.0) * q).round() as usize];

    let payload = notification(&stack, &bought.subscription_id, true).await;
    stack
        .emulator
        .inject(Endpoint::GetOperation, Fault::Status { status: 500, retry_after: None, body: None }, 2)
        .await;
    stack
        .emulator
        .inject(
            Endpoint::GetSubscription,
            Fault::Status { status: 429, retry_after: Some("1".into()), body: None },
            1,
        )
        .await;
    let slow = timed(&function, &payload, &jwt).await;

    println!("webhook, against the Marketplace emulator and DynamoDB Local (in process, this machine):");
    println!("  first delivery of a fresh instance (JWKS and Entra token fetched): {}", ms(cold));
    println!(
        "  warm, {WARM_DELIVERIES} deliveries: p50 {}  p99 {}  max {}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    println!(
        "  Microsoft failing (500, 500, then 429 Retry-After 1 s): {} = {:.0}% of the 10 s window",
        ms(slow),
        slow.as_secs_f64() * 10.0
    );
}
