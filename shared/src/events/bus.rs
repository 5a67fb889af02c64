//! The event bus port, and its Amazon EventBridge adapter.

use std::future::Future;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::{EVENT_SOURCE, SubscriptionEvent};

/// At most this many events in one [`EventBus::publish`] (EventBridge's PutEvents limit).
pub const MAX_BATCH: usize = 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("the event bus could not be reached or refused the request")]
pub struct BusError(#[source] pub BoxError);

/// Where lifecycle events go.
pub trait EventBus: Send + Sync {
    /// Publishes up to [`MAX_BATCH`] events; for each, `None` when accepted or why it was not.
    fn publish(
        &self,
        events: &[SubscriptionEvent],
    ) -> impl Future<Output = Result<Vec<Option<String>>, BusError>> + Send;
}

/// An EventBridge event bus.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        Self { client, bus_name: bus_name.into() }
    }
}

impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[SubscriptionEvent]) -> Result<Vec<Option<String>>, BusError> {
        let entries = events
            .iter()
            .map(|event| {
                let detail = serde_json::to_string(event).map_err(|e| BusError(e.into()))?;
                Ok(PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(EVENT_SOURCE)
                    .detail_type(event.event_type.as_str())
                    .detail(detail)
                    .build())
            })
            .collect::<Result<Vec<_>, BusError>>()?;
        let output =
            self.client.put_events().set_entries(Some(entries)).send().await.map_err(|e| {
                BusError(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string().into())
            })?;
        // One result per entry, in order; a failed one carries an error code.
        let results = output.entries();
        Ok((0..events.len())
            .map(|i| match results.get(i) {
                Some(result) if result.error_code().is_none() && result.event_id().is_some() => None,
                Some(result) => Some(format!(
                    "{}: {}",
                    result.error_code().unwrap_or("no event id"),
                    result.error_message().unwrap_or_default()
                )),
                None => Some("no result for this entry".to_owned()),
            })
            .collect())
    }
}
