//! [`UsageStore`] on the usage table: an hour is one item (`USAGE#<hour>#<dimension>` in the
//! subscription's partition) added to with DynamoDB's atomic `ADD`, a report's key another
//! (`USAGEKEY#<key>`), both written in one transaction. Hours not yet settled carry the sparse
//! index's key, so that emission finds them by hour without a scan.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{Put, ReturnValue, TransactWriteItem, Update};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

use super::{DynamoDbStore, Item, classify, decode, encode, key, layout, number, string};
use crate::domain::{PlanId, SubscriptionId, Timestamp};
use crate::store::StoreError;
use crate::store::usage::{Added, HourKey, HourState, UsageHour, UsageReport, UsageStore, hour_of};

/// How long a report's key is kept: a report more than a day old is refused anyway.
pub const USAGE_KEY_RETENTION: chrono::Duration = chrono::Duration::days(3);

/// How long a settled hour is kept after it: Microsoft's usage record goes back a year, and
/// so can a question about an invoice. Hours not settled never expire.
pub const SETTLED_HOUR_RETENTION: chrono::Duration = chrono::Duration::days(400);

/// A report added to its hour: the hour's fields set where it is new, the quantity and the count
/// of reports added; on [`ADD_TO_HOUR_CONDITION`] (the benchmark's floor makes the same update).
pub const ADD_TO_HOUR: &str = "SET subscriptionId = if_not_exists(subscriptionId, :id), #dimension = if_not_exists(#dimension, :dimension), \
     #hour = if_not_exists(#hour, :hour), planId = if_not_exists(planId, :plan), \
     #state = if_not_exists(#state, :open), #unsettled = if_not_exists(#unsettled, :unsettled), \
     updatedAt = :now ADD quantity :quantity, reports :one";
pub const ADD_TO_HOUR_CONDITION: &str = "attribute_not_exists(pk) OR #state = :open";
/// An open hour closed at its total for sending, on `#state = :open`.
pub const CLOSE_HOUR: &str =
    "SET #state = :sending, sentQuantity = quantity, attempts = :zero, updatedAt = :now";

/// A cancelled transaction's reasons that mean "too many requests just now".
const THROTTLED: [&str; 3] = ["ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"];

/// What a report's key remembers, to tell a repeat from a key used again for other usage.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRecord {
    dimension: String,
    hour: Timestamp,
    quantity: f64,
}

fn time(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn usage_item(hour: &UsageHour) -> Result<Item, StoreError> {
    let partition = layout::partition(&hour.subscription_id);
    let mut item = encode(&partition, &layout::usage(hour.hour, &hour.dimension), hour)?;
    if hour.state.is_settled() {
        item.insert(layout::EXPIRES_AT.into(), number((hour.hour + SETTLED_HOUR_RETENTION).timestamp()));
    } else {
        item.insert(layout::UNSETTLED_KEY.into(), string(layout::hour(hour.hour)));
    }
    Ok(item)
}

fn conditional_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(error: &E) -> bool {
    error.code() == Some("ConditionalCheckFailedException")
}

impl DynamoDbStore {
    async fn get_usage_item(
        &self,
        action: &'static str,
        partition: &str,
        sort: &str,
    ) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.usage_table)
            .set_key(Some(key(partition, sort)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(action, e))?;
        Ok(output.item)
    }

    async fn usage_hour(&self, key: &HourKey) -> Result<Option<UsageHour>, StoreError> {
        let partition = layout::partition(&key.subscription_id);
        let sort = layout::usage(key.hour, &key.dimension);
        self.get_usage_item("read usage", &partition, &sort).await?.map(|item| decode(&item)).transpose()
    }
}

impl UsageStore for DynamoDbStore {
    async fn add_usage_to(
        &self,
        report: &UsageReport,
        hour: Timestamp,
        plan: &PlanId,
        now: Timestamp,
    ) -> Result<Added, StoreError> {
        let partition = layout::partition(&report.subscription_id);
        let remembered = KeyRecord {
            dimension: report.dimension.clone(),
            hour: hour_of(report.at),
            quantity: report.quantity,
        };
        let mut key_item = encode(&partition, &layout::usage_key(&report.key), &remembered)?;
        key_item.insert(layout::EXPIRES_AT.into(), number((now + USAGE_KEY_RETENTION).timestamp()));
        let put_key = Put::builder()
            .table_name(&self.usage_table)
            .set_item(Some(key_item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table, item and condition are set");
        let add = Update::builder()
            .table_name(&self.usage_table)
            .set_key(Some(key(&partition, &layout::usage(hour, &report.dimension))))
            .update_expression(ADD_TO_HOUR)
            .condition_expression(ADD_TO_HOUR_CONDITION)
            .expression_attribute_names("#dimension", "dimension")
            .expression_attribute_names("#hour", "hour")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#unsettled", layout::UNSETTLED_KEY)
            .expression_attribute_values(":id", string(report.subscription_id.to_string()))
            .expression_attribute_values(":dimension", string(&report.dimension))
            .expression_attribute_values(":hour", string(time(hour)))
            .expression_attribute_values(":plan", string(plan.as_str()))
            .expression_attribute_values(":open", string(HourState::Open.name()))
            .expression_attribute_values(":unsettled", string(layout::hour(hour)))
            .expression_attribute_values(":now", string(time(now)))
            .expression_attribute_values(":quantity", number(report.quantity))
            .expression_attribute_values(":one", number(1))
            .build()
            .expect("table, key and expression are set");
        let writes = vec![
            TransactWriteItem::builder().put(put_key).build(),
            TransactWriteItem::builder().update(add).build(),
        ];
        let error = match self.client.transact_write_items().set_transact_items(Some(writes)).send().await {
            Ok(_) => return Ok(Added::Added),
            Err(error) => error,
        };
        let reasons: Vec<Option<String>> = match error.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                cancelled.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect()
            }
            _ => return Err(classify("add usage", error)),
        };
        let failed =
            |index: usize| reasons.get(index).and_then(Option::as_deref) == Some("ConditionalCheckFailed");
        if reasons.iter().flatten().any(|code| THROTTLED.contains(&code.as_str())) {
            // Throttled: nothing was written, and trying again later will do.
            return Err(StoreError::Unavailable { action: "add usage", source: Box::new(error) });
        }
        if failed(0) {
            let seen = self.get_usage_item("add usage", &partition, &layout::usage_key(&report.key)).await?;
            let seen: Option<KeyRecord> = seen.map(|item| decode(&item)).transpose()?;
            return Ok(if seen.as_ref() == Some(&remembered) { Added::Repeated } else { Added::KeyReused });
        }
        if failed(1) {
            let key = HourKey {
                subscription_id: report.subscription_id.clone(),
                dimension: report.dimension.clone(),
                hour,
            };
            let closed = self.usage_hour(&key).await?.map_or(HourState::Open, |h| h.state);
            return Ok(Added::HourClosed(closed));
        }
        if reasons.iter().flatten().any(|c| c == "TransactionConflict") {
            // A concurrent report to the same hour: try again.
            return Err(StoreError::Conflict { subscription_id: report.subscription_id.clone() });
        }
        Err(classify("add usage", error))
    }

    async fn unsettled(&self, hour: Timestamp) -> Result<Vec<UsageHour>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.usage_table)
            .index_name(layout::UNSETTLED_INDEX)
            .key_condition_expression("#unsettled = :hour")
            .expression_attribute_names("#unsettled", layout::UNSETTLED_KEY)
            .expression_attribute_values(":hour", string(layout::hour(hour)));
        let keys: Vec<Item> = self
            .query_all("list unsettled usage", query)
            .await?
            .into_iter()
            .map(|item| {
                let part = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                key(&part(layout::PARTITION_KEY), &part(layout::SORT_KEY))
            })
            .collect();
        // The index is eventually consistent: what it names is read again, and settled since is left.
        let mut hours: Vec<UsageHour> = self
            .get_items("list unsettled usage", &self.usage_table, keys)
            .await?
            .iter()
            .map(decode)
            .collect::<Result<_, _>>()?;
        hours.retain(|h: &UsageHour| !h.state.is_settled());
        hours.sort_by_key(UsageHour::key);
        Ok(hours)
    }

    async fn close_hour(&self, key_of: &HourKey, now: Timestamp) -> Result<Option<UsageHour>, StoreError> {
        let partition = layout::partition(&key_of.subscription_id);
        let closed = self
            .client
            .update_item()
            .table_name(&self.usage_table)
            .set_key(Some(key(&partition, &layout::usage(key_of.hour, &key_of.dimension))))
            .update_expression(CLOSE_HOUR)
            .condition_expression("#state = :open")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":sending", string("sending"))
            .expression_attribute_values(":open", string(HourState::Open.name()))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":now", string(time(now)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match closed {
            Ok(output) => output.attributes.map(|item| decode(&item)).transpose(),
            Err(error)
                if error.as_service_error().is_some_and(|e: &UpdateItemError| conditional_failed(e)) =>
            {
                self.usage_hour(key_of).await
            }
            Err(error) => Err(classify("close usage hour", error)),
        }
    }

    async fn record_send(&self, hour: &UsageHour) -> Result<(), StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.usage_table)
            .set_item(Some(usage_item(hour)?))
            .condition_expression("#state = :sending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":sending", string("sending"))
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(conditional_failed) => {
                Err(StoreError::Conflict { subscription_id: hour.subscription_id.clone() })
            }
            Err(error) => Err(classify("record usage sent", error)),
        }
    }

    async fn usage_of(
        &self,
        id: &SubscriptionId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageHour>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.usage_table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", string(layout::partition(id)))
            .expression_attribute_values(
                ":from",
                string(format!("{}{}", layout::USAGE_PREFIX, layout::hour(from))),
            )
            // `$` sorts after `#`: every dimension of the last hour.
            .expression_attribute_values(
                ":to",
                string(format!("{}{}$", layout::USAGE_PREFIX, layout::hour(to))),
            );
        self.query_all("read usage", query).await?.iter().map(decode).collect()
    }
}
