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
use crate::floor_plan::Call;
use crate::runtime_api::RuntimeApi;

/// The subscription the event files name; each round puts its own in its place.
const EVENT_SUBSCRIPTION: &str = "e7e70000-0000-4000-8000-0000000e7e70";
const PLAN: &str = "team-monthly";
/// Subscriptions the reconciliation finds, all in agreement (one page).
const RECONCILED: usize = 100;

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
}

impl Flow {
    pub const ALL: [Flow; 5] =
        [Flow::Landing, Flow::Activate, Flow::Webhook, Flow::Subscriptions, Flow::Reconcile];

    pub fn function(self) -> &'static str {
        match self {
            Flow::Landing => "landing",
            Flow::Activate => "activate",
            Flow::Webhook => "webhook",
            Flow::Subscriptions => "subscriptions",
            Flow::Reconcile => "reconcile",
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
        }
    }

    fn event_file(self) -> &'static str {
        match self {
            Flow::Landing => "landing/purchase.json",
            Flow::Activate => "activate/admin.json",
            Flow::Webhook => "webhook/change-quantity-customer.json",
            Flow::Subscriptions => "subscriptions/get.json",
            Flow::Reconcile => "reconcile/scheduled.json",
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
    /// Subscriptions one invocation handles (the reconciliation's page; 1 for the others).
    pub subscriptions_per_round: usize,
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
            Flow::Landing | Flow::Activate => Ok((String::new(), String::new())),
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
            Flow::Subscriptions | Flow::Reconcile => event(self.flow, &prepared.subscription)?,
        };
        if let Flow::Reconcile = self.flow {
            prepared.expect = 0;
            event["time"] = json!(chrono::Utc::now().to_rfc3339());
        }
        prepared.event = serde_json::to_vec(&event)?;
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
        Ok(())
    }

    /// The floor's calls for a round, once the function answered: the function's Marketplace
    /// calls, its reads, and its writes again (read here, before any clock starts), on the floor's
    /// own subscription and partition where it changes anything.
    pub(crate) async fn floor_calls(&self, round: &Round) -> Result<Vec<Call>, BoxError> {
        let (ours, theirs) = (&round.subscription, &round.floor_subscription);
        let after = match self.flow {
            Flow::Landing | Flow::Activate | Flow::Webhook => self.floor.partition(&partition(ours)).await?,
            Flow::Subscriptions | Flow::Reconcile => HashMap::new(),
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
                Call::Query { pk: partition(ours), prefix: Some("EVENT#".into()) },
            ],
            Flow::Reconcile => {
                // The page lists the subscriptions seeded at set-up, and no other.
                let partitions = self.reconciled.get().ok_or("the reconciliation is not set up")?.clone();
                vec![Call::marketplace("GET", "/saas/subscriptions", None), Call::BatchGet { partitions }]
            }
        })
    }

    /// Checks the function's answer; then times the floor's calls for the same round, and counts
    /// their request units.
    pub(crate) async fn floor(&self, round: &Round, answer: &[u8]) -> Result<(Duration, Units), BoxError> {
        self.check(round, answer)?;
        let calls = self.floor_calls(round).await?;
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
    let stack = LocalStack::start(Options::new(dynamodb_endpoint)).await?;
    let bench = Bench::new(flow, &stack, dynamodb_endpoint).await?;
    let shared = bench.set_up().await?;
    let function = Bootstrap::start(api, flow.function(), &stack.environment).await?;
    let mut warm = Warm {
        function: flow.function().into(),
        event: flow.event_file().into(),
        invocations,
        subscriptions_per_round: if let Flow::Reconcile = flow { RECONCILED } else { 1 },
        memory_mb: memory_of(flow.logical_id()),
        ..Warm::default()
    };
    let mut total_units = Units::default();
    // One invocation first, so every measured one is warm (the token and keys are fetched).
    let first = bench.prepare(0, &shared).await?;
    let answer = function.invoke(api, &first.event).await?;
    bench.floor(&first, &answer.body).await?;

    for round in 1..=invocations {
        let prepared = bench.prepare(round, &shared).await?;
        // The first rounds check that the floor asks Microsoft exactly what the function asked.
        let checked = round <= 3;
        let logged = if checked { stack.emulator.requests().await.len() } else { 0 };
        let started = Instant::now();
        let answer = function.invoke(api, &prepared.event).await?;
        warm.function_ms.push(ms(answer.at - started));
        let by_function = if checked { stack.emulator.requests().await.len() } else { 0 };
        let (floor_took, units) = bench.floor(&prepared, &answer.body).await?;
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
