//! Support for tests that run against DynamoDB Local (started by `scripts/test`).

pub mod fixtures;
pub mod stub;
pub mod table;

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use fulfillment::store::dynamodb::DynamoDbStore;

/// The variable through which `scripts/test` tells the tests where DynamoDB Local listens.
pub const ENDPOINT_VARIABLE: &str = "DYNAMODB_ENDPOINT";

/// DynamoDB Local's URL. A test that needs it fails (never skips) when it is not running.
pub fn dynamodb_endpoint() -> String {
    std::env::var(ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{ENDPOINT_VARIABLE} is not set: run `scripts/test`, which starts DynamoDB Local and sets it")
    })
}

/// A client of the DynamoDB at `endpoint`, with dummy credentials and short timeouts.
pub fn client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "dynamodb-local"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// A store on a new, empty table of DynamoDB Local, created from `template.yaml`.
pub async fn fresh_store() -> DynamoDbStore {
    let client = client(&dynamodb_endpoint());
    let name = format!("subscriptions-{}", uuid::Uuid::new_v4());
    table::create_from_template(&client, &name).await;
    DynamoDbStore::new(client, name)
}
