//! `local-table`: creates the subscriptions table, as `template.yaml` declares it, in DynamoDB
//! Local (unless it exists). `scripts/sam-local` runs it before `sam local start-api`.
//!
//! `cargo run -p local-stack --bin local-table -- --dynamodb-endpoint http://127.0.0.1:8000 --table-name subscriptions-local`

use clap::Parser;

#[derive(Parser)]
#[command(about = "Creates the template's table in DynamoDB Local")]
struct Args {
    /// DynamoDB Local's URL.
    #[arg(long, env = "DYNAMODB_ENDPOINT")]
    dynamodb_endpoint: String,
    #[arg(long, env = "TABLE_NAME", default_value = "subscriptions-local")]
    table_name: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = local_stack::dynamodb_client(&args.dynamodb_endpoint);
    local_stack::table::ensure_from_template(&client, &args.table_name, true).await;
    println!("table {} ready in {}", args.table_name, args.dynamodb_endpoint);
}
