//! Reconciliation at scale: the `reconcile` bootstrap against N subscriptions at the emulator, of
//! which we hold 95 % (every 20th missing, every other 20th with other seats): a repairing run,
//! then a run that finds nothing to do.

use std::time::Instant;

use chrono::Utc;
use fulfillment::changes::{Event, record_event};
use fulfillment::domain::{OperationId, Subscription};
use fulfillment::store::ChangeSource;
use futures::stream::{self, StreamExt, TryStreamExt};
use local_stack::{LocalStack, Options};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bootstrap::{Bootstrap, BoxError, root};
use crate::runtime_api::RuntimeApi;

#[derive(Debug, Serialize)]
pub struct Scale {
    pub subscriptions: usize,
    pub repairing_ms: f64,
    pub idle_ms: f64,
    pub added: u64,
    pub changed: u64,
}

async fn seed(stack: &LocalStack, total: usize) -> Result<(), BoxError> {
    let ids: Vec<String> = (0..total).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let microsoft: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "id": id, "offerId": "contoso-saas", "planId": "team-monthly", "quantity": 10, "saasSubscriptionStatus": "Subscribed" }))
        .collect();
    stack.emulator.seed(microsoft).await;
    stream::iter(ids.iter().enumerate().filter(|(i, _)| i % 20 != 0))
        .map(Ok::<_, BoxError>)
        .try_for_each_concurrent(16, |(i, id)| async move {
            let value = stack.emulator.subscription(id).await.ok_or("seeded")?;
            let mut subscription: Subscription = serde_json::from_value(value)?;
            if i % 20 == 10 {
                subscription.quantity = Some(7);
            }
            if subscription.status.is_none() {
                return Err("a status".into());
            }
            let operation = OperationId::parse(&format!("seed-{id}")).ok_or("an id")?;
            let event = Event::observed(subscription, Utc::now(), operation, ChangeSource::Landing);
            record_event(&stack.store, &event, Utc::now()).await?;
            Ok(())
        })
        .await
}

/// Times one scheduled run of the `reconcile` bootstrap (the local stack starts a pass at every
/// invocation); it must finish the pass, and its summary is the pass's.
async fn timed(api: &RuntimeApi, function: &Bootstrap, event: &[u8]) -> Result<(f64, Value), BoxError> {
    let started = Instant::now();
    let answer = function.invoke(api, event).await?;
    let report: Value = serde_json::from_slice(&answer.body)?;
    let summary = &report["pass"];
    if report["outcome"] != "finished" || summary["complete"] != true || summary["errors"] != 0 {
        return Err(format!("reconcile: {report}").into());
    }
    Ok(((answer.at - started).as_secs_f64() * 1000.0, summary.clone()))
}

pub async fn run(api: &RuntimeApi, dynamodb_endpoint: &str, total: usize) -> Result<Scale, BoxError> {
    let stack = LocalStack::start(Options::new(dynamodb_endpoint)).await?;
    seed(&stack, total).await?;
    let event = std::fs::read(root().join("events/reconcile/scheduled.json"))?;
    let function = Bootstrap::start(api, "reconcile", &stack.environment).await?;
    let (repairing_ms, first) = timed(api, &function, &event).await?;
    let (idle_ms, second) = timed(api, &function, &event).await?;
    function.stop().await;
    let (missing, drifted) = (total.div_ceil(20) as u64, (total + 9) / 20);
    let count = |v: &Value, name: &str| v[name].as_u64().unwrap_or(u64::MAX);
    if count(&first, "added") != missing
        || count(&first, "changed") != drifted as u64
        || count(&second, "added") + count(&second, "changed") != 0
    {
        return Err(format!("reconcile of {total}: {first} then {second}").into());
    }
    crate::drop_table(&stack, dynamodb_endpoint).await?;
    Ok(Scale { subscriptions: total, repairing_ms, idle_ms, added: missing, changed: drifted as u64 })
}
