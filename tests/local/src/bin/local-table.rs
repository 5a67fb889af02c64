//! `local-table`: creates the subscriptions and usage tables, as `template.yaml` declares them, in
//! DynamoDB Local (unless they exist). `scripts/sam-local` runs it before `sam local start-api`.
//!
//! `cargo run -p local-stack --bin local-table -- --dynamodb-endpoint http://127.0.0.1:8000 --table-name subscriptions-local --usage-table-name usage-local`

use clap::Parser;

#[derive(Parser)]
#[command(about = "Creates the template's tables in DynamoDB Local")]
struct Args {
    /// DynamoDB Local's URL.
    #[arg(long, env = "DYNAMODB_ENDPOINT")]
    dynamodb_endpoint: String,
    #[arg(long, env = "TABLE_NAME", default_value = "subscriptions-local")]
    table_name: String,
    #[arg(long, env = "USAGE_TABLE_NAME", default_value = "usage-local")]
    usage_table_name: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = local_stack::dynamodb_client(&args.dynamodb_endpoint);
    let tables =
        local_stack::table::TableNames { subscriptions: args.table_name, usage: args.usage_table_name };
    local_stack::table::ensure_from_template(&client, &tables, true).await;
    println!("tables {} and {} ready in {}", tables.subscriptions, tables.usage, args.dynamodb_endpoint);
}
