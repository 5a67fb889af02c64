//! The stream consumer: each batch of stream records becomes lifecycle events on the bus, in
//! stream order (commit order per subscription), at least once.
//!
//! A record that cannot be published (the bus refuses, or the entry does not decode) ends the
//! batch there: Lambda is told to retry from it (`batchItemFailures`), so nothing after it is
//! lost and no later event of its subscription is published ahead of it; what other
//! subscriptions' events were published after it is published again on the retry (consumers
//! deduplicate on `eventId`). Nothing is attempted without time left before `deadline` (Lambda's):
//! a timed-out invocation would lose the whole batch's checkpoint.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::SubscriptionEvent;
use super::bus::{EventBus, MAX_BATCH};
use super::stream::{StreamBatch, StreamItem};

/// Tries per group of events before the batch is handed back to Lambda.
const PUBLISH_ATTEMPTS: u32 = 3;

/// The longest one publish may take (the EventBridge client's operation timeout, and some): no
/// attempt starts with less time than this left, so the function answers before Lambda's timeout
/// and keeps its checkpoint.
pub const ATTEMPT_BUDGET: Duration = Duration::from_secs(5);

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

    /// Relays the batch; what is not published by `deadline` is handed back (`retry_from`).
    pub async fn handle(&self, batch: &StreamBatch, deadline: Instant) -> Relayed {
        let BatchEvents { events, skipped, unreadable } = events_of(batch);
        let mut relayed = Relayed { skipped, ..Relayed::default() };
        let mut pending: &[(String, SubscriptionEvent)] = &events;
        while !pending.is_empty() {
            let group = &pending[..group_size(pending)];
            match self.publish_group(group, deadline).await {
                Ok(()) => {
                    relayed.published += group.len();
                    pending = &pending[group.len()..];
                }
                Err(first_unpublished) => {
                    // Those after it in the group may be out: Lambda's retry publishes them again.
                    relayed.published += first_unpublished;
                    relayed.retry_from = Some(group[first_unpublished].0.clone());
                    return relayed;
                }
            }
        }
        relayed.retry_from = unreadable;
        relayed
    }

    /// Publishes a group (one event per subscription at most), trying the refused events again;
    /// `Err(n)`: the `n`-th is the first that could not be published (the others may have been).
    async fn publish_group(
        &self,
        group: &[(String, SubscriptionEvent)],
        deadline: Instant,
    ) -> Result<(), usize> {
        // Indexes into `group` not accepted yet.
        let mut waiting: Vec<usize> = (0..group.len()).collect();
        for attempt in 1..=PUBLISH_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(self.backoff * (attempt - 1)).await;
            }
            if Instant::now() + ATTEMPT_BUDGET > deadline {
                tracing::warn!(attempt, "no time left for another publish: the batch is handed back");
                break;
            }
            let events: Vec<SubscriptionEvent> = waiting.iter().map(|&i| group[i].1.clone()).collect();
            match self.bus.publish(&events).await {
                Ok(results) => {
                    let mut refused = Vec::new();
                    for (position, &i) in waiting.iter().enumerate() {
                        let event = &group[i].1;
                        match results.get(position) {
                            Some(None) => log_published(event),
                            Some(Some(reason)) => {
                                tracing::warn!(subscription_id = %event.subscription_id, operation_id = %event.operation_id, event_id = %event.event_id, attempt, %reason, "the bus refused an event");
                                refused.push(i);
                            }
                            None => refused.push(i),
                        }
                    }
                    waiting = refused;
                    if waiting.is_empty() {
                        return Ok(());
                    }
                }
                Err(error) => {
                    tracing::warn!(attempt, error = %crate::error_chain(&error), "the bus could not be reached");
                }
            }
        }
        Err(waiting[0])
    }
}

/// A batch's lifecycle events, in stream order, each with its record's sequence number.
#[derive(Debug, Default)]
pub struct BatchEvents {
    /// The events, up to the first record that cannot be read.
    pub events: Vec<(String, SubscriptionEvent)>,
    /// Records that are not events (other items, history entries that changed nothing).
    pub skipped: usize,
    /// The sequence number of the first record that cannot be read, if any.
    pub unreadable: Option<String>,
}

/// The lifecycle events `batch`'s records make, up to the first record that cannot be read.
pub fn events_of(batch: &StreamBatch) -> BatchEvents {
    let mut found = BatchEvents::default();
    for record in &batch.records {
        let sequence = &record.dynamodb.sequence_number;
        match record.item() {
            Ok(StreamItem::History(entry)) => match SubscriptionEvent::from_history(&entry) {
                Some(event) => found.events.push((sequence.clone(), event)),
                None => found.skipped += 1,
            },
            Ok(StreamItem::Other) => found.skipped += 1,
            Err(error) => {
                tracing::error!(%error, "a stream record cannot be read; the batch is retried from it");
                found.unreadable = Some(sequence.clone());
                break;
            }
        }
    }
    found
}

/// How many of the next events go in one request: up to [`MAX_BATCH`], and at most one per
/// subscription, because the bus takes or refuses each entry on its own: a later event of a
/// subscription must never be taken while an earlier one is refused.
pub fn group_size(events: &[(String, SubscriptionEvent)]) -> usize {
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
