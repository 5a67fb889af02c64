//! Configuration, read once at start: the environment, with secrets from AWS Secrets Manager in the
//! cloud (never from plain environment variables there, never logged).

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::aws::AwsSettings;
use crate::identity::OidcSettings;
use crate::marketplace::ConfigError;
use crate::web::seal::{MIN_KEY_BYTES, Sealer};

/// Names a Secrets Manager secret holding a JSON object of settings (e.g. `ENTRA_CLIENT_SECRET`,
/// `FORM_SIGNING_KEY`, `OIDC_CLIENT_SECRET`); its values fill in what the environment lacks.
pub const SECRETS_VARIABLE: &str = "APP_SECRETS_ARN";

/// Settings by name: the process environment plus the secret's fields.
#[derive(Clone, Default)]
pub struct Environment {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        f.debug_struct("Environment").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

impl Environment {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { values: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The process's environment variables.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Adds the fields of the secret named by `APP_SECRETS_ARN`, if set.
    pub async fn with_secrets(self, aws: &AwsSettings) -> Result<Self, ConfigError> {
        let mut environment = self;
        if let Some(arn) = environment.get(SECRETS_VARIABLE) {
            let client = aws.secrets_manager();
            let secret =
                client.get_secret_value().secret_id(&arn).send().await.map_err(|e| ConfigError::Invalid {
                    name: SECRETS_VARIABLE,
                    reason: format!(
                        "cannot read the secret: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    ),
                })?;
            let fields: HashMap<String, String> =
                serde_json::from_str(secret.secret_string().unwrap_or("{}")).map_err(|_| {
                    ConfigError::Invalid {
                        name: SECRETS_VARIABLE,
                        reason: "the secret is not a JSON object of strings".into(),
                    }
                })?;
            for (name, value) in fields {
                environment.values.entry(name).or_insert(value);
            }
        }
        Ok(environment)
    }

    /// The trimmed value of `name`; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => {
                Err(ConfigError::Invalid { name, reason: format!("{other:?} is not true or false") })
            }
        }
    }

    pub fn url(&self, name: &'static str) -> Result<Option<Url>, ConfigError> {
        self.get(name)
            .map(|v| Url::parse(&v).map_err(|e| ConfigError::Invalid { name, reason: e.to_string() }))
            .transpose()
    }

    /// Every setting, e.g. to hand on to a child process (local runs and benchmarks only).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A lookup for the `from_lookup` constructors.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.get(name)
    }
}

/// Where the subscriptions live.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub table_name: String,
    /// DynamoDB Local's URL for local runs; unset in AWS.
    pub endpoint: Option<String>,
}

impl StoreSettings {
    pub fn from_environment(environment: &Environment) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: environment.required("TABLE_NAME")?,
            endpoint: environment.get("DYNAMODB_ENDPOINT"),
        })
    }

    /// The DynamoDB client these settings describe.
    pub fn client(&self, aws: &AwsSettings) -> aws_sdk_dynamodb::Client {
        // A stuck call must not eat the webhook's 10 seconds (connecting gives up after a second:
        // see `aws::sdk_http_client`).
        let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(5))
            .build();
        aws.dynamodb(self.endpoint.as_deref(), timeouts)
    }
}

/// What the buyer-facing pages need.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Signs form tokens and cookies.
    pub sealer: Sealer,
    pub product_name: String,
    /// Where a buyer goes once subscribed.
    pub product_url: Option<String>,
    /// The landing page's public URL (Partner Center's *Landing page URL*).
    pub landing_url: Url,
    /// The confirmation form's target.
    pub activate_url: Url,
    /// Activate as soon as the buyer lands, without the confirmation step.
    pub auto_activate: bool,
    /// Mark cookies `Secure` (off only for plain-HTTP local runs).
    pub secure_cookies: bool,
    /// Entra ID sign-in before the landing page; `None` runs without it (local use).
    pub signin: Option<OidcSettings>,
    /// How long a confirmation form stays valid.
    pub form_lifetime: Duration,
}

impl WebSettings {
    pub fn from_environment(environment: &Environment) -> Result<Self, ConfigError> {
        let key = environment.required("FORM_SIGNING_KEY")?;
        let sealer = Sealer::new(key.as_bytes()).ok_or(ConfigError::Invalid {
            name: "FORM_SIGNING_KEY",
            reason: format!("must be at least {MIN_KEY_BYTES} bytes"),
        })?;
        let landing_url = environment.url("LANDING_URL")?.ok_or(ConfigError::Missing("LANDING_URL"))?;
        let activate_url = match environment.url("ACTIVATE_URL")? {
            Some(url) => url,
            None => landing_url
                .join("activate")
                .map_err(|e| ConfigError::Invalid { name: "LANDING_URL", reason: e.to_string() })?,
        };
        let signin = match environment.get("OIDC_CLIENT_ID") {
            None => None,
            Some(client_id) => Some(OidcSettings {
                authority: environment.url("OIDC_AUTHORITY")?.unwrap_or_else(|| {
                    Url::parse("https://login.microsoftonline.com/organizations/v2.0").expect("a URL")
                }),
                client_id,
                client_secret: environment.get("OIDC_CLIENT_SECRET").map(SecretString::from),
                redirect_uri: environment.url("OIDC_REDIRECT_URI")?.unwrap_or_else(|| landing_url.clone()),
            }),
        };
        Ok(Self {
            sealer,
            product_name: environment.get("PRODUCT_NAME").unwrap_or_else(|| "Our product".into()),
            product_url: environment.get("PRODUCT_URL"),
            landing_url,
            activate_url,
            auto_activate: environment.flag("AUTO_ACTIVATE", false)?,
            secure_cookies: environment.flag("SECURE_COOKIES", true)?,
            signin,
            form_lifetime: Duration::from_secs(30 * 60),
        })
    }
}

/// What every function builds once at start: its environment (with the secrets), the table and
/// the Marketplace client's configuration.
pub struct Services {
    pub aws: AwsSettings,
    pub environment: Environment,
    pub store: crate::store::dynamodb::DynamoDbStore,
    pub marketplace: crate::marketplace::MarketplaceConfig,
}

impl Services {
    /// Reads the AWS configuration, the environment and the secret, and builds the clients.
    pub async fn load() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let process = Environment::from_process();
        let aws = AwsSettings::from_environment(&process)?;
        let environment = process.with_secrets(&aws).await?;
        let store_settings = StoreSettings::from_environment(&environment)?;
        let store = crate::store::dynamodb::DynamoDbStore::new(
            store_settings.client(&aws),
            store_settings.table_name,
        );
        let marketplace = crate::marketplace::MarketplaceConfig::from_lookup(environment.lookup())?;
        Ok(Self { aws, environment, store, marketplace })
    }

    /// The Marketplace API client.
    pub fn marketplace_client(&self) -> Result<crate::marketplace::HttpMarketplaceClient, reqwest::Error> {
        crate::marketplace::HttpMarketplaceClient::new(self.marketplace.clone())
    }
}
