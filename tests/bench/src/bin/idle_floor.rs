//! The floor of a function's first request after idle (issue 17): started by the benchmark in the
//! same CPU quota as the function, it makes the same TLS connections and the same calls, and
//! nothing else.
//! It trusts the benchmark's test authority (`EXTRA_ROOT_CERTIFICATES`), builds its clients,
//! prints `ready`, then for each [`Plan`] read from standard input (one line of JSON) makes its
//! calls and prints the milliseconds they took, or `error: ...`.
//!
//! Settings: `FLOOR_API_BASE`, `FLOOR_DYNAMODB_ENDPOINT`, `FLOOR_TABLE`, `FLOOR_USAGE_TABLE`,
//! `EXTRA_ROOT_CERTIFICATES`, `FLOOR_EVENTBRIDGE_ENDPOINT` (the events relay's);
//! with `FLOOR_SECRET_ARNS` (comma-separated) and `FLOOR_SECRETSMANAGER_ENDPOINT`, it first reads
//! those secrets, one after the other, as the function does.

#[path = "../floor_plan.rs"]
#[allow(dead_code)]
mod floor_plan;

use std::time::Instant;

use floor_plan::{BoxError, Floor, Fresh, Plan};
use fulfillment::config::Environment;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn setting(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

/// Entra's keys (parsed as JSON) where the plan names them, and a client-credentials token: what
/// a fresh process fetches.
pub async fn fetch_fresh(http: &reqwest::Client, fresh: &Fresh) -> Result<String, BoxError> {
    let keys = async {
        let Some(url) = &fresh.keys_url else { return Ok(()) };
        let keys: Value = http.get(url).send().await?.error_for_status()?.json().await?;
        match keys["keys"].as_array().is_none_or(Vec::is_empty) {
            true => Err(BoxError::from("the key set has no keys")),
            false => Ok(()),
        }
    };
    // Keys, then the token over the same pool, as the webhook's warm-up does.
    keys.await?;
    let token: Value =
        http.post(&fresh.token_url).form(&fresh.form).send().await?.error_for_status()?.json().await?;
    Ok(token["access_token"].as_str().ok_or("the token answer has no access_token")?.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let roots = Environment::from_pairs([("EXTRA_ROOT_CERTIFICATES", setting("EXTRA_ROOT_CERTIFICATES")?)])
        .extra_root_certificates()?;
    if !fulfillment::http::trust_extra_roots(roots) {
        return Err("the test authority could not be trusted".into());
    }
    let settings =
        fulfillment::aws::AwsSettings::new("us-east-1".into(), "local".into(), "local".into(), None);
    let aws = fulfillment::aws::AwsClients::new(settings)?;
    // The client secret, read from Secrets Manager as the function reads it at start.
    if let (Ok(arns), Ok(endpoint)) = (setting("FLOOR_SECRET_ARNS"), setting("FLOOR_SECRETSMANAGER_ENDPOINT"))
    {
        let secrets = aws.secrets_manager(Some(&endpoint));
        for arn in arns.split(',') {
            let read = secrets.get_secret_value().secret_id(arn).send().await?;
            read.secret_string().ok_or("the secret has no string")?;
        }
    }
    let mut floor = Floor {
        http: fulfillment::http::client_builder().build()?,
        api_base: setting("FLOOR_API_BASE")?,
        bearer: String::new(),
        dynamodb: local_stack::dynamodb_client(&setting("FLOOR_DYNAMODB_ENDPOINT")?),
        table: setting("FLOOR_TABLE")?,
        usage_table: setting("FLOOR_USAGE_TABLE")?,
        events: setting("FLOOR_EVENTBRIDGE_ENDPOINT").ok().map(|endpoint| aws.eventbridge(Some(&endpoint))),
    };
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let plan: Plan = serde_json::from_str(&line)?;
        let started = Instant::now();
        let done = async {
            match &plan.fresh {
                // As a function that warms up does at start: Entra's keys and token, and the
                // connections to the API and DynamoDB, all at once (whatever the API answers to
                // the HEAD).
                Some(fresh) if fresh.warm_connections => {
                    let api = async { floor.http.head(&floor.api_base).send().await.map(drop) };
                    let table = floor.get_item("FLOOR#warm-up", "STATE");
                    let (bearer, api, table) = tokio::join!(fetch_fresh(&floor.http, fresh), api, table);
                    api?;
                    table?;
                    floor.bearer = bearer?;
                }
                // As one that does not: a token first, then its calls open their connections.
                Some(fresh) => floor.bearer = fetch_fresh(&floor.http, fresh).await?,
                None => {}
            }
            floor.run(&plan.calls).await
        }
        .await;
        match done {
            Ok(()) => println!("{}", started.elapsed().as_secs_f64() * 1000.0),
            Err(error) => println!("error: {error}"),
        }
    }
    Ok(())
}
