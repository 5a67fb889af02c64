//! The whole system on one machine: the functions' handlers in one process behind one HTTP
//! server, our Marketplace emulator, and the table (as `template.yaml` declares it) in DynamoDB
//! Local. Used by the end-to-end tests and by `scripts/run`.

pub mod events;
pub mod iam;
pub mod table;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use fulfillment::config::Environment;
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::webhook::ChangePolicy;
use fulfillment::wiring::StartupError;
use marketplace_emulator::{Emulator, EmulatorConfig};

/// A client of the DynamoDB at `endpoint` (DynamoDB Local), with dummy credentials and short timeouts.
pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "dynamodb-local"))
        .endpoint_url(endpoint)
        .http_client(fulfillment::aws::sdk_http_client().expect("an HTTP client"))
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// How to run the stack.
#[derive(Debug, Clone)]
pub struct Options {
    pub dynamodb_endpoint: String,
    /// Created from the template when missing.
    pub tables: table::TableNames,
    /// 0 = any free port.
    pub web_port: u16,
    /// 0 = any free port.
    pub emulator_port: u16,
    /// Sign in with Entra ID (played by the emulator) before the landing page.
    pub signin: bool,
    pub auto_activate: bool,
    /// Microsoft's side; `Default` otherwise (its `webhook_url` is set to ours).
    pub emulator: EmulatorConfig,
    /// Which customer plan and seat changes the webhook accepts.
    pub policy: ChangePolicy,
    /// A local EventBridge and SQS (moto's server): the lifecycle events are relayed there from
    /// the table's stream. `None`: no events.
    pub eventbridge_endpoint: Option<String>,
}

impl Options {
    pub fn new(dynamodb_endpoint: impl Into<String>) -> Self {
        Self {
            dynamodb_endpoint: dynamodb_endpoint.into(),
            tables: table::TableNames::fresh(),
            web_port: 0,
            emulator_port: 0,
            signin: false,
            auto_activate: false,
            emulator: EmulatorConfig::default(),
            policy: ChangePolicy::default(),
            eventbridge_endpoint: None,
        }
    }

    /// With the lifecycle events, on the EventBridge (moto) at `endpoint`.
    pub fn with_events(self, endpoint: impl Into<String>) -> Self {
        Self { eventbridge_endpoint: Some(endpoint.into()), ..self }
    }
}

/// The landing page's app registration in the emulator's identity provider.
pub const SIGNIN_CLIENT_ID: &str = "5ce10000-0000-4000-8000-00000000c11e";

/// The functions, each built by the constructor its `main.rs` calls.
pub struct Functions {
    pub landing: landing::Deployed,
    pub activate: activate::Deployed,
    pub webhook: webhook::Deployed,
    pub subscriptions: subscriptions::Deployed,
    pub reconcile: reconcile::Deployed,
    pub metering: metering::Deployed,
    /// Only with the lifecycle events.
    pub events_relay: Option<Arc<events_relay::Deployed>>,
}

/// The lifecycle events of a stack: the stream pump feeding the relay, and the queue they reach.
pub struct LifecycleEvents {
    pub queue: events::EventQueue,
    pub pump: events::StreamPump,
    /// Every event taken off the queue so far, in order.
    received: tokio::sync::Mutex<Vec<serde_json::Value>>,
}

/// A running stack; stops when dropped.
pub struct LocalStack {
    /// Where the functions answer, e.g. `http://127.0.0.1:3000`.
    pub url: String,
    pub emulator: Emulator,
    pub store: DynamoDbStore,
    pub tables: table::TableNames,
    /// The handlers, for invoking them with Lambda events directly.
    pub functions: Arc<Functions>,
    /// The functions' configuration (pointing at the emulator and the table).
    pub environment: Environment,
    pub events: Option<LifecycleEvents>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("a function cannot start")]
    Function(#[from] StartupError),
    #[error("the lifecycle events cannot be set up: {0}")]
    Events(String),
}

impl LocalStack {
    pub async fn start(options: Options) -> Result<Self, StartError> {
        let dynamodb = dynamodb_client(&options.dynamodb_endpoint);
        let stream_arn =
            table::ensure_from_template(&dynamodb, &options.tables, options.eventbridge_endpoint.is_some())
                .await;
        let queue = match &options.eventbridge_endpoint {
            Some(endpoint) => Some(
                events::EventQueue::create(endpoint, &format!("lifecycle-{}", uuid::Uuid::new_v4()))
                    .await
                    .map_err(StartError::Events)?,
            ),
            None => None,
        };

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.web_port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let mut emulator_config = options.emulator.clone();
        emulator_config.webhook_url.get_or_insert_with(|| format!("{url}/webhook"));
        emulator_config.signin_client_id.get_or_insert_with(|| SIGNIN_CLIENT_ID.to_owned());
        let emulator =
            Emulator::start_on(SocketAddr::from(([127, 0, 0, 1], options.emulator_port)), emulator_config)
                .await?;

        let environment = environment(&options, &url, &emulator, queue.as_ref());
        let store = options.tables.store(dynamodb);
        // Each function is built as its `main.rs` builds it: its own clients, as each Lambda has
        // its own process.
        let functions = Arc::new(Functions {
            landing: landing::Deployed::from_environment(environment.clone()).await?,
            activate: activate::Deployed::from_environment(environment.clone()).await?,
            webhook: webhook::Deployed::from_environment(environment.clone()).await?,
            subscriptions: subscriptions::Deployed::from_environment(environment.clone()).await?,
            reconcile: reconcile::Deployed::from_environment(environment.clone()).await?,
            metering: metering::Deployed::from_environment(environment.clone()).await?,
            events_relay: match &queue {
                Some(_) => Some(Arc::new(events_relay::Deployed::from_environment(environment.clone())?)),
                None => None,
            },
        });
        let events = match (queue, &functions.events_relay) {
            (Some(queue), Some(relay)) => {
                let stream_arn = stream_arn.ok_or_else(|| {
                    StartError::Events(format!("table {} has no stream", options.tables.subscriptions))
                })?;
                let pump =
                    events::StreamPump::start(&options.dynamodb_endpoint, stream_arn, relay.clone()).await;
                Some(LifecycleEvents { queue, pump, received: Default::default() })
            }
            _ => None,
        };

        let app = axum::Router::new()
            .route("/landing", axum::routing::any(landing))
            .route("/activate", axum::routing::any(activate))
            .route("/webhook", axum::routing::any(webhook))
            .route("/admin/subscriptions/{id}/activate", axum::routing::any(admin_activate))
            .route("/admin/{*rest}", axum::routing::any(admin))
            .route("/_local/reconcile", axum::routing::post(reconcile_now))
            .route("/_local/metering", axum::routing::post(metering_now))
            .with_state(functions.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "local stack server stopped");
            }
        });
        Ok(Self { url, emulator, store, tables: options.tables, functions, environment, events, server })
    }

    /// The landing page URL for a purchase token, as Microsoft would build it.
    pub fn landing_url(&self, token: &str) -> String {
        let mut url = url::Url::parse(&format!("{}/landing", self.url)).expect("a URL");
        url.query_pairs_mut().append_pair("token", token);
        url.to_string()
    }
}

impl LocalStack {
    /// The lifecycle events taken off the queue since the last call (EventBridge's envelopes),
    /// once everything committed before the call has been relayed.
    pub async fn new_events(&self) -> Result<Vec<serde_json::Value>, String> {
        let events = self.events.as_ref().ok_or("this stack runs without lifecycle events")?;
        events.pump.caught_up(Duration::from_secs(60)).await?;
        let taken = events.queue.take().await?;
        events.received.lock().await.extend(taken.iter().cloned());
        Ok(taken)
    }

    /// Drops the lifecycle events so far, once everything committed before the call has been
    /// relayed, and says how many there were (for a test's setup of thousands of records: moto's
    /// queue hands out large backlogs slowly).
    pub async fn discard_events(&self) -> Result<u64, String> {
        let events = self.events.as_ref().ok_or("this stack runs without lifecycle events")?;
        events.pump.caught_up(Duration::from_secs(60)).await?;
        events.queue.purge().await
    }

    /// Every lifecycle event of one subscription so far (their `detail`), in the order received.
    pub async fn lifecycle_events(&self, subscription_id: &str) -> Vec<serde_json::Value> {
        self.new_events().await.unwrap_or_else(|e| panic!("{e}"));
        let events = self.events.as_ref().expect("events");
        let received = events.received.lock().await;
        received
            .iter()
            .map(|envelope| envelope["detail"].clone())
            .filter(|detail| detail["subscriptionId"] == subscription_id)
            .collect()
    }
}

/// The functions' configuration, as the template would set it, pointing at the emulator.
fn environment(
    options: &Options,
    url: &str,
    emulator: &Emulator,
    events: Option<&events::EventQueue>,
) -> Environment {
    let settings = emulator.config();
    let mut pairs = vec![
        // What Lambda sets; DynamoDB Local takes any credentials.
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "local".into()),
        ("AWS_SECRET_ACCESS_KEY", "local".into()),
        ("TABLE_NAME", options.tables.subscriptions.clone()),
        ("USAGE_TABLE_NAME", options.tables.usage.clone()),
        ("DYNAMODB_ENDPOINT", options.dynamodb_endpoint.clone()),
        ("ENTRA_TENANT_ID", settings.publisher_tenant_id.clone()),
        ("ENTRA_CLIENT_ID", settings.publisher_app_id.clone()),
        ("ENTRA_CLIENT_SECRET", settings.publisher_client_secret.clone()),
        ("ENTRA_AUTHORITY", emulator.authority()),
        ("MARKETPLACE_API_BASE", emulator.api_base()),
        ("MARKETPLACE_CALL_TIMEOUT_MS", "8000".into()),
        // A fixed key for local runs only; in AWS it comes from Secrets Manager.
        ("FORM_SIGNING_KEY", "local-stack-form-signing-key-0123456789abcdef".into()),
        ("LANDING_URL", format!("{url}/landing")),
        ("ACTIVATE_URL", format!("{url}/activate")),
        ("PRODUCT_NAME", "Contoso Cloud".into()),
        ("PRODUCT_URL", "https://app.contoso.example/".into()),
        ("AUTO_ACTIVATE", options.auto_activate.to_string()),
        ("SECURE_COOKIES", "false".into()),
        // No schedule here: every invocation of the reconciliation starts a pass.
        ("RECONCILE_INTERVAL_MINUTES", "0".into()),
    ];
    // The webhook's policy, as the template's parameters would set it.
    let policy = &options.policy;
    pairs.push(("ACCEPT_CUSTOMER_CHANGES", policy.accept_changes.to_string()));
    if let Some(plans) = &policy.allowed_plans {
        pairs.push(("ALLOWED_PLANS", plans.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")));
    }
    if let Some(min) = policy.min_seats {
        pairs.push(("MIN_SEATS", min.to_string()));
    }
    if let Some(max) = policy.max_seats {
        pairs.push(("MAX_SEATS", max.to_string()));
    }
    if options.signin {
        pairs.push((
            "OIDC_CLIENT_ID",
            settings.signin_client_id.clone().unwrap_or_else(|| SIGNIN_CLIENT_ID.into()),
        ));
        pairs.push(("OIDC_AUTHORITY", format!("{}/organizations/v2.0", emulator.authority())));
    }
    if let Some(queue) = events {
        pairs.push(("EVENT_BUS_NAME", queue.bus_name.clone()));
        pairs.push(("EVENTBRIDGE_ENDPOINT", queue.endpoint.clone()));
    }
    Environment::from_pairs(pairs)
}

async fn landing(
    State(functions): State<Arc<Functions>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let request = into_lambda(request).await;
    from_lambda(functions.landing.handle(request).await)
}

async fn activate(
    State(functions): State<Arc<Functions>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let request = into_lambda(request).await;
    from_lambda(functions.activate.handle(request).await)
}

async fn webhook(
    State(functions): State<Arc<Functions>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let request = into_lambda(request).await;
    from_lambda(functions.webhook.handle(request).await)
}

/// The admin API. API Gateway admits only IAM-signed requests there; locally, this process stands
/// in for it and marks every request as coming from a local IAM caller.
async fn admin(
    State(functions): State<Arc<Functions>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let request = as_iam_caller(into_lambda(request).await);
    from_lambda(functions.subscriptions.handle(request).await)
}

/// Activation by the publisher's tooling: the activate function's IAM-only route.
async fn admin_activate(
    State(functions): State<Arc<Functions>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let request = as_iam_caller(into_lambda(request).await);
    from_lambda(functions.activate.handle(request).await)
}

/// The request context API Gateway gives a request it admitted with IAM authorization (a local
/// caller's), as the admin routes need it.
pub fn as_iam_caller(mut request: lambda_http::Request) -> lambda_http::Request {
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
        ApiGatewayV2httpRequestContext,
    };
    let mut context = ApiGatewayV2httpRequestContext::default();
    let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
    iam.user_arn = Some("arn:aws:iam::000000000000:user/local".into());
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.iam = Some(iam);
    context.authorizer = Some(authorizer);
    request.extensions_mut().insert(lambda_http::request::RequestContext::ApiGatewayV2(context));
    request
}

/// Runs a whole reconciliation pass now (in AWS a schedule does, every few minutes, a pass an
/// interval): answers its summary, with 500 when it is incomplete (Lambda would count an error).
async fn reconcile_now(State(functions): State<Arc<Functions>>) -> axum::response::Response {
    let pass = functions.reconcile.reconciler.pass(&uuid::Uuid::new_v4().to_string()).await;
    let status = if pass.complete {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, axum::Json(pass)).into_response()
}

/// A metering tick now: every closed hour of usage not yet settled is sent to the emulator.
async fn metering_now(State(functions): State<Arc<Functions>>) -> axum::response::Response {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let event = serde_json::json!({ "id": uuid::Uuid::new_v4().to_string() });
    match functions.metering.handle(&event, deadline).await {
        Ok(report) => (axum::http::StatusCode::OK, axum::Json(report)).into_response(),
        Err(failed) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(*failed.0)).into_response(),
    }
}

/// What API Gateway would hand the function: the same method, path, raw query, headers and body.
async fn into_lambda(request: axum::extract::Request) -> lambda_http::Request {
    let (parts, body) = request.into_parts();
    // Function URLs and API Gateway cap bodies far below this.
    let bytes = axum::body::to_bytes(body, 6 * 1024 * 1024).await.unwrap_or_default();
    let body =
        if bytes.is_empty() { lambda_http::Body::Empty } else { lambda_http::Body::Binary(bytes.to_vec()) };
    // API Gateway hands the function the raw path too; the handlers route on it.
    let path = parts.uri.path().to_owned();
    lambda_http::RequestExt::with_raw_http_path(lambda_http::Request::from_parts(parts, body), path)
}

fn from_lambda(response: lambda_http::Response<lambda_http::Body>) -> axum::response::Response {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    (parts, bytes).into_response()
}
