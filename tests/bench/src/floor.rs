//! The floor: the Marketplace and DynamoDB requests a flow must make, made directly by a minimal
//! client (reqwest with a token fetched once, and the bare DynamoDB client) and nothing else.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem};
use local_stack::LocalStack;
use reqwest::Method;
use serde_json::Value;

use crate::bootstrap::BoxError;

pub type Item = HashMap<String, AttributeValue>;

/// Microsoft's SaaS Fulfillment API, as Entra names it.
const MARKETPLACE_RESOURCE: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";
const API_VERSION: &str = "2018-08-31";
pub const STATE: &str = "STATE";

pub struct Floor {
    http: reqwest::Client,
    api_base: String,
    bearer: String,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

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
        })
    }

    /// One Marketplace call (`path` below the API base); its JSON answer, `Null` when empty.
    pub async fn marketplace(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, BoxError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api_base))
            .query(&[("api-version", API_VERSION)])
            .query(query)
            .bearer_auth(&self.bearer)
            .header("x-ms-requestid", uuid::Uuid::new_v4().to_string())
            .header("x-ms-correlationid", uuid::Uuid::new_v4().to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            return Err(
                format!("floor: {method} {path}: {status} {}", String::from_utf8_lossy(&bytes)).into()
            );
        }
        Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? })
    }

    pub async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, BoxError> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await?;
        Ok(output.item)
    }

    /// One transaction of puts; each conditioned on the item's absence, or on the state's version.
    pub async fn put_all(&self, puts: Vec<(Item, Option<String>)>) -> Result<(), BoxError> {
        let mut writes = Vec::with_capacity(puts.len());
        for (item, version) in puts {
            let put = Put::builder().table_name(&self.table).set_item(Some(item));
            let put = match version {
                Some(version) => put
                    .condition_expression("version = :expected")
                    .expression_attribute_values(":expected", AttributeValue::N(version)),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            writes.push(TransactWriteItem::builder().put(put.build()?).build());
        }
        self.dynamodb.transact_write_items().set_transact_items(Some(writes)).send().await?;
        Ok(())
    }

    /// The items of a partition, or those whose sort key starts with `prefix`.
    pub async fn query(&self, pk: &str, prefix: Option<&str>) -> Result<Vec<Item>, BoxError> {
        let query = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true);
        let query = match prefix {
            Some(prefix) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix)),
            None => query.key_condition_expression("pk = :pk"),
        };
        let items = query.into_paginator().items().send().collect::<Result<Vec<_>, _>>().await?;
        Ok(items)
    }

    /// The state items of these partitions, 100 keys a request.
    pub async fn batch_get(&self, partitions: &[String]) -> Result<usize, BoxError> {
        let mut found = 0;
        for chunk in partitions.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|pk| HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(STATE))]))
                .collect();
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()?;
                let output =
                    self.dynamodb.batch_get_item().request_items(&self.table, request).send().await?;
                found +=
                    output.responses.and_then(|mut r| r.remove(&self.table)).map_or(0, |items| items.len());
                if let Some(left) = output.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    keys = left.keys;
                }
            }
        }
        Ok(found)
    }

    /// Every item of a partition, by sort key (for setting the floor up; never timed).
    pub async fn partition(&self, pk: &str) -> Result<HashMap<String, Item>, BoxError> {
        let items = self.query(pk, None).await?;
        Ok(items
            .into_iter()
            .map(|item| (item.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default(), item))
            .collect())
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
