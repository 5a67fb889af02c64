//! Metered billing end to end (issue 16): usage taken on DynamoDB Local, sent to the emulator as
//! Microsoft's Metering API, 25 to a batch, and each of Microsoft's answers recorded. Microsoft's
//! own record (`GET /usageEvents`) is the proof that nothing is billed twice or lost.

use chrono::Utc;
use std::time::Duration;

use fulfillment::domain::{PlanId, SubscriptionId, Timestamp, UsageQuery};
use fulfillment::emission::{EmissionReport, Emitter};
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi, RetryPolicy};
use fulfillment::metering::{Meter, Taken};
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::usage::{HourKey, HourState, UsageHour, UsageReport, UsageStore, hour_of};
use fulfillment::testing::ManualClock;
use integration_tests::flows::buy_and_activate;
use integration_tests::stack_options;
use local_stack::LocalStack;
use marketplace_emulator::{Endpoint, Fault, MeteringFault, Purchase};

/// The emulator's metered plan and its dimension.
const PLAN: &str = "basic";
const DIMENSION: &str = "api-calls";

struct World {
    stack: LocalStack,
    meter: Meter<DynamoDbStore, HttpMarketplaceClient, ManualClock>,
    emitter: Emitter<DynamoDbStore, HttpMarketplaceClient, ManualClock>,
    client: HttpMarketplaceClient,
}

impl World {
    async fn new() -> Self {
        Self::with(stack_options()).await
    }

    async fn with(options: local_stack::Options) -> Self {
        let stack = LocalStack::start(options).await.expect("the local stack starts");
        let mut config = stack.environment.marketplace().expect("config");
        // No retries inside a call: a failed batch is the next run's.
        config.retry = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
        let client = || HttpMarketplaceClient::new(config.clone()).expect("client");
        // One time for the whole test, so that an hour's end falling within it changes nothing.
        let clock = ManualClock::at(now());
        let meter = Meter::new(stack.store.clone(), client(), clock.clone());
        let mut emitter = Emitter::new(stack.store.clone(), client(), clock);
        // The last hour is sent at once (in production, 10 minutes after it ends).
        emitter.grace = chrono::Duration::zero();
        Self { client: client(), stack, meter, emitter }
    }

    /// A world where `team-monthly` is metered too, with the metered plan's dimensions.
    async fn with_two_metered_plans() -> Self {
        let mut options = stack_options();
        let plans = &mut options.emulator.offers[0].plans;
        let metered =
            plans.iter().find(|p| p.plan_id == PLAN).expect("the metered plan").metering_dimensions.clone();
        plans.iter_mut().find(|p| p.plan_id == "team-monthly").expect("team-monthly").metering_dimensions =
            metered;
        Self::with(options).await
    }

    async fn subscribed(&self) -> SubscriptionId {
        let id = buy_and_activate(&self.stack, Purchase::plan(PLAN)).await;
        SubscriptionId::parse(&id).expect("id")
    }

    async fn report(&self, id: &SubscriptionId, quantity: f64, at: Timestamp, key: &str) {
        let report = usage(id, DIMENSION, quantity, at, key);
        self.meter.report(&report, &Call::new()).await.unwrap_or_else(|e| panic!("{report:?}: {e}"));
    }

    /// `quantity` reported for the last hour, which a run closed and sent (Microsoft accepted
    /// it) and then stopped before recording the answer: the closed hour.
    async fn sent_but_not_recorded(&self, id: &SubscriptionId, quantity: f64) -> UsageHour {
        self.report(id, quantity, last_hour(), "k1").await;
        let key = HourKey { subscription_id: id.clone(), dimension: DIMENSION.into(), hour: last_hour() };
        let closed = self.stack.store.close_hour(&key, now()).await.expect("closed").expect("the hour");
        let event = fulfillment::domain::UsageEvent {
            resource_id: id.clone(),
            quantity,
            dimension: DIMENSION.into(),
            effective_start_time: last_hour(),
            plan_id: PlanId::parse(PLAN).expect("plan"),
        };
        let sent = self.client.post_usage_events(&[event], &Call::new()).await.expect("sent");
        assert_eq!(sent.result.len(), 1);
        closed
    }

    async fn emit(&self) -> EmissionReport {
        self.emitter.run("test-run", &Call::new()).await
    }

    async fn hours(&self, id: &SubscriptionId) -> Vec<UsageHour> {
        let now = now();
        self.stack.store.usage_of(id, now - chrono::Duration::days(3), now).await.expect("read")
    }

    /// What Microsoft recorded for `id`: (quantity, events).
    async fn at_microsoft(&self, id: &SubscriptionId) -> (f64, u64) {
        let query = UsageQuery {
            usage_start_date: Utc::now() - chrono::Duration::days(3),
            usage_end_date: None,
            offer_id: None,
            plan_id: None,
            dimension: None,
        };
        let records = self.client.get_usage_events(&query, &Call::new()).await.expect("Microsoft's record");
        records
            .iter()
            .filter(|r| r.usage_resource_id.as_deref() == Some(&id.to_string()))
            .fold((0.0, 0), |(q, n), r| {
                (q + r.submitted_quantity.unwrap_or(0.0), n + r.submitted_count.unwrap_or(0))
            })
    }
}

fn usage(id: &SubscriptionId, dimension: &str, quantity: f64, at: Timestamp, key: &str) -> UsageReport {
    UsageReport { subscription_id: id.clone(), dimension: dimension.into(), quantity, at, key: key.into() }
}

/// When the test started: the time of the test's meter and emitter.
fn now() -> Timestamp {
    static STARTED: std::sync::LazyLock<Timestamp> = std::sync::LazyLock::new(Utc::now);
    *STARTED
}

fn last_hour() -> Timestamp {
    hour_of(now()) - chrono::Duration::hours(1)
}

fn accepted(hour: &UsageHour) -> Option<(f64, bool)> {
    match &hour.state {
        HourState::Accepted { sent_quantity, duplicate, usage_event_id, .. } => {
            assert!(usage_event_id.is_some(), "Microsoft's id is kept: {hour:?}");
            Some((*sent_quantity, *duplicate))
        }
        _ => None,
    }
}

#[tokio::test]
async fn each_closed_hour_reaches_microsoft_once_with_its_total() {
    let world = World::new().await;
    let (a, b) = (world.subscribed().await, world.subscribed().await);
    for (i, quantity) in [1.5, 2.0, 3.25].into_iter().enumerate() {
        world
            .report(&a, quantity, last_hour() + chrono::Duration::minutes(10 * i as i64), &format!("a{i}"))
            .await;
    }
    world.report(&a, 1.5, last_hour(), "a0").await; // a repeat: nothing added
    world.report(&b, 10.0, last_hour() + chrono::Duration::minutes(59), "b0").await;
    world.report(&a, 7.0, now(), "now").await; // this hour: not closed yet

    let run = world.emit().await;
    assert_eq!(
        (run.hours, run.closed, run.calls, run.accepted, run.duplicates, run.retried),
        (2, 2, 1, 2, 0, 0),
        "{run:?}"
    );
    assert_eq!(world.at_microsoft(&a).await, (6.75, 1));
    assert_eq!(world.at_microsoft(&b).await, (10.0, 1));
    let hours = world.hours(&a).await;
    assert_eq!(hours.iter().map(accepted).collect::<Vec<_>>(), [Some((6.75, false)), None], "{hours:?}");
    assert_eq!(hours[1].state, HourState::Open, "this hour still takes usage");

    let again = world.emit().await;
    assert_eq!((again.hours, again.calls), (0, 0), "nothing left to send: {again:?}");
    assert_eq!(world.at_microsoft(&a).await, (6.75, 1), "billed once");
}

/// A run that sent an hour and stopped before recording the answer: the next run sends the same
/// quantity again, Microsoft answers `Duplicate` with the earlier event, and nothing is billed
/// twice. Usage that comes once the hour was closed goes to the current hour, not into the
/// amount already sent.
#[tokio::test]
async fn a_crash_between_sending_and_recording_bills_nothing_twice() {
    let world = World::new().await;
    let id = world.subscribed().await;
    let closed = world.sent_but_not_recorded(&id, 4.0).await;
    // ...and the run stopped here. Late usage for the closed hour goes to the current one.
    let late = world.meter.report(&usage(&id, DIMENSION, 1.0, last_hour(), "k2"), &Call::new()).await;
    assert_eq!(late.expect("taken"), Taken::AddedLater(hour_of(now())), "{closed:?}");

    let run = world.emit().await;
    assert_eq!((run.accepted, run.duplicates, run.retried), (0, 1, 0), "{run:?}");
    let hours = world.hours(&id).await;
    assert_eq!(hours.iter().map(accepted).collect::<Vec<_>>(), [Some((4.0, true)), None]);
    assert_eq!((hours[1].hour, hours[1].quantity, &hours[1].state), (hour_of(now()), 1.0, &HourState::Open));
    assert_eq!(world.at_microsoft(&id).await, (4.0, 1), "one event, of the first amount");
}

/// Microsoft down for hours (503, then 429): the hour stays pending, each run counts an attempt
/// and says why, and once Microsoft is back the hour is accepted, once. A 403 keeps it pending
/// too, counted apart for the alarm.
#[tokio::test]
async fn an_outage_of_microsoft_keeps_usage_pending_until_it_is_back() {
    let world = World::new().await;
    let id = world.subscribed().await;
    world.report(&id, 2.0, last_hour(), "k1").await;
    for (n, fault, expected) in [
        (1, Fault::status(503), "503"),
        (2, Fault::status_retry_after(429, "1"), "429"),
        (3, Fault::status(403), "403"),
    ] {
        // A 403 is asked again once with a fresh token: it must persist.
        let times = if expected == "403" { 2 } else { 1 };
        world.stack.emulator.inject(Endpoint::BatchUsageEvent, fault, times).await;
        let run = world.emit().await;
        let not_authorized = u64::from(expected == "403");
        assert_eq!(
            (run.accepted, run.retried + run.not_authorized, run.not_authorized),
            (0, 1, not_authorized),
            "{run:?}"
        );
        match &world.hours(&id).await[0].state {
            HourState::Sending { attempts, last_error: Some(error), sent_quantity } => {
                assert_eq!((*attempts, *sent_quantity), (n, 2.0));
                assert!(error.contains(expected), "{error}");
            }
            other => panic!("pending after attempt {n}: {other:?}"),
        }
    }
    assert_eq!(world.at_microsoft(&id).await, (0.0, 0));
    let run = world.emit().await;
    assert_eq!((run.accepted, run.retried), (1, 0), "{run:?}");
    assert_eq!(world.at_microsoft(&id).await, (2.0, 1));
}

/// Microsoft's per-item answers that are not final, in a batch with an hour it accepts: an item
/// our app may not report for (`ResourceNotAuthorized`, counted for the alarm) and an item Microsoft
/// failed on (`Error`) stay pending with the reason, while the other hour settles; once Microsoft
/// takes them, each is accepted, once.
#[tokio::test]
async fn items_microsoft_cannot_take_now_stay_pending_beside_those_it_accepts() {
    let world = World::new().await;
    let (fine, refused, failing) =
        (world.subscribed().await, world.subscribed().await, world.subscribed().await);
    for (id, key) in [(&fine, "fine"), (&refused, "refused"), (&failing, "failing")] {
        world.report(id, 3.0, last_hour(), key).await;
    }
    let microsoft = &world.stack.emulator;
    microsoft.set_metering_fault(refused.as_str(), Some(MeteringFault::ResourceNotAuthorized)).await;
    microsoft.set_metering_fault(failing.as_str(), Some(MeteringFault::Error)).await;

    let run = world.emit().await;
    assert_eq!(
        (run.calls, run.accepted, run.retried, run.not_authorized, run.refused.len()),
        (1, 1, 1, 1, 0),
        "{run:?}"
    );
    for (id, expected) in [(&refused, "ResourceNotAuthorized"), (&failing, "Error")] {
        match &world.hours(id).await[0].state {
            HourState::Sending { attempts: 1, last_error: Some(error), sent_quantity } => {
                assert!(error.contains(expected), "{error}");
                assert_eq!(*sent_quantity, 3.0, "the amount to send again is fixed");
            }
            other => panic!("{expected}: pending, not {other:?}"),
        }
        assert_eq!(world.at_microsoft(id).await, (0.0, 0));
    }
    assert_eq!(world.hours(&fine).await.iter().map(accepted).collect::<Vec<_>>(), [Some((3.0, false))]);

    microsoft.set_metering_fault(refused.as_str(), None).await;
    microsoft.set_metering_fault(failing.as_str(), None).await;
    let run = world.emit().await;
    assert_eq!((run.hours, run.accepted, run.retried, run.not_authorized), (2, 2, 0, 0), "{run:?}");
    for id in [&fine, &refused, &failing] {
        assert_eq!(world.at_microsoft(id).await, (3.0, 1), "billed once");
    }
}

/// Microsoft's final refusals settle the hour as refused, with its status and message: an hour
/// past its 24 hours (`Expired`), a subscription Microsoft no longer bills (`ResourceNotActive`)
/// or does not know (`ResourceNotFound`), a dimension the plan does not have. An hour that
/// started just under 24 hours ago is still accepted.
#[tokio::test]
async fn final_refusals_are_recorded_and_the_window_edge_is_accepted() {
    let world = World::new().await;
    let (active, suspended) = (world.subscribed().await, world.subscribed().await);
    let unknown = SubscriptionId::parse(&uuid::Uuid::new_v4().to_string()).expect("id");
    let plan = PlanId::parse(PLAN).expect("plan");
    let now = now();
    let store = &world.stack.store;
    // Written as the ledger holds them (the meter refuses what it knows cannot be sent).
    let edge = hour_of(now) - chrono::Duration::hours(23);
    for (id, dimension, at, key) in [
        (&active, DIMENSION, hour_of(now) - chrono::Duration::hours(25), "expired"),
        (&active, DIMENSION, edge, "edge"),
        (&active, "storage-gb", last_hour(), "dimension"),
        (&suspended, DIMENSION, last_hour(), "suspended"),
        (&unknown, DIMENSION, last_hour(), "unknown"),
    ] {
        store.add_usage(&usage(id, dimension, 1.0, at, key), &plan, now).await.expect("stored");
    }
    world.stack.emulator.suspend(&suspended.to_string()).await.expect("suspended");

    let run = world.emit().await;
    let refused: Vec<(&str, u64)> = run.refused.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(
        refused,
        [("Expired", 1), ("InvalidDimension", 1), ("ResourceNotActive", 1), ("ResourceNotFound", 1)],
        "{run:?}"
    );
    assert_eq!((run.accepted, run.retried, run.calls), (1, 0, 1), "{run:?}");
    let states: Vec<(Timestamp, String, String)> = world
        .hours(&active)
        .await
        .iter()
        .map(|h| match &h.state {
            HourState::Refused { status, message, .. } => {
                assert!(!message.is_empty(), "Microsoft's reason is kept");
                (h.hour, h.dimension.clone(), status.clone())
            }
            other => (h.hour, h.dimension.clone(), other.name().to_owned()),
        })
        .collect();
    assert_eq!(
        states,
        [
            (hour_of(now) - chrono::Duration::hours(25), DIMENSION.to_owned(), "Expired".to_owned()),
            (edge, DIMENSION.to_owned(), "accepted".to_owned()),
            (last_hour(), "storage-gb".to_owned(), "InvalidDimension".to_owned()),
        ]
    );
    assert_eq!(world.emit().await.hours, 0, "all settled");
}

/// Reports to one hour at once from many callers (DynamoDB lets one transaction through at a
/// time): every one is added, once, and the hour is sent as their sum.
#[tokio::test]
async fn concurrent_reports_to_one_hour_are_all_added_and_sent_as_one_sum() {
    let world = World::new().await;
    let id = world.subscribed().await;
    let reports: Vec<UsageReport> =
        (0..40).map(|i| usage(&id, DIMENSION, 0.25 + i as f64, last_hour(), &format!("r{i}"))).collect();
    let call = Call::new();
    let taken = futures::future::join_all(reports.iter().map(|r| world.meter.report(r, &call))).await;
    let failed: Vec<String> = taken.iter().filter_map(|t| t.as_ref().err().map(|e| e.to_string())).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let total: f64 = reports.iter().map(|r| r.quantity).sum();
    let hours = world.hours(&id).await;
    assert_eq!(hours.iter().map(|h| (h.quantity, h.reports)).collect::<Vec<_>>(), [(total, 40)]);
    assert_eq!(world.emit().await.accepted, 1);
    assert_eq!(world.at_microsoft(&id).await, (total, 1));
}

/// An hour that keeps failing as the end of Microsoft's 24 hours nears is counted (and logged)
/// for the alarm.
#[tokio::test]
async fn an_hour_near_the_end_of_microsofts_window_is_reported() {
    let world = World::new().await;
    let id = world.subscribed().await;
    let old = hour_of(now()) - chrono::Duration::hours(21);
    let plan = PlanId::parse(PLAN).expect("plan");
    world.stack.store.add_usage(&usage(&id, DIMENSION, 3.0, old, "old"), &plan, now()).await.expect("stored");
    world.report(&id, 1.0, last_hour(), "recent").await;
    world.stack.emulator.inject(Endpoint::BatchUsageEvent, Fault::status(500), 1).await;
    let run = world.emit().await;
    assert_eq!((run.retried, run.near_expiry), (2, 1), "only the old hour is near expiry: {run:?}");
}

/// The customer moves to another metered plan within the hour: the hour is sent with the plan the
/// subscription is on now, as Microsoft checks it (with the plan of its first report, Microsoft
/// would refuse it, and the usage would never be billed).
#[tokio::test]
async fn an_hour_is_sent_with_the_plan_the_subscription_is_on_when_it_is_sent() {
    let world = World::with_two_metered_plans().await;
    let id = world.subscribed().await;
    world.report(&id, 5.0, last_hour(), "before").await;

    let change = world.stack.emulator.change_plan(id.as_str(), "team-monthly").await.expect("a plan change");
    let done =
        world.stack.emulator.wait_operation(id.as_str(), &change.operation_id, Duration::from_secs(15)).await;
    assert_eq!(done.expect("decided").status, "Succeeded");
    // Our record follows through the webhook; bounded wait.
    let wanted = PlanId::parse("team-monthly");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while integration_tests::flows::record(&world.stack, id.as_str()).await.subscription.plan_id != wanted {
        assert!(
            std::time::Instant::now() < deadline,
            "our record did not follow the plan change within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let run = world.emit().await;
    assert_eq!((run.accepted, run.refused.len()), (1, 0), "{run:?}");
    let hours = world.hours(&id).await;
    assert_eq!(hours[0].plan_id.as_str(), "team-monthly", "the plan sent is the one recorded");
    assert_eq!(world.at_microsoft(&id).await, (5.0, 1));
}

/// Microsoft moved the subscription to another metered plan and our record has not followed yet
/// (the webhook is late, the reconciliation has not run): Microsoft refuses the hour sent with
/// our plan. The emitter asks Microsoft which plan it is on and sends the hour again with it,
/// rather than settling as refused usage Microsoft would bill.
#[tokio::test]
async fn an_hour_refused_for_a_plan_our_record_has_not_caught_up_with_is_sent_with_microsofts() {
    let world = World::with_two_metered_plans().await;
    let id = world.subscribed().await;
    world.report(&id, 6.0, last_hour(), "before").await;
    // Microsoft's side only: no webhook reaches us.
    let seeded = world
        .stack
        .emulator
        .seed(vec![serde_json::json!({
            "id": id.as_str(), "offerId": "contoso-saas", "planId": "team-monthly", "saasSubscriptionStatus": "Subscribed"
        })])
        .await;
    assert_eq!(seeded, 1);
    let ours = integration_tests::flows::record(&world.stack, id.as_str()).await.subscription.plan_id;
    assert_eq!(ours, PlanId::parse(PLAN), "our record still has the old plan");

    let run = world.emit().await;
    assert_eq!((run.accepted, run.refused.len()), (1, 0), "{run:?}");
    assert_eq!(world.hours(&id).await[0].plan_id.as_str(), "team-monthly", "the plan Microsoft took");
    assert_eq!(world.at_microsoft(&id).await, (6.0, 1));
}

/// An hour Microsoft never took (here: it refused our app for two days) is not left pending for
/// ever once it leaves the emitter's 48 hours: the last run that sees it settles it as expired,
/// with the last error, so that it shows (and alarms) as usage that will not be billed.
#[tokio::test]
async fn an_hour_never_taken_is_given_up_when_it_leaves_the_lookback() {
    let world = World::new().await;
    let id = world.subscribed().await;
    let oldest = hour_of(now()) - world.emitter.lookback;
    let plan = PlanId::parse(PLAN).expect("plan");
    world
        .stack
        .store
        .add_usage(&usage(&id, DIMENSION, 2.0, oldest, "old"), &plan, now())
        .await
        .expect("stored");
    world.stack.emulator.inject(Endpoint::BatchUsageEvent, Fault::status(403), 2).await;
    let run = world.emit().await;
    assert_eq!((run.not_authorized, run.refused.get("Expired").copied()), (1, Some(1)), "{run:?}");
    let hours = world.stack.store.usage_of(&id, oldest, oldest).await.expect("read");
    match &hours[0].state {
        HourState::Refused { status, message, sent_quantity } => {
            assert_eq!((status.as_str(), *sent_quantity), ("Expired", 2.0));
            assert!(message.contains("403"), "the last error is kept: {message}");
        }
        other => panic!("given up: {other:?}"),
    }
}

/// A send Microsoft accepted but whose answer was never recorded (a crash), then Microsoft stops
/// billing the subscription (suspended) before the next run: the re-send is refused
/// (`ResourceNotActive`) rather than answered `Duplicate`. Microsoft's own usage record still has
/// the hour, so the emitter settles it accepted, not refused.
#[tokio::test]
async fn a_refused_resend_of_an_hour_microsoft_already_took_is_settled_accepted() {
    let world = World::new().await;
    let id = world.subscribed().await;
    world.sent_but_not_recorded(&id, 4.0).await;
    // ...and the run stopped here. Then Microsoft suspends the subscription.
    world.stack.emulator.suspend(id.as_str()).await.expect("suspended");

    let run = world.emit().await;
    assert_eq!((run.duplicates, run.refused.len()), (1, 0), "{run:?}");
    match &world.hours(&id).await[0].state {
        HourState::Accepted { sent_quantity, duplicate, .. } => {
            assert_eq!((*sent_quantity, *duplicate), (4.0, true))
        }
        other => panic!("accepted, as Microsoft's record shows: {other:?}"),
    }
}
