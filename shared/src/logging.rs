//! The functions' logs: one JSON object a line when Lambda's advanced logging controls ask for it
//! (the template's `LogFormat: JSON`), no time stamp (CloudWatch adds one) and no target, as
//! `lambda_runtime`'s default subscriber writes them, so the template's metric filters read them.
//!
//! Ours rather than `lambda_runtime`'s: its filter (`EnvFilter`) brings a regular-expression
//! engine that took a tenth of a function's zip. [`Targets`] reads the same `RUST_LOG`
//! directives (`warn,fulfillment::wiring=info`) without one.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogSettings;

/// Installs the process's subscriber, writing to standard output (Lambda's log stream). A setting
/// that could not be read is logged once, after the subscriber is in place.
pub fn init(settings: &LogSettings) {
    // A second call (tests that start a function twice) keeps the first subscriber.
    let installed = match settings.json {
        true => subscriber_json(settings.filter.clone(), std::io::stdout).try_init(),
        false => subscriber_text(settings.filter.clone(), std::io::stdout).try_init(),
    };
    if installed.is_ok()
        && let Some(problem) = &settings.problem
    {
        tracing::warn!(%problem, "log settings ignored");
    }
}

/// The JSON subscriber, writing to `writer` (the tests capture what the functions would log).
pub fn subscriber_json<W>(filter: Targets, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let format = tracing_subscriber::fmt::layer()
        .json()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .with_writer(writer);
    tracing_subscriber::registry().with(format).with(filter)
}

/// The plain-text subscriber (local runs without `AWS_LAMBDA_LOG_FORMAT=JSON`).
pub fn subscriber_text<W>(filter: Targets, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let format = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .with_writer(writer);
    tracing_subscriber::registry().with(format).with(filter)
}

/// The level of `AWS_LAMBDA_LOG_LEVEL`, as Lambda names its levels (`FATAL` is our `ERROR`).
pub(crate) fn lambda_level(name: &str) -> Option<LevelFilter> {
    match name.to_ascii_uppercase().as_str() {
        "TRACE" => Some(LevelFilter::TRACE),
        "DEBUG" => Some(LevelFilter::DEBUG),
        "INFO" => Some(LevelFilter::INFO),
        "WARN" => Some(LevelFilter::WARN),
        "ERROR" | "FATAL" => Some(LevelFilter::ERROR),
        _ => None,
    }
}
