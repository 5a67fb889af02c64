//! Wires the reconciliation once per execution environment, then runs it on each schedule tick.

use fulfillment::clock::SystemClock;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceConfig};
use fulfillment::reconcile::Reconciler;
use fulfillment::settings::{Environment, StoreSettings};
use fulfillment::store::dynamodb::DynamoDbStore;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use reconcile::ReconcileJob;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_runtime::tracing::init_default_subscriber();

    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let environment = Environment::load(Some(&aws)).await?;
    let store = StoreSettings::from_environment(&environment)?;
    let marketplace = HttpMarketplaceClient::new(MarketplaceConfig::from_lookup(environment.lookup())?)?;
    let job = ReconcileJob {
        reconciler: Reconciler::new(
            DynamoDbStore::new(store.client(&aws), store.table_name),
            marketplace,
            SystemClock,
        ),
    };
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(serde_json::to_value(job.handle(&event.payload).await)?)
    }))
    .await
}
