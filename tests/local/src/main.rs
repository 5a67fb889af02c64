//! `local-stack`: the functions, the Marketplace emulator and the table on this machine, with one
//! demo purchase whose landing page is printed. `scripts/run` starts DynamoDB Local and this.

use clap::Parser;
use local_stack::{LocalStack, Options};
use marketplace_emulator::Purchase;

#[derive(Parser)]
#[command(about = "Runs the functions, the Marketplace emulator and the table locally")]
struct Args {
    /// DynamoDB Local's URL.
    #[arg(long, env = "DYNAMODB_ENDPOINT")]
    dynamodb_endpoint: String,
    #[arg(long, env = "TABLE_NAME", default_value = "subscriptions-local")]
    table_name: String,
    #[arg(long, env = "USAGE_TABLE_NAME", default_value = "usage-local")]
    usage_table_name: String,
    /// Where the functions answer.
    #[arg(long, env = "WEB_PORT", default_value_t = 3000)]
    web_port: u16,
    /// Where the Marketplace emulator (and its command line's control API) answers.
    #[arg(long, env = "EMULATOR_PORT", default_value_t = 8600)]
    emulator_port: u16,
    /// Sign in with Entra ID (played by the emulator) before the landing page.
    #[arg(long, env = "SIGNIN")]
    signin: bool,
    /// Activate on landing, without the confirmation step.
    #[arg(long, env = "AUTO_ACTIVATE")]
    auto_activate: bool,
    /// moto's server (EventBridge and SQS): the lifecycle events are relayed there and printed.
    #[arg(long, env = "EVENTBRIDGE_ENDPOINT")]
    eventbridge_endpoint: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The functions' own subscriber: RUST_LOG's directives, INFO by default.
    fulfillment::logging::init(&fulfillment::config::Environment::from_process().logging());
    let args = Args::parse();
    let options = Options {
        tables: local_stack::table::TableNames {
            subscriptions: args.table_name,
            usage: args.usage_table_name,
        },
        web_port: args.web_port,
        emulator_port: args.emulator_port,
        signin: args.signin,
        auto_activate: args.auto_activate,
        eventbridge_endpoint: args.eventbridge_endpoint,
        ..Options::new(args.dynamodb_endpoint)
    };
    let stack = LocalStack::start(options).await?;
    let demo = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(10)).await;
    // A plan with auto activation: Microsoft bills at once and sends a Subscribe webhook.
    let auto = stack.emulator.purchase(Purchase::plan("team-auto").quantity(4)).await;

    println!();
    println!("Functions:           {}  (GET /landing, POST /activate, POST /webhook)", stack.url);
    println!(
        "Admin API:           {}/admin/subscriptions  (also /{{id}}, /{{id}}/entitlement, /{{id}}/activate, /admin/tenants/{{tenant}}/entitlements; unsigned locally)",
        stack.url
    );
    println!("Reconcile now:       curl -X POST {}/_local/reconcile", stack.url);
    println!(
        "Marketplace emulator: {}  (API {}, Entra {})",
        stack.emulator.url(),
        stack.emulator.api_base(),
        stack.emulator.authority()
    );
    println!("Tables:              {} and {}", stack.tables.subscriptions, stack.tables.usage);
    println!("Demo purchase:       subscription {} (team-monthly, 10 seats)", demo.subscription_id);
    println!(
        "Auto-activated:      subscription {} (team-auto, 4 seats): active at once, recorded from its Subscribe webhook",
        auto.subscription_id
    );
    println!();
    println!("Open the landing page: {}", stack.landing_url(&demo.token));
    println!("  (and the auto-activated one's, which shows it active: {})", stack.landing_url(&auto.token));
    println!();
    println!(
        "More: cargo run -p marketplace-emulator -- purchase --emulator-url {} --plan team-yearly --quantity 5 --landing-url {}/landing",
        stack.emulator.url(),
        stack.url
    );
    match &stack.events {
        Some(_) => println!(
            "Lifecycle events (EventBridge, via the table's stream) are printed below as they arrive."
        ),
        None => println!("No lifecycle events: no --eventbridge-endpoint."),
    }
    println!("Press Ctrl-C to stop.");
    println!();
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        () = print_events(&stack) => {}
    }
    Ok(())
}

/// Prints each lifecycle event as it reaches the sample rule's queue, with its delay after the
/// commit.
async fn print_events(stack: &LocalStack) {
    let Some(events) = &stack.events else {
        return std::future::pending().await;
    };
    loop {
        match events.queue.take().await {
            Ok(events) => {
                for envelope in events {
                    let detail = &envelope["detail"];
                    let after_commit = detail["committedAt"]
                        .as_str()
                        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                        .map(|at| (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_milliseconds());
                    println!(
                        "event {:<25} subscription {} plan {} seats {} status {} -> {} ({}, v{}, {} ms after commit)",
                        detail["eventType"].as_str().unwrap_or("?"),
                        detail["subscriptionId"].as_str().unwrap_or("?"),
                        detail["planId"].as_str().unwrap_or("-"),
                        detail["seats"],
                        detail["statusBefore"].as_str().unwrap_or("none"),
                        detail["statusAfter"].as_str().unwrap_or("none"),
                        detail["source"].as_str().unwrap_or("?"),
                        detail["version"],
                        after_commit.map_or_else(|| "?".to_owned(), |ms| ms.to_string()),
                    );
                }
            }
            Err(error) => eprintln!("lifecycle events: {error}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
