//! A function's first request after idle, as Lambda would run it (issue 17): its `bootstrap`
//! started afresh in the CPU share Lambda gives each memory size ([`CpuQuota`]), with DynamoDB
//! Local, Secrets Manager and EventBridge (moto) and the emulator (Entra's token and keys, the
//! Marketplace API) behind TLS on loopback ([`local_stack::tls`]), so that every handshake is
//! paid as in AWS. Each start is timed from the process's start to its first request for work
//! (init), then through
//! its flow's first request (for the webhook, a customer's seat change delivered as Microsoft
//! delivers it: authenticate, fetch the keys and a token, confirm, write, acknowledge, answer),
//! then over warm ones; beside it, the floor process makes the same calls in the same share.

use std::time::Instant;

use fulfillment::config::{Environment, MARKETPLACE_SECRET, PAGES_SECRET, SECRETS, SecretKind};
use local_stack::LocalStack;
use local_stack::tls::{TestAuthority, TlsFront, backend_of};
use serde::Serialize;

use crate::bootstrap::{Bootstrap, BoxError, root};
use crate::floor::MARKETPLACE_RESOURCE;
use crate::floor_plan::{Fresh, Plan};
use crate::quota::CpuQuota;
use crate::runtime_api::RuntimeApi;
use crate::warm::{Bench, Flow, ms};

/// Memory sizes measured (MB).
pub const MEMORY_SIZES: [u32; 4] = [128, 256, 512, 1024];
/// Microsoft's window for answering a webhook.
const WEBHOOK_WINDOW_MS: f64 = 10_000.0;

#[derive(Debug, Default, Serialize)]
pub struct AfterIdle {
    pub function: String,
    pub memory_mb: u32,
    pub cpu_share: f64,
    /// From the process's start to its first request for work, per start.
    pub init_ms: Vec<f64>,
    /// The part of `init_ms` the warm-up took, per start (the functions that warm up).
    pub warm_up_ms: Vec<f64>,
    /// The first request, from hand-over to answer, per start.
    pub first_ms: Vec<f64>,
    /// Warm requests after the first, all starts together.
    pub warm_ms: Vec<f64>,
    /// The floor process in the same share: its start (its secrets read, its clients built), its
    /// first round (with a token, and Entra's keys for the webhook), its warm rounds.
    pub floor_init_ms: Vec<f64>,
    pub floor_first_ms: Vec<f64>,
    pub floor_warm_ms: Vec<f64>,
}

impl AfterIdle {
    /// The worst start's init and first request together, as a share of Microsoft's 10 s (the
    /// webhook's window).
    pub fn worst_window_share(&self) -> f64 {
        let worst = self.init_ms.iter().zip(&self.first_ms).map(|(i, f)| i + f).fold(0.0, f64::max);
        worst / WEBHOOK_WINDOW_MS
    }
}

/// The floor process (`idle_floor`, built beside the benchmark) in its own group of the same CPU
/// share: a fresh minimal client making the function's TLS connections and calls.
struct FloorProcess {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    answers: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// From its start to `ready` (its clients built).
    init_ms: f64,
}

impl FloorProcess {
    async fn start(
        quota: &CpuQuota,
        tls: &BehindTls,
        tables: &local_stack::table::TableNames,
    ) -> Result<Self, BoxError> {
        use tokio::io::AsyncBufReadExt;
        let program = std::env::current_exe()?.with_file_name("idle_floor");
        let setting = |name: &str| tls.environment.get(name).ok_or(format!("{name} is not set"));
        let mut command = quota.command(&program);
        command
            .env_clear()
            .env("FLOOR_API_BASE", setting("MARKETPLACE_API_BASE")?)
            .env("FLOOR_DYNAMODB_ENDPOINT", setting("DYNAMODB_ENDPOINT")?)
            .env("FLOOR_TABLE", &tables.subscriptions)
            .env("FLOOR_USAGE_TABLE", &tables.usage)
            .env("EXTRA_ROOT_CERTIFICATES", setting("EXTRA_ROOT_CERTIFICATES")?)
            .env("AWS_REGION", "us-east-1")
            .envs(tls.environment.get("EVENTBRIDGE_ENDPOINT").map(|url| ("FLOOR_EVENTBRIDGE_ENDPOINT", url)))
            .envs(tls.secrets.iter().filter(|(arns, _)| !arns.is_empty()).flat_map(|(arns, endpoint)| {
                [("FLOOR_SECRET_ARNS", arns.join(",")), ("FLOOR_SECRETSMANAGER_ENDPOINT", endpoint.clone())]
            }))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdin = child.stdin.take().ok_or("the floor's stdin")?;
        let stdout = child.stdout.take().ok_or("the floor's stdout")?;
        let mut answers = tokio::io::BufReader::new(stdout).lines();
        let ready = Self::answer(&mut answers).await?;
        if ready != "ready" {
            return Err(format!("the floor process said {ready:?}").into());
        }
        Ok(Self { child, stdin, answers, init_ms: ms(started.elapsed()) })
    }

    async fn answer(
        answers: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ) -> Result<String, BoxError> {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), answers.next_line())
            .await
            .map_err(|_| "the floor process did not answer within 60 s")??;
        line.ok_or_else(|| "the floor process ended".into())
    }

    /// The plan's calls, made by the floor process: how long they took (ms).
    async fn run(&mut self, plan: &Plan) -> Result<f64, BoxError> {
        use tokio::io::AsyncWriteExt;
        let mut line = serde_json::to_vec(plan)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        let answer = Self::answer(&mut self.answers).await?;
        answer.parse().map_err(|_| format!("the floor process: {answer}").into())
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What a fresh floor fetches first, as `flow`'s function does: a token for Microsoft's API and,
/// for the webhook, Entra's keys (`secret`: the client secret, which the floor has read at its
/// start where the function reads it); nothing for the admin reads, which call only DynamoDB, nor
/// for the events relay, which calls only EventBridge.
fn fresh(flow: Flow, environment: &Environment, secret: String) -> Result<Option<Fresh>, BoxError> {
    if let Flow::Subscriptions | Flow::EventsRelay = flow {
        return Ok(None);
    }
    let marketplace = Environment::from_pairs(
        environment
            .pairs()
            .chain([("ENTRA_CLIENT_SECRET", secret.as_str())])
            .filter(|(k, _)| *k != "MARKETPLACE_SECRET_ARN"),
    )
    .marketplace()?;
    let entra = &marketplace.entra;
    let keys_url = match flow {
        Flow::Webhook => Some(environment.webhook_token()?.jwks_url),
        _ => None,
    };
    Ok(Some(Fresh {
        keys_url,
        warm_connections: crate::bootstrap::WARMED_UP.contains(&flow.function()),
        token_url: entra.token_url().to_string(),
        form: vec![
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), entra.client_id.clone()),
            ("client_secret".into(), secret),
            ("scope".into(), format!("{MARKETPLACE_RESOURCE}/.default")),
        ],
    }))
}

/// The local services behind TLS, and the function's settings pointing at them.
struct BehindTls {
    environment: Environment,
    /// The secrets the function reads at start, in its order, when Secrets Manager is stood in
    /// for: their ARNs, and its endpoint.
    secrets: Option<(Vec<String>, String)>,
    _fronts: Vec<TlsFront>,
}

/// The secrets a flow's function reads at start, in its order, as the template gives them: every
/// function that calls Microsoft reads the credentials'; the landing page and the confirmation,
/// the pages' too; the events relay, none.
fn secrets_of(flow: Flow) -> Vec<SecretKind> {
    match flow {
        Flow::Landing | Flow::Activate => vec![MARKETPLACE_SECRET, PAGES_SECRET],
        Flow::Webhook | Flow::Subscriptions | Flow::Reconcile | Flow::UsageIntake | Flow::Metering => {
            vec![MARKETPLACE_SECRET]
        }
        Flow::EventsRelay => Vec::new(),
    }
}

/// A secret in the local Secrets Manager (moto) holding those of `fields` the stack sets; its ARN.
async fn create_secret(stack: &LocalStack, endpoint: &str, fields: &[&str]) -> Result<String, BoxError> {
    let aws = fulfillment::aws::AwsClients::new(stack.environment.aws()?)?;
    let held: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .filter_map(|name| stack.environment.get(name).map(|value| ((*name).to_owned(), value.into())))
        .collect();
    let created = aws
        .secrets_manager(Some(endpoint))
        .create_secret()
        .name(format!("bench-{}", uuid::Uuid::new_v4()))
        .secret_string(serde_json::Value::Object(held).to_string())
        .send()
        .await?;
    Ok(created.arn().ok_or("the created secret has no ARN")?.to_owned())
}

/// How far the services are from a function in AWS (round trips): `BENCH_RTT_MS`, three numbers
/// for Entra ID, the Marketplace API and AWS's own services (DynamoDB, Secrets Manager) in the
/// function's region; `0,0,0` is bare loopback.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RoundTrips {
    pub entra: std::time::Duration,
    pub marketplace: std::time::Duration,
    pub aws: std::time::Duration,
}

/// Our assumption: Entra's sign-in host at an edge near the region, Microsoft's Marketplace API
/// farther, AWS's services in the region.
pub const DEFAULT_RTT_MS: &str = "10,30,1";

impl RoundTrips {
    pub fn from_env() -> Result<Self, BoxError> {
        let text = std::env::var("BENCH_RTT_MS").unwrap_or_else(|_| DEFAULT_RTT_MS.into());
        let ms: Vec<u64> = text.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>()?;
        let [entra, marketplace, aws] = ms[..] else {
            return Err(
                format!("BENCH_RTT_MS: three numbers (Entra, Marketplace API, AWS), not {text:?}").into()
            );
        };
        let d = std::time::Duration::from_millis;
        Ok(Self { entra: d(entra), marketplace: d(marketplace), aws: d(aws) })
    }
}

/// Entra and the Marketplace API (both played by the emulator) each behind a front of its own, as
/// they are two hosts in AWS: a client opens a connection to each. With `secrets_endpoint` (moto),
/// `flow`'s secrets are in Secrets Manager behind its own front, read at start as in AWS.
async fn behind_tls(
    stack: &LocalStack,
    flow: Flow,
    dynamodb_endpoint: &str,
    secrets_endpoint: Option<&str>,
) -> Result<BehindTls, BoxError> {
    let authority = TestAuthority::new()?;
    let ca = authority.write_ca(&root().join("target/bench/tls"))?;
    let rtt = RoundTrips::from_env()?;
    let entra = authority.front_at(backend_of(&stack.emulator.url())?, rtt.entra).await?;
    let emulator = authority.front_at(backend_of(&stack.emulator.url())?, rtt.marketplace).await?;
    let dynamodb = authority.front_at(backend_of(dynamodb_endpoint)?, rtt.aws).await?;
    let secrets = secrets_of(flow);
    let replaced = [
        "DYNAMODB_ENDPOINT",
        "ENTRA_AUTHORITY",
        "MARKETPLACE_API_BASE",
        "SECRETSMANAGER_ENDPOINT",
        "EVENTBRIDGE_ENDPOINT",
    ];
    // What any secret holds is left out of the environment where Secrets Manager is stood in for:
    // the function gets its own secrets' fields from them, and no other.
    let in_secrets =
        |name: &str| secrets_endpoint.is_some() && SECRETS.iter().any(|kind| kind.fields.contains(&name));
    let mut pairs: Vec<(String, String)> = stack
        .environment
        .pairs()
        .filter(|(name, _)| !replaced.contains(name) && !name.ends_with("_SECRET_ARN") && !in_secrets(name))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    pairs.extend([
        ("DYNAMODB_ENDPOINT".to_owned(), dynamodb.url()),
        ("ENTRA_AUTHORITY".to_owned(), format!("{}/entra", entra.url())),
        ("MARKETPLACE_API_BASE".to_owned(), format!("{}/api", emulator.url())),
        ("EXTRA_ROOT_CERTIFICATES".to_owned(), ca.display().to_string()),
    ]);
    let mut fronts = vec![entra, emulator, dynamodb];
    // EventBridge (moto) where the stack has the lifecycle events' bus: the relay's one service.
    if let Some(events) = stack.environment.get("EVENTBRIDGE_ENDPOINT") {
        let front = authority.front_at(backend_of(&events)?, rtt.aws).await?;
        pairs.push(("EVENTBRIDGE_ENDPOINT".to_owned(), front.url()));
        fronts.push(front);
    }
    let mut read = None;
    if let Some(endpoint) = secrets_endpoint {
        let front = authority.front_at(backend_of(endpoint)?, rtt.aws).await?;
        let mut arns = Vec::new();
        for kind in secrets {
            let arn = create_secret(stack, endpoint, kind.fields).await?;
            pairs.push((kind.variable.to_owned(), arn.clone()));
            arns.push(arn);
        }
        pairs.push(("SECRETSMANAGER_ENDPOINT".to_owned(), front.url()));
        read = Some((arns, front.url()));
        fronts.push(front);
    }
    Ok(BehindTls { environment: Environment::from_pairs(pairs), secrets: read, _fronts: fronts })
}

/// `starts` fresh starts of `flow`'s function at `memory_mb`, each with its first request and
/// then `warm` more.
pub async fn run(
    api: &RuntimeApi,
    dynamodb_endpoint: &str,
    secrets_endpoint: Option<&str>,
    flow: Flow,
    memory_mb: u32,
    starts: usize,
    warm: usize,
) -> Result<AfterIdle, BoxError> {
    let stack = LocalStack::start(flow.options(dynamodb_endpoint)?).await?;
    // The tables go whether the flow was measured or not: the next flow starts on a clean store.
    let stack = &stack;
    let measured = async {
        let tls = behind_tls(stack, flow, dynamodb_endpoint, secrets_endpoint).await?;
        let bench = Bench::new(flow, stack, dynamodb_endpoint).await?;
        let shared = bench.set_up().await?;
        let mut figures = AfterIdle {
            function: flow.function().into(),
            memory_mb,
            cpu_share: CpuQuota::share(memory_mb),
            ..AfterIdle::default()
        };
        let mut round = 0;
        let secret = stack.environment.get("ENTRA_CLIENT_SECRET").ok_or("ENTRA_CLIENT_SECRET is not set")?;
        let fresh = fresh(flow, &tls.environment, secret)?;
        for _ in 0..starts {
            // Groups of their own per start: each begins with its whole quota, as a new environment
            // does, not with what the previous start left of the period.
            let quota = CpuQuota::for_memory_as(memory_mb, flow.function())?;
            let floor_quota = CpuQuota::for_memory_as(memory_mb, "floor")?;
            let function = Bootstrap::start_in(api, flow.function(), &tls.environment, Some(&quota)).await?;
            figures.init_ms.push(ms(function.polled - function.started));
            figures.warm_up_ms.extend(function.warm_up_ms()?);
            let mut floor = FloorProcess::start(&floor_quota, &tls, &stack.tables).await?;
            figures.floor_init_ms.push(floor.init_ms);
            for delivery in 0..=warm {
                round += 1;
                let prepared = bench.prepare(round, &shared).await?;
                let handed = Instant::now();
                let answer = function.invoke(api, &prepared.event).await?;
                let took = ms(answer.at - handed);
                bench.check(&prepared, &answer.body)?;
                let calls = bench.floor_calls(&prepared, delivery == 0).await?;
                let plan = Plan { fresh: fresh.clone().filter(|_| delivery == 0), calls };
                let floor_took = floor.run(&plan).await?;
                if delivery == 0 {
                    figures.first_ms.push(took);
                    figures.floor_first_ms.push(floor_took);
                } else {
                    figures.warm_ms.push(took);
                    figures.floor_warm_ms.push(floor_took);
                }
            }
            floor.stop().await;
            function.stop().await;
        }
        Ok::<_, BoxError>(figures)
    }
    .await;
    crate::drop_table(stack, dynamodb_endpoint).await?;
    measured
}
