//! Builds the relay once per execution environment, then relays each stream batch.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulfillment::config::Environment;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

/// Kept back from Lambda's deadline to answer in.
const MARGIN: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON). A
    // start-up error is printed once, as its whole chain in words (`StartupError`'s `Debug`).
    let environment = Environment::from_process();
    fulfillment::logging::init(&environment.logging());

    let relay = events_relay::Deployed::from_environment(environment)?;
    let relay = &relay;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Lambda's deadline is wall-clock milliseconds; the relay counts on the monotonic clock.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now));
        let relayed = relay.handle(event.payload, Instant::now() + left.saturating_sub(MARGIN)).await?;
        Ok::<_, Error>(events_relay::batch_response(&relayed))
    }))
    .await
}
