//! Builds the relay once per execution environment, then relays each stream batch.

use fulfillment::config::Environment;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();

    let relay = events_relay::Deployed::from_environment(Environment::from_process()).await?;
    let relay = &relay;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let relayed = relay.handle(event.payload).await?;
        Ok::<_, Error>(relayed.batch_response())
    }))
    .await
}
