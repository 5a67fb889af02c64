//! `marketplace-emulator`: run the Marketplace emulator (`serve`), or drive a running one as the
//! customer would (`purchase`, `change-plan`, …) through its control API.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use marketplace_emulator::{ControlClient, Emulator, EmulatorConfig, EmulatorError, Purchase, TokenVersion};

#[derive(Parser)]
#[command(name = "marketplace-emulator", version, about = "Emulator of Microsoft's SaaS Fulfillment APIs v2")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Version {
    V1,
    V2,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulator until Ctrl-C.
    Serve(Serve),
    /// Buy a plan: prints the subscription id and the purchase token (and the landing URL).
    Purchase {
        #[command(flatten)]
        target: Target,
        /// Plan id.
        #[arg(long)]
        plan: String,
        /// Seats (per-seat plans).
        #[arg(long)]
        quantity: Option<u32>,
        /// Offer id.
        #[arg(long, default_value = "contoso-saas")]
        offer: String,
        /// Beneficiary (customer) tenant id.
        #[arg(long)]
        tenant: Option<String>,
        /// Purchaser tenant id of a reseller (CSP) purchase.
        #[arg(long)]
        reseller_tenant: Option<String>,
        /// Free-trial purchase.
        #[arg(long)]
        free_trial: bool,
        /// Landing page URL: prints it with `?token=<percent-encoded token>`.
        #[arg(long, env = "EMULATOR_LANDING_URL")]
        landing_url: Option<String>,
        /// A fixed subscription id (e.g. the one the `events/` files name) instead of a new one.
        #[arg(long)]
        subscription_id: Option<String>,
        /// A fixed purchase token (e.g. the one the `events/landing/` files carry).
        #[arg(long)]
        token: Option<String>,
    },
    /// A webhook bearer token signed as the webhook sender signs it; with `--event`, that event
    /// file (API Gateway's JSON) with the token in its `authorization` header, for `sam local invoke`.
    WebhookToken {
        #[command(flatten)]
        target: Target,
        /// An `events/webhook/` file.
        #[arg(long)]
        event: Option<std::path::PathBuf>,
    },
    /// A fresh purchase token for a subscription ("Manage account").
    LandingToken {
        #[command(flatten)]
        target: Target,
        /// Subscription id.
        id: String,
        /// Landing page URL to print with the token.
        #[arg(long, env = "EMULATOR_LANDING_URL")]
        landing_url: Option<String>,
    },
    /// Customer changes the plan (ACK-able ChangePlan webhook).
    ChangePlan {
        #[command(flatten)]
        target: Target,
        /// Subscription id.
        id: String,
        /// New plan id.
        plan: String,
    },
    /// Customer changes the seat count (ACK-able ChangeQuantity webhook).
    ChangeQuantity {
        #[command(flatten)]
        target: Target,
        /// Subscription id.
        id: String,
        /// New quantity.
        quantity: u32,
    },
    /// Payment failed: Subscribed → Suspended.
    Suspend {
        #[command(flatten)]
        target: Target,
        /// Subscription id.
        id: String,
    },
    /// Payment fixed: Suspended → Subscribed.
    Reinstate {
        #[command(flatten)]
        target: Target,
        /// Subscription id.
        id: String,
    },
    /// Renew the term.
    Renew {
        #[command(flatten)]
        target: Target,
        /// Subscription id.
        id: String,
    },
    /// Customer cancels.
    Unsubscribe {
        #[command(flatten)]
        target: Target,
        /// Subscription id.
        id: String,
    },
    /// List every subscription (JSON).
    Subscriptions {
        #[command(flatten)]
        target: Target,
    },
    /// List every webhook delivery attempt (JSON).
    Webhooks {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
struct Target {
    /// URL of the running emulator.
    #[arg(long, env = "EMULATOR_URL", default_value = "http://127.0.0.1:8600")]
    emulator_url: String,
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on: loopback by default; the Docker bridge's gateway (e.g. 172.17.0.1)
    /// lets `sam local`'s containers reach it as host.docker.internal.
    #[arg(long, env = "EMULATOR_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port (0 = any free port).
    #[arg(long, env = "EMULATOR_PORT", default_value_t = 8600)]
    port: u16,
    /// Where webhooks are POSTed (none are sent without it).
    #[arg(long, env = "EMULATOR_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Seconds a customer plan/quantity change waits for the publisher's decision.
    #[arg(long, env = "EMULATOR_ACK_WINDOW_SECS", default_value_t = 10.0)]
    ack_window_secs: f64,
    /// Seconds a publisher PATCH/DELETE takes to complete.
    #[arg(long, env = "EMULATOR_OPERATION_DELAY_SECS", default_value_t = 2.0)]
    operation_delay_secs: f64,
    /// Webhook JWT version.
    #[arg(long, env = "EMULATOR_TOKEN_VERSION", value_enum, default_value = "v1")]
    token_version: Version,
    /// Publisher tenant id.
    #[arg(long, env = "EMULATOR_PUBLISHER_TENANT_ID")]
    publisher_tenant_id: Option<String>,
    /// Publisher app (client) id.
    #[arg(long, env = "EMULATOR_PUBLISHER_APP_ID")]
    publisher_app_id: Option<String>,
    /// Client secret the token endpoint accepts.
    #[arg(long, env = "EMULATOR_CLIENT_SECRET")]
    client_secret: Option<String>,
    /// Publisher id (`publisherId`).
    #[arg(long, env = "EMULATOR_PUBLISHER_ID")]
    publisher_id: Option<String>,
    /// The landing page app's client id: the only one sign-in accepts (default: any).
    #[arg(long, env = "EMULATOR_SIGNIN_CLIENT_ID")]
    signin_client_id: Option<String>,
    /// The landing page app's client secret, checked at code redemption (default: not checked).
    #[arg(long, env = "EMULATOR_SIGNIN_CLIENT_SECRET")]
    signin_client_secret: Option<String>,
    /// A registered redirect URI of the landing page app (repeat or comma-separate; default: any).
    #[arg(long, env = "EMULATOR_SIGNIN_REDIRECT_URIS", value_delimiter = ',')]
    signin_redirect_uri: Vec<String>,
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

async fn serve(args: Serve) -> Result<(), String> {
    let mut config = EmulatorConfig {
        webhook_url: args.webhook_url,
        ack_window: seconds("ack-window-secs", args.ack_window_secs)?,
        operation_delay: seconds("operation-delay-secs", args.operation_delay_secs)?,
        webhook_token_version: match args.token_version {
            Version::V1 => TokenVersion::V1,
            Version::V2 => TokenVersion::V2,
        },
        signin_client_id: args.signin_client_id,
        signin_client_secret: args.signin_client_secret,
        signin_redirect_uris: args.signin_redirect_uri,
        ..EmulatorConfig::default()
    };
    if let Some(v) = args.publisher_tenant_id {
        config.publisher_tenant_id = v;
    }
    if let Some(v) = args.publisher_app_id {
        config.publisher_app_id = v;
    }
    if let Some(v) = args.client_secret {
        config.publisher_client_secret = v;
    }
    if let Some(v) = args.publisher_id {
        config.publisher_id = v;
    }
    let addr = SocketAddr::from((args.host, args.port));
    let emulator =
        Emulator::start_on(addr, config).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let c = emulator.config();
    println!("api base:      {}", emulator.api_base());
    println!("authority:     {}", emulator.authority());
    println!("token url:     {}", emulator.token_url_v2());
    println!("tenant id:     {}", c.publisher_tenant_id);
    println!("app id:        {}", c.publisher_app_id);
    println!("sign-in:       {}", emulator.signin_authority());
    println!("control:       {}/_control", emulator.url());
    println!("webhook url:   {}", c.webhook_url.as_deref().unwrap_or("(none: webhooks are only recorded)"));
    println!("ready");
    tokio::signal::ctrl_c().await.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    emulator.shutdown().await;
    Ok(())
}

/// The event file with `authorization: Bearer <token>` among its headers.
fn with_bearer(path: &std::path::Path, token: &str) -> Result<String, EmulatorError> {
    let unreadable = |e: String| EmulatorError::Control(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let mut event: serde_json::Value = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    let headers = event
        .as_object_mut()
        .ok_or_else(|| unreadable("not a JSON object".into()))?
        .entry("headers")
        .or_insert_with(|| serde_json::json!({}));
    let headers =
        headers.as_object_mut().ok_or_else(|| unreadable("its headers are not an object".into()))?;
    headers.insert("authorization".into(), format!("Bearer {token}").into());
    serde_json::to_string_pretty(&event).map_err(|e| unreadable(e.to_string()))
}

fn landing(url: &str, token: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}token={encoded}")
}

fn json(value: &impl serde::Serialize) -> Result<(), EmulatorError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| EmulatorError::Control(e.to_string()))?;
    println!("{text}");
    Ok(())
}

async fn client(command: Command) -> Result<(), EmulatorError> {
    match command {
        Command::Serve(_) => Ok(()),
        Command::Purchase {
            target,
            plan,
            quantity,
            offer,
            tenant,
            reseller_tenant,
            free_trial,
            landing_url,
            subscription_id,
            token,
        } => {
            let p = Purchase {
                offer_id: offer,
                plan_id: plan,
                quantity,
                beneficiary_tenant_id: tenant,
                purchaser_tenant_id: reseller_tenant,
                is_free_trial: free_trial,
                subscription_id,
                token,
                ..Purchase::default()
            };
            let purchased = ControlClient::new(&target.emulator_url).purchase(&p).await?;
            println!("subscription id: {}", purchased.subscription_id);
            println!("token:           {}", purchased.token);
            if let Some(url) = landing_url {
                println!("landing url:     {}", landing(&url, &purchased.token));
            }
            Ok(())
        }
        Command::LandingToken { target, id, landing_url } => {
            let token = ControlClient::new(&target.emulator_url).landing_token(&id).await?;
            println!("token:           {token}");
            if let Some(url) = landing_url {
                println!("landing url:     {}", landing(&url, &token));
            }
            Ok(())
        }
        Command::ChangePlan { target, id, plan } => {
            json(&ControlClient::new(&target.emulator_url).change_plan(&id, &plan).await?)
        }
        Command::ChangeQuantity { target, id, quantity } => {
            json(&ControlClient::new(&target.emulator_url).change_quantity(&id, quantity).await?)
        }
        Command::Suspend { target, id } => {
            json(&ControlClient::new(&target.emulator_url).action(&id, "suspend").await?)
        }
        Command::Reinstate { target, id } => {
            json(&ControlClient::new(&target.emulator_url).action(&id, "reinstate").await?)
        }
        Command::Renew { target, id } => {
            json(&ControlClient::new(&target.emulator_url).action(&id, "renew").await?)
        }
        Command::Unsubscribe { target, id } => {
            json(&ControlClient::new(&target.emulator_url).action(&id, "unsubscribe").await?)
        }
        Command::Subscriptions { target } => {
            json(&ControlClient::new(&target.emulator_url).subscriptions().await?)
        }
        Command::Webhooks { target } => json(&ControlClient::new(&target.emulator_url).webhooks().await?),
        Command::WebhookToken { target, event } => {
            let token = ControlClient::new(&target.emulator_url).webhook_token().await?;
            match event {
                None => println!("{token}"),
                Some(path) => println!("{}", with_bearer(&path, &token)?),
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        other => client(other).await.map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
