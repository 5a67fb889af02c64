//! The emulator's records and their rendering in Microsoft's exact JSON shapes (docs/marketplace-api.md#subscription-object, #operation-object, #webhook-payload).
//!
//! Deliberately independent of the product's `fulfillment` crate, so both are checked against
//! docs/marketplace-api.md rather than only against each other.

use std::collections::HashSet;

use chrono::{DateTime, Months, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{EmulatorConfig, PlanSpec};
use crate::faults::Quirk;

/// `created`/`lastModified`/`timeStamp` style: UTC with seven fractional digits.
pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), t.timestamp_subsec_nanos() / 100)
}

/// `term.startDate`/`endDate` style: midnight UTC.
pub(crate) fn fmt_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT00:00:00Z").to_string()
}

/// Midnight UTC of the day of `t`.
pub(crate) fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t.date_naive().and_time(NaiveTime::MIN))
}

/// Months in a term unit (P1M, P1Y … P5Y); unknown units count as one month.
fn term_months(term_unit: &str) -> u32 {
    match term_unit {
        "P1Y" => 12,
        "P2Y" => 24,
        "P3Y" => 36,
        "P4Y" => 48,
        "P5Y" => 60,
        _ => 1,
    }
}

/// (start, end) of a term starting at `start`'s day: end = start + term − 1 day.
pub(crate) fn term_from(start: DateTime<Utc>, term_unit: &str) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = midnight(start);
    let next = start.checked_add_months(Months::new(term_months(term_unit))).unwrap_or(start);
    (start, next - chrono::Duration::days(1))
}

/// A random lowercase GUID string.
pub(crate) fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Status of a SaaS subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubStatus {
    PendingFulfillmentStart,
    Subscribed,
    Suspended,
    Unsubscribed,
}

impl SubStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PendingFulfillmentStart => "PendingFulfillmentStart",
            Self::Subscribed => "Subscribed",
            Self::Suspended => "Suspended",
            Self::Unsubscribed => "Unsubscribed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "PendingFulfillmentStart" | "NotStarted" => Some(Self::PendingFulfillmentStart),
            "Subscribed" => Some(Self::Subscribed),
            "Suspended" => Some(Self::Suspended),
            "Unsubscribed" => Some(Self::Unsubscribed),
            _ => None,
        }
    }
}

/// `AadIdentifier` (beneficiary / purchaser).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AadIdentifier {
    #[serde(default)]
    pub email_id: Option<String>,
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub puid: Option<String>,
}

/// A SaaS subscription as the emulator keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Sub {
    pub id: String,
    pub publisher_id: String,
    pub offer_id: String,
    pub name: String,
    pub status: SubStatus,
    pub beneficiary: AadIdentifier,
    pub purchaser: AadIdentifier,
    pub plan_id: String,
    pub quantity: Option<u32>,
    pub term_start: Option<DateTime<Utc>>,
    pub term_end: Option<DateTime<Utc>>,
    pub term_unit: String,
    pub auto_renew: bool,
    pub is_test: bool,
    pub is_free_trial: bool,
    pub allowed_customer_operations: Vec<String>,
    pub sandbox_type: String,
    pub session_mode: String,
    pub created: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    /// Plan and quantity bought: what Activate must be called with.
    pub purchased_plan_id: String,
    pub purchased_quantity: Option<u32>,
    /// When it became `Unsubscribed` (usage before that may still be reported).
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

impl Sub {
    /// Whether `op` ("Read", "Update", "Delete") is in `allowedCustomerOperations`.
    pub(crate) fn allows(&self, op: &str) -> bool {
        self.allowed_customer_operations.iter().any(|o| o.eq_ignore_ascii_case(op))
    }

    /// Starts a term at `now` (activation or plan change with another term unit).
    pub(crate) fn start_term(&mut self, now: DateTime<Utc>) {
        let (start, end) = term_from(now, &self.term_unit);
        self.term_start = Some(start);
        self.term_end = Some(end);
    }

    /// Moves the term to the next period (renewal).
    pub(crate) fn renew_term(&mut self, now: DateTime<Utc>) {
        let next_start = match self.term_end {
            Some(end) => end + chrono::Duration::days(1),
            None => now,
        };
        self.start_term(next_start);
    }

    /// The `Subscription` object of docs/marketplace-api.md#subscription-object.
    pub(crate) fn to_json(&self, quirks: &HashSet<Quirk>) -> Value {
        let status = if quirks.contains(&Quirk::PaddedStatus) {
            format!(" {} ", self.status.as_str())
        } else {
            self.status.as_str().to_string()
        };
        let last_modified = if quirks.contains(&Quirk::LastModifiedSentinel) {
            "0001-01-01T00:00:00".to_string()
        } else {
            fmt_ts(self.last_modified)
        };
        let mut v = json!({
            "id": self.id,
            "publisherId": self.publisher_id,
            "offerId": self.offer_id,
            "name": self.name,
            "saasSubscriptionStatus": status,
            "beneficiary": self.beneficiary,
            "purchaser": self.purchaser,
            "planId": self.plan_id,
            "term": {
                "startDate": self.term_start.map(fmt_date),
                "endDate": self.term_end.map(fmt_date),
                "termUnit": self.term_unit,
                "chargeDuration": null,
            },
            "autoRenew": self.auto_renew,
            "isTest": self.is_test,
            "isFreeTrial": self.is_free_trial,
            "allowedCustomerOperations": self.allowed_customer_operations,
            "sandboxType": self.sandbox_type,
            "sessionMode": self.session_mode,
            "created": fmt_ts(self.created),
            "lastModified": last_modified,
        });
        if let (Some(q), Value::Object(map)) = (self.quantity, &mut v) {
            map.insert("quantity".into(), quantity_json(q, quirks));
        }
        v
    }

    /// The `ResolvedSubscription` object of docs/marketplace-api.md#resolvedsubscription-object.
    pub(crate) fn to_resolved_json(&self, quirks: &HashSet<Quirk>) -> Value {
        let mut v = json!({
            "id": self.id,
            "subscriptionName": self.name,
            "offerId": self.offer_id,
            "planId": self.plan_id,
            "subscription": self.to_json(quirks),
        });
        if let (Some(q), Value::Object(map)) = (self.quantity, &mut v) {
            map.insert("quantity".into(), quantity_json(q, quirks));
        }
        v
    }
}

/// A quantity as a JSON number, or a string under [`Quirk::QuantityAsString`].
pub(crate) fn quantity_json(q: u32, quirks: &HashSet<Quirk>) -> Value {
    if quirks.contains(&Quirk::QuantityAsString) { Value::String(q.to_string()) } else { json!(q) }
}

/// Operation action (docs/marketplace-api.md#operation-object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Subscribe,
    Unsubscribe,
    ChangePlan,
    ChangeQuantity,
    Suspend,
    Reinstate,
    Renew,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "Subscribe",
            Self::Unsubscribe => "Unsubscribe",
            Self::ChangePlan => "ChangePlan",
            Self::ChangeQuantity => "ChangeQuantity",
            Self::Suspend => "Suspend",
            Self::Reinstate => "Reinstate",
            Self::Renew => "Renew",
        }
    }

    /// Customer changes the publisher may accept or refuse within the ACK window.
    pub(crate) fn is_ackable(self) -> bool {
        matches!(self, Self::ChangePlan | Self::ChangeQuantity)
    }
}

/// Operation status (docs/marketplace-api.md#operation-object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpStatus {
    InProgress,
    Succeeded,
    Failed,
}

impl OpStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// Who asked for an operation: the customer on Microsoft's side, or the publisher's API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Azure,
    Partner,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Azure => "Azure",
            Self::Partner => "Partner",
        }
    }
}

/// What an operation changes when it succeeds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Plan {
        plan_id: String,
        quantity: Option<u32>,
        term_unit: String,
        keeps_trial: bool,
    },
    Quantity(u32),
    Unsubscribe,
    /// Already applied when the operation was created (notify-only actions).
    Nothing,
}

/// An operation (`SaaSOperation`).
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub id: String,
    pub activity_id: String,
    pub subscription_id: String,
    pub offer_id: String,
    pub publisher_id: String,
    pub plan_id: String,
    pub quantity: Option<u32>,
    pub action: Action,
    pub time_stamp: DateTime<Utc>,
    pub status: OpStatus,
    pub error_status_code: String,
    pub error_message: String,
    pub source: Source,
    pub change: Change,
    /// The ACK window timer has been started (customer changes only).
    pub ack_started: bool,
}

impl Op {
    /// The `SaaSOperation` object of docs/marketplace-api.md#operation-object.
    pub(crate) fn to_json(&self, quirks: &HashSet<Quirk>) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(self.id));
        map.insert("activityId".into(), json!(self.activity_id));
        map.insert("subscriptionId".into(), json!(self.subscription_id));
        map.insert("offerId".into(), json!(self.offer_id));
        map.insert("publisherId".into(), json!(self.publisher_id));
        map.insert("planId".into(), json!(self.plan_id));
        if let Some(q) = self.quantity {
            map.insert("quantity".into(), quantity_json(q, quirks));
        }
        map.insert("action".into(), json!(self.action.as_str()));
        map.insert("timeStamp".into(), json!(fmt_ts(self.time_stamp)));
        map.insert("status".into(), json!(self.status.as_str()));
        map.insert("errorStatusCode".into(), json!(self.error_status_code));
        map.insert("errorMessage".into(), json!(self.error_message));
        map.insert(source_key(quirks).into(), json!(self.source.as_str()));
        Value::Object(map)
    }

    /// The webhook payload of docs/marketplace-api.md#webhook-payload, with `status` as sent and the subscription as given.
    pub(crate) fn webhook_json(&self, status: &str, subscription: Value, quirks: &HashSet<Quirk>) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(self.id));
        map.insert("activityId".into(), json!(self.activity_id));
        if quirks.contains(&Quirk::MinimalWebhookPayload) {
            map.insert(source_key(quirks).into(), json!(self.source.as_str()));
            map.insert("subscriptionId".into(), json!(self.subscription_id));
            map.insert("timeStamp".into(), json!(fmt_ts(self.time_stamp)));
            map.insert("action".into(), json!(self.action.as_str()));
            return Value::Object(map);
        }
        map.insert("publisherId".into(), json!(self.publisher_id));
        map.insert("offerId".into(), json!(self.offer_id));
        map.insert("planId".into(), json!(self.plan_id));
        map.insert("quantity".into(), self.quantity.map_or(Value::Null, |q| quantity_json(q, quirks)));
        map.insert("subscriptionId".into(), json!(self.subscription_id));
        map.insert("timeStamp".into(), json!(fmt_ts(self.time_stamp)));
        map.insert("action".into(), json!(self.action.as_str()));
        map.insert("status".into(), json!(status));
        map.insert(source_key(quirks).into(), json!(self.source.as_str()));
        map.insert("subscription".into(), subscription);
        map.insert("purchaseToken".into(), Value::Null);
        Value::Object(map)
    }
}

fn source_key(quirks: &HashSet<Quirk>) -> &'static str {
    if quirks.contains(&Quirk::OperationRequestedSourceSpelling) {
        "operationRequestedSource"
    } else {
        "operationRequestSource"
    }
}

/// The `Plan` object of docs/marketplace-api.md#plan-object.
pub(crate) fn plan_json(plan: &PlanSpec) -> Value {
    let term_description = match plan.term_unit.as_str() {
        "P1M" => "1 month subscription".to_string(),
        "P1Y" => "1 year subscription".to_string(),
        other => format!("{other} subscription"),
    };
    let included: Vec<Value> = plan
        .metering_dimensions
        .iter()
        .map(|d| json!({"dimensionId": d.id, "units": d.included_quantity.to_string()}))
        .collect();
    let dimensions: Vec<Value> = plan
        .metering_dimensions
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "currency": plan.currency,
                "pricePerUnit": d.price_per_unit,
                "unitOfMeasure": d.unit_of_measure,
                "displayName": d.display_name,
            })
        })
        .collect();
    json!({
        "planId": plan.plan_id,
        "displayName": plan.display_name,
        "isPrivate": plan.is_private,
        "description": plan.description,
        "minQuantity": plan.min_quantity,
        "maxQuantity": plan.max_quantity,
        "hasFreeTrials": plan.has_free_trials,
        "isPricePerSeat": plan.is_price_per_seat,
        "isStopSell": plan.is_stop_sell,
        "market": plan.market,
        "planComponents": {
            "recurrentBillingTerms": [{
                "currency": plan.currency,
                "price": plan.price,
                "termUnit": plan.term_unit,
                "termDescription": term_description,
                "meteredQuantityIncluded": included,
            }],
            "meteringDimensions": dimensions,
        },
        "sourceOffers": [],
    })
}

/// A subscription in Microsoft's shape, as accepted by `seed` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SeedSubscription {
    id: Option<String>,
    publisher_id: Option<String>,
    offer_id: Option<String>,
    name: Option<String>,
    saas_subscription_status: Option<String>,
    beneficiary: Option<AadIdentifier>,
    purchaser: Option<AadIdentifier>,
    plan_id: Option<String>,
    quantity: Option<Value>,
    term: Option<SeedTerm>,
    auto_renew: Option<bool>,
    is_test: Option<bool>,
    is_free_trial: Option<bool>,
    allowed_customer_operations: Option<Vec<String>>,
    sandbox_type: Option<String>,
    session_mode: Option<String>,
    created: Option<String>,
    last_modified: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedTerm {
    start_date: Option<String>,
    end_date: Option<String>,
    term_unit: Option<String>,
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let s = s?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(Utc.from_utc_datetime(&t));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN)))
}

impl SeedSubscription {
    /// Fills what is missing with the defaults a purchase would have.
    pub(crate) fn into_sub(self, config: &EmulatorConfig, now: DateTime<Utc>) -> Sub {
        let offer_id = self
            .offer_id
            .or_else(|| config.offers.first().map(|o| o.offer_id.clone()))
            .unwrap_or_else(|| "offer".into());
        let plan_id = self
            .plan_id
            .or_else(|| config.offer(&offer_id).and_then(|o| o.plans.first()).map(|p| p.plan_id.clone()))
            .unwrap_or_else(|| "plan".into());
        let plan = config.plan(&offer_id, &plan_id);
        let quantity = match self.quantity {
            Some(Value::Number(n)) => n.as_u64().and_then(|q| u32::try_from(q).ok()),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .or_else(|| plan.filter(|p| p.is_price_per_seat).map(|p| p.min_quantity.unwrap_or(1)));
        let status = self
            .saas_subscription_status
            .as_deref()
            .and_then(SubStatus::parse)
            .unwrap_or(SubStatus::Subscribed);
        let term = self.term.unwrap_or_default();
        let term_unit =
            term.term_unit.or_else(|| plan.map(|p| p.term_unit.clone())).unwrap_or_else(|| "P1M".into());
        let (mut term_start, mut term_end) =
            (parse_time(term.start_date.as_deref()), parse_time(term.end_date.as_deref()));
        if term_start.is_none() && matches!(status, SubStatus::Subscribed | SubStatus::Suspended) {
            let (s, e) = term_from(now, &term_unit);
            term_start = Some(s);
            term_end = Some(e);
        }
        let created = parse_time(self.created.as_deref()).unwrap_or(now);
        let tenant = guid();
        let beneficiary = self.beneficiary.unwrap_or_else(|| AadIdentifier {
            email_id: Some("user@customer.example".into()),
            object_id: Some(guid()),
            tenant_id: Some(tenant.clone()),
            puid: None,
        });
        let purchaser = self.purchaser.unwrap_or_else(|| beneficiary.clone());
        Sub {
            id: self.id.unwrap_or_else(guid),
            publisher_id: self.publisher_id.unwrap_or_else(|| config.publisher_id.clone()),
            name: self.name.unwrap_or_else(|| "Seeded subscription".into()),
            status,
            beneficiary,
            purchaser,
            purchased_plan_id: plan_id.clone(),
            plan_id,
            purchased_quantity: quantity,
            quantity,
            term_start,
            term_end,
            term_unit,
            auto_renew: self.auto_renew.unwrap_or(true),
            is_test: self.is_test.unwrap_or(false),
            is_free_trial: self.is_free_trial.unwrap_or(false),
            allowed_customer_operations: self
                .allowed_customer_operations
                .unwrap_or_else(|| vec!["Read".into(), "Update".into(), "Delete".into()]),
            sandbox_type: self.sandbox_type.unwrap_or_else(|| "None".into()),
            session_mode: self.session_mode.unwrap_or_else(|| "None".into()),
            created,
            last_modified: parse_time(self.last_modified.as_deref()).unwrap_or(created),
            unsubscribed_at: (status == SubStatus::Unsubscribed).then_some(now),
            offer_id,
        }
    }
}

/// Hour bucket (epoch seconds of hh:00:00) of a time, for the one-event-per-hour rule.
pub(crate) fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600) * 3600
}

/// Day (midnight UTC) of a time, for usage aggregation.
pub(crate) fn day_of(t: DateTime<Utc>) -> DateTime<Utc> {
    midnight(t)
}

/// Parses a client-supplied RFC 3339 (or zone-less, taken as UTC) timestamp.
pub(crate) fn parse_client_time(s: &str) -> Option<DateTime<Utc>> {
    parse_time(Some(s))
}
