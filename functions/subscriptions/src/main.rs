//! Wires the admin API once per execution environment, then serves the publisher's requests.

use fulfillment::clock::SystemClock;
use fulfillment::publisher::Publisher;
use fulfillment::settings::Services;
use lambda_http::{Error, Request, service_fn};
use subscriptions::AdminApi;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_http::tracing::init_default_subscriber();

    let services = Services::load().await?;
    let api = AdminApi {
        publisher: Publisher::new(services.store.clone(), services.marketplace_client()?, SystemClock),
    };
    let api = &api;
    lambda_http::run(service_fn(
        move |request: Request| async move { Ok::<_, Error>(api.handle(request).await) },
    ))
    .await
}
