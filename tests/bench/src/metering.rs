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
use crate::capacity::CapacityMeter;

const SUBSCRIPTIONS: usize = 1_000;
const DIMENSIONS: [&str; 3] = ["api-calls", "gb-processed", "messages"];
/// Reports taken at once.
const CONCURRENCY: usize = 32;

/// DynamoDB on-demand, us-east-1 list prices (USD per million request units, since November 2024).
pub const WRITE_UNIT_PRICE: f64 = 0.625;
pub const READ_UNIT_PRICE: f64 = 0.125;

#[derive(Debug, Serialize)]
pub struct Metering {
    pub records: usize,
    pub hours: u64,
    pub ingest_ms: f64,
    pub records_per_second: f64,
    pub emission_ms: f64,
    pub emission_calls: u64,
    pub accepted: u64,
    /// Request units DynamoDB consumed per record taken, as measured ([`CapacityMeter`]).
    pub write_units_per_record: f64,
    pub read_units_per_record: f64,
    /// Request units of the emission run per hour sent.
    pub write_units_per_hour: f64,
    pub read_units_per_hour: f64,
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
    let ids = seed(&stack, SUBSCRIPTIONS).await?;
    let client = || HttpMarketplaceClient::new(stack.environment.marketplace()?).map_err(BoxError::from);
    // The store the meter and the emitter use counts the request units DynamoDB bills.
    let capacity = CapacityMeter::default();
    let store = stack.tables.store(capacity.attach(&local_stack::dynamodb_client(dynamodb_endpoint)));
    let meter = Meter::new(store.clone(), client()?, SystemClock);
    let mut emitter = Emitter::new(store, client()?, SystemClock);
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
    let before_ingest = capacity.units();
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
    let ingest = capacity.units() - before_ingest;

    let before_emission = capacity.units();
    let started = Instant::now();
    let run = emitter.run("bench", &Call::new()).await;
    let emission_ms = started.elapsed().as_secs_f64() * 1000.0;
    let emission = capacity.units() - before_emission;
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

    if ingest.write == 0.0 || emission.write == 0.0 {
        return Err(format!("DynamoDB Local reported no consumed capacity: {ingest:?} {emission:?}").into());
    }
    let (records_f, hours_f) = (records as f64, hours as f64);
    // Per million records: the ingestion's units, and the emission's for the hours they fill.
    let usd_per_million_records = (ingest.write + emission.write) / records_f * WRITE_UNIT_PRICE
        + (ingest.read + emission.read) / records_f * READ_UNIT_PRICE;
    Ok(Metering {
        records,
        hours,
        ingest_ms,
        records_per_second: records as f64 / (ingest_ms / 1000.0),
        emission_ms,
        emission_calls: run.calls,
        accepted: run.accepted,
        write_units_per_record: ingest.write / records_f,
        read_units_per_record: ingest.read / records_f,
        write_units_per_hour: emission.write / hours_f,
        read_units_per_hour: emission.read / hours_f,
        usd_per_million_records,
    })
}

/// `count` subscriptions of the metered plan, Subscribed at Microsoft and in our records.
pub async fn seed(stack: &LocalStack, count: usize) -> Result<Vec<SubscriptionId>, BoxError> {
    let ids: Vec<String> = (0..count).map(|_| uuid::Uuid::new_v4().to_string()).collect();
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
