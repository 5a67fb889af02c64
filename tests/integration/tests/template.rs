//! `template.yaml`: every function has its own, least-privilege policy; and the stack is fit for
//! production (issue 15): throttled routes, reserved concurrency, log retention, an access log
//! without secrets, a table that cannot be deleted, a queue for failed reconciliation runs, and
//! alarms that reach someone, their metric filters run on the lines the functions really log.

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
        "MeteringFunction",
        "UsageIntakeFunction",
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

/// `sam build` runs `cargo lambda build --bin <Binary>` at the workspace's root, which compiles
/// its default members with their features unified: those must be the functions the template
/// builds and their core, and no test crate, whose dependencies' features (reqwest's aws-lc-rs)
/// would otherwise be linked into every function.
#[test]
fn sam_build_compiles_the_functions_and_their_core_alone() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = format!("{}/../..", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let members: Vec<&str> = metadata["workspace_default_members"]
        .as_array()
        .expect("workspace_default_members (cargo 1.71 and later)")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let package_of = |id: &str| -> String {
        let package = metadata["packages"].as_array().expect("packages").iter().find(|p| p["id"] == id);
        package.and_then(|p| p["name"].as_str()).unwrap_or(id).to_owned()
    };
    let mut built: Vec<String> = members.iter().map(|id| package_of(id)).collect();
    built.sort();
    let template = template();
    let mut expected: Vec<String> = functions(&template)
        .iter()
        .filter_map(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"].as_str().map(str::to_owned))
        .chain(["fulfillment".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(built, expected, "the workspace's default-members (Cargo.toml)");
}

/// The benchmark's extra trust is never deployed: a function in AWS trusts the compiled-in roots only.
#[test]
fn no_function_is_given_extra_root_certificates() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"))
        .expect("template");
    assert!(!text.contains("EXTRA_ROOT_CERTIFICATES"));
}

/// The functions that write usage only (metered billing): their writes are conditional puts and
/// updates (`add_usage` is a transaction of a Put and an Update), never a condition check.
const USAGE_ONLY: [&str; 2] = ["MeteringFunction", "UsageIntakeFunction"];

/// Every function that writes applies changes as one transaction whose "state unchanged" part is a
/// condition check (`StateWrite::Keep`): IAM must allow it, which DynamoDB Local never checks.
/// The usage functions apply no subscription change, and get no condition check.
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
        if USAGE_ONLY.contains(&name.as_str()) {
            assert!(!actions.contains("dynamodb:ConditionCheckItem"), "{name}: {actions}");
        } else if actions.contains("dynamodb:PutItem") {
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

/// SAM accepts `Authorizer: AWS_IAM` on an HTTP API route only when the API enables its built-in
/// IAM authorizer; otherwise the transform, and so every deploy, fails ("the related API does not
/// define any Authorizers"), which neither `sam validate --lint` nor cfn-lint reports.
#[test]
fn the_api_enables_the_iam_authorizer_its_admin_routes_name() {
    let template = template();
    let iam_routes =
        routes(&template).into_iter().filter(|(_, auth)| auth.as_deref() == Some("AWS_IAM")).count();
    assert_eq!(iam_routes, 10, "the admin routes");
    let auth = &resource_properties("HttpApi")["Auth"];
    assert_eq!(auth["EnableIamAuthorizer"].as_bool(), Some(true));
    assert!(auth.get("DefaultAuthorizer").is_none(), "the public routes stay public");
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

// Issue 15: safe to run in production ----------------------------------------------------------

/// A resource as declared (`Type`, `Condition`, `Properties`, policies).
fn resource(template: &Value, logical_id: &str) -> Value {
    template
        .get("Resources")
        .and_then(|r| r.get(logical_id))
        .unwrap_or_else(|| panic!("template.yaml has no resource {logical_id}"))
        .clone()
}

/// Every resource of `kind`, by logical id.
fn resources_of(template: &Value, kind: &str) -> Vec<(String, Value)> {
    let resources = template.get("Resources").and_then(Value::as_mapping).expect("Resources");
    resources
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
        .map(|(name, r)| (name.as_str().expect("a name").to_owned(), r.clone()))
        .collect()
}

/// `Properties.<key>` of a resource as a number.
fn property_number(properties: &Value, key: &str) -> Option<f64> {
    properties.get(key).and_then(Value::as_f64)
}

/// The HTTP API's routes, as API Gateway keys them ("POST /webhook"), with their `Auth`.
fn routes(template: &Value) -> Vec<(String, Option<String>)> {
    let mut routes = Vec::new();
    for (_, function) in functions(template) {
        let Some(events) = function["Properties"].get("Events").and_then(Value::as_mapping) else {
            continue;
        };
        for (_, event) in events {
            if event.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                continue;
            }
            let properties = &event["Properties"];
            let key = format!(
                "{} {}",
                properties["Method"].as_str().expect("a method"),
                properties["Path"].as_str().expect("a path")
            );
            let auth = properties
                .get("Auth")
                .and_then(|a| a.get("Authorizer"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            routes.push((key, auth));
        }
    }
    routes
}

/// (burst, rate) of a route settings map.
fn throttle(settings: &Value) -> (Option<f64>, Option<f64>) {
    (property_number(settings, "ThrottlingBurstLimit"), property_number(settings, "ThrottlingRateLimit"))
}

/// The stage throttles every route; the routes anyone may call without signing get their own caps:
/// the landing page and the confirmation call Microsoft as our app (a flood there would spend our
/// Marketplace API quota and the account's concurrency), and the webhook a higher one of its own.
#[test]
fn the_api_throttles_every_route_and_the_public_ones_have_their_own_caps() {
    let template = template();
    let api = resource_properties("HttpApi");
    assert_eq!(throttle(&api["DefaultRouteSettings"]), (Some(20.0), Some(10.0)), "admin and any other route");

    let settings = api["RouteSettings"].as_mapping().expect("RouteSettings");
    let mut keys: Vec<&str> = settings.keys().map(|k| k.as_str().expect("a route key")).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["GET /landing", "POST /activate", "POST /webhook"]);
    assert_eq!(throttle(&api["RouteSettings"]["POST /webhook"]), (Some(100.0), Some(50.0)));
    assert_eq!(throttle(&api["RouteSettings"]["GET /landing"]), (Some(10.0), Some(5.0)));
    assert_eq!(throttle(&api["RouteSettings"]["POST /activate"]), (Some(10.0), Some(5.0)));
    // No per-route metrics (billed as custom metrics): the webhook's 5xx alarm reads its own log.
    for route in settings.values().chain([&api["DefaultRouteSettings"]]) {
        assert!(route.get("DetailedMetricsEnabled").is_none(), "{route:?}");
    }

    // The keys name real routes (a stage setting for a missing route fails the deploy), and every
    // route without IAM has its own cap.
    let routes = routes(&template);
    for key in &keys {
        assert!(routes.iter().any(|(route, _)| route == key), "{key} is a route: {routes:?}");
    }
    let mut public: Vec<&str> =
        routes.iter().filter(|(_, auth)| auth.is_none()).map(|(route, _)| route.as_str()).collect();
    public.sort_unstable();
    assert_eq!(public, keys, "the unauthenticated routes are the ones with their own caps");
}

/// Reserved concurrency: the webhook keeps its share whatever else runs in the account (a
/// parameter; 0 leaves it unreserved), the public landing and confirmation cannot take more than
/// theirs, and one reconciliation and one metering run at a time.
#[test]
fn reserved_concurrency_keeps_the_webhooks_share_and_caps_the_public_functions() {
    let template = template();
    for (function, reserved) in [
        ("LandingFunction", 10.0),
        ("ActivateFunction", 10.0),
        ("ReconcileFunction", 1.0),
        ("MeteringFunction", 1.0),
    ] {
        let properties = resource_properties(function);
        assert_eq!(
            property_number(&properties, "ReservedConcurrentExecutions"),
            Some(reserved),
            "{function}"
        );
    }
    for function in ["SubscriptionsFunction", "EventsRelayFunction", "UsageIntakeFunction"] {
        let properties = resource_properties(function);
        assert!(properties.get("ReservedConcurrentExecutions").is_none(), "{function}: unreserved");
    }

    let webhook = resource_properties("WebhookFunction");
    assert_eq!(
        text(&webhook["ReservedConcurrentExecutions"]),
        "!If WebhookConcurrencyReserved,!Ref WebhookReservedConcurrency,!Ref AWS::NoValue"
    );
    let parameter = &template["Parameters"]["WebhookReservedConcurrency"];
    assert_eq!(parameter["Type"].as_str(), Some("Number"));
    assert_eq!(parameter.get("Default").and_then(Value::as_f64), Some(20.0));
    assert_eq!(parameter.get("MinValue").and_then(Value::as_f64), Some(0.0));
    assert_eq!(
        text(&template["Conditions"]["WebhookConcurrencyReserved"]),
        "!Not !Equals !Ref WebhookReservedConcurrency,0",
        "0 means unreserved (a reservation of 0 would stop the function)"
    );
}

/// The CloudWatch Logs retention periods (`RetentionInDays`).
const RETENTION_DAYS: [u32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

fn assert_kept_for_the_retention_parameter(template: &Value, log_group: &str) {
    let group = resource(template, log_group);
    assert_eq!(group["Type"].as_str(), Some("AWS::Logs::LogGroup"), "{log_group}");
    assert_eq!(text(&group["Properties"]["RetentionInDays"]), "!Ref LogRetentionDays", "{log_group}");
}

/// Every function logs to a log group of the stack, kept for `LogRetentionDays`: not to the group
/// Lambda would create on first use, which keeps everything forever.
#[test]
fn every_function_logs_to_its_own_group_kept_for_the_retention_parameter() {
    let template = template();
    let parameter = &template["Parameters"]["LogRetentionDays"];
    assert_eq!(parameter["Type"].as_str(), Some("Number"));
    assert_eq!(parameter.get("Default").and_then(Value::as_f64), Some(90.0));
    let allowed: Vec<f64> = parameter["AllowedValues"]
        .as_sequence()
        .expect("AllowedValues")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(allowed, RETENTION_DAYS.map(f64::from), "CloudWatch Logs' retention periods");

    let globals = &template["Globals"]["Function"]["LoggingConfig"];
    assert_eq!(globals["LogFormat"].as_str(), Some("JSON"), "the metric filters read JSON lines");
    let mut groups = Vec::new();
    for (name, function) in functions(&template) {
        let group = text(&function["Properties"]["LoggingConfig"]["LogGroup"]);
        let group = group
            .strip_prefix("!Ref ")
            .unwrap_or_else(|| panic!("{name}: LogGroup is !Ref a group: {group}"));
        assert_kept_for_the_retention_parameter(&template, group);
        let log_group_name = text(&resource(&template, group)["Properties"]["LogGroupName"]);
        assert_eq!(log_group_name, format!("!Sub /aws/lambda/${{AWS::StackName}}/{name}"), "{name}");
        groups.push(group.to_owned());
    }
    let count = groups.len();
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), count, "one group per function: {groups:?}");
    assert_eq!(count, 8);
}

/// The HTTP API's access log: one JSON line per request with exactly these fields, in its own
/// group with the same retention. Never the path or query string: the landing page's query
/// carries the purchase token, a secret.
#[test]
fn the_access_log_names_the_route_never_the_query_string() {
    let template = template();
    let settings = &resource_properties("HttpApi")["AccessLogSettings"];
    assert_eq!(text(&settings["DestinationArn"]), "!GetAtt HttpApiAccessLogGroup.Arn");
    assert_kept_for_the_retention_parameter(&template, "HttpApiAccessLogGroup");
    let format = settings["Format"].as_str().expect("a format");
    let format: serde_json::Value = serde_json::from_str(format).expect("the format is a JSON object");
    assert_eq!(
        format,
        serde_json::json!({
            "requestId": "$context.requestId",
            "ip": "$context.identity.sourceIp",
            "routeKey": "$context.routeKey",
            "status": "$context.status",
            "responseLength": "$context.responseLength",
            "integrationError": "$context.integrationErrorMessage",
            "latency": "$context.responseLatency"
        })
    );
}

#[test]
fn the_tables_cannot_be_deleted() {
    for logical_id in ["SubscriptionsTable", "UsageTable"] {
        let table = resource(&template(), logical_id);
        assert_eq!(table["Properties"]["DeletionProtectionEnabled"].as_bool(), Some(true), "{logical_id}");
        assert_eq!(table["DeletionPolicy"].as_str(), Some("Retain"), "{logical_id}");
        assert_eq!(table["UpdateReplacePolicy"].as_str(), Some("Retain"), "{logical_id}");
        let recovery = &table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"];
        assert_eq!(recovery.as_bool(), Some(true), "{logical_id}");
    }
}

/// A scheduled run that fails three times (the first try and Lambda's 2 retries) lands in a queue,
/// encrypted and kept 14 days. SAM grants `sqs:SendMessage` on a destination of type SQS to the
/// function's role, on that queue only (`<function>EventInvokeConfigOnFailureSQSPolicy`): no
/// statement of ours grants any SQS action to the reconciliation.
#[test]
fn failed_reconciliation_runs_go_to_a_queue_only_the_reconciliation_may_send_to() {
    let template = template();
    let reconcile = resource_properties("ReconcileFunction");
    let config = &reconcile["EventInvokeConfig"];
    assert_eq!(config.get("MaximumRetryAttempts").and_then(Value::as_f64), Some(2.0));
    let destinations = config["DestinationConfig"].as_mapping().expect("DestinationConfig");
    assert_eq!(destinations.len(), 1, "on failure only");
    let on_failure = &config["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"].as_str(), Some("SQS"), "SAM derives the role's permission from the type");
    assert_eq!(text(&on_failure["Destination"]), "!GetAtt ReconcileFailuresQueue.Arn");

    let queue = resource(&template, "ReconcileFailuresQueue");
    assert_eq!(queue["Type"].as_str(), Some("AWS::SQS::Queue"));
    assert_eq!(queue["Properties"]["SqsManagedSseEnabled"].as_bool(), Some(true));
    assert_eq!(property_number(&queue["Properties"], "MessageRetentionPeriod"), Some(1_209_600.0));
    assert!(
        resources_of(&template, "AWS::SQS::QueuePolicy")
            .iter()
            .all(|(_, policy)| !text(&policy["Properties"]["Queues"]).contains("ReconcileFailuresQueue")),
        "no queue policy opens it to others"
    );
    for (name, function) in functions(&template) {
        let statements = function["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("Statement").and_then(Value::as_sequence))
            .flatten();
        for statement in statements {
            let (actions, resource) = (text(&statement["Action"]), text(&statement["Resource"]));
            if name == "ReconcileFunction" {
                assert!(!actions.contains("sqs:"), "{name}: only SAM's grant on its destination: {actions}");
            }
            assert!(!resource.contains("ReconcileFailuresQueue"), "{name} may not send to it: {actions}");
        }
        // The metering run has one too, without a destination (its_next_tick_is_the_retry).
        if name != "ReconcileFunction" && name != "MeteringFunction" {
            assert!(function["Properties"].get("EventInvokeConfig").is_none(), "{name}");
        }
    }
    let output = &template["Outputs"]["ReconcileFailuresQueueUrl"]["Value"];
    assert_eq!(text(output), "!Ref ReconcileFailuresQueue");
}

/// One alarm as the template must declare it.
struct Alarm {
    id: &'static str,
    namespace: &'static str,
    metric: &'static str,
    dimensions: &'static [(&'static str, &'static str)],
    statistic: &'static str,
    period: f64,
    threshold: f64,
    condition: Option<&'static str>,
    /// `None`: it alarms when one period reaches the threshold. `Some(n)`: when `n` periods in a
    /// row stay under it, missing data included (silence is the fault).
    silent_periods: Option<f64>,
}

/// The namespace of the metrics the stack's metric filters publish.
const OWN_NAMESPACE: &str = "!Sub SaaSFulfillment/${AWS::StackName}";

const ALARMS: &[Alarm] = &[
    Alarm {
        id: "WebhookServerErrorsAlarm",
        namespace: OWN_NAMESPACE,
        metric: "WebhookServerErrors",
        dimensions: &[],
        statistic: "Sum",
        period: 300.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "WebhookErrorsAlarm",
        namespace: "AWS/Lambda",
        metric: "Errors",
        dimensions: &[("FunctionName", "!Ref WebhookFunction")],
        statistic: "Sum",
        period: 300.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "WebhookThrottlesAlarm",
        namespace: "AWS/Lambda",
        metric: "Throttles",
        dimensions: &[("FunctionName", "!Ref WebhookFunction")],
        statistic: "Sum",
        period: 300.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "WebhookUnauthorizedAlarm",
        namespace: OWN_NAMESPACE,
        metric: "WebhookUnauthorized",
        dimensions: &[],
        statistic: "Sum",
        period: 300.0,
        threshold: 10.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "ReconcileErrorsAlarm",
        namespace: "AWS/Lambda",
        metric: "Errors",
        dimensions: &[("FunctionName", "!Ref ReconcileFunction")],
        statistic: "Sum",
        period: 300.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "ReconcileIncompleteAlarm",
        namespace: OWN_NAMESPACE,
        metric: "ReconcileSubscriptionsNotReconciled",
        dimensions: &[],
        statistic: "Sum",
        period: 3600.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "ReconcileStalledAlarm",
        namespace: OWN_NAMESPACE,
        metric: "ReconcilePassesFinished",
        dimensions: &[],
        statistic: "Sum",
        period: 21600.0,
        threshold: 1.0,
        condition: None,
        silent_periods: Some(4.0),
    },
    Alarm {
        id: "ReconcileDriftAlarm",
        namespace: OWN_NAMESPACE,
        metric: "ReconcileRecordsRepaired",
        dimensions: &[],
        statistic: "Sum",
        period: 3600.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "EventsRelayDeadLetterAlarm",
        namespace: "AWS/SQS",
        metric: "ApproximateNumberOfMessagesVisible",
        dimensions: &[("QueueName", "!GetAtt EventsRelayDeadLetterQueue.QueueName")],
        statistic: "Maximum",
        period: 300.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "ReconcileFailuresAlarm",
        namespace: "AWS/SQS",
        metric: "ApproximateNumberOfMessagesVisible",
        dimensions: &[("QueueName", "!GetAtt ReconcileFailuresQueue.QueueName")],
        statistic: "Maximum",
        period: 300.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "ForwardEventsDeadLetterAlarm",
        namespace: "AWS/SQS",
        metric: "ApproximateNumberOfMessagesVisible",
        dimensions: &[("QueueName", "!GetAtt ForwardEventsDeadLetterQueue.QueueName")],
        statistic: "Maximum",
        period: 300.0,
        threshold: 1.0,
        condition: Some("ForwardEvents"),
        silent_periods: None,
    },
    Alarm {
        id: "MeteringNotAuthorizedAlarm",
        namespace: OWN_NAMESPACE,
        metric: "MeteringHoursNotAuthorized",
        dimensions: &[],
        statistic: "Sum",
        period: 900.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "MeteringNearExpiryAlarm",
        namespace: OWN_NAMESPACE,
        metric: "MeteringHoursNearExpiry",
        dimensions: &[],
        statistic: "Sum",
        period: 900.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "MeteringErrorsAlarm",
        namespace: "AWS/Lambda",
        metric: "Errors",
        dimensions: &[("FunctionName", "!Ref MeteringFunction")],
        statistic: "Sum",
        period: 900.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "MeteringRefusedAlarm",
        namespace: OWN_NAMESPACE,
        metric: "MeteringHoursRefused",
        dimensions: &[],
        statistic: "Sum",
        period: 3600.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
    Alarm {
        id: "UsageDeadLetterAlarm",
        namespace: "AWS/SQS",
        metric: "ApproximateNumberOfMessagesVisible",
        dimensions: &[("QueueName", "!GetAtt UsageDeadLetterQueue.QueueName")],
        statistic: "Maximum",
        period: 300.0,
        threshold: 1.0,
        condition: None,
        silent_periods: None,
    },
];

/// Every alarm tells the topic when it goes off, stays quiet without data, and says what to do.
#[test]
fn every_alarm_notifies_the_topic_and_says_what_to_do() {
    let template = template();
    let declared = resources_of(&template, "AWS::CloudWatch::Alarm");
    let mut names: Vec<&str> = declared.iter().map(|(name, _)| name.as_str()).collect();
    let mut expected: Vec<&str> = ALARMS.iter().map(|a| a.id).collect();
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected);

    for alarm in ALARMS {
        let resource = resource(&template, alarm.id);
        let id = alarm.id;
        assert_eq!(resource.get("Condition").and_then(Value::as_str), alarm.condition, "{id}");
        let p = &resource["Properties"];
        assert_eq!(text(&p["AlarmActions"]), "!Ref AlarmTopic", "{id}: the topic, and only it");
        let (missing, comparison, periods) = match alarm.silent_periods {
            None => ("notBreaching", "GreaterThanOrEqualToThreshold", 1.0),
            Some(periods) => ("breaching", "LessThanThreshold", periods),
        };
        assert_eq!(p["TreatMissingData"].as_str(), Some(missing), "{id}");
        assert_eq!(p["ComparisonOperator"].as_str(), Some(comparison), "{id}");
        assert_eq!(property_number(p, "EvaluationPeriods"), Some(periods), "{id}");
        let to_alarm = property_number(p, "DatapointsToAlarm").unwrap_or(periods);
        assert_eq!(to_alarm, periods, "{id}: every period counts");
        assert_eq!(text(&p["Namespace"]), alarm.namespace, "{id}");
        assert_eq!(p["MetricName"].as_str(), Some(alarm.metric), "{id}");
        assert_eq!(p["Statistic"].as_str(), Some(alarm.statistic), "{id}");
        assert_eq!(property_number(p, "Period"), Some(alarm.period), "{id}");
        assert_eq!(property_number(p, "Threshold"), Some(alarm.threshold), "{id}");
        let dimensions: Vec<(String, String)> = p
            .get("Dimensions")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .map(|d| (d["Name"].as_str().expect("a name").to_owned(), text(&d["Value"])))
            .collect();
        let expected: Vec<(String, String)> =
            alarm.dimensions.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        assert_eq!(dimensions, expected, "{id}");
        let description = p["AlarmDescription"].as_str().unwrap_or_default();
        assert!(description.len() >= 80, "{id}: what it means and what to do: {description:?}");
    }

    // Each alarm on a metric of ours reads what a metric filter publishes.
    for alarm in ALARMS.iter().filter(|a| a.namespace == OWN_NAMESPACE) {
        let published = resources_of(&template, "AWS::Logs::MetricFilter").into_iter().any(|(_, filter)| {
            let transformation = &filter["Properties"]["MetricTransformations"][0];
            transformation["MetricName"].as_str() == Some(alarm.metric)
                && text(&transformation["MetricNamespace"]) == OWN_NAMESPACE
        });
        assert!(published, "{}: a metric filter publishes {}", alarm.id, alarm.metric);
    }
}

/// The alarms' topic always exists; it mails `AlarmEmail` only when one is given. It is encrypted
/// with a key of the stack that CloudWatch may use: with the AWS-managed `alias/aws/sns`, whose
/// policy cannot be changed, CloudWatch cannot publish and every alarm would stay silent.
#[test]
fn the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use_and_mails_only_when_asked() {
    let template = template();
    let topic = resource(&template, "AlarmTopic");
    assert_eq!(topic["Type"].as_str(), Some("AWS::SNS::Topic"));
    assert!(topic.get("Condition").is_none(), "the topic always exists");
    assert_eq!(text(&topic["Properties"]["KmsMasterKeyId"]), "!Ref AlarmTopicKey");

    let key = resource(&template, "AlarmTopicKey");
    assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"));
    assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true));
    let statements = key["Properties"]["KeyPolicy"]["Statement"].as_sequence().expect("statements");
    let cloudwatch: Vec<&Value> = statements
        .iter()
        .filter(|s| text(&s["Principal"]["Service"]) == "cloudwatch.amazonaws.com")
        .collect();
    assert_eq!(cloudwatch.len(), 1);
    let mut actions: Vec<String> =
        cloudwatch[0]["Action"].as_sequence().expect("actions").iter().map(text).collect();
    actions.sort();
    assert_eq!(actions, ["kms:Decrypt", "kms:GenerateDataKey*"], "what SNS needs from a publishing service");
    assert_eq!(
        text(&cloudwatch[0]["Condition"]["StringEquals"]["aws:SourceAccount"]),
        "!Ref AWS::AccountId",
        "alarms of this account only"
    );

    let condition = text(&template["Conditions"]["AlarmEmailSet"]);
    assert_eq!(condition, "!Not !Equals !Ref AlarmEmail,");
    assert_eq!(template["Parameters"]["AlarmEmail"]["Default"].as_str(), Some(""));
    let subscriptions = resources_of(&template, "AWS::SNS::Subscription");
    assert_eq!(subscriptions.len(), 1);
    let (name, subscription) = &subscriptions[0];
    assert_eq!(name, "AlarmEmailSubscription");
    assert_eq!(subscription["Condition"].as_str(), Some("AlarmEmailSet"), "only with an address");
    let p = &subscription["Properties"];
    assert_eq!(p["Protocol"].as_str(), Some("email"));
    assert_eq!(text(&p["Endpoint"]), "!Ref AlarmEmail");
    assert_eq!(text(&p["TopicArn"]), "!Ref AlarmTopic");
    assert_eq!(text(&template["Outputs"]["AlarmTopicArn"]["Value"]), "!Ref AlarmTopic");
}

// The metric filters, on the lines the functions log ---------------------------------------------

/// A CloudWatch Logs JSON filter pattern (`{ ($.a = "x") && ($.b > 0) }`), as far as the template
/// uses it: comparisons of a selector with a string or a number, `&&`, `||` and parentheses (a
/// mix of `&&` and `||` without parentheses is refused, so the template never leans on precedence).
mod filter_pattern {
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Open,
        Close,
        And,
        Or,
        Selector(Vec<String>),
        Op(&'static str),
        Text(String),
        Number(f64),
    }

    fn tokens(pattern: &str) -> Vec<Token> {
        let inner = pattern.trim();
        let inner = inner
            .strip_prefix('{')
            .and_then(|p| p.strip_suffix('}'))
            .unwrap_or_else(|| panic!("a JSON pattern is in braces: {pattern}"));
        let chars: Vec<char> = inner.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match c {
                ' ' | '\t' | '\n' => i += 1,
                '(' => (out.push(Token::Open), i += 1).1,
                ')' => (out.push(Token::Close), i += 1).1,
                '&' if next == Some('&') => (out.push(Token::And), i += 2).1,
                '|' if next == Some('|') => (out.push(Token::Or), i += 2).1,
                '!' | '>' | '<' if next == Some('=') => {
                    out.push(Token::Op(match c {
                        '!' => "!=",
                        '>' => ">=",
                        _ => "<=",
                    }));
                    i += 2;
                }
                '=' => (out.push(Token::Op("=")), i += 1).1,
                '>' => (out.push(Token::Op(">")), i += 1).1,
                '<' => (out.push(Token::Op("<")), i += 1).1,
                '"' => {
                    let end = (i + 1..chars.len()).find(|&j| chars[j] == '"').expect("a closing quote");
                    let text: String = chars[i + 1..end].iter().collect();
                    assert!(!text.contains('*'), "no wildcards: {text}");
                    out.push(Token::Text(text));
                    i = end + 1;
                }
                '$' => {
                    let end = (i..chars.len())
                        .find(|&j| !(chars[j].is_alphanumeric() || "$._".contains(chars[j])))
                        .unwrap_or(chars.len());
                    let selector: String = chars[i..end].iter().collect();
                    let path =
                        selector.strip_prefix("$.").unwrap_or_else(|| panic!("a selector: {selector}"));
                    out.push(Token::Selector(path.split('.').map(str::to_owned).collect()));
                    i = end;
                }
                _ => {
                    let end = (i..chars.len()).find(|&j| " \t\n()".contains(chars[j])).unwrap_or(chars.len());
                    let word: String = chars[i..end].iter().collect();
                    out.push(match word.parse::<f64>() {
                        Ok(n) => Token::Number(n),
                        Err(_) => panic!("unquoted text in {pattern}: {word}"),
                    });
                    i = end;
                }
            }
        }
        out
    }

    /// The value `path` names in `line`.
    pub fn select<'a>(line: &'a Value, path: &str) -> Option<&'a Value> {
        let path = path.strip_prefix("$.").unwrap_or_else(|| panic!("a selector: {path}"));
        path.split('.').try_fold(line, |value, key| value.get(key))
    }

    struct Parser<'a> {
        tokens: &'a [Token],
        at: usize,
        line: &'a Value,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<&Token> {
            self.tokens.get(self.at)
        }

        fn next(&mut self) -> Token {
            let token = self.tokens.get(self.at).cloned().expect("more of the pattern");
            self.at += 1;
            token
        }

        fn expression(&mut self) -> bool {
            let mut value = self.term();
            let mut joined: Option<Token> = None;
            while let Some(op @ (Token::And | Token::Or)) = self.peek().cloned() {
                assert!(joined.as_ref().is_none_or(|j| *j == op), "&& and || mixed without parentheses");
                joined = Some(op.clone());
                self.at += 1;
                let right = self.term();
                value = if op == Token::And { value && right } else { value || right };
            }
            value
        }

        fn term(&mut self) -> bool {
            match self.next() {
                Token::Open => {
                    let value = self.expression();
                    assert_eq!(self.next(), Token::Close, "a closing parenthesis");
                    value
                }
                Token::Selector(path) => {
                    let Token::Op(op) = self.next() else { panic!("an operator after $.{}", path.join(".")) };
                    let found = path.iter().try_fold(self.line, |value, key| value.get(key));
                    match (self.next(), found) {
                        (_, None) => false,
                        (Token::Text(text), Some(value)) => match op {
                            "=" => value.as_str() == Some(text.as_str()),
                            "!=" => value.as_str().is_some_and(|v| v != text),
                            other => panic!("{other} compares numbers"),
                        },
                        (Token::Number(n), Some(value)) => value.as_f64().is_some_and(|v| match op {
                            "=" => v == n,
                            "!=" => v != n,
                            ">" => v > n,
                            ">=" => v >= n,
                            "<" => v < n,
                            _ => v <= n,
                        }),
                        (other, _) => panic!("a value, not {other:?}"),
                    }
                }
                other => panic!("a comparison or a parenthesis, not {other:?}"),
            }
        }
    }

    /// Whether `pattern` matches the JSON log line.
    pub fn matches(pattern: &str, line: &Value) -> bool {
        let tokens = tokens(pattern);
        let mut parser = Parser { tokens: &tokens, at: 0, line };
        let value = parser.expression();
        assert_eq!(parser.at, tokens.len(), "the whole pattern is read: {pattern}");
        value
    }
}

/// Log lines as the functions write them on Lambda: `fulfillment::logging`'s subscriber with
/// `AWS_LAMBDA_LOG_FORMAT=JSON` (the template's `LogFormat: JSON`) and the level at INFO.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Starts capturing on this thread (the tests' runtime runs every task on it).
    fn start() -> (Self, impl Drop) {
        use tracing::subscriber::set_default;
        let captured = Self::default();
        let writer = captured.clone();
        // The functions' subscriber as the template sets it up (LogFormat JSON, level INFO).
        let settings = fulfillment::config::Environment::from_pairs([
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ])
        .logging();
        assert!(settings.json && settings.problem.is_none(), "{settings:?}");
        let guard =
            set_default(fulfillment::logging::subscriber(settings.json, settings.filter, move || {
                writer.clone()
            }));
        (captured, guard)
    }

    /// Every line so far, parsed, and forgets them.
    fn take(&self) -> Vec<serde_json::Value> {
        let bytes = std::mem::take(&mut *self.0.lock().expect("log buffer"));
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}")))
            .collect()
    }
}

/// A metric filter of the template: its log group, pattern and what it publishes.
struct MetricFilter {
    log_group: String,
    pattern: String,
    namespace: String,
    metric: String,
    value: String,
}

fn metric_filter(template: &Value, logical_id: &str) -> MetricFilter {
    let filter = resource(template, logical_id);
    assert_eq!(filter["Type"].as_str(), Some("AWS::Logs::MetricFilter"), "{logical_id}");
    let p = &filter["Properties"];
    let transformations = p["MetricTransformations"].as_sequence().expect("MetricTransformations");
    assert_eq!(transformations.len(), 1, "{logical_id}");
    let t = &transformations[0];
    MetricFilter {
        log_group: text(&p["LogGroupName"]),
        pattern: p["FilterPattern"].as_str().expect("a pattern").to_owned(),
        namespace: text(&t["MetricNamespace"]),
        metric: t["MetricName"].as_str().expect("a metric").to_owned(),
        value: text(&t["MetricValue"]),
    }
}

/// The metric filters `expected` names, (logical id, metric, value), after checking that each reads
/// `log_group` and publishes that metric with that value in our namespace.
fn own_metric_filters<const N: usize>(
    template: &Value,
    log_group: &str,
    expected: [(&str, &str, &str); N],
) -> [MetricFilter; N] {
    expected.map(|(logical_id, metric, value)| {
        let filter = metric_filter(template, logical_id);
        assert_eq!(filter.log_group, log_group, "{logical_id}");
        assert_eq!(
            (filter.namespace.as_str(), filter.metric.as_str(), filter.value.as_str()),
            (OWN_NAMESPACE, metric, value),
            "{logical_id}"
        );
        filter
    })
}

impl MetricFilter {
    /// What the filter publishes for these lines: the sum of its values over the matching ones.
    fn published(&self, lines: &[serde_json::Value]) -> f64 {
        lines
            .iter()
            .filter(|line| filter_pattern::matches(&self.pattern, line))
            .map(|line| match self.value.as_str() {
                selector if selector.starts_with("$.") => filter_pattern::select(line, selector)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or_else(|| panic!("{selector} is a number in {line}")),
                constant => constant.parse().expect("a number"),
            })
            .sum()
    }
}

/// Refused tokens: the webhook's 401 answers, counted from its log (10 in 5 minutes alarm: a
/// misconfigured app or tenant, or someone probing the public endpoint).
#[tokio::test]
async fn the_webhook_filters_count_its_401_and_5xx_answers() {
    use fulfillment::config::Environment;
    use fulfillment::testing::{FakeMarketplace, ManualClock, MemoryStore};
    use lambda_http::Body;

    let template = template();
    let [filter, server_errors] = own_metric_filters(
        &template,
        "!Ref WebhookLogGroup",
        [
            ("WebhookUnauthorizedMetricFilter", "WebhookUnauthorized", "1"),
            ("WebhookServerErrorsMetricFilter", "WebhookServerErrors", "1"),
        ],
    );

    let clock = ManualClock::at(chrono::Utc::now());
    let environment = Environment::from_pairs([
        ("ENTRA_TENANT_ID", "72f988bf-0000-4000-8000-00000000f022"),
        ("ENTRA_CLIENT_ID", "a1b2c3d4-0000-4000-8000-00000000f022"),
        // Nothing answers there: a token with a key id cannot be checked (503).
        ("WEBHOOK_JWKS_URL", "http://127.0.0.1:9/keys"),
    ]);
    let function = webhook::WebhookFunction::new(
        MemoryStore::new(),
        FakeMarketplace::new(clock.clone(), &["basic"]),
        clock,
        &environment,
    )
    .expect("the webhook");
    let request = |method: &str, authorization: Option<&str>| {
        let mut builder =
            lambda_http::http::Request::builder().method(method).uri("https://api.example/webhook");
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        builder.body(Body::from("{}")).expect("a request")
    };

    let (captured, _guard) = Captured::start();
    let mut statuses = Vec::new();
    for (method, authorization) in [
        ("POST", None),
        ("POST", Some("Bearer not-a-token")),
        ("POST", Some("Basic dXNlcjpwYXNz")),
        ("GET", None),
        // {"alg":"RS256","kid":"k1"}.{"x":1}.signature: its key must be fetched, and cannot be.
        ("POST", Some("Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJ4IjoxfQ.c2lnbmF0dXJl")),
    ] {
        statuses.push(function.handle(request(method, authorization)).await.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 405, 503]);
    let lines = captured.take();
    assert!(lines.len() >= 5, "{lines:?}");
    assert_eq!(filter.published(&lines), 3.0, "one per 401 answer, not the 405: {lines:#?}");
    assert_eq!(server_errors.published(&lines), 1.0, "the 503, nothing else: {lines:#?}");
}

/// The reconciliation's one line per invocation (`reconcile run ended`): the pass's counts as the
/// invocation left it. The drift filter publishes the records a finished pass repaired (changed:
/// webhooks were lost), once per pass though every invocation of a long pass logs its running
/// count; the incomplete filter the subscriptions a finished pass could not reconcile. A run that
/// could not go on (outcome failed) is an error for Lambda: its Errors alarm, no filter.
#[tokio::test]
async fn the_reconciliation_filters_count_each_finished_pass_once() {
    use chrono::Duration;
    use fulfillment::clock::Clock;
    use fulfillment::reconcile::{Invocation, Outcome, Reconciler};
    use fulfillment::testing::{
        FakeMarketplace, ManualClock, MarketFault, MemoryStore, ScriptedStore, StoreStep,
    };

    let template = template();
    let [drift, incomplete, finished_passes] = own_metric_filters(
        &template,
        "!Ref ReconcileLogGroup",
        [
            ("ReconcileDriftMetricFilter", "ReconcileRecordsRepaired", "$.fields.drifted"),
            ("ReconcileIncompleteMetricFilter", "ReconcileSubscriptionsNotReconciled", "$.fields.errors"),
            ("ReconcilePassFinishedMetricFilter", "ReconcilePassesFinished", "1"),
        ],
    );

    let clock = ManualClock::at(chrono::Utc::now());
    let market = FakeMarketplace::new(clock.clone(), &["basic"]);
    let store = ScriptedStore::new(MemoryStore::new());
    let mut reconciler = Reconciler::new(store.clone(), market.clone(), clock.clone());
    // Pages begun until 2 minutes before the deadline (a page a minute, below).
    reconciler.handover_margin = Duration::minutes(2);
    let ids: Vec<_> = (0..3).map(|_| market.purchase("basic", Some(3), "tenant").0).collect();
    let mut run = 0;
    let mut invoke = async |minutes: i64| {
        run += 1;
        let id = format!("run-{run}");
        let deadline = clock.now() + Duration::minutes(minutes);
        reconciler.run(&Invocation { id: &id, deadline }).await
    };
    let (captured, _guard) = Captured::start();

    // The first pass records all three: nothing was lost.
    let first = invoke(15).await;
    assert_eq!(
        (first.outcome, first.pass.as_ref().map(|p| (p.added, p.changed))),
        (Outcome::Finished, Some((3, 0)))
    );
    let lines = captured.take();
    assert_eq!((drift.published(&lines), incomplete.published(&lines)), (0.0, 0.0), "{lines:#?}");
    assert_eq!(finished_passes.published(&lines), 1.0, "{lines:#?}");

    // Microsoft changed all three without a webhook; the next pass takes two invocations (a page
    // a minute, one subscription a page), and the first hands over with 2 repairs counted so far.
    for id in &ids {
        market.edit(id, |s| s.quantity = Some(7));
    }
    market.set_page_size(1);
    market.set_list_takes(Duration::minutes(1));
    clock.advance(Duration::hours(1));
    let handed_over = invoke(4).await;
    assert_eq!(handed_over.outcome, Outcome::HandedOver, "{handed_over:?}");
    assert!(handed_over.pass.as_ref().is_some_and(|p| p.changed > 0), "{handed_over:?}");
    let finished = invoke(15).await;
    assert_eq!((finished.outcome, finished.pass.as_ref().map(|p| p.changed)), (Outcome::Finished, Some(3)));
    let lines = captured.take();
    assert_eq!(lines.iter().filter(|l| l["fields"]["message"] == "reconcile run ended").count(), 2);
    assert_eq!(drift.published(&lines), 3.0, "each repair once: {lines:#?}");
    assert_eq!(incomplete.published(&lines), 0.0);
    assert_eq!(finished_passes.published(&lines), 1.0, "the pass, not its runs: {lines:#?}");

    // One subscription cannot be written this time: the pass finishes without it.
    market.set_list_takes(Duration::zero());
    market.edit(&ids[0], |s| s.quantity = Some(9));
    store.at_apply(1, StoreStep::Outage);
    clock.advance(Duration::hours(1));
    let partial = invoke(15).await;
    assert_eq!(
        (partial.outcome, partial.pass.as_ref().map(|p| (p.changed, p.errors))),
        (Outcome::Finished, Some((0, 1))),
        "{partial:?}"
    );
    let lines = captured.take();
    assert_eq!((drift.published(&lines), incomplete.published(&lines)), (0.0, 1.0), "{lines:#?}");
    assert_eq!(finished_passes.published(&lines), 1.0, "finished, though not all reconciled");

    // Microsoft's list fails: the run is an error for Lambda; neither filter counts it.
    market.fail_next("list_subscriptions", MarketFault::Server, 1);
    clock.advance(Duration::hours(1));
    let failed = invoke(15).await;
    assert_eq!(failed.outcome, Outcome::Failed, "{failed:?}");
    assert!(failed.into_result().is_err(), "Lambda sees an error");
    let lines = captured.take();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "reconcile run ended"), "{lines:#?}");
    assert_eq!((drift.published(&lines), incomplete.published(&lines)), (0.0, 0.0), "{lines:#?}");
    assert_eq!(finished_passes.published(&lines), 0.0, "no pass finished: silence, the stalled alarm's cue");
}

/// ReconcileStalledAlarm alarms after a day without a finished pass; passes start at least every
/// ReconcileIntervalMinutes (at most 12 hours), so a healthy reconciliation never goes that long.
#[test]
fn the_stalled_alarm_waits_longer_than_the_longest_interval_between_passes() {
    let template = template();
    let alarm = &resource(&template, "ReconcileStalledAlarm")["Properties"];
    let silence = property_number(alarm, "Period").expect("a period")
        * property_number(alarm, "EvaluationPeriods").expect("periods");
    let interval = &template["Parameters"]["ReconcileIntervalMinutes"];
    let longest = property_number(interval, "MaxValue").expect("the interval has a maximum") * 60.0;
    assert!(longest * 2.0 <= silence, "a pass may take as long as the interval: {longest} s, {silence} s");
    // Every tick is a run: a pass under way goes on at the next one.
    let tick = text(&resource_properties("ReconcileFunction")["Events"]["Tick"]["Properties"]["Schedule"]);
    assert_eq!(tick, "rate(5 minutes)");
    // A run ends before the next tick (so a tick never waits behind one), with room for the minute
    // before its deadline in which it begins no page.
    let timeout = property_number(&resource_properties("ReconcileFunction"), "Timeout").expect("a timeout");
    assert!((120.0..300.0).contains(&timeout), "{timeout}");
}

/// Microsoft requires Entra ID sign-in on the landing page: a deploy without the sign-in app is
/// refused, unless the switch says this is a test offer; then no app id reaches the functions.
#[test]
fn the_landing_page_signs_in_unless_a_test_offer_turns_it_off() {
    let template = template();
    let parameters = &template["Parameters"];
    let switch = &parameters["SigninOffForTestOfferOnly"];
    assert_eq!(switch["Default"].as_str(), Some("false"), "{switch:?}");
    let allowed: Vec<&str> = switch["AllowedValues"]
        .as_sequence()
        .expect("allowed values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(allowed, ["false", "true"]);

    let rule = &template["Rules"]["SigninRequired"];
    assert_eq!(text(&rule["RuleCondition"]), "!Equals !Ref SigninOffForTestOfferOnly,false", "{rule:?}");
    let assertions = rule["Assertions"].as_sequence().expect("assertions");
    assert_eq!(text(&assertions[0]["Assert"]), "!Not !Equals !Ref SigninClientId,", "{assertions:?}");

    let variables = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(text(&variables["OIDC_CLIENT_ID"]), "!If SigninOff,,!Ref SigninClientId");
    assert_eq!(text(&template["Conditions"]["SigninOff"]), "!Equals !Ref SigninOffForTestOfferOnly,true");
}

// Metered billing ---------------------------------------------------------------------------------

/// A function's inline statements: (actions, resource), as text.
fn statements_of(function: &str) -> Vec<(String, String)> {
    let properties = resource_properties(function);
    properties["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("Statement").and_then(Value::as_sequence))
        .flatten()
        .map(|s| (text(&s["Action"]), text(&s["Resource"])))
        .collect()
}

/// The emission runs every 15 minutes (an hour is sent 10 to 25 minutes after it ends, the emitter
/// waiting 10), one run at a time, ending before the next tick; a failed run is not retried by
/// Lambda (the next tick is the retry). Its role finds unsettled hours on their index, and reads a subscription's hours of a day (a Query of the table) to compare with Microsoft's record.
#[test]
fn the_metering_run_ticks_every_15_minutes_one_at_a_time_and_its_next_tick_is_the_retry() {
    let metering = resource_properties("MeteringFunction");
    assert_eq!(text(&metering["Events"]["Tick"]["Properties"]["Schedule"]), "rate(15 minutes)");
    assert_eq!(metering["Events"].as_mapping().map(|events| events.len()), Some(1));
    assert_eq!(property_number(&metering, "Timeout"), Some(300.0), "under the 15-minute tick");
    assert_eq!(property_number(&metering, "ReservedConcurrentExecutions"), Some(1.0));
    let config = &metering["EventInvokeConfig"];
    assert_eq!(property_number(config, "MaximumRetryAttempts"), Some(0.0));
    assert!(config.get("DestinationConfig").is_none(), "nothing to keep: the hours stay in the table");
    let age = property_number(config, "MaximumEventAgeInSeconds").expect("a throttled tick expires");
    assert!((60.0..=900.0).contains(&age), "no longer than a tick: {age}");
    assert_eq!(
        text(&metering["Environment"]["Variables"]["MARKETPLACE_SECRET_ARN"]),
        "!Ref MarketplaceSecretArn"
    );
    let emitter = fulfillment::emission::Emitter::new(
        fulfillment::testing::MemoryStore::new(),
        metering::testing::ScriptedMicrosoft::new(),
        fulfillment::clock::SystemClock,
    );
    assert_eq!(emitter.grace, chrono::Duration::minutes(10), "sent 10 to 25 minutes after the hour");
    assert_eq!(
        statements_of("MeteringFunction"),
        [
            (
                "dynamodb:GetItem,dynamodb:BatchGetItem,dynamodb:UpdateItem,dynamodb:PutItem,dynamodb:Query"
                    .to_owned(),
                "!GetAtt UsageTable.Arn".to_owned()
            ),
            ("dynamodb:Query".to_owned(), "!Sub ${UsageTable.Arn}/index/ByUnsettledHour".to_owned()),
            ("dynamodb:BatchGetItem".to_owned(), "!GetAtt SubscriptionsTable.Arn".to_owned()),
            ("secretsmanager:GetSecretValue".to_owned(), "!Ref MarketplaceSecretArn".to_owned()),
        ]
    );
}

/// The product's usage arrives on an encrypted queue that only the intake reads (an event source
/// mapping: SAM's SQS event would attach a managed policy on every queue of the account). A
/// message the intake names in batchItemFailures is delivered again, up to 5 times, then kept 14
/// days in the dead-letter queue (alarmed). The outputs tell the product where to send.
#[test]
fn usage_comes_from_a_queue_only_the_intake_reads_and_failures_end_in_a_dead_letter_queue() {
    let template = template();
    let intake = resource_properties("UsageIntakeFunction");
    let timeout = property_number(&intake, "Timeout").expect("a timeout");
    assert_eq!(timeout, 30.0);
    assert!(intake.get("Events").is_none(), "no SAM event: see UsageIntakeQueueMapping");
    assert_eq!(
        text(&intake["Environment"]["Variables"]["MARKETPLACE_SECRET_ARN"]),
        "!Ref MarketplaceSecretArn",
        "it reads the plans' dimensions from Microsoft"
    );
    assert_eq!(
        statements_of("UsageIntakeFunction"),
        [
            ("dynamodb:GetItem".to_owned(), "!GetAtt SubscriptionsTable.Arn".to_owned()),
            (
                "dynamodb:GetItem,dynamodb:PutItem,dynamodb:UpdateItem".to_owned(),
                "!GetAtt UsageTable.Arn".to_owned()
            ),
            (
                "sqs:ReceiveMessage,sqs:DeleteMessage,sqs:GetQueueAttributes".to_owned(),
                "!GetAtt UsageQueue.Arn".to_owned()
            ),
            ("secretsmanager:GetSecretValue".to_owned(), "!Ref MarketplaceSecretArn".to_owned()),
        ]
    );

    let mapping = resource(&template, "UsageIntakeQueueMapping");
    assert_eq!(mapping["Type"].as_str(), Some("AWS::Lambda::EventSourceMapping"));
    let mapping = &mapping["Properties"];
    assert_eq!(text(&mapping["FunctionName"]), "!Ref UsageIntakeFunction");
    assert_eq!(text(&mapping["EventSourceArn"]), "!GetAtt UsageQueue.Arn");
    assert_eq!(property_number(mapping, "BatchSize"), Some(10.0));
    assert_eq!(text(&mapping["FunctionResponseTypes"]), "ReportBatchItemFailures");

    let queue = resource_properties("UsageQueue");
    assert_eq!(queue["SqsManagedSseEnabled"].as_bool(), Some(true));
    let visibility = property_number(&queue, "VisibilityTimeout").expect("a visibility timeout");
    assert!(visibility >= 6.0 * timeout, "Lambda's advice for an SQS source: {visibility}");
    assert_eq!(text(&queue["RedrivePolicy"]["deadLetterTargetArn"]), "!GetAtt UsageDeadLetterQueue.Arn");
    assert_eq!(property_number(&queue["RedrivePolicy"], "maxReceiveCount"), Some(5.0));
    let dead_letters = resource_properties("UsageDeadLetterQueue");
    assert_eq!(dead_letters["SqsManagedSseEnabled"].as_bool(), Some(true));
    assert_eq!(property_number(&dead_letters, "MessageRetentionPeriod"), Some(1_209_600.0));

    let outputs = &template["Outputs"];
    assert_eq!(text(&outputs["UsageQueueUrl"]["Value"]), "!Ref UsageQueue");
    assert_eq!(text(&outputs["UsageQueueArn"]["Value"]), "!GetAtt UsageQueue.Arn");
    for output in ["UsageQueueUrl", "UsageQueueArn"] {
        let description = outputs[output]["Description"].as_str().unwrap_or_default();
        assert!(description.contains("sqs:SendMessage"), "{output}: {description}");
    }
    for (name, _) in functions(&template) {
        if name != "UsageIntakeFunction" {
            let reads = statements_of(&name).into_iter().any(|(_, resource)| resource.contains("UsageQueue"));
            assert!(!reads, "{name} has no business with the usage queues");
        }
    }
}

/// Usage has its own table: only the functions that take or send usage may touch it, and those
/// that only take or send it may read a subscription, never write one.
#[test]
fn only_the_usage_functions_reach_the_usage_table_and_they_write_no_subscription() {
    let usage_functions = ["SubscriptionsFunction", "MeteringFunction", "UsageIntakeFunction"];
    for (name, _) in functions(&template()) {
        let statements = statements_of(&name);
        let reaches_usage = statements.iter().any(|(_, resource)| resource.contains("UsageTable"));
        assert_eq!(reaches_usage, usage_functions.contains(&name.as_str()), "{name}: {statements:?}");
        if USAGE_ONLY.contains(&name.as_str()) {
            for (actions, resource) in statements.iter().filter(|(_, r)| r.contains("SubscriptionsTable")) {
                assert!(
                    actions.split(',').all(|a| ["dynamodb:GetItem", "dynamodb:BatchGetItem"].contains(&a)),
                    "{name} may only read {resource}: {actions}"
                );
            }
        }
    }
    let globals = template()["Globals"]["Function"]["Environment"]["Variables"].clone();
    assert_eq!(text(&globals["USAGE_TABLE_NAME"]), "!Ref UsageTable");
}

/// SAM's pull event sources (SQS, DynamoDB and Kinesis streams, ...) attach an AWS managed policy
/// on every queue or stream of the account; the stack declares event source mappings instead.
#[test]
fn no_function_has_a_sam_event_that_attaches_a_broad_managed_policy() {
    const PULL: [&str; 7] = ["SQS", "DynamoDB", "Kinesis", "MSK", "MQ", "SelfManagedKafka", "DocumentDB"];
    for (name, function) in functions(&template()) {
        let events = function["Properties"].get("Events").and_then(Value::as_mapping);
        for (event, definition) in events.into_iter().flatten() {
            let kind = definition["Type"].as_str().unwrap_or_default();
            assert!(!PULL.contains(&kind), "{name}.{event:?}: {kind}");
        }
    }
}

/// The emission's one line per run (`metering run ended`), from a real run of the function's job
/// on the in-memory store and a scripted Microsoft: the filters publish the hours Microsoft refused
/// for good, those it would not let our app report (403 or ResourceNotAuthorized) and those near
/// the end of Microsoft's 24 hours; a run in which the table failed is an error for Lambda (its
/// Errors alarm), which no filter counts.
#[tokio::test]
async fn the_metering_filters_count_what_each_run_reports() {
    use chrono::{Duration, TimeZone, Utc};
    use fulfillment::domain::{PlanId, SubscriptionId, UsageEventStatus};
    use fulfillment::store::usage::{UsageReport, UsageStore, hour_of};
    use fulfillment::testing::{ManualClock, MemoryStore, ScriptedStore};
    use metering::MeteringJob;
    use metering::testing::{BatchFault, ScriptedMicrosoft};

    let template = template();
    let [not_authorized, near_expiry, refused] = own_metric_filters(
        &template,
        "!Ref MeteringLogGroup",
        [
            ("MeteringNotAuthorizedMetricFilter", "MeteringHoursNotAuthorized", "$.fields.not_authorized"),
            ("MeteringNearExpiryMetricFilter", "MeteringHoursNearExpiry", "$.fields.near_expiry"),
            ("MeteringRefusedMetricFilter", "MeteringHoursRefused", "$.fields.refused"),
        ],
    );

    let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 30, 0).single().expect("time");
    let (store, microsoft) = (ScriptedStore::new(MemoryStore::new()), ScriptedMicrosoft::new());
    let job = MeteringJob::new(store.clone(), microsoft.clone(), ManualClock::at(now));
    let id = |n: u32| SubscriptionId::parse(&format!("e7e70000-0000-4000-8000-{n:012x}")).expect("id");
    let plan = PlanId::parse("team-monthly").expect("plan");
    // Four hours: three of the last hour, and one 21 hours old (2.5 of Microsoft's 24 hours left).
    for (n, hours_ago) in [(1, 1), (2, 1), (3, 1), (4, 21)] {
        let at = hour_of(now) - Duration::hours(hours_ago) + Duration::minutes(5);
        let report = UsageReport {
            subscription_id: id(n),
            dimension: "api_calls".into(),
            quantity: 2.0,
            at,
            key: "k".into(),
        };
        store.add_usage(&report, &plan, now).await.expect("added");
    }
    microsoft.answer(&id(2), UsageEventStatus::ResourceNotActive);
    microsoft.answer(&id(3), UsageEventStatus::ResourceNotAuthorized);
    microsoft.answer(&id(4), UsageEventStatus::Error);
    let event = serde_json::json!({ "id": "tick-1" });
    let later = || std::time::Instant::now() + std::time::Duration::from_secs(300);
    let (captured, _guard) = Captured::start();

    // One accepted, one refused for good, one not authorized, one failed near the end of its window.
    let first = job.handle(&event, later()).await.expect("Microsoft's answers are no error");
    assert_eq!((first.accepted, first.not_authorized, first.near_expiry), (1, 1, 1), "{first:?}");
    let lines = captured.take();
    let ended = |lines: &[serde_json::Value]| {
        lines.iter().filter(|l| l["fields"]["message"] == "metering run ended").count()
    };
    assert_eq!(ended(&lines), 1, "{lines:#?}");
    assert_eq!(refused.published(&lines), 1.0, "{lines:#?}");
    assert_eq!(not_authorized.published(&lines), 1.0, "{lines:#?}");
    assert_eq!(near_expiry.published(&lines), 1.0, "{lines:#?}");

    // The next tick: Microsoft answers 403 for the whole batch (both hours left are ours to send).
    microsoft.fail_next(BatchFault::Forbidden);
    let second = job.handle(&event, later()).await.expect("a 403 is no error");
    assert_eq!((second.not_authorized, second.near_expiry), (2, 1), "{second:?}");
    let lines = captured.take();
    assert_eq!(refused.published(&lines), 0.0, "refusals are counted once, when settled");
    assert_eq!(not_authorized.published(&lines), 2.0, "{lines:#?}");
    assert_eq!(near_expiry.published(&lines), 1.0);

    // Microsoft takes both: nothing to alarm.
    microsoft.answer(&id(3), UsageEventStatus::Accepted);
    microsoft.answer(&id(4), UsageEventStatus::Accepted);
    let third = job.handle(&event, later()).await.expect("no error");
    assert_eq!(third.accepted, 2, "{third:?}");
    let lines = captured.take();
    assert_eq!(ended(&lines), 1);
    let counts = [&refused, &not_authorized, &near_expiry].map(|f| f.published(&lines));
    assert_eq!(counts, [0.0, 0.0, 0.0], "{lines:#?}");

    // The table fails: an error for Lambda (MeteringErrorsAlarm); no filter counts it.
    let report = UsageReport {
        subscription_id: id(5),
        dimension: "api_calls".into(),
        quantity: 1.0,
        at: hour_of(now) - Duration::minutes(30),
        key: "k".into(),
    };
    store.add_usage(&report, &plan, now).await.expect("added");
    store.set_down(true);
    let failed = job.handle(&event, later()).await.expect_err("the table failed");
    assert!(failed.0.store_errors > 0, "{:?}", failed.0);
    let lines = captured.take();
    assert_eq!(ended(&lines), 1, "the run's line is logged all the same");
    let counts = [&refused, &not_authorized, &near_expiry].map(|f| f.published(&lines));
    assert_eq!(counts, [0.0, 0.0, 0.0], "{lines:#?}");
}
