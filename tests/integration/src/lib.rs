//! Support for tests that run against DynamoDB Local (started by `scripts/test`).

pub mod browser;
pub use local_stack::{dynamodb_client as client, table};

pub mod fixtures;
pub mod flows;
pub mod stub;

use fulfillment::config::Environment;
use fulfillment::store::dynamodb::DynamoDbStore;

/// The variable through which `scripts/test` tells the tests where DynamoDB Local listens.
pub const ENDPOINT_VARIABLE: &str = "DYNAMODB_ENDPOINT";

/// DynamoDB Local's URL. A test that needs it fails (never skips) when it is not running.
pub fn dynamodb_endpoint() -> String {
    std::env::var(ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{ENDPOINT_VARIABLE} is not set: run `scripts/test`, which starts DynamoDB Local and sets it")
    })
}

/// The variable through which `scripts/test` tells the tests where moto's server (EventBridge
/// and SQS) listens.
pub const EVENTBRIDGE_VARIABLE: &str = "EVENTBRIDGE_ENDPOINT";

/// The local EventBridge's URL. A test that needs it fails (never skips) when it is not running.
pub fn eventbridge_endpoint() -> String {
    std::env::var(EVENTBRIDGE_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{EVENTBRIDGE_VARIABLE} is not set: run `scripts/test`, which starts moto's server and sets it"
        )
    })
}

/// The local stack as the end-to-end tests run it: on DynamoDB Local, with the lifecycle events
/// relayed from its stream to the local EventBridge.
pub fn stack_options() -> local_stack::Options {
    local_stack::Options::new(dynamodb_endpoint()).with_events(eventbridge_endpoint())
}

/// A store on new, empty tables of DynamoDB Local, created from `template.yaml`.
pub async fn fresh_store() -> DynamoDbStore {
    let client = client(&dynamodb_endpoint());
    let tables = table::TableNames::fresh();
    table::create_tables(&client, &tables).await;
    tables.store(client)
}

/// `environment` without the settings `remove`, with `add` (a function built from it sees
/// exactly that).
pub fn changed_settings(environment: &Environment, remove: &[&str], add: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(
        environment
            .pairs()
            .filter(|(name, _)| !remove.contains(name) && !add.iter().any(|(added, _)| added == name))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .chain(add.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))),
    )
}
