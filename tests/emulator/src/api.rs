//! The Marketplace API under `/api`: routing, request ids, faults, api-version, auth, recording.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use crate::RecordedRequest;
use crate::config::API_VERSION;
use crate::engine::{self, Reject};
use crate::faults::{Endpoint, Quirk};
use crate::metering;
use crate::model::{Action, OpStatus, Source, guid, plan_json};
use crate::server::{
    ConnKill, FaultOutcome, apply_fault, empty_response, json_response, unexpected_error_body,
};
use crate::state::Shared;

/// Subscriptions per page of List subscriptions.
pub(crate) const PAGE_SIZE: usize = 100;
/// Largest request body read.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// A recognised Marketplace API route with its path parameters.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Resolve,
    Activate(String),
    List,
    Get(String),
    Patch(String),
    Delete(String),
    ListPlans(String),
    ListOperations(String),
    GetOperation(String, String),
    UpdateOperation(String, String),
    UsageEvent,
    BatchUsageEvent,
    GetUsageEvents,
}

impl Route {
    /// Matches method and path (below `/api`); static segments are case-insensitive, as in ASP.NET.
    fn parse(method: &Method, path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let is = |i: usize, s: &str| segments.get(i).is_some_and(|seg| seg.eq_ignore_ascii_case(s));
        let id = |i: usize| segments.get(i).map(|s| (*s).to_string()).filter(|s| !s.is_empty());
        let m = method.clone();
        match segments.len() {
            1 if is(0, "usageEvent") && m == Method::POST => Some(Self::UsageEvent),
            1 if is(0, "batchUsageEvent") && m == Method::POST => Some(Self::BatchUsageEvent),
            1 if is(0, "usageEvents") && m == Method::GET => Some(Self::GetUsageEvents),
            n if n >= 2 && is(0, "saas") && is(1, "subscriptions") => match (n, m) {
                (2, Method::GET) => Some(Self::List),
                (3, Method::POST) if is(2, "resolve") => Some(Self::Resolve),
                (3, Method::GET) => id(2).map(Self::Get),
                (3, Method::PATCH) => id(2).map(Self::Patch),
                (3, Method::DELETE) => id(2).map(Self::Delete),
                (4, Method::POST) if is(3, "activate") => id(2).map(Self::Activate),
                (4, Method::GET) if is(3, "listAvailablePlans") => id(2).map(Self::ListPlans),
                (4, Method::GET) if is(3, "operations") => id(2).map(Self::ListOperations),
                (5, Method::GET) if is(3, "operations") => Some(Self::GetOperation(id(2)?, id(4)?)),
                (5, Method::PATCH) if is(3, "operations") => Some(Self::UpdateOperation(id(2)?, id(4)?)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The fault endpoint; a PATCH is `ChangeQuantity` when its body has a quantity and no plan.
    fn endpoint(&self, body: &Bytes) -> Endpoint {
        match self {
            Self::Resolve => Endpoint::Resolve,
            Self::Activate(_) => Endpoint::Activate,
            Self::List => Endpoint::ListSubscriptions,
            Self::Get(_) => Endpoint::GetSubscription,
            Self::Patch(_) => {
                let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let has = |k: &str| v.get(k).is_some_and(|x| !x.is_null());
                if has("quantity") && !has("planId") {
                    Endpoint::ChangeQuantity
                } else {
                    Endpoint::ChangePlan
                }
            }
            Self::Delete(_) => Endpoint::DeleteSubscription,
            Self::ListPlans(_) => Endpoint::ListPlans,
            Self::ListOperations(_) => Endpoint::ListOperations,
            Self::GetOperation(..) => Endpoint::GetOperation,
            Self::UpdateOperation(..) => Endpoint::UpdateOperation,
            Self::UsageEvent => Endpoint::UsageEvent,
            Self::BatchUsageEvent => Endpoint::BatchUsageEvent,
            Self::GetUsageEvents => Endpoint::GetUsageEvents,
        }
    }
}

/// A query parameter by case-insensitive name, percent-decoded.
pub(crate) fn query_param(raw: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The 400 body of docs/marketplace-api.md#error-bodies.
pub(crate) fn bad_request_body(code: &str, message: &str, target: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "target": target,
        "details": [{"code": code, "message": message, "target": target}],
    })
}

/// Maps a rule failure to Microsoft's status and body.
pub(crate) fn reject_response(reject: Reject) -> Response {
    match reject {
        Reject::BadRequest { code, message, target } => {
            json_response(StatusCode::BAD_REQUEST, &bad_request_body(code, &message, &target))
        }
        Reject::NotFound(message) => {
            json_response(StatusCode::NOT_FOUND, &json!({"code": "EntityNotFound", "message": message}))
        }
        Reject::Conflict(message) => {
            json_response(StatusCode::CONFLICT, &json!({"code": "Conflict", "message": message}))
        }
        Reject::Internal(message) => {
            tracing::debug!(%message, "answering 500");
            json_response(StatusCode::INTERNAL_SERVER_ERROR, &unexpected_error_body())
        }
    }
}

/// Entry point of every request under `/api`.
pub(crate) async fn entry(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let kill = req.extensions().get::<ConnectInfo<ConnKill>>().map(|c| c.0.clone());
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/api").unwrap_or_default().to_string();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let sent_request_id = header_str(&parts.headers, "x-ms-requestid");
    let sent_correlation_id = header_str(&parts.headers, "x-ms-correlationid");
    let request_id = sent_request_id.clone().filter(|s| !s.is_empty()).unwrap_or_else(guid);
    let correlation_id = sent_correlation_id.clone().filter(|s| !s.is_empty()).unwrap_or_else(guid);
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await;
    let route = Route::parse(&parts.method, &path);
    let mut record = RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        request_id: sent_request_id,
        correlation_id: sent_correlation_id,
        body: None,
        status: None,
        response_request_id: request_id.clone(),
        response_correlation_id: correlation_id.clone(),
        at: Utc::now(),
    };
    let mut response = match bytes {
        Err(_) => json_response(
            StatusCode::BAD_REQUEST,
            &bad_request_body("BadArgument", "The request body could not be read.", "body"),
        ),
        Ok(bytes) => {
            record.body = serde_json::from_slice(&bytes).ok();
            let endpoint = route.as_ref().map(|r| r.endpoint(&bytes));
            match apply_fault(&shared, endpoint, kill.as_ref()).await {
                FaultOutcome::Dropped => {
                    push_record(&shared, record);
                    return empty_response(StatusCode::INTERNAL_SERVER_ERROR);
                }
                FaultOutcome::Respond(response) => response,
                FaultOutcome::Proceed => handle(&shared, route, &path, &raw_query, &parts.headers, &bytes),
            }
        }
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-ms-requestid", v);
    }
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        headers.insert("x-ms-correlationid", v);
    }
    record.status = Some(response.status().as_u16());
    push_record(&shared, record);
    response
}

fn push_record(shared: &Shared, record: RecordedRequest) {
    shared.lock().requests.push(record);
    shared.changed();
}

/// Checks `api-version` (docs/marketplace-api.md#base-url-and-headers).
fn check_api_version(raw_query: &str, path: &str) -> Option<Response> {
    match query_param(raw_query, "api-version") {
        None => Some(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"Error": {
                "Code": "ApiVersionUnspecified",
                "Message": "An API version is required, but was not specified."
            }}),
        )),
        Some(v) if v == API_VERSION => None,
        Some(v) => Some(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"Error": {
                "Code": "UnsupportedApiVersion",
                "Message": format!(
                    "The HTTP resource that matches the request URI '/api{path}' does not support the API version '{v}'."
                )
            }}),
        )),
    }
}

/// Checks the bearer token: issued by our token endpoint, unexpired, not revoked.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = header_str(headers, "authorization") else { return false };
    let Some((scheme, token)) = value.split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let state = shared.lock();
    state.access_tokens.get(token.trim()).is_some_and(|expires| *expires > Utc::now())
}

fn handle(
    shared: &Arc<Shared>,
    route: Option<Route>,
    path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some(route) = route else { return empty_response(StatusCode::NOT_FOUND) };
    if let Some(response) = check_api_version(raw_query, path) {
        return response;
    }
    if !authorized(shared, headers) {
        return empty_response(StatusCode::FORBIDDEN);
    }
    let json_body = || -> Result<Value, Reject> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(body)
            .map_err(|e| Reject::bad(format!("The request body is not valid JSON: {e}"), "body"))
    };
    let result = match route {
        Route::Resolve => {
            let token = header_str(headers, "x-ms-marketplace-token");
            engine::resolve(shared, token.as_deref()).map(|v| json_response(StatusCode::OK, &v))
        }
        Route::Activate(id) => match json_body() {
            Err(r) => Err(r),
            Ok(b) => engine::activate(shared, &id, &b).map(|()| empty_response(StatusCode::OK)),
        },
        Route::List => return list_subscriptions(shared, raw_query),
        Route::Get(id) => {
            let state = shared.lock();
            state
                .sub(&id)
                .map(|s| json_response(StatusCode::OK, &s.to_json(&state.quirks)))
                .ok_or_else(|| Reject::NotFound(format!("Subscription {id} not found.")))
        }
        Route::ListPlans(id) => list_plans(shared, &id, query_param(raw_query, "planId").as_deref()),
        Route::Patch(id) => match json_body() {
            Err(r) => Err(r),
            Ok(b) => engine::publisher_change(shared, &id, &b).map(|op| accepted(shared, &id, &op)),
        },
        Route::Delete(id) => engine::publisher_delete(shared, &id).map(|op| accepted(shared, &id, &op)),
        Route::ListOperations(id) => Ok(list_operations(shared, &id)),
        Route::GetOperation(id, op) => get_operation(shared, &id, &op),
        Route::UpdateOperation(id, op) => match json_body() {
            Err(r) => Err(r),
            Ok(b) => engine::update_operation(shared, &id, &op, &b).map(|()| empty_response(StatusCode::OK)),
        },
        Route::UsageEvent => match json_body() {
            Err(r) => Err(r),
            Ok(b) => return metering::usage_event(shared, &b),
        },
        Route::BatchUsageEvent => match json_body() {
            Err(r) => Err(r),
            Ok(b) => return metering::batch_usage_event(shared, &b),
        },
        Route::GetUsageEvents => return metering::get_usage_events(shared, raw_query),
    };
    result.unwrap_or_else(reject_response)
}

/// 202 with `Operation-Location` (and the emulator-only `Operation-Id`).
fn accepted(shared: &Shared, subscription_id: &str, op_id: &str) -> Response {
    let mut response = empty_response(StatusCode::ACCEPTED);
    let location = format!(
        "{}/saas/subscriptions/{subscription_id}/operations/{op_id}?api-version={API_VERSION}",
        shared.api_base()
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert("operation-location", v);
    }
    if let Ok(v) = HeaderValue::from_str(op_id) {
        response.headers_mut().insert("operation-id", v);
    }
    response
}

/// Encodes a page offset as an opaque JSON continuation token.
fn continuation_token(shared: &Shared, offset: usize) -> String {
    json!({
        "token": format!("+RID:~{}#RT:{}#TRC:{offset}#ISV:2#IEO:65551", shared.paging_key, offset / PAGE_SIZE),
        "range": {"min": "", "max": "FF"},
    })
    .to_string()
}

fn parse_continuation(shared: &Shared, token: &str) -> Option<usize> {
    let v: Value = serde_json::from_str(token).ok()?;
    let t = v.get("token")?.as_str()?;
    let rest = t.strip_prefix("+RID:~")?.strip_prefix(shared.paging_key.as_str())?;
    let offset = rest.split("#TRC:").nth(1)?.split('#').next()?;
    offset.parse().ok()
}

fn list_subscriptions(shared: &Shared, raw_query: &str) -> Response {
    let offset = match query_param(raw_query, "continuationToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match parse_continuation(shared, &token) {
            Some(offset) => offset,
            None => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &bad_request_body(
                        "InvalidValue",
                        "The continuation token is invalid.",
                        "continuationToken",
                    ),
                );
            }
        },
    };
    let state = shared.lock();
    if state.order.is_empty() && state.quirks.contains(&Quirk::EmptyBodyWhenNoSubscriptions) {
        return empty_response(StatusCode::OK);
    }
    let page: Vec<Value> = state
        .order
        .iter()
        .skip(offset)
        .take(PAGE_SIZE)
        .filter_map(|id| state.subs.get(id))
        .map(|s| s.to_json(&state.quirks))
        .collect();
    let mut body = json!({"subscriptions": page});
    let next = offset.saturating_add(PAGE_SIZE);
    if next < state.order.len()
        && let Value::Object(map) = &mut body
    {
        let token: String =
            url::form_urlencoded::byte_serialize(continuation_token(shared, next).as_bytes()).collect();
        let link = format!(
            "{}/saas/subscriptions?continuationToken={token}&api-version={API_VERSION}",
            shared.api_base()
        );
        map.insert("@nextLink".into(), Value::String(link));
    }
    json_response(StatusCode::OK, &body)
}

fn list_plans(shared: &Shared, id: &str, filter: Option<&str>) -> Result<Response, Reject> {
    let state = shared.lock();
    let sub = state.sub(id).ok_or_else(|| Reject::NotFound(format!("Subscription {id} not found.")))?;
    let plans: Vec<Value> = shared
        .config
        .offer(&sub.offer_id)
        .map(|o| o.plans.iter().filter(|p| filter.is_none_or(|f| p.plan_id == f)).map(plan_json).collect())
        .unwrap_or_default();
    Ok(json_response(StatusCode::OK, &json!({"plans": plans})))
}

fn list_operations(shared: &Shared, id: &str) -> Response {
    let state = shared.lock();
    let mut ops: Vec<_> = state
        .ops
        .values()
        .filter(|o| {
            o.subscription_id.eq_ignore_ascii_case(id)
                && o.status == OpStatus::InProgress
                && o.source == Source::Azure
        })
        .collect();
    ops.sort_by_key(|o| o.time_stamp);
    let list: Vec<Value> = ops.iter().map(|o| o.to_json(&state.quirks)).collect();
    if state.quirks.contains(&Quirk::OutstandingOperationsAsBareArray) {
        json_response(StatusCode::OK, &Value::Array(list))
    } else {
        json_response(StatusCode::OK, &json!({"operations": list}))
    }
}

fn get_operation(shared: &Shared, id: &str, op_id: &str) -> Result<Response, Reject> {
    let state = shared.lock();
    let not_found = || Reject::BadRequest {
        code: "EntityNotFound",
        message: format!("Operation {op_id} of subscription {id} was not found."),
        target: "operationId".into(),
    };
    let op = state.op(id, op_id).ok_or_else(not_found)?;
    let notify_only =
        matches!(op.action, Action::Subscribe | Action::Suspend | Action::Reinstate | Action::Renew)
            || (op.action == Action::Unsubscribe && op.source == Source::Azure);
    if notify_only && state.quirks.contains(&Quirk::NoOperationForNotifyOnly) {
        return Err(not_found());
    }
    Ok(json_response(StatusCode::OK, &op.to_json(&state.quirks)))
}
