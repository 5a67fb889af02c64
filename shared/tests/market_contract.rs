//! The Marketplace model passes the same contract as our emulator (which runs it through the
//! production client in tests/integration/tests/marketplace_client.rs).

use chrono::{TimeZone, Utc};
use fulfillment::domain::{OperationAction, OperationId, PlanId, SubscriptionId};
use fulfillment::testing::market_contract::{CustomerSide, run_all, run_metering};
use fulfillment::testing::{FakeMarketplace, ManualClock};

struct Customer(FakeMarketplace);

impl CustomerSide for Customer {
    async fn purchase(&self, plan: &PlanId, seats: u32) -> (SubscriptionId, String) {
        self.0.purchase(plan.as_str(), Some(seats), "contract-tenant")
    }

    async fn change_quantity(&self, id: &SubscriptionId, seats: u32) -> OperationId {
        self.0.customer_change_quantity(id, seats).expect("changed").operation.id
    }

    async fn suspend(&self, id: &SubscriptionId) {
        self.0.lifecycle(id, OperationAction::Suspend).expect("suspended");
    }
}

#[tokio::test]
async fn the_marketplace_model_keeps_the_contract() {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time"));
    let market = FakeMarketplace::new(clock, &["basic", "premium"]);
    let (basic, premium) = (PlanId::parse("basic").expect("plan"), PlanId::parse("premium").expect("plan"));
    run_all(&market, &Customer(market.clone()), &basic, &premium).await;
}

#[tokio::test]
async fn the_marketplace_model_keeps_the_metering_contract() {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).single().expect("time");
    let market = FakeMarketplace::new(ManualClock::at(now), &["basic"]);
    market.set_dimensions("basic", &["api-calls"]);
    let basic = PlanId::parse("basic").expect("plan");
    let (id, _) = market.purchase("basic", None, "contract-tenant");
    let call = fulfillment::marketplace::Call::new();
    fulfillment::marketplace::MarketplaceApi::activate(&market, &id, &basic, None, &call)
        .await
        .expect("activated");
    run_metering(&market, &Customer(market.clone()), &id, &basic, "api-calls", now).await;
}
