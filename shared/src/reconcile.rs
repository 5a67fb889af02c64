//! The scheduled reconciliation: read every subscription from Microsoft (all pages), compare with
//! the table, repair each difference, add subscriptions we never saw, and finish or drop pending
//! publisher operations by their status at Microsoft. Webhooks get lost (docs/marketplace-api.md#webhook-delivery, #known-pitfalls
//! item 9); this makes our records equal Microsoft's. Safe while webhooks arrive: every write is
//! optimistic, and a snapshot older than the last applied event is not applied.
//!
//! A pass (one read of the whole list) may take many invocations: after each page its position
//! (Microsoft's continuation token) and its counts are saved in the table's checkpoint, and an
//! invocation near its deadline hands over to the next one, which goes on from there. A lease in
//! the checkpoint keeps two runs from working at once; a run that fails releases it, so that its
//! retry goes on from the last saved page instead of the first.

use std::collections::HashMap;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::admin::drop_pending;
use crate::changes::{Effect, Event, record_event};
use crate::clock::Clock;
use crate::domain::{OperationId, OperationStatus, Subscription, SubscriptionId, Timestamp};
use crate::marketplace::{Call, MarketplaceApi, MarketplaceError, PageToken};
use crate::store::{
    ChangeSource, Lease, ReconcileCheckpoint, StoreError, SubscriptionRecord, SubscriptionStore,
};

/// One pass, summed over the invocations that worked on it; kept in the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The invocation that started it.
    pub pass_id: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Invocations that worked on it.
    pub invocations: u32,
    /// Pages read (a page read again after a lost invocation counts again).
    pub pages: u64,
    /// Times Microsoft refused the saved position, so that the pass went on from the first page.
    pub restarts: u32,
    /// Subscriptions Microsoft listed.
    pub seen: u64,
    /// Recorded for the first time.
    pub added: u64,
    /// Repaired: our record differed from Microsoft's (including pending operations finished).
    pub changed: u64,
    /// Of those, the ones no operation of ours explains: changes the webhook missed.
    #[serde(default)]
    pub drifted: u64,
    /// Already equal.
    pub unchanged: u64,
    /// Pending publisher operations that completed at Microsoft, and were applied.
    pub operations_finished: u64,
    /// Pending publisher operations that failed at Microsoft, and were dropped.
    pub operations_dropped: u64,
    /// Subscriptions that could not be reconciled this time (the rest were).
    pub errors: u64,
    /// Invocations that could not go on (Microsoft's list or the table failed) and left the pass
    /// to the next one.
    pub failed_runs: u32,
    /// Whether every page was read.
    pub complete: bool,
    /// Working time, summed over its invocations.
    pub elapsed_ms: u64,
}

/// What one invocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// It read the last page: the pass is finished.
    Finished,
    /// It stopped near its deadline; the next invocation goes on from the saved page.
    HandedOver,
    /// Another run holds the reconciliation: it did nothing.
    Busy,
    /// No pass is due (the last one started less than the interval ago): it did nothing.
    Idle,
    /// It could not go on (Microsoft's list or the table failed); the position is kept, unless
    /// Microsoft refused it more than [`MAX_RESTARTS`] times: then the pass is given up,
    /// incomplete, and the next starts when it is due.
    Failed,
}

impl Outcome {
    /// As the report and the log line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::HandedOver => "handedOver",
            Self::Busy => "busy",
            Self::Idle => "idle",
            Self::Failed => "failed",
        }
    }
}

/// One invocation's report; logged as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub outcome: Outcome,
    /// Pages this invocation read.
    pub pages: u64,
    pub elapsed_ms: u64,
    /// The pass as this invocation left it (the finished one when `Finished`).
    pub pass: Option<Summary>,
}

/// An invocation that could not go on: reported to Lambda as an error, so that its error metric
/// (and an alarm on it) sees it, and Lambda's retry goes on from the saved position.
#[derive(Debug, thiserror::Error)]
#[error("the reconciliation could not go on ({} pages read by this run); its position is kept", .0.pages)]
pub struct IncompleteRun(pub Box<Report>);

impl Report {
    /// `Err` when the invocation failed.
    pub fn into_result(self) -> Result<Report, IncompleteRun> {
        if self.outcome == Outcome::Failed { Err(IncompleteRun(Box::new(self))) } else { Ok(self) }
    }
}

/// The invocation a run works in.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// Names its writes; the same for Lambda's retries of it, which may take over its lease.
    pub id: &'a str,
    /// When the invocation is stopped (Lambda's deadline).
    pub deadline: Timestamp,
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
    /// A new pass starts when the last one started at least this long ago.
    pub interval: chrono::Duration,
    /// No page is begun with less than this left before the deadline: a page's worst case.
    pub handover_margin: chrono::Duration,
    /// Calls to Microsoft end this long before the deadline, so that a page cut short is still
    /// saved (its cut subscriptions counted as errors) and the next run goes on after it.
    pub save_reserve: std::time::Duration,
}

/// How long past its deadline a lease holds: the deadline is Lambda's, so the run is over by then.
const LEASE_SLACK: chrono::Duration = chrono::Duration::seconds(5);

/// A pass whose saved position Microsoft refuses more often is given up, not started over.
pub const MAX_RESTARTS: u32 = 3;

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> Reconciler<S, M, C> {
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self {
            store,
            marketplace,
            clock,
            concurrency: 16,
            interval: chrono::Duration::hours(1),
            handover_margin: chrono::Duration::minutes(1),
            save_reserve: std::time::Duration::from_secs(10),
        }
    }

    /// Goes on with the pass under way, or starts one if one is due, until the pass is finished or
    /// the invocation nears its deadline.
    pub async fn run(&self, invocation: &Invocation<'_>) -> Report {
        self.invoke(invocation, false).await
    }

    /// [`Self::run`], starting a new pass now (due or not, a pass under way dropped): an operator's
    /// "reconcile now".
    pub async fn start(&self, invocation: &Invocation<'_>) -> Report {
        self.invoke(invocation, true).await
    }

    /// A whole new pass now, due or not, with no deadline (local runs, tests, benchmarks): a pass
    /// under way is dropped, so that every subscription is compared from now on. The pass as it
    /// ended (`complete` unless Microsoft's list or the table failed, or another run holds the
    /// reconciliation).
    pub async fn pass(&self, run_id: &str) -> Summary {
        // As long as a deployed invocation may take: the lease of a run whose caller went away
        // ends by then.
        let deadline = self.clock.now() + chrono::Duration::minutes(15);
        let report = self.invoke(&Invocation { id: run_id, deadline }, true).await;
        let mut pass = report.pass.unwrap_or_default();
        if report.outcome != Outcome::Finished {
            pass.complete = false;
        }
        pass
    }

    async fn invoke(&self, invocation: &Invocation<'_>, start_now: bool) -> Report {
        let started = Instant::now();
        let mut report = Report { outcome: Outcome::Failed, pages: 0, elapsed_ms: 0, pass: None };
        report.outcome = match self.work(invocation, start_now, &mut report, started).await {
            Ok(outcome) => outcome,
            Err(StoreError::CheckpointTaken) => {
                tracing::warn!(
                    run_id = invocation.id,
                    "another run took over the reconciliation; this one stops"
                );
                Outcome::Busy
            }
            Err(error) => {
                tracing::error!(run_id = invocation.id, error = %crate::error_chain(&error), "the reconciliation's checkpoint could not be read or saved");
                Outcome::Failed
            }
        };
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let pass = report.pass.as_ref();
        tracing::info!(
            run_id = invocation.id,
            outcome = report.outcome.as_str(),
            pages = report.pages,
            elapsed_ms = report.elapsed_ms,
            pass_id = pass.map(|p| p.pass_id.as_str()),
            seen = pass.map(|p| p.seen),
            added = pass.map(|p| p.added),
            changed = pass.map(|p| p.changed),
            drifted = pass.map(|p| p.drifted),
            unchanged = pass.map(|p| p.unchanged),
            operations_finished = pass.map(|p| p.operations_finished),
            operations_dropped = pass.map(|p| p.operations_dropped),
            errors = pass.map(|p| p.errors),
            failed_runs = pass.map(|p| p.failed_runs),
            restarts = pass.map(|p| p.restarts),
            invocations = pass.map(|p| p.invocations),
            complete = pass.map(|p| p.complete),
            "reconcile run ended"
        );
        report
    }

    async fn work(
        &self,
        invocation: &Invocation<'_>,
        start_now: bool,
        report: &mut Report,
        started: Instant,
    ) -> Result<Outcome, StoreError> {
        let now = self.clock.now();
        let mut checkpoint = self.store.checkpoint().await?.unwrap_or_default();
        if let Some(lease) = &checkpoint.lease
            && lease.holder != invocation.id
            && lease.until > now
        {
            report.pass = checkpoint.pass;
            return Ok(Outcome::Busy);
        }
        let under_way = checkpoint.pass.take().filter(|_| !start_now);
        let mut pass = match under_way {
            Some(pass) => pass,
            None => {
                let due = start_now
                    || checkpoint
                        .last_pass
                        .as_ref()
                        .is_none_or(|last| now >= last.started_at + self.interval);
                if !due {
                    report.pass = checkpoint.last_pass;
                    return Ok(Outcome::Idle);
                }
                checkpoint.next_page = None;
                Summary { pass_id: invocation.id.to_owned(), started_at: now, ..Summary::default() }
            }
        };
        pass.invocations += 1;
        checkpoint.lease =
            Some(Lease { holder: invocation.id.to_owned(), until: invocation.deadline + LEASE_SLACK });
        let worked_before = pass.elapsed_ms;
        // No call outlives the invocation (a page begun in the margin still ends with it).
        let left = (invocation.deadline - self.clock.now()).to_std().unwrap_or_default();
        let call =
            Call::correlated(invocation.id).until(Instant::now() + left.saturating_sub(self.save_reserve));
        // Only the position read from the checkpoint may have expired at Microsoft.
        let mut from_saved_position = checkpoint.next_page.is_some();
        let mut given_up = false;
        let outcome = loop {
            pass.elapsed_ms = worked_before + started.elapsed().as_millis() as u64;
            checkpoint.pass = Some(pass.clone());
            report.pass = checkpoint.pass.clone();
            self.save(&mut checkpoint).await?;
            if self.clock.now() + self.handover_margin >= invocation.deadline {
                break Outcome::HandedOver;
            }
            let token = checkpoint.next_page.clone().map(PageToken);
            let listed_at = self.clock.now();
            let page = match self.marketplace.list_subscriptions(token.as_ref(), &call).await {
                Ok(page) => page,
                Err(error @ MarketplaceError::BadRequest { .. })
                    if from_saved_position && pass.restarts < MAX_RESTARTS =>
                {
                    tracing::warn!(run_id = invocation.id, pass_id = pass.pass_id, error = %crate::error_chain(&error), "Microsoft refused the saved position; the pass goes on from the first page");
                    pass.restarts += 1;
                    checkpoint.next_page = None;
                    from_saved_position = false;
                    continue;
                }
                Err(error @ MarketplaceError::BadRequest { .. }) if from_saved_position => {
                    // Given up, so that the next pass can start when it is due.
                    tracing::error!(run_id = invocation.id, pass_id = pass.pass_id, error = %crate::error_chain(&error), "Microsoft refused the saved position again; the pass is given up, incomplete");
                    pass.failed_runs += 1;
                    given_up = true;
                    break Outcome::Failed;
                }
                Err(error) => {
                    tracing::error!(run_id = invocation.id, pass_id = pass.pass_id, error = %crate::error_chain(&error), "listing subscriptions failed; the pass goes on from this page next time");
                    pass.failed_runs += 1;
                    break Outcome::Failed;
                }
            };
            from_saved_position = false;
            if let Err(error) =
                self.page(invocation.id, &call, page.subscriptions, listed_at, &mut pass).await
            {
                // Not skipped: the position stays, and the next run reads this page again.
                tracing::error!(run_id = invocation.id, pass_id = pass.pass_id, error = %crate::error_chain(&error), "reading a page's records failed; the pass goes on from this page next time");
                pass.failed_runs += 1;
                break Outcome::Failed;
            }
            pass.pages += 1;
            report.pages += 1;
            match page.next {
                Some(PageToken(next)) if checkpoint.next_page.as_ref() != Some(&next) => {
                    checkpoint.next_page = Some(next);
                }
                _ => {
                    pass.complete = true;
                    pass.finished_at = Some(self.clock.now());
                    break Outcome::Finished;
                }
            }
        };
        pass.elapsed_ms = worked_before + started.elapsed().as_millis() as u64;
        if outcome == Outcome::Finished || given_up {
            checkpoint.last_pass = Some(pass);
            checkpoint.pass = None;
            checkpoint.next_page = None;
            report.pass = checkpoint.last_pass.clone();
        } else {
            checkpoint.pass = Some(pass);
            report.pass = checkpoint.pass.clone();
        }
        // Released, so that the next run (or Lambda's retry of a failed one) need not wait.
        checkpoint.lease = None;
        self.save(&mut checkpoint).await?;
        Ok(outcome)
    }

    async fn save(&self, checkpoint: &mut ReconcileCheckpoint) -> Result<(), StoreError> {
        checkpoint.version = self.store.save_checkpoint(checkpoint).await?;
        Ok(())
    }

    async fn page(
        &self,
        run_id: &str,
        call: &Call,
        subscriptions: Vec<Subscription>,
        listed_at: Timestamp,
        summary: &mut Summary,
    ) -> Result<(), StoreError> {
        let ids: Vec<SubscriptionId> = subscriptions.iter().map(|s| s.id.clone()).collect();
        let stored: HashMap<SubscriptionId, SubscriptionRecord> =
            self.store.get_many(&ids).await?.into_iter().map(|r| (r.subscription.id.clone(), r)).collect();
        summary.seen += subscriptions.len() as u64;
        let outcomes: Vec<_> = stream::iter(subscriptions)
            .map(|subscription| {
                let record = stored.get(&subscription.id);
                async move {
                    let id = subscription.id.clone();
                    (id, self.reconcile_subscription(run_id, call, subscription, record, listed_at).await)
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
                        Reconciled::Changed => {
                            summary.changed += 1;
                            if finished == 0 {
                                summary.drifted += 1;
                            }
                        }
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
        Ok(())
    }

    /// Reconciles one subscription: its pending operation first, then its state.
    async fn reconcile_subscription(
        &self,
        run_id: &str,
        call: &Call,
        listed: Subscription,
        record: Option<&SubscriptionRecord>,
        listed_at: Timestamp,
    ) -> Result<(Reconciled, u64, u64), SubscriptionError> {
        let (finished, mut dropped) = (0, 0);
        if let Some(pending) = record.and_then(|r| r.pending_operation.as_ref()) {
            let status = match self.marketplace.get_operation(&listed.id, &pending.id, call).await {
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
                    let now = self.marketplace.get_subscription(&listed.id, call).await?;
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
