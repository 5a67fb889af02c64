//! Warm latency: each function's main flow, invoked again and again through the Runtime API with
//! payloads made from its `events/` file, each invocation followed by its floor (the same
//! Marketplace and DynamoDB requests, made directly). Both are timed in the same run, so the
//! machine's noise falls on both alike.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use local_stack::{LocalStack, Options};
use marketplace_emulator::{Purchase, Purchased, WebhookFaults};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bootstrap::{Bootstrap, BoxError, root};
use crate::capacity::{CapacityMeter, Units};
use crate::floor::{Floor, Item, STATE, copied, written};
use crate::floor_plan::{BusEntry, Call, Table, Write, item_json};
use crate::runtime_api::RuntimeApi;
use fulfillment::domain::{PlanId, SubscriptionId, UsageEvent};
use fulfillment::events::stream::StreamBatch;
use fulfillment::store::dynamodb::{ADD_TO_HOUR, ADD_TO_HOUR_CONDITION, CLOSE_HOUR, layout};
use fulfillment::store::usage::{UsageReport, UsageStore, hour_of};

/// The subscription the event files name; each round puts its own in its place.
const EVENT_SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";
const PLAN: &str = "team-monthly";
/// Subscriptions the reconciliation finds, all in agreement (one page).
const RECONCILED: usize = 100;
/// The emulator's metered plan, and its dimension.
const METERED_PLAN: &str = "basic";
const METERED_DIMENSION: &str = "api-calls";

#[derive(Debug, Clone, Copy)]
pub enum Flow {
    /// `landing/purchase.json`: resolve the token, record, show the plan.
    Landing,
    /// `activate/admin.json`: read, activate, read back, record, show the plan.
    Activate,
    /// `webhook/change-quantity-customer.json`: authenticate, deduplicate, confirm, apply, acknowledge.
    Webhook,
    /// `subscriptions/get.json`: a subscription with its history.
    Subscriptions,
    /// `reconcile/scheduled.json`: a page of 100 subscriptions compared with ours.
    Reconcile,
    /// `usage-intake/sqs-batch.json`'s first message: a usage report read, checked against the
    /// plan's dimensions (Microsoft's, on the first only: they are kept an hour) and added.
    UsageIntake,
    /// `metering/scheduled.json`: a run that finds one closed hour, sends it and records it.
    Metering,
    /// `events-relay/purchase-and-activation.json`: two stream records, published as two events.
    EventsRelay,
}

impl Flow {
    pub const ALL: [Flow; 8] = [
        Flow::Landing,
        Flow::Activate,
        Flow::Webhook,
        Flow::Subscriptions,
        Flow::Reconcile,
        Flow::UsageIntake,
        Flow::Metering,
        Flow::EventsRelay,
    ];

    pub fn function(self) -> &'static str {
        match self {
            Flow::Landing => "landing",
            Flow::Activate => "activate",
            Flow::Webhook => "webhook",
            Flow::Subscriptions => "subscriptions",
            Flow::Reconcile => "reconcile",
            Flow::UsageIntake => "usage-intake",
            Flow::Metering => "metering",
            Flow::EventsRelay => "events-relay",
        }
    }

    /// The function's logical id in template.yaml.
    pub fn logical_id(self) -> &'static str {
        match self {
            Flow::Landing => "LandingFunction",
            Flow::Activate => "ActivateFunction",
            Flow::Webhook => "WebhookFunction",
            Flow::Subscriptions => "SubscriptionsFunction",
            Flow::Reconcile => "ReconcileFunction",
            Flow::UsageIntake => "UsageIntakeFunction",
            Flow::Metering => "MeteringFunction",
            Flow::EventsRelay => "EventsRelayFunction",
        }
    }

    fn event_file(self) -> &'static str {
        match self {
            Flow::Landing => "landing/purchase.json",
            Flow::Activate => "activate/admin.json",
            Flow::Webhook => "webhook/change-quantity-customer.json",
            Flow::Subscriptions => "subscriptions/get.json",
            Flow::Reconcile => "reconcile/scheduled.json",
            Flow::UsageIntake => "usage-intake/sqs-batch.json",
            Flow::Metering => "metering/scheduled.json",
            Flow::EventsRelay => "events-relay/purchase-and-activation.json",
        }
    }

    /// The stack a flow runs on: the lifecycle events' bus (moto, `EVENTBRIDGE_ENDPOINT`) for
    /// the relay.
    pub fn options(self, dynamodb_endpoint: &str) -> Result<Options, BoxError> {
        let options = Options::new(dynamodb_endpoint);
        match self {
            Flow::EventsRelay => {
                let events = std::env::var("EVENTBRIDGE_ENDPOINT")
                    .map_err(|_| "EVENTBRIDGE_ENDPOINT is not set: the events relay is not measured")?;
                Ok(options.with_events(events))
            }
            _ => Ok(options),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Warm {
    pub function: String,
    pub event: String,
    pub invocations: usize,
    pub function_ms: Vec<f64>,
    pub floor_ms: Vec<f64>,
    pub peak_rss_kib: u64,
    /// DynamoDB's request units of one round's floor calls (the function's own calls), on average.
    pub units_per_round: Units,
    /// What one invocation handles: the reconciliation's page of subscriptions, the relay's
    /// events; 1 for the others.
    pub handled_per_round: usize,
    /// The function's memory in template.yaml (MB).
    pub memory_mb: u32,
}

/// The event file with `subscription` in place of the one it names.
fn event(flow: Flow, subscription: &str) -> Result<Value, BoxError> {
    let path = root().join("events").join(flow.event_file());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text.replace(EVENT_SUBSCRIPTION, subscription))?)
}

/// A function's `MemorySize` in template.yaml (its own, or the global one).
pub fn memory_of(logical_id: &str) -> u32 {
    let own = local_stack::table::resource_properties(logical_id).get("MemorySize").and_then(|m| m.as_u64());
    let global = local_stack::table::template()["Globals"]["Function"]["MemorySize"].as_u64();
    own.or(global).and_then(|mb| u32::try_from(mb).ok()).unwrap_or(128)
}

fn partition(subscription: &str) -> String {
    format!("SUB#{subscription}")
}

fn floor_partition(subscription: &str) -> String {
    format!("FLOOR#{subscription}")
}

/// A put of a usage item into the floor's partition, on `condition` (over `#state`, with these
/// `:name` values).
fn usage_put(
    item: &Item,
    floor_pk: &str,
    condition: &str,
    values: &[(&str, &str)],
) -> Result<Write, BoxError> {
    let mut item = item.clone();
    item.insert("pk".into(), crate::floor_plan::s(floor_pk));
    let names =
        if condition.contains("#state") { vec![("#state".into(), "state".into())] } else { Vec::new() };
    let values: serde_json::Map<String, Value> =
        values.iter().map(|(name, value)| (format!(":{name}"), json!({ "S": value }))).collect();
    Ok(Write {
        table: Table::Usage,
        item: item_json(&item),
        update: None,
        condition: condition.into(),
        names,
        values: if values.is_empty() { Value::Null } else { Value::Object(values) },
    })
}

/// The events relay's publishing of a stream batch: the lifecycle events its records make, in
/// the relay's groups (one event per subscription at most), each group one PutEvents on `bus`.
fn relay_groups(event: &[u8], bus: &str) -> Result<Vec<Vec<BusEntry>>, BoxError> {
    let batch: StreamBatch = serde_json::from_slice(event)?;
    let events = fulfillment::events::relay::events_of(&batch).events;
    let mut groups = Vec::new();
    let mut pending = &events[..];
    while !pending.is_empty() {
        let size = fulfillment::events::relay::group_size(pending);
        let entries = pending[..size]
            .iter()
            .map(|(_, event)| {
                Ok(BusEntry {
                    bus: bus.to_owned(),
                    source: fulfillment::events::EVENT_SOURCE.into(),
                    detail_type: event.event_type.as_str().into(),
                    detail: serde_json::to_string(event)?,
                })
            })
            .collect::<Result<Vec<_>, BoxError>>()?;
        groups.push(entries);
        pending = &pending[size..];
    }
    if groups.is_empty() {
        return Err("the relay's event holds no lifecycle event".into());
    }
    Ok(groups)
}

/// The report added to its hour in the floor's partition, as the store adds it: an update of the
/// hour (its fields set where new, the quantity and count added), with the values the function's
/// report wrote (`key_item`: the report's key; `hour_item`: its hour after).
fn usage_added(key_item: &Item, hour_item: &Item, floor_pk: &str) -> Result<Write, BoxError> {
    let field = |item: &Item, name: &str| {
        item.get(name).cloned().ok_or_else(|| BoxError::from(format!("the usage item has no {name}")))
    };
    let values: Item = [
        (":id", field(hour_item, "subscriptionId")?),
        (":dimension", field(hour_item, "dimension")?),
        (":hour", field(hour_item, "hour")?),
        (":plan", field(hour_item, "planId")?),
        (":open", crate::floor_plan::s("open")),
        (":unsettled", field(hour_item, layout::UNSETTLED_KEY)?),
        (":now", field(hour_item, "updatedAt")?),
        (":quantity", field(key_item, "quantity")?),
        (":one", aws_sdk_dynamodb::types::AttributeValue::N("1".into())),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let sk = field(hour_item, "sk")?;
    let key = json!({ "pk": { "S": floor_pk }, "sk": { "S": sk.as_s().map_err(|_| "the hour's sk is a string")? } });
    Ok(Write {
        table: Table::Usage,
        item: key,
        update: Some(ADD_TO_HOUR.into()),
        condition: ADD_TO_HOUR_CONDITION.into(),
        names: [
            ("#dimension", "dimension"),
            ("#hour", "hour"),
            ("#state", "state"),
            ("#unsettled", layout::UNSETTLED_KEY),
        ]
        .into_iter()
        .map(|(name, attribute)| (name.to_owned(), attribute.to_owned()))
        .collect(),
        values: item_json(&values),
    })
}

/// `count` subscriptions of the metered plan, Subscribed at Microsoft and in our records.
async fn seed_metered(stack: &LocalStack, count: usize) -> Result<Vec<String>, BoxError> {
    Ok(crate::metering::seed(stack, count).await?.iter().map(ToString::to_string).collect())
}

/// The status code of an API Gateway answer.
fn status_of(answer: &[u8]) -> u16 {
    serde_json::from_slice::<Value>(answer)
        .ok()
        .and_then(|v| v["statusCode"].as_u64())
        .and_then(|code| u16::try_from(code).ok())
        .unwrap_or(0)
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A Marketplace call as the emulator logged it, with ids taken out, to compare sequences.
fn shape(method: &str, path: &str, query: &str) -> String {
    let path: Vec<&str> = path
        .split('/')
        .map(|segment| if segment.len() >= 32 && segment.contains('-') { "{id}" } else { segment })
        .collect();
    let mut names: Vec<&str> =
        query.split('&').filter_map(|pair| pair.split('=').next()).filter(|n| !n.is_empty()).collect();
    names.sort_unstable();
    format!("{method} {}?{}", path.join("/"), names.join("&"))
}

pub(crate) struct Bench<'a> {
    pub(crate) flow: Flow,
    pub(crate) stack: &'a LocalStack,
    pub(crate) floor: Floor,
    /// Counts the request units of the floor's calls.
    pub(crate) capacity: CapacityMeter,
    /// The reconciliation's page: the partitions of the subscriptions seeded at set-up.
    reconciled: std::sync::OnceLock<Vec<String>>,
}

/// What one round prepared: the event, and what the floor needs.
pub(crate) struct Round {
    pub(crate) event: Vec<u8>,
    expect: u16,
    subscription: String,
    /// The floor's own subscription, where it changes Microsoft's side too.
    floor_subscription: String,
    floor_operation: String,
    token: String,
    quantity: u32,
    /// The usage report's key (the intake), or the hour's sort key (metering).
    usage_sk: String,
    /// When the round was ready, just before the function is invoked (the metering run's clock).
    at: chrono::DateTime<chrono::Utc>,
    before: HashMap<String, Item>,
}

impl<'a> Bench<'a> {
    pub(crate) async fn new(
        flow: Flow,
        stack: &'a LocalStack,
        dynamodb_endpoint: &str,
    ) -> Result<Self, BoxError> {
        let mut floor = Floor::new(stack, dynamodb_endpoint).await?;
        let capacity = CapacityMeter::default();
        floor.dynamodb = capacity.attach(&floor.dynamodb);
        if let Some(endpoint) = stack.environment.get("EVENTBRIDGE_ENDPOINT") {
            let aws = fulfillment::aws::AwsClients::new(stack.environment.aws()?)?;
            floor.events = Some(aws.eventbridge(Some(&endpoint)));
        }
        Ok(Self { flow, stack, floor, capacity, reconciled: std::sync::OnceLock::new() })
    }

    async fn purchase(&self) -> Purchased {
        self.stack.emulator.purchase(Purchase::plan(PLAN).quantity(5)).await
    }

    /// Activates in process (set-up, not measured): Microsoft's side and our record.
    async fn activated(&self) -> Result<String, BoxError> {
        let id = self.purchase().await.subscription_id;
        let request = lambda_http::request::from_str(&event(Flow::Activate, &id)?.to_string())?;
        let answer = self.stack.functions.activate.handle(request).await;
        if answer.status() != 200 {
            return Err(format!("set-up activation of {id}: {}", answer.status()).into());
        }
        Ok(id)
    }

    /// The subscription every round of a flow works on, where they share one.
    pub(crate) async fn set_up(&self) -> Result<(String, String), BoxError> {
        match self.flow {
            Flow::Webhook => {
                // Deliveries come from the benchmark, not from the emulator.
                self.stack
                    .emulator
                    .webhook_faults(WebhookFaults { drop: true, ..WebhookFaults::default() })
                    .await;
                let (ours, floors) = (self.activated().await?, self.activated().await?);
                let items = self.floor.partition(&partition(&ours)).await?;
                self.floor.put_all(copied(&items, &floor_partition(&ours))).await?;
                Ok((ours, floors))
            }
            Flow::Subscriptions => Ok((self.activated().await?, String::new())),
            Flow::Reconcile => {
                let listed: Vec<Value> = (0..RECONCILED)
                    .map(|_| json!({ "id": uuid::Uuid::new_v4().to_string(), "offerId": "contoso-saas", "planId": PLAN, "quantity": 10, "saasSubscriptionStatus": "Subscribed" }))
                    .collect();
                let partitions = listed.iter().filter_map(|s| s["id"].as_str().map(partition)).collect();
                self.reconciled.set(partitions).map_err(|_| "set up twice")?;
                self.stack.emulator.seed(listed).await;
                let pass = self.stack.functions.reconcile.reconciler.pass("bench-set-up").await;
                if !pass.complete || pass.added != RECONCILED as u64 {
                    return Err(format!("set-up reconciliation: {pass:?}").into());
                }
                Ok((String::new(), String::new()))
            }
            Flow::UsageIntake => Ok((seed_metered(self.stack, 1).await?.remove(0), String::new())),
            Flow::Landing | Flow::Activate | Flow::Metering | Flow::EventsRelay => {
                Ok((String::new(), String::new()))
            }
        }
    }

    pub(crate) async fn prepare(&self, round: usize, shared: &(String, String)) -> Result<Round, BoxError> {
        let mut prepared = Round {
            event: Vec::new(),
            expect: 200,
            subscription: shared.0.clone(),
            floor_subscription: shared.1.clone(),
            floor_operation: String::new(),
            token: String::new(),
            quantity: 0,
            usage_sk: String::new(),
            at: chrono::Utc::now(),
            before: HashMap::new(),
        };
        let mut event = match self.flow {
            Flow::Landing => {
                let purchased = self.purchase().await;
                prepared.subscription = purchased.subscription_id;
                prepared.token = purchased.token;
                let mut event = event(self.flow, &prepared.subscription)?;
                let encoded: String =
                    url::form_urlencoded::byte_serialize(prepared.token.as_bytes()).collect();
                event["rawQueryString"] = json!(format!("token={encoded}"));
                event
            }
            Flow::Activate => {
                prepared.subscription = self.purchase().await.subscription_id;
                prepared.floor_subscription = self.purchase().await.subscription_id;
                event(self.flow, &prepared.subscription)?
            }
            Flow::Webhook => {
                // The customer changes seats on both subscriptions; ours is delivered to the function.
                prepared.quantity = 6 + (round % 2) as u32;
                let emulator = &self.stack.emulator;
                let operation = emulator.change_quantity(&prepared.subscription, prepared.quantity).await?;
                let floors =
                    emulator.change_quantity(&prepared.floor_subscription, prepared.quantity).await?;
                prepared.floor_operation = floors.operation_id;
                prepared.before = self.floor.partition(&partition(&prepared.subscription)).await?;
                let mut event = event(self.flow, &prepared.subscription)?;
                let mut body: Value = serde_json::from_str(event["body"].as_str().ok_or("a body")?)?;
                body["id"] = json!(operation.operation_id);
                body["quantity"] = json!(prepared.quantity);
                body["timeStamp"] = json!(chrono::Utc::now().to_rfc3339());
                event["body"] = json!(body.to_string());
                let jwt = emulator.sign_jwt(&emulator.webhook_claims());
                event["headers"]["authorization"] = json!(format!("Bearer {jwt}"));
                event
            }
            Flow::UsageIntake => {
                // One message of one report, under a key of its own.
                prepared.usage_sk = layout::usage_key(&format!("bench-{round}-{}", uuid::Uuid::new_v4()));
                let mut event = event(self.flow, &prepared.subscription)?;
                let records = event["Records"].as_array_mut().ok_or("Records")?;
                records.truncate(1);
                let report = json!({
                    "subscriptionId": prepared.subscription,
                    "dimension": METERED_DIMENSION,
                    "quantity": 1 + round % 5,
                    "time": chrono::Utc::now().to_rfc3339(),
                    "key": &prepared.usage_sk[layout::USAGE_KEY_PREFIX.len()..],
                });
                records[0]["body"] = json!(report.to_string());
                event
            }
            Flow::Metering => {
                // Usage of a new subscription in the hour the run sends (ended 10 minutes ago or
                // more), and the floor's subscription at Microsoft.
                let mut ids = seed_metered(self.stack, 2).await?;
                prepared.floor_subscription = ids.remove(1);
                prepared.subscription = ids.remove(0);
                let now = chrono::Utc::now();
                let id = SubscriptionId::parse(&prepared.subscription).ok_or("a subscription id")?;
                let report = UsageReport {
                    subscription_id: id,
                    dimension: METERED_DIMENSION.into(),
                    quantity: 3.0,
                    at: now - chrono::Duration::minutes(70),
                    key: format!("bench-{round}"),
                };
                let plan = PlanId::parse(METERED_PLAN).ok_or("a plan id")?;
                let hour = hour_of(report.at);
                self.stack.store.add_usage_to(&report, hour, &plan, now).await?;
                prepared.usage_sk = layout::usage(hour, METERED_DIMENSION);
                let open = self
                    .floor
                    .get_item_in(Table::Usage, &partition(&prepared.subscription), &prepared.usage_sk)
                    .await?
                    .ok_or("the usage hour was not written")?;
                prepared.before.insert(prepared.usage_sk.clone(), open);
                let mut event = event(self.flow, &prepared.subscription)?;
                event["id"] = json!(uuid::Uuid::new_v4().to_string());
                event
            }
            Flow::EventsRelay => {
                // The bus's queue emptied (moto slows as it fills), then a batch of a new subscription.
                self.stack.discard_events().await?;
                event(self.flow, &uuid::Uuid::new_v4().to_string())?
            }
            Flow::Subscriptions | Flow::Reconcile => event(self.flow, &prepared.subscription)?,
        };
        if let Flow::Reconcile | Flow::Metering = self.flow {
            event["time"] = json!(chrono::Utc::now().to_rfc3339());
        }
        if let Flow::Reconcile | Flow::UsageIntake | Flow::Metering | Flow::EventsRelay = self.flow {
            prepared.expect = 0;
        }
        prepared.event = serde_json::to_vec(&event)?;
        prepared.at = chrono::Utc::now();
        Ok(prepared)
    }

    /// The function answered as the round expects.
    pub(crate) fn check(&self, round: &Round, answer: &[u8]) -> Result<(), BoxError> {
        if round.expect != 0 && status_of(answer) != round.expect {
            return Err(format!("{}: {}", self.flow.function(), String::from_utf8_lossy(answer)).into());
        }
        if let Flow::Reconcile = self.flow {
            let report: Value = serde_json::from_slice(answer)?;
            if report["pass"]["complete"] != true || report["pass"]["unchanged"] != RECONCILED {
                return Err(format!("reconcile: {report}").into());
            }
        }
        let answer = || serde_json::from_slice::<Value>(answer);
        match self.flow {
            Flow::UsageIntake => {
                let intake = answer()?;
                if intake["batchItemFailures"] != json!([]) {
                    return Err(format!("usage-intake: {intake}").into());
                }
            }
            Flow::Metering => {
                let run = answer()?;
                if run["hours"] != 1 || run["accepted"] != 1 || run["storeErrors"] != 0 {
                    return Err(format!("metering: {run}").into());
                }
            }
            Flow::EventsRelay => {
                let relayed = answer()?;
                if relayed["batchItemFailures"] != json!([]) {
                    return Err(format!("events-relay: {relayed}").into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The floor's calls for a round, once the function answered: the function's Marketplace
    /// calls, its reads, and its writes again (read here, before any clock starts), on the floor's
    /// own subscription and partition where it changes anything.
    /// `first`: the function's first request since it started (the intake lists the plan's
    /// dimensions then, and keeps them).
    pub(crate) async fn floor_calls(&self, round: &Round, first: bool) -> Result<Vec<Call>, BoxError> {
        let (ours, theirs) = (&round.subscription, &round.floor_subscription);
        let after = match self.flow {
            Flow::Landing | Flow::Activate | Flow::Webhook => self.floor.partition(&partition(ours)).await?,
            _ => HashMap::new(),
        };
        let puts = Call::put_all(&written(&round.before, &after, &floor_partition(ours)));
        let state = Call::GetItem { pk: floor_partition(ours), sk: STATE.into() };
        let plans = |id: &str| Call::Marketplace {
            method: "GET".into(),
            path: format!("/saas/subscriptions/{id}/listAvailablePlans"),
            query: vec![("planId".into(), PLAN.into())],
            headers: Vec::new(),
            body: None,
        };
        Ok(match self.flow {
            Flow::Landing => vec![
                Call::Marketplace {
                    method: "POST".into(),
                    path: "/saas/subscriptions/resolve".into(),
                    query: Vec::new(),
                    headers: vec![("x-ms-marketplace-token".into(), round.token.clone())],
                    body: None,
                },
                state,
                puts,
                plans(ours),
            ],
            Flow::Activate => {
                let path = format!("/saas/subscriptions/{theirs}");
                let body = json!({ "planId": PLAN, "quantity": 5 });
                vec![
                    Call::marketplace("GET", &path, None),
                    Call::marketplace("POST", &format!("{path}/activate"), Some(body)),
                    Call::marketplace("GET", &path, None),
                    state,
                    puts,
                    plans(theirs),
                ]
            }
            Flow::Webhook => {
                let operation = format!("/saas/subscriptions/{theirs}/operations/{}", round.floor_operation);
                vec![
                    Call::GetItem { pk: floor_partition(ours), sk: format!("OP#{}", round.floor_operation) },
                    Call::marketplace("GET", &operation, None),
                    state,
                    puts,
                    Call::marketplace("PATCH", &operation, Some(json!({ "status": "Success" }))),
                ]
            }
            Flow::Subscriptions => vec![
                Call::GetItem { pk: partition(ours), sk: STATE.into() },
                Call::Query {
                    table: Table::Subscriptions,
                    index: None,
                    pk: partition(ours),
                    prefix: Some("EVENT#".into()),
                },
            ],
            Flow::Reconcile => {
                // The page lists the subscriptions seeded at set-up, and no other.
                let partitions = self.reconciled.get().ok_or("the reconciliation is not set up")?.clone();
                let keys = partitions.into_iter().map(|pk| (pk, STATE.to_owned())).collect();
                vec![
                    Call::marketplace("GET", "/saas/subscriptions", None),
                    Call::BatchGet { table: Table::Subscriptions, keys },
                ]
            }
            Flow::UsageIntake => {
                // The report's key and its hour, as the function wrote them, put in the floor's
                // partition in one transaction, on the same conditions.
                let ours_pk = partition(ours);
                let written = |sk: String| {
                    let pk = ours_pk.clone();
                    async move { self.floor.get_item_in(Table::Usage, &pk, &sk).await }
                };
                let key_item = written(round.usage_sk.clone()).await?.ok_or(
                    "the intake did not take the report (refused? see target/bench/logs/usage-intake.log)",
                )?;
                let hour_sk = key_item
                    .get("hour")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .map(|at| layout::usage(at.with_timezone(&chrono::Utc), METERED_DIMENSION))
                    .ok_or("the report's key has no hour")?;
                let hour_item = written(hour_sk).await?.ok_or("the report's hour was not written")?;
                let floors = floor_partition(ours);
                let mut calls = vec![Call::GetItem { pk: partition(ours), sk: STATE.into() }];
                if first {
                    calls.push(plans(ours));
                    if let Call::Marketplace { query, .. } = calls.last_mut().ok_or("a call")? {
                        *query = vec![("planId".into(), METERED_PLAN.into())];
                    }
                }
                calls.push(Call::Transact(vec![
                    usage_put(&key_item, &floors, "attribute_not_exists(pk)", &[])?,
                    usage_added(&key_item, &hour_item, &floors)?,
                ]));
                calls
            }
            Flow::Metering => self.metering_calls(round).await?,
            Flow::EventsRelay => {
                let bus = self.stack.environment.get("EVENT_BUS_NAME").ok_or("EVENT_BUS_NAME")?;
                relay_groups(&round.event, &bus)?.into_iter().map(Call::PutEvents).collect()
            }
        })
    }

    /// The emission run's calls, on the floor's own hour (put here, once the function settled
    /// its own, so that neither run finds the other's): the unsettled index read for every hour
    /// the run looks at, the hour found read, closed, the subscription's plan read, the hour sent
    /// to Microsoft (for the floor's subscription) and its answer recorded.
    async fn metering_calls(&self, round: &Round) -> Result<Vec<Call>, BoxError> {
        let ours = &round.subscription;
        let floors = floor_partition(ours);
        let open = round.before.get(&round.usage_sk).ok_or("the hour before the run")?;
        let settled = self
            .floor
            .get_item_in(Table::Usage, &partition(ours), &round.usage_sk)
            .await?
            .ok_or("the hour after the run")?;
        if settled.contains_key(layout::UNSETTLED_KEY) {
            return Err("the metering run left its hour unsettled".into());
        }
        self.floor.write(&usage_put(open, &floors, "attribute_not_exists(pk)", &[])?).await?;
        let hour_of_item = |item: &Item| -> Result<chrono::DateTime<chrono::Utc>, BoxError> {
            let at = item.get("hour").and_then(|v| v.as_s().ok()).ok_or("the hour's time")?;
            Ok(chrono::DateTime::parse_from_rfc3339(at)?.with_timezone(&chrono::Utc))
        };
        let sent_hour = hour_of_item(open)?;
        // As the emitter, on the clock of the function's run: from 48 hours back to the last hour
        // ended 10 minutes ago or more, each hour's index read, the hour it finds read and closed.
        let now = round.at;
        let last = hour_of(now - chrono::Duration::minutes(10)) - chrono::Duration::hours(1);
        let mut hour = hour_of(now - chrono::Duration::hours(48));
        let mut calls = Vec::new();
        let index = Some((layout::UNSETTLED_INDEX.to_owned(), layout::UNSETTLED_KEY.to_owned()));
        while hour <= last {
            calls.push(Call::Query {
                table: Table::Usage,
                index: index.clone(),
                pk: layout::hour(hour),
                prefix: None,
            });
            if hour == sent_hour {
                calls.push(Call::BatchGet {
                    table: Table::Usage,
                    keys: vec![(floors.clone(), round.usage_sk.clone())],
                });
                calls.push(Call::Write(Write {
                    table: Table::Usage,
                    item: json!({ "pk": { "S": floors }, "sk": { "S": round.usage_sk } }),
                    update: Some(CLOSE_HOUR.into()),
                    condition: "#state = :open".into(),
                    names: vec![("#state".to_owned(), "state".to_owned())],
                    values: json!({
                        ":sending": { "S": "sending" },
                        ":open": { "S": "open" },
                        ":zero": { "N": "0" },
                        ":now": { "S": now.to_rfc3339() },
                    }),
                }));
            }
            hour += chrono::Duration::hours(1);
        }
        if !calls.iter().any(|call| matches!(call, Call::Write(_))) {
            return Err(format!("the hour {sent_hour} is not among those the run looks at").into());
        }
        calls.push(Call::BatchGet {
            table: Table::Subscriptions,
            keys: vec![(partition(ours), STATE.to_owned())],
        });
        let event = UsageEvent {
            resource_id: SubscriptionId::parse(&round.floor_subscription)
                .ok_or("the floor's subscription")?,
            quantity: 3.0,
            dimension: METERED_DIMENSION.into(),
            effective_start_time: sent_hour,
            plan_id: PlanId::parse(METERED_PLAN).ok_or("a plan id")?,
        };
        calls.push(Call::marketplace("POST", "/batchUsageEvent", Some(json!({ "request": [event] }))));
        calls.push(Call::Write(usage_put(
            &settled,
            &floors,
            "#state = :sending",
            &[("sending", "sending")],
        )?));
        Ok(calls)
    }

    /// Checks the function's answer; then times the floor's calls for the same round, and counts
    /// their request units.
    pub(crate) async fn floor(
        &self,
        round: &Round,
        answer: &[u8],
        first: bool,
    ) -> Result<(Duration, Units), BoxError> {
        self.check(round, answer)?;
        let calls = self.floor_calls(round, first).await?;
        let units = self.capacity.units();
        let started = Instant::now();
        self.floor.run(&calls).await?;
        Ok((started.elapsed(), self.capacity.units() - units))
    }
}

/// Runs `invocations` rounds of `flow` on a fresh stack and a started `bootstrap`.
pub async fn run(
    api: &RuntimeApi,
    dynamodb_endpoint: &str,
    flow: Flow,
    invocations: usize,
) -> Result<Warm, BoxError> {
    let stack = LocalStack::start(flow.options(dynamodb_endpoint)?).await?;
    let bench = Bench::new(flow, &stack, dynamodb_endpoint).await?;
    let shared = bench.set_up().await?;
    let function = Bootstrap::start(api, flow.function(), &stack.environment).await?;
    let mut warm = Warm {
        function: flow.function().into(),
        event: flow.event_file().into(),
        invocations,
        handled_per_round: match flow {
            Flow::Reconcile => RECONCILED,
            Flow::EventsRelay => {
                relay_groups(&event(flow, EVENT_SUBSCRIPTION)?.to_string().into_bytes(), "")?
                    .iter()
                    .map(Vec::len)
                    .sum()
            }
            _ => 1,
        },
        memory_mb: memory_of(flow.logical_id()),
        ..Warm::default()
    };
    let mut total_units = Units::default();
    // One invocation first, so every measured one is warm (the token and keys are fetched).
    let first = bench.prepare(0, &shared).await?;
    let answer = function.invoke(api, &first.event).await?;
    bench.floor(&first, &answer.body, true).await?;

    for round in 1..=invocations {
        let prepared = bench.prepare(round, &shared).await?;
        // The first rounds check that the floor asks Microsoft exactly what the function asked.
        let checked = round <= 3;
        let logged = if checked { stack.emulator.requests().await.len() } else { 0 };
        let started = Instant::now();
        let answer = function.invoke(api, &prepared.event).await?;
        warm.function_ms.push(ms(answer.at - started));
        let by_function = if checked { stack.emulator.requests().await.len() } else { 0 };
        let (floor_took, units) = bench.floor(&prepared, &answer.body, false).await?;
        warm.floor_ms.push(ms(floor_took));
        total_units = total_units + units;
        if checked {
            let requests = stack.emulator.requests().await;
            let shapes = |range: std::ops::Range<usize>| -> Vec<String> {
                requests[range].iter().map(|r| shape(&r.method, &r.path, &r.query)).collect()
            };
            let (ours, floors) = (shapes(logged..by_function), shapes(by_function..requests.len()));
            if ours != floors {
                return Err(format!(
                    "{}: the floor's calls {floors:?} differ from the function's {ours:?}",
                    flow.function()
                )
                .into());
            }
        }
    }
    warm.peak_rss_kib = function.peak_rss_kib();
    let rounds = invocations.max(1) as f64;
    warm.units_per_round = Units { read: total_units.read / rounds, write: total_units.write / rounds };
    function.stop().await;
    crate::drop_table(&stack, dynamodb_endpoint).await?;
    Ok(warm)
}
