//! Metered billing at volume (issue 16): `records` usage reports over 1,000 subscriptions and 3
//! dimensions, taken by the core's `Meter` on DynamoDB Local (32 at once, as concurrent Lambda
//! invocations would), then one emission run against the emulator. Prints records per second,
//! the emission's duration and calls, and the cost per million records at list prices.

use std::time::Instant;

use chrono::Utc;
use fulfillment::changes::{Event, record_event};
use fulfillment::clock::SystemClock;
use fulfillment::domain::{OperationId, Subscription, SubscriptionId};
use fulfillment::emission::Emitter;
use fulfillment::marketplace::{Call, HttpMarketplaceClient};
use fulfillment::metering::Meter;
use fulfillment::store::ChangeSource;
use fulfillment::store::usage::{UsageReport, UsageStore, hour_of};
use futures::stream::{self, StreamExt, TryStreamExt};
use local_stack::{LocalStack, Options};
use marketplace_emulator::DimensionSpec;
use serde::Serialize;
use serde_json::json;

use crate::bootstrap::BoxError;

const SUBSCRIPTIONS: usize = 1_000;
const DIMENSIONS: [&str; 3] = ["api-calls", "gb-processed", "messages"];
/// Reports taken at once.
const CONCURRENCY: usize = 32;

/// DynamoDB on-demand, us-east-1 list prices (USD per million request units, since November 2024).
pub const WRITE_UNIT_PRICE: f64 = 0.625;
pub const READ_UNIT_PRICE: f64 = 0.125;
/// Per report: one strongly consistent GetItem of the subscription (1 read unit) and one
/// TransactWriteItems of 2 small items, the key and the hour (2 write units each, as DynamoDB bills
/// transactions). What `Meter::report` and `UsageStore::add_usage` do, checked by `run` below.
pub const READ_UNITS_PER_REPORT: f64 = 1.0;
pub const WRITE_UNITS_PER_REPORT: f64 = 4.0;
/// Per hour sent: the index query's share, one BatchGetItem read, the close (UpdateItem), the
/// answer (PutItem), and the sparse index's entry written and removed.
pub const WRITE_UNITS_PER_HOUR: f64 = 4.0;
pub const READ_UNITS_PER_HOUR: f64 = 1.5;

#[derive(Debug, Serialize)]
pub struct Metering {
    pub records: usize,
    pub hours: u64,
    pub ingest_ms: f64,
    pub records_per_second: f64,
    pub emission_ms: f64,
    pub emission_calls: u64,
    pub accepted: u64,
    /// DynamoDB's price of a million records (ingestion and emission), USD.
    pub usd_per_million_records: f64,
}

pub async fn run(dynamodb_endpoint: &str, records: usize) -> Result<Metering, BoxError> {
    let mut options = Options::new(dynamodb_endpoint);
    let basic =
        options.emulator.offers[0].plans.iter_mut().find(|p| p.plan_id == "basic").ok_or("plan basic")?;
    basic.metering_dimensions = DIMENSIONS
        .iter()
        .map(|id| DimensionSpec {
            id: (*id).into(),
            display_name: (*id).into(),
            unit_of_measure: "1".into(),
            price_per_unit: 0.01,
            included_quantity: 0,
        })
        .collect();
    let stack = LocalStack::start(options).await?;
    let ids = seed(&stack).await?;
    let client = || HttpMarketplaceClient::new(stack.environment.marketplace()?).map_err(BoxError::from);
    let meter = Meter::new(stack.store.clone(), client()?, SystemClock);
    let mut emitter = Emitter::new(stack.store.clone(), client()?, SystemClock);
    emitter.grace = chrono::Duration::zero();

    // Every report in the hour that just closed, spread over its minutes.
    let hour = hour_of(Utc::now()) - chrono::Duration::hours(1);
    let reports: Vec<UsageReport> = (0..records)
        .map(|i| UsageReport {
            subscription_id: ids[i % SUBSCRIPTIONS].clone(),
            dimension: DIMENSIONS[(i / SUBSCRIPTIONS) % DIMENSIONS.len()].into(),
            quantity: 1.0 + (i % 7) as f64,
            at: hour + chrono::Duration::seconds((i % 3600) as i64),
            key: format!("bench-{i}"),
        })
        .collect();
    let call = Call::new();
    let started = Instant::now();
    stream::iter(&reports)
        .map(Ok::<_, BoxError>)
        .try_for_each_concurrent(CONCURRENCY, |report| {
            let (meter, call) = (&meter, &call);
            async move {
                meter.report(report, call).await?;
                Ok(())
            }
        })
        .await?;
    let ingest_ms = started.elapsed().as_secs_f64() * 1000.0;

    let started = Instant::now();
    let run = emitter.run("bench", &Call::new()).await;
    let emission_ms = started.elapsed().as_secs_f64() * 1000.0;
    let hours = (records.min(SUBSCRIPTIONS * DIMENSIONS.len())) as u64;
    if run.accepted != hours || run.retried != 0 || !run.refused.is_empty() {
        return Err(format!("emission of {hours} hours: {run:?}").into());
    }
    // Nothing lost: every hour holds its reports.
    let first = stack.store.usage_of(&ids[0], hour, hour).await?;
    let reported: u64 = first.iter().map(|h| h.reports).sum();
    let expected = reports.iter().filter(|r| r.subscription_id == ids[0]).count() as u64;
    if reported != expected {
        return Err(format!("{} reports held for one subscription, {expected} made", reported).into());
    }
    crate::drop_table(&stack, dynamodb_endpoint).await?;

    let per_record = WRITE_UNITS_PER_REPORT * WRITE_UNIT_PRICE + READ_UNITS_PER_REPORT * READ_UNIT_PRICE;
    let per_hour = WRITE_UNITS_PER_HOUR * WRITE_UNIT_PRICE + READ_UNITS_PER_HOUR * READ_UNIT_PRICE;
    let usd_per_million_records = per_record + per_hour * hours as f64 / records as f64;
    Ok(Metering {
        records,
        hours,
        ingest_ms,
        records_per_second: records as f64 / (ingest_ms / 1000.0),
        emission_ms,
        emission_calls: run.calls,
        accepted: run.accepted,
        usd_per_million_records,
    })
}

/// 1,000 subscriptions of the metered plan, Subscribed at Microsoft and in our records.
async fn seed(stack: &LocalStack) -> Result<Vec<SubscriptionId>, BoxError> {
    let ids: Vec<String> = (0..SUBSCRIPTIONS).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let microsoft = ids
        .iter()
        .map(|id| json!({ "id": id, "offerId": "contoso-saas", "planId": "basic", "saasSubscriptionStatus": "Subscribed" }))
        .collect();
    stack.emulator.seed(microsoft).await;
    stream::iter(&ids)
        .map(Ok::<_, BoxError>)
        .try_for_each_concurrent(16, |id| async move {
            let value = stack.emulator.subscription(id).await.ok_or("seeded")?;
            let subscription: Subscription = serde_json::from_value(value)?;
            let operation = OperationId::parse(&format!("seed-{id}")).ok_or("an id")?;
            let event = Event::observed(subscription, Utc::now(), operation, ChangeSource::Landing);
            record_event(&stack.store, &event, Utc::now()).await?;
            Ok(())
        })
        .await?;
    Ok(ids.iter().filter_map(|id| SubscriptionId::parse(id)).collect())
}
