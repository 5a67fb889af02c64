//! Wires the admin API once per execution environment, then serves the publisher's requests.

use fulfillment::clock::SystemClock;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceConfig};
use fulfillment::publisher::Publisher;
use fulfillment::settings::{Environment, StoreSettings};
use fulfillment::store::dynamodb::DynamoDbStore;
use lambda_http::{Error, Request, service_fn};
use subscriptions::AdminApi;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_http::tracing::init_default_subscriber();

    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let environment = Environment::load(Some(&aws)).await?;
    let store = StoreSettings::from_environment(&environment)?;
    let marketplace = HttpMarketplaceClient::new(MarketplaceConfig::from_lookup(environment.lookup())?)?;
    let api = AdminApi {
        publisher: Publisher::new(
            DynamoDbStore::new(store.client(&aws), store.table_name),
            marketplace,
            SystemClock,
        ),
    };
    let api = &api;
    lambda_http::run(service_fn(
        move |request: Request| async move { Ok::<_, Error>(api.handle(request).await) },
    ))
    .await
}
