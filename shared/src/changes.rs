//! Turning an event into a [`Change`] for the store: the lifecycle decides, this module builds the
//! state, operation and history that record the decision.

use crate::domain::{
    OperationAction, OperationId, OperationStatus, PlanId, RequestSource, Subscription, SubscriptionId,
    SubscriptionStatus, Timestamp,
};
use crate::lifecycle::{LifecycleEvent, Transition, transition};
use crate::store::{
    Change, ChangeSource, Committed, HistoryEntry, OperationRecord, Outcome, Snapshot, StateWrite,
    StoreError, SubscriptionRecord, SubscriptionStore,
};

/// What the flow learned of Microsoft's side.
#[allow(clippy::large_enum_variant, reason = "short-lived: one per event")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Microsoft's whole view of the subscription (Get subscription, resolve, list), read by us at
    /// `as_of`: every field is taken from it, unless the record holds a view read later.
    View { subscription: Subscription, as_of: Timestamp },
    /// A plan or seat change Microsoft confirmed (its operation's values), applied onto the record
    /// as it is when written: a write that lost a race is decided again on the newer record.
    Delta { plan_id: Option<PlanId>, quantity: Option<u32> },
}

/// An event about one subscription, as a flow hands it to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The subscription Microsoft confirmed: the key of every write.
    pub subscription_id: SubscriptionId,
    /// The idempotency key: an event with an id already recorded is not applied again.
    pub operation_id: OperationId,
    pub lifecycle: LifecycleEvent,
    pub source: ChangeSource,
    pub action: Option<OperationAction>,
    pub requested_by: Option<RequestSource>,
    pub operation_status: Option<OperationStatus>,
    /// When the operation happened by Microsoft's own word (its operation's `timeStamp`, never a
    /// sender's); orders changes. Taken as no later than when it is applied.
    pub occurred_at: Option<Timestamp>,
    pub seen: Seen,
    /// Record the event even when it changes nothing (a webhook delivery is an operation of
    /// Microsoft's that must be kept); otherwise such an observation writes nothing.
    pub record_if_unchanged: bool,
}

impl Event {
    /// Microsoft's view of a subscription, read at `as_of`, recorded under `operation_id`.
    pub fn observed(
        subscription: Subscription,
        as_of: Timestamp,
        operation_id: OperationId,
        source: ChangeSource,
    ) -> Self {
        let status =
            subscription.status.clone().unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()));
        Self {
            subscription_id: subscription.id.clone(),
            operation_id,
            lifecycle: LifecycleEvent::Observed(status),
            source,
            action: None,
            requested_by: None,
            operation_status: None,
            occurred_at: None,
            seen: Seen::View { subscription, as_of },
            record_if_unchanged: false,
        }
    }
}

/// How long a cancelled customer's data is kept (docs/marketplace-api.md#data-retention: at least 7 days).
pub const DATA_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// What to do with an event.
#[allow(clippy::large_enum_variant, reason = "short-lived: one per event, moved straight into the store")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply this change to the store.
    Apply(Change),
    /// The change cannot follow from what we hold (no record, or a status it cannot apply to), or
    /// the view is older than the one we hold: read the subscription from Microsoft (again) and
    /// record that view instead.
    Resync,
    /// Nothing to record (an observation of what we already hold, or older than it).
    Nothing,
}

/// Decides what `event` does to `current` (the stored record, if any) and builds the change.
pub fn plan_change(current: Option<&SubscriptionRecord>, event: Event, now: Timestamp) -> Decision {
    // Nobody's clock may order a change after the moment it is applied (a date in 9999 would
    // freeze the subscription).
    let occurred_at = event.occurred_at.map(|at| at.min(now));
    let event = Event { occurred_at, ..event };
    let silent = !event.record_if_unchanged;
    // The publisher's pending change is settled by its own operation, whatever else it does.
    let settles =
        current.and_then(|c| c.pending_operation.as_ref()).is_some_and(|p| p.id == event.operation_id);
    let quiet = silent && !settles;

    if let Seen::View { subscription, .. } = &event.seen {
        let problem = if subscription.id != event.subscription_id {
            Some(format!("Microsoft's view names subscription {}", subscription.id))
        } else if subscription.status.is_none() {
            Some("Microsoft's view has no status: nothing applied".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            if quiet {
                return Decision::Nothing;
            }
            let state = keep_or_settle(current, settles, now);
            return Decision::Apply(build(event, current, state, Outcome::Unchanged, Some(problem), now));
        }
    }
    let Some(current) = current else {
        return first_sighting(event, now);
    };

    let (next, transition) = match &event.seen {
        Seen::View { subscription, as_of } => {
            // Read before the view we hold, or (by Microsoft's own clock, where both say) older
            // than it: a listing served from behind can be older than a view read before it.
            let read_earlier = current.view_as_of.is_some_and(|held| *as_of < held);
            let modified_earlier = subscription
                .last_modified
                .zip(current.subscription.last_modified)
                .is_some_and(|(seen, held)| seen < held);
            if read_earlier || modified_earlier {
                // A flow that records every event (the webhook) reads Microsoft again instead: its
                // operation id must not be spent on an old view.
                if event.record_if_unchanged && !settles {
                    return Decision::Resync;
                }
                (None, Transition::Stale)
            } else {
                let status = subscription.status.clone().unwrap_or_else(|| current.status());
                match transition(&current.status(), &LifecycleEvent::Observed(status.clone())) {
                    // Microsoft's view is the truth for every field, not only the status.
                    Transition::Unchanged | Transition::Move(_) => {
                        (Some(subscription.clone()), Transition::Move(status))
                    }
                    other => (None, other),
                }
            }
        }
        Seen::Delta { plan_id, quantity } => {
            // Only a change still waiting for its answer is applied as a delta, and Microsoft
            // allows one at a time: no later change of plan or seats can have been applied before
            // it, whatever other operations' times say.
            let decided = transition(&current.status(), &event.lifecycle);
            let mut next = current.subscription.clone();
            next.plan_id = plan_id.clone().or(next.plan_id);
            next.quantity = quantity.or(next.quantity);
            match decided {
                Transition::Move(status) => {
                    next.status = Some(status.clone());
                    (Some(next), Transition::Move(status))
                }
                other => (None, other),
            }
        }
    };

    let (outcome, detail) = match (transition, next) {
        (Transition::Resync, _) => return Decision::Resync,
        (Transition::Move(_), Some(next)) if next != current.subscription => {
            let detail = differences(&current.subscription, &next);
            let record = SubscriptionRecord {
                retain_data_until: match next.status {
                    Some(SubscriptionStatus::Unsubscribed) => {
                        current.retain_data_until.or(Some(now + DATA_RETENTION))
                    }
                    _ => None,
                },
                subscription: next,
                version: current.version + 1,
                last_event_at: current.last_event_at.max(occurred_at),
                view_as_of: current.view_as_of.max(Some(match &event.seen {
                    Seen::View { as_of, .. } => *as_of,
                    // Microsoft's state now is the one we hold plus this change.
                    Seen::Delta { .. } => now,
                })),
                updated_at: now,
                pending_operation: current.pending_operation.clone().filter(|_| !settles),
            };
            let state = StateWrite::Replace { expected_version: current.version, record };
            return Decision::Apply(build(event, Some(current), state, Outcome::Applied, Some(detail), now));
        }
        (Transition::Move(_), _) | (Transition::Unchanged, _) if quiet => return Decision::Nothing,
        (Transition::Move(_), _) => (Outcome::Unchanged, Some("already as Microsoft says".to_owned())),
        (Transition::Unchanged, _) => (Outcome::Unchanged, None),
        (Transition::Terminal | Transition::Stale, _) if quiet => return Decision::Nothing,
        (Transition::Terminal, _) => {
            (Outcome::Ignored, Some("the subscription is unsubscribed for good".to_owned()))
        }
        // Only a view is ever stale (a delta applies onto whatever we hold).
        (Transition::Stale, _) => (
            Outcome::Stale,
            Some(format!(
                "Microsoft's view is older than the one we hold, read at {}",
                fmt_time(current.view_as_of)
            )),
        ),
    };
    let state = keep_or_settle(Some(current), settles, now);
    Decision::Apply(build(event, Some(current), state, outcome, detail, now))
}

/// The state write of an event that changes nothing: settle the pending operation it completes,
/// otherwise keep the state as it was read.
fn keep_or_settle(current: Option<&SubscriptionRecord>, settles: bool, now: Timestamp) -> StateWrite {
    match current {
        Some(current) if settles => settled(current, now),
        _ => StateWrite::Keep { expected_version: current.map(|c| c.version) },
    }
}

/// The record as it is, without its pending operation.
pub fn settled(current: &SubscriptionRecord, now: Timestamp) -> StateWrite {
    let record = SubscriptionRecord {
        version: current.version + 1,
        updated_at: now,
        pending_operation: None,
        ..current.clone()
    };
    StateWrite::Replace { expected_version: current.version, record }
}

/// What differs between two views of a subscription, for the history.
fn differences(before: &Subscription, after: &Subscription) -> String {
    let mut changes = Vec::new();
    let mut note = |field: &str, a: String, b: String| {
        if a != b {
            changes.push(format!("{field} {a} -> {b}"));
        }
    };
    let text = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    note(
        "status",
        text(before.status.as_ref().map(|s| s.to_string())),
        text(after.status.as_ref().map(|s| s.to_string())),
    );
    note(
        "plan",
        text(before.plan_id.as_ref().map(|p| p.to_string())),
        text(after.plan_id.as_ref().map(|p| p.to_string())),
    );
    note("seats", text(before.quantity.map(|q| q.to_string())), text(after.quantity.map(|q| q.to_string())));
    let term = |s: &Subscription| s.term.as_ref().map(|t| format!("{:?}..{:?}", t.start_date, t.end_date));
    note("term", text(term(before)), text(term(after)));
    if changes.is_empty() {
        changes.push("other fields".to_owned());
    }
    changes.join("; ")
}

fn first_sighting(event: Event, now: Timestamp) -> Decision {
    let Seen::View { subscription, as_of } = &event.seen else {
        // A change to a subscription we never saw: only Microsoft's whole view can be recorded.
        return Decision::Resync;
    };
    let retain_data_until =
        (subscription.status == Some(SubscriptionStatus::Unsubscribed)).then_some(now + DATA_RETENTION);
    let record = SubscriptionRecord {
        subscription: subscription.clone(),
        version: 1,
        last_event_at: event.occurred_at,
        view_as_of: Some(*as_of),
        updated_at: now,
        retain_data_until,
        pending_operation: None,
    };
    Decision::Apply(build(event, None, StateWrite::Create(record), Outcome::Applied, None, now))
}

fn build(
    event: Event,
    current: Option<&SubscriptionRecord>,
    state: StateWrite,
    outcome: Outcome,
    detail: Option<String>,
    now: Timestamp,
) -> Change {
    let (to, version) = match &state {
        StateWrite::Create(record) | StateWrite::Replace { record, .. } => {
            (Some(Snapshot::from(&record.subscription)), record.version)
        }
        StateWrite::Keep { .. } => (None, current.map_or(0, |c| c.version)),
    };
    let history = HistoryEntry {
        subscription_id: event.subscription_id.clone(),
        operation_id: event.operation_id.clone(),
        at: now,
        source: event.source,
        event: describe(&event.lifecycle),
        outcome: outcome.clone(),
        from: current.map(|c| Snapshot::from(&c.subscription)),
        to,
        version,
        detail,
    };
    let operation = OperationRecord {
        id: event.operation_id,
        action: event.action,
        requested_by: event.requested_by,
        status: event.operation_status,
        occurred_at: event.occurred_at,
        recorded_at: now,
        outcome,
    };
    Change { operation, state, history }
}

/// How a history entry names its event (`event`).
pub fn describe(event: &LifecycleEvent) -> String {
    match event {
        LifecycleEvent::Observed(status) => format!("Observed({status})"),
        LifecycleEvent::Unrecognized(action) => format!("Unrecognized({action})"),
        other => format!("{other:?}"),
    }
}

fn fmt_time(at: Option<Timestamp>) -> String {
    at.map_or_else(|| "an unknown time".to_owned(), |t| t.to_rfc3339())
}

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Written; the record is at `version`.
    Written { version: u64 },
    /// This operation was recorded before.
    Duplicate,
    /// An observation of what we already hold.
    Nothing,
    /// The event cannot follow from our record: the caller must re-read Microsoft's view.
    Resync,
}

/// How often a writer re-reads and decides again when others keep getting in first.
const CONFLICT_ATTEMPTS: u32 = 8;

/// Decides and applies `event`, re-reading and deciding again when another writer changed the
/// subscription in between (optimistic locking: no update is lost).
pub async fn record_event(
    store: &impl SubscriptionStore,
    event: &Event,
    now: Timestamp,
) -> Result<Effect, StoreError> {
    let current = store.get(&event.subscription_id).await?;
    record_event_on(store, event, now, current).await
}

/// [`record_event`] for a caller that has just read the record (`current`): one read fewer.
pub async fn record_event_on(
    store: &impl SubscriptionStore,
    event: &Event,
    now: Timestamp,
    mut current: Option<SubscriptionRecord>,
) -> Result<Effect, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > 1 {
            current = store.get(&event.subscription_id).await?;
        }
        let change = match plan_change(current.as_ref(), event.clone(), now) {
            Decision::Apply(change) => change,
            Decision::Resync => return Ok(Effect::Resync),
            Decision::Nothing => return Ok(Effect::Nothing),
        };
        match store.apply(&change).await {
            Ok(Committed::Written { version }) => return Ok(Effect::Written { version }),
            Ok(Committed::Duplicate) => return Ok(Effect::Duplicate),
            Err(StoreError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Records an event that leaves the state as it is (a refusal, a change that failed at Microsoft)
/// with `outcome` and `detail`, on the record as it is when written.
pub async fn record_kept(
    store: &impl SubscriptionStore,
    event: &Event,
    outcome: Outcome,
    detail: &str,
    now: Timestamp,
) -> Result<Effect, StoreError> {
    for attempt in 1..=CONFLICT_ATTEMPTS {
        let current = store.get(&event.subscription_id).await?;
        // The publisher's change that failed at Microsoft is no longer pending.
        let settles = current
            .as_ref()
            .and_then(|c| c.pending_operation.as_ref())
            .is_some_and(|p| p.id == event.operation_id);
        let state = keep_or_settle(current.as_ref(), settles, now);
        let change =
            build(event.clone(), current.as_ref(), state, outcome.clone(), Some(detail.to_owned()), now);
        match store.apply(&change).await {
            Ok(Committed::Written { version }) => return Ok(Effect::Written { version }),
            Ok(Committed::Duplicate) => return Ok(Effect::Duplicate),
            Err(StoreError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => {}
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Conflict { subscription_id: event.subscription_id.clone() })
}
