//! Wires the webhook once per execution environment, then serves Microsoft's notifications.

use fulfillment::clock::SystemClock;
use fulfillment::identity::{WebhookAuthenticator, WebhookTokenSettings};
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceConfig};
use fulfillment::notifications::{ChangePolicy, Webhook};
use fulfillment::settings::{Environment, StoreSettings};
use fulfillment::store::dynamodb::DynamoDbStore;
use lambda_http::{Error, Request, service_fn};
use webhook::WebhookFunction;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_http::tracing::init_default_subscriber();

    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let environment = Environment::load(Some(&aws)).await?;
    let store = StoreSettings::from_environment(&environment)?;
    let mut marketplace = MarketplaceConfig::from_lookup(environment.lookup())?;
    // Inside Microsoft's 10 seconds: short attempts, few retries.
    marketplace.attempt_timeout = marketplace.attempt_timeout.min(std::time::Duration::from_secs(3));
    marketplace.retry.base_delay = std::time::Duration::from_millis(200);
    marketplace.retry.max_delay = std::time::Duration::from_secs(1);
    let function = WebhookFunction {
        webhook: Webhook::new(
            DynamoDbStore::new(store.client(&aws), store.table_name),
            HttpMarketplaceClient::new(marketplace)?,
            SystemClock,
            ChangePolicy::from_environment(&environment)?,
        ),
        authenticator: WebhookAuthenticator::new(
            reqwest::Client::new(),
            WebhookTokenSettings::from_environment(&environment)?,
        ),
        clock: SystemClock,
    };
    let function = &function;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
