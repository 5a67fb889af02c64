//! The metering routes (docs/marketplace-api.md#metering-api): the product's usage in, and what
//! became of it.
//!
//! `POST /admin/usage` `{"usage": [{"subscriptionId", "dimension", "quantity", "time", "key"}]}`
//! takes 1 to [`MAX_REPORTS`] reports, each through [`Meter::report`] (at most [`CONCURRENCY`] at
//! once), and answers each in request order: `added`, `repeated` (its key was taken before),
//! `refused` (with a stable code: [`fulfillment::metering::Refusal::code`], `InvalidReport` for an
//! item that does not parse, `StoreFailed` or `MarketplaceRefused` for a fault retrying will not
//! fix) or `retry` (the store or Microsoft failed for now: send it again with the same key).
//! Nothing of a refused or retried report is stored. 503 when every report is to be retried.
//!
//! `GET /admin/subscriptions/{id}/usage?from=&to=&compare=` lists the hours that overlap the
//! window (default: the last [`DEFAULT_WINDOW`]; at most [`MAX_WINDOW`]) per dimension, where each
//! stands, and totals per dimension. `compare=true` adds Microsoft's records (`GET /usageEvents`,
//! a day per record) and, per day and dimension, what we recorded as accepted against Microsoft's
//! `submittedQuantity` (what it took from us; `processedQuantity` lags behind it while Microsoft
//! processes, so it is shown, not compared).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use fulfillment::clock::Clock;
use fulfillment::domain::lenient::canonical_guid;
use fulfillment::domain::{SubscriptionId, Timestamp, UsageQuery, UsageRecord};
use fulfillment::marketplace::{Call, MarketplaceApi, MarketplaceError};
use fulfillment::metering::{Meter, MeteringError, Taken};
use fulfillment::store::usage::{HourState, UsageHour, UsageReport, UsageStore, hour_of};
use fulfillment::store::{StoreError, SubscriptionStore};
use fulfillment::web::{query, respond};
use futures::StreamExt;
use lambda_http::Request;
use lambda_http::http::{Response, StatusCode};
use serde_json::{Map, Value, json};

pub use fulfillment::metering::MAX_REPORTS;

use crate::AdminApi;

/// The usage body's limit: 100 reports with the longest keys and dimensions fit (the other
/// routes' 16 KiB would not).
pub const MAX_USAGE_BODY: usize = 64 * 1024;
/// Reports taken at once: enough to answer 100 well inside the function's timeout, few enough
/// not to crowd the table or Microsoft.
pub const CONCURRENCY: usize = 8;
/// The usage view's window when `from` is not given.
pub const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(48);
/// The longest window asked at once (its answer stays well inside Lambda's 6 MB).
pub const MAX_WINDOW: TimeDelta = TimeDelta::days(31);
/// What Microsoft's calls of one request may take.
const MARKETPLACE_BUDGET: Duration = Duration::from_secs(20);
/// Quantities are floating point: a difference below this share is not a mismatch.
const TOLERANCE: f64 = 1e-6;

/// One item of the request: a report, or why it is not one (with what it named, to answer with).
enum Item {
    Report(UsageReport),
    Invalid { key: Value, subscription_id: Value, message: String },
}

/// One item's answer.
struct Outcome {
    key: Value,
    subscription_id: Value,
    status: &'static str,
    code: Option<&'static str>,
    message: Option<String>,
}

impl Outcome {
    fn json(&self) -> Value {
        let mut item = Map::new();
        item.insert("key".into(), self.key.clone());
        item.insert("subscriptionId".into(), self.subscription_id.clone());
        item.insert("status".into(), self.status.into());
        if let Some(code) = self.code {
            item.insert("code".into(), code.into());
        }
        if let Some(message) = &self.message {
            item.insert("message".into(), message.clone().into());
        }
        Value::Object(item)
    }
}

/// The request's reports; `Err` (a 400) when the body is not `{"usage": [1 to 100 items]}`.
fn parse_body(body: &[u8]) -> Result<Vec<Item>, String> {
    if body.len() > MAX_USAGE_BODY {
        return Err(format!("the body is too large (at most {MAX_USAGE_BODY} bytes)"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(items) = value.get("usage").and_then(Value::as_array) else {
        return Err("give {\"usage\": [...]}: an array of usage reports".into());
    };
    if items.is_empty() || items.len() > MAX_REPORTS {
        return Err(format!("give 1 to {MAX_REPORTS} usage reports, not {}", items.len()));
    }
    Ok(items.iter().map(parse_item).collect())
}

fn parse_item(item: &Value) -> Item {
    match fulfillment::metering::report_from_json(item) {
        Ok(report) => Item::Report(report),
        Err(message) => {
            let echo = |name: &str| item.get(name).and_then(Value::as_str).map_or(Value::Null, Value::from);
            Item::Invalid { key: echo("key"), subscription_id: echo("subscriptionId"), message }
        }
    }
}

fn outcome(report: &UsageReport, result: Result<Taken, MeteringError>) -> Outcome {
    let (status, code, message) = match result {
        Ok(Taken::Added) => ("added", None, None),
        Ok(Taken::AddedLater(hour)) => {
            let message = format!("its hour was already closed for sending: added to the hour {hour}");
            ("added", Some("AddedToLaterHour"), Some(message))
        }
        Ok(Taken::Repeated) => ("repeated", None, None),
        Err(MeteringError::Refused(refusal)) => ("refused", Some(refusal.code()), Some(refusal.to_string())),
        Err(error) if error.is_retryable() => {
            let message = format!("{}; send it again with the same key", fulfillment::error_chain(&error));
            ("retry", Some("Unavailable"), Some(message))
        }
        // A missing permission or table, Microsoft refusing our app: sending it again will not
        // help until that is fixed (nothing was stored, so the same key may be sent then).
        Err(error) => {
            let message = fulfillment::error_chain(&error);
            tracing::error!(key = %report.key, error = %message, "usage could not be taken");
            let code = match error {
                MeteringError::Marketplace(_) => "MarketplaceRefused",
                _ => "StoreFailed",
            };
            ("refused", Some(code), Some(message))
        }
    };
    Outcome {
        key: report.key.clone().into(),
        subscription_id: report.subscription_id.as_str().into(),
        status,
        code,
        message,
    }
}

/// The usage view's window and whether to compare with Microsoft.
struct Window {
    from: Timestamp,
    to: Timestamp,
    compare: bool,
}

fn window(raw_query: &str, now: Timestamp) -> Result<Window, String> {
    let time = |name: &str| -> Result<Option<Timestamp>, String> {
        match query::parameter(raw_query, name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(value) => DateTime::parse_from_rfc3339(&value)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| format!("{name} must be an RFC 3339 timestamp, such as 2026-12-01T09:00:00Z")),
        }
    };
    let to = time("to")?.unwrap_or(now);
    let from = time("from")?.unwrap_or(to - DEFAULT_WINDOW);
    if from > to {
        return Err("from must not be after to".into());
    }
    if to - from > MAX_WINDOW {
        return Err(format!("the window is at most {} days", MAX_WINDOW.num_days()));
    }
    let compare = match query::parameter(raw_query, "compare").as_deref() {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => return Err("compare must be true or false".into()),
    };
    Ok(Window { from, to, compare })
}

/// An hour as the admin API shows it.
fn hour_json(hour: &UsageHour) -> Value {
    let mut item = Map::new();
    item.insert("hour".into(), json!(hour.hour));
    item.insert("dimension".into(), hour.dimension.clone().into());
    item.insert("planId".into(), json!(hour.plan_id));
    item.insert("reported".into(), json!(hour.quantity));
    item.insert("reports".into(), hour.reports.into());
    item.insert("state".into(), hour.state.name().into());
    match &hour.state {
        HourState::Open => {}
        HourState::Sending { sent_quantity, attempts, last_error } => {
            item.insert("sent".into(), json!(sent_quantity));
            item.insert("attempts".into(), (*attempts).into());
            if let Some(error) = last_error {
                item.insert("lastError".into(), error.clone().into());
            }
        }
        HourState::Accepted { sent_quantity, usage_event_id, duplicate, .. } => {
            item.insert("sent".into(), json!(sent_quantity));
            if let Some(id) = usage_event_id {
                item.insert("usageEventId".into(), id.clone().into());
            }
            item.insert("duplicate".into(), (*duplicate).into());
        }
        HourState::Refused { sent_quantity, status, message } => {
            item.insert("sent".into(), json!(sent_quantity));
            item.insert("refusal".into(), json!({ "status": status, "message": message }));
        }
    }
    Value::Object(item)
}

/// Per dimension: what was reported, and how much of it is accepted, refused or on its way.
#[derive(Default)]
struct Totals {
    reported: f64,
    accepted: f64,
    refused: f64,
    pending: f64,
}

impl Totals {
    fn add(&mut self, hour: &UsageHour) {
        self.reported += hour.quantity;
        match &hour.state {
            HourState::Open => self.pending += hour.quantity,
            HourState::Sending { sent_quantity, .. } => self.pending += sent_quantity,
            HourState::Accepted { sent_quantity, .. } => self.accepted += sent_quantity,
            HourState::Refused { sent_quantity, .. } => self.refused += sent_quantity,
        }
    }
}

fn totals(hours: &[UsageHour]) -> Value {
    let mut per_dimension: BTreeMap<&str, Totals> = BTreeMap::new();
    for hour in hours {
        per_dimension.entry(&hour.dimension).or_default().add(hour);
    }
    let totals: Map<String, Value> = per_dimension
        .into_iter()
        .map(|(dimension, t)| {
            let value = json!({ "reported": t.reported, "accepted": t.accepted, "refused": t.refused, "pending": t.pending });
            (dimension.to_owned(), value)
        })
        .collect();
    Value::Object(totals)
}

/// Ours against Microsoft's, per day and dimension (Microsoft's records are per day).
fn comparison(hours: &[UsageHour], records: &[UsageRecord], days: (NaiveDate, NaiveDate)) -> Vec<Value> {
    #[derive(Default)]
    struct Day {
        accepted: f64,
        pending: f64,
        submitted: Option<f64>,
        processed: Option<f64>,
        recon: Vec<String>,
    }
    let mut per_day: BTreeMap<(NaiveDate, String), Day> = BTreeMap::new();
    for hour in hours {
        let day = per_day.entry((hour.hour.date_naive(), hour.dimension.clone())).or_default();
        match &hour.state {
            HourState::Accepted { sent_quantity, .. } => day.accepted += sent_quantity,
            HourState::Open => day.pending += hour.quantity,
            HourState::Sending { sent_quantity, .. } => day.pending += sent_quantity,
            HourState::Refused { .. } => {}
        }
    }
    for record in records {
        let (Some(date), Some(dimension)) = (record.usage_date, record.dimension.clone()) else { continue };
        let day = per_day.entry((date.date_naive(), dimension)).or_default();
        let add = |sum: &mut Option<f64>, value: Option<f64>| {
            if let Some(value) = value {
                *sum = Some(sum.unwrap_or(0.0) + value);
            }
        };
        add(&mut day.submitted, record.submitted_quantity.or(Some(0.0)));
        add(&mut day.processed, record.processed_quantity);
        if let Some(status) = &record.recon_status {
            day.recon.push(status.to_string());
        }
    }
    per_day
        .into_iter()
        .filter(|((date, _), _)| (days.0..=days.1).contains(date))
        .map(|((date, dimension), day)| {
            let submitted = day.submitted.unwrap_or(0.0);
            let difference = submitted - day.accepted;
            let mismatch = difference.abs() > TOLERANCE * day.accepted.abs().max(1.0);
            json!({
                "day": date.to_string(),
                "dimension": dimension,
                "accepted": day.accepted,
                "pending": day.pending,
                "microsoftSubmitted": day.submitted,
                "microsoftProcessed": day.processed,
                "reconStatus": day.recon,
                "difference": difference,
                "mismatch": mismatch,
            })
        })
        .collect()
}

fn day_start(at: Timestamp) -> Timestamp {
    at.date_naive().and_hms_opt(0, 0, 0).map_or(at, |t| t.and_utc())
}

fn store_failure(error: &StoreError) -> Response<String> {
    let message = fulfillment::error_chain(error);
    tracing::error!(error = %message, "usage could not be read");
    if error.is_retryable() {
        respond::error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &format!("{message}; try again"))
    } else {
        respond::error(StatusCode::INTERNAL_SERVER_ERROR, "StoreFailed", &message)
    }
}

impl<S: SubscriptionStore + UsageStore, M: MarketplaceApi, C: Clock> AdminApi<S, M, C> {
    /// `POST /admin/usage`.
    pub(crate) async fn report_usage(&self, body: &[u8]) -> Response<String> {
        let items = match parse_body(body) {
            Ok(items) => items,
            Err(message) => return respond::error(StatusCode::BAD_REQUEST, "InvalidRequest", &message),
        };
        let call = Call::correlated(format!("usage-{}", uuid::Uuid::new_v4())).within(MARKETPLACE_BUDGET);
        let meter: &Meter<S, M, C> = &self.meter;
        let call = &call;
        let tasks = items.into_iter().map(|item| async move {
            match item {
                Item::Report(report) => outcome(&report, meter.report(&report, call).await),
                Item::Invalid { key, subscription_id, message } => Outcome {
                    key,
                    subscription_id,
                    status: "refused",
                    code: Some("InvalidReport"),
                    message: Some(message),
                },
            }
        });
        // At most CONCURRENCY at once; answers in the request's order.
        let outcomes: Vec<Outcome> = futures::stream::iter(tasks).buffered(CONCURRENCY).collect().await;
        let count = |status: &str| outcomes.iter().filter(|o| o.status == status).count();
        let (added, repeated, refused, retry) =
            (count("added"), count("repeated"), count("refused"), count("retry"));
        tracing::info!(added, repeated, refused, retry, "usage reported");
        let body = json!({
            "results": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
            "added": added, "repeated": repeated, "refused": refused, "retry": retry,
        });
        // Nothing was taken and all of it may be sent again: the request as a whole failed for now.
        let status = if retry == outcomes.len() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        respond::json(status, &body)
    }

    /// `GET /admin/subscriptions/{id}/usage`.
    pub(crate) async fn usage(&self, request: &Request, id: &SubscriptionId) -> Response<String> {
        let raw = request.uri().query().unwrap_or_default();
        let Window { from, to, compare } = match window(raw, self.clock.now()) {
            Ok(window) => window,
            Err(message) => return respond::error(StatusCode::BAD_REQUEST, "InvalidRequest", &message),
        };
        let store = self.meter.store();
        match store.get(id).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let message = format!("subscription {id} is not known");
                return respond::error(StatusCode::NOT_FOUND, "SubscriptionNotFound", &message);
            }
            Err(error) => return store_failure(&error),
        }
        // Microsoft's records are per day: the comparison needs our whole first and last days.
        let (first, last) = if compare {
            (day_start(from), day_start(to) + TimeDelta::hours(23))
        } else {
            (hour_of(from), hour_of(to))
        };
        let all = match store.usage_of(id, first, last).await {
            Ok(hours) => hours,
            Err(error) => return store_failure(&error),
        };
        let shown: Vec<UsageHour> =
            all.iter().filter(|h| h.hour >= hour_of(from) && h.hour <= to).cloned().collect();
        let mut body = json!({
            "subscriptionId": id,
            "from": from,
            "to": to,
            "hours": shown.iter().map(hour_json).collect::<Vec<_>>(),
            "totals": totals(&shown),
        });
        if compare {
            let (microsoft, extra) = match self.microsoft_usage(id, from).await {
                Ok(records) => {
                    let records: Vec<UsageRecord> = records
                        .into_iter()
                        .filter(|r| r.usage_date.is_some_and(|d| d >= first && d <= last))
                        .collect();
                    let days = comparison(&all, &records, (from.date_naive(), to.date_naive()));
                    (json!(records), json!({ "compared": "submittedQuantity", "comparison": days }))
                }
                Err(error) => {
                    let message = fulfillment::error_chain(&error);
                    tracing::warn!(subscription_id = %id, error = %message, "Microsoft's usage could not be read");
                    (Value::Null, json!({ "microsoftError": message }))
                }
            };
            body["microsoft"] = microsoft;
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                body.extend(extra);
            }
        }
        respond::json(StatusCode::OK, &body)
    }

    /// Microsoft's usage records of this subscription, from `from`'s day on.
    async fn microsoft_usage(
        &self,
        id: &SubscriptionId,
        from: Timestamp,
    ) -> Result<Vec<UsageRecord>, MarketplaceError> {
        let call = Call::correlated(format!("usage-{}", uuid::Uuid::new_v4())).within(MARKETPLACE_BUDGET);
        let query = UsageQuery {
            usage_start_date: day_start(from),
            usage_end_date: None,
            offer_id: None,
            plan_id: None,
            dimension: None,
        };
        let records = self.meter.marketplace().get_usage_events(&query, &call).await?;
        let ours = |r: &UsageRecord| {
            r.usage_resource_id.as_deref().and_then(canonical_guid).as_deref() == Some(id.as_str())
        };
        Ok(records.into_iter().filter(ours).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(at: &str, dimension: &str, quantity: f64, state: HourState) -> UsageHour {
        let at = DateTime::parse_from_rfc3339(at).expect("time").with_timezone(&Utc);
        UsageHour {
            subscription_id: SubscriptionId::parse("0e7e0000-0000-4000-8000-000000000001").expect("id"),
            dimension: dimension.into(),
            hour: at,
            plan_id: fulfillment::domain::PlanId::parse("team-monthly").expect("plan"),
            quantity,
            reports: 1,
            state,
            updated_at: at,
        }
    }

    fn accepted(quantity: f64) -> HourState {
        HourState::Accepted {
            sent_quantity: quantity,
            usage_event_id: None,
            message_time: None,
            duplicate: false,
        }
    }

    /// The comparison's success path (the Marketplace model takes no metering calls; the
    /// emulator's path is the integration tests').
    #[test]
    fn ours_is_compared_with_microsofts_submitted_quantity_per_day_and_dimension() {
        let hours = vec![
            hour("2026-11-30T10:00:00Z", "api-calls", 10.0, accepted(10.0)),
            hour("2026-11-30T11:00:00Z", "api-calls", 5.0, accepted(5.0)),
            hour("2026-11-30T12:00:00Z", "api-calls", 2.0, HourState::Open),
            hour("2026-12-01T01:00:00Z", "api-calls", 4.0, accepted(4.0)),
            hour("2026-12-01T02:00:00Z", "storage-gb", 3.0, accepted(3.0)),
        ];
        let record = |day: &str, dimension: &str, submitted: f64, processed: f64| -> UsageRecord {
            serde_json::from_value(json!({
                "usageDate": day, "usageResourceId": "0E7E0000-0000-4000-8000-000000000001",
                "dimension": dimension, "planId": "team-monthly", "reconStatus": "Accepted",
                "submittedQuantity": submitted, "processedQuantity": processed, "submittedCount": 1
            }))
            .expect("a record")
        };
        let records = vec![
            record("2026-11-30T00:00:00Z", "api-calls", 15.0, 12.0),
            record("2026-12-01T00:00:00Z", "api-calls", 9.0, 9.0),
            record("2026-12-02T00:00:00Z", "api-calls", 1.0, 1.0),
        ];
        let days = (
            NaiveDate::from_ymd_opt(2026, 11, 30).expect("day"),
            NaiveDate::from_ymd_opt(2026, 12, 1).expect("day"),
        );
        let rows = comparison(&hours, &records, days);
        let brief: Vec<(String, String, f64, Value, bool)> = rows
            .iter()
            .map(|r| {
                let text = |k: &str| r[k].as_str().expect("text").to_owned();
                (
                    text("day"),
                    text("dimension"),
                    r["difference"].as_f64().expect("difference"),
                    r["microsoftSubmitted"].clone(),
                    r["mismatch"].as_bool().expect("flag"),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                // Equal to what Microsoft took (its processed 12 lags behind; the open hour is pending).
                ("2026-11-30".into(), "api-calls".into(), 0.0, json!(15.0), false),
                ("2026-12-01".into(), "api-calls".into(), 5.0, json!(9.0), true),
                ("2026-12-01".into(), "storage-gb".into(), -3.0, Value::Null, true),
            ]
        );
        assert_eq!((&rows[0]["pending"], &rows[0]["microsoftProcessed"]), (&json!(2.0), &json!(12.0)));
    }

    #[test]
    fn the_window_defaults_to_two_days_and_is_bounded() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T09:30:00Z").expect("time").with_timezone(&Utc);
        let w = window("", now).expect("default");
        assert_eq!((w.from, w.to, w.compare), (now - DEFAULT_WINDOW, now, false));
        let w = window("from=2026-11-01T00:00:00%2B01:00&to=2026-11-30T00:00:00Z&compare=true", now)
            .expect("a month");
        assert_eq!(w.from.to_rfc3339(), "2026-10-31T23:00:00+00:00");
        assert!(w.compare);
        assert!(window("from=2026-10-01T00:00:00Z", now).is_err(), "over 31 days");
        assert!(window("from=2026-12-02T00:00:00Z", now).is_err(), "from after to");
        assert!(window("from=yesterday", now).is_err());
        assert!(window("compare=yes", now).is_err());
    }
}
