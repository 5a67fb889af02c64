//! The scheduled reconciliation: read every subscription from Microsoft (all pages), compare with
//! the table, repair each difference, add subscriptions we never saw, and finish or drop pending
//! publisher operations by their status at Microsoft. Webhooks get lost (docs/marketplace-api.md#webhook-delivery, #known-pitfalls
//! item 9); this makes our records equal Microsoft's. Safe while webhooks arrive: every write is
//! optimistic, and a snapshot older than the last applied event is not applied.

use std::collections::HashMap;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::admin::drop_pending;
use crate::changes::{Effect, Event, record_event};
use crate::clock::Clock;
use crate::domain::{OperationId, OperationStatus, Subscription, SubscriptionId, Timestamp};
use crate::marketplace::{Call, MarketplaceApi, MarketplaceError, PageToken};
use crate::store::{ChangeSource, StoreError, SubscriptionRecord, SubscriptionStore};

/// What one run did; logged as one JSON line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Subscriptions Microsoft listed.
    pub seen: u64,
    /// Recorded for the first time.
    pub added: u64,
    /// Repaired: our record differed from Microsoft's.
    pub changed: u64,
    /// Already equal.
    pub unchanged: u64,
    /// Pending publisher operations that completed at Microsoft, and were applied.
    pub operations_finished: u64,
    /// Pending publisher operations that failed at Microsoft, and were dropped.
    pub operations_dropped: u64,
    /// Subscriptions that could not be reconciled this time (the rest were).
    pub errors: u64,
    /// Whether every page was read.
    pub complete: bool,
    pub elapsed_ms: u64,
}

/// A run that could not read Microsoft's whole list: reported to Lambda as an error, so that its
/// error metric (and an alarm on it) sees it.
#[derive(Debug, thiserror::Error)]
#[error("the reconciliation run was incomplete ({} subscriptions seen, {} errors)", .0.seen, .0.errors)]
pub struct IncompleteRun(pub Summary);

impl Summary {
    /// `Err` when the run did not read every page.
    pub fn into_result(self) -> Result<Summary, IncompleteRun> {
        if self.complete { Ok(self) } else { Err(IncompleteRun(self)) }
    }
}

/// What reconciling one subscription did.
enum Reconciled {
    Added,
    Changed,
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
/// Why one subscription could not be reconciled this time.
enum SubscriptionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Marketplace(#[from] MarketplaceError),
}

pub struct Reconciler<S, M, C> {
    store: S,
    marketplace: M,
    clock: C,
    /// Subscriptions reconciled at once.
    pub concurrency: usize,
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> Reconciler<S, M, C> {
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self { store, marketplace, clock, concurrency: 16 }
    }

    /// One full pass; `run_id` correlates its calls and names its operations.
    pub async fn run(&self, run_id: &str) -> Summary {
        let started = Instant::now();
        let mut summary = Summary::default();
        let call = Call::correlated(run_id);
        let mut next: Option<PageToken> = None;
        loop {
            let listed_at = self.clock.now();
            let page = match self.marketplace.list_subscriptions(next.as_ref(), &call).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(run_id, error = %crate::error_chain(&error), "listing subscriptions failed; the run is incomplete");
                    summary.errors += 1;
                    break;
                }
            };
            self.page(run_id, page.subscriptions, listed_at, &mut summary).await;
            match page.next {
                Some(token) if Some(&token) != next.as_ref() => next = Some(token),
                _ => {
                    summary.complete = true;
                    break;
                }
            }
        }
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            run_id,
            seen = summary.seen,
            added = summary.added,
            changed = summary.changed,
            unchanged = summary.unchanged,
            operations_finished = summary.operations_finished,
            operations_dropped = summary.operations_dropped,
            errors = summary.errors,
            complete = summary.complete,
            elapsed_ms = summary.elapsed_ms,
            "reconcile finished"
        );
        summary
    }

    async fn page(
        &self,
        run_id: &str,
        subscriptions: Vec<Subscription>,
        listed_at: Timestamp,
        summary: &mut Summary,
    ) {
        summary.seen += subscriptions.len() as u64;
        let ids: Vec<SubscriptionId> = subscriptions.iter().map(|s| s.id.clone()).collect();
        let stored: HashMap<SubscriptionId, SubscriptionRecord> = match self.store.get_many(&ids).await {
            Ok(records) => records.into_iter().map(|r| (r.subscription.id.clone(), r)).collect(),
            Err(error) => {
                tracing::error!(run_id, error = %crate::error_chain(&error), "reading a page of records failed");
                summary.errors += ids.len() as u64;
                return;
            }
        };
        let outcomes: Vec<_> = stream::iter(subscriptions)
            .map(|subscription| {
                let record = stored.get(&subscription.id);
                async move {
                    let id = subscription.id.clone();
                    (id, self.reconcile_subscription(run_id, subscription, record, listed_at).await)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        for (id, outcome) in outcomes {
            match outcome {
                Ok((result, finished, dropped)) => {
                    match result {
                        Reconciled::Added => summary.added += 1,
                        Reconciled::Changed => summary.changed += 1,
                        Reconciled::Unchanged => summary.unchanged += 1,
                    }
                    summary.operations_finished += finished;
                    summary.operations_dropped += dropped;
                }
                Err(error) => {
                    tracing::warn!(run_id, subscription_id = %id, error = %crate::error_chain(&error), "not reconciled this time");
                    summary.errors += 1;
                }
            }
        }
    }

    /// Reconciles one subscription: its pending operation first, then its state.
    async fn reconcile_subscription(
        &self,
        run_id: &str,
        listed: Subscription,
        record: Option<&SubscriptionRecord>,
        listed_at: Timestamp,
    ) -> Result<(Reconciled, u64, u64), SubscriptionError> {
        let call = Call::correlated(run_id);
        let (finished, mut dropped) = (0, 0);
        if let Some(pending) = record.and_then(|r| r.pending_operation.as_ref()) {
            let status = match self.marketplace.get_operation(&listed.id, &pending.id, &call).await {
                Ok(operation) => operation.status,
                Err(MarketplaceError::NotFound { .. }) => Some(OperationStatus::Failed),
                // The real service answers 400 for an operation it does not know, but a 400 may
                // also pass: only an operation that long outlived Microsoft's processing is given up.
                Err(MarketplaceError::BadRequest { .. })
                    if self.clock.now() - pending.requested_at > PENDING_GIVE_UP =>
                {
                    Some(OperationStatus::Failed)
                }
                Err(error @ MarketplaceError::BadRequest { .. }) => {
                    tracing::warn!(run_id, subscription_id = %listed.id, operation_id = %pending.id, error = %crate::error_chain(&error), "pending operation not confirmed; kept for the next run");
                    None
                }
                Err(error) => return Err(error.into()),
            };
            match status {
                Some(OperationStatus::Succeeded) => {
                    // The listing may predate the completion: read Microsoft's view now.
                    let read_at = self.clock.now();
                    let now = self.marketplace.get_subscription(&listed.id, &call).await?;
                    // A webhook may have settled it meanwhile: then nothing is written here.
                    return Ok(match self.observe(&now, read_at, &pending.id).await? {
                        Effect::Written { .. } => (Reconciled::Changed, 1, dropped),
                        _ => (Reconciled::Unchanged, 0, dropped),
                    });
                }
                Some(OperationStatus::Failed | OperationStatus::Conflict) => {
                    let current = self.store.get(&listed.id).await?;
                    // Only the operation checked: another may have been requested since.
                    let still_pending = current
                        .as_ref()
                        .filter(|c| c.pending_operation.as_ref().is_some_and(|p| p.id == pending.id));
                    if let Some(change) = still_pending
                        .and_then(|c| drop_pending(c, "the operation failed at Microsoft", self.clock.now()))
                    {
                        match self.store.apply(&change).await {
                            Ok(_) => dropped = 1,
                            // A webhook settled it meanwhile; the next run sees the rest.
                            Err(StoreError::Conflict { .. }) => {}
                            Err(error) => return Err(error.into()),
                        }
                    }
                }
                _ => {}
            }
        }
        let operation = reconcile_operation(run_id, &listed.id);
        let Some(record) = record else {
            return Ok(match self.observe(&listed, listed_at, &operation).await? {
                Effect::Written { .. } => (Reconciled::Added, finished, dropped),
                _ => (Reconciled::Unchanged, finished, dropped),
            });
        };
        if record.subscription == listed {
            return Ok((Reconciled::Unchanged, finished, dropped));
        }
        // Decided on the record as it is when written: a webhook that wrote a view read after the
        // listing wins (the listing is stale), whenever it got in.
        match self.observe(&listed, listed_at, &operation).await? {
            Effect::Written { .. } => Ok((Reconciled::Changed, finished, dropped)),
            _ => Ok((Reconciled::Unchanged, finished, dropped)),
        }
    }

    async fn observe(
        &self,
        subscription: &Subscription,
        read_at: Timestamp,
        operation_id: &OperationId,
    ) -> Result<Effect, StoreError> {
        let event =
            Event::observed(subscription.clone(), read_at, operation_id.clone(), ChangeSource::Reconcile);
        record_event(&self.store, &event, self.clock.now()).await
    }
}

/// How long a pending operation Microsoft answers 400 for is kept before it is given up.
const PENDING_GIVE_UP: chrono::Duration = chrono::Duration::hours(24);

fn reconcile_operation(run_id: &str, id: &SubscriptionId) -> OperationId {
    OperationId::parse(&format!("reconcile-{run_id}-{id}")).expect("not empty")
}
