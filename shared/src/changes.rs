//! Turning an event into a [`Change`] for the store: the lifecycle decides, this module builds the
//! state, operation and history that record the decision.

use crate::domain::{
    OperationAction, OperationId, OperationStatus, RequestSource, Subscription, SubscriptionStatus, Timestamp,
};
use crate::lifecycle::{LifecycleEvent, Transition, decide};
use crate::store::{
    Applied, Change, ChangeSource, HistoryEntry, OperationRecord, Outcome, Snapshot, StateWrite, StoreError,
    SubscriptionRecord, SubscriptionStore,
};

/// An event about one subscription, as a flow hands it to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The idempotency key: an event with an id already recorded is not applied again.
    pub operation_id: OperationId,
    pub lifecycle: LifecycleEvent,
    pub source: ChangeSource,
    pub action: Option<OperationAction>,
    pub requested_by: Option<RequestSource>,
    pub operation_status: Option<OperationStatus>,
    /// When it happened at Microsoft (`timeStamp`); orders events.
    pub occurred_at: Option<Timestamp>,
    /// The subscription as it is after the event, as far as the flow knows (Microsoft's view).
    pub after: Subscription,
    /// Record the event even when it changes nothing (a webhook delivery is an operation of
    /// Microsoft's that must be kept); otherwise such an observation writes nothing.
    pub record_if_unchanged: bool,
}

/// How long a cancelled customer's data is kept (reference §6.6: at least 7 days).
pub const DATA_RETENTION: chrono::Duration = chrono::Duration::days(7);

fn is_silent_observation(event: &Event) -> bool {
    matches!(event.lifecycle, LifecycleEvent::Observed(_)) && !event.record_if_unchanged
}

/// What to do with an event.
#[allow(clippy::large_enum_variant, reason = "short-lived: one per event, moved straight into the store")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply this change to the store.
    Apply(Change),
    /// The event cannot follow from what we hold: re-read the subscription from Microsoft and
    /// apply that as an observation instead.
    Resync,
    /// An observation of what we already hold: nothing to record.
    Nothing,
}

/// Decides what `event` does to `current` (the stored record, if any) and builds the change.
pub fn plan_change(current: Option<&SubscriptionRecord>, event: Event, now: Timestamp) -> Decision {
    let Some(current) = current else {
        return first_sighting(event, now);
    };
    // The publisher's pending change is settled by its own operation, whatever else it does.
    let settles = current.pending_operation.as_ref().is_some_and(|p| p.id == event.operation_id);
    let transition =
        match decide(&current.status(), current.last_event_at, &event.lifecycle, event.occurred_at) {
            // Microsoft's view is the truth for every field, not only the status: an observation of
            // the status we hold still brings its plan, seats, term and the rest.
            Transition::Unchanged if matches!(event.lifecycle, LifecycleEvent::Observed(_)) => {
                Transition::Move(current.status())
            }
            other => other,
        };
    let (outcome, detail) = match transition {
        Transition::Resync => return Decision::Resync,
        Transition::Move(status) => {
            let mut next = event.after.clone();
            next.status = Some(status);
            if next == current.subscription {
                if is_silent_observation(&event) && !settles {
                    return Decision::Nothing;
                }
                (Outcome::Unchanged, Some("already as Microsoft says".to_owned()))
            } else {
                let retain_data_until = match next.status {
                    Some(SubscriptionStatus::Unsubscribed) => {
                        current.retain_data_until.or(Some(now + DATA_RETENTION))
                    }
                    _ => None,
                };
                let detail = differences(&current.subscription, &next);
                let record = SubscriptionRecord {
                    subscription: next,
                    version: current.version + 1,
                    last_event_at: current.last_event_at.max(event.occurred_at),
                    updated_at: now,
                    retain_data_until,
                    pending_operation: current.pending_operation.clone().filter(|_| !settles),
                };
                let state = StateWrite::Replace { expected_version: current.version, record };
                return Decision::Apply(build(
                    event,
                    Some(current),
                    state,
                    Outcome::Applied,
                    Some(detail),
                    now,
                ));
            }
        }
        Transition::Unchanged if is_silent_observation(&event) && !settles => return Decision::Nothing,
        Transition::Unchanged => (Outcome::Unchanged, None),
        Transition::Terminal => {
            (Outcome::Ignored, Some("the subscription is unsubscribed for good".to_owned()))
        }
        Transition::Stale => (
            Outcome::Stale,
            Some(format!(
                "happened at {}, before the last applied event at {}",
                fmt_time(event.occurred_at),
                fmt_time(current.last_event_at)
            )),
        ),
    };
    let state = if settles { settled(current, now) } else { StateWrite::Keep };
    Decision::Apply(build(event, Some(current), state, outcome, detail, now))
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
    // Without a status from Microsoft there is nothing trustworthy to record as state.
    if event.after.status.is_none() {
        return Decision::Resync;
    }
    let retain_data_until =
        (event.after.status == Some(SubscriptionStatus::Unsubscribed)).then_some(now + DATA_RETENTION);
    let record = SubscriptionRecord {
        subscription: event.after.clone(),
        version: 1,
        last_event_at: event.occurred_at,
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
        StateWrite::Keep => (None, current.map_or(0, |c| c.version)),
    };
    let history = HistoryEntry {
        subscription_id: event.after.id.clone(),
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

fn describe(event: &LifecycleEvent) -> String {
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
pub enum Recorded {
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
) -> Result<Recorded, StoreError> {
    let current = store.get(&event.after.id).await?;
    record_event_on(store, event, now, current).await
}

/// [`record_event`] for a caller that has just read the record (`current`): one read fewer.
pub async fn record_event_on(
    store: &impl SubscriptionStore,
    event: &Event,
    now: Timestamp,
    mut current: Option<SubscriptionRecord>,
) -> Result<Recorded, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > 1 {
            current = store.get(&event.after.id).await?;
        }
        let change = match plan_change(current.as_ref(), event.clone(), now) {
            Decision::Apply(change) => change,
            Decision::Resync => return Ok(Recorded::Resync),
            Decision::Nothing => return Ok(Recorded::Nothing),
        };
        match store.apply(&change).await {
            Ok(Applied::Recorded { version }) => return Ok(Recorded::Written { version }),
            Ok(Applied::Duplicate) => return Ok(Recorded::Duplicate),
            Err(StoreError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => continue,
            Err(error) => return Err(error),
        }
    }
}
