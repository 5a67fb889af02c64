//! A function's `bootstrap` binary (as `cargo lambda build` leaves it), started as Lambda starts it:
//! its configuration in the environment and the Runtime API's address in `AWS_LAMBDA_RUNTIME_API`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fulfillment::config::Environment;

use crate::runtime_api::{Answer, RuntimeApi};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The functions that warm up at start (`wiring::warm_up`), and log how long it took.
pub const WARMED_UP: [&str; 3] = ["landing", "activate", "webhook"];

/// How long a start or an invocation may take before the benchmark gives up on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `bootstrap`; killed when dropped.
pub struct Bootstrap {
    pub function: String,
    pub started: Instant,
    /// When it first asked the Runtime API for work.
    pub polled: Instant,
    /// The CPU time it used until then (ms), where its group counts it.
    pub init_cpu_ms: Option<f64>,
    child: tokio::process::Child,
    /// Its standard output and error.
    log: PathBuf,
}

impl Bootstrap {
    /// Starts `function` and waits for its first request for work.
    pub async fn start(
        api: &RuntimeApi,
        function: &str,
        environment: &Environment,
    ) -> Result<Self, BoxError> {
        Self::start_in(api, function, environment, None).await
    }

    /// [`Self::start`], in `quota`'s share of a CPU when given (as Lambda runs it at that memory).
    pub async fn start_in(
        api: &RuntimeApi,
        function: &str,
        environment: &Environment,
        quota: Option<&crate::quota::CpuQuota>,
    ) -> Result<Self, BoxError> {
        api.reset();
        let path = root().join("target/lambda").join(function).join("bootstrap");
        let memory = quota.map_or(128, |q| q.memory_mb);
        // Its warnings and errors, for when it fails.
        let logs = root().join("target/bench/logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{function}.log")))?;
        let mut command = match quota {
            Some(quota) => quota.command(&path),
            None => tokio::process::Command::new(&path),
        };
        command
            .env_clear()
            .envs(environment.pairs())
            // What Lambda itself sets.
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TZ", ":UTC")
            .env("LAMBDA_TASK_ROOT", path.parent().unwrap_or(&path))
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_SESSION_TOKEN", "local")
            // JSON lines as in AWS; the warm-up's own line, to tell its time from the rest of init.
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("RUST_LOG", "warn,fulfillment::wiring=info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let polled = api.first_poll(started + PATIENCE).await.ok_or_else(|| {
            format!("{function} never asked for work (see target/bench/logs/{function}.log)")
        })?;
        let init_cpu_ms = quota.and_then(crate::quota::CpuQuota::cpu_used_ms);
        Ok(Self {
            function: function.into(),
            started,
            polled,
            init_cpu_ms,
            child,
            log: logs.join(format!("{function}.log")),
        })
    }

    /// How long its warm-up took, as its log says (`warm-up ended`); `None` for a function that
    /// warms nothing up ([`WARMED_UP`]). Read once it has asked for work: the line is written before.
    pub fn warm_up_ms(&self) -> Result<Option<f64>, BoxError> {
        if !WARMED_UP.contains(&self.function.as_str()) {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.log)?;
        let mut lines = text.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok());
        let ms = lines.find_map(|line| {
            let fields = &line["fields"];
            (fields["message"] == "warm-up ended").then(|| fields["ms"].as_f64()).flatten()
        });
        let missing =
            || format!("{0} logged no \"warm-up ended\" (see target/bench/logs/{0}.log)", self.function);
        Ok(Some(ms.ok_or_else(missing)?))
    }

    /// Hands `event` to the function and waits for its answer, which must not be an error.
    pub async fn invoke(&self, api: &RuntimeApi, event: &[u8]) -> Result<Answer, BoxError> {
        let request = api.invoke(event);
        let answer = api
            .answer(&request, Instant::now() + PATIENCE)
            .await
            .ok_or_else(|| format!("{0} never answered (see target/bench/logs/{0}.log)", self.function))?;
        if answer.error {
            return Err(format!(
                "{} answered with an error: {}",
                self.function,
                String::from_utf8_lossy(&answer.body)
            )
            .into());
        }
        Ok(answer)
    }

    /// Kills the process and waits for its end, so that it cannot take the next process's events.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }
}
