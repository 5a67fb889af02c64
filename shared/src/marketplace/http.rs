use std::time::Instant;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use url::Url;

use super::auth::{EntraTokenProvider, TokenError};
use super::config::MarketplaceConfig;
use super::error::{ApiError, MarketplaceError, ResponseMeta};
use super::retry::parse_retry_after;
use super::{AckStatus, Call, MarketplaceApi, OperationLocation, PageToken, SubscriptionsPage, UsageOutcome};
use crate::domain::{
    BatchUsageEventResult, Operation, OperationId, Plan, PlanId, ResolvedSubscription, Subscription,
    SubscriptionId, UsageEvent, UsageEventResult, UsageQuery, UsageRecord,
};

const REQUEST_ID: &str = "x-ms-requestid";
const CORRELATION_ID: &str = "x-ms-correlationid";
const MARKETPLACE_TOKEN: &str = "x-ms-marketplace-token";

/// The production client of Microsoft's Marketplace APIs: Entra ID client credentials, retries
/// with backoff inside each call's deadline, and request/correlation ids on every request.
pub struct HttpMarketplaceClient {
    http: reqwest::Client,
    config: MarketplaceConfig,
    tokens: EntraTokenProvider,
}

/// One request, described before it is sent (it may be sent several times).
struct Request<'a> {
    action: &'static str,
    method: Method,
    url: Url,
    body: Option<Value>,
    marketplace_token: Option<&'a str>,
    /// Safe to send again whatever became of the first attempt. A request that is not idempotent
    /// (activate, change plan, change quantity, delete) is sent again only when Microsoft surely
    /// did not act on it: after a 429 (throttled), a connection that never connected, or the one
    /// 401/403 that a fresh token answers. After a 408 or a 5xx, or a connection lost once the
    /// request was sent, Microsoft may have acted: a second request would then come back as a
    /// 400/409 and the operation id of the first would be lost, so the error is returned at once
    /// and the caller checks what happened. Idempotent: the GETs, resolve, the acknowledgement
    /// (a repeat only gets the 409 its caller handles) and metering (a repeat is a duplicate).
    idempotent: bool,
    /// Statuses besides 2xx that the caller interprets itself.
    also_expected: &'a [u16],
}

/// A response with its body read.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    meta: ResponseMeta,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, action: &'static str) -> Result<T, MarketplaceError> {
        serde_json::from_slice(&self.body).map_err(|e| self.decode_error(action, e))
    }

    /// A value of the body (read and amended first) as `T`.
    fn decode<T: DeserializeOwned>(&self, action: &'static str, value: Value) -> Result<T, MarketplaceError> {
        serde_json::from_value(value).map_err(|e| self.decode_error(action, e))
    }

    fn decode_error(
        &self,
        action: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> MarketplaceError {
        MarketplaceError::Decode { action, meta: self.meta.clone(), source: source.into() }
    }

    fn is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace)
    }
}

impl HttpMarketplaceClient {
    pub fn new(config: MarketplaceConfig) -> Result<Self, reqwest::Error> {
        let http = crate::http::client_builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.attempt_timeout)
            .user_agent(concat!("fulfillment-rs/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self::with_http_client(config, http))
    }

    /// With a given HTTP client (shared connection pool, custom TLS).
    pub fn with_http_client(config: MarketplaceConfig, http: reqwest::Client) -> Self {
        let tokens = EntraTokenProvider::new(http.clone(), config.entra.clone(), config.retry.clone());
        Self { http, config, tokens }
    }

    /// The token provider (how many tokens it fetched, for tests and metrics).
    pub fn tokens(&self) -> &EntraTokenProvider {
        &self.tokens
    }

    /// The HTTP client: one connection pool per host for whoever shares it (Entra's signing keys
    /// come from the host its tokens come from).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// What a function that calls Microsoft can do at start ([`crate::wiring::warm_up`]): get a
    /// token ([`Self::warm_up_token`]) and open the API's connection ([`Self::warm_up_connection`]),
    /// at once: Entra and the API are different hosts.
    pub fn warm_up_steps(&self) -> Vec<crate::wiring::WarmUpStep<'_>> {
        vec![self.warm_up_token(), self.warm_up_connection()]
    }

    /// A token, fetched now (and the connection to Entra's host kept in the pool).
    pub fn warm_up_token(&self) -> crate::wiring::WarmUpStep<'_> {
        let deadline = Instant::now() + crate::wiring::WARM_UP_BUDGET;
        let token =
            async move { self.tokens.token(deadline).await.map(drop).map_err(|e| crate::error_chain(&e)) };
        ("entra-token", Box::pin(token))
    }

    /// The API's connection, opened now: a `HEAD` of the API base, whatever it answers (no call
    /// of the API, only its TLS handshake; the connection is kept for the first call).
    pub fn warm_up_connection(&self) -> crate::wiring::WarmUpStep<'_> {
        let connection = async move {
            self.http
                .head(self.config.api_base.clone())
                .send()
                .await
                .map(drop)
                .map_err(|e| crate::error_chain(&e))
        };
        ("marketplace-connection", Box::pin(connection))
    }

    /// `{api_base}/{segments…}?api-version=…`, each segment percent-encoded (ids come from outside).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.api_base.clone();
        url.path_segments_mut().expect("the API base is an http(s) URL").pop_if_empty().extend(segments);
        url.query_pairs_mut().append_pair("api-version", &self.config.api_version);
        url
    }

    fn request(&self, action: &'static str, method: Method, url: Url) -> Request<'static> {
        let idempotent = method == Method::GET;
        Request { action, method, url, body: None, marketplace_token: None, idempotent, also_expected: &[] }
    }

    async fn send(&self, request: Request<'_>, call: &Call) -> Result<Answer, MarketplaceError> {
        let action = request.action;
        let started = Instant::now();
        let deadline = call.deadline.unwrap_or(started + self.config.call_timeout);
        let mut retries = 0;
        let mut refreshed_token = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(MarketplaceError::DeadlineExceeded { action });
            }
            let token = self.tokens.token(deadline).await?;
            let request_id = uuid::Uuid::new_v4().to_string();
            let mut builder = self
                .http
                .request(request.method.clone(), request.url.clone())
                .timeout(remaining.min(self.config.attempt_timeout))
                .header(AUTHORIZATION, format!("Bearer {}", token.secret()))
                .header(CONTENT_TYPE, "application/json")
                .header(REQUEST_ID, &request_id)
                .header(CORRELATION_ID, &call.correlation_id);
            if let Some(marketplace_token) = request.marketplace_token {
                builder = builder.header(MARKETPLACE_TOKEN, marketplace_token);
            }
            builder = match &request.body {
                Some(body) => builder.body(body.to_string()),
                None if request.method == Method::POST => builder.body(""),
                None => builder,
            };

            let attempt = tokio::time::timeout(remaining, async {
                let response = builder.send().await?;
                let (status, headers) = (response.status(), response.headers().clone());
                response.bytes().await.map(|body| (status, headers, body.to_vec()))
            });
            let (status, headers, body) = match attempt.await {
                Err(_) => return Err(MarketplaceError::DeadlineExceeded { action }),
                // Nothing was sent, and it would fail the same way again: not a dropped connection.
                Ok(Err(error)) if error.is_builder() => {
                    tracing::error!(action, %request_id, error = %crate::error_chain(&error), "the request could not be built");
                    return Err(MarketplaceError::Unsendable { action, source: error });
                }
                Ok(Err(error)) => {
                    // A request that may have reached Microsoft is sent again only when that is safe.
                    let may_resend = request.idempotent || error.is_connect();
                    tracing::warn!(action, %request_id, correlation_id = %call.correlation_id, error = %crate::error_chain(&error), "no answer");
                    if may_resend && self.pause_before_retry(&mut retries, None, deadline).await {
                        continue;
                    }
                    if error.is_timeout() && Instant::now() >= deadline {
                        return Err(MarketplaceError::DeadlineExceeded { action });
                    }
                    return Err(MarketplaceError::Transport { action, source: error });
                }
                Ok(Ok(answer)) => answer,
            };

            let meta = ResponseMeta {
                status: status.as_u16(),
                request_id,
                response_request_id: header(&headers, REQUEST_ID),
                response_correlation_id: header(&headers, CORRELATION_ID),
            };
            tracing::info!(
                action,
                status = meta.status,
                request_id = %meta.request_id,
                correlation_id = %call.correlation_id,
                response_request_id = meta.response_request_id.as_deref().unwrap_or(""),
                response_correlation_id = meta.response_correlation_id.as_deref().unwrap_or(""),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "marketplace call"
            );
            if status.is_success() || request.also_expected.contains(&meta.status) {
                return Ok(Answer { status, headers, body, meta });
            }
            let error = ApiError::parse(&body);
            match meta.status {
                401 | 403 if !refreshed_token => {
                    // A revoked or rotated token: fetch a new one, once.
                    refreshed_token = true;
                    self.tokens.invalidate(&token).await;
                }
                401 | 403 => return Err(MarketplaceError::Forbidden { error, meta }),
                400 => return Err(MarketplaceError::BadRequest { error, meta }),
                404 => return Err(MarketplaceError::NotFound { error, meta }),
                409 => return Err(MarketplaceError::Conflict { error, meta }),
                408 | 429 | 500..=599 => {
                    let retry_after = header(&headers, RETRY_AFTER.as_str())
                        .and_then(|v| parse_retry_after(&v, chrono::Utc::now()));
                    // Only a 429 says Microsoft did nothing; after a 408 or a 5xx it may have acted.
                    let may_resend = request.idempotent || meta.status == 429;
                    if may_resend && self.pause_before_retry(&mut retries, retry_after, deadline).await {
                        continue;
                    }
                    return Err(if meta.status == 429 {
                        MarketplaceError::Throttled { retry_after, meta }
                    } else {
                        MarketplaceError::Server { error, meta }
                    });
                }
                _ => return Err(MarketplaceError::Server { error, meta }),
            }
        }
    }

    /// Waits before the next retry; `false` when retries are used up or the wait would pass the deadline.
    async fn pause_before_retry(
        &self,
        retries: &mut u32,
        retry_after: Option<std::time::Duration>,
        deadline: Instant,
    ) -> bool {
        if *retries >= self.config.retry.max_retries {
            return false;
        }
        *retries += 1;
        let delay = self.config.retry.delay(*retries, retry_after);
        if Instant::now() + delay >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        true
    }

    async fn start_operation(
        &self,
        action: &'static str,
        method: Method,
        id: &SubscriptionId,
        body: Option<Value>,
        call: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        let mut request = self.request(action, method, self.url(&["saas", "subscriptions", id.as_str()]));
        request.body = body;
        let answer = self.send(request, call).await?;
        operation_location(&answer.headers).ok_or_else(|| MarketplaceError::Decode {
            action,
            meta: answer.meta.clone(),
            source: "the answer has no Operation-Location".into(),
        })
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned)
}

/// The operation id is the path segment after `/operations/` of `Operation-Location`; the
/// emulator-only `Operation-Id` header is a fallback.
fn operation_location(headers: &HeaderMap) -> Option<OperationLocation> {
    if let Some(url) = header(headers, "operation-location") {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let mut segments = path.split('/');
        segments.by_ref().find(|s| *s == "operations")?;
        let operation_id = segments.next().and_then(OperationId::parse)?;
        return Some(OperationLocation { operation_id, url: Some(url) });
    }
    let operation_id = header(headers, "operation-id").as_deref().and_then(OperationId::parse)?;
    Some(OperationLocation { operation_id, url: None })
}

/// Whether an id of an answer is absent, `null` or blank.
fn is_missing(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.trim().is_empty(),
        Some(_) => false,
    }
}

/// Sets `key` to the id we asked with when the answer left it out.
fn fill_missing(object: &mut Map<String, Value>, key: &str, asked: &str, action: &'static str) {
    if is_missing(object.get(key)) {
        tracing::warn!(action, key, value = asked, "the answer has no {key}: the one asked for is used");
        object.insert(key.to_owned(), Value::String(asked.to_owned()));
    }
}

/// The raw (still encoded) `continuationToken` value of a `@nextLink`.
fn continuation_token(next_link: &str) -> Option<String> {
    let query = next_link.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("continuationToken="))
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
}

impl MarketplaceApi for HttpMarketplaceClient {
    async fn probe_credentials(&self, call: &Call) -> Vec<(String, Result<(), TokenError>)> {
        self.tokens.probe_each(call.deadline.unwrap_or(Instant::now() + self.config.call_timeout)).await
    }

    async fn resolve(&self, token: &str, call: &Call) -> Result<ResolvedSubscription, MarketplaceError> {
        if token.trim().is_empty() {
            return Err(MarketplaceError::Invalid("the purchase token is empty"));
        }
        // What no purchase token is (too long, or what no header can carry) is not sent.
        if !super::plausible_purchase_token(token) {
            return Err(MarketplaceError::Invalid(
                "the purchase token is too long or holds characters no token has",
            ));
        }
        let mut request =
            self.request("resolve", Method::POST, self.url(&["saas", "subscriptions", "resolve"]));
        request.marketplace_token = Some(token);
        request.idempotent = true;
        self.send(request, call).await?.json("resolve")
    }

    async fn activate(
        &self,
        id: &SubscriptionId,
        plan: &PlanId,
        quantity: Option<u32>,
        call: &Call,
    ) -> Result<(), MarketplaceError> {
        let mut request = self.request(
            "activate",
            Method::POST,
            self.url(&["saas", "subscriptions", id.as_str(), "activate"]),
        );
        let mut body = json!({ "planId": plan });
        if let Some(quantity) = quantity {
            body["quantity"] = json!(quantity);
        }
        request.body = Some(body);
        // Not idempotent: a repeat answers 400 (already subscribed), which the caller handles.
        request.idempotent = false;
        self.send(request, call).await.map(drop)
    }

    async fn list_subscriptions(
        &self,
        page: Option<&PageToken>,
        call: &Call,
    ) -> Result<SubscriptionsPage, MarketplaceError> {
        const ACTION: &str = "list subscriptions";
        let mut url = self.url(&["saas", "subscriptions"]);
        if let Some(PageToken(token)) = page {
            // Appended as received: the token is already URL-encoded.
            url.set_query(Some(&format!(
                "api-version={}&continuationToken={token}",
                self.config.api_version
            )));
        }
        let answer = self.send(self.request(ACTION, Method::GET, url), call).await?;
        if answer.is_empty() {
            // Microsoft answers an empty body when the publisher has no subscriptions.
            return Ok(SubscriptionsPage::default());
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(default, deserialize_with = "crate::domain::lenient::list")]
            subscriptions: Vec<Subscription>,
            #[serde(rename = "@nextLink", default)]
            next_link: Option<String>,
            /// The 2019 API's way.
            #[serde(rename = "continuationToken", default)]
            continuation_token: Option<String>,
        }
        let page: Page = answer.json(ACTION)?;
        let next = match (page.next_link.filter(|l| !l.trim().is_empty()), page.continuation_token) {
            (Some(link), _) => {
                Some(PageToken(continuation_token(&link).ok_or_else(|| MarketplaceError::Decode {
                    action: ACTION,
                    meta: answer.meta.clone(),
                    source: "@nextLink has no continuationToken".into(),
                })?))
            }
            (None, Some(token)) if !token.trim().is_empty() => {
                Some(PageToken(url::form_urlencoded::byte_serialize(token.as_bytes()).collect()))
            }
            _ => None,
        };
        Ok(SubscriptionsPage { subscriptions: page.subscriptions, next })
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
        call: &Call,
    ) -> Result<Subscription, MarketplaceError> {
        let request =
            self.request("get subscription", Method::GET, self.url(&["saas", "subscriptions", id.as_str()]));
        self.send(request, call).await?.json("get subscription")
    }

    async fn list_available_plans(
        &self,
        id: &SubscriptionId,
        plan: Option<&PlanId>,
        call: &Call,
    ) -> Result<Vec<Plan>, MarketplaceError> {
        const ACTION: &str = "list available plans";
        let mut url = self.url(&["saas", "subscriptions", id.as_str(), "listAvailablePlans"]);
        if let Some(plan) = plan {
            url.query_pairs_mut().append_pair("planId", plan.as_str());
        }
        let answer = self.send(self.request(ACTION, Method::GET, url), call).await?;
        if answer.is_empty() {
            // The docs' way of saying the subscription is unknown (the spec's is 404).
            return Err(MarketplaceError::NotFound { error: ApiError::default(), meta: answer.meta });
        }
        Ok(answer.json::<crate::domain::AvailablePlans>(ACTION)?.plans)
    }

    async fn change_plan(
        &self,
        id: &SubscriptionId,
        plan: &PlanId,
        call: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        self.start_operation("change plan", Method::PATCH, id, Some(json!({ "planId": plan })), call).await
    }

    async fn change_quantity(
        &self,
        id: &SubscriptionId,
        quantity: u32,
        call: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        self.start_operation(
            "change quantity",
            Method::PATCH,
            id,
            Some(json!({ "quantity": quantity })),
            call,
        )
        .await
    }

    async fn delete_subscription(
        &self,
        id: &SubscriptionId,
        call: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        self.start_operation("delete subscription", Method::DELETE, id, None, call).await
    }

    async fn list_outstanding_operations(
        &self,
        id: &SubscriptionId,
        call: &Call,
    ) -> Result<Vec<Operation>, MarketplaceError> {
        const ACTION: &str = "list outstanding operations";
        let url = self.url(&["saas", "subscriptions", id.as_str(), "operations"]);
        let answer = self.send(self.request(ACTION, Method::GET, url), call).await?;
        if answer.is_empty() {
            return Ok(Vec::new());
        }
        // The API answers `{"operations": […]}`; Microsoft's emulator a bare array.
        let items = match answer.json(ACTION)? {
            Value::Array(items) => items,
            Value::Object(mut object) => match object.remove("operations") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(_) => return Err(answer.decode_error(ACTION, "`operations` is not a list")),
            },
            _ => return Err(answer.decode_error(ACTION, "neither a list nor an object")),
        };
        let mut operations = Vec::with_capacity(items.len());
        for mut item in items {
            if let Some(object) = item.as_object_mut() {
                // An operation without its id cannot be read or acknowledged.
                if is_missing(object.get("id")) {
                    tracing::warn!(action = ACTION, subscription_id = %id, "an operation without an id, skipped");
                    continue;
                }
                fill_missing(object, "subscriptionId", id.as_str(), ACTION);
            }
            operations.push(answer.decode(ACTION, item)?);
        }
        Ok(operations)
    }

    async fn get_operation(
        &self,
        id: &SubscriptionId,
        operation: &OperationId,
        call: &Call,
    ) -> Result<Operation, MarketplaceError> {
        const ACTION: &str = "get operation";
        let url = self.url(&["saas", "subscriptions", id.as_str(), "operations", operation.as_str()]);
        // The real service answers 400 for an unknown operation (docs/marketplace-api.md#get-operation), but a 400 may be
        // something else too: it stays `BadRequest`, and the callers decide.
        let answer = self.send(self.request(ACTION, Method::GET, url), call).await?;
        let mut value: Value = answer.json(ACTION)?;
        let Some(object) = value.as_object_mut() else {
            return Err(answer.decode_error(ACTION, "the operation is not an object"));
        };
        // The operation is the one asked for, whether or not the answer says so.
        fill_missing(object, "id", operation.as_str(), ACTION);
        fill_missing(object, "subscriptionId", id.as_str(), ACTION);
        answer.decode(ACTION, value)
    }

    async fn update_operation_status(
        &self,
        id: &SubscriptionId,
        operation: &OperationId,
        status: AckStatus,
        call: &Call,
    ) -> Result<(), MarketplaceError> {
        let url = self.url(&["saas", "subscriptions", id.as_str(), "operations", operation.as_str()]);
        let mut request = self.request("update operation status", Method::PATCH, url);
        request.body = Some(json!({ "status": status.as_str() }));
        // A repeat of an acknowledgement that was recorded only gets a 409, which the caller handles.
        request.idempotent = true;
        self.send(request, call).await.map(drop)
    }

    async fn post_usage_event(
        &self,
        event: &UsageEvent,
        call: &Call,
    ) -> Result<UsageOutcome, MarketplaceError> {
        const ACTION: &str = "post usage event";
        let mut request = self.request(ACTION, Method::POST, self.url(&["usageEvent"]));
        request.body = Some(serde_json::to_value(event).expect("a usage event serializes"));
        request.also_expected = &[409];
        // A repeat of an event that was accepted is the 409 "duplicate", read below.
        request.idempotent = true;
        let answer = self.send(request, call).await?;
        if answer.status == StatusCode::CONFLICT {
            // Already reported for this hour: the body carries the accepted event.
            let accepted = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| v.pointer("/additionalInfo/acceptedMessage").cloned())
                .and_then(|v| serde_json::from_value::<UsageEventResult>(v).ok());
            return Ok(UsageOutcome::Duplicate(accepted));
        }
        answer.json(ACTION).map(UsageOutcome::Accepted)
    }

    async fn post_usage_events(
        &self,
        events: &[UsageEvent],
        call: &Call,
    ) -> Result<BatchUsageEventResult, MarketplaceError> {
        if events.is_empty() || events.len() > super::MAX_BATCH {
            return Err(MarketplaceError::Invalid("a usage batch holds 1 to 25 events"));
        }
        let mut request = self.request("post usage events", Method::POST, self.url(&["batchUsageEvent"]));
        request.body = Some(json!({ "request": events }));
        // A repeat reports the events accepted the first time as `Duplicate`.
        request.idempotent = true;
        self.send(request, call).await?.json("post usage events")
    }

    async fn get_usage_events(
        &self,
        query: &UsageQuery,
        call: &Call,
    ) -> Result<Vec<UsageRecord>, MarketplaceError> {
        const ACTION: &str = "get usage events";
        let mut url = self.url(&["usageEvents"]);
        {
            let format = |t: &crate::domain::Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("usageStartDate", &format(&query.usage_start_date));
            if let Some(end) = &query.usage_end_date {
                pairs.append_pair("UsageEndDate", &format(end));
            }
            if let Some(offer) = &query.offer_id {
                pairs.append_pair("offerId", offer);
            }
            if let Some(plan) = &query.plan_id {
                pairs.append_pair("planId", plan.as_str());
            }
            if let Some(dimension) = &query.dimension {
                pairs.append_pair("dimension", dimension);
            }
        }
        let answer = self.send(self.request(ACTION, Method::GET, url), call).await?;
        if answer.is_empty() {
            return Ok(Vec::new());
        }
        // Microsoft once answered a JSON string holding the array (docs/marketplace-api.md#retrieve-usage-events).
        let value = match answer.json::<Value>(ACTION)? {
            Value::String(text) => serde_json::from_str(&text).map_err(|e| answer.decode_error(ACTION, e))?,
            value => value,
        };
        answer.decode(ACTION, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn the_operation_id_is_the_segment_after_operations() {
        let location = "https://marketplaceapi.microsoft.com/api/saas/subscriptions/sub-1/operations/op-9?api-version=2018-08-31";
        let parsed = operation_location(&headers(&[("operation-location", location)])).expect("parsed");
        assert_eq!(parsed.operation_id.as_str(), "op-9");
        assert_eq!(parsed.url.as_deref(), Some(location));
        let fallback = operation_location(&headers(&[("operation-id", "op-7")])).expect("parsed");
        assert_eq!((fallback.operation_id.as_str(), fallback.url), ("op-7", None));
        assert!(
            operation_location(&headers(&[("operation-location", "https://x/api/saas/subscriptions/s")]))
                .is_none()
        );
        assert!(operation_location(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_continuation_token_is_kept_encoded() {
        let link = "https://marketplaceapi.microsoft.com/api/saas/subscriptions?continuationToken=%5b%7b%22token%22%3a%22a%2Bb%22%7d%5d&api-version=2018-08-31";
        assert_eq!(continuation_token(link).as_deref(), Some("%5b%7b%22token%22%3a%22a%2Bb%22%7d%5d"));
        // The doc sample's broken URL still yields its token.
        let doc = "https:// https://marketplaceapi.microsoft.com/api/saas/subscriptions/?continuationToken=abc&api-version=2018-08-31";
        assert_eq!(continuation_token(doc).as_deref(), Some("abc"));
        assert_eq!(continuation_token("https://x/api/saas/subscriptions?api-version=2018-08-31"), None);
    }
}
