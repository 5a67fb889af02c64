//! The benchmark command (`scripts/bench`). Every function and a hello-world baseline are built
//! the way a deployment builds them (`cargo lambda build --release`), then measured in one run:
//!
//! - the deployment zip;
//! - cold start against a local Lambda Runtime API, in Lambda's CPU share of 128 MB (a cgroup per
//!   start, see [`quota`]): from starting `bootstrap` to its first request for work (the warm-up's
//!   part and the CPU time apart), and to its first answered invocation; median and worst of many
//!   starts, shuffled with the baseline's;
//! - warm latency of each function's main flow against its floor (see [`warm`]), and the peak
//!   resident memory over that run;
//! - the reconciliation of 1,000 and 10,000 subscriptions;
//! - metered billing: 100,000 usage reports taken, then one emission run (see [`metering`]);
//! - each flow's first request after idle, in the CPU share of each memory size, behind TLS with
//!   round trips, against its floor process (see [`idle`]); and the cost per million.
//!
//! It prints tables and writes the same figures to `target/bench/results.json`.

mod bootstrap;
mod capacity;
mod floor;
mod floor_plan;
mod idle;
mod metering;
mod quota;
mod runtime_api;
mod scale;
mod warm;

use std::time::Instant;

use bootstrap::{Bootstrap, BoxError, root};
use local_stack::{LocalStack, Options};
use runtime_api::RuntimeApi;
use serde::Serialize;

/// (binary, event file it is cold-started with: a cheap, valid request)
const FUNCTIONS: &[(&str, &str)] = &[
    ("hello", "landing/token-missing.json"),
    ("landing", "landing/token-missing.json"),
    ("activate", "activate/get.json"),
    ("webhook", "webhook/bad-no-authorization.json"),
    ("subscriptions", "subscriptions/bad-without-iam.json"),
    ("reconcile", "reconcile/scheduled.json"),
    ("metering", "metering/scheduled.json"),
    ("usage-intake", "usage-intake/bad-body.json"),
    // Started only with a local EventBridge (EVENTBRIDGE_ENDPOINT): it publishes the events.
    (EVENTS_RELAY, "events-relay/purchase-and-activation.json"),
];
const EVENTS_RELAY: &str = "events-relay";

#[derive(Debug, Default, Serialize)]
struct Cold {
    function: String,
    zip_bytes: u64,
    /// The arm64 zip's, where `BENCH_ARM64=1` built it.
    arm64_zip_bytes: Option<u64>,
    first_poll_ms: Vec<f64>,
    /// The part of `first_poll_ms` its warm-up took, per start (the functions that warm up).
    warm_up_ms: Vec<f64>,
    /// The CPU time used until the first request for work, per start (under a quota).
    init_cpu_ms: Vec<f64>,
    first_answer_ms: Vec<f64>,
    peak_rss_kib: u64,
}

impl Cold {
    /// Its start without the warm-up, per start: the part to compare with hello-world, which has
    /// nothing to warm up (the warm-up's work is the first request's, compared with the floor's).
    fn before_warm_up_ms(&self) -> Vec<f64> {
        if self.warm_up_ms.is_empty() {
            return self.first_poll_ms.clone();
        }
        self.first_poll_ms.iter().zip(&self.warm_up_ms).map(|(poll, warm)| poll - warm).collect()
    }
}

#[derive(Debug, Serialize)]
struct Results {
    /// The memory size whose CPU share the cold starts ran in; `None`: a whole CPU.
    cold_memory_mb: Option<u32>,
    cold: Vec<Cold>,
    warm: Vec<warm::Warm>,
    reconcile: Vec<scale::Scale>,
    metering: Option<metering::Metering>,
    after_idle: Vec<idle::AfterIdle>,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or(f64::NAN)
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

fn worst(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// 0..count in an order of its own for each `seed` (Fisher-Yates with xorshift), the same every run.
fn shuffled(count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..count).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// A count from the environment, or `default` where it is not set; a value that is not a count is
/// an error, not the default.
fn number(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{name}: a whole number, not {text:?}").into()),
        Err(_) => Ok(default),
    }
}

/// Deletes a section's tables, so that DynamoDB Local carries no earlier section's data.
async fn drop_table(stack: &LocalStack, endpoint: &str) -> Result<(), BoxError> {
    let client = local_stack::dynamodb_client(endpoint);
    for table in [&stack.tables.subscriptions, &stack.tables.usage] {
        client.delete_table().table_name(table).send().await?;
    }
    Ok(())
}

/// Where `BENCH_ARM64=1` builds the arm64 zips (the template's default architecture): a target
/// directory of their own, so that a cross build never replaces the host's build scripts.
const ARM64_TARGET_DIR: &str = "target/arm64";

fn arm64_zip(function: &str) -> std::path::PathBuf {
    root().join(ARM64_TARGET_DIR).join("lambda").join(function).join("bootstrap.zip")
}

fn build(function: &str) -> Result<(), BoxError> {
    // The zip for the size, then the bare binary for the runs.
    for zip in [true, false] {
        // As `sam build` builds a function: its binary, at the root (the workspace's default
        // members); the baseline, which is no default member, as its package alone.
        let mut args = vec!["lambda", "build", "--release", "--compiler", "cargo", "--bin", function];
        if function == "hello" {
            args.extend(["--package", "hello"]);
        }
        if zip {
            args.extend(["--output-format", "zip"]);
        }
        let status = std::process::Command::new("cargo").args(&args).current_dir(root()).status()?;
        if !status.success() {
            return Err(format!("cargo lambda build of {function} failed").into());
        }
    }
    if std::env::var("BENCH_ARM64").as_deref() == Ok("1") {
        // Cross-compiled with zig (cargo lambda's default), for the zip's size only.
        let mut args =
            vec!["lambda", "build", "--release", "--arm64", "--output-format", "zip", "--bin", function];
        if function == "hello" {
            args.extend(["--package", "hello"]);
        }
        let status = std::process::Command::new("cargo")
            .args(&args)
            .env("CARGO_TARGET_DIR", root().join(ARM64_TARGET_DIR))
            .current_dir(root())
            .status()?;
        if !status.success() {
            return Err(format!(
                "the arm64 build of {function} failed (it needs the aarch64-unknown-linux-gnu standard library: rustup target add aarch64-unknown-linux-gnu)"
            )
            .into());
        }
    }
    Ok(())
}

async fn cold_start(
    api: &RuntimeApi,
    stack: &LocalStack,
    function: &str,
    event: &[u8],
    memory_mb: Option<u32>,
    cold: &mut Cold,
) -> Result<(), BoxError> {
    // A group of its own per start: it begins with its whole quota, as a new environment does,
    // not with what the previous start left of the period.
    let quota = memory_mb.map(|mb| quota::CpuQuota::for_memory_as(mb, function)).transpose()?;
    let bootstrap = Bootstrap::start_in(api, function, &stack.environment, quota.as_ref()).await?;
    let answer = bootstrap.invoke(api, event).await?;
    cold.first_poll_ms.push((bootstrap.polled - bootstrap.started).as_secs_f64() * 1000.0);
    cold.warm_up_ms.extend(bootstrap.warm_up_ms()?);
    cold.init_cpu_ms.extend(bootstrap.init_cpu_ms);
    cold.first_answer_ms.push((answer.at - bootstrap.started).as_secs_f64() * 1000.0);
    cold.peak_rss_kib = cold.peak_rss_kib.max(bootstrap.peak_rss_kib());
    bootstrap.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let starts = number("BENCH_STARTS", 30)?;
    let invocations = number("BENCH_INVOCATIONS", 1_000)?;
    let sizes: Vec<usize> = match std::env::var("BENCH_RECONCILE") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().map_err(|_| format!("BENCH_RECONCILE: whole numbers, not {list:?}")))
            .collect::<Result<_, _>>()?,
        Err(_) => vec![1_000, 10_000],
    };
    let endpoint =
        std::env::var("DYNAMODB_ENDPOINT").map_err(|_| "DYNAMODB_ENDPOINT: DynamoDB Local's URL")?;
    // BENCH_PARTS: a comma-separated choice of cold, warm, reconcile, metering and idle (default: all).
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "cold,warm,reconcile,metering,idle".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    let begun = Instant::now();
    // BENCH_BUILD=0 measures the binaries the last run built.
    let needs_functions = part("cold") || part("warm") || part("reconcile") || part("idle");
    if needs_functions && std::env::var("BENCH_BUILD").as_deref() != Ok("0") {
        for (function, _) in FUNCTIONS {
            build(function)?;
        }
    }
    let api = RuntimeApi::start().await;

    // Cold starts, interleaved, so the machine's noise falls on every function alike.
    let eventbridge = std::env::var("EVENTBRIDGE_ENDPOINT").ok();
    let stack = match &eventbridge {
        Some(events) => LocalStack::start(Options::new(&endpoint).with_events(events)).await?,
        None => LocalStack::start(Options::new(&endpoint)).await?,
    };
    let cold_functions: Vec<(&str, &str)> = FUNCTIONS
        .iter()
        .copied()
        .filter(|(function, _)| *function != EVENTS_RELAY || eventbridge.is_some())
        .collect();
    if part("cold") && eventbridge.is_none() {
        println!("EVENTBRIDGE_ENDPOINT is not set: the events relay's cold start is not measured");
    }
    // BENCH_COLD_MB: the memory size whose CPU share every start and the baseline's run in, the
    // same for all (the template's 128 by default, all functions' but the reconciliation's 256);
    // 0 for a whole CPU, as without a writable cgroup file system.
    let cold_memory_mb = match number("BENCH_COLD_MB", 128)? {
        0 => None,
        mb => match quota::CpuQuota::for_memory_as(u32::try_from(mb)?, "probe") {
            Ok(_) => Some(u32::try_from(mb)?),
            Err(error) if part("cold") => {
                println!("cold starts on a whole CPU: {error}");
                None
            }
            Err(_) => None,
        },
    };
    let mut cold: Vec<Cold> = cold_functions
        .iter()
        .map(|(function, _)| {
            let zip = root().join("target/lambda").join(function).join("bootstrap.zip");
            Cold {
                function: (*function).into(),
                zip_bytes: std::fs::metadata(zip).map(|m| m.len()).unwrap_or(0),
                arm64_zip_bytes: match std::env::var("BENCH_ARM64").as_deref() {
                    Ok("1") => std::fs::metadata(arm64_zip(function)).ok().map(|m| m.len()),
                    _ => None,
                },
                ..Cold::default()
            }
        })
        .collect();
    if !part("cold") {
        cold.clear();
    }
    // Each round in another order, and after a pause: a start must not pay for the work the one
    // before it left behind (DynamoDB Local's JVM, moto), as it would if it always followed the
    // same function.
    for round in 0..if cold.is_empty() { 0 } else { starts } {
        for index in shuffled(cold_functions.len(), round as u64) {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let (function, event_file) = cold_functions[index];
            let event = std::fs::read(root().join("events").join(event_file))?;
            cold_start(&api, &stack, function, &event, cold_memory_mb, &mut cold[index]).await?;
        }
    }
    drop_table(&stack, &endpoint).await?;
    drop(stack);

    // BENCH_FLOWS: which functions' flows the warm and idle parts run (default: all).
    let flows: Vec<warm::Flow> = match std::env::var("BENCH_FLOWS") {
        Ok(list) => warm::Flow::ALL
            .into_iter()
            .filter(|flow| list.split(',').any(|name| name.trim() == flow.function()))
            .collect(),
        Err(_) => warm::Flow::ALL.to_vec(),
    };
    let mut warm = Vec::new();
    for &flow in flows.iter().filter(|_| part("warm")) {
        warm.push(warm::run(&api, &endpoint, flow, invocations).await?);
    }
    // Each size several times, interleaved: one run is at the mercy of DynamoDB Local's JVM.
    let mut reconcile = Vec::new();
    for _ in 0..if part("reconcile") { number("BENCH_RECONCILE_RUNS", 3)? } else { 0 } {
        for &total in &sizes {
            reconcile.push(scale::run(&api, &endpoint, total).await?);
        }
    }

    // BENCH_METERING=0 leaves it out.
    let metering = match number("BENCH_METERING", 100_000)? {
        0 => None,
        _ if !part("metering") => None,
        records => Some(metering::run(&endpoint, records).await?),
    };

    // Each function's first request after idle at each memory size's CPU share, behind TLS; its
    // secrets in the local Secrets Manager (moto) when scripts/bench started one.
    let secrets_endpoint = std::env::var("SECRETSMANAGER_ENDPOINT").ok();
    if part("idle") && secrets_endpoint.is_none() {
        println!(
            "SECRETSMANAGER_ENDPOINT is not set: the functions' secret is given in their environment, not read at start"
        );
    }
    let mut after_idle = Vec::new();
    'flows: for &flow in flows.iter().filter(|_| part("idle")) {
        for memory in idle::MEMORY_SIZES {
            match idle::run(
                &api,
                &endpoint,
                secrets_endpoint.as_deref(),
                flow,
                memory,
                number("BENCH_IDLE_STARTS", 10)?,
                number("BENCH_IDLE_WARM", 10)?,
            )
            .await
            {
                Ok(figures) => after_idle.push(figures),
                Err(error) => {
                    println!("{} after idle at {memory} MB: not measured: {error}", flow.function());
                    continue 'flows;
                }
            }
        }
    }

    let results = Results { cold_memory_mb, cold, warm, reconcile, metering, after_idle };
    print(&results, starts);
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    println!("written: target/bench/results.json ({:.0} s in all)", begun.elapsed().as_secs_f64());
    Ok(())
}

fn print(results: &Results, starts: usize) {
    if let Some(baseline) = results.cold.first() {
        print_cold(results, baseline, starts);
    }
    if !results.warm.is_empty() {
        print_warm(results);
        print_costs(results);
    }
    if !results.reconcile.is_empty() {
        print_reconcile(results);
    }
    if let Some(m) = &results.metering {
        print_metering(m);
    }
    if !results.after_idle.is_empty() {
        print_after_idle(&results.after_idle);
    }
}

fn print_after_idle(runs: &[idle::AfterIdle]) {
    println!(
        "\nFirst request after idle: each function started afresh in Lambda's CPU share of each memory size (cgroup quota), DynamoDB Local, the emulator (Entra, the Marketplace API) and Secrets Manager (moto) behind TLS on loopback; {} starts each, {} warm requests after each first",
        runs[0].init_ms.len(),
        runs[0].warm_ms.len() / runs[0].init_ms.len().max(1)
    );
    match idle::RoundTrips::from_env() {
        Ok(rtt) => println!(
            "round trips (BENCH_RTT_MS): Entra {} ms, Marketplace API {} ms, DynamoDB and Secrets Manager {} ms",
            rtt.entra.as_millis(),
            rtt.marketplace.as_millis(),
            rtt.aws.as_millis()
        ),
        Err(error) => println!("round trips: {error}"),
    }
    println!(
        "(init: start to first request for work, of which warm-up; start+first: init and the first request, p50 and worst, against the floor process's p50 in the same share; the webhook's worst as a share of Microsoft's 10 s)"
    );
    println!(
        "{:<14} {:>6} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8} {:>6} {:>9} {:>11} {:>6}",
        "function",
        "MB",
        "CPU %",
        "init p50",
        "warm-up",
        "first p50",
        "first max",
        "warm p50",
        "warm p99",
        "start+first",
        "worst",
        "floor's",
        "ratio",
        "warm p50",
        "floor's p50",
        "ratio"
    );
    let sum = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<f64>>();
    for run in runs {
        let together = sum(&run.init_ms, &run.first_ms);
        let (ours, floors) = (median(&together), median(&sum(&run.floor_init_ms, &run.floor_first_ms)));
        let (warm, floor_warm) = (median(&run.warm_ms), median(&run.floor_warm_ms));
        let warm_up =
            if run.warm_up_ms.is_empty() { "-".into() } else { format!("{:.0}", median(&run.warm_up_ms)) };
        let worst_start = match run.function.as_str() {
            "webhook" => format!("{:.0} ({:.1} %)", worst(&together), run.worst_window_share() * 100.0),
            _ => format!("{:.0}", worst(&together)),
        };
        println!(
            "{:<14} {:>6} {:>6.1} {:>8.0} {:>8} {:>9.0} {:>9.0} {:>9.1} {:>9.1} {:>11.0} {:>11} {:>8.0} {:>6.2} {:>9.1} {:>11.1} {:>6.2}",
            run.function,
            run.memory_mb,
            run.cpu_share * 100.0,
            median(&run.init_ms),
            warm_up,
            median(&run.first_ms),
            worst(&run.first_ms),
            warm,
            percentile(&run.warm_ms, 0.99),
            ours,
            worst_start,
            floors,
            ours / floors,
            warm,
            floor_warm,
            warm / floor_warm
        );
    }
}

/// A figure with two decimals, or "-" where nothing was measured.
fn optional(value: f64) -> String {
    if value.is_nan() { "-".into() } else { format!("{value:.2}") }
}

fn print_cold(results: &Results, baseline: &Cold, starts: usize) {
    let ratio = |of: &Cold, pick: fn(&Cold) -> Vec<f64>| median(&pick(of)) / median(&pick(baseline));
    let share = match results.cold_memory_mb {
        Some(mb) => format!("in the CPU share of {mb} MB ({:.1} %)", quota::CpuQuota::share(mb) * 100.0),
        None => "on a whole CPU".into(),
    };
    println!(
        "\nCold start {share}: {starts} starts each, interleaved with the hello-world baseline; local Runtime API, DynamoDB Local and the emulator on loopback"
    );
    println!(
        "(poll: from the start to the first request for work; warm-up: the part of it the warm-up took, the first request's work done ahead (see the idle part for its worth); own: poll less warm-up; CPU: the CPU time used until the first request for work, warm-up included, where the CPU share is measured)"
    );
    println!(
        "{:<14} {:>7} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7} {:>8} {:>7} {:>10} {:>7} {:>7}",
        "function",
        "zip MB",
        "arm64 MB",
        "poll p50",
        "poll max",
        "× hello",
        "warm-up",
        "own p50",
        "× hello",
        "CPU p50",
        "× hello",
        "answer p50",
        "× hello",
        "RSS MB"
    );
    for cold in &results.cold {
        let warm_up =
            if cold.warm_up_ms.is_empty() { "-".into() } else { format!("{:.1}", median(&cold.warm_up_ms)) };
        println!(
            "{:<14} {:>7.2} {:>9} {:>8.1} {:>8.1} {:>7.2} {:>8} {:>8.1} {:>7.2} {:>8} {:>7} {:>10.1} {:>7.2} {:>7.1}",
            cold.function,
            cold.zip_bytes as f64 / 1_000_000.0,
            optional(cold.arm64_zip_bytes.map_or(f64::NAN, |bytes| bytes as f64 / 1_000_000.0)),
            median(&cold.first_poll_ms),
            worst(&cold.first_poll_ms),
            ratio(cold, |c| c.first_poll_ms.clone()),
            warm_up,
            median(&cold.before_warm_up_ms()),
            ratio(cold, Cold::before_warm_up_ms),
            optional(median(&cold.init_cpu_ms)),
            optional(ratio(cold, |c| c.init_cpu_ms.clone())),
            median(&cold.first_answer_ms),
            ratio(cold, |c| c.first_answer_ms.clone()),
            cold.peak_rss_kib as f64 / 1024.0,
        );
    }
}

fn print_warm(results: &Results) {
    if let Some(first) = results.warm.first() {
        println!(
            "\nWarm latency (ms): {} invocations each against DynamoDB Local and the emulator; floor = the same requests made directly",
            first.invocations
        );
    }
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "function", "p50", "p99", "max", "floor p50", "floor p99", "floor max", "× p50", "× p99", "RSS MB"
    );
    for warm in &results.warm {
        let (f, fl) = (&warm.function_ms, &warm.floor_ms);
        println!(
            "{:<14} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2} {:>9.2} {:>9.2} {:>8.1}",
            warm.function,
            median(f),
            percentile(f, 0.99),
            worst(f),
            median(fl),
            percentile(fl, 0.99),
            worst(fl),
            median(f) / median(fl),
            percentile(f, 0.99) / percentile(fl, 0.99),
            warm.peak_rss_kib as f64 / 1024.0,
        );
    }
}

/// AWS list prices (us-east-1, USD), as the cost table uses them.
mod prices {
    /// Lambda on arm64, per GB-second (the first 7.5 billion a month) and per million requests.
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    pub const LAMBDA_MILLION_REQUESTS: f64 = 0.20;
    /// API Gateway HTTP API, per million requests (the first 300 million a month).
    pub const HTTP_API_MILLION_REQUESTS: f64 = 1.00;
    /// EventBridge, per million custom events (the lifecycle events).
    pub const EVENTBRIDGE_MILLION_EVENTS: f64 = 1.00;
    /// SQS standard queues, per million requests (the first billion a month), and the requests
    /// a usage report's message takes at most: sent, received, deleted (Lambda's poller receives
    /// and deletes up to 10 at once).
    pub const SQS_MILLION_REQUESTS: f64 = 0.40;
    pub const SQS_REQUESTS_PER_MESSAGE: f64 = 3.0;
    /// Secrets Manager, per 10,000 calls (one GetSecretValue per secret and cold start) and per
    /// secret and month.
    pub const SECRETS_10K_CALLS: f64 = 0.05;
    pub const SECRET_MONTH: f64 = 0.40;
}

/// The cost of a million of each flow at list prices, from the warm part's figures: the
/// function's warm p50 billed at its memory (Lambda bills the wait for Microsoft too, so it is
/// taken from the `idle` part, with its round trips, where that ran; else on loopback), its request
/// units as measured on the floor's identical calls, the HTTP API for routed flows, and one
/// lifecycle event per change.
fn print_costs(results: &Results) {
    use crate::metering::{READ_UNIT_PRICE, WRITE_UNIT_PRICE};
    println!(
        "\nCost per million (USD, us-east-1 list prices: Lambda arm64 {} per GB-s and {} per million requests; HTTP API {} per million; SQS {} per million requests, {} a usage message; DynamoDB on-demand {} per million write and {} per million read units; EventBridge {} per million events; Secrets Manager {} per 10,000 calls, {} per secret-month, not included)",
        prices::LAMBDA_GB_SECOND,
        prices::LAMBDA_MILLION_REQUESTS,
        prices::HTTP_API_MILLION_REQUESTS,
        prices::SQS_MILLION_REQUESTS,
        prices::SQS_REQUESTS_PER_MESSAGE,
        WRITE_UNIT_PRICE,
        READ_UNIT_PRICE,
        prices::EVENTBRIDGE_MILLION_EVENTS,
        prices::SECRETS_10K_CALLS,
        prices::SECRET_MONTH,
    );
    println!(
        "{:<28} {:>6} {:>8} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8}",
        "a million of", "MB", "p50 ms", "WRU", "RRU", "Lambda", "front", "Dynamo", "total"
    );
    // The front: the HTTP API for the routed flows, SQS for the usage reports.
    let (http, sqs) =
        (prices::HTTP_API_MILLION_REQUESTS, prices::SQS_MILLION_REQUESTS * prices::SQS_REQUESTS_PER_MESSAGE);
    for warm in &results.warm {
        let (what, front, events) = match warm.function.as_str() {
            "landing" => ("landing visits", http, 1.0),
            "activate" => ("activations", http, 1.0),
            "webhook" => ("webhooks (a seat change)", http, 1.0),
            "subscriptions" => ("admin reads", http, 0.0),
            "reconcile" => ("reconciled subscriptions", 0.0, 0.0),
            "usage-intake" => ("usage reports (a message each)", sqs, 0.0),
            "metering" => ("metering runs (an hour sent)", 0.0, 0.0),
            // Per event: the relay's share, and the event itself (the rows above count it too).
            "events-relay" => ("lifecycle events relayed", 0.0, 1.0),
            _ => continue,
        };
        // Per invocation, then per million of what it handles.
        let per = warm.handled_per_round.max(1) as f64;
        let with_round_trips = results
            .after_idle
            .iter()
            .find(|run| run.function == warm.function && run.memory_mb == warm.memory_mb)
            .map(|run| median(&run.warm_ms));
        let p50 = with_round_trips.unwrap_or_else(|| median(&warm.function_ms));
        let gb_seconds = f64::from(warm.memory_mb) / 1024.0 * p50.ceil() / 1000.0;
        let lambda = (gb_seconds * 1e6 * prices::LAMBDA_GB_SECOND + prices::LAMBDA_MILLION_REQUESTS) / per;
        let front = front / per;
        let units = warm.units_per_round;
        let dynamo = (units.write * WRITE_UNIT_PRICE + units.read * READ_UNIT_PRICE) / per;
        let eventbridge = events * prices::EVENTBRIDGE_MILLION_EVENTS;
        println!(
            "{:<28} {:>6} {:>8.1} {:>7.2} {:>7.2} {:>8.3} {:>8.3} {:>7.3} {:>8.3}",
            what,
            warm.memory_mb,
            p50,
            units.write / per,
            units.read / per,
            lambda,
            front,
            dynamo,
            lambda + front + dynamo + eventbridge,
        );
    }
    println!(
        "(front: the HTTP API, or SQS for the usage reports; total includes EventBridge's lifecycle event for each change (landing, activation, webhook) and for each event relayed; p50 with round trips where the idle part ran at the function's memory, else on loopback; the reconciliation's checkpoint reads and writes are not counted)"
    );
}

fn print_reconcile(results: &Results) {
    println!(
        "\nReconcile (the reconcile bootstrap; 5 % missing and 5 % drifted, then a run with nothing to do)"
    );
    println!(
        "{:>13} {:>5} {:>18} {:>13} {:>22} {:>17}",
        "subscriptions", "runs", "repairing p50 ms", "idle p50 ms", "repairing s/10,000", "idle s/10,000"
    );
    let mut sizes: Vec<usize> = results.reconcile.iter().map(|s| s.subscriptions).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let medians: Vec<(usize, f64, f64)> = sizes
        .iter()
        .map(|&size| {
            let runs: Vec<&scale::Scale> =
                results.reconcile.iter().filter(|s| s.subscriptions == size).collect();
            let repairing: Vec<f64> = runs.iter().map(|s| s.repairing_ms).collect();
            let idle: Vec<f64> = runs.iter().map(|s| s.idle_ms).collect();
            let per_10k = |ms: f64| ms / size as f64 * 10_000.0 / 1000.0;
            println!(
                "{:>13} {:>5} {:>18.0} {:>13.0} {:>22.1} {:>17.1}",
                size,
                runs.len(),
                median(&repairing),
                median(&idle),
                per_10k(median(&repairing)),
                per_10k(median(&idle))
            );
            (size, median(&repairing), median(&idle))
        })
        .collect();
    if let [small, .., large] = &medians[..] {
        println!(
            "growth: {:.1}× the subscriptions took {:.1}× the time (repairing), {:.1}× (idle)",
            large.0 as f64 / small.0 as f64,
            large.1 / small.1,
            large.2 / small.2
        );
    }
}

fn print_metering(m: &metering::Metering) {
    println!(
        "\nMetered billing: {} usage reports over 1,000 subscriptions and 3 dimensions (32 at once, DynamoDB Local), then one emission run (the emulator)",
        m.records
    );
    println!(
        "ingested in {:.1} s: {:.0} records/s; DynamoDB per record, measured: {:.2} write units and {:.2} read units (transactions counted twice, as billed)",
        m.ingest_ms / 1000.0,
        m.records_per_second,
        m.write_units_per_record,
        m.read_units_per_record
    );
    println!(
        "emission: {} hours accepted in {:.1} s with {} batch calls; per hour {:.2} write units and {:.2} read units",
        m.accepted,
        m.emission_ms / 1000.0,
        m.emission_calls,
        m.write_units_per_hour,
        m.read_units_per_hour
    );
    println!(
        "DynamoDB on-demand cost per million records: USD {:.3} (USD {} per million write units, {} per million read units, us-east-1 list price)",
        m.usd_per_million_records,
        metering::WRITE_UNIT_PRICE,
        metering::READ_UNIT_PRICE
    );
}
