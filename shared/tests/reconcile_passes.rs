//! A reconciliation pass over many invocations (issue 15): each page's position is saved, an
//! invocation near its deadline hands over and the next goes on from the saved page, two runs
//! never work at once, a failed run's retry repeats nothing, and a pass starts once per interval.
//! On the fakes, with a clock that each listed page moves on by a minute.

use chrono::{Duration, TimeZone, Utc};
use fulfillment::clock::Clock;
use fulfillment::domain::{SubscriptionId, Timestamp};
use fulfillment::reconcile::{Invocation, Outcome, Reconciler, Report};
use fulfillment::store::{Lease, ReconcileCheckpoint, SubscriptionStore};
use fulfillment::testing::{FakeMarketplace, ManualClock, MarketFault, MemoryStore, ScriptedStore};

const SUBSCRIPTIONS: usize = 50;
const PAGE: usize = 5;

struct World {
    clock: ManualClock,
    market: FakeMarketplace,
    store: MemoryStore,
    ids: Vec<SubscriptionId>,
}

impl World {
    /// 50 subscriptions at Microsoft, none in the table; 10 pages of 5; a page takes a minute.
    fn new() -> Self {
        let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
        let market = FakeMarketplace::new(clock.clone(), &["basic"]);
        market.set_page_size(PAGE);
        market.set_list_takes(Duration::minutes(1));
        let ids =
            (0..SUBSCRIPTIONS).map(|i| market.purchase("basic", Some(1 + i as u32), "tenant").0).collect();
        Self { clock, market, store: MemoryStore::new(), ids }
    }

    fn reconciler(&self) -> Reconciler<MemoryStore, FakeMarketplace, ManualClock> {
        let mut reconciler = Reconciler::new(self.store.clone(), self.market.clone(), self.clock.clone());
        reconciler.handover_margin = Duration::minutes(2);
        reconciler
    }

    /// One invocation named `id` with `minutes` to its deadline (the margin is two minutes).
    async fn invoke(&self, id: &str, minutes: i64) -> Report {
        let deadline = self.clock.now() + Duration::minutes(minutes);
        self.reconciler().run(&Invocation { id, deadline }).await
    }

    fn list_calls(&self) -> usize {
        self.market.calls().iter().filter(|c| **c == "list_subscriptions").count()
    }

    async fn checkpoint(&self) -> ReconcileCheckpoint {
        self.store.checkpoint().await.expect("read").expect("saved")
    }

    async fn recorded(&self) -> usize {
        self.store.get_many(&self.ids).await.expect("read").len()
    }
}

fn at(minutes: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time") + Duration::minutes(minutes)
}

#[tokio::test]
async fn a_pass_hands_over_near_its_deadline_and_the_next_invocation_goes_on_from_the_saved_page() {
    let world = World::new();
    // 5 minutes, a 2-minute margin, a minute a page: pages at minutes 0, 1 and 2, then hand over.
    let first = world.invoke("tick-1", 5).await;
    assert_eq!((first.outcome, first.pages), (Outcome::HandedOver, 3), "{first:?}");
    let saved = world.checkpoint().await;
    assert_eq!(saved.next_page.as_deref(), Some("15"), "the position after the third page: {saved:?}");
    assert_eq!(saved.lease, None, "released for the next invocation");
    assert_eq!(world.recorded().await, 15);

    let mut reports = vec![first];
    for tick in 2..=10 {
        let report = world.invoke(&format!("tick-{tick}"), 5).await;
        let outcome = report.outcome;
        reports.push(report);
        if outcome == Outcome::Finished {
            break;
        }
        assert_eq!(outcome, Outcome::HandedOver, "{reports:?}");
    }
    let last = reports.last().expect("a report");
    assert_eq!(last.outcome, Outcome::Finished, "finished within 10 invocations: {reports:?}");
    let pass = last.pass.clone().expect("the finished pass");
    assert_eq!(
        (
            pass.pass_id.as_str(),
            pass.invocations,
            pass.pages,
            pass.seen,
            pass.added,
            pass.errors,
            pass.complete
        ),
        ("tick-1", 4, 10, 50, 50, 0, true),
        "{pass:?}"
    );
    assert_eq!(world.list_calls(), 10, "no page was read twice");
    assert_eq!(world.recorded().await, SUBSCRIPTIONS);
    let checkpoint = world.checkpoint().await;
    assert_eq!((checkpoint.pass, checkpoint.next_page), (None, None));
    assert_eq!(checkpoint.last_pass, Some(pass));
}

#[tokio::test]
async fn a_run_finds_another_holding_the_reconciliation_and_does_nothing_until_its_lease_ends() {
    let world = World::new();
    assert_eq!(world.invoke("tick-1", 5).await.outcome, Outcome::HandedOver);
    // A run that was stopped mid-page (Lambda's timeout) holds the lease until its deadline.
    let mut checkpoint = world.checkpoint().await;
    checkpoint.lease =
        Some(Lease { holder: "lost".into(), until: world.clock.now() + Duration::minutes(10) });
    world.store.save_checkpoint(&checkpoint).await.expect("saved");
    let calls = world.list_calls();

    let busy = world.invoke("tick-2", 5).await;
    assert_eq!((busy.outcome, busy.pages), (Outcome::Busy, 0), "{busy:?}");
    assert_eq!(world.list_calls(), calls, "it read nothing");

    world.clock.advance(Duration::minutes(10));
    let taken_over = world.invoke("tick-3", 5).await;
    assert_eq!((taken_over.outcome, taken_over.pages), (Outcome::HandedOver, 3), "{taken_over:?}");
    assert_eq!(world.recorded().await, 30, "it went on from the 16th subscription");
    assert_eq!(world.list_calls(), calls + 3);
}

#[tokio::test]
async fn the_same_invocation_retried_by_lambda_goes_on_under_its_own_lease() {
    let world = World::new();
    assert_eq!(world.invoke("tick-1", 5).await.outcome, Outcome::HandedOver);
    let mut checkpoint = world.checkpoint().await;
    checkpoint.lease =
        Some(Lease { holder: "tick-2".into(), until: world.clock.now() + Duration::minutes(10) });
    world.store.save_checkpoint(&checkpoint).await.expect("saved");
    let retried = world.invoke("tick-2", 5).await;
    assert_eq!(retried.outcome, Outcome::HandedOver, "{retried:?}");
}

#[tokio::test]
async fn a_failed_run_keeps_its_position_and_its_retry_repeats_no_page() {
    let world = World::new();
    assert_eq!(world.invoke("tick-1", 5).await.outcome, Outcome::HandedOver);
    world.market.fail_next("list_subscriptions", MarketFault::Server, 1);
    let failed = world.invoke("tick-2", 5).await;
    assert_eq!((failed.outcome, failed.pages), (Outcome::Failed, 0), "{failed:?}");
    let incomplete = failed.clone().into_result().expect_err("an error for Lambda");
    assert!(incomplete.to_string().contains("position is kept"), "{incomplete}");
    let checkpoint = world.checkpoint().await;
    assert_eq!((checkpoint.next_page.as_deref(), &checkpoint.lease), (Some("15"), &None), "{checkpoint:?}");

    // Lambda's retry of the same invocation.
    let mut retried = world.invoke("tick-2", 5).await;
    while retried.outcome == Outcome::HandedOver {
        retried = world.invoke("tick-next", 30).await;
    }
    assert_eq!(retried.outcome, Outcome::Finished, "{retried:?}");
    let pass = retried.pass.expect("the pass");
    assert_eq!(
        (pass.pages, pass.seen, pass.added, pass.errors, pass.failed_runs),
        (10, 50, 50, 0, 1),
        "{pass:?}"
    );
    assert_eq!(world.list_calls(), 10 + 1, "every page once, and the failed call");
}

/// The table failing to read a page's records (DynamoDB throttling the batch read) fails the run
/// at that page: its position is kept and the next run reads the page again. Skipping it would
/// leave its subscriptions unreconciled in a pass that says it read everything.
#[tokio::test]
async fn a_page_whose_records_cannot_be_read_is_read_again_by_the_next_run_not_skipped() {
    let world = World::new();
    let store = ScriptedStore::new(world.store.clone());
    let mut reconciler = Reconciler::new(store.clone(), world.market.clone(), world.clock.clone());
    reconciler.handover_margin = Duration::minutes(2);
    let invoke = async |id: &str| {
        let deadline = world.clock.now() + Duration::minutes(30);
        reconciler.run(&Invocation { id, deadline }).await
    };
    store.fail_batch_reads(1);
    let failed = invoke("tick-1").await;
    assert_eq!((failed.outcome, failed.pages), (Outcome::Failed, 0), "{failed:?}");
    let pass = failed.pass.as_ref().expect("the pass under way");
    assert_eq!((pass.seen, pass.errors, pass.failed_runs), (0, 0, 1), "{pass:?}");
    assert_eq!(world.checkpoint().await.next_page, None, "still at the first page");

    let finished = invoke("tick-2").await;
    assert_eq!(finished.outcome, Outcome::Finished, "{finished:?}");
    let pass = finished.pass.expect("the pass");
    assert_eq!(
        (pass.pages, pass.seen, pass.added, pass.errors, pass.failed_runs),
        (10, 50, 50, 0, 1),
        "{pass:?}"
    );
    assert_eq!(world.recorded().await, 50, "every subscription recorded");
    assert_eq!(world.list_calls(), 10 + 1, "the first page twice, every other once");
}

#[tokio::test]
async fn a_saved_position_microsoft_refuses_starts_the_pass_over_from_the_first_page() {
    let world = World::new();
    assert_eq!(world.invoke("tick-1", 5).await.outcome, Outcome::HandedOver);
    // Microsoft's continuation tokens are opaque and may expire.
    world.market.fail_next("list_subscriptions", MarketFault::BadRequest, 1);
    let report = world.invoke("tick-2", 60).await;
    assert_eq!(report.outcome, Outcome::Finished, "{report:?}");
    let pass = report.pass.expect("the pass");
    assert_eq!((pass.restarts, pass.added, pass.complete), (1, 50, true), "{pass:?}");
    assert_eq!(world.recorded().await, SUBSCRIPTIONS);

    // A position that the last page itself gave is not refused twice in a row: that is an error.
    let world = World::new();
    world.market.fail_next("list_subscriptions", MarketFault::BadRequest, 1);
    let report = world.invoke("tick-1", 60).await;
    assert_eq!(report.outcome, Outcome::Failed, "a first page refused is no expired position: {report:?}");
}

#[tokio::test]
async fn a_pass_starts_once_per_interval_and_the_ticks_between_do_nothing() {
    let world = World::new();
    let finished = world.invoke("tick-1", 60).await;
    assert_eq!(finished.outcome, Outcome::Finished);
    let calls = world.list_calls();

    world.clock.set(at(30));
    let idle = world.invoke("tick-2", 60).await;
    assert_eq!((idle.outcome, idle.pages), (Outcome::Idle, 0), "{idle:?}");
    assert_eq!(idle.pass, finished.pass, "it reports the last pass");
    assert_eq!(world.list_calls(), calls);

    world.clock.set(at(60));
    let next = world.invoke("tick-3", 60).await;
    assert_eq!(next.outcome, Outcome::Finished, "{next:?}");
    let pass = next.pass.expect("the pass");
    assert_eq!((pass.pass_id.as_str(), pass.added, pass.unchanged), ("tick-3", 0, 50), "{pass:?}");
}

#[tokio::test]
async fn an_invocation_with_no_time_left_reads_nothing() {
    let world = World::new();
    let report = world.invoke("tick-1", 1).await;
    assert_eq!((report.outcome, report.pages), (Outcome::HandedOver, 0), "{report:?}");
    assert_eq!(world.list_calls(), 0);
    let next = world.invoke("tick-2", 60).await;
    let pass = next.pass.expect("the pass");
    assert_eq!((next.outcome, pass.pass_id.as_str(), pass.invocations), (Outcome::Finished, "tick-1", 2));
}

#[tokio::test]
async fn a_pass_asked_for_now_starts_afresh_even_with_one_under_way() {
    let world = World::new();
    assert_eq!(world.invoke("tick-1", 5).await.outcome, Outcome::HandedOver);
    let pass = world.reconciler().pass("now").await;
    assert_eq!(
        (pass.pass_id.as_str(), pass.pages, pass.seen, pass.added, pass.unchanged, pass.complete),
        ("now", 10, 50, 35, 15, true),
        "every page read from the first: {pass:?}"
    );
    assert_eq!(world.checkpoint().await.last_pass, Some(pass));
}

#[test]
fn the_log_line_spells_each_outcome_as_the_report_does() {
    for outcome in [Outcome::Finished, Outcome::HandedOver, Outcome::Busy, Outcome::Idle, Outcome::Failed] {
        assert_eq!(serde_json::to_value(outcome).expect("JSON"), outcome.as_str());
    }
}

#[tokio::test]
async fn a_pass_whose_saved_position_microsoft_keeps_refusing_is_given_up_and_the_next_starts_when_due() {
    let world = World::new();
    assert_eq!(world.invoke("tick-1", 5).await.outcome, Outcome::HandedOver);
    for tick in 2..=(1 + fulfillment::reconcile::MAX_RESTARTS) {
        world.market.fail_next("list_subscriptions", MarketFault::BadRequest, 1);
        let report = world.invoke(&format!("tick-{tick}"), 5).await;
        assert_eq!(report.outcome, Outcome::HandedOver, "started over: {report:?}");
    }
    world.market.fail_next("list_subscriptions", MarketFault::BadRequest, 1);
    let given_up = world.invoke("tick-last", 5).await;
    assert_eq!(given_up.outcome, Outcome::Failed, "{given_up:?}");
    let checkpoint = world.checkpoint().await;
    assert_eq!((&checkpoint.pass, &checkpoint.next_page, &checkpoint.lease), (&None, &None, &None));
    let last = checkpoint.last_pass.expect("the given-up pass");
    assert_eq!((last.pass_id.as_str(), last.restarts, last.complete), ("tick-1", 3, false), "{last:?}");

    world.clock.set(at(30));
    assert_eq!(world.invoke("tick-idle", 5).await.outcome, Outcome::Idle, "not due before the interval");
    world.clock.set(at(60));
    let next = world.invoke("tick-new", 5).await;
    assert_eq!(
        (next.outcome, next.pass.map(|p| p.pass_id)),
        (Outcome::HandedOver, Some("tick-new".to_owned()))
    );
}
