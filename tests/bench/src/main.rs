//! The benchmark command (`scripts/bench`). Every function and a hello-world baseline are built
//! the way a deployment builds them (`cargo lambda build --release`), then measured in one run:
//!
//! - the deployment zip;
//! - cold start against a local Lambda Runtime API: from starting `bootstrap` to its first request
//!   for work, and to its first answered invocation; median and worst of many starts, interleaved
//!   with the baseline;
//! - warm latency of each function's main flow against its floor (see [`warm`]), and the peak
//!   resident memory over that run;
//! - the reconciliation of 1,000 and 10,000 subscriptions;
//! - metered billing: 100,000 usage reports taken, then one emission run (see [`metering`]).
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
    first_poll_ms: Vec<f64>,
    first_answer_ms: Vec<f64>,
    peak_rss_kib: u64,
}

#[derive(Debug, Serialize)]
struct Results {
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

fn number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Deletes a section's tables, so that DynamoDB Local carries no earlier section's data.
async fn drop_table(stack: &LocalStack, endpoint: &str) -> Result<(), BoxError> {
    let client = local_stack::dynamodb_client(endpoint);
    for table in [&stack.tables.subscriptions, &stack.tables.usage] {
        client.delete_table().table_name(table).send().await?;
    }
    Ok(())
}

fn build(function: &str) -> Result<(), BoxError> {
    // The zip for the size, then the bare binary for the runs.
    for zip in [true, false] {
        let mut args = vec!["lambda", "build", "--release", "--compiler", "cargo", "--bin", function];
        if zip {
            args.extend(["--output-format", "zip"]);
        }
        let status = std::process::Command::new("cargo").args(&args).current_dir(root()).status()?;
        if !status.success() {
            return Err(format!("cargo lambda build of {function} failed").into());
        }
    }
    Ok(())
}

async fn cold_start(
    api: &RuntimeApi,
    stack: &LocalStack,
    function: &str,
    event: &[u8],
    cold: &mut Cold,
) -> Result<(), BoxError> {
    let bootstrap = Bootstrap::start(api, function, &stack.environment).await?;
    let answer = bootstrap.invoke(api, event).await?;
    cold.first_poll_ms.push((bootstrap.polled - bootstrap.started).as_secs_f64() * 1000.0);
    cold.first_answer_ms.push((answer.at - bootstrap.started).as_secs_f64() * 1000.0);
    cold.peak_rss_kib = cold.peak_rss_kib.max(bootstrap.peak_rss_kib());
    bootstrap.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let starts = number("BENCH_STARTS", 20);
    let invocations = number("BENCH_INVOCATIONS", 1_000);
    let sizes: Vec<usize> = match std::env::var("BENCH_RECONCILE") {
        Ok(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => vec![1_000, 10_000],
    };
    let endpoint =
        std::env::var("DYNAMODB_ENDPOINT").map_err(|_| "DYNAMODB_ENDPOINT: DynamoDB Local's URL")?;
    // BENCH_PARTS: a comma-separated choice of cold, warm, reconcile and metering (default: all).
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
    let mut cold: Vec<Cold> = cold_functions
        .iter()
        .map(|(function, _)| {
            let zip = root().join("target/lambda").join(function).join("bootstrap.zip");
            Cold {
                function: (*function).into(),
                zip_bytes: std::fs::metadata(zip).map(|m| m.len()).unwrap_or(0),
                ..Cold::default()
            }
        })
        .collect();
    if !part("cold") {
        cold.clear();
    }
    for _ in 0..if cold.is_empty() { 0 } else { starts } {
        for ((function, event_file), figures) in cold_functions.iter().zip(cold.iter_mut()) {
            let event = std::fs::read(root().join("events").join(event_file))?;
            cold_start(&api, &stack, function, &event, figures).await?;
        }
    }
    drop_table(&stack, &endpoint).await?;
    drop(stack);

    let mut warm = Vec::new();
    for flow in warm::Flow::ALL.into_iter().filter(|_| part("warm")) {
        warm.push(warm::run(&api, &endpoint, flow, invocations).await?);
    }
    // Each size several times, interleaved: one run is at the mercy of DynamoDB Local's JVM.
    let mut reconcile = Vec::new();
    for _ in 0..if part("reconcile") { number("BENCH_RECONCILE_RUNS", 3) } else { 0 } {
        for &total in &sizes {
            reconcile.push(scale::run(&api, &endpoint, total).await?);
        }
    }

    // BENCH_METERING=0 leaves it out.
    let metering = match number("BENCH_METERING", 100_000) {
        0 => None,
        _ if !part("metering") => None,
        records => Some(metering::run(&endpoint, records).await?),
    };

    // The first webhook after idle at each memory size's CPU share, behind TLS; the credentials'
    // secret in the local Secrets Manager (moto) when scripts/bench started one.
    let secrets_endpoint = std::env::var("SECRETSMANAGER_ENDPOINT").ok();
    if part("idle") && secrets_endpoint.is_none() {
        println!(
            "SECRETSMANAGER_ENDPOINT is not set: the webhook's secret is given in its environment, not read at start"
        );
    }
    let mut after_idle = Vec::new();
    for memory in idle::MEMORY_SIZES.into_iter().filter(|_| part("idle")) {
        match idle::run(
            &api,
            &endpoint,
            secrets_endpoint.as_deref(),
            memory,
            number("BENCH_IDLE_STARTS", 15),
            number("BENCH_IDLE_WARM", 20),
        )
        .await
        {
            Ok(figures) => after_idle.push(figures),
            Err(error) => {
                println!("first webhook after idle at {memory} MB: not measured: {error}");
                break;
            }
        }
    }

    let results = Results { cold, warm, reconcile, metering, after_idle };
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
        "\nFirst webhook after idle: the webhook started afresh in Lambda's CPU share of each memory size (cgroup quota), DynamoDB Local, the emulator (Entra, the Marketplace API) and Secrets Manager (moto) behind TLS on loopback; {} starts each",
        runs[0].init_ms.len()
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
        "{:>9} {:>6} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>14}",
        "memory MB",
        "CPU %",
        "init p50",
        "init max",
        "first p50",
        "first max",
        "warm p50",
        "warm p99",
        "worst of 10 s"
    );
    for run in runs {
        println!(
            "{:>9} {:>6.1} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {:>9.1} {:>9.1} {:>13.1}%",
            run.memory_mb,
            run.cpu_share * 100.0,
            median(&run.init_ms),
            worst(&run.init_ms),
            median(&run.first_ms),
            worst(&run.first_ms),
            median(&run.warm_ms),
            percentile(&run.warm_ms, 0.99),
            run.worst_window_share() * 100.0,
        );
    }
    println!(
        "\nAgainst the floor (a fresh minimal client in the same share: the same TLS connections and calls; start and first delivery together)"
    );
    println!(
        "{:>9} {:>12} {:>12} {:>6} {:>9} {:>11} {:>6}",
        "memory MB", "start+first", "floor's", "ratio", "warm p50", "floor's p50", "ratio"
    );
    for run in runs {
        let sum = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<f64>>();
        let (ours, floors) = (
            median(&sum(&run.init_ms, &run.first_ms)),
            median(&sum(&run.floor_init_ms, &run.floor_first_ms)),
        );
        let (warm, floor_warm) = (median(&run.warm_ms), median(&run.floor_warm_ms));
        println!(
            "{:>9} {:>12.0} {:>12.0} {:>6.2} {:>9.1} {:>11.1} {:>6.2}",
            run.memory_mb,
            ours,
            floors,
            ours / floors,
            warm,
            floor_warm,
            warm / floor_warm
        );
    }
}

fn print_cold(results: &Results, baseline: &Cold, starts: usize) {
    let (base_poll, base_answer) = (median(&baseline.first_poll_ms), median(&baseline.first_answer_ms));
    println!(
        "\nCold start: {starts} starts each, interleaved with the hello-world baseline; local Runtime API"
    );
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8}",
        "function",
        "zip MB",
        "poll p50",
        "poll max",
        "× hello",
        "answer p50",
        "answer max",
        "× hello",
        "RSS MB"
    );
    for cold in &results.cold {
        println!(
            "{:<14} {:>8.2} {:>8.1} {:>8.1} {:>8.2} {:>10.1} {:>10.1} {:>8.2} {:>8.1}",
            cold.function,
            cold.zip_bytes as f64 / 1_000_000.0,
            median(&cold.first_poll_ms),
            worst(&cold.first_poll_ms),
            median(&cold.first_poll_ms) / base_poll,
            median(&cold.first_answer_ms),
            worst(&cold.first_answer_ms),
            median(&cold.first_answer_ms) / base_answer,
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
    /// Secrets Manager, per 10,000 calls (one GetSecretValue per secret and cold start) and per
    /// secret and month.
    pub const SECRETS_10K_CALLS: f64 = 0.05;
    pub const SECRET_MONTH: f64 = 0.40;
}

/// The cost of a million of each flow at list prices, from the warm part's figures: the
/// function's warm p50 billed at its memory (on loopback: Lambda bills the wait for Microsoft too,
/// so the webhook's is taken from the `idle` part, with its round trips, where it ran), its request
/// units as measured on the floor's identical calls, the HTTP API for routed flows, and one
/// lifecycle event per change.
fn print_costs(results: &Results) {
    use crate::metering::{READ_UNIT_PRICE, WRITE_UNIT_PRICE};
    println!(
        "\nCost per million (USD, us-east-1 list prices: Lambda arm64 {} per GB-s and {} per million requests; HTTP API {} per million; DynamoDB on-demand {} per million write and {} per million read units; EventBridge {} per million events; Secrets Manager {} per 10,000 calls, {} per secret-month, not included)",
        prices::LAMBDA_GB_SECOND,
        prices::LAMBDA_MILLION_REQUESTS,
        prices::HTTP_API_MILLION_REQUESTS,
        WRITE_UNIT_PRICE,
        READ_UNIT_PRICE,
        prices::EVENTBRIDGE_MILLION_EVENTS,
        prices::SECRETS_10K_CALLS,
        prices::SECRET_MONTH,
    );
    println!(
        "{:<28} {:>6} {:>8} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8}",
        "a million of", "MB", "p50 ms", "WRU", "RRU", "Lambda", "HTTP API", "Dynamo", "total"
    );
    for warm in &results.warm {
        let (what, routed, events) = match warm.function.as_str() {
            "landing" => ("landing visits", true, 1.0),
            "activate" => ("activations", true, 1.0),
            "webhook" => ("webhooks (a seat change)", true, 1.0),
            "subscriptions" => ("admin reads", true, 0.0),
            "reconcile" => ("reconciled subscriptions", false, 0.0),
            _ => continue,
        };
        // Per invocation, then per million of what it handles.
        let per = warm.subscriptions_per_round.max(1) as f64;
        let with_round_trips = results
            .after_idle
            .iter()
            .find(|run| warm.function == "webhook" && run.memory_mb == warm.memory_mb)
            .map(|run| median(&run.warm_ms));
        let p50 = with_round_trips.unwrap_or_else(|| median(&warm.function_ms));
        let gb_seconds = f64::from(warm.memory_mb) / 1024.0 * p50.ceil() / 1000.0;
        let lambda = (gb_seconds * 1e6 * prices::LAMBDA_GB_SECOND + prices::LAMBDA_MILLION_REQUESTS) / per;
        let http = if routed { prices::HTTP_API_MILLION_REQUESTS } else { 0.0 } / per;
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
            http,
            dynamo,
            lambda + http + dynamo + eventbridge,
        );
    }
    println!(
        "(total includes EventBridge's lifecycle event for each change: landing, activation, webhook; p50 on loopback but the webhook's, with round trips when the idle part ran; the reconciliation's checkpoint reads and writes are not counted)"
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
