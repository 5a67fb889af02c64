//! The functions' logs: one JSON object a line when Lambda's advanced logging controls ask for it
//! (the template's `LogFormat: JSON`), no time stamp (CloudWatch adds one) and no target, as
//! `lambda_runtime`'s default subscriber writes them, so the template's metric filters read them.
//!
//! Ours rather than `lambda_runtime`'s: its filter (`EnvFilter`) brings a regular-expression
//! engine that took a tenth of a function's zip. [`Targets`] reads `RUST_LOG`'s `target=level`
//! directives (`warn,fulfillment::wiring=info`) without one; span and field filters it does not
//! take.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogSettings;

/// Installs the process's subscriber, writing to standard output (Lambda's log stream). A setting
/// that could not be read is logged once, after the subscriber is in place.
pub fn init(settings: &LogSettings) {
    // A second call (tests that start a function twice) keeps the first subscriber.
    let installed = subscriber(settings.json, settings.filter.clone(), std::io::stdout).try_init();
    if installed.is_ok()
        && let Some(problem) = &settings.problem
    {
        tracing::warn!(%problem, "log settings ignored");
    }
}

/// The subscriber, JSON or plain text, writing to `writer` (the tests capture what the functions
/// would log).
pub fn subscriber<W>(json: bool, filter: Targets, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // No target, no time (CloudWatch stamps each line), no colours; one of the two is set, and a
    // layer that is `None` does nothing.
    use tracing_subscriber::fmt::layer;
    let (as_json, as_text) = match json {
        true => (
            Some(layer().json().with_target(false).without_time().with_ansi(false).with_writer(writer)),
            None,
        ),
        false => (None, Some(layer().with_target(false).without_time().with_ansi(false).with_writer(writer))),
    };
    tracing_subscriber::registry().with(as_json).with(as_text).with(filter)
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
