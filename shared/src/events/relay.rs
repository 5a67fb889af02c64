//! The stream consumer: each batch of stream records becomes lifecycle events on the bus, in
//! stream order (commit order per subscription), at least once.
//!
//! A record that cannot be published (the bus refuses, or the entry does not decode) ends the
//! batch there: Lambda is told to retry from it (`batchItemFailures`), so nothing after it is
//! lost and no later event of its subscription is published ahead of it; what other
//! subscriptions' events were published after it is published again on the retry (consumers
//! deduplicate on `eventId`).

use std::time::Duration;

use serde::Serialize;

use super::SubscriptionEvent;
use super::bus::{EventBus, MAX_BATCH};
use super::stream::{StreamBatch, StreamItem};

/// Tries per group of events before the batch is handed back to Lambda.
const PUBLISH_ATTEMPTS: u32 = 3;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Relayed {
    /// Events accepted by the bus.
    pub published: usize,
    /// Records that are not events (other items, history entries that changed nothing).
    pub skipped: usize,
    /// The record to retry from; `None` when the whole batch is done.
    pub retry_from: Option<String>,
}

impl Relayed {
    /// Lambda's partial batch response (`ReportBatchItemFailures`).
    pub fn batch_response(&self) -> serde_json::Value {
        let failures: Vec<_> = self
            .retry_from
            .iter()
            .map(|sequence| serde_json::json!({ "itemIdentifier": sequence }))
            .collect();
        serde_json::json!({ "batchItemFailures": failures })
    }
}

pub struct Relay<B> {
    bus: B,
    /// Wait before the n-th retry of a group: n times this.
    backoff: Duration,
}

impl<B: EventBus> Relay<B> {
    pub fn new(bus: B) -> Self {
        Self { bus, backoff: Duration::from_millis(200) }
    }

    /// The same relay with another wait between tries (tests use none).
    pub fn with_backoff(self, backoff: Duration) -> Self {
        Self { backoff, ..self }
    }

    pub fn bus(&self) -> &B {
        &self.bus
    }

    pub async fn handle(&self, batch: &StreamBatch) -> Relayed {
        let mut relayed = Relayed::default();
        // The events of the batch, up to the first record that cannot be read.
        let mut events: Vec<(String, SubscriptionEvent)> = Vec::new();
        let mut unreadable = None;
        for record in &batch.records {
            let sequence = &record.dynamodb.sequence_number;
            match record.item() {
                Ok(StreamItem::History(entry)) => match SubscriptionEvent::from_history(&entry) {
                    Some(event) => events.push((sequence.clone(), event)),
                    None => relayed.skipped += 1,
                },
                Ok(StreamItem::Other) => relayed.skipped += 1,
                Err(error) => {
                    tracing::error!(%error, "a stream record cannot be read; the batch is retried from it");
                    unreadable = Some(sequence.clone());
                    break;
                }
            }
        }
        let mut pending: &[(String, SubscriptionEvent)] = &events;
        while !pending.is_empty() {
            let group = &pending[..group_size(pending)];
            match self.publish_group(group).await {
                Ok(()) => {
                    relayed.published += group.len();
                    pending = &pending[group.len()..];
                }
                Err(published) => {
                    relayed.published += published;
                    relayed.retry_from = Some(group[published].0.clone());
                    return relayed;
                }
            }
        }
        relayed.retry_from = unreadable;
        relayed
    }

    /// Publishes a group, trying again from its first refused event; `Err(n)`: only the first
    /// `n` were accepted.
    async fn publish_group(&self, group: &[(String, SubscriptionEvent)]) -> Result<(), usize> {
        let mut done = 0;
        for attempt in 1..=PUBLISH_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(self.backoff * (attempt - 1)).await;
            }
            let rest: Vec<SubscriptionEvent> = group[done..].iter().map(|(_, e)| e.clone()).collect();
            match self.bus.publish(&rest).await {
                Ok(results) => {
                    // Order matters within a subscription: everything after the first refusal is
                    // published again with it.
                    match results.iter().position(Option::is_some) {
                        None => {
                            for event in &rest {
                                log_published(event);
                            }
                            return Ok(());
                        }
                        Some(refused) => {
                            for event in &rest[..refused] {
                                log_published(event);
                            }
                            let reason = results[refused].as_deref().unwrap_or_default();
                            let event = &rest[refused];
                            tracing::warn!(subscription_id = %event.subscription_id, operation_id = %event.operation_id, event_id = %event.event_id, attempt, %reason, "the bus refused an event");
                            done += refused;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(attempt, error = %crate::error_chain(&error), "the bus could not be reached");
                }
            }
        }
        Err(done)
    }
}

/// How many of the next events go in one request: up to [`MAX_BATCH`], and at most one per
/// subscription, because the bus takes or refuses each entry on its own: a later event of a
/// subscription must never be taken while an earlier one is refused.
fn group_size(events: &[(String, SubscriptionEvent)]) -> usize {
    let mut seen = Vec::with_capacity(MAX_BATCH);
    events
        .iter()
        .take(MAX_BATCH)
        .take_while(|(_, event)| {
            let first = !seen.contains(&&event.subscription_id);
            seen.push(&event.subscription_id);
            first
        })
        .count()
}

fn log_published(event: &SubscriptionEvent) {
    tracing::info!(
        subscription_id = %event.subscription_id,
        operation_id = %event.operation_id,
        event_id = %event.event_id,
        event_type = %event.event_type,
        version = event.version,
        "event published"
    );
}
