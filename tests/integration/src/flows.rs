//! Steps of the buyer's flows, shared by the end-to-end tests.

use std::time::Duration;

use fulfillment::domain::SubscriptionId;
use fulfillment::store::{HistoryEntry, SubscriptionRecord, SubscriptionStore};
use local_stack::LocalStack;
use marketplace_emulator::{Purchase, WebhookDelivery};

/// How long a test waits for the emulator's side of a flow.
const WAIT: Duration = Duration::from_secs(15);

/// The value of a hidden form field in `page`.
pub fn field(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    Some(page[start..start + page[start..].find('"')?].to_owned())
}

/// Buys `purchase` at the emulator, lands and confirms as the buyer would; returns the subscription id.
pub async fn buy_and_activate(stack: &LocalStack, purchase: Purchase) -> String {
    let bought = stack.emulator.purchase(purchase).await;
    let http = reqwest::Client::new();
    let page =
        http.get(stack.landing_url(&bought.token)).send().await.expect("landing").text().await.expect("page");
    let form_token = field(&page, "form_token").unwrap_or_else(|| panic!("a confirmation form: {page}"));
    let answer = http
        .post(format!("{}/activate", stack.url))
        .form(&[("subscription_id", bought.subscription_id.as_str()), ("form_token", form_token.as_str())])
        .send()
        .await
        .expect("activation");
    assert!(answer.status().is_success(), "activation: {}", answer.status());
    bought.subscription_id
}

/// Our record of `subscription`, which must exist.
pub async fn record(stack: &LocalStack, subscription: &str) -> SubscriptionRecord {
    let id = SubscriptionId::parse(subscription).expect("id");
    stack.store.get(&id).await.expect("read").expect("recorded")
}

/// Every history entry of `subscription`.
pub async fn history(stack: &LocalStack, subscription: &str) -> Vec<HistoryEntry> {
    stack.store.history(&SubscriptionId::parse(subscription).expect("id")).await.expect("history")
}

/// The first delivery of `operation` that got an answer (our answer follows the durable write).
pub async fn delivered(stack: &LocalStack, operation: &str) -> WebhookDelivery {
    stack
        .emulator
        .wait_webhook(WAIT, |d| d.operation_id == operation && d.status.is_some())
        .await
        .unwrap_or_else(|e| panic!("no answered delivery of {operation}: {e:?}"))
}

/// Every lifecycle event of a subscription so far (their `detail`), once everything committed has
/// been relayed: each valid by the published schema, each once, in commit order.
pub async fn lifecycle_events(stack: &LocalStack, subscription: &str) -> Vec<serde_json::Value> {
    let events = stack.lifecycle_events(subscription).await;
    for event in &events {
        fulfillment::testing::event_schema(event);
    }
    let versions: Vec<u64> = events.iter().map(|e| e["version"].as_u64().expect("a version")).collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "once each, in commit order: versions {versions:?} in {events:#?}"
    );
    events
}

/// The events' types, in order.
pub fn types(events: &[serde_json::Value]) -> Vec<&str> {
    events.iter().map(|e| e["eventType"].as_str().unwrap_or_default()).collect()
}
