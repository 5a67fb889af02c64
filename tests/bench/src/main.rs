//! The benchmark command (`scripts/bench`): for every function and a hello-world baseline, built
//! the way a deployment builds them (`cargo lambda build --release`), it measures the deployment
//! zip, the cold start against a local Lambda Runtime API (from starting `bootstrap` to its first
//! request for work, and to its first answered invocation; median and worst of several starts,
//! interleaved with the baseline), and the peak resident memory. It prints a table and writes the
//! same figures to `target/bench/results.json`.

mod runtime_api;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use local_stack::{LocalStack, Options};
use runtime_api::RuntimeApi;
use serde::Serialize;

/// (binary, event file it is started with: a cheap, valid request)
const FUNCTIONS: &[(&str, &str)] = &[
    ("hello", "landing/token-missing.json"),
    ("landing", "landing/token-missing.json"),
    ("activate", "activate/get.json"),
    ("webhook", "webhook/bad-no-authorization.json"),
    ("subscriptions", "subscriptions/bad-without-iam.json"),
    ("reconcile", "reconcile/scheduled.json"),
];

#[derive(Debug, Default, Serialize)]
struct Figures {
    function: String,
    zip_bytes: u64,
    first_poll_ms: Vec<f64>,
    first_answer_ms: Vec<f64>,
    peak_rss_kib: u64,
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn worst(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn start(
    api: &RuntimeApi,
    stack: &LocalStack,
    function: &str,
    event: &[u8],
    figures: &mut Figures,
) -> Result<(), String> {
    api.reset();
    let bootstrap = root().join("target/lambda").join(function).join("bootstrap");
    let mut command = tokio::process::Command::new(&bootstrap);
    command
        .envs(stack.environment.pairs())
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", bootstrap.display()))?;
    let deadline = started + Duration::from_secs(20);
    let polled = api.first_poll(deadline).await.ok_or_else(|| format!("{function} never asked for work"))?;
    let request = api.invoke(event);
    let answer = api.answer(&request, deadline).await.ok_or_else(|| format!("{function} never answered"))?;
    if answer.error {
        return Err(format!("{function} answered with an error: {}", String::from_utf8_lossy(&answer.body)));
    }
    figures.first_poll_ms.push((polled - started).as_secs_f64() * 1000.0);
    figures.first_answer_ms.push((answer.at - started).as_secs_f64() * 1000.0);
    if let Some(pid) = child.id() {
        figures.peak_rss_kib = figures.peak_rss_kib.max(peak_rss(pid));
    }
    let _ = child.kill().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let starts: usize = std::env::var("BENCH_STARTS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let endpoint =
        std::env::var("DYNAMODB_ENDPOINT").map_err(|_| "DYNAMODB_ENDPOINT: DynamoDB Local's URL")?;

    for (function, _) in FUNCTIONS {
        let status = std::process::Command::new("cargo")
            .args([
                "lambda",
                "build",
                "--release",
                "--output-format",
                "zip",
                "--compiler",
                "cargo",
                "--bin",
                function,
            ])
            .current_dir(root())
            .status()?;
        if !status.success() {
            return Err(format!("cargo lambda build of {function} failed").into());
        }
        // The zip for the size, the bare binary for the runs.
        let status = std::process::Command::new("cargo")
            .args(["lambda", "build", "--release", "--compiler", "cargo", "--bin", function])
            .current_dir(root())
            .status()?;
        if !status.success() {
            return Err(format!("cargo lambda build of {function} failed").into());
        }
    }

    let stack = LocalStack::start(Options::new(endpoint)).await?;
    let api = RuntimeApi::start().await;
    let mut all: Vec<Figures> = FUNCTIONS
        .iter()
        .map(|(function, _)| {
            let zip = root().join("target/lambda").join(function).join("bootstrap.zip");
            Figures {
                function: (*function).into(),
                zip_bytes: std::fs::metadata(zip).map(|m| m.len()).unwrap_or(0),
                ..Figures::default()
            }
        })
        .collect();
    // Interleaved, so the machine's noise falls on every function alike.
    for _ in 0..starts {
        for ((function, event_file), figures) in FUNCTIONS.iter().zip(all.iter_mut()) {
            let event = std::fs::read(root().join("events").join(event_file))?;
            start(&api, &stack, function, &event, figures).await?;
        }
    }

    let baseline = &all[0];
    let (base_poll, base_answer) = (median(&baseline.first_poll_ms), median(&baseline.first_answer_ms));
    println!(
        "{starts} cold starts each, interleaved; Runtime API, emulator and DynamoDB Local on this machine"
    );
    println!(
        "{:<14} {:>9} {:>13} {:>13} {:>15} {:>15} {:>9} {:>9}",
        "function",
        "zip KB",
        "poll p50 ms",
        "poll max ms",
        "answer p50 ms",
        "answer max ms",
        "× hello",
        "peak MB"
    );
    for figures in &all {
        println!(
            "{:<14} {:>9.0} {:>13.1} {:>13.1} {:>15.1} {:>15.1} {:>9.2} {:>9.1}",
            figures.function,
            figures.zip_bytes as f64 / 1024.0,
            median(&figures.first_poll_ms),
            worst(&figures.first_poll_ms),
            median(&figures.first_answer_ms),
            worst(&figures.first_answer_ms),
            median(&figures.first_poll_ms) / base_poll,
            figures.peak_rss_kib as f64 / 1024.0,
        );
    }
    println!("(baseline: first poll {base_poll:.1} ms, first answer {base_answer:.1} ms)");
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&all)?)?;
    println!("written: target/bench/results.json");
    Ok(())
}
