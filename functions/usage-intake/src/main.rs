//! Builds the intake once per execution environment, then takes each batch of SQS messages.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulfillment::config::Environment;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON). A
    // start-up error is printed once, as its whole chain in words (`StartupError`'s `Debug`).
    let environment = Environment::from_process();
    fulfillment::logging::init(&environment.logging());

    let intake = usage_intake::Deployed::from_environment(environment).await?;
    let intake = &intake;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Lambda's deadline is wall-clock milliseconds; the intake counts on the monotonic clock.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now));
        let intake_done = intake.handle(event.payload, Instant::now() + left).await?;
        Ok::<_, Error>(usage_intake::batch_response(&intake_done))
    }))
    .await
}
