//! The subscriptions table exactly as `template.yaml` declares it, so tests (and the local run)
//! use the deployed definition rather than a copy that could drift from it.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamViewType, TimeToLiveSpecification,
};
use serde_norway::Value;

/// The template's logical id of the table.
pub const LOGICAL_ID: &str = "SubscriptionsTable";

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

/// Reads the table's definition from `template.yaml`.
pub fn definition() -> TableDefinition {
    serde_norway::from_value(resource_properties(LOGICAL_ID))
        .unwrap_or_else(|e| panic!("{LOGICAL_ID} properties: {e}"))
}

/// Creates table `name` from the template unless it exists (for the local run, which may reuse
/// one); its stream's ARN, when it has one.
pub async fn ensure_from_template(client: &Client, name: &str, with_stream: bool) -> Option<String> {
    if client.describe_table().table_name(name).send().await.is_err() {
        create_from_template(client, name, with_stream).await;
    }
    let described = client.describe_table().table_name(name).send().await.ok()?;
    described.table()?.latest_stream_arn().map(str::to_owned)
}

/// Creates table `name` with the template's definition (keys, index, billing mode, TTL).
///
/// The template's stream only `with_stream`: DynamoDB Local's stream slows every write down as it
/// grows (a thousand subscriptions take minutes instead of seconds), so only a table whose
/// lifecycle events are relayed has one.
pub async fn create_from_template(client: &Client, name: &str, with_stream: bool) {
    let definition = definition();
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
