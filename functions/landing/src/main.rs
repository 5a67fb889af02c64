//! Wires the landing page once per execution environment, then serves requests.

use fulfillment::clock::SystemClock;
use fulfillment::identity::OidcClient;
use fulfillment::onboarding::Onboarding;
use fulfillment::settings::{Services, WebSettings};
use lambda_http::{Error, Request, service_fn};
use landing::LandingPage;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON).
    lambda_http::tracing::init_default_subscriber();

    let services = Services::load().await?;
    let web = WebSettings::from_environment(&services.environment)?;
    let http = fulfillment::http::client()?;
    let signin = web.signin.clone().map(|settings| OidcClient::new(http.clone(), settings));
    let onboarding = Onboarding::new(
        services.store.clone(),
        services.marketplace_client()?,
        SystemClock,
        web.auto_activate,
    );
    let page = LandingPage { onboarding, web, signin, clock: SystemClock };
    let page = &page;
    lambda_http::run(service_fn(
        move |request: Request| async move { Ok::<_, Error>(page.handle(request).await) },
    ))
    .await
}
