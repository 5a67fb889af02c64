//! Wires activation once per execution environment, then serves requests.

use activate::ActivatePage;
use fulfillment::clock::SystemClock;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceConfig};
use fulfillment::onboarding::Onboarding;
use fulfillment::settings::{Environment, StoreSettings, WebSettings};
use fulfillment::store::dynamodb::DynamoDbStore;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_http::tracing::init_default_subscriber();

    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let environment = Environment::load(Some(&aws)).await?;
    let store = StoreSettings::from_environment(&environment)?;
    let web = WebSettings::from_environment(&environment)?;
    let marketplace = HttpMarketplaceClient::new(MarketplaceConfig::from_lookup(environment.lookup())?)?;
    let page = ActivatePage {
        onboarding: Onboarding::new(
            DynamoDbStore::new(store.client(&aws), store.table_name),
            marketplace,
            SystemClock,
            false,
        ),
        web,
        clock: SystemClock,
    };
    let page = &page;
    lambda_http::run(service_fn(
        move |request: Request| async move { Ok::<_, Error>(page.handle(request).await) },
    ))
    .await
}
