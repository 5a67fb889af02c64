//! Sending usage to Microsoft (docs/marketplace-api.md#batch-usage-events): every hour that closed
//! at least [`Emitter::grace`] ago and is not settled is closed at its total and sent, 25 to a
//! batch; Microsoft's answer for each item settles it or leaves it for the next run.
//!
//! An hour is sent as the quantity it was closed at, every time: a send whose answer was lost is
//! repeated as it was, and Microsoft answers `Duplicate` with what it accepted, so an hour is
//! never billed twice nor as two amounts. 429, 5xx, a lost connection and an item answered
//! `Error` are tried again by the next run; a 403 (or `ResourceNotAuthorized`) too, logged as a
//! configuration fault for the alarm; every other refusal (`Expired`, `ResourceNotActive`, ...)
//! is final, but for one about the plan (`BadArgument`, `InvalidDimension`) where Microsoft has
//! the subscription on another plan than our record: then the hour is sent again with that one;
//! and but for `Expired` and `ResourceNotActive` (Microsoft checks those before duplicates) where
//! Microsoft's usage record shows an earlier send was accepted: then the hour is accepted.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::clock::Clock;
use crate::domain::{PlanId, UsageEvent, UsageEventResult, UsageEventStatus};
use crate::marketplace::{Call, MarketplaceApi, MarketplaceError};
use crate::metering::MICROSOFT_WINDOW;
use crate::store::usage::{HourKey, HourState, UsageHour, UsageStore, hour_of};
use crate::store::{StoreError, SubscriptionStore};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmissionReport {
    /// Unsettled hours found.
    pub hours: u64,
    /// Hours closed by this run (they took usage until then).
    pub closed: u64,
    /// Batch calls made.
    pub calls: u64,
    /// Accepted now (first send).
    pub accepted: u64,
    /// Accepted before (a repeated send): `Duplicate`.
    pub duplicates: u64,
    /// Refused for good, by Microsoft's status.
    pub refused: BTreeMap<String, u64>,
    /// Left for the next run (throttled, failed, no answer).
    pub retried: u64,
    /// Left for the next run because our app may not report for the resource (403).
    pub not_authorized: u64,
    /// Still unsettled with less than [`NEAR_EXPIRY`] of Microsoft's 24 hours left.
    pub near_expiry: u64,
    /// Store calls that failed (the hours stay for the next run).
    pub store_errors: u64,
    pub elapsed_ms: u64,
}

/// An unsettled hour with less than this of Microsoft's window left is reported (and alarmed).
pub const NEAR_EXPIRY: chrono::Duration = chrono::Duration::hours(4);

pub struct Emitter<S, M, C> {
    store: S,
    marketplace: M,
    clock: C,
    /// An hour is sent once it ended this long ago: usage reported a little late still counts.
    pub grace: chrono::Duration,
    /// How far back unsettled hours are looked for (beyond Microsoft's window, so that an hour
    /// left behind is still settled, as `Expired`).
    pub lookback: chrono::Duration,
}

/// How an item's answer settles its hour.
enum Verdict {
    Settled(HourState),
    Again(String),
    NotAuthorized(String),
}

impl<S: UsageStore + SubscriptionStore, M: MarketplaceApi, C: Clock> Emitter<S, M, C> {
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self {
            store,
            marketplace,
            clock,
            grace: chrono::Duration::minutes(10),
            lookback: chrono::Duration::hours(48),
        }
    }

    /// One run: every unsettled hour that is due, sent.
    pub async fn run(&self, run_id: &str, call: &Call) -> EmissionReport {
        let started = Instant::now();
        let mut report = EmissionReport::default();
        let now = self.clock.now();
        let last = hour_of(now - self.grace) - chrono::Duration::hours(1);
        let mut sending: Vec<UsageHour> = Vec::new();
        let mut hour = hour_of(now - self.lookback);
        while hour <= last {
            match self.store.unsettled(hour).await {
                Ok(found) => {
                    report.hours += found.len() as u64;
                    for usage in found {
                        match self.close(usage, &mut report).await {
                            Some(closed) => sending.push(closed),
                            None => report.store_errors += 1,
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(run_id, hour = %hour, error = %crate::error_chain(&error), "unsettled usage could not be read");
                    report.store_errors += 1;
                }
            }
            hour += chrono::Duration::hours(1);
        }
        self.current_plans(run_id, &mut sending).await;
        let mut stopped = false;
        let mut left = Vec::new();
        let mut to_check = Vec::new();
        for batch in sending.chunks(crate::marketplace::MAX_BATCH) {
            if stopped {
                report.retried += batch.len() as u64;
                left.extend(batch.iter().cloned());
                continue;
            }
            let sent = self.send(run_id, batch, call, &mut report, true).await;
            stopped = sent.stop;
            left.extend(sent.after.into_iter().filter(|h| !h.state.is_settled()));
            to_check.extend(sent.to_check);
        }
        // Refused where Microsoft may have taken an earlier send: its record says.
        let (about_plan, about_record): (Vec<_>, Vec<_>) =
            to_check.into_iter().partition(|(_, verdict)| plan_refusal(verdict));
        self.with_microsofts_record(run_id, about_record, call, &mut report).await;
        // Refused for the plan: sent again with Microsoft's, once, where ours is behind.
        let resend = self.with_microsofts_plans(run_id, about_plan, call, &mut report).await;
        left.extend(resend.iter().filter(|_| stopped).cloned());
        for batch in resend.chunks(crate::marketplace::MAX_BATCH).filter(|_| !stopped) {
            let sent = self.send(run_id, batch, call, &mut report, false).await;
            left.extend(sent.after.into_iter().filter(|h| !h.state.is_settled()));
        }
        if stopped {
            report.retried += resend.len() as u64;
        }
        let now = self.clock.now();
        // The next runs will not look this far back: an hour Microsoft never took is given up
        // here, as expired, rather than left pending where no run finds it.
        let oldest = hour_of(now - self.lookback);
        let (given_up, left): (Vec<UsageHour>, Vec<UsageHour>) =
            left.into_iter().partition(|h| h.hour <= oldest);
        for usage in given_up {
            let last_error = match &usage.state {
                HourState::Sending { last_error: Some(error), .. } => error.clone(),
                _ => "none".into(),
            };
            let state = HourState::Refused {
                sent_quantity: sent_quantity(&usage),
                status: "Expired".into(),
                message: format!(
                    "given up: not accepted by Microsoft within its 24 hours (last error: {last_error})"
                ),
            };
            self.record(run_id, &usage, Verdict::Settled(state), &mut report).await;
        }
        for usage in left.iter().filter(|h| h.hour + MICROSOFT_WINDOW - now < NEAR_EXPIRY) {
            report.near_expiry += 1;
            let error = match &usage.state {
                HourState::Sending { last_error, .. } => last_error.clone(),
                _ => None,
            };
            tracing::error!(run_id, subscription_id = %usage.subscription_id, dimension = usage.dimension, hour = %usage.hour, error, "a usage hour near the end of Microsoft's 24 hours is still not accepted");
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            run_id,
            hours = report.hours,
            closed = report.closed,
            calls = report.calls,
            accepted = report.accepted,
            duplicates = report.duplicates,
            refused = report.refused.values().sum::<u64>(),
            refused_by_status = ?report.refused,
            retried = report.retried,
            not_authorized = report.not_authorized,
            near_expiry = report.near_expiry,
            store_errors = report.store_errors,
            elapsed_ms = report.elapsed_ms,
            "metering run ended"
        );
        report
    }

    /// Each hour is sent with the plan its subscription is on now, as Microsoft checks it: the
    /// plan may have changed since the hour's first report. (Microsoft takes one event per
    /// subscription, dimension and hour whatever the plan, so a repeated send is still answered
    /// `Duplicate`.) If our records cannot be read, the hours keep the plan they have.
    async fn current_plans(&self, run_id: &str, hours: &mut [UsageHour]) {
        let mut ids: Vec<crate::domain::SubscriptionId> =
            hours.iter().map(|h| h.subscription_id.clone()).collect();
        ids.sort();
        ids.dedup();
        match self.store.get_many(&ids).await {
            Ok(records) => {
                let plans: HashMap<_, _> = records
                    .into_iter()
                    .filter_map(|r| Some((r.subscription.id.clone(), r.subscription.plan_id?)))
                    .collect();
                for hour in hours.iter_mut() {
                    if let Some(plan) = plans.get(&hour.subscription_id) {
                        hour.plan_id = plan.clone();
                    }
                }
            }
            Err(error) => {
                tracing::warn!(run_id, error = %crate::error_chain(&error), "the subscriptions' plans could not be read; the hours are sent with the plan of their first report");
            }
        }
    }

    /// The hour closed at its total (already closed: as it is); `None` if the store failed.
    async fn close(&self, usage: UsageHour, report: &mut EmissionReport) -> Option<UsageHour> {
        if !matches!(usage.state, HourState::Open) {
            return Some(usage);
        }
        match self.store.close_hour(&usage.key(), self.clock.now()).await {
            Ok(Some(closed)) => {
                report.closed += 1;
                Some(closed)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::error!(subscription_id = %usage.subscription_id, dimension = usage.dimension, error = %crate::error_chain(&error), "a usage hour could not be closed");
                None
            }
        }
    }

    /// Sends one batch and records each item's answer, but for a refusal to be checked with
    /// Microsoft first when `check_plans` (about the plan, or after an earlier send): those are
    /// returned.
    async fn send(
        &self,
        run_id: &str,
        batch: &[UsageHour],
        call: &Call,
        report: &mut EmissionReport,
        check_plans: bool,
    ) -> Sent {
        let events: Vec<UsageEvent> = batch
            .iter()
            .map(|h| UsageEvent {
                resource_id: h.subscription_id.clone(),
                quantity: sent_quantity(h),
                dimension: h.dimension.clone(),
                effective_start_time: h.hour,
                plan_id: h.plan_id.clone(),
            })
            .collect();
        report.calls += 1;
        let (verdicts, stop): (Vec<Verdict>, bool) = match self
            .marketplace
            .post_usage_events(&events, call)
            .await
        {
            Ok(answer) => {
                let mut by_key: HashMap<HourKey, UsageEventResult> = HashMap::new();
                for item in answer.result {
                    if let Some(key) = result_key(&item) {
                        by_key.insert(key, item);
                    }
                }
                (batch.iter().map(|h| verdict(h, by_key.remove(&h.key()))).collect(), false)
            }
            // The batch as a whole was refused: one bad event must not hold the others back
            // until they expire, so each half is sent on its own, down to single events.
            Err(error @ MarketplaceError::BadRequest { .. }) if batch.len() > 1 => {
                tracing::warn!(run_id, events = batch.len(), error = %crate::error_chain(&error), "Microsoft refused a usage batch as a whole: its halves are sent apart");
                let (first, second) = batch.split_at(batch.len() / 2);
                let mut sent = Box::pin(self.send(run_id, first, call, report, check_plans)).await;
                if sent.stop {
                    report.retried += second.len() as u64;
                    sent.after.extend(second.iter().cloned());
                    return sent;
                }
                let rest = Box::pin(self.send(run_id, second, call, report, check_plans)).await;
                sent.stop = rest.stop;
                sent.after.extend(rest.after);
                sent.to_check.extend(rest.to_check);
                return sent;
            }
            Err(error @ MarketplaceError::BadRequest { .. }) => {
                let state = HourState::Refused {
                    sent_quantity: sent_quantity(&batch[0]),
                    status: "BadArgument".into(),
                    message: crate::error_chain(&error),
                };
                (vec![Verdict::Settled(state)], false)
            }
            Err(error @ MarketplaceError::Forbidden { .. }) => {
                let reason = crate::error_chain(&error);
                tracing::error!(run_id, error = %reason, "Microsoft refuses our app's usage reports (403): check the offer's technical configuration; the usage stays pending");
                (batch.iter().map(|_| Verdict::NotAuthorized(reason.clone())).collect(), false)
            }
            Err(error) => {
                let reason = crate::error_chain(&error);
                tracing::warn!(run_id, error = %reason, "a usage batch was not taken; the next run sends it again");
                let stop = error.is_retryable();
                (batch.iter().map(|_| Verdict::Again(reason.clone())).collect(), stop)
            }
        };
        let mut sent = Sent { stop, after: Vec::with_capacity(batch.len()), to_check: Vec::new() };
        for (usage, verdict) in batch.iter().zip(verdicts) {
            if check_plans && (plan_refusal(&verdict) || after_earlier_send(&verdict)) {
                sent.to_check.push((usage.clone(), verdict));
                continue;
            }
            sent.after.push(self.record(run_id, usage, verdict, report).await);
        }
        sent
    }

    /// Looks up Microsoft's plan of each hour refused for what may be its plan: an hour whose
    /// subscription Microsoft has on another plan is returned, with that plan, to be sent again;
    /// the others' refusals are recorded (an hour Microsoft cannot be asked about is left for
    /// the next run).
    async fn with_microsofts_plans(
        &self,
        run_id: &str,
        refused: Vec<(UsageHour, Verdict)>,
        call: &Call,
        report: &mut EmissionReport,
    ) -> Vec<UsageHour> {
        let mut plans: HashMap<crate::domain::SubscriptionId, Result<Option<PlanId>, String>> =
            HashMap::new();
        let mut resend = Vec::new();
        for (mut usage, verdict) in refused {
            let id = usage.subscription_id.clone();
            if !plans.contains_key(&id) {
                let plan = match self.marketplace.get_subscription(&id, call).await {
                    Ok(subscription) => Ok(subscription.plan_id),
                    Err(error) => Err(crate::error_chain(&error)),
                };
                plans.insert(id.clone(), plan);
            }
            let verdict = match &plans[&id] {
                Ok(Some(plan)) if *plan != usage.plan_id => {
                    tracing::info!(run_id, subscription_id = %id, dimension = usage.dimension, hour = %usage.hour, sent = %usage.plan_id, microsofts = %plan, "a usage hour was refused for a plan our record has not caught up with: sent again with Microsoft's");
                    usage.plan_id = plan.clone();
                    resend.push(usage);
                    continue;
                }
                Ok(_) => verdict,
                Err(reason) => {
                    Verdict::Again(format!("refused, and Microsoft's plan could not be read: {reason}"))
                }
            };
            self.record(run_id, &usage, verdict, report).await;
        }
        resend
    }

    /// Settles each hour refused as expired or no longer billable by what Microsoft's usage
    /// record shows: an earlier send whose answer was lost may have been accepted, and Microsoft
    /// checks those before duplicates. Where Microsoft's total for the subscription, dimension
    /// and day holds the hour besides the hours we know were accepted, it is settled accepted.
    async fn with_microsofts_record(
        &self,
        run_id: &str,
        refused: Vec<(UsageHour, Verdict)>,
        call: &Call,
        report: &mut EmissionReport,
    ) {
        // (subscription, dimension, day) → what Microsoft holds that our accepted hours do not.
        let mut surplus: HashMap<HourKey, Result<f64, String>> = HashMap::new();
        for (usage, verdict) in refused {
            let day = usage.hour.date_naive().and_hms_opt(0, 0, 0).map_or(usage.hour, |d| d.and_utc());
            let key = HourKey { hour: day, ..usage.key() };
            if !surplus.contains_key(&key) {
                let unexplained = self.unexplained_usage(&key, call).await;
                surplus.insert(key.clone(), unexplained);
            }
            let quantity = sent_quantity(&usage);
            let verdict = match surplus.get_mut(&key) {
                Some(Ok(left)) if *left + 1e-9 >= quantity => {
                    *left -= quantity;
                    tracing::info!(run_id, subscription_id = %usage.subscription_id, dimension = usage.dimension, hour = %usage.hour, "a usage hour refused on a send again is in Microsoft's usage record: an earlier send was accepted");
                    Verdict::Settled(HourState::Accepted {
                        sent_quantity: quantity,
                        usage_event_id: None,
                        message_time: None,
                        duplicate: true,
                    })
                }
                Some(Ok(_)) => verdict,
                Some(Err(reason)) => Verdict::Again(format!(
                    "refused, and Microsoft's usage record could not be compared: {reason}"
                )),
                None => verdict,
            };
            self.record(run_id, &usage, verdict, report).await;
        }
    }

    /// Microsoft's total for `key`'s subscription, dimension and day (`key.hour`), less what our
    /// hours of that day settled accepted.
    async fn unexplained_usage(&self, key: &HourKey, call: &Call) -> Result<f64, String> {
        let day_end = key.hour + chrono::Duration::days(1) - chrono::Duration::seconds(1);
        let query = crate::domain::UsageQuery {
            usage_start_date: key.hour,
            usage_end_date: Some(day_end),
            offer_id: None,
            plan_id: None,
            dimension: Some(key.dimension.clone()),
        };
        let records =
            self.marketplace.get_usage_events(&query, call).await.map_err(|e| crate::error_chain(&e))?;
        let theirs: f64 = records
            .iter()
            .filter(|r| {
                r.usage_resource_id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(key.subscription_id.as_str()))
            })
            .filter(|r| r.dimension.as_deref() == Some(key.dimension.as_str()))
            .filter_map(|r| r.submitted_quantity)
            .sum();
        let ours: f64 = self
            .store
            .usage_of(&key.subscription_id, key.hour, day_end)
            .await
            .map_err(|e| crate::error_chain(&e))?
            .iter()
            .filter(|h| h.dimension == key.dimension)
            .filter_map(|h| match &h.state {
                HourState::Accepted { sent_quantity, .. } => Some(*sent_quantity),
                _ => None,
            })
            .sum();
        Ok(theirs - ours)
    }

    /// Records Microsoft's answer for one hour (and counts it); the hour as it now stands.
    async fn record(
        &self,
        run_id: &str,
        usage: &UsageHour,
        verdict: Verdict,
        report: &mut EmissionReport,
    ) -> UsageHour {
        let state = match verdict {
            Verdict::Settled(state) => {
                match &state {
                    HourState::Accepted { duplicate: true, .. } => report.duplicates += 1,
                    HourState::Accepted { .. } => report.accepted += 1,
                    HourState::Refused { status, message, .. } => {
                        tracing::warn!(run_id, subscription_id = %usage.subscription_id, dimension = usage.dimension, hour = %usage.hour, status, message, "Microsoft refused a usage hour");
                        *report.refused.entry(status.clone()).or_default() += 1;
                    }
                    _ => {}
                }
                state
            }
            Verdict::Again(reason) => {
                report.retried += 1;
                again(usage, reason)
            }
            Verdict::NotAuthorized(reason) => {
                report.not_authorized += 1;
                again(usage, reason)
            }
        };
        let recorded = UsageHour { state, updated_at: self.clock.now(), ..usage.clone() };
        match self.store.record_send(&recorded).await {
            Ok(()) => {}
            // Another run settled it meanwhile (with the same quantity, the same outcome).
            Err(StoreError::Conflict { .. }) => {}
            Err(error) => {
                // Sent but not recorded: the next run sends it again, and Microsoft answers
                // `Duplicate`.
                tracing::error!(run_id, subscription_id = %usage.subscription_id, error = %crate::error_chain(&error), "Microsoft's answer for a usage hour could not be recorded");
                report.store_errors += 1;
            }
        }
        recorded
    }
}

/// One batch sent: whether to stop sending for this run (Microsoft is throttling or failing),
/// the hours as they now stand, and those whose refusal is to be checked with Microsoft first.
struct Sent {
    stop: bool,
    after: Vec<UsageHour>,
    to_check: Vec<(UsageHour, Verdict)>,
}

/// A refusal Microsoft gives before it looks for a duplicate, so that an earlier send it accepted
/// (whose answer was lost) may be behind it: the hour is past its 24 hours, or the subscription is
/// no longer billed.
fn after_earlier_send(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Settled(HourState::Refused { status, .. }) if status == "Expired" || status == "ResourceNotActive")
}

/// A refusal that may only mean our record's plan is behind Microsoft's: the plan is not the
/// subscription's (`BadArgument`), or the dimension is not the plan's.
fn plan_refusal(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Settled(HourState::Refused { status, .. }) if status == "BadArgument" || status == "InvalidDimension")
}

fn sent_quantity(hour: &UsageHour) -> f64 {
    match &hour.state {
        HourState::Sending { sent_quantity, .. }
        | HourState::Accepted { sent_quantity, .. }
        | HourState::Refused { sent_quantity, .. } => *sent_quantity,
        HourState::Open => hour.quantity,
    }
}

/// The hour a result answers for: Microsoft's answers come in any order.
fn result_key(item: &UsageEventResult) -> Option<HourKey> {
    Some(HourKey {
        subscription_id: crate::domain::SubscriptionId::parse(item.resource_id.as_deref()?)?,
        dimension: item.dimension.clone()?,
        hour: hour_of(item.effective_start_time?),
    })
}

/// Another attempt, for the next run.
fn again(hour: &UsageHour, reason: String) -> HourState {
    let attempts = match &hour.state {
        HourState::Sending { attempts, .. } => *attempts,
        _ => 0,
    };
    HourState::Sending {
        sent_quantity: sent_quantity(hour),
        attempts: attempts + 1,
        last_error: Some(reason),
    }
}

fn verdict(hour: &UsageHour, item: Option<UsageEventResult>) -> Verdict {
    let Some(item) = item else {
        return Verdict::Again("Microsoft's answer had no item for this hour".into());
    };
    let message = item
        .error
        .as_ref()
        .and_then(|e| e.get("message").and_then(serde_json::Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let quantity = sent_quantity(hour);
    match item.status {
        Some(UsageEventStatus::Accepted) => Verdict::Settled(HourState::Accepted {
            sent_quantity: quantity,
            usage_event_id: item.usage_event_id,
            message_time: item.message_time,
            duplicate: false,
        }),
        Some(UsageEventStatus::Duplicate) => {
            // The earlier send's accepted event, where Microsoft includes it.
            let accepted = item.error.as_ref().and_then(|e| e.pointer("/additionalInfo/acceptedMessage"));
            let text = |field: &str| accepted.and_then(|a| a.get(field)).and_then(serde_json::Value::as_str);
            Verdict::Settled(HourState::Accepted {
                sent_quantity: quantity,
                usage_event_id: text("usageEventId").map(str::to_owned).or(item.usage_event_id),
                message_time: text("messageTime")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .or(item.message_time),
                duplicate: true,
            })
        }
        Some(UsageEventStatus::Error) => Verdict::Again(format!("Microsoft answered Error: {message}")),
        Some(UsageEventStatus::ResourceNotAuthorized) => {
            Verdict::NotAuthorized(format!("ResourceNotAuthorized: {message}"))
        }
        Some(status) => Verdict::Settled(HourState::Refused {
            sent_quantity: quantity,
            status: status.to_string(),
            message,
        }),
        None => Verdict::Again("Microsoft's answer for this hour had no status".into()),
    }
}
