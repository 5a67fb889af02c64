//! The scheduled reconciliation (an EventBridge rule invokes it every few minutes): one
//! invocation of the core's [`Reconciler`], which goes on with the pass under way or starts a due
//! one, until the pass is finished or the invocation nears its deadline. Its report is logged as
//! one JSON line and returned.

use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::{Environment, ReconcileSettings};
use fulfillment::domain::Timestamp;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceApi};
use fulfillment::reconcile::{IncompleteRun, Invocation, Reconciler, Report};
use fulfillment::store::SubscriptionStore;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::wiring::{Services, StartupError};
use serde_json::Value;

pub struct ReconcileJob<S, M, C> {
    pub reconciler: Reconciler<S, M, C>,
}

/// The reconciliation as deployed: DynamoDB, Microsoft's API, the system clock.
pub type Deployed = ReconcileJob<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

impl Deployed {
    /// The one way to build the deployed reconciliation (its `main.rs`, the local stack, the
    /// benchmarks).
    pub async fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        let settings = environment.reconcile()?;
        let services = Services::load(environment).await?;
        let marketplace = services.marketplace_client()?;
        Ok(Self::new(services.store, marketplace, SystemClock, &settings))
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> ReconcileJob<S, M, C> {
    /// The reconciliation over these ports: what the deployed function and the tests build.
    pub fn new(store: S, marketplace: M, clock: C, settings: &ReconcileSettings) -> Self {
        let mut reconciler = Reconciler::new(store, marketplace, clock);
        reconciler.interval = settings.interval;
        Self { reconciler }
    }

    /// `event` is EventBridge's scheduled event; its `id` names the run (Lambda's retries of it
    /// keep it). `deadline` is the invocation's. An invocation that could not go on is an error
    /// (Lambda's error metric and alarms see it, and Lambda retries it); its report is logged
    /// either way.
    pub async fn handle(&self, event: &Value, deadline: Timestamp) -> Result<Report, IncompleteRun> {
        let run_id = event
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let invocation = Invocation { id: &run_id, deadline };
        // An operator's `{"startPass": true}` starts a pass now; the schedule's ticks go on with
        // the pass under way or start one when it is due.
        let report = if event.get("startPass").and_then(Value::as_bool) == Some(true) {
            self.reconciler.start(&invocation).await
        } else {
            self.reconciler.run(&invocation).await
        };
        report.into_result()
    }
}
