//! `self-check`: the admin API's self-check from a shell, with the function's settings in the
//! environment (as `sam local` or a test hands them over): one line per check, exit status 1 when
//! one failed. For a deployed stack, call `GET /admin/self-check` (IAM) or invoke the function with
//! `events/subscriptions/self-check.json` (`sam remote invoke`).

use std::process::ExitCode;

use fulfillment::config::Environment;

#[tokio::main]
async fn main() -> ExitCode {
    let api = match subscriptions::Deployed::from_environment(Environment::from_process()).await {
        Ok(api) => api,
        Err(error) => {
            println!("fail    start                 {}", fulfillment::error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    let (report, healthy) = api.self_check_report().await;
    println!("{report}");
    if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
