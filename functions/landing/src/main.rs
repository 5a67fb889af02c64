//! Wires the landing page once per execution environment, then serves requests.

use fulfillment::clock::SystemClock;
use fulfillment::identity::OidcClient;
use fulfillment::marketplace::{HttpMarketplaceClient, MarketplaceConfig};
use fulfillment::onboarding::Onboarding;
use fulfillment::settings::{Environment, StoreSettings, WebSettings};
use fulfillment::store::dynamodb::DynamoDbStore;
use lambda_http::{Error, Request, service_fn};
use landing::LandingPage;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_http::tracing::init_default_subscriber();

    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let environment = Environment::load(Some(&aws)).await?;
    let store = StoreSettings::from_environment(&environment)?;
    let web = WebSettings::from_environment(&environment)?;
    let marketplace = HttpMarketplaceClient::new(MarketplaceConfig::from_lookup(environment.lookup())?)?;
    let signin = web.signin.clone().map(|settings| OidcClient::new(reqwest::Client::new(), settings));
    let auto_activate = web.auto_activate;
    let page = LandingPage {
        onboarding: Onboarding::new(
            DynamoDbStore::new(store.client(&aws), store.table_name),
            marketplace,
            SystemClock,
            auto_activate,
        ),
        web,
        signin,
        clock: SystemClock,
    };
    let page = &page;
    lambda_http::run(service_fn(
        move |request: Request| async move { Ok::<_, Error>(page.handle(request).await) },
    ))
    .await
}
