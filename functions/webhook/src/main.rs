//! Wires the webhook once per execution environment, then serves Microsoft's notifications.

use std::time::Duration;

use fulfillment::clock::SystemClock;
use fulfillment::identity::{WebhookAuthenticator, WebhookTokenSettings};
use fulfillment::marketplace::HttpMarketplaceClient;
use fulfillment::notifications::{ChangePolicy, Webhook};
use fulfillment::settings::Services;
use lambda_http::{Error, Request, service_fn};
use webhook::WebhookFunction;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_http::tracing::init_default_subscriber();

    let services = Services::load().await?;
    // Inside Microsoft's 10 seconds: short attempts, short backoff.
    let mut marketplace = services.marketplace.clone();
    marketplace.attempt_timeout = marketplace.attempt_timeout.min(Duration::from_secs(3));
    marketplace.retry.base_delay = Duration::from_millis(200);
    marketplace.retry.max_delay = Duration::from_secs(1);
    let function = WebhookFunction {
        webhook: Webhook::new(
            services.store.clone(),
            HttpMarketplaceClient::new(marketplace)?,
            SystemClock,
            ChangePolicy::from_environment(&services.environment)?,
        ),
        authenticator: WebhookAuthenticator::new(
            fulfillment::http::client()?,
            WebhookTokenSettings::from_environment(&services.environment)?,
        ),
        clock: SystemClock,
    };
    let function = &function;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
