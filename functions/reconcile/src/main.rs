//! Builds the reconciliation once per execution environment, then runs it on each schedule tick.

use fulfillment::config::Environment;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_runtime::tracing::init_default_subscriber();

    let job = reconcile::Deployed::from_environment(Environment::from_process())
        .await
        .inspect_err(|e| tracing::error!(error = %fulfillment::error_chain(e), "cannot start"))?;
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // An incomplete run is Lambda's error (its metric and alarms see it); the summary is logged.
        let summary = job.handle(&event.payload).await.into_result()?;
        Ok::<_, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
