//! `template.yaml`: every function has its own, least-privilege policy.

use serde_norway::Value;

use integration_tests::table::{resource_properties, template};

fn functions(template: &Value) -> Vec<(String, Value)> {
    let resources = template.get("Resources").and_then(Value::as_mapping).expect("Resources");
    resources
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::Function"))
        .map(|(name, r)| (name.as_str().expect("a name").to_owned(), r.clone()))
        .collect()
}

/// A value as text, CloudFormation tags included (`!GetAtt SubscriptionsTable.Arn`).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, text(&tagged.value)),
        Value::Sequence(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => format!("{other:?}"),
    }
}

#[test]
fn every_function_is_declared_with_its_binary() {
    let template = template();
    let names: Vec<String> = functions(&template).into_iter().map(|(n, _)| n).collect();
    for expected in [
        "LandingFunction",
        "ActivateFunction",
        "WebhookFunction",
        "SubscriptionsFunction",
        "ReconcileFunction",
        "EventsRelayFunction",
    ] {
        assert!(names.contains(&expected.to_owned()), "{expected} in {names:?}");
    }
    for (name, function) in functions(&template) {
        assert_eq!(
            function.get("Metadata").and_then(|m| m.get("BuildMethod")).and_then(Value::as_str),
            Some("rust-cargolambda"),
            "{name}"
        );
        let binary = function
            .get("Metadata")
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|p| p.get("Binary"))
            .and_then(Value::as_str);
        let folder = format!("{}/../../functions/{}", env!("CARGO_MANIFEST_DIR"), binary.unwrap_or_default());
        assert!(std::path::Path::new(&folder).is_dir(), "{name}: binary {binary:?} is a crate in functions/");
    }
}

/// Every function that writes applies changes as one transaction whose "state unchanged" part is a
/// condition check (`StateWrite::Keep`): IAM must allow it, which DynamoDB Local never checks.
#[test]
fn every_function_that_writes_may_check_conditions_in_its_transactions() {
    for (name, function) in functions(&template()) {
        let policies =
            function.get("Properties").and_then(|p| p.get("Policies")).and_then(Value::as_sequence);
        let actions: String = policies
            .into_iter()
            .flatten()
            .filter_map(|policy| policy.get("Statement").and_then(Value::as_sequence))
            .flatten()
            .map(|statement| text(&statement["Action"]))
            .collect::<Vec<_>>()
            .join(" ");
        if actions.contains("dynamodb:PutItem") {
            assert!(actions.contains("dynamodb:ConditionCheckItem"), "{name}: {actions}");
        }
    }
}

#[test]
fn no_function_gets_a_wildcard_or_a_broad_managed_policy() {
    for (name, function) in functions(&template()) {
        let policies =
            function.get("Properties").and_then(|p| p.get("Policies")).and_then(Value::as_sequence);
        let policies = policies.unwrap_or_else(|| panic!("{name} declares its policies"));
        for policy in policies {
            let statements = policy.get("Statement").and_then(Value::as_sequence);
            let statements =
                statements.unwrap_or_else(|| panic!("{name}: only inline statements, not {policy:?}"));
            for statement in statements {
                let (actions, resource) = (text(&statement["Action"]), text(&statement["Resource"]));
                assert!(!actions.contains('*'), "{name}: wildcard action {actions}");
                assert!(!resource.is_empty() && resource != "*", "{name}: resource {resource:?}");
                assert_eq!(statement.get("Effect").and_then(Value::as_str), Some("Allow"));
            }
        }
    }
}

#[test]
fn admin_routes_require_iam() {
    for (name, function) in functions(&template()) {
        let Some(events) =
            function.get("Properties").and_then(|p| p.get("Events")).and_then(Value::as_mapping)
        else {
            continue;
        };
        for (event, definition) in events {
            let properties = &definition["Properties"];
            let path = properties.get("Path").and_then(Value::as_str).unwrap_or_default();
            if path.starts_with("/admin/") {
                let authorizer =
                    properties.get("Auth").and_then(|a| a.get("Authorizer")).and_then(Value::as_str);
                assert_eq!(authorizer, Some("AWS_IAM"), "{name}.{event:?} {path}");
            }
        }
    }
}

/// The relay's stream filter passes exactly what the relay makes events of: new history items of
/// applied changes (the keys and values the store writes); its role reads this table's stream only.
#[test]
fn the_relays_stream_filter_names_the_stores_history_items() {
    use fulfillment::store::Outcome;
    use fulfillment::store::dynamodb::layout;
    let stream = resource_properties("EventsRelayStream");
    assert_eq!(text(&stream["FunctionName"]), "!Ref EventsRelayFunction");
    assert_eq!(text(&stream["EventSourceArn"]), "!GetAtt SubscriptionsTable.StreamArn");
    let responses = stream.get("FunctionResponseTypes").map(text);
    assert_eq!(responses.as_deref(), Some("ReportBatchItemFailures"), "the relay answers batchItemFailures");
    let pattern = stream
        .get("FilterCriteria")
        .and_then(|f| f.get("Filters"))
        .and_then(|f| f.get(0))
        .and_then(|f| f.get("Pattern"))
        .and_then(Value::as_str)
        .expect("a filter pattern");
    let pattern: serde_json::Value = serde_json::from_str(pattern).expect("the pattern is JSON");
    let image = &pattern["dynamodb"]["NewImage"];
    assert_eq!(pattern["eventName"], serde_json::json!(["INSERT"]));
    assert_eq!(image[layout::SORT_KEY]["S"], serde_json::json!([{ "prefix": layout::EVENT_PREFIX }]));
    assert_eq!(image["outcome"]["S"], serde_json::json!([Outcome::Applied.as_str()]));
    let table = resource_properties("SubscriptionsTable");
    let view = table["StreamSpecification"]["StreamViewType"].as_str();
    assert_eq!(view, Some("NEW_IMAGE"), "the relay reads the new image");
    let relay = resource_properties("EventsRelayFunction");
    assert!(
        relay.get("Events").is_none(),
        "no SAM event: it would attach a policy on every stream of the account"
    );
    let statements = relay["Policies"][0]["Statement"].as_sequence().expect("statements");
    let reads: Vec<String> = statements
        .iter()
        .filter(|s| text(&s["Action"]).contains("dynamodb:GetRecords"))
        .map(|s| text(&s["Resource"]))
        .collect();
    assert_eq!(reads, ["!Sub ${SubscriptionsTable.Arn}/stream/*"], "this table's stream only");
}

/// The sample rule names every event type there is (the local stack's moto runs this very rule).
#[test]
fn the_sample_rule_routes_every_event_type() {
    let rule = resource_properties("ProvisioningRule");
    let pattern = &rule["EventPattern"];
    assert_eq!(pattern.get("source").map(text).as_deref(), Some(fulfillment::events::EVENT_SOURCE));
    let mut routed: Vec<String> = pattern
        .get("detail-type")
        .and_then(Value::as_sequence)
        .expect("detail-type")
        .iter()
        .map(text)
        .collect();
    let mut types: Vec<String> = fulfillment::events::EventType::ALL.iter().map(|t| t.to_string()).collect();
    routed.sort();
    types.sort();
    assert_eq!(routed, types);
}
