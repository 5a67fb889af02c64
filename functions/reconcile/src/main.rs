//! Builds the reconciliation once per execution environment, then runs it on each schedule tick.

use fulfillment::config::Environment;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON). A
    // start-up error is printed once, as its whole chain in words (`StartupError`'s `Debug`).
    let environment = Environment::from_process();
    fulfillment::logging::init(&environment.logging());

    let job = reconcile::Deployed::from_environment(environment).await?;
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Lambda's deadline, in milliseconds since the epoch: the run hands over before it.
        let deadline = chrono::DateTime::from_timestamp_millis(event.context.deadline as i64)
            .ok_or("the invocation's deadline is not a time")?;
        let report = job.handle(&event.payload, deadline).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
