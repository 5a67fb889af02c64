//! The ledger's convergence end to end: random histories against the emulator (Microsoft's side,
//! sending its signed webhooks to the local stack's webhook function, with duplicated, reordered
//! and dropped deliveries and injected 429/5xx/400 answers) and DynamoDB Local. Once the faults
//! stop, Microsoft's operations are decided and one reconciliation runs, every record equals
//! Microsoft's view, no subscription we recorded cancelled is active again and no history has a
//! gap. Fewer cases than on the fakes (shared/tests/convergence.rs); `LEDGER_E2E_CASES` and
//! `LEDGER_SEED` as there.

use std::collections::BTreeSet;
use std::time::Duration;

use fulfillment::admin::{ChangeRequest, Entitlement, Publisher};
use fulfillment::clock::SystemClock;
use fulfillment::domain::{Subscription, SubscriptionId, SubscriptionStatus};
use fulfillment::marketplace::{Call, HttpMarketplaceClient, RetryPolicy};
use fulfillment::reconcile::Reconciler;
use fulfillment::store::{Outcome, SubscriptionStore};
use integration_tests::flows::buy_and_activate;
use integration_tests::stack_options;
use local_stack::{LocalStack, Options};
use marketplace_emulator::{EmulatorConfig, Endpoint, Fault, Purchase, WebhookFaults};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

const WAIT: Duration = Duration::from_secs(20);
const PLANS: [&str; 2] = ["team-monthly", "team-yearly"];
const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::GetOperation,
    Endpoint::GetSubscription,
    Endpoint::UpdateOperation,
    Endpoint::ListSubscriptions,
];
const STATUSES: [u16; 3] = [429, 500, 400];

#[derive(Debug, Clone)]
enum Step {
    CustomerSeats { sub: usize, seats: u32 },
    CustomerPlan { sub: usize, plan: usize },
    Lifecycle { sub: usize, action: usize },
    PublisherSeats { sub: usize, seats: u32 },
    Webhooks { duplicates: u32, reorder: bool, drop: bool },
    Flush,
    Fault { endpoint: usize, status: usize },
    Reconcile,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..2usize, 5..30u32).prop_map(|(sub, seats)| Step::CustomerSeats { sub, seats }),
        2 => (0..2usize, 0..2usize).prop_map(|(sub, plan)| Step::CustomerPlan { sub, plan }),
        3 => (0..2usize, 0..4usize).prop_map(|(sub, action)| Step::Lifecycle { sub, action }),
        2 => (0..2usize, 5..30u32).prop_map(|(sub, seats)| Step::PublisherSeats { sub, seats }),
        2 => (0..2u32, any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(duplicates, reorder, drop)| Step::Webhooks { duplicates, reorder, drop }),
        1 => Just(Step::Flush),
        2 => (0..ENDPOINTS.len(), 0..STATUSES.len()).prop_map(|(endpoint, status)| Step::Fault { endpoint, status }),
        1 => Just(Step::Reconcile),
    ]
}

fn client(stack: &LocalStack) -> HttpMarketplaceClient {
    let mut config = stack.environment.marketplace().expect("config");
    config.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    HttpMarketplaceClient::new(config).expect("client")
}

async fn run(stack: &LocalStack, subs: &[String], step: &Step) {
    let emulator = &stack.emulator;
    let sub = |i: &usize| subs[i % subs.len()].as_str();
    match step {
        Step::CustomerSeats { sub: i, seats } => drop(emulator.change_quantity(sub(i), *seats).await),
        Step::CustomerPlan { sub: i, plan } => drop(emulator.change_plan(sub(i), PLANS[*plan]).await),
        Step::Lifecycle { sub: i, action } => drop(match action {
            0 => emulator.suspend(sub(i)).await,
            1 => emulator.reinstate(sub(i)).await,
            2 => emulator.renew(sub(i)).await,
            _ => emulator.unsubscribe(sub(i)).await,
        }),
        Step::PublisherSeats { sub: i, seats } => {
            let publisher = Publisher::new(stack.store.clone(), client(stack), SystemClock);
            let id = SubscriptionId::parse(sub(i)).expect("id");
            drop(publisher.request(&id, ChangeRequest::Seats(*seats), &Call::new()).await);
        }
        Step::Webhooks { duplicates, reorder, drop: dropped } => {
            let faults = WebhookFaults {
                duplicates: *duplicates,
                reorder: *reorder,
                drop: *dropped,
                ..WebhookFaults::default()
            };
            emulator.webhook_faults(faults).await;
        }
        Step::Flush => drop(emulator.flush_webhooks().await),
        Step::Fault { endpoint, status } => {
            emulator.inject(ENDPOINTS[*endpoint], Fault::status(STATUSES[*status]), 1).await;
        }
        Step::Reconcile => {
            Reconciler::new(stack.store.clone(), client(stack), SystemClock)
                .pass(&uuid::Uuid::new_v4().to_string())
                .await;
        }
    }
}

async fn converge(stack: &LocalStack, subs: &[String]) -> Result<(), TestCaseError> {
    let emulator = &stack.emulator;
    emulator.clear_faults().await;
    emulator.webhook_faults(WebhookFaults::default()).await;
    emulator.flush_webhooks().await;
    for sub in subs {
        for operation in emulator.operations(sub).await.into_iter().filter(|o| o.status == "InProgress") {
            emulator
                .wait_operation(sub, &operation.id, WAIT)
                .await
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        }
    }
    // Every delivery answered (or given up): nothing still writing while we compare.
    let settled = |deliveries: &[marketplace_emulator::WebhookDelivery]| {
        deliveries.iter().all(|d| d.status.is_some() || d.attempt == 0)
    };
    let _ = emulator.wait_webhooks(WAIT, settled).await;
    let summary = Reconciler::new(stack.store.clone(), client(stack), SystemClock).pass("final").await;
    prop_assert!(summary.complete && summary.errors == 0, "{summary:?}");
    for sub in subs {
        let id = SubscriptionId::parse(sub).expect("id");
        let microsoft: Subscription =
            serde_json::from_value(emulator.subscription(sub).await.expect("at Microsoft"))
                .expect("subscription");
        let ours = stack.store.get(&id).await.expect("read").expect("recorded");
        prop_assert_eq!(
            (
                &ours.subscription.status,
                &ours.subscription.plan_id,
                ours.subscription.quantity,
                &ours.subscription.term
            ),
            (&microsoft.status, &microsoft.plan_id, microsoft.quantity, &microsoft.term),
            "{} differs from Microsoft's view",
            sub
        );
        let history = stack.store.history(&id).await.expect("history");
        let versions: BTreeSet<u64> = history.iter().map(|h| h.version).collect();
        prop_assert_eq!(
            versions,
            (1..=ours.version).collect::<BTreeSet<u64>>(),
            "a gap in the history of {}",
            sub
        );
        let cancelled = history.iter().any(|h| {
            h.outcome == Outcome::Applied
                && h.to.as_ref().and_then(|t| t.status.as_ref()) == Some(&SubscriptionStatus::Unsubscribed)
        });
        prop_assert!(
            !cancelled || !Entitlement::from(&ours).access_allowed,
            "{} active again after a cancellation",
            sub
        );
    }
    Ok(())
}

#[test]
fn the_ledger_converges_end_to_end_against_the_emulator_and_dynamodb_local() {
    let cases = std::env::var("LEDGER_E2E_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12);
    let seed: u64 = std::env::var("LEDGER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1ed9e5);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 20, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let started = std::time::Instant::now();
    let result = runner.run(&proptest::collection::vec(step(), 1..15), |steps| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let emulator = EmulatorConfig {
                ack_window: Duration::from_secs(1),
                operation_delay: Duration::from_millis(100),
                webhook_retry_backoff: Duration::from_millis(100),
                ..EmulatorConfig::default()
            };
            let stack = LocalStack::start(Options { emulator, ..stack_options() }).await.expect("stack");
            let mut subs = Vec::new();
            for seats in [10, 12] {
                subs.push(
                    buy_and_activate(
                        &stack,
                        Purchase { plan_id: PLANS[0].into(), quantity: Some(seats), ..Purchase::default() },
                    )
                    .await,
                );
            }
            for step in &steps {
                run(&stack, &subs, step).await;
            }
            converge(&stack, &subs).await
        })
    });
    println!("{cases} cases in {:?} (seed {seed})", started.elapsed());
    if let Err(failure) = result {
        panic!("{failure}\nreplay with LEDGER_SEED={seed} LEDGER_E2E_CASES={cases}");
    }
}
