//! The in-memory store passes the same contract as the DynamoDB adapter (which runs it against
//! DynamoDB Local in tests/integration/tests/dynamodb_store.rs).

use fulfillment::testing::{MemoryStore, contract};

#[tokio::test]
async fn the_store_contract_holds_in_memory() {
    contract::run_all(|| async { MemoryStore::new() }).await;
}

#[tokio::test]
async fn the_usage_store_contract_holds_in_memory() {
    fulfillment::testing::usage_contract::run_all(|| async { MemoryStore::new() }).await;
}
