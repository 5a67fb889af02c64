//! The floor's calls, shared by the benchmark and its floor process (`src/bin/idle_floor.rs`):
//! the Marketplace and DynamoDB requests a flow must make, made directly by a minimal client
//! (reqwest with a token, and the bare DynamoDB client) and nothing else; and a [`Plan`] of them
//! that crosses to the floor process as JSON (items in DynamoDB's JSON form).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Item = HashMap<String, AttributeValue>;

/// Microsoft's SaaS Fulfillment API, as Entra names it.
pub const MARKETPLACE_RESOURCE: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";
const API_VERSION: &str = "2018-08-31";
pub const STATE: &str = "STATE";

pub struct Floor {
    pub http: reqwest::Client,
    pub api_base: String,
    pub bearer: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
    pub usage_table: String,
    /// EventBridge, for the events relay's floor.
    pub events: Option<aws_sdk_eventbridge::Client>,
}

pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// What a fresh process fetches before its first call: a token, and Entra's signing keys where
/// the flow checks a token itself (the webhook).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fresh {
    pub keys_url: Option<String>,
    /// Whether the function opens its connections at start, beside the token (it warms up).
    pub warm_connections: bool,
    pub token_url: String,
    pub form: Vec<(String, String)>,
}

/// One of the floor's calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    Marketplace {
        method: String,
        path: String,
        #[serde(default)]
        query: Vec<(String, String)>,
        #[serde(default)]
        headers: Vec<(String, String)>,
        body: Option<Value>,
    },
    GetItem {
        pk: String,
        sk: String,
    },
    /// A partition's items, or those whose sort key starts with `prefix`; with `index`, the
    /// items of that index whose key attribute `key` is `value` (eventually consistent, as an
    /// index is read).
    Query {
        #[serde(default)]
        table: Table,
        index: Option<(String, String)>,
        pk: String,
        prefix: Option<String>,
    },
    /// These items (partition and sort key), read together; all of them must be found.
    BatchGet {
        #[serde(default)]
        table: Table,
        keys: Vec<(String, String)>,
    },
    /// Items in DynamoDB's JSON form, each with the version its put is conditioned on.
    PutAll {
        puts: Vec<(Value, Option<String>)>,
    },
    /// One conditional write (PutItem or UpdateItem).
    Write(Write),
    /// Conditional writes in one transaction.
    Transact(Vec<Write>),
    /// Events on the EventBridge bus (one PutEvents); each must be accepted.
    PutEvents(Vec<BusEntry>),
}

/// Which of the stack's tables a call goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    #[default]
    Subscriptions,
    Usage,
}

/// A conditional write as DynamoDB takes it: `item` put, or with `update`, the item of `item`'s
/// key updated by that expression; `values` in DynamoDB's JSON form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Write {
    pub table: Table,
    pub item: Value,
    pub update: Option<String>,
    pub condition: String,
    pub names: Vec<(String, String)>,
    pub values: Value,
}

/// A [`Write`]'s parts, as the SDK takes them ([`Floor::write_parts`]).
struct WriteParts {
    table: String,
    item: Item,
    names: Option<HashMap<String, String>>,
    values: Option<Item>,
}

/// An EventBridge entry: bus, source, detail type, detail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusEntry {
    pub bus: String,
    pub source: String,
    pub detail_type: String,
    pub detail: String,
}

/// A round of the floor's calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub fresh: Option<Fresh>,
    pub calls: Vec<Call>,
}

impl Call {
    /// A Marketplace call with neither query parameters (but the API version) nor headers.
    pub fn marketplace(method: &str, path: &str, body: Option<Value>) -> Self {
        Call::Marketplace {
            method: method.into(),
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body,
        }
    }

    pub fn put_all(puts: &[(Item, Option<String>)]) -> Self {
        Call::PutAll { puts: puts.iter().map(|(item, version)| (item_json(item), version.clone())).collect() }
    }
}

/// An item in DynamoDB's JSON form (`{"S": ...}`, `{"N": ...}`, ...).
pub fn item_json(item: &Item) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect())
}

fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::Ss(ss) => json!({ "SS": ss }),
        other => json!({ "unsupported": format!("{other:?}") }),
    }
}

pub fn item_from_json(value: &Value) -> Result<Item, BoxError> {
    let map = value.as_object().ok_or("an item is an object")?;
    map.iter().map(|(k, v)| Ok((k.clone(), attribute_from_json(v)?))).collect()
}

fn attribute_from_json(value: &Value) -> Result<AttributeValue, BoxError> {
    let (kind, inner) = value.as_object().and_then(|m| m.iter().next()).ok_or("an attribute value")?;
    let text = || inner.as_str().map(str::to_owned).ok_or_else(|| format!("{kind}: a string"));
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or("BOOL: a boolean")?),
        "NULL" => AttributeValue::Null(true),
        "M" => AttributeValue::M(item_from_json(inner)?),
        "L" => AttributeValue::L(
            inner.as_array().ok_or("L: a list")?.iter().map(attribute_from_json).collect::<Result<_, _>>()?,
        ),
        "SS" => AttributeValue::Ss(serde_json::from_value(inner.clone())?),
        other => return Err(format!("unsupported attribute type {other}").into()),
    })
}

impl Floor {
    /// Makes the calls in order.
    pub async fn run<'a>(&self, calls: &'a [Call]) -> Result<(), BoxError> {
        for call in calls {
            match call {
                Call::Marketplace { method, path, query, headers, body } => {
                    let method = Method::from_bytes(method.as_bytes())?;
                    let pairs = |list: &'a [(String, String)]| -> Vec<(&'a str, &'a str)> {
                        list.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
                    };
                    self.marketplace(method, path, &pairs(query), &pairs(headers), body.as_ref()).await?;
                }
                Call::GetItem { pk, sk } => {
                    self.get_item(pk, sk).await?;
                }
                Call::Query { table, index, pk, prefix } => {
                    self.query_in(*table, index.as_ref(), pk, prefix.as_deref()).await?;
                }
                Call::BatchGet { table, keys } => {
                    let found = self.batch_get(*table, keys).await?;
                    if found != keys.len() {
                        return Err(format!("floor found {found} of {} items", keys.len()).into());
                    }
                }
                Call::Write(write) => self.write(write).await?,
                Call::Transact(writes) => self.transact(writes).await?,
                Call::PutEvents(entries) => self.put_events(entries).await?,
                Call::PutAll { puts } => {
                    let puts = puts
                        .iter()
                        .map(|(item, version)| Ok((item_from_json(item)?, version.clone())))
                        .collect::<Result<Vec<_>, BoxError>>()?;
                    self.put_all(puts).await?;
                }
            }
        }
        Ok(())
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
        self.get_item_in(Table::Subscriptions, pk, sk).await
    }

    pub async fn get_item_in(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, BoxError> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(self.table_name(table))
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

    fn table_name(&self, table: Table) -> &str {
        match table {
            Table::Subscriptions => &self.table,
            Table::Usage => &self.usage_table,
        }
    }

    /// The items of a partition of the subscriptions table, or those whose sort key starts with
    /// `prefix`.
    pub async fn query(&self, pk: &str, prefix: Option<&str>) -> Result<Vec<Item>, BoxError> {
        self.query_in(Table::Subscriptions, None, pk, prefix).await
    }

    /// [`Call::Query`].
    pub async fn query_in(
        &self,
        table: Table,
        index: Option<&(String, String)>,
        pk: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<Item>, BoxError> {
        let query = self
            .dynamodb
            .query()
            .table_name(self.table_name(table))
            .expression_attribute_values(":pk", s(pk));
        let query = match index {
            Some(_) if prefix.is_some() => {
                return Err("the floor queries an index by its partition key alone".into());
            }
            Some((index, key)) => query
                .index_name(index)
                .key_condition_expression("#key = :pk")
                .expression_attribute_names("#key", key),
            None => query.consistent_read(true).key_condition_expression(match prefix {
                Some(_) => "pk = :pk AND begins_with(sk, :prefix)",
                None => "pk = :pk",
            }),
        };
        let query = match prefix {
            Some(prefix) => query.expression_attribute_values(":prefix", s(prefix)),
            None => query,
        };
        let items = query.into_paginator().items().send().collect::<Result<Vec<_>, _>>().await?;
        Ok(items)
    }

    /// These items, 100 keys a request: how many were found.
    pub async fn batch_get(&self, table: Table, keys: &[(String, String)]) -> Result<usize, BoxError> {
        let name = self.table_name(table);
        let mut found = 0;
        for chunk in keys.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|(pk, sk)| HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))]))
                .collect();
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()?;
                let output = self.dynamodb.batch_get_item().request_items(name, request).send().await?;
                found += output.responses.and_then(|mut r| r.remove(name)).map_or(0, |items| items.len());
                if let Some(left) = output.unprocessed_keys.and_then(|mut u| u.remove(name)) {
                    keys = left.keys;
                }
            }
        }
        Ok(found)
    }

    /// A [`Write`] as the SDK takes it: its table, its item (a put) or key (an update), and its
    /// names and values (`None` where there are none).
    fn write_parts(&self, write: &Write) -> Result<WriteParts, BoxError> {
        let mut item = item_from_json(&write.item)?;
        if write.update.is_some() {
            item.retain(|name, _| name == "pk" || name == "sk");
        }
        let values = match &write.values {
            Value::Null => None,
            values => Some(item_from_json(values)?),
        };
        let names: HashMap<String, String> = write.names.iter().cloned().collect();
        Ok(WriteParts {
            table: self.table_name(write.table).to_owned(),
            item,
            names: (!names.is_empty()).then_some(names),
            values: values.filter(|v| !v.is_empty()),
        })
    }

    /// [`Call::Write`]: a PutItem, or an UpdateItem of the item's key.
    pub async fn write(&self, write: &Write) -> Result<(), BoxError> {
        let WriteParts { table, item, names, values } = self.write_parts(write)?;
        match &write.update {
            Some(update) => {
                self.dynamodb
                    .update_item()
                    .table_name(table)
                    .set_key(Some(item))
                    .update_expression(update)
                    .condition_expression(&write.condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                    .send()
                    .await?;
            }
            None => {
                self.dynamodb
                    .put_item()
                    .table_name(table)
                    .set_item(Some(item))
                    .condition_expression(&write.condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await?;
            }
        }
        Ok(())
    }

    /// [`Call::Transact`].
    pub async fn transact(&self, writes: &[Write]) -> Result<(), BoxError> {
        let mut items = Vec::with_capacity(writes.len());
        for write in writes {
            let WriteParts { table, item, names, values } = self.write_parts(write)?;
            let written = match &write.update {
                Some(update) => {
                    let update = Update::builder()
                        .table_name(table)
                        .set_key(Some(item))
                        .update_expression(update)
                        .condition_expression(&write.condition)
                        .set_expression_attribute_names(names)
                        .set_expression_attribute_values(values);
                    TransactWriteItem::builder().update(update.build()?).build()
                }
                None => {
                    let put = Put::builder()
                        .table_name(table)
                        .set_item(Some(item))
                        .condition_expression(&write.condition)
                        .set_expression_attribute_names(names)
                        .set_expression_attribute_values(values);
                    TransactWriteItem::builder().put(put.build()?).build()
                }
            };
            items.push(written);
        }
        self.dynamodb.transact_write_items().set_transact_items(Some(items)).send().await?;
        Ok(())
    }

    /// [`Call::PutEvents`].
    pub async fn put_events(&self, entries: &[BusEntry]) -> Result<(), BoxError> {
        let events = self.events.as_ref().ok_or("the floor has no EventBridge client")?;
        let entries = entries
            .iter()
            .map(|entry| {
                aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                    .event_bus_name(&entry.bus)
                    .source(&entry.source)
                    .detail_type(&entry.detail_type)
                    .detail(&entry.detail)
                    .build()
            })
            .collect();
        let output = events.put_events().set_entries(Some(entries)).send().await?;
        if output.failed_entry_count() != 0 {
            return Err(
                format!("EventBridge refused {} of the floor's events", output.failed_entry_count()).into()
            );
        }
        Ok(())
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
