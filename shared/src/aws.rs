//! The AWS SDK clients. They are configured from what Lambda puts in a function's environment (the
//! region and the execution role's credentials), not by the SDK's general provider chain
//! (profiles, SSO, STS, instance metadata), and they send over our HTTP stack ([`crate::http`]).
//! Both keep the cold start short and the package small.

use std::time::Duration;

use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// Region and credentials, as Lambda sets them for the function's execution role.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    pub region: Region,
    /// Its `Debug` hides the secret parts.
    credentials: Credentials,
}

impl AwsSettings {
    pub fn new(
        region: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    ) -> Self {
        let credentials =
            Credentials::new(access_key_id, secret_access_key, session_token, None, "lambda-environment");
        Self { region: Region::new(region), credentials }
    }
}

/// The AWS clients' common parts: one HTTP client for all of them.
#[derive(Clone, Debug)]
pub struct AwsClients {
    settings: AwsSettings,
    http: SharedHttpClient,
}

impl AwsClients {
    pub fn new(settings: AwsSettings) -> Result<Self, reqwest::Error> {
        Ok(Self { settings, http: sdk_http_client()? })
    }

    /// A DynamoDB client; `endpoint` points it at DynamoDB Local.
    pub fn dynamodb(&self, endpoint: Option<&str>, timeouts: TimeoutConfig) -> aws_sdk_dynamodb::Client {
        let mut config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(self.settings.region.clone())
            .credentials_provider(self.settings.credentials.clone())
            .http_client(self.http.clone())
            .timeout_config(timeouts);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        aws_sdk_dynamodb::Client::from_conf(config.build())
    }

    /// An EventBridge client; `endpoint` points it at a local stand-in.
    pub fn eventbridge(&self, endpoint: Option<&str>) -> aws_sdk_eventbridge::Client {
        let mut config = aws_sdk_eventbridge::Config::builder()
            .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
            .region(self.settings.region.clone())
            .credentials_provider(self.settings.credentials.clone())
            .http_client(self.http.clone())
            .timeout_config(
                // Within the relay's budget per publish (`events::relay::ATTEMPT_BUDGET`).
                aws_sdk_eventbridge::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(4))
                    .build(),
            );
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        aws_sdk_eventbridge::Client::from_conf(config.build())
    }

    /// A Secrets Manager client; `endpoint` points it at a local stand-in.
    pub fn secrets_manager(&self, endpoint: Option<&str>) -> aws_sdk_secretsmanager::Client {
        let mut config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(self.settings.region.clone())
            .credentials_provider(self.settings.credentials.clone())
            .http_client(self.http.clone())
            // A stuck read must not hold the cold start until Lambda's init timeout.
            .timeout_config(
                aws_sdk_secretsmanager::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        aws_sdk_secretsmanager::Client::from_conf(config.build())
    }
}

/// The SDK's HTTP client: our HTTP stack, which gives up connecting after a second. The SDK
/// itself enforces the attempt and operation timeouts.
pub fn sdk_http_client() -> Result<SharedHttpClient, reqwest::Error> {
    // Requests are signed for one host: never follow a redirect or a proxy variable with them.
    let http = crate::http::client_builder()
        .connect_timeout(Duration::from_secs(1))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    Ok(SharedHttpClient::new(SdkHttpClient(http)))
}

/// The SDK's HTTP client port, served by reqwest.
#[derive(Clone, Debug)]
struct SdkHttpClient(reqwest::Client);

impl HttpClient for SdkHttpClient {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for SdkHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            // Every request of the calls we make (DynamoDB, Secrets Manager) is JSON in memory.
            let body = body
                .bytes()
                .ok_or_else(|| ConnectorError::user("a streaming request body is not supported".into()))?
                .to_vec();
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.execute(request).await.map_err(transport)?;
            let mut answer = http::Response::builder().status(response.status().as_u16());
            if let Some(headers) = answer.headers_mut() {
                headers.extend(response.headers().clone());
            }
            let body = response.bytes().await.map_err(transport)?;
            let answer =
                answer.body(SdkBody::from(body)).map_err(|e| ConnectorError::other(e.into(), None))?;
            HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Timeouts and lost connections are transient: the SDK's retry strategy may try again.
fn transport(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_builder() {
        ConnectorError::user(error.into())
    } else {
        ConnectorError::io(error.into())
    }
}
