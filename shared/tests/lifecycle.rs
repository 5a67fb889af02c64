//! The lifecycle state machine over every (state, event) pair, and the changes built from it.

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use fulfillment::changes::{Decision, Event, Seen, plan_change};
use fulfillment::domain::{
    OperationAction, OperationId, PlanId, Subscription, SubscriptionId, SubscriptionStatus, Timestamp,
};
use fulfillment::lifecycle::{LifecycleEvent as E, Transition, transition};
use fulfillment::store::{ChangeSource, Outcome, StateWrite, SubscriptionRecord};

fn unknown() -> SubscriptionStatus {
    SubscriptionStatus::Unknown("Frozen".into())
}

/// Every status a record can hold: the known ones and one Microsoft might add.
fn states() -> Vec<SubscriptionStatus> {
    let mut all = SubscriptionStatus::KNOWN.to_vec();
    all.push(unknown());
    all
}

#[test]
fn every_state_and_event_pair_has_the_defined_outcome() {
    use SubscriptionStatus::{
        NotStarted as N, PendingFulfillmentStart as P, Subscribed as S, Suspended as X, Unsubscribed as U,
    };
    use Transition::{Move as M, Resync as R, Terminal as T, Unchanged as Same};
    let u = unknown;

    // Columns: the status we hold.
    let columns = [N, P, S, X, U, u()];
    #[rustfmt::skip]
    let table: Vec<(E, [Transition; 6])> = vec![
        //                              NotStarted   Pending      Subscribed   Suspended    Unsubscribed  Frozen
        (E::Activated,               [M(S),        M(S),        Same,        R,           T,            R    ]),
        (E::PlanChanged,             [R,           R,           M(S),        R,           T,            R    ]),
        (E::QuantityChanged,         [R,           R,           M(S),        R,           T,            R    ]),
        (E::Renewed,                 [R,           R,           M(S),        R,           T,            R    ]),
        (E::Suspended,               [R,           R,           M(X),        Same,        T,            R    ]),
        (E::Reinstated,              [R,           R,           Same,        M(S),        T,            R    ]),
        (E::Unsubscribed,            [M(U),        M(U),        M(U),        M(U),        Same,         M(U) ]),
        (E::SubscribeNotified,       [Same,        Same,        Same,        Same,        Same,         Same ]),
        (E::Unrecognized("Transfer".into()),
                                     [Same,        Same,        Same,        Same,        Same,         Same ]),
        (E::Observed(N),             [Same,        M(N),        M(N),        M(N),        T,            M(N) ]),
        (E::Observed(P),             [M(P),        Same,        M(P),        M(P),        T,            M(P) ]),
        (E::Observed(S),             [M(S),        M(S),        Same,        M(S),        T,            M(S) ]),
        (E::Observed(X),             [M(X),        M(X),        M(X),        Same,        T,            M(X) ]),
        (E::Observed(U),             [M(U),        M(U),        M(U),        M(U),        Same,         M(U) ]),
        (E::Observed(u()),           [M(u()),      M(u()),      M(u()),      M(u()),      T,            Same ]),
    ];

    // The table covers every event kind and every status exactly once.
    assert_eq!(columns.to_vec(), states());
    let events: Vec<String> = table.iter().map(|(e, _)| format!("{e:?}")).collect();
    assert_eq!(events.iter().collect::<HashSet<_>>().len(), table.len(), "no event twice");
    let observed = table.iter().filter(|(e, _)| matches!(e, E::Observed(_))).count();
    assert_eq!(observed, states().len(), "an observation of every status");
    assert_eq!(table.len(), 9 + states().len(), "every kind of event");

    let mut checked = 0;
    for (event, row) in &table {
        for (from, expected) in columns.iter().zip(row) {
            assert_eq!(&transition(from, event), expected, "{event:?} while {from}");
            checked += 1;
        }
    }
    assert_eq!(checked, 15 * 6);
}

fn at(minute: u32) -> Option<Timestamp> {
    Utc.with_ymd_and_hms(2026, 5, 20, 14, minute, 0).single()
}

#[test]
fn every_action_maps_to_its_event() {
    let cases = [
        (OperationAction::ChangePlan, E::PlanChanged),
        (OperationAction::ChangeQuantity, E::QuantityChanged),
        (OperationAction::Renew, E::Renewed),
        (OperationAction::Suspend, E::Suspended),
        (OperationAction::Reinstate, E::Reinstated),
        (OperationAction::Unsubscribe, E::Unsubscribed),
        (OperationAction::Subscribe, E::SubscribeNotified),
        (OperationAction::Transfer, E::Unrecognized("Transfer".into())),
        (OperationAction::Unknown("Migrate".into()), E::Unrecognized("Migrate".into())),
    ];
    assert_eq!(cases.len(), OperationAction::KNOWN.len() + 1);
    for (action, event) in cases {
        assert_eq!(E::from_action(&action), event);
    }
}

// plan_change ------------------------------------------------------------------------------------

fn subscription(status: SubscriptionStatus) -> Subscription {
    let mut s = Subscription::new(SubscriptionId::parse("3f9c1b7e-0000-4000-8000-00000000a001").expect("id"));
    s.status = Some(status);
    s.plan_id = PlanId::parse("basic");
    s.quantity = Some(5);
    s
}

fn record(status: SubscriptionStatus, version: u64, last_event_at: Option<Timestamp>) -> SubscriptionRecord {
    SubscriptionRecord {
        subscription: subscription(status),
        version,
        last_event_at,
        view_as_of: at(0),
        updated_at: at(0).expect("time"),
        retain_data_until: None,
        pending_operation: None,
    }
}

/// A webhook's event carrying Microsoft's view read at `read_at`.
fn event(lifecycle: E, view: Subscription, read_at: Option<Timestamp>) -> Event {
    Event {
        subscription_id: view.id.clone(),
        operation_id: OperationId::parse("op-1").expect("id"),
        lifecycle,
        source: ChangeSource::Webhook,
        action: None,
        requested_by: None,
        operation_status: None,
        occurred_at: read_at,
        seen: Seen::View { subscription: view, as_of: read_at.unwrap_or(at(0).expect("t")) },
        record_if_unchanged: true,
    }
}

/// A confirmed customer change, applied onto the record.
fn delta(lifecycle: E, plan: Option<&str>, seats: Option<u32>, occurred_at: Option<Timestamp>) -> Event {
    let id = SubscriptionId::parse("3f9c1b7e-0000-4000-8000-00000000a001").expect("id");
    Event {
        seen: Seen::Delta { plan_id: plan.and_then(PlanId::parse), quantity: seats },
        occurred_at,
        ..event(lifecycle, Subscription::new(id), occurred_at)
    }
}

fn apply(decision: Decision) -> fulfillment::store::Change {
    match decision {
        Decision::Apply(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn microsofts_view_replaces_the_record_at_the_next_version() {
    let current = record(SubscriptionStatus::Subscribed, 4, at(10));
    let change = apply(plan_change(
        Some(&current),
        event(E::Suspended, subscription(SubscriptionStatus::Suspended), at(20)),
        at(21).expect("t"),
    ));
    let StateWrite::Replace { expected_version, record } = &change.state else {
        panic!("{:?}", change.state)
    };
    assert_eq!((*expected_version, record.version), (4, 5));
    assert_eq!(record.subscription.status, Some(SubscriptionStatus::Suspended));
    assert_eq!((record.last_event_at, record.view_as_of), (at(20), at(20)));
    assert_eq!(change.history.outcome, Outcome::Applied);
    assert_eq!(change.history.version, 5);
    assert_eq!(change.history.from.and_then(|s| s.status), Some(SubscriptionStatus::Subscribed));
    assert_eq!(change.history.to.and_then(|s| s.status), Some(SubscriptionStatus::Suspended));
    assert_eq!(change.operation.outcome, Outcome::Applied);
}

#[test]
fn a_change_that_changes_nothing_only_records_the_event_on_the_version_read() {
    let current = record(SubscriptionStatus::Subscribed, 2, None);
    let change = apply(plan_change(
        Some(&current),
        delta(E::PlanChanged, Some("basic"), None, at(5)),
        at(6).expect("t"),
    ));
    assert_eq!(change.state, StateWrite::Keep { expected_version: Some(2) });
    assert_eq!(change.history.outcome, Outcome::Unchanged);
    assert_eq!(change.history.version, 2);
}

#[test]
fn a_confirmed_plan_change_is_applied_onto_the_record_as_it_is() {
    let mut current = record(SubscriptionStatus::Subscribed, 2, None);
    current.subscription.quantity = Some(9); // written by someone else meanwhile
    let change = apply(plan_change(
        Some(&current),
        delta(E::PlanChanged, Some("premium"), None, at(5)),
        at(6).expect("t"),
    ));
    let StateWrite::Replace { record, .. } = &change.state else { panic!("{:?}", change.state) };
    assert_eq!(
        (record.subscription.plan_id.clone(), record.subscription.quantity),
        (PlanId::parse("premium"), Some(9))
    );
    assert_eq!(record.view_as_of, at(6), "Microsoft's state now is ours plus the change");
}

#[test]
fn a_change_that_cannot_follow_from_the_record_asks_for_microsofts_view() {
    let current = record(SubscriptionStatus::PendingFulfillmentStart, 1, None);
    let decision =
        plan_change(Some(&current), delta(E::QuantityChanged, None, Some(7), at(5)), at(6).expect("t"));
    assert_eq!(decision, Decision::Resync);
    assert_eq!(
        plan_change(None, delta(E::QuantityChanged, None, Some(7), at(5)), at(6).expect("t")),
        Decision::Resync
    );
}

#[test]
fn nothing_revives_an_unsubscribed_subscription() {
    let current = record(SubscriptionStatus::Unsubscribed, 7, at(1));
    for seen in [
        event(E::Reinstated, subscription(SubscriptionStatus::Subscribed), at(5)),
        event(
            E::Observed(SubscriptionStatus::Subscribed),
            subscription(SubscriptionStatus::Subscribed),
            at(5),
        ),
    ] {
        let change = apply(plan_change(Some(&current), seen, at(6).expect("t")));
        assert_eq!(change.state, StateWrite::Keep { expected_version: Some(7) });
        assert_eq!(change.history.outcome, Outcome::Ignored);
    }
}

#[test]
fn a_view_read_before_the_one_we_hold_is_stale_whatever_its_operation_says() {
    let mut current = record(SubscriptionStatus::Subscribed, 3, at(1));
    current.view_as_of = at(30);
    let old_view = || event(E::Suspended, subscription(SubscriptionStatus::Suspended), at(20));
    // The webhook reads Microsoft again rather than spend its operation on an old view ...
    assert_eq!(plan_change(Some(&current), old_view(), at(31).expect("t")), Decision::Resync);
    // ... the reconciliation leaves it for its next run.
    let listed = Event { record_if_unchanged: false, ..old_view() };
    assert_eq!(plan_change(Some(&current), listed, at(31).expect("t")), Decision::Nothing);
    // A view read later is applied, whatever its operation's time.
    let fresh = Event {
        occurred_at: at(2),
        ..event(E::Suspended, subscription(SubscriptionStatus::Suspended), at(31))
    };
    assert!(matches!(
        apply(plan_change(Some(&current), fresh, at(32).expect("t"))).state,
        StateWrite::Replace { .. }
    ));
}

#[test]
fn a_view_microsoft_modified_before_the_one_we_hold_is_stale_even_if_read_later() {
    let mut current = record(SubscriptionStatus::Suspended, 3, at(1));
    current.subscription.last_modified = at(30);
    let mut lagging = subscription(SubscriptionStatus::Subscribed);
    lagging.last_modified = at(10);
    let listed = Event {
        record_if_unchanged: false,
        ..event(E::Observed(SubscriptionStatus::Subscribed), lagging, at(40))
    };
    assert_eq!(plan_change(Some(&current), listed, at(41).expect("t")), Decision::Nothing);
}

#[test]
fn a_sender_dated_future_is_taken_as_now_and_freezes_nothing() {
    let current = record(SubscriptionStatus::Subscribed, 3, at(1));
    let far = chrono::DateTime::parse_from_rfc3339("9999-01-01T00:00:00Z").expect("t").with_timezone(&Utc);
    let change = apply(plan_change(
        Some(&current),
        delta(E::QuantityChanged, None, Some(8), Some(far)),
        at(6).expect("t"),
    ));
    let StateWrite::Replace { record, .. } = &change.state else { panic!("{:?}", change.state) };
    assert_eq!(record.last_event_at, at(6));
    // A later change is not stale.
    let later =
        apply(plan_change(Some(record), delta(E::QuantityChanged, None, Some(9), at(7)), at(7).expect("t")));
    assert!(matches!(later.state, StateWrite::Replace { .. }), "{:?}", later.history);
}

#[test]
fn a_first_sighting_creates_version_one_but_only_with_a_status() {
    let created = apply(plan_change(
        None,
        event(
            E::Observed(SubscriptionStatus::PendingFulfillmentStart),
            subscription(SubscriptionStatus::PendingFulfillmentStart),
            at(1),
        ),
        at(2).expect("t"),
    ));
    let StateWrite::Create(record) = &created.state else { panic!("{:?}", created.state) };
    assert_eq!(record.version, 1);
    assert_eq!(created.history.from, None);

    let mut no_status = subscription(SubscriptionStatus::Subscribed);
    no_status.status = None;
    let silent = Event { record_if_unchanged: false, ..event(E::Suspended, no_status.clone(), at(1)) };
    assert_eq!(plan_change(None, silent, at(2).expect("t")), Decision::Nothing);
}

#[test]
fn a_view_without_a_status_changes_nothing() {
    let current = record(SubscriptionStatus::Subscribed, 3, None);
    let mut no_status = current.subscription.clone();
    no_status.status = None;
    no_status.quantity = Some(50);
    let change = apply(plan_change(Some(&current), event(E::Renewed, no_status, at(5)), at(6).expect("t")));
    assert_eq!(change.state, StateWrite::Keep { expected_version: Some(3) });
    assert!(change.history.detail.as_deref().is_some_and(|d| d.contains("no status")));
}

#[test]
fn an_observation_of_what_we_hold_records_nothing() {
    let current = record(SubscriptionStatus::Subscribed, 3, None);
    let seen = Event {
        record_if_unchanged: false,
        ..event(E::Observed(SubscriptionStatus::Subscribed), current.subscription.clone(), at(1))
    };
    assert_eq!(plan_change(Some(&current), seen, at(6).expect("t")), Decision::Nothing);
    // A notification of what we hold is still recorded (it is an operation of Microsoft's).
    let notified = event(E::Reinstated, current.subscription.clone(), at(5));
    assert!(matches!(plan_change(Some(&current), notified, at(6).expect("t")), Decision::Apply(_)));
}
