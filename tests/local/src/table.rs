//! The tables exactly as `template.yaml` declares them, so tests (and the local run) use the
//! deployed definitions rather than copies that could drift from them.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamViewType, TimeToLiveSpecification,
};
use serde_norway::Value;

/// The template's logical id of the subscriptions table.
pub const LOGICAL_ID: &str = "SubscriptionsTable";
/// The template's logical id of the metered usage table.
pub const USAGE_LOGICAL_ID: &str = "UsageTable";

/// The names of a store's two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub subscriptions: String,
    pub usage: String,
}

impl TableNames {
    /// `subscriptions-<suffix>` and `usage-<suffix>`.
    pub fn suffixed(suffix: &str) -> Self {
        Self { subscriptions: format!("subscriptions-{suffix}"), usage: format!("usage-{suffix}") }
    }

    /// Names no other run uses.
    pub fn fresh() -> Self {
        Self::suffixed(&uuid::Uuid::new_v4().to_string())
    }

    /// A store on these tables.
    pub fn store(&self, client: Client) -> fulfillment::store::dynamodb::DynamoDbStore {
        fulfillment::store::dynamodb::DynamoDbStore::new(client, &self.subscriptions, &self.usage)
    }
}

pub const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");

/// The parts of `AWS::DynamoDB::Table` properties that DynamoDB Local can reproduce.
/// (Point-in-time recovery and encryption settings have no local meaning.)
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDefinition {
    pub billing_mode: String,
    pub attribute_definitions: Vec<Attribute>,
    pub key_schema: Vec<Key>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<Index>,
    pub time_to_live_specification: Option<TimeToLive>,
    pub stream_specification: Option<StreamSpecification>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamSpecification {
    pub stream_view_type: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attribute {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Key {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Index {
    pub index_name: String,
    pub key_schema: Vec<Key>,
    pub projection: IndexProjection,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexProjection {
    pub projection_type: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimeToLive {
    pub attribute_name: String,
    pub enabled: bool,
}

/// `template.yaml`, parsed (CloudFormation's short tags, `!Ref` and `!GetAtt`, parse as tagged
/// values and are simply carried).
pub fn template() -> Value {
    let text = std::fs::read_to_string(TEMPLATE).unwrap_or_else(|e| panic!("cannot read {TEMPLATE}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{TEMPLATE} is not YAML: {e}"))
}

/// The `Properties` of the template's resource `logical_id`.
pub fn resource_properties(logical_id: &str) -> Value {
    template()
        .get("Resources")
        .and_then(|r| r.get(logical_id))
        .and_then(|t| t.get("Properties"))
        .unwrap_or_else(|| panic!("{TEMPLATE} has no Resources.{logical_id}.Properties"))
        .clone()
}

/// Reads the definition of the template's table `logical_id`.
pub fn definition(logical_id: &str) -> TableDefinition {
    serde_norway::from_value(resource_properties(logical_id))
        .unwrap_or_else(|e| panic!("{logical_id} properties: {e}"))
}

/// Creates both tables from the template unless they exist (for the local run, which may reuse
/// them); the subscriptions table's stream ARN, when it has one.
pub async fn ensure_from_template(client: &Client, names: &TableNames, with_stream: bool) -> Option<String> {
    if client.describe_table().table_name(&names.usage).send().await.is_err() {
        create_from_template(client, USAGE_LOGICAL_ID, &names.usage, false).await;
    }
    let name = &names.subscriptions;
    if client.describe_table().table_name(name).send().await.is_err() {
        create_from_template(client, LOGICAL_ID, name, with_stream).await;
    }
    let described = client.describe_table().table_name(name).send().await.ok()?;
    described.table()?.latest_stream_arn().map(str::to_owned)
}

/// Creates both tables, without a stream.
pub async fn create_tables(client: &Client, names: &TableNames) {
    create_from_template(client, LOGICAL_ID, &names.subscriptions, false).await;
    create_from_template(client, USAGE_LOGICAL_ID, &names.usage, false).await;
}

/// Creates table `name` with the definition of the template's `logical_id` (keys, indexes,
/// billing mode, TTL).
///
/// The template's stream only `with_stream`: DynamoDB Local's stream slows every write down as it
/// grows (a thousand subscriptions take minutes instead of seconds), so only a table whose
/// lifecycle events are relayed has one.
pub async fn create_from_template(client: &Client, logical_id: &str, name: &str, with_stream: bool) {
    let definition = definition(logical_id);
    let key_schema = |keys: &[Key]| -> Vec<KeySchemaElement> {
        keys.iter()
            .map(|k| {
                KeySchemaElement::builder()
                    .attribute_name(&k.attribute_name)
                    .key_type(KeyType::from(k.key_type.as_str()))
                    .build()
                    .expect("key schema element is complete")
            })
            .collect()
    };
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(definition.billing_mode.as_str()))
        .set_key_schema(Some(key_schema(&definition.key_schema)));
    for attribute in &definition.attribute_definitions {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&attribute.attribute_name)
                .attribute_type(ScalarAttributeType::from(attribute.attribute_type.as_str()))
                .build()
                .expect("attribute definition is complete"),
        );
    }
    for index in &definition.global_secondary_indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(index.projection.projection_type.as_str()))
                        .build(),
                )
                .build()
                .expect("index is complete"),
        );
    }
    if let Some(stream) = definition.stream_specification.as_ref().filter(|_| with_stream) {
        request = request.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(stream.stream_view_type.as_str()))
                .build()
                .expect("stream specification is complete"),
        );
    }
    request.send().await.unwrap_or_else(|e| panic!("create table {name}: {e:?}"));

    if let Some(ttl) = definition.time_to_live_specification {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl.attribute_name)
                    .enabled(ttl.enabled)
                    .build()
                    .expect("ttl specification is complete"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("enable TTL on {name}: {e:?}"));
    }
}
