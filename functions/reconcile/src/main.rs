//! Wires the reconciliation once per execution environment, then runs it on each schedule tick.

use fulfillment::clock::SystemClock;
use fulfillment::reconcile::Reconciler;
use fulfillment::settings::Services;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use reconcile::ReconcileJob;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_runtime::tracing::init_default_subscriber();

    let services = Services::load().await?;
    let job = ReconcileJob {
        reconciler: Reconciler::new(services.store.clone(), services.marketplace_client()?, SystemClock),
    };
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // An incomplete run is Lambda's error (its metric and alarms see it); the summary is logged.
        let summary = job.handle(&event.payload).await.into_result()?;
        Ok::<_, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
