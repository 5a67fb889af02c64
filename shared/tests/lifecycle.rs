//! The lifecycle state machine over every (state, event) pair, and the changes built from it.

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use fulfillment::changes::{Decision, Event, plan_change};
use fulfillment::domain::{
    OperationAction, OperationId, PlanId, Subscription, SubscriptionId, SubscriptionStatus, Timestamp,
};
use fulfillment::lifecycle::{LifecycleEvent as E, Transition, decide, transition};
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
        (E::Observed(N),             [Same,        M(N),        M(N),        M(N),        M(N),         M(N) ]),
        (E::Observed(P),             [M(P),        Same,        M(P),        M(P),        M(P),         M(P) ]),
        (E::Observed(S),             [M(S),        M(S),        Same,        M(S),        M(S),         M(S) ]),
        (E::Observed(X),             [M(X),        M(X),        M(X),        Same,        M(X),         M(X) ]),
        (E::Observed(U),             [M(U),        M(U),        M(U),        M(U),        Same,         M(U) ]),
        (E::Observed(u()),           [M(u()),      M(u()),      M(u()),      M(u()),      M(u()),       Same ]),
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
fn an_event_older_than_the_last_applied_is_stale_whatever_it_is() {
    for from in states() {
        for event in
            [E::Suspended, E::Reinstated, E::Unsubscribed, E::Observed(SubscriptionStatus::Subscribed)]
        {
            assert_eq!(decide(&from, at(30), &event, at(20)), Transition::Stale, "{event:?} while {from}");
        }
    }
}

#[test]
fn an_event_at_or_after_the_last_applied_or_without_time_is_decided_normally() {
    let from = SubscriptionStatus::Subscribed;
    let expected = Transition::Move(SubscriptionStatus::Suspended);
    assert_eq!(decide(&from, at(30), &E::Suspended, at(30)), expected, "same instant");
    assert_eq!(decide(&from, at(30), &E::Suspended, at(40)), expected, "later");
    assert_eq!(decide(&from, None, &E::Suspended, at(10)), expected, "nothing applied yet");
    assert_eq!(decide(&from, at(30), &E::Suspended, None), expected, "no time given");
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
        updated_at: at(0).expect("time"),
        retain_data_until: None,
        pending_operation: None,
    }
}

fn event(lifecycle: E, after: Subscription, occurred_at: Option<Timestamp>) -> Event {
    Event {
        operation_id: OperationId::parse("op-1").expect("id"),
        lifecycle,
        source: ChangeSource::Webhook,
        action: None,
        requested_by: None,
        operation_status: None,
        occurred_at,
        after,
        record_if_unchanged: false,
    }
}

fn apply(decision: Decision) -> fulfillment::store::Change {
    match decision {
        Decision::Apply(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn a_move_replaces_the_record_at_the_next_version_with_the_target_status() {
    let current = record(SubscriptionStatus::Subscribed, 4, at(10));
    // The webhook's snapshot may still say Subscribed: the transition decides the status.
    let change = apply(plan_change(
        Some(&current),
        event(E::Suspended, subscription(SubscriptionStatus::Subscribed), at(20)),
        at(21).expect("t"),
    ));
    let StateWrite::Replace { expected_version, record } = &change.state else {
        panic!("{:?}", change.state)
    };
    assert_eq!((*expected_version, record.version), (4, 5));
    assert_eq!(record.subscription.status, Some(SubscriptionStatus::Suspended));
    assert_eq!(record.last_event_at, at(20));
    assert_eq!(change.history.outcome, Outcome::Applied);
    assert_eq!(change.history.version, 5);
    assert_eq!(
        change.history.from.as_ref().and_then(|s| s.status.clone()),
        Some(SubscriptionStatus::Subscribed)
    );
    assert_eq!(
        change.history.to.as_ref().and_then(|s| s.status.clone()),
        Some(SubscriptionStatus::Suspended)
    );
    assert_eq!(change.operation.outcome, Outcome::Applied);
}

#[test]
fn a_plan_change_that_changes_nothing_only_records_the_event() {
    let current = record(SubscriptionStatus::Subscribed, 2, None);
    let change = apply(plan_change(
        Some(&current),
        event(E::PlanChanged, current.subscription.clone(), at(5)),
        at(6).expect("t"),
    ));
    assert_eq!(change.state, StateWrite::Keep);
    assert_eq!(change.history.outcome, Outcome::Unchanged);
    assert_eq!(change.history.version, 2);
}

#[test]
fn a_plan_change_records_the_new_plan() {
    let current = record(SubscriptionStatus::Subscribed, 2, None);
    let mut after = current.subscription.clone();
    after.plan_id = PlanId::parse("premium");
    let change = apply(plan_change(Some(&current), event(E::PlanChanged, after, at(5)), at(6).expect("t")));
    assert_eq!(change.history.to.and_then(|s| s.plan_id), PlanId::parse("premium"));
    assert_eq!(change.history.from.and_then(|s| s.plan_id), PlanId::parse("basic"));
}

#[test]
fn an_impossible_event_asks_for_a_resync() {
    let current = record(SubscriptionStatus::PendingFulfillmentStart, 1, None);
    let decision = plan_change(
        Some(&current),
        event(E::Suspended, current.subscription.clone(), at(5)),
        at(6).expect("t"),
    );
    assert_eq!(decision, Decision::Resync);
}

#[test]
fn an_event_for_an_unsubscribed_subscription_is_ignored_but_recorded() {
    let current = record(SubscriptionStatus::Unsubscribed, 7, at(1));
    let change = apply(plan_change(
        Some(&current),
        event(E::Reinstated, subscription(SubscriptionStatus::Subscribed), at(5)),
        at(6).expect("t"),
    ));
    assert_eq!(change.state, StateWrite::Keep);
    assert_eq!(change.history.outcome, Outcome::Ignored);
    assert_eq!(change.history.version, 7);
}

#[test]
fn a_stale_event_is_recorded_with_why() {
    let current = record(SubscriptionStatus::Subscribed, 3, at(30));
    let change = apply(plan_change(
        Some(&current),
        event(E::Suspended, current.subscription.clone(), at(20)),
        at(31).expect("t"),
    ));
    assert_eq!(change.state, StateWrite::Keep);
    assert_eq!(change.history.outcome, Outcome::Stale);
    assert!(change.history.detail.as_deref().is_some_and(|d| d.contains("before the last applied")));
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
    assert_eq!(plan_change(None, event(E::Suspended, no_status, at(1)), at(2).expect("t")), Decision::Resync);
}

#[test]
fn an_observation_of_what_we_hold_records_nothing() {
    let current = record(SubscriptionStatus::Subscribed, 3, None);
    let seen = event(E::Observed(SubscriptionStatus::Subscribed), current.subscription.clone(), None);
    assert_eq!(plan_change(Some(&current), seen, at(6).expect("t")), Decision::Nothing);
    // A notification of what we hold is still recorded (it is an operation of Microsoft's).
    let notified = event(E::Reinstated, current.subscription.clone(), at(5));
    assert!(matches!(plan_change(Some(&current), notified, at(6).expect("t")), Decision::Apply(_)));
}
