//! The publisher's policy for customers' plan and seat changes.

use fulfillment::domain::PlanId;
use fulfillment::webhook::ChangePolicy;

fn plan(raw: &str) -> Option<PlanId> {
    PlanId::parse(raw)
}

#[test]
fn the_default_accepts_every_change() {
    assert_eq!(ChangePolicy::default().judge(plan("anything").as_ref(), Some(1_000_000)), Ok(()));
}

#[test]
fn plans_and_seat_bounds_are_enforced() {
    let policy = ChangePolicy {
        allowed_plans: Some(vec![plan("gold").expect("p")]),
        min_seats: Some(5),
        max_seats: Some(50),
        ..ChangePolicy::default()
    };
    assert_eq!(policy.judge(plan("gold").as_ref(), Some(5)), Ok(()));
    assert_eq!(policy.judge(plan("gold").as_ref(), Some(50)), Ok(()));
    assert!(policy.judge(plan("silver").as_ref(), Some(10)).is_err());
    assert!(policy.judge(plan("gold").as_ref(), Some(4)).is_err());
    assert!(policy.judge(plan("gold").as_ref(), Some(51)).is_err());
    assert_eq!(policy.judge(plan("gold").as_ref(), None), Ok(()), "flat-rate: no seats to judge");
    let closed = ChangePolicy { accept_changes: false, ..ChangePolicy::default() };
    assert!(closed.judge(plan("gold").as_ref(), Some(10)).is_err());
}
