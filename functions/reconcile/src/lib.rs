//! The scheduled reconciliation (an EventBridge rule invokes it): one pass of the core's
//! [`Reconciler`], its summary logged as one JSON line and returned.

use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::Environment;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceApi};
use fulfillment::reconcile::{IncompleteRun, Reconciler, Summary};
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
        let services = Services::load(environment).await?;
        let marketplace = services.marketplace_client()?;
        Ok(Self::new(services.store, marketplace, SystemClock))
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> ReconcileJob<S, M, C> {
    /// The reconciliation over these ports (it has no settings of its own): what the deployed
    /// function and the tests build.
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self { reconciler: Reconciler::new(store, marketplace, clock) }
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> ReconcileJob<S, M, C> {
    /// `event` is EventBridge's scheduled event; its `id` names the run. A run that could not
    /// read Microsoft's whole list is an error (Lambda's error metric and alarms see it); its
    /// summary is logged either way.
    pub async fn handle(&self, event: &Value) -> Result<Summary, IncompleteRun> {
        let run_id = event
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        self.reconciler.run(&run_id).await.into_result()
    }
}
