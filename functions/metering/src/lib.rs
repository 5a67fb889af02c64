//! Metered billing's scheduled emission (an EventBridge rule invokes it every 15 minutes): one run
//! of the core's [`Emitter`], which closes every hour that ended at least 10 minutes ago and sends
//! it to Microsoft, 25 to a batch, recording each answer. An hour is thus sent 10 to 25 minutes
//! after it ends; what Microsoft could not take yet is sent again by the next tick. The run's
//! report is logged as one JSON line ("metering run ended", read by the metric filters) and
//! returned.

use std::time::{Duration, Instant};

use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::Environment;
use fulfillment::emission::{EmissionReport, Emitter};
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi};
use fulfillment::store::SubscriptionStore;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::usage::UsageStore;
use fulfillment::wiring::{Services, StartupError};
use serde_json::Value;

/// Kept back from Lambda's deadline: the calls to Microsoft are over by then, and the answers
/// already received are recorded.
pub const MARGIN: Duration = Duration::from_secs(10);

pub struct MeteringJob<S, M, C> {
    pub emitter: Emitter<S, M, C>,
}

/// The emission as deployed: DynamoDB, Microsoft's API, the system clock.
pub type Deployed = MeteringJob<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

impl Deployed {
    /// The one way to build the deployed emission (its `main.rs`, the secrets test).
    pub async fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        let services = Services::load(environment).await?;
        let marketplace = services.marketplace_client()?;
        Ok(Self::new(services.store, marketplace, SystemClock))
    }
}

/// A run in which the table failed (`store_errors` > 0): an error for Lambda, so that its Errors
/// metric (and `MeteringErrorsAlarm`) sees it. The hours stay unsettled for the next tick.
/// Microsoft's refusals and batches left for the next run are not errors: they are in the report
/// and the log, and alarmed from there.
#[derive(Debug, thiserror::Error)]
#[error(
    "the metering run could not read or write the table {} times; the hours concerned stay for the next run",
    .0.store_errors
)]
pub struct StoreFailed(pub Box<EmissionReport>);

impl<S: UsageStore + SubscriptionStore, M: MarketplaceApi, C: Clock> MeteringJob<S, M, C> {
    /// The emission over these ports: what the deployed function and the tests build.
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self { emitter: Emitter::new(store, marketplace, clock) }
    }

    /// `event` is EventBridge's scheduled event; its `id` names the run (the correlation id
    /// Microsoft sees, and every log line's `run_id`). `deadline` is the invocation's: Microsoft's
    /// calls end [`MARGIN`] before it.
    pub async fn handle(&self, event: &Value, deadline: Instant) -> Result<EmissionReport, StoreFailed> {
        let run_id = event
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let call = Call::correlated(&run_id).until(deadline.checked_sub(MARGIN).unwrap_or(deadline));
        let report = self.emitter.run(&run_id, &call).await;
        if report.store_errors > 0 { Err(StoreFailed(Box::new(report))) } else { Ok(report) }
    }
}

#[cfg(feature = "test-util")]
pub mod testing;
