//! The lifecycle events' stream consumer: Lambda's event source mapping hands it batches of the
//! table's stream records; the core's [`Relay`] publishes one event per applied change and says
//! where Lambda must retry from, which this renders as Lambda's partial batch response.

use std::time::Instant;

use fulfillment::config::Environment;
use fulfillment::events::bus::{EventBridgeBus, EventBus};
use fulfillment::events::relay::{Relay, Relayed};
use fulfillment::events::stream::StreamBatch;
use fulfillment::wiring::StartupError;
use serde_json::{Value, json};

pub struct EventsRelay<B> {
    pub relay: Relay<B>,
}

/// The relay as deployed: EventBridge.
pub type Deployed = EventsRelay<EventBridgeBus>;

impl Deployed {
    /// The one way to build the deployed relay (its `main.rs`, the local stack).
    pub fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        Ok(Self::new(fulfillment::wiring::event_bus(&environment)?))
    }
}

impl<B: EventBus> EventsRelay<B> {
    pub fn new(bus: B) -> Self {
        Self { relay: Relay::new(bus) }
    }

    /// `event` is a batch of DynamoDB stream records, to be done by `deadline`. A batch that is
    /// not one is an error: Lambda retries it, then hands it to the dead-letter queue.
    pub async fn handle(&self, event: Value, deadline: Instant) -> Result<Relayed, serde_json::Error> {
        let batch: StreamBatch = serde_json::from_value(event)?;
        let relayed = self.relay.handle(&batch, deadline).await;
        tracing::info!(records = batch.records.len(), published = relayed.published, skipped = relayed.skipped, retry_from = ?relayed.retry_from, "stream batch relayed");
        Ok(relayed)
    }
}

/// Lambda's partial batch response (`ReportBatchItemFailures`): where to retry from, if anywhere.
pub fn batch_response(relayed: &Relayed) -> Value {
    let failures: Vec<Value> =
        relayed.retry_from.iter().map(|sequence| json!({ "itemIdentifier": sequence })).collect();
    json!({ "batchItemFailures": failures })
}
