//! Builds the function once per execution environment, then serves requests.

use fulfillment::config::Environment;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs when the template's LoggingConfig asks for them (AWS_LAMBDA_LOG_FORMAT=JSON). A
    // start-up error is printed once, as its whole chain in words (`StartupError`'s `Debug`).
    let environment = Environment::from_process();
    fulfillment::logging::init(&environment.logging());

    let function = webhook::Deployed::from_environment(environment).await?;
    let function = &function;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(function.handle(request).await)
    }))
    .await
}
