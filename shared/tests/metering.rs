//! Taking the product's usage (issue 16): every refusal with nothing stored, a repeated key added
//! once, a closed hour, and the plan's dimensions read from Microsoft once. On the fakes.

use chrono::{Duration, TimeZone, Utc};
use fulfillment::changes::{Event, record_event};
use fulfillment::clock::Clock;
use fulfillment::domain::{OperationId, Subscription, SubscriptionId, SubscriptionStatus, Timestamp};
use fulfillment::marketplace::Call;
use fulfillment::metering::{Meter, MeteringError, Refusal, Taken};
use fulfillment::store::ChangeSource;
use fulfillment::store::usage::{HourKey, UsageReport, UsageStore, hour_of};
use fulfillment::testing::{FakeMarketplace, ManualClock, MemoryStore};

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
        let seen = Event::observed(
            subscription,
            self.clock.now(),
            OperationId::parse("seed").expect("id"),
            ChangeSource::Landing,
        );
        record_event(&self.store, &seen, self.clock.now()).await.expect("recorded");
        id
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
