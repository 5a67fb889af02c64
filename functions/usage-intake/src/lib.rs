//! The product's usage, asynchronously: Lambda's SQS event source mapping hands this function
//! batches of messages from `UsageQueue`, each one report
//! (`{"subscriptionId", "dimension", "quantity", "time", "key"}`) or up to [`MAX_REPORTS`] of them
//! (`{"usage": [...]}`). Every report goes through the core's [`Meter`]: added to its hour once
//! per key.
//!
//! A report refused for good (a [`Refusal`], or one that cannot be read) is logged as a warning
//! with its code and key and not retried: it would be refused again. A message with a report that
//! failed for now (the table or Microsoft: [`MeteringError::is_retryable`]) is named in the
//! partial batch response (`batchItemFailures`), so that SQS delivers it again; the reports of it
//! already added are repeats then (same key: nothing is added twice). A failure that is neither
//! (e.g. Microsoft does not know the subscription's plans, 404) is retried too, and after
//! `maxReceiveCount` receives the message lands in the dead-letter queue, which is alarmed.

use std::time::{Duration, Instant};

use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::Environment;
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi};
use fulfillment::metering::{Meter, MeteringError, Refusal, Taken};
use fulfillment::store::SubscriptionStore;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::usage::{UsageReport, UsageStore};
use fulfillment::wiring::{Services, StartupError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use fulfillment::metering::MAX_REPORTS;

/// Kept back from Lambda's deadline: no report is begun, and no call to Microsoft goes on, after
/// it (the table's calls end within 5 seconds of their own).
pub const MARGIN: Duration = Duration::from_secs(6);

pub struct UsageIntake<S, M, C> {
    pub meter: Meter<S, M, C>,
}

/// The intake as deployed: DynamoDB, Microsoft's API (the plans' dimensions), the system clock.
pub type Deployed = UsageIntake<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

impl Deployed {
    /// The one way to build the deployed intake (its `main.rs`, the secrets test).
    pub async fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        let services = Services::load(environment).await?;
        let marketplace = services.marketplace_client()?;
        Ok(Self::new(services.store, marketplace, SystemClock))
    }
}

/// An SQS event, as far as the intake reads it.
#[derive(Debug, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessage {
    pub message_id: String,
    #[serde(default)]
    pub body: String,
}

/// What a batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Intake {
    pub messages: u64,
    /// Reports added to their hour.
    pub added: u64,
    /// Reports whose key was taken before: nothing added.
    pub repeated: u64,
    /// Reports refused for good (logged with their code and key; not retried).
    pub refused: u64,
    /// The messages SQS must deliver again, by message id.
    pub retry: Vec<String>,
}

/// What one message came to.
#[derive(Default)]
struct Outcome {
    added: u64,
    repeated: u64,
    refused: u64,
    retry: bool,
}

impl<S: SubscriptionStore + UsageStore, M: MarketplaceApi, C: Clock> UsageIntake<S, M, C> {
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self { meter: Meter::new(store, marketplace, clock) }
    }

    /// `event` is a batch of SQS messages, to be done by `deadline` (Lambda's). An event that is
    /// not one is an error: Lambda retries the batch, then SQS moves its messages to the
    /// dead-letter queue.
    pub async fn handle(&self, event: Value, deadline: Instant) -> Result<Intake, serde_json::Error> {
        let event: SqsEvent = serde_json::from_value(event)?;
        let stop = deadline.checked_sub(MARGIN).unwrap_or(deadline);
        let outcomes =
            futures::future::join_all(event.records.iter().map(|message| self.message(message, stop))).await;
        let mut intake = Intake { messages: event.records.len() as u64, ..Intake::default() };
        for (message, outcome) in event.records.iter().zip(outcomes) {
            intake.added += outcome.added;
            intake.repeated += outcome.repeated;
            intake.refused += outcome.refused;
            if outcome.retry {
                intake.retry.push(message.message_id.clone());
            }
        }
        tracing::info!(
            messages = intake.messages,
            added = intake.added,
            repeated = intake.repeated,
            refused = intake.refused,
            retried_messages = intake.retry.len(),
            "usage batch taken"
        );
        Ok(intake)
    }

    async fn message(&self, message: &SqsMessage, stop: Instant) -> Outcome {
        let message_id = message.message_id.as_str();
        let mut outcome = Outcome::default();
        let reports = match reports_of(&message.body) {
            Ok(reports) => reports,
            Err(reason) => {
                let key = serde_json::from_str::<Value>(&message.body).ok().and_then(|b| key_of(&b));
                tracing::warn!(message_id, code = "InvalidBody", key, reason, "a usage message was refused");
                outcome.refused += 1;
                return outcome;
            }
        };
        let call = Call::correlated(message_id).until(stop);
        for raw in reports {
            let report = match fulfillment::metering::report_from_json(&raw) {
                Ok(report) => report,
                Err(reason) => {
                    tracing::warn!(
                        message_id,
                        code = "InvalidReport",
                        key = key_of(&raw),
                        reason,
                        "a usage report was refused"
                    );
                    outcome.refused += 1;
                    continue;
                }
            };
            if Instant::now() >= stop {
                // Out of time: the rest of the message is taken when SQS delivers it again.
                tracing::warn!(message_id, "out of time; SQS delivers the message again");
                outcome.retry = true;
                return outcome;
            }
            match self.meter.report(&report, &call).await {
                Ok(Taken::Added) => outcome.added += 1,
                Ok(Taken::AddedLater(hour)) => {
                    tracing::info!(message_id, subscription_id = %report.subscription_id, key = report.key, %hour, "a usage report came after its hour was closed for sending: added to the current hour");
                    outcome.added += 1;
                }
                Ok(Taken::Repeated) => outcome.repeated += 1,
                Err(MeteringError::Refused(refusal)) => {
                    refused(message_id, &report, &refusal);
                    outcome.refused += 1;
                }
                Err(error) => {
                    let reason = fulfillment::error_chain(&error);
                    if error.is_retryable() {
                        tracing::warn!(message_id, subscription_id = %report.subscription_id, key = report.key, error = %reason, "a usage report failed for now; SQS delivers the message again");
                    } else {
                        tracing::error!(message_id, subscription_id = %report.subscription_id, key = report.key, error = %reason, "a usage report could not be taken; SQS delivers the message again, then moves it to the dead-letter queue");
                    }
                    // The rest of the message waits for its next delivery (its reports added so
                    // far are repeats then).
                    outcome.retry = true;
                    return outcome;
                }
            }
        }
        outcome
    }
}

fn refused(message_id: &str, report: &UsageReport, refusal: &Refusal) {
    tracing::warn!(
        message_id,
        code = refusal.code(),
        key = report.key,
        subscription_id = %report.subscription_id,
        dimension = report.dimension,
        reason = %refusal,
        "a usage report was refused"
    );
}

/// A report's key, if it has one, for the log.
fn key_of(report: &Value) -> Option<String> {
    report.get("key").and_then(Value::as_str).map(str::to_owned)
}

/// The reports a message body carries, unread; why it carries none that can be taken.
fn reports_of(body: &str) -> Result<Vec<Value>, String> {
    let body: Value = serde_json::from_str(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !body.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let Some(usage) = body.get("usage") else {
        return Ok(vec![body]);
    };
    let reports = usage.as_array().ok_or("usage is not a list of reports")?;
    if reports.is_empty() || reports.len() > MAX_REPORTS {
        return Err(format!("usage must hold 1 to {MAX_REPORTS} reports, not {}", reports.len()));
    }
    Ok(reports.clone())
}

/// Lambda's partial batch response (`ReportBatchItemFailures`): the messages SQS must deliver
/// again.
pub fn batch_response(intake: &Intake) -> Value {
    let failures: Vec<Value> = intake.retry.iter().map(|id| json!({ "itemIdentifier": id })).collect();
    json!({ "batchItemFailures": failures })
}
