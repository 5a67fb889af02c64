//! Taking the product's usage (issue 16): every refusal with nothing stored, a repeated key added
//! once, a closed hour, and the plan's dimensions read from Microsoft once. On the fakes.

use chrono::{Duration, TimeZone, Utc};
use fulfillment::changes::{Event, record_event};
use fulfillment::clock::Clock;
use fulfillment::domain::{OperationId, Subscription, SubscriptionId, SubscriptionStatus, Timestamp};
use fulfillment::emission::Emitter;
use fulfillment::marketplace::Call;
use fulfillment::metering::{Meter, MeteringError, Refusal, Taken};
use fulfillment::store::usage::{HourKey, UsageReport, UsageStore, hour_of};
use fulfillment::store::{ChangeSource, SubscriptionStore};
use fulfillment::testing::{FakeMarketplace, ManualClock, MarketFault, MemoryStore};

struct World {
    clock: ManualClock,
    market: FakeMarketplace,
    store: MemoryStore,
    meter: Meter<MemoryStore, FakeMarketplace, ManualClock>,
}

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 30, 0).single().expect("time")
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::at(now());
        let market = FakeMarketplace::new(clock.clone(), &["metered", "flat"]);
        market.set_dimensions("metered", &["api_calls", "gb_processed"]);
        let store = MemoryStore::new();
        let meter = Meter::new(store.clone(), market.clone(), clock.clone());
        Self { clock, market, store, meter }
    }

    /// A subscription we hold as Microsoft showed it.
    async fn subscription(&self, plan: &str, status: SubscriptionStatus) -> SubscriptionId {
        let (id, _) = self.market.purchase(plan, Some(1), "tenant");
        let mut subscription = Subscription::new(id.clone());
        subscription.status = Some(status);
        subscription.plan_id = fulfillment::domain::PlanId::parse(plan);
        self.observe(subscription, "seed").await;
        id
    }

    /// Our record of `id` says it is of `offer`.
    async fn store_offer(&self, id: &SubscriptionId, offer: &str) {
        let mut subscription = self.store.get(id).await.expect("read").expect("recorded").subscription;
        subscription.offer_id = Some(offer.into());
        self.observe(subscription, "offer").await;
    }

    /// Records `subscription` as seen from Microsoft by operation `operation`.
    async fn observe(&self, subscription: Subscription, operation: &str) {
        let operation = OperationId::parse(operation).expect("id");
        let seen = Event::observed(subscription, self.clock.now(), operation, ChangeSource::Landing);
        record_event(&self.store, &seen, self.clock.now()).await.expect("recorded");
    }

    async fn report(&self, report: &UsageReport) -> Result<Taken, MeteringError> {
        self.meter.report(report, &Call::new()).await
    }

    async fn total(&self, id: &SubscriptionId) -> f64 {
        let hours = self
            .store
            .usage_of(id, now() - Duration::days(2), now() + Duration::days(1))
            .await
            .expect("read");
        hours.iter().map(|h| h.quantity).sum()
    }
}

fn usage(id: &SubscriptionId, dimension: &str, quantity: f64, at: Timestamp, key: &str) -> UsageReport {
    UsageReport { subscription_id: id.clone(), dimension: dimension.into(), quantity, at, key: key.into() }
}

#[tokio::test]
async fn usage_is_added_up_once_per_key() {
    let world = World::new();
    let id = world.subscription("metered", SubscriptionStatus::Subscribed).await;
    let first = usage(&id, "api_calls", 2.5, now() - Duration::minutes(10), "k1");
    assert_eq!(world.report(&first).await.expect("taken"), Taken::Added);
    assert_eq!(world.report(&first).await.expect("taken"), Taken::Repeated);
    world.report(&usage(&id, "api_calls", 1.0, now(), "k2")).await.expect("taken");
    world.report(&usage(&id, "gb_processed", 4.0, now(), "k3")).await.expect("taken");
    assert_eq!(world.total(&id).await, 7.5);
    let lists = world.market.calls().iter().filter(|c| **c == "list_available_plans").count();
    assert_eq!(lists, 1, "the plan's dimensions are read from Microsoft once");
}

#[tokio::test]
async fn every_refusal_is_explained_and_stores_nothing() {
    let world = World::new();
    let id = world.subscription("metered", SubscriptionStatus::Subscribed).await;
    let suspended = world.subscription("metered", SubscriptionStatus::Suspended).await;
    let flat = world.subscription("flat", SubscriptionStatus::Subscribed).await;
    let unknown = SubscriptionId::parse(&uuid::Uuid::new_v4().to_string()).expect("id");
    let ok = |quantity: f64| usage(&id, "api_calls", quantity, now(), "key");
    // The oldest hour still taken started 23 hours ago (an hour is left to send it).
    let oldest = hour_of(now()) - Duration::hours(22);
    let cases: Vec<(UsageReport, &str)> = vec![
        (UsageReport { key: String::new(), ..ok(1.0) }, "InvalidKey"),
        (UsageReport { key: "a\nb".into(), ..ok(1.0) }, "InvalidKey"),
        (UsageReport { key: "k".repeat(257), ..ok(1.0) }, "InvalidKey"),
        (UsageReport { dimension: String::new(), ..ok(1.0) }, "InvalidDimension"),
        (UsageReport { dimension: "api#calls".into(), ..ok(1.0) }, "InvalidDimension"),
        (UsageReport { dimension: "api calls".into(), ..ok(1.0) }, "InvalidDimension"),
        (ok(0.0), "InvalidQuantity"),
        (ok(-1.0), "InvalidQuantity"),
        (ok(f64::NAN), "InvalidQuantity"),
        (ok(f64::INFINITY), "InvalidQuantity"),
        // What DynamoDB cannot store, or add up exactly.
        (ok(1e13), "InvalidQuantity"),
        (ok(1e200), "InvalidQuantity"),
        (ok(5e-324), "InvalidQuantity"),
        (ok(1e-7), "InvalidQuantity"),
        (UsageReport { at: now() + Duration::minutes(6), ..ok(1.0) }, "InFuture"),
        (UsageReport { at: oldest - Duration::seconds(1), ..ok(1.0) }, "TooOld"),
        (UsageReport { at: now() - Duration::days(30), ..ok(1.0) }, "TooOld"),
        (usage(&unknown, "api_calls", 1.0, now(), "key"), "UnknownSubscription"),
        (usage(&suspended, "api_calls", 1.0, now(), "key"), "NotSubscribed"),
        (usage(&flat, "api_calls", 1.0, now(), "key"), "Unmetered"),
        (usage(&id, "storage", 1.0, now(), "key"), "UnknownDimension"),
    ];
    for (report, code) in cases {
        match world.report(&report).await {
            Err(MeteringError::Refused(refusal)) => {
                assert_eq!(refusal.code(), code, "{report:?}: {refusal}");
                assert!(!refusal.to_string().is_empty());
            }
            other => panic!("{report:?} is refused with {code}: {other:?}"),
        }
    }
    for id in [&id, &suspended, &flat, &unknown] {
        assert_eq!(world.total(id).await, 0.0, "nothing stored");
    }
    // At the edges: the oldest hour taken, and a clock a little fast.
    world.report(&UsageReport { at: oldest, ..ok(1.0) }).await.expect("the oldest hour is taken");
    let fast = UsageReport { at: now() + Duration::minutes(4), key: "fast".into(), ..ok(2.0) };
    world.report(&fast).await.expect("a clock up to 5 minutes fast is taken");
    assert_eq!(world.total(&id).await, 3.0);
}

#[tokio::test]
async fn a_key_used_again_for_other_usage_and_a_closed_hour_are_refused() {
    let world = World::new();
    let id = world.subscription("metered", SubscriptionStatus::Subscribed).await;
    world.report(&usage(&id, "api_calls", 1.0, now(), "k1")).await.expect("taken");
    let reused = world.report(&usage(&id, "api_calls", 2.0, now(), "k1")).await;
    assert!(matches!(reused, Err(MeteringError::Refused(Refusal::KeyReused))), "{reused:?}");

    let key = HourKey { subscription_id: id.clone(), dimension: "api_calls".into(), hour: hour_of(now()) };
    world.store.close_hour(&key, now()).await.expect("closed");
    let late = world.report(&usage(&id, "api_calls", 3.0, now(), "k2")).await;
    match late {
        Err(MeteringError::Refused(refusal @ Refusal::HourClosed(..))) => {
            assert!(refusal.to_string().contains("being sent"), "{refusal}")
        }
        other => panic!("a closed hour takes nothing: {other:?}"),
    }
    assert_eq!(world.total(&id).await, 1.0);
}

/// Usage that arrives once its hour was closed for sending (a queue that fell behind, a retry
/// after the close) is not lost: it is added to the current hour, as Microsoft advises for usage
/// that could not be sent in time, and a repeat of it adds nothing.
#[tokio::test]
async fn usage_for_a_closed_hour_goes_to_the_current_one_once() {
    let world = World::new();
    let id = world.subscription("metered", SubscriptionStatus::Subscribed).await;
    let last = hour_of(now()) - Duration::hours(1);
    world.report(&usage(&id, "api_calls", 1.0, last, "k1")).await.expect("taken");
    let key = HourKey { subscription_id: id.clone(), dimension: "api_calls".into(), hour: last };
    world.store.close_hour(&key, now()).await.expect("closed");

    let late = usage(&id, "api_calls", 3.0, last + Duration::minutes(50), "k2");
    assert_eq!(world.report(&late).await.expect("taken"), Taken::AddedLater(hour_of(now())));
    assert_eq!(world.report(&late).await.expect("taken"), Taken::Repeated, "once");
    let hours = world.store.usage_of(&id, last, hour_of(now())).await.expect("read");
    let quantities: Vec<(Timestamp, f64)> = hours.iter().map(|h| (h.hour, h.quantity)).collect();
    assert_eq!(quantities, [(last, 1.0), (hour_of(now()), 3.0)]);
}

#[tokio::test]
async fn when_microsoft_cannot_say_the_plans_dimensions_the_report_may_be_retried() {
    let world = World::new();
    let id = world.subscription("metered", SubscriptionStatus::Subscribed).await;
    world.market.fail_next("list_available_plans", fulfillment::testing::MarketFault::Server, 1);
    let failed = world.report(&usage(&id, "api_calls", 1.0, now(), "k1")).await;
    match failed {
        Err(error @ MeteringError::Marketplace(_)) => assert!(error.is_retryable(), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(world.report(&usage(&id, "api_calls", 1.0, now(), "k1")).await.expect("taken"), Taken::Added);
}

/// A leap second (`:60`) is in the hour it ends, as every other second of it.
#[test]
fn a_leap_second_is_in_its_own_hour() {
    let leap = chrono::DateTime::parse_from_rfc3339("2026-12-31T23:59:60Z").expect("a leap second").to_utc();
    let hour = Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).single().expect("time");
    assert_eq!(hour_of(leap), hour);
    assert_eq!(hour_of(hour + Duration::minutes(59) + Duration::seconds(59)), hour);
    assert_eq!(hour_of(hour), hour);
}

/// Two offers may both have a plan of one name with other dimensions: each subscription's are
/// its offer's. A plan Microsoft listed without dimensions is asked about again later.
#[tokio::test]
async fn a_plans_dimensions_are_its_offers_and_an_empty_answer_is_not_kept() {
    let world = World::new();
    let first = world.subscription("metered", SubscriptionStatus::Subscribed).await;
    world.report(&usage(&first, "api_calls", 1.0, now(), "a")).await.expect("taken");
    // Another offer's plan "metered", with its own dimension.
    let other = world.subscription("metered", SubscriptionStatus::Subscribed).await;
    world.market.edit(&other, |s| s.offer_id = Some("other-offer".into()));
    world.store_offer(&other, "other-offer").await;
    world.market.set_dimensions("metered", &["seats_used"]);
    world.report(&usage(&other, "seats_used", 1.0, now(), "b")).await.expect("the other offer's dimension");

    let flat = world.subscription("flat", SubscriptionStatus::Subscribed).await;
    let refused = world.report(&usage(&flat, "api_calls", 1.0, now(), "c")).await;
    assert!(matches!(refused, Err(MeteringError::Refused(Refusal::Unmetered(_)))), "{refused:?}");
    world.market.set_dimensions("flat", &["api_calls"]);
    world.report(&usage(&flat, "api_calls", 1.0, now(), "c")).await.expect("asked again, now metered");
}

/// Microsoft refusing a batch as a whole (400) must not hold its good hours back until they
/// expire: the halves are sent apart, down to single events; a single event refused so is
/// settled refused, with Microsoft's reason.
#[tokio::test]
async fn a_batch_refused_as_a_whole_is_sent_in_halves_down_to_the_event_at_fault() {
    let world = World::new();
    let last = hour_of(now()) - Duration::hours(1);
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = world.subscription("metered", SubscriptionStatus::Subscribed).await;
        world.market.edit(&id, |s| s.status = Some(SubscriptionStatus::Subscribed));
        world.report(&usage(&id, "api_calls", 1.0 + f64::from(n), last, "k")).await.expect("taken");
        ids.push(id);
    }
    let mut emitter = Emitter::new(world.store.clone(), world.market.clone(), world.clock.clone());
    emitter.grace = Duration::zero();

    // The first call refused as a whole: its halves (1 and 2 hours) are accepted.
    world.market.fail_next("post_usage_events", MarketFault::BadRequest, 1);
    let run = emitter.run("split", &Call::new()).await;
    assert_eq!((run.calls, run.accepted, run.refused.len()), (3, 3, 0), "{run:?}");

    // Every call refused: each event is settled refused, alone.
    let later = hour_of(now());
    world.clock.set(later + Duration::hours(1) + Duration::minutes(1));
    for id in &ids[..2] {
        world.report(&usage(id, "api_calls", 1.0, later, "k2")).await.expect("taken");
    }
    world.market.fail_next("post_usage_events", MarketFault::BadRequest, 3);
    let run = emitter.run("poison", &Call::new()).await;
    assert_eq!((run.calls, run.refused.get("BadArgument").copied()), (3, Some(2)), "{run:?}");
}
