//! Each usage function's role grants every DynamoDB action its code sends, on the table or index
//! it sends it to. DynamoDB Local enforces no IAM, so a missing grant would first show in AWS (an
//! AccessDenied on a path the tests run green): the actions are recorded from real runs on
//! DynamoDB Local ([`ActionRecorder`]) and looked up in `template.yaml`'s policy of the function.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fulfillment::changes::{Event, record_event};
use fulfillment::domain::{
    OperationId, PlanId, Subscription, SubscriptionId, SubscriptionStatus, UsageEventStatus,
};
use fulfillment::store::ChangeSource;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::usage::{UsageReport, UsageStore, hour_of};
use fulfillment::testing::{FakeMarketplace, ManualClock};
use integration_tests::table::{LOGICAL_ID, TableNames, USAGE_LOGICAL_ID, resource_properties};
use local_stack::iam::{ActionRecorder, Needed};
use serde_json::json;
use serde_norway::Value;

/// The function's grants: (action, resource as the template spells it).
fn granted(function: &str) -> BTreeSet<(String, String)> {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, tagged.value.as_str().unwrap_or_default()),
        other => format!("{other:?}"),
    };
    let list = |value: &Value| match value {
        Value::Sequence(items) => items.iter().map(text).collect::<Vec<_>>(),
        other => vec![text(other)],
    };
    let properties = resource_properties(function);
    let statements = properties["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("Statement").and_then(Value::as_sequence))
        .flatten();
    let mut grants = BTreeSet::new();
    for statement in statements {
        for action in list(&statement["Action"]) {
            for resource in list(&statement["Resource"]) {
                grants.insert((action.clone(), resource));
            }
        }
    }
    grants
}

/// Every recorded action is granted to `function`, on its table or index.
fn assert_granted(function: &str, tables: &TableNames, needed: &BTreeSet<Needed>) {
    let grants = granted(function);
    assert!(!needed.is_empty(), "{function}: nothing was recorded");
    for need in needed {
        let logical = if need.table == tables.subscriptions {
            LOGICAL_ID
        } else if need.table == tables.usage {
            USAGE_LOGICAL_ID
        } else {
            panic!("{function}: a call to a table of neither kind: {need:?}")
        };
        let resource = match &need.index {
            None => format!("!GetAtt {logical}.Arn"),
            Some(index) => format!("!Sub ${{{logical}.Arn}}/index/{index}"),
        };
        assert!(
            grants.contains(&(need.action.to_owned(), resource.clone())),
            "{function} sends {} on {resource}, which its policy does not grant: {grants:?}",
            need.action
        );
    }
}

struct Tables {
    names: TableNames,
    /// Writes the set-up, unrecorded.
    setup: DynamoDbStore,
    recorder: ActionRecorder,
    /// The function's store, recorded.
    recorded: DynamoDbStore,
}

async fn tables() -> Tables {
    let client = integration_tests::client(&integration_tests::dynamodb_endpoint());
    let names = TableNames::fresh();
    integration_tests::table::create_tables(&client, &names).await;
    let recorder = ActionRecorder::default();
    Tables {
        setup: names.store(client.clone()),
        recorded: names.store(recorder.attach(&client)),
        names,
        recorder,
    }
}

fn id(n: u32) -> SubscriptionId {
    SubscriptionId::parse(&format!("e7e70000-0000-4000-8000-{n:012x}")).expect("id")
}

/// Metering: hours found on the index, read, closed, sent and recorded; each subscription's plan
/// read; after `ResourceNotActive`, the subscription's hours of the day compared with Microsoft's
/// record.
#[tokio::test]
async fn the_metering_role_grants_every_call_of_a_run() {
    use metering::MeteringJob;
    use metering::testing::ScriptedMicrosoft;

    let tables = tables().await;
    // Half past an hour: the hour before is closed whatever the minute the test runs at (an hour
    // closes 10 minutes after its end).
    let now = hour_of(Utc::now()) - chrono::Duration::minutes(30);
    let plan = PlanId::parse("team-monthly").expect("plan");
    for n in 1..=3 {
        let report = UsageReport {
            subscription_id: id(n),
            dimension: "api_calls".into(),
            quantity: 2.0,
            at: hour_of(now) - chrono::Duration::hours(1),
            key: format!("k{n}"),
        };
        tables.setup.add_usage(&report, &plan, now).await.expect("added");
    }
    let microsoft = ScriptedMicrosoft::new();
    microsoft.answer(&id(2), UsageEventStatus::ResourceNotActive);
    let job = MeteringJob::new(tables.recorded.clone(), microsoft, ManualClock::at(now));
    let report = job
        .handle(&json!({ "id": "tick-iam" }), Instant::now() + Duration::from_secs(60))
        .await
        .expect("the run reads and writes the table");
    assert_eq!(report.hours, 3, "{report:?}");
    let needed = tables.recorder.needed();
    assert!(
        needed.iter().any(|n| n.action == "dynamodb:Query" && n.index.is_none()),
        "the comparison with Microsoft's record ran: {needed:?}"
    );
    assert_granted("MeteringFunction", &tables.names, &needed);
}

/// The intake: the subscription read, a report added (its key and its hour in one transaction),
/// the same report again (its key read back).
#[tokio::test]
async fn the_usage_intake_role_grants_every_call_of_a_batch() {
    use usage_intake::UsageIntake;

    let tables = tables().await;
    let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 30, 0).single().expect("time");
    let clock = ManualClock::at(now);
    let market = FakeMarketplace::new(clock.clone(), &["team-monthly"]);
    market.set_dimensions("team-monthly", &["api_calls"]);
    let mut subscription = Subscription::new(id(1));
    subscription.status = Some(SubscriptionStatus::Subscribed);
    subscription.plan_id = PlanId::parse("team-monthly");
    market.insert_subscription(subscription.clone());
    let seen =
        Event::observed(subscription, now, OperationId::parse("seed").expect("id"), ChangeSource::Landing);
    record_event(&tables.setup, &seen, now).await.expect("recorded");

    let intake = UsageIntake::new(tables.recorded.clone(), market, clock);
    let report = json!({ "subscriptionId": id(1), "dimension": "api_calls", "quantity": 3, "time": "2026-12-02T10:20:00Z", "key": "k1" });
    let message = json!({ "messageId": "m1", "receiptHandle": "h1", "body": report.to_string(), "eventSource": "aws:sqs" });
    let batch = json!({ "Records": [message.clone(), message] });
    let taken = intake.handle(batch, Instant::now() + Duration::from_secs(30)).await.expect("a batch");
    assert_eq!((taken.added, taken.repeated), (1, 1), "{taken:?}");
    assert_granted("UsageIntakeFunction", &tables.names, &tables.recorder.needed());
}

/// An IAM-signed request to the admin API, as API Gateway hands it over.
fn admin_request(method: &str, uri: &str, body: Option<serde_json::Value>) -> lambda_http::Request {
    use lambda_http::RequestExt;
    let body = body.map_or(lambda_http::Body::Empty, |b| lambda_http::Body::Text(b.to_string()));
    let request: lambda_http::Request =
        lambda_http::http::Request::builder().method(method).uri(uri).body(body).expect("a request");
    let path = request.uri().path().to_owned();
    local_stack::as_iam_caller(request.with_raw_http_path(path))
}

/// The admin API: every route, on a metered subscription (its reads, the tenant index, the
/// listing's scan, usage reported twice and read back, a publisher's change and cancellation, the
/// self-check).
#[tokio::test]
async fn the_admin_role_grants_every_call_of_its_routes() {
    use fulfillment::config::Environment;
    use subscriptions::AdminApi;

    let tables = tables().await;
    let now = Utc::now();
    let clock = ManualClock::at(now);
    let market = FakeMarketplace::new(clock.clone(), &["team-monthly", "team-yearly"]);
    market.set_dimensions("team-monthly", &["api_calls"]);
    let tenant = "72f988bf-0000-4000-8000-0000000ca11e";
    let subscription: Subscription = serde_json::from_value(json!({
        "id": id(1), "offerId": "contoso-saas", "planId": "team-monthly", "quantity": 10,
        "saasSubscriptionStatus": "Subscribed", "allowedCustomerOperations": ["Read", "Update", "Delete"],
        "beneficiary": { "tenantId": tenant }, "purchaser": { "tenantId": tenant }
    }))
    .expect("a subscription");
    market.insert_subscription(subscription.clone());
    let seen =
        Event::observed(subscription, now, OperationId::parse("seed").expect("id"), ChangeSource::Landing);
    record_event(&tables.setup, &seen, now).await.expect("recorded");

    let environment = Environment::from_pairs([
        ("ENTRA_TENANT_ID", "72f988bf-0000-4000-8000-00000000e001"),
        ("ENTRA_CLIENT_ID", "a1b2c3d4-0000-4000-8000-00000000a991"),
        ("WEBHOOK_JWKS_URL", "http://127.0.0.1:9/keys"),
    ]);
    let api = AdminApi::new(tables.recorded.clone(), market, clock, &environment).expect("the admin API");
    let sub = format!("/admin/subscriptions/{}", id(1));
    let time = (now - chrono::Duration::minutes(30)).to_rfc3339();
    let usage = json!({ "usage": [{ "subscriptionId": id(1), "dimension": "api_calls", "quantity": 2, "time": time, "key": "k1" }] });
    let calls = [
        ("GET", "/admin/self-check".to_owned(), None),
        ("GET", "/admin/subscriptions".to_owned(), None),
        ("GET", sub.clone(), None),
        ("GET", format!("{sub}/entitlement"), None),
        ("GET", format!("/admin/tenants/{tenant}/entitlements"), None),
        ("POST", "/admin/usage".to_owned(), Some(usage.clone())),
        ("POST", "/admin/usage".to_owned(), Some(usage)),
        ("GET", format!("{sub}/usage?compare=true"), None),
        ("PATCH", sub.clone(), Some(json!({ "quantity": 12 }))),
        ("DELETE", sub.clone(), None),
    ];
    for (method, uri, body) in calls {
        let answer = api.handle(admin_request(method, &uri, body)).await;
        let status = answer.status().as_u16();
        // The self-check fails on the signing keys (nothing listens): 500, with the tables passing.
        let text = String::from_utf8_lossy(answer.body().as_ref()).into_owned();
        if uri.ends_with("self-check") {
            assert!(text.contains("\"usage-table\"") && !text.contains("DynamoDB"), "{text}");
        } else {
            assert!(status < 500, "{method} {uri}: {status} {text}");
        }
    }
    assert_granted("SubscriptionsFunction", &tables.names, &tables.recorder.needed());
}
