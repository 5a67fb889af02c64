//! `template.yaml` declares the tables the store's layout expects.

use fulfillment::store::dynamodb::layout;
use integration_tests::table::{Key, LOGICAL_ID, TableDefinition, USAGE_LOGICAL_ID};

fn definition() -> TableDefinition {
    integration_tests::table::definition(LOGICAL_ID)
}

fn usage_definition() -> TableDefinition {
    integration_tests::table::definition(USAGE_LOGICAL_ID)
}

fn key(name: &str, kind: &str) -> Key {
    Key { attribute_name: name.into(), key_type: kind.into() }
}

#[test]
fn the_template_declares_the_keys_the_store_uses() {
    for table in [definition(), usage_definition()] {
        assert_eq!(
            table.key_schema,
            vec![key(layout::PARTITION_KEY, "HASH"), key(layout::SORT_KEY, "RANGE")]
        );
        assert_eq!(table.billing_mode, "PAY_PER_REQUEST");
    }
}

#[test]
fn the_template_declares_the_beneficiary_tenant_index() {
    let table = definition();
    let index = table
        .global_secondary_indexes
        .iter()
        .find(|i| i.index_name == layout::TENANT_INDEX)
        .expect("the tenant index is declared");
    assert_eq!(index.key_schema[0], key(layout::TENANT_KEY, "HASH"));
    assert_eq!(index.projection.projection_type, "ALL", "lookups read whole records from the index");
    for attribute in [layout::PARTITION_KEY, layout::SORT_KEY, layout::TENANT_KEY] {
        let declared = table.attribute_definitions.iter().find(|a| a.attribute_name == attribute);
        assert_eq!(declared.map(|a| a.attribute_type.as_str()), Some("S"), "{attribute} is a string key");
    }
}

#[test]
fn the_template_expires_operation_items_and_usage() {
    for table in [definition(), usage_definition()] {
        let ttl = table.time_to_live_specification.expect("TTL is declared");
        assert_eq!(ttl.attribute_name, layout::EXPIRES_AT);
        assert!(ttl.enabled);
    }
}

/// The usage has its own table: the roles that write usage cannot write a subscription, and the
/// subscriptions table carries no usage index.
#[test]
fn the_template_declares_the_unsettled_usage_index_on_the_usage_table() {
    let subscriptions = definition();
    assert!(subscriptions.global_secondary_indexes.iter().all(|i| i.index_name != layout::UNSETTLED_INDEX));
    assert!(subscriptions.attribute_definitions.iter().all(|a| a.attribute_name != layout::UNSETTLED_KEY));
    assert!(usage_definition().stream_specification.is_none(), "usage makes no lifecycle event");
    let table = usage_definition();
    let index = table
        .global_secondary_indexes
        .iter()
        .find(|i| i.index_name == layout::UNSETTLED_INDEX)
        .expect("the unsettled usage index is declared");
    assert_eq!(
        index.key_schema,
        vec![key(layout::UNSETTLED_KEY, "HASH"), key(layout::PARTITION_KEY, "RANGE")]
    );
    assert_eq!(
        index.projection.projection_type, "KEYS_ONLY",
        "adding usage to an hour must not write to the index"
    );
    let declared = table.attribute_definitions.iter().find(|a| a.attribute_name == layout::UNSETTLED_KEY);
    assert_eq!(declared.map(|a| a.attribute_type.as_str()), Some("S"));
}
