//! The DynamoDB adapter of [`SubscriptionStore`] and [`UsageStore`](super::usage::UsageStore):
//! two tables, laid out as [`layout`] says. Subscriptions, operations and history share one; the
//! metered usage has its own, so that the roles that write usage cannot touch a subscription and
//! a listing of subscriptions never reads usage.
//!
//! Records are written as native DynamoDB maps (converted from their JSON form), so items stay
//! readable in the console and on the table's stream.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, KeysAndAttributes, Put, TransactWriteItem};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    BoxError, Change, Committed, HistoryEntry, HistoryPage, ListFilter, ListPage, OperationRecord,
    ReconcileCheckpoint, RejectedDelivery, StateWrite, StoreError, SubscriptionRecord, SubscriptionStore,
};
use crate::domain::{OperationId, SubscriptionId};

mod usage;
pub use usage::{
    ADD_TO_HOUR, ADD_TO_HOUR_CONDITION, CLOSE_HOUR, SETTLED_HOUR_RETENTION, USAGE_KEY_RETENTION,
};

/// The tables' keys and indexes; `template.yaml` declares the same (a test checks they agree).
/// Both tables are keyed by `pk` and `sk`; the usage table holds the `USAGE…` items only.
pub mod layout {
    use crate::domain::{OperationId, SubscriptionId, Timestamp};

    pub const PARTITION_KEY: &str = "pk";
    pub const SORT_KEY: &str = "sk";
    /// Sparse global secondary index: only subscription state items carry its key.
    pub const TENANT_INDEX: &str = "ByBeneficiaryTenant";
    pub const TENANT_KEY: &str = "beneficiaryTenantId";
    /// Epoch seconds after which DynamoDB's TTL may delete an item (both tables).
    pub const EXPIRES_AT: &str = "expiresAt";

    pub const STATE: &str = "STATE";
    pub const REJECTED_PREFIX: &str = "REJECTED#";
    pub const OPERATION_PREFIX: &str = "OP#";
    pub const EVENT_PREFIX: &str = "EVENT#";
    /// The reconciliation's checkpoint: one item, apart from every subscription.
    pub const RECONCILE: &str = "RECONCILE";
    pub const CHECKPOINT: &str = "CHECKPOINT";
    /// A subscription's usage of a dimension in an hour (metered billing; the usage table).
    pub const USAGE_PREFIX: &str = "USAGE#";
    /// A usage report's idempotency key, kept a few days.
    pub const USAGE_KEY_PREFIX: &str = "USAGEKEY#";
    /// Sparse global secondary index: only usage hours not yet settled carry its key, the hour.
    pub const UNSETTLED_INDEX: &str = "ByUnsettledHour";
    pub const UNSETTLED_KEY: &str = "unsettledHour";

    /// An hour as usage keys spell it: `2026-12-02T10`, so that sort-key order is time order.
    pub fn hour(hour: Timestamp) -> String {
        hour.format("%Y-%m-%dT%H").to_string()
    }

    /// Time first, so that a subscription's hours come in time order.
    pub fn usage(hour: Timestamp, dimension: &str) -> String {
        format!("{USAGE_PREFIX}{}#{dimension}", self::hour(hour))
    }

    pub fn usage_key(key: &str) -> String {
        format!("{USAGE_KEY_PREFIX}{key}")
    }

    pub fn partition(id: &SubscriptionId) -> String {
        format!("SUB#{id}")
    }

    pub fn operation(id: &OperationId) -> String {
        format!("{OPERATION_PREFIX}{id}")
    }

    /// Refused deliveries, one partition per UTC day.
    pub fn rejected_day(day: chrono::NaiveDate) -> String {
        format!("{REJECTED_PREFIX}{}", day.format("%Y-%m-%d"))
    }

    /// Fixed-width UTC time first, so that sort-key order is time order.
    pub fn event(at: Timestamp, operation: &OperationId) -> String {
        format!("{EVENT_PREFIX}{}#{operation}", at.format("%Y-%m-%dT%H:%M:%S%.9fZ"))
    }
}

/// How long an operation item is kept for deduplication. Microsoft retries a webhook for 8 hours;
/// the history keeps every operation forever.
pub const OPERATION_RETENTION: chrono::Duration = chrono::Duration::days(90);

type Item = HashMap<String, AttributeValue>;

/// Subscriptions, operations and history in one DynamoDB table; metered usage in another.
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    usage_table: String,
}

impl DynamoDbStore {
    pub fn new(client: Client, table: impl Into<String>, usage_table: impl Into<String>) -> Self {
        Self { client, table: table.into(), usage_table: usage_table.into() }
    }

    /// What a function can do at start ([`crate::wiring::warm_up`]): open DynamoDB's connection
    /// (its TLS handshake) with a read of a subscription that does not exist.
    pub fn warm_up_step(&self) -> crate::wiring::WarmUpStep<'_> {
        let read = async move {
            self.get(&SubscriptionId::nobody()).await.map(drop).map_err(|e| crate::error_chain(&e))
        };
        ("dynamodb-connection", Box::pin(read))
    }

    fn put(&self, item: Item, condition: &str) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .expect("table, item and condition are set");
        TransactWriteItem::builder().put(put).build()
    }

    fn versioned_put(&self, item: Item, expected_version: u64) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", number(expected_version))
            .build()
            .expect("table, item and condition are set");
        TransactWriteItem::builder().put(put).build()
    }

    /// The state item must still be at `expected_version` (or absent) for the transaction to commit.
    fn unchanged(&self, partition: &str, expected_version: Option<u64>) -> TransactWriteItem {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key(layout::PARTITION_KEY, string(partition))
            .key(layout::SORT_KEY, string(layout::STATE));
        let check = match expected_version {
            Some(version) => check
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", number(version)),
            None => check.condition_expression("attribute_not_exists(pk)"),
        };
        let check = check.build().expect("table, key and condition are set");
        TransactWriteItem::builder().condition_check(check).build()
    }

    /// The items of `table` with these (distinct) keys that exist, read consistently: BatchGetItem
    /// takes at most 100 keys, and keys it could not serve (throttling) are asked for again after
    /// a pause.
    async fn get_items(
        &self,
        action: &'static str,
        table: &str,
        keys: Vec<Item>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut keys = chunk.to_vec();
            let mut rounds = 0;
            while !keys.is_empty() {
                rounds += 1;
                if rounds > 10 {
                    return Err(StoreError::Unavailable { action, source: "keys left unprocessed".into() });
                }
                if rounds > 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << rounds.min(6))).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .expect("keys are set");
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(|e| classify(action, e))?;
                found.extend(output.responses.and_then(|mut r| r.remove(table)).unwrap_or_default());
                if let Some(left) = output.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                    keys = left.keys;
                }
            }
        }
        Ok(found)
    }

    async fn query_all(
        &self,
        action: &'static str,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        query.into_paginator().items().send().try_collect().await.map_err(|e| classify(action, e))
    }
}

impl SubscriptionStore for DynamoDbStore {
    async fn get(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(layout::PARTITION_KEY, string(layout::partition(id)))
            .key(layout::SORT_KEY, string(layout::STATE))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("get subscription", e))?;
        output.item.map(|item| decode(&item)).transpose()
    }

    async fn apply(&self, change: &Change) -> Result<Committed, StoreError> {
        let id = change.subscription_id();
        let partition = layout::partition(id);
        let mut writes = Vec::with_capacity(3);
        let version = match &change.state {
            StateWrite::Create(record) => {
                writes.push(self.put(state_item(&partition, record)?, "attribute_not_exists(pk)"));
                record.version
            }
            StateWrite::Replace { expected_version, record } => {
                writes.push(self.versioned_put(state_item(&partition, record)?, *expected_version));
                record.version
            }
            StateWrite::Keep { expected_version } => {
                writes.push(self.unchanged(&partition, *expected_version));
                change.history.version
            }
        };
        let state_writes = writes.len();
        writes.push(self.put(operation_item(&partition, &change.operation)?, "attribute_not_exists(pk)"));
        writes.push(self.put(history_item(&partition, &change.history)?, "attribute_not_exists(pk)"));

        match self.client.transact_write_items().set_transact_items(Some(writes)).send().await {
            Ok(_) => Ok(Committed::Written { version }),
            Err(error) => {
                let reasons: Vec<Option<String>> = match error.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                        cancelled.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect()
                    }
                    _ => return Err(classify("apply change", error)),
                };
                let failed =
                    |index: usize, code: &str| reasons.get(index).and_then(Option::as_deref) == Some(code);
                if failed(state_writes, "ConditionalCheckFailed") {
                    // The operation id is already recorded: this change was applied before.
                    Ok(Committed::Duplicate)
                } else if reasons
                    .iter()
                    .flatten()
                    .any(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict")
                {
                    Err(StoreError::Conflict { subscription_id: id.clone() })
                } else {
                    Err(classify("apply change", error))
                }
            }
        }
    }

    async fn get_many(&self, ids: &[SubscriptionId]) -> Result<Vec<SubscriptionRecord>, StoreError> {
        // DynamoDB refuses a batch that names a key twice: each id is asked for once.
        let mut unique: Vec<&SubscriptionId> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        let keys = unique.into_iter().map(|id| key(&layout::partition(id), layout::STATE)).collect();
        self.get_items("get subscriptions", &self.table, keys).await?.iter().map(decode).collect()
    }

    async fn list(
        &self,
        filter: &ListFilter,
        page: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, StoreError> {
        let mut conditions = vec!["sk = :state".to_owned()];
        let mut scan = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(limit.clamp(1, 1000) as i32)
            .expression_attribute_values(":state", string(layout::STATE));
        if let Some(status) = &filter.status {
            conditions.push("#status = :status".into());
            scan = scan
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", string(status.as_str()));
        }
        if let Some(offer) = &filter.offer_id {
            conditions.push("offerId = :offer".into());
            scan = scan.expression_attribute_values(":offer", string(offer));
        }
        if let Some(page) = page {
            scan = scan.set_exclusive_start_key(Some(page_key(page)?));
        }
        let output = scan
            .filter_expression(conditions.join(" AND "))
            .send()
            .await
            .map_err(|e| classify("list subscriptions", e))?;
        let subscriptions = output.items.unwrap_or_default().iter().map(decode).collect::<Result<_, _>>()?;
        let next = output.last_evaluated_key.map(|key| page_token(&key));
        Ok(ListPage { subscriptions, next })
    }

    async fn operation(
        &self,
        subscription_id: &SubscriptionId,
        operation_id: &OperationId,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(layout::PARTITION_KEY, string(layout::partition(subscription_id)))
            .key(layout::SORT_KEY, string(layout::operation(operation_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("get operation", e))?;
        output.item.map(|item| decode(&item)).transpose()
    }

    async fn history(&self, id: &SubscriptionId) -> Result<Vec<HistoryEntry>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", string(layout::partition(id)))
            .expression_attribute_values(":prefix", string(layout::EVENT_PREFIX))
            .consistent_read(true);
        self.query_all("read history", query).await?.iter().map(decode).collect()
    }

    async fn history_page(
        &self,
        id: &SubscriptionId,
        page: Option<&str>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        let partition = layout::partition(id);
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", string(&partition))
            .expression_attribute_values(":prefix", string(layout::EVENT_PREFIX))
            .limit(limit.clamp(1, 1000) as i32)
            .consistent_read(true);
        if let Some(page) = page {
            super::page_token::history_position(page, id)?;
            query = query.set_exclusive_start_key(Some(page_key(page)?));
        }
        let output = query.send().await.map_err(|e| classify("read history", e))?;
        let entries = output.items.unwrap_or_default().iter().map(decode).collect::<Result<_, _>>()?;
        Ok(HistoryPage { entries, next: output.last_evaluated_key.map(|key| page_token(&key)) })
    }

    async fn record_rejected(&self, delivery: &RejectedDelivery) -> Result<(), StoreError> {
        let partition = layout::rejected_day(delivery.received_at.date_naive());
        let sort = format!("{}#{}", delivery.received_at.format("%Y-%m-%dT%H:%M:%S%.9fZ"), delivery.id);
        let mut item = encode(&partition, &sort, delivery)?;
        item.insert(
            layout::EXPIRES_AT.into(),
            number((delivery.received_at + OPERATION_RETENTION).timestamp()),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| classify("record rejected delivery", e))?;
        Ok(())
    }

    async fn rejected_on(&self, day: chrono::NaiveDate) -> Result<Vec<RejectedDelivery>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", string(layout::rejected_day(day)))
            .consistent_read(true);
        self.query_all("read rejected deliveries", query).await?.iter().map(decode).collect()
    }

    async fn by_beneficiary_tenant(&self, tenant_id: &str) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(layout::TENANT_INDEX)
            .key_condition_expression("#tenant = :tenant")
            .expression_attribute_names("#tenant", layout::TENANT_KEY)
            .expression_attribute_values(":tenant", string(tenant_id));
        self.query_all("find by beneficiary tenant", query).await?.iter().map(decode).collect()
    }

    async fn checkpoint(&self) -> Result<Option<ReconcileCheckpoint>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(layout::PARTITION_KEY, string(layout::RECONCILE))
            .key(layout::SORT_KEY, string(layout::CHECKPOINT))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("read the reconciliation's checkpoint", e))?;
        output.item.map(|item| decode(&item)).transpose()
    }

    async fn save_checkpoint(&self, checkpoint: &ReconcileCheckpoint) -> Result<u64, StoreError> {
        let version = checkpoint.version + 1;
        let saved = ReconcileCheckpoint { version, ..checkpoint.clone() };
        let item = encode(layout::RECONCILE, layout::CHECKPOINT, &saved)?;
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let put = if checkpoint.version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :expected")
                .expression_attribute_values(":expected", number(checkpoint.version))
        };
        match put.send().await {
            Ok(_) => Ok(version),
            Err(error)
                if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::CheckpointTaken)
            }
            Err(error) => Err(classify("save the reconciliation's checkpoint", error)),
        }
    }
}

// Pages ----------------------------------------------------------------------------------------

/// The page token of the scan's last key.
fn page_token(key: &Item) -> String {
    let part = |name: &str| key.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    super::page_token::new(&part(layout::PARTITION_KEY), &part(layout::SORT_KEY))
}

fn page_key(token: &str) -> Result<Item, StoreError> {
    let (partition, sort) = super::page_token::parse(token)?;
    Ok(key(&partition, &sort))
}

/// An item's key.
fn key(partition: &str, sort: &str) -> Item {
    HashMap::from([
        (layout::PARTITION_KEY.to_owned(), string(partition)),
        (layout::SORT_KEY.to_owned(), string(sort)),
    ])
}

// Items ----------------------------------------------------------------------------------------

fn state_item(partition: &str, record: &SubscriptionRecord) -> Result<Item, StoreError> {
    let mut item = encode(partition, layout::STATE, record)?;
    let subscription = &record.subscription;
    // Top-level copies for the index and for filters; the record itself stays the source.
    if let Some(tenant) = subscription.beneficiary_tenant_id() {
        item.insert(layout::TENANT_KEY.into(), string(tenant));
    }
    if let Some(status) = &subscription.status {
        item.insert("status".into(), string(status.as_str()));
    }
    if let Some(offer) = &subscription.offer_id {
        item.insert("offerId".into(), string(offer));
    }
    Ok(item)
}

fn operation_item(partition: &str, operation: &OperationRecord) -> Result<Item, StoreError> {
    let mut item = encode(partition, &layout::operation(&operation.id), operation)?;
    let expires = operation.recorded_at + OPERATION_RETENTION;
    item.insert(layout::EXPIRES_AT.into(), number(expires.timestamp()));
    Ok(item)
}

fn history_item(partition: &str, entry: &HistoryEntry) -> Result<Item, StoreError> {
    encode(partition, &layout::event(entry.at, &entry.operation_id), entry)
}

fn encode(partition: &str, sort: &str, record: &impl Serialize) -> Result<Item, StoreError> {
    let corrupt = |source: BoxError| StoreError::Corrupt { key: format!("{partition}/{sort}"), source };
    let Value::Object(fields) = serde_json::to_value(record).map_err(|e| corrupt(e.into()))? else {
        return Err(corrupt("a record must encode as an object".into()));
    };
    let mut item: Item = fields.into_iter().map(|(k, v)| (k, to_attribute(v))).collect();
    item.insert(layout::PARTITION_KEY.into(), string(partition));
    item.insert(layout::SORT_KEY.into(), string(sort));
    Ok(item)
}

fn decode<T: DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let key = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let corrupt = |source: BoxError| StoreError::Corrupt {
        key: format!("{}/{}", key(layout::PARTITION_KEY), key(layout::SORT_KEY)),
        source,
    };
    let fields = item
        .iter()
        .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
        .collect::<Result<serde_json::Map<_, _>, BoxError>>()
        .map_err(corrupt)?;
    serde_json::from_value(Value::Object(fields)).map_err(|e| corrupt(e.into()))
}

fn to_attribute(value: Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s),
        Value::Array(items) => AttributeValue::L(items.into_iter().map(to_attribute).collect()),
        Value::Object(fields) => {
            AttributeValue::M(fields.into_iter().map(|(k, v)| (k, to_attribute(v))).collect())
        }
    }
}

fn from_attribute(value: &AttributeValue) -> Result<Value, BoxError> {
    Ok(match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => {
            let number = n.parse::<u64>().map(Into::into).or_else(|_| n.parse::<i64>().map(Into::into));
            match number {
                Ok(number) => Value::Number(number),
                Err(_) => serde_json::Number::from_f64(n.parse::<f64>()?)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{n} is not a finite number"))?,
            }
        }
        AttributeValue::L(items) => Value::Array(items.iter().map(from_attribute).collect::<Result<_, _>>()?),
        AttributeValue::M(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
                .collect::<Result<_, BoxError>>()?,
        ),
        other => return Err(format!("unexpected attribute type {other:?}").into()),
    })
}

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

// Errors ---------------------------------------------------------------------------------------

/// Transport failures, throttling and server errors are retryable; the rest is a refusal.
fn classify<E, R>(action: &'static str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    const RETRYABLE_CODES: &[&str] = &[
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        // A write to an item a transaction holds at that moment.
        "TransactionConflictException",
    ];
    let retryable = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(context) => context.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c)),
        _ => false,
    };
    let source = Box::new(error);
    if retryable {
        StoreError::Unavailable { action, source }
    } else {
        StoreError::Refused { action, source }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::{ErrorMetadata, SdkError};
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

    use super::*;

    fn answered(code: &str) -> StoreError {
        let error = UpdateItemError::generic(ErrorMetadata::builder().code(code).build());
        classify("test", SdkError::service_error(error, ()))
    }

    /// A write that met a transaction in flight, or throttling, is tried again; a failed
    /// condition or a bad request is not.
    #[test]
    fn conflicts_with_transactions_and_throttling_are_retryable_and_refusals_are_not() {
        for code in ["TransactionConflictException", "ThrottlingException", "InternalServerError"] {
            assert!(matches!(answered(code), StoreError::Unavailable { .. }), "{code}");
        }
        for code in ["ValidationException", "ConditionalCheckFailedException", "ResourceNotFoundException"] {
            assert!(matches!(answered(code), StoreError::Refused { .. }), "{code}");
        }
    }
}
