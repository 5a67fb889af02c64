//! The first webhook after idle, as Lambda would run it (issue 17): the webhook's `bootstrap`
//! started afresh in the CPU share Lambda gives each memory size ([`CpuQuota`]), with DynamoDB
//! Local and the emulator (Entra's token and keys, the Marketplace API) behind TLS on loopback
//! ([`local_stack::tls`]), so that every handshake is paid as in AWS. Each start is timed from
//! the process's start to its first request for work (init), then through a customer's seat
//! change delivered as Microsoft delivers it (authenticate, fetch the keys and a token,
//! confirm, write, acknowledge, answer), then over warm deliveries.

use std::time::Instant;

use fulfillment::config::Environment;
use local_stack::tls::{TestAuthority, TlsFront, backend_of};
use local_stack::{LocalStack, Options};
use serde::Serialize;

use crate::bootstrap::{Bootstrap, BoxError, root};
use crate::floor::Floor;
use crate::quota::CpuQuota;
use crate::runtime_api::RuntimeApi;
use crate::warm::{Bench, Flow, ms};

/// Memory sizes measured (MB).
pub const MEMORY_SIZES: [u32; 4] = [128, 256, 512, 1024];
/// Microsoft's window for answering a webhook.
const WEBHOOK_WINDOW_MS: f64 = 10_000.0;

#[derive(Debug, Default, Serialize)]
pub struct AfterIdle {
    pub memory_mb: u32,
    pub cpu_share: f64,
    /// From the process's start to its first request for work, per start.
    pub init_ms: Vec<f64>,
    /// The first delivery, from hand-over to answer, per start.
    pub first_ms: Vec<f64>,
    /// Warm deliveries after the first, all starts together.
    pub warm_ms: Vec<f64>,
}

impl AfterIdle {
    /// The worst start's init and first delivery together, as a share of Microsoft's 10 s.
    pub fn worst_window_share(&self) -> f64 {
        let worst = self.init_ms.iter().zip(&self.first_ms).map(|(i, f)| i + f).fold(0.0, f64::max);
        worst / WEBHOOK_WINDOW_MS
    }
}

/// The local services behind TLS, and the functions' settings pointing at them.
struct BehindTls {
    environment: Environment,
    _fronts: (TlsFront, TlsFront),
}

async fn behind_tls(stack: &LocalStack, dynamodb_endpoint: &str) -> Result<BehindTls, BoxError> {
    let authority = TestAuthority::new()?;
    let ca = authority.write_ca(&root().join("target/bench/tls"))?;
    let emulator = authority.front(backend_of(&stack.emulator.url())?).await?;
    let dynamodb = authority.front(backend_of(dynamodb_endpoint)?).await?;
    let replaced = ["DYNAMODB_ENDPOINT", "ENTRA_AUTHORITY", "MARKETPLACE_API_BASE"];
    let mut pairs: Vec<(String, String)> = stack
        .environment
        .pairs()
        .filter(|(name, _)| !replaced.contains(name))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    pairs.extend([
        ("DYNAMODB_ENDPOINT".to_owned(), dynamodb.url()),
        ("ENTRA_AUTHORITY".to_owned(), format!("{}/entra", emulator.url())),
        ("MARKETPLACE_API_BASE".to_owned(), format!("{}/api", emulator.url())),
        ("EXTRA_ROOT_CERTIFICATES".to_owned(), ca.display().to_string()),
    ]);
    Ok(BehindTls { environment: Environment::from_pairs(pairs), _fronts: (emulator, dynamodb) })
}

/// `starts` fresh starts of the webhook at `memory_mb`, each with its first delivery and then
/// `warm` more.
pub async fn run(
    api: &RuntimeApi,
    dynamodb_endpoint: &str,
    memory_mb: u32,
    starts: usize,
    warm: usize,
) -> Result<AfterIdle, BoxError> {
    let quota = CpuQuota::for_memory(memory_mb)?;
    let stack = LocalStack::start(Options::new(dynamodb_endpoint)).await?;
    let tls = behind_tls(&stack, dynamodb_endpoint).await?;
    let bench =
        Bench { flow: Flow::Webhook, floor: Floor::new(&stack, dynamodb_endpoint).await?, stack: &stack };
    let shared = bench.set_up().await?;
    let mut figures = AfterIdle { memory_mb, cpu_share: CpuQuota::share(memory_mb), ..AfterIdle::default() };
    let mut round = 0;
    for _ in 0..starts {
        let function = Bootstrap::start_in(api, "webhook", &tls.environment, Some(&quota)).await?;
        figures.init_ms.push(ms(function.polled - function.started));
        for delivery in 0..=warm {
            round += 1;
            let prepared = bench.prepare(round, &shared).await?;
            let handed = Instant::now();
            let answer = function.invoke(api, &prepared.event).await?;
            let took = ms(answer.at - handed);
            // The function's answer and writes are checked (the floor's timing is not used here).
            bench.floor(&prepared, &answer.body).await?;
            if delivery == 0 {
                figures.first_ms.push(took);
            } else {
                figures.warm_ms.push(took);
            }
        }
        function.stop().await;
    }
    crate::drop_table(&stack, dynamodb_endpoint).await?;
    Ok(figures)
}
