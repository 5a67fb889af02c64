//! Prints how long the reconciliation takes for 1,000 and 10,000 subscriptions against the
//! emulator and DynamoDB Local: a run that repairs 10 % (5 % missing here, 5 % drifted seats), and
//! a second run that finds nothing to do.
//!
//! `DYNAMODB_ENDPOINT=http://127.0.0.1:8000 cargo run --release -p local-stack --bin bench-reconcile [N …]`

use std::time::Instant;

use chrono::Utc;
use fulfillment::changes::{Event, record_event};
use fulfillment::clock::SystemClock;
use fulfillment::domain::{OperationId, Subscription};
use fulfillment::lifecycle::LifecycleEvent;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceConfig};
use fulfillment::reconcile::Reconciler;
use fulfillment::store::ChangeSource;
use futures::stream::{self, StreamExt};
use local_stack::{LocalStack, Options};
use serde_json::json;

async fn measure(endpoint: &str, total: usize) {
    let stack = LocalStack::start(Options::new(endpoint)).await.expect("the local stack starts");
    let ids: Vec<String> = (0..total).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let microsoft: Vec<_> = ids
        .iter()
        .map(|id| json!({ "id": id, "offerId": "contoso-saas", "planId": "team-monthly", "quantity": 10, "saasSubscriptionStatus": "Subscribed" }))
        .collect();
    stack.emulator.seed(microsoft).await;

    // Our side: everything but every 20th; every other 20th with other seats.
    let ours: Vec<Subscription> = stream::iter(ids.iter().enumerate().filter(|(i, _)| i % 20 != 0))
        .map(|(i, id)| {
            let stack = &stack;
            async move {
                let value = stack.emulator.subscription(id).await.expect("seeded");
                let mut subscription: Subscription =
                    serde_json::from_value(value).expect("Microsoft's shape");
                if i % 20 == 10 {
                    subscription.quantity = Some(7);
                }
                subscription
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    stream::iter(ours)
        .for_each_concurrent(16, |subscription| {
            let store = &stack.store;
            async move {
                let event = Event {
                    operation_id: OperationId::parse(&format!("seed-{}", subscription.id)).expect("id"),
                    lifecycle: LifecycleEvent::Observed(subscription.status.clone().expect("status")),
                    source: ChangeSource::Landing,
                    action: None,
                    requested_by: None,
                    operation_status: None,
                    occurred_at: None,
                    after: subscription,
                    record_if_unchanged: false,
                };
                record_event(store, &event, Utc::now()).await.expect("written");
            }
        })
        .await;

    let config = MarketplaceConfig::from_lookup(stack.environment.lookup()).expect("config");
    let reconciler = Reconciler::new(
        stack.store.clone(),
        HttpMarketplaceClient::new(config).expect("client"),
        SystemClock,
    );
    let started = Instant::now();
    let first = reconciler.run("bench-1").await;
    let repairing = started.elapsed();
    let started = Instant::now();
    let second = reconciler.run("bench-2").await;
    let idle = started.elapsed();
    assert!(
        first.complete && second.complete && first.errors == 0 && second.changed == 0 && second.added == 0
    );
    println!(
        "{total:>6} subscriptions: repairing run {:>7.0} ms (added {}, changed {}), idle run {:>7.0} ms; {:.2} ms per subscription",
        repairing.as_secs_f64() * 1000.0,
        first.added,
        first.changed,
        idle.as_secs_f64() * 1000.0,
        repairing.as_secs_f64() * 1000.0 / total as f64
    );
}

#[tokio::main]
async fn main() {
    let endpoint = std::env::var("DYNAMODB_ENDPOINT").expect("DYNAMODB_ENDPOINT: DynamoDB Local's URL");
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000, 10_000] } else { sizes };
    println!("reconcile, against the Marketplace emulator and DynamoDB Local (this machine):");
    for total in sizes {
        measure(&endpoint, total).await;
    }
}
