//! The Metering API (docs/marketplace-api.md#metering-api): single and batch usage events, and retrieval.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::api::{bad_request_body, query_param};
use crate::faults::{MeteringFault, Quirk};
use crate::model::{SubStatus, day_of, fmt_ts, guid, hour_of, parse_client_time};
use crate::server::json_response;
use crate::state::{Shared, State, UsageRecord};

/// Most events in one batch.
pub(crate) const MAX_BATCH: usize = 25;

/// Why one usage event was not accepted.
enum EventError {
    /// Per-item status (batch) / detail code (single), message and target field.
    Invalid { status: &'static str, message: String, target: &'static str },
    /// Same resource + dimension + hour already accepted: the accepted event.
    Duplicate(Value),
}

fn invalid(status: &'static str, message: impl Into<String>, target: &'static str) -> EventError {
    EventError::Invalid { status, message: message.into(), target }
}

/// Validates and records one event; returns the accepted body.
fn process(shared: &Shared, state: &mut State, ev: &Value, now: DateTime<Utc>) -> Result<Value, EventError> {
    if !ev.is_object() {
        return Err(invalid("BadArgument", "The usage event must be a JSON object.", "body"));
    }
    let resource_id = match ev.get("resourceId").and_then(Value::as_str) {
        Some(r) if uuid::Uuid::parse_str(r).is_ok() => r.to_string(),
        Some(_) => return Err(invalid("BadArgument", "The resourceId must be a GUID.", "resourceId")),
        None => return Err(invalid("BadArgument", "The resourceId is required.", "resourceId")),
    };
    let quantity = match ev.get("quantity").and_then(Value::as_f64) {
        Some(q) if q > 0.0 && q.is_finite() => q,
        _ => {
            return Err(invalid(
                "InvalidQuantity",
                "The quantity must be a number greater than 0.",
                "quantity",
            ));
        }
    };
    let dimension = match ev.get("dimension").and_then(Value::as_str) {
        Some(d) if !d.trim().is_empty() => d.to_string(),
        _ => return Err(invalid("BadArgument", "The dimension is required.", "dimension")),
    };
    let start = match ev.get("effectiveStartTime").and_then(Value::as_str).and_then(parse_client_time) {
        Some(t) => t,
        None => {
            return Err(invalid(
                "BadArgument",
                "The effectiveStartTime is required and must be an ISO 8601 date-time.",
                "effectiveStartTime",
            ));
        }
    };
    if start > now {
        return Err(invalid(
            "BadArgument",
            "The effectiveStartTime cannot be in the future.",
            "effectiveStartTime",
        ));
    }
    if now - start > chrono::Duration::hours(24) {
        return Err(invalid(
            "Expired",
            "The effectiveStartTime is more than 24 hours in the past; the usage event has expired.",
            "effectiveStartTime",
        ));
    }
    let plan_id = match ev.get("planId").and_then(Value::as_str) {
        Some(p) if !p.trim().is_empty() => p.to_string(),
        _ => return Err(invalid("BadArgument", "The planId is required.", "planId")),
    };
    let Some(sub) = state.sub(&resource_id) else {
        return Err(invalid(
            "ResourceNotFound",
            format!("The resource {resource_id} was not found."),
            "resourceId",
        ));
    };
    let active = match sub.status {
        SubStatus::Subscribed => true,
        SubStatus::Unsubscribed => sub.unsubscribed_at.is_some_and(|at| start < at),
        _ => false,
    };
    if !active {
        return Err(invalid(
            "ResourceNotActive",
            format!(
                "The subscription is {}; usage can only be reported for Subscribed ones.",
                sub.status.as_str()
            ),
            "resourceId",
        ));
    }
    if sub.plan_id != plan_id {
        return Err(invalid(
            "BadArgument",
            format!("The planId {plan_id} does not match the subscription's plan {}.", sub.plan_id),
            "planId",
        ));
    }
    let plan = shared.config.plan(&sub.offer_id, &sub.plan_id);
    if !plan.is_some_and(|p| p.has_dimension(&dimension)) {
        return Err(invalid(
            "InvalidDimension",
            format!("The dimension {dimension} is not defined for plan {plan_id}."),
            "dimension",
        ));
    }
    match state.metering_faults.get(&resource_id.to_ascii_lowercase()) {
        Some(MeteringFault::ResourceNotAuthorized) => {
            return Err(invalid(
                "ResourceNotAuthorized",
                "Client is not authorized for this usage resource.",
                "resourceId",
            ));
        }
        Some(MeteringFault::Error) => {
            return Err(invalid("Error", "An unexpected error has occurred.", "resourceId"));
        }
        None => {}
    }
    let key = (resource_id.to_ascii_lowercase(), dimension.clone(), hour_of(start));
    if let Some(&i) = state.usage_index.get(&key) {
        let mut original = state.usage[i].accepted.clone();
        if let Value::Object(map) = &mut original {
            map.insert("status".into(), json!("Duplicate"));
        }
        return Err(EventError::Duplicate(original));
    }
    let offer_id = sub.offer_id.clone();
    let accepted = json!({
        "usageEventId": guid(),
        "status": "Accepted",
        "messageTime": fmt_ts(now),
        "resourceId": resource_id,
        "quantity": quantity,
        "dimension": dimension,
        "effectiveStartTime": ev.get("effectiveStartTime").cloned().unwrap_or(Value::Null),
        "planId": plan_id,
    });
    state.usage_index.insert(key, state.usage.len());
    state.usage.push(UsageRecord {
        resource_id,
        dimension,
        plan_id,
        offer_id,
        quantity,
        effective_start: start,
        accepted: accepted.clone(),
    });
    Ok(accepted)
}

fn duplicate_error(original: Value) -> Value {
    json!({
        "code": "Conflict",
        "message": "This usage event already exist.",
        "additionalInfo": {"acceptedMessage": original},
    })
}

/// `POST /usageEvent`.
pub(crate) fn usage_event(shared: &Shared, body: &Value) -> Response {
    let now = Utc::now();
    let result = process(shared, &mut shared.lock(), body, now);
    match result {
        Ok(accepted) => json_response(StatusCode::OK, &accepted),
        Err(EventError::Duplicate(original)) => {
            json_response(StatusCode::CONFLICT, &duplicate_error(original))
        }
        // A single event answers these two with a status of its own, as Microsoft does.
        Err(EventError::Invalid { status: "ResourceNotAuthorized", message, .. }) => {
            json_response(StatusCode::FORBIDDEN, &json!({"code": "Forbidden", "message": message}))
        }
        Err(EventError::Invalid { status: "Error", .. }) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": {"code": "UnexpectedError", "message": "An unexpected error has occurred."}}),
        ),
        Err(EventError::Invalid { status, message, target }) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "code": "BadArgument",
                "message": "One or more errors have occurred.",
                "target": target,
                "details": [{"code": status, "message": message, "target": target}],
            }),
        ),
    }
}

/// `POST /batchUsageEvent`.
pub(crate) fn batch_usage_event(shared: &Shared, body: &Value) -> Response {
    let Some(items) = body.get("request").and_then(Value::as_array) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &bad_request_body(
                "BadArgument",
                "The request must be an object with a 'request' array.",
                "request",
            ),
        );
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return json_response(
            StatusCode::BAD_REQUEST,
            &bad_request_body(
                "BadArgument",
                &format!(
                    "The batch must contain between 1 and {MAX_BATCH} usage events; it has {}.",
                    items.len()
                ),
                "request",
            ),
        );
    }
    let now = Utc::now();
    let mut state = shared.lock();
    let result: Vec<Value> = items
        .iter()
        .map(|ev| match process(shared, &mut state, ev, now) {
            Ok(accepted) => accepted,
            Err(e) => {
                let (status, error) = match e {
                    EventError::Duplicate(original) => ("Duplicate", duplicate_error(original)),
                    EventError::Invalid { status, message, target } => {
                        (status, json!({"code": status, "message": message, "target": target}))
                    }
                };
                json!({
                    "status": status,
                    "messageTime": fmt_ts(now),
                    "resourceId": ev.get("resourceId").cloned().unwrap_or(Value::Null),
                    "quantity": ev.get("quantity").cloned().unwrap_or(Value::Null),
                    "dimension": ev.get("dimension").cloned().unwrap_or(Value::Null),
                    "effectiveStartTime": ev.get("effectiveStartTime").cloned().unwrap_or(Value::Null),
                    "planId": ev.get("planId").cloned().unwrap_or(Value::Null),
                    "error": error,
                })
            }
        })
        .collect();
    json_response(StatusCode::OK, &json!({"count": result.len(), "result": result}))
}

/// `GET /usageEvents`: accepted usage aggregated per day, resource, dimension and plan.
pub(crate) fn get_usage_events(shared: &Shared, raw_query: &str) -> Response {
    let bad = |message: &str, target: &str| {
        json_response(StatusCode::BAD_REQUEST, &bad_request_body("BadArgument", message, target))
    };
    let Some(start) = query_param(raw_query, "usageStartDate") else {
        return bad("The usageStartDate is required.", "usageStartDate");
    };
    let Some(start) = parse_client_time(&start) else {
        return bad("The usageStartDate must be an ISO 8601 date.", "usageStartDate");
    };
    let end = match query_param(raw_query, "usageEndDate") {
        None => Utc::now(),
        Some(e) => match parse_client_time(&e) {
            Some(e) => e,
            None => return bad("The usageEndDate must be an ISO 8601 date.", "usageEndDate"),
        },
    };
    let offer = query_param(raw_query, "offerId");
    let plan = query_param(raw_query, "planId");
    let dimension = query_param(raw_query, "dimension");
    let state = shared.lock();
    // (day, resource, dimension, plan) → (quantity, count, offer)
    type Key = (DateTime<Utc>, String, String, String);
    let mut groups: BTreeMap<Key, (f64, u64, String)> = BTreeMap::new();
    for u in &state.usage {
        let day = day_of(u.effective_start);
        if day < day_of(start) || u.effective_start > end {
            continue;
        }
        if offer.as_ref().is_some_and(|o| *o != u.offer_id)
            || plan.as_ref().is_some_and(|p| *p != u.plan_id)
            || dimension.as_ref().is_some_and(|d| *d != u.dimension)
        {
            continue;
        }
        let entry = groups
            .entry((day, u.resource_id.clone(), u.dimension.clone(), u.plan_id.clone()))
            .or_insert((0.0, 0, u.offer_id.clone()));
        entry.0 += u.quantity;
        entry.1 += 1;
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|((day, resource, dim, plan_id), (quantity, count, offer_id))| {
            let plan_name =
                shared.config.plan(&offer_id, &plan_id).map(|p| p.display_name.clone()).unwrap_or_default();
            json!({
                "usageDate": fmt_ts(day),
                "usageResourceId": resource,
                "dimension": dim,
                "planId": plan_id,
                "planName": plan_name,
                "offerId": offer_id,
                "offerName": offer_id,
                "offerType": "SaaS",
                "azureSubscriptionId": "",
                "reconStatus": "Accepted",
                "submittedQuantity": quantity,
                "processedQuantity": quantity,
                "submittedCount": count,
            })
        })
        .collect();
    let items = Value::Array(items);
    if state.quirks.contains(&Quirk::UsageEventsAsJsonString) {
        return json_response(StatusCode::OK, &Value::String(items.to_string()));
    }
    json_response(StatusCode::OK, &items)
}
