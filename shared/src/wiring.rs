//! The composition root's shared half: from a function's settings to the adapters every function
//! uses (the DynamoDB store, the Marketplace API client's configuration, an HTTP client for Entra
//! ID). Each function's own constructor (`from_environment` in its crate) starts here, adds what
//! only it needs, and is what its `main.rs`, the local stack, the benchmarks and the tests call.

use std::collections::HashMap;
use std::time::Duration;

use crate::aws::AwsClients;
use crate::config::{ConfigError, Environment, MARKETPLACE_SECRET, SecretKind};
use crate::domain::Timestamp;
use crate::events::bus::EventBridgeBus;
use crate::marketplace::{HttpMarketplaceClient, MarketplaceConfig};
use crate::store::dynamodb::DynamoDbStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a function could not start (Lambda reports it as an init error). Its `Debug`, which is what
/// `main` prints for an error it returns, is the whole chain in words, e.g. "invalid configuration:
/// ENTRA_CLIENT_SECRET is not set".
#[derive(thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("cannot read the secret named by {variable}")]
    Secret {
        variable: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("the secret named by {variable} is not a JSON object of strings")]
    SecretFormat {
        variable: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot build an HTTP client")]
    Http(#[from] reqwest::Error),
}

impl std::fmt::Debug for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::error_chain(self))
    }
}

/// The benchmark's test authority, when `EXTRA_ROOT_CERTIFICATES` names one: taken before any
/// HTTPS client is built.
fn trust_extra_roots(environment: &Environment) -> Result<(), ConfigError> {
    if crate::http::trust_extra_roots(environment.extra_root_certificates()?) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        name: "EXTRA_ROOT_CERTIFICATES",
        reason: "an HTTPS client of this process was built before it was read, or other roots were".into(),
    })
}

/// What every function builds once per execution environment.
pub struct Services {
    /// The settings, with the secrets' fields.
    pub environment: Environment,
    pub store: DynamoDbStore,
    /// Microsoft's API, as configured; a function may tune it before building its client.
    pub marketplace: MarketplaceConfig,
    /// Where the app's credentials for Microsoft came from, for the self-check.
    pub secret: SecretSource,
}

/// The lifecycle events' bus (the stream consumer needs nothing else: no table, no Microsoft).
pub fn event_bus(environment: &Environment) -> Result<EventBridgeBus, StartupError> {
    environment.check_local_endpoints(&["EVENTBRIDGE_ENDPOINT"])?;
    let settings = environment.event_bus()?;
    trust_extra_roots(environment)?;
    let aws = AwsClients::new(environment.aws()?)?;
    let client = aws.eventbridge(settings.endpoint.as_ref().map(|u| u.as_str()));
    Ok(EventBridgeBus::new(client, settings.bus_name))
}

/// Where the app's credentials for Microsoft live (they expire; the pages' keys do not).
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// None: every setting is in the environment (local runs).
    Environment,
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        arn: String,
    },
}

impl SecretSource {
    /// When the secret last changed (`None` without one), or why that cannot be read.
    pub async fn changed_at(&self) -> Result<Option<Timestamp>, String> {
        match self {
            Self::Environment => Ok(None),
            Self::SecretsManager { client, arn } => {
                let described = client.describe_secret().secret_id(arn).send().await.map_err(|e| {
                    format!(
                        "cannot describe the secret: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                })?;
                let changed = described.last_changed_date().or(described.created_date());
                Ok(changed.and_then(|at| Timestamp::from_timestamp(at.secs(), at.subsec_nanos())))
            }
        }
    }
}

impl Services {
    /// Reads the secrets the environment names (see [`crate::config::SECRETS`]) and builds the
    /// clients.
    pub async fn load(environment: Environment) -> Result<Self, StartupError> {
        environment.check_local_run()?;
        trust_extra_roots(&environment)?;
        let aws = AwsClients::new(environment.aws()?)?;
        let arns = environment.secret_arns()?;
        if !arns.is_empty() {
            environment.check_local_endpoints(&["SECRETSMANAGER_ENDPOINT"])?;
        }
        let client =
            aws.secrets_manager(environment.secrets_manager_endpoint()?.as_ref().map(|u| u.as_str()));
        let (mut environment, mut secret) = (environment, SecretSource::Environment);
        for (kind, arn) in arns {
            let fields = read_secret(&client, kind, &arn).await?;
            environment = environment.with_secret(kind, fields)?;
            if kind == MARKETPLACE_SECRET {
                secret = SecretSource::SecretsManager { client: client.clone(), arn };
            }
        }
        let settings = environment.store()?;
        // A stuck call must not eat the webhook's 10 seconds (connecting gives up after a second:
        // see `aws::sdk_http_client`).
        let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(5))
            .build();
        let dynamodb = aws.dynamodb(settings.endpoint.as_ref().map(|u| u.as_str()), timeouts);
        let store = DynamoDbStore::new(dynamodb, settings.table_name, settings.usage_table_name);
        let marketplace = environment.marketplace()?;
        Ok(Self { environment, store, marketplace, secret })
    }

    /// The Marketplace API client, as configured.
    pub fn marketplace_client(&self) -> Result<HttpMarketplaceClient, StartupError> {
        Ok(HttpMarketplaceClient::new(self.marketplace.clone())?)
    }

    /// The [`warm_up`] of a function that calls Microsoft and the table: a token and the
    /// connections to both.
    pub async fn warm_up(&self, function: &'static str, marketplace: &HttpMarketplaceClient) {
        let mut steps = marketplace.warm_up_steps();
        steps.push(self.store.warm_up_step());
        warm_up(function, steps).await;
    }
}

async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    kind: SecretKind,
    arn: &str,
) -> Result<HashMap<String, String>, StartupError> {
    let secret = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| StartupError::Secret { variable: kind.variable, source: e.into() })?;
    serde_json::from_str(secret.secret_string().unwrap_or("{}"))
        .map_err(|source| StartupError::SecretFormat { variable: kind.variable, source })
}

/// How long a function's start may spend on its [`warm_up`]: the steps run together, and what is
/// not done by then is left to the first request.
pub const WARM_UP_BUDGET: Duration = Duration::from_secs(1);

/// One piece of work a first request would otherwise wait for, done at start instead.
pub type WarmUpStep<'a> = (&'static str, futures::future::BoxFuture<'a, Result<(), String>>);

/// Does at start, all at once and within [`WARM_UP_BUDGET`], what the first request would
/// otherwise do one after the other (fetch Entra's keys and a token, open the TLS connections to
/// Microsoft and DynamoDB): the handshakes overlap, and where Lambda initialises an environment
/// ahead of a request they leave its path altogether. A step that fails or is not done in time
/// is only logged: the first request does it itself, as without a warm-up, so a start never
/// fails for it and waits at most the budget.
pub async fn warm_up(function: &'static str, steps: Vec<WarmUpStep<'_>>) {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + WARM_UP_BUDGET;
    let started = std::time::Instant::now();
    let mut pending: Vec<&'static str> = steps.iter().map(|(name, _)| *name).collect();
    let mut running: futures::stream::FuturesUnordered<_> =
        steps.into_iter().map(|(name, step)| async move { (name, step.await) }).collect();
    // Each step is logged as it ends; those still running at the deadline are named.
    while let Ok(Some((step, result))) = tokio::time::timeout_at(deadline, running.next()).await {
        pending.retain(|name| *name != step);
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => tracing::debug!(function, step, ms, "warmed up"),
            Err(error) => {
                tracing::warn!(function, step, ms, %error, "warm-up step failed; the first request will do it")
            }
        }
    }
    if !pending.is_empty() {
        tracing::warn!(
            function,
            steps = ?pending,
            budget_ms = WARM_UP_BUDGET.as_millis() as u64,
            "warm-up steps not done in time; the first request will finish them"
        );
    }
    // What the warm-up added to the start (the benchmark reads it, to tell it from the rest).
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(function, ms, "warm-up ended");
}
