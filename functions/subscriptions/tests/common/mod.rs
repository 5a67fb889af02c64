//! What the admin API's handler tests (`tests/events.rs`, `tests/usage.rs`) share: a subscription
//! as Microsoft shows it, and the handler on the in-memory store and the Marketplace model. They
//! seed the subscription with `support::seed` (shared/tests/support/mod.rs).

use fulfillment::config::Environment;
use fulfillment::domain::Subscription;
use fulfillment::testing::{FakeMarketplace, ManualClock, MemoryStore, ScriptedStore};
use subscriptions::AdminApi;

pub type Api = AdminApi<ScriptedStore<MemoryStore>, FakeMarketplace, ManualClock>;

/// Subscription `id` of the contoso-saas offer with 10 seats on `plan`, bought by and for `tenant`.
pub fn subscription(id: &str, plan: &str, status: &str, tenant: &str) -> Subscription {
    serde_json::from_value(serde_json::json!({
        "id": id, "offerId": "contoso-saas", "planId": plan, "quantity": 10,
        "saasSubscriptionStatus": status, "allowedCustomerOperations": ["Read", "Update", "Delete"],
        "beneficiary": { "tenantId": tenant }, "purchaser": { "tenantId": tenant }
    }))
    .expect("subscription")
}

/// The admin API on `store` (where failures are scripted) and `market`, configured as deployed.
pub fn admin_api(store: &ScriptedStore<MemoryStore>, market: &FakeMarketplace, clock: ManualClock) -> Api {
    let environment = Environment::from_pairs([
        ("ENTRA_TENANT_ID", "72f988bf-0000-4000-8000-00000000e001"),
        ("ENTRA_CLIENT_ID", "a1b2c3d4-0000-4000-8000-00000000a991"),
        ("WEBHOOK_JWKS_URL", "http://127.0.0.1:9/keys"),
    ]);
    AdminApi::new(store.clone(), market.clone(), clock, &environment).expect("the admin API")
}
