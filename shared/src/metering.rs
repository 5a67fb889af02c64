//! Metered billing (docs/marketplace-api.md#metering-api): the product's usage in, added up per
//! subscription, dimension and hour ([`Meter`]); each closed hour sent to Microsoft once
//! ([`crate::emission`]). Microsoft takes one event per subscription, dimension and hour, within
//! 24 hours of that hour: usage is refused here when it could not be sent in time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::domain::{PlanId, SubscriptionId, SubscriptionStatus, Timestamp};
use crate::marketplace::{Call, MarketplaceApi, MarketplaceError};
use crate::store::usage::{Added, HourState, UsageReport, UsageStore, hour_of};
use crate::store::{StoreError, SubscriptionStore};

/// How far ahead of our clock a report may be (the product's clock may run a little fast).
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// Microsoft takes an hour's usage within 24 hours of its start.
pub const MICROSOFT_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// Usage is taken only while this much of Microsoft's window is left to send it in.
pub const SEND_MARGIN: chrono::Duration = chrono::Duration::hours(1);
/// The quantities taken: DynamoDB holds numbers of at most 38 digits, so a sum of quantities
/// between these stays exact.
pub const MIN_QUANTITY: f64 = 1e-6;
pub const MAX_QUANTITY: f64 = 1e12;
/// How long a plan's metering dimensions, as Microsoft lists them, are kept.
const DIMENSIONS_KEPT: chrono::Duration = chrono::Duration::hours(1);
/// Longest idempotency key and dimension id taken.
pub const MAX_KEY_LENGTH: usize = 256;
pub const MAX_DIMENSION_LENGTH: usize = 128;

/// Why a report was refused; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the key must be 1 to {MAX_KEY_LENGTH} printable characters")]
    InvalidKey,
    #[error("the dimension must be 1 to {MAX_DIMENSION_LENGTH} printable characters without '#' or spaces")]
    InvalidDimension,
    #[error("the quantity must be a number from {MIN_QUANTITY} to {MAX_QUANTITY}")]
    InvalidQuantity,
    #[error("the usage's time {0} is in the future")]
    InFuture(Timestamp),
    #[error(
        "the usage's hour {0} is too old: Microsoft takes an hour's usage within 24 hours, and an hour is needed to send it"
    )]
    TooOld(Timestamp),
    #[error("no subscription {0} is recorded")]
    UnknownSubscription(SubscriptionId),
    #[error("the subscription is {0}: usage is taken only for Subscribed ones")]
    NotSubscribed(String),
    #[error("the subscription's plan {0} has no metering dimensions")]
    Unmetered(PlanId),
    #[error("{dimension} is not a metering dimension of plan {plan} (it has: {known})")]
    UnknownDimension { dimension: String, plan: PlanId, known: String },
    #[error("the hour {0} is already {1}: its usage was closed for sending to Microsoft")]
    HourClosed(Timestamp, &'static str),
    #[error("the key was used before for other usage")]
    KeyReused,
}

impl Refusal {
    /// A stable code for the admin API and the logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidKey => "InvalidKey",
            Self::InvalidDimension => "InvalidDimension",
            Self::InvalidQuantity => "InvalidQuantity",
            Self::InFuture(_) => "InFuture",
            Self::TooOld(_) => "TooOld",
            Self::UnknownSubscription(_) => "UnknownSubscription",
            Self::NotSubscribed(_) => "NotSubscribed",
            Self::Unmetered(_) => "Unmetered",
            Self::UnknownDimension { .. } => "UnknownDimension",
            Self::HourClosed(..) => "HourClosed",
            Self::KeyReused => "KeyReused",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    #[error("usage refused: {0}")]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the plan's metering dimensions could not be read from Microsoft")]
    Marketplace(#[from] MarketplaceError),
}

impl MeteringError {
    /// Whether the same report may be taken later (the store or Microsoft failed for now).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused(_) => false,
            Self::Store(error) => error.is_retryable(),
            Self::Marketplace(error) => error.is_retryable(),
        }
    }
}

/// What taking a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Added to its hour.
    Added,
    /// Its key was taken before: nothing added.
    Repeated,
    /// Its hour was already closed for sending: added to this later hour (the current one).
    AddedLater(Timestamp),
}

/// A plan's metering dimensions as Microsoft listed them, and when.
type Listed = (Timestamp, Arc<Vec<String>>);

/// Takes the product's usage reports.
pub struct Meter<S, M, C> {
    store: S,
    marketplace: M,
    clock: C,
    /// Each offer's plan's metering dimensions, as Microsoft listed them, and when.
    dimensions: Mutex<HashMap<(Option<String>, PlanId), Listed>>,
}

/// Times a concurrent write to the same hour is tried again before giving up for now.
const CONFLICT_RETRIES: usize = 5;

impl<S: SubscriptionStore + UsageStore, M: MarketplaceApi, C: Clock> Meter<S, M, C> {
    pub fn new(store: S, marketplace: M, clock: C) -> Self {
        Self { store, marketplace, clock, dimensions: Mutex::default() }
    }

    /// The store usage is added to (the admin API reads the hours back from it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Microsoft's API as the meter calls it (the admin API compares with `GET /usageEvents`).
    pub fn marketplace(&self) -> &M {
        &self.marketplace
    }

    /// Adds `report` to its hour, once per key; refuses what Microsoft would not take.
    pub async fn report(&self, report: &UsageReport, call: &Call) -> Result<Taken, MeteringError> {
        let now = self.clock.now();
        check_form(report, now)?;
        let id = &report.subscription_id;
        let record = self.store.get(id).await?.ok_or_else(|| Refusal::UnknownSubscription(id.clone()))?;
        let subscription = &record.subscription;
        if subscription.status != Some(SubscriptionStatus::Subscribed) {
            let status = subscription
                .status
                .as_ref()
                .map_or_else(|| "of unknown status".to_owned(), |s| s.to_string());
            return Err(Refusal::NotSubscribed(status).into());
        }
        let plan =
            subscription.plan_id.clone().ok_or_else(|| Refusal::NotSubscribed("without a plan".into()))?;
        let known = self.dimensions_of(id, subscription.offer_id.as_deref(), &plan, now, call).await?;
        if known.is_empty() {
            return Err(Refusal::Unmetered(plan).into());
        }
        if !known.contains(&report.dimension) {
            return Err(Refusal::UnknownDimension {
                dimension: report.dimension.clone(),
                plan,
                known: known.join(", "),
            }
            .into());
        }
        let (own, current) = (hour_of(report.at), hour_of(now));
        let (mut hour, mut tries) = (own, 0);
        loop {
            match self.store.add_usage_to(report, hour, &plan, now).await {
                Ok(Added::Added) if hour == own => return Ok(Taken::Added),
                Ok(Added::Added) => return Ok(Taken::AddedLater(hour)),
                Ok(Added::Repeated) => return Ok(Taken::Repeated),
                Ok(Added::KeyReused) => return Err(Refusal::KeyReused.into()),
                // Its hour is being sent or was: the usage goes to the current hour, which
                // Microsoft will take (docs/marketplace-api.md#metering-rules).
                Ok(Added::HourClosed(_)) if hour < current => hour = current,
                Ok(Added::HourClosed(state)) => {
                    return Err(Refusal::HourClosed(hour, state_name(&state)).into());
                }
                // Two reports to one hour at once: DynamoDB lets one transaction through. The
                // others wait a little, each a different while, so that they do not meet again.
                Err(StoreError::Conflict { .. }) if tries < CONFLICT_RETRIES => {
                    tries += 1;
                    let most = 10u64 << tries;
                    let nanos = std::time::UNIX_EPOCH.elapsed().map_or(0, |d| u64::from(d.subsec_nanos()));
                    let wait = most / 2 + nanos % (most / 2);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The plan's metering dimensions, from Microsoft's plans for this subscription: kept an
    /// hour per offer and plan (plan ids are an offer's own), unless Microsoft listed none.
    async fn dimensions_of(
        &self,
        id: &SubscriptionId,
        offer: Option<&str>,
        plan: &PlanId,
        now: Timestamp,
        call: &Call,
    ) -> Result<Arc<Vec<String>>, MeteringError> {
        let key = (offer.map(str::to_owned), plan.clone());
        if let Some((read, known)) = self.dimensions.lock().expect("dimensions").get(&key)
            && now < *read + DIMENSIONS_KEPT
        {
            return Ok(known.clone());
        }
        let plans = self.marketplace.list_available_plans(id, Some(plan), call).await?;
        let known: Vec<String> = plans
            .iter()
            .filter(|p| &p.plan_id == plan)
            .flat_map(|p| p.plan_components.iter().flat_map(|c| c.metering_dimensions.iter()))
            .filter_map(|d| d.id.clone())
            .collect();
        let known = Arc::new(known);
        if !known.is_empty() {
            self.dimensions.lock().expect("dimensions").insert(key, (now, known.clone()));
        }
        Ok(known)
    }
}

fn state_name(state: &HourState) -> &'static str {
    match state {
        HourState::Open | HourState::Sending { .. } => "being sent",
        HourState::Accepted { .. } => "accepted by Microsoft",
        HourState::Refused { .. } => "refused by Microsoft",
    }
}

fn printable(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.chars().all(|c| !c.is_control())
}

/// What can be told from the report alone.
pub fn check_form(report: &UsageReport, now: Timestamp) -> Result<(), Refusal> {
    if !printable(&report.key, MAX_KEY_LENGTH) {
        return Err(Refusal::InvalidKey);
    }
    let dimension = &report.dimension;
    if !printable(dimension, MAX_DIMENSION_LENGTH)
        || dimension.contains('#')
        || dimension.contains(char::is_whitespace)
    {
        return Err(Refusal::InvalidDimension);
    }
    if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&report.quantity) {
        return Err(Refusal::InvalidQuantity);
    }
    if report.at > now + CLOCK_SKEW {
        return Err(Refusal::InFuture(report.at));
    }
    let hour = hour_of(report.at);
    if hour + MICROSOFT_WINDOW - SEND_MARGIN <= now {
        return Err(Refusal::TooOld(hour));
    }
    Ok(())
}

/// Most reports one request or message may carry.
pub const MAX_REPORTS: usize = 100;

/// A report as the product sends it (`{"subscriptionId", "dimension", "quantity", "time",
/// "key"}`), read field by field so that every problem is named. What [`check_form`] judges (an
/// empty key, a quantity of 0, ...) is left to it, so that it answers with its own codes.
pub fn report_from_json(item: &serde_json::Value) -> Result<UsageReport, String> {
    use serde_json::Value;
    if !item.is_object() {
        return Err("a usage report is a JSON object".into());
    }
    let text = |name: &str| item.get(name).and_then(Value::as_str);
    let mut problems = Vec::new();
    let id = text("subscriptionId")
        .and_then(crate::domain::lenient::canonical_guid)
        .and_then(|g| SubscriptionId::parse(&g));
    if id.is_none() {
        problems.push("subscriptionId must be a GUID");
    }
    if text("dimension").is_none() {
        problems.push("dimension must be a string");
    }
    let quantity = item.get("quantity").and_then(Value::as_f64);
    if quantity.is_none() {
        problems.push("quantity must be a number");
    }
    let at = text("time")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    if at.is_none() {
        problems.push("time must be an RFC 3339 timestamp");
    }
    if text("key").is_none() {
        problems.push("key must be a string");
    }
    match (id, text("dimension"), quantity, at, text("key")) {
        (Some(subscription_id), Some(dimension), Some(quantity), Some(at), Some(key)) => Ok(UsageReport {
            subscription_id,
            dimension: dimension.to_owned(),
            quantity,
            at,
            key: key.to_owned(),
        }),
        _ => Err(problems.join("; ")),
    }
}
