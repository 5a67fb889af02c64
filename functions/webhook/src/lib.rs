//! Microsoft's webhook: authenticate the bearer token (docs/marketplace-api.md#webhook-authentication), parse the payload
//! tolerantly, then one call into the core, which confirms, decides and applies exactly once. 200
//! only after the durable write; 4xx to reject a customer's change or refuse a bad delivery; 5xx
//! when Microsoft or the store fails transiently, so Microsoft retries.

use std::time::{Duration, Instant, SystemTime};

use fulfillment::clock::{Clock, SystemClock};
use fulfillment::config::Environment;
use fulfillment::domain::WebhookPayload;
use fulfillment::identity::WebhookAuthenticator;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceApi};
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::{RejectedDelivery, SubscriptionStore};
use fulfillment::web::respond;
use fulfillment::webhook::{Handled, Webhook};
use fulfillment::wiring::{Services, StartupError};
use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

/// Microsoft waits 10 seconds; leave room for the answer to travel back. Everything a delivery
/// waits for is inside it: the cold start before it, the keys, Microsoft and the table.
pub const BUDGET: Duration = Duration::from_secs(8);
/// API Gateway gives up on a Lambda after 30 s: a request cannot have waited longer than that.
const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// Real payloads are a few kilobytes.
pub const MAX_BODY: usize = 256 * 1024;

pub struct WebhookFunction<S, M, C> {
    pub webhook: Webhook<S, M, C>,
    pub authenticator: WebhookAuthenticator,
    pub clock: C,
}

/// The webhook as deployed: DynamoDB, Microsoft's API, the system clock.
pub type Deployed = WebhookFunction<DynamoDbStore, HttpMarketplaceClient, SystemClock>;

impl Deployed {
    /// The one way to build the deployed webhook (its `main.rs`, the local stack, the benchmarks).
    pub async fn from_environment(environment: Environment) -> Result<Self, StartupError> {
        let mut services = Services::load(environment).await?;
        // Inside Microsoft's 10 seconds: short attempts, short backoff.
        let marketplace = &mut services.marketplace;
        marketplace.attempt_timeout = marketplace.attempt_timeout.min(Duration::from_secs(3));
        marketplace.retry.base_delay = Duration::from_millis(200);
        marketplace.retry.max_delay = Duration::from_secs(1);
        let marketplace = services.marketplace_client()?;
        // Entra's signing keys come from the host its tokens come from: one pool, one handshake.
        let keys_http = marketplace.http().clone();
        let function = Self::with_keys_client(
            services.store,
            marketplace,
            SystemClock,
            &services.environment,
            keys_http,
        )?;
        function.warm_up().await;
        Ok(function)
    }

    /// At start, together: the signing keys, a token, the connections to Microsoft and DynamoDB
    /// (see [`fulfillment::wiring::warm_up`]): the first delivery after idle then waits for none.
    pub async fn warm_up(&self) {
        let marketplace = self.webhook.marketplace();
        let (_, token) = marketplace.warm_up_token();
        // The keys, then the token: both from Entra's host, over one connection (at once, they
        // would take two handshakes).
        let entra = async move {
            let keys =
                self.authenticator.fetch_keys().await.map(drop).map_err(|e| fulfillment::error_chain(&e));
            // The token even when the keys failed: each spares the first delivery its fetch.
            match (keys, token.await) {
                (Ok(()), token) => token,
                (Err(keys), Ok(())) => Err(keys),
                (Err(keys), Err(token)) => Err(format!("{keys}; {token}")),
            }
        };
        let entra: fulfillment::wiring::WarmUpStep<'_> = ("signing-keys-and-entra-token", Box::pin(entra));
        let steps = vec![entra, marketplace.warm_up_connection(), self.webhook.store().warm_up_step()];
        fulfillment::wiring::warm_up("webhook", steps).await;
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock + Clone> WebhookFunction<S, M, C> {
    /// The webhook over these ports, with its settings (the token's issuer and keys, the policy
    /// for customers' changes) from `environment`: what the deployed function and the tests build.
    pub fn new(store: S, marketplace: M, clock: C, environment: &Environment) -> Result<Self, StartupError> {
        Self::with_keys_client(store, marketplace, clock, environment, fulfillment::http::client()?)
    }

    /// [`Self::new`], fetching the signing keys with `keys_http`.
    fn with_keys_client(
        store: S,
        marketplace: M,
        clock: C,
        environment: &Environment,
        keys_http: reqwest::Client,
    ) -> Result<Self, StartupError> {
        let authenticator = WebhookAuthenticator::new(keys_http, environment.webhook_token()?);
        let webhook = Webhook::new(store, marketplace, clock.clone(), environment.change_policy()?);
        Ok(Self { webhook, authenticator, clock })
    }
}

impl<S: SubscriptionStore, M: MarketplaceApi, C: Clock> WebhookFunction<S, M, C> {
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        let arrived = received_at(&request, started);
        let deadline = arrived + BUDGET;
        // Whatever is still waiting at the deadline (a slow table, keys, Microsoft) is given up,
        // as if the function had stopped there: nothing is answered 200 before it is durable, and
        // Microsoft delivers again.
        let response = match tokio::time::timeout_at(deadline.into(), self.respond(&request, deadline)).await
        {
            Ok(response) => response,
            Err(_) => {
                tracing::error!(
                    waited_ms = arrived.elapsed().as_millis() as u64,
                    "webhook out of time; Microsoft will deliver again"
                );
                respond::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "the notification could not be processed in time",
                )
            }
        };
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "webhook answered"
        );
        response.map(Body::from)
    }

    async fn respond(&self, request: &Request, deadline: Instant) -> Response<String> {
        if request.method() != Method::POST {
            return respond::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the webhook only accepts POST",
            );
        }
        let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok());
        if let Err(refusal) = self.authenticator.verify(authorization).await {
            // Logged without the token.
            if refusal.is_callers_fault() {
                tracing::warn!(error = %fulfillment::error_chain(&refusal), "webhook refused: bad token");
                return respond::error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "the bearer token is not valid",
                );
            }
            tracing::error!(error = %fulfillment::error_chain(&refusal), "the token cannot be checked");
            return respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "KeysUnavailable",
                "the token cannot be checked now",
            );
        }

        let body = request.body().as_ref();
        let payload = if body.len() > MAX_BODY {
            Err(format!("the body has {} bytes, more than {MAX_BODY}", body.len()))
        } else {
            serde_json::from_slice::<WebhookPayload>(body).map_err(|e| format!("not a webhook payload: {e}"))
        };
        let payload = match payload {
            Ok(payload) => payload,
            Err(reason) => {
                tracing::warn!(%reason, size = body.len(), "webhook refused: bad body");
                let delivery = RejectedDelivery::new(body, reason.clone(), self.clock.now());
                if let Err(store) = self.webhook.store().record_rejected(&delivery).await {
                    tracing::error!(error = %fulfillment::error_chain(&store), "could not record the rejected delivery");
                }
                return respond::error(StatusCode::BAD_REQUEST, "InvalidPayload", &reason);
            }
        };

        let (subscription_id, operation_id) = (&payload.operation.subscription_id, &payload.operation.id);
        match self.webhook.handle(&payload, deadline).await {
            Ok(Handled::Recorded) => respond::json(StatusCode::OK, &json!({ "status": "recorded" })),
            Ok(Handled::Duplicate) => respond::json(StatusCode::OK, &json!({ "status": "duplicate" })),
            Ok(Handled::KeptAside(reason)) => {
                respond::json(StatusCode::OK, &json!({ "status": "kept aside", "reason": reason }))
            }
            Ok(Handled::Rejected(reason)) => {
                respond::error(StatusCode::BAD_REQUEST, "ChangeRejected", &reason)
            }
            Ok(Handled::Mismatched(reason)) => {
                respond::error(StatusCode::BAD_REQUEST, "OperationMismatch", &reason)
            }
            Err(failure) => {
                tracing::error!(%subscription_id, %operation_id, error = %fulfillment::error_chain(&failure), "webhook failed; Microsoft will retry");
                // Microsoft delivers again after either; the status tells an alarm which it was.
                if failure.is_retryable() {
                    respond::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Unavailable",
                        "the notification could not be processed now",
                    )
                } else {
                    respond::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "the notification cannot be processed until the publisher fixes its side",
                    )
                }
            }
        }
    }
}

/// When API Gateway received the request (its `timeEpoch`), as an instant of this process:
/// Microsoft's 10 seconds began then, before whatever came first here (a cold start: the secret,
/// the keys). A request without one (a local run) or with one it cannot have (an event file's, a
/// clock far off) arrived `now`.
fn received_at(request: &Request, now: Instant) -> Instant {
    let epoch_ms = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.time_epoch,
        _ => return now,
    };
    let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    match u64::try_from(now_ms - epoch_ms).map(Duration::from_millis) {
        Ok(waited) if waited < LONGEST_WAIT => now.checked_sub(waited).unwrap_or(now),
        _ => now,
    }
}
