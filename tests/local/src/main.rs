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
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let options = Options {
        table_name: args.table_name,
        web_port: args.web_port,
        emulator_port: args.emulator_port,
        signin: args.signin,
        auto_activate: args.auto_activate,
        ..Options::new(args.dynamodb_endpoint)
    };
    let stack = LocalStack::start(options).await?;
    let demo = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(10)).await;

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
    println!("Table:               {}", stack.table_name);
    println!("Demo purchase:       subscription {} (team-monthly, 10 seats)", demo.subscription_id);
    println!();
    println!("Open the landing page: {}", stack.landing_url(&demo.token));
    println!();
    println!(
        "More: cargo run -p marketplace-emulator -- purchase --emulator-url {} --plan team-yearly --quantity 5 --landing-url {}/landing",
        stack.emulator.url(),
        stack.url
    );
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
