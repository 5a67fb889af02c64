//! Builds the emission once per execution environment, then runs it on each schedule tick.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulfillment::config::Environment;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON): the
    // metric filters read the run's "metering run ended" line. A start-up error is printed once,
    // as its whole chain in words (`StartupError`'s `Debug`).
    let environment = Environment::from_process();
    fulfillment::logging::init(&environment.logging());

    let job = metering::Deployed::from_environment(environment).await?;
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Lambda's deadline is wall-clock milliseconds; the calls count on the monotonic clock.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now));
        let report = job.handle(&event.payload, Instant::now() + left).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
