//! The floor for a local stack: [`Floor`] (in `floor_plan.rs`, shared with the floor process)
//! with a Marketplace token fetched once, as a warm function holds one; and what a function wrote,
//! to be written again by the floor.

use std::collections::HashMap;

use local_stack::LocalStack;
use serde_json::Value;

use crate::bootstrap::BoxError;
use crate::floor_plan::s;
pub use crate::floor_plan::{Floor, Item, MARKETPLACE_RESOURCE, STATE};

impl Floor {
    /// Fetches a Marketplace token once, as a warm function holds one.
    pub async fn new(stack: &LocalStack, dynamodb_endpoint: &str) -> Result<Self, BoxError> {
        let http = reqwest::Client::new();
        let config = stack.emulator.config();
        let scope = format!("{MARKETPLACE_RESOURCE}/.default");
        let token: Value = http
            .post(stack.emulator.token_url_v2())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &config.publisher_app_id),
                ("client_secret", &config.publisher_client_secret),
                ("scope", &scope),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let bearer = token["access_token"].as_str().ok_or("the token answer has no access_token")?.to_owned();
        Ok(Self {
            http,
            api_base: stack.emulator.api_base(),
            bearer,
            dynamodb: local_stack::dynamodb_client(dynamodb_endpoint),
            table: stack.tables.subscriptions.clone(),
            usage_table: stack.tables.usage.clone(),
            events: None,
        })
    }
}

/// What a function wrote to a partition between two snapshots, as puts into `floor_pk`: new
/// items conditioned on their absence, a changed state on the version it replaced.
pub fn written(
    before: &HashMap<String, Item>,
    after: &HashMap<String, Item>,
    floor_pk: &str,
) -> Vec<(Item, Option<String>)> {
    let mut puts: Vec<(Item, Option<String>)> = after
        .iter()
        .filter(|(sk, item)| before.get(*sk) != Some(*item))
        .map(|(sk, item)| {
            let mut item = item.clone();
            item.insert("pk".into(), s(floor_pk));
            let version =
                before.get(sk).and_then(|old| old.get("version")).and_then(|v| v.as_n().ok()).cloned();
            (item, version)
        })
        .collect();
    // A stable order: the state first, as the store writes it.
    puts.sort_by_key(|(item, _)| item.get("sk").and_then(|v| v.as_s().ok()).map(|sk| sk != STATE));
    puts
}

/// Copies a partition under another partition key (the floor's own copy of the data).
pub fn copied(items: &HashMap<String, Item>, floor_pk: &str) -> Vec<(Item, Option<String>)> {
    written(&HashMap::new(), items, floor_pk)
}
