//! Configuration: every setting the functions read, parsed here and nowhere else, once per
//! execution environment. The settings come from the process environment and, in AWS, from the
//! fields of Secrets Manager secrets, one per purpose (the composition root, [`crate::wiring`],
//! adds those).
//! Values are never logged: [`Environment`]'s `Debug` shows names only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::SecretString;
use tracing_subscriber::filter::{LevelFilter, Targets};
use url::Url;

use crate::aws::AwsSettings;
use crate::domain::PlanId;
use crate::identity::{DEFAULT_LEEWAY, OidcSettings, WebhookTokenSettings};
use crate::marketplace::{
    Certificate, ClientCredential, EntraConfig, MARKETPLACE_RESOURCE_ID, MarketplaceConfig,
    TokenEndpointVersion,
};
use crate::web::seal::{MIN_KEY_BYTES, Sealer};
use crate::web::{FORM_LIFETIME, WebSettings};
use crate::webhook::ChangePolicy;

/// A Secrets Manager secret holding a JSON object of settings, named by the environment variable
/// `variable` (its ARN), and the only settings it may hold. Its values fill in what the
/// environment lacks. There is one per purpose, so that a function's role can read only the
/// secrets it needs: the webhook never holds the pages' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretKind {
    pub variable: &'static str,
    pub fields: &'static [&'static str],
}

/// The app's credentials for Microsoft's API: every function that calls Microsoft.
pub const MARKETPLACE_SECRET: SecretKind = SecretKind {
    variable: "MARKETPLACE_SECRET_ARN",
    fields: &[
        "ENTRA_CLIENT_SECRET",
        "ENTRA_CLIENT_SECRET_NEXT",
        "ENTRA_CLIENT_CERTIFICATE",
        "ENTRA_CLIENT_CERTIFICATE_KEY",
    ],
};

/// The buyer-facing pages' keys: the landing page and the confirmation only.
pub const PAGES_SECRET: SecretKind =
    SecretKind { variable: "PAGES_SECRET_ARN", fields: &["FORM_SIGNING_KEY", "OIDC_CLIENT_SECRET"] };

/// Every kind of secret, in the order they are read.
pub const SECRETS: [SecretKind; 2] = [MARKETPLACE_SECRET, PAGES_SECRET];

/// Entra ID's public cloud: the publisher's tenant, its keys, and the landing page's sign-in.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "{0} is set both as an environment variable and in the secret, to different values: set it in one place"
    )]
    InBothPlaces(String),
    #[error("the secret named by {secret} holds {field}, which does not belong there (it may hold {})", .allowed.join(", "))]
    NotInThisSecret { secret: &'static str, field: String, allowed: &'static [&'static str] },
}

fn invalid(name: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.to_string() }
}

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

    /// Adds `fields`, a secret of `kind`, where nothing is set: a blank value is unset, so the
    /// template's blank declarations never shadow the secret. A setting with another value in the
    /// environment is refused (which one wins would be a guess), and so is a field the secret
    /// should not hold: one secret with everything, given to every function, would undo the split.
    pub fn with_secret(
        mut self,
        kind: SecretKind,
        fields: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        for (name, value) in fields {
            if !kind.fields.contains(&name.as_str()) {
                return Err(ConfigError::NotInThisSecret {
                    secret: kind.variable,
                    field: name,
                    allowed: kind.fields,
                });
            }
            match self.get(&name) {
                None => {
                    self.values.insert(name, value);
                }
                Some(set) if set == value.trim() => {}
                Some(_) => return Err(ConfigError::InBothPlaces(name)),
            }
        }
        Ok(self)
    }

    /// The Secrets Manager secrets to read, each an ARN, as the template passes them. Anything else
    /// (e.g. `MarketplaceSecretArn`, which is what `sam local` passes for a parameter nobody set)
    /// is refused rather than looked up in the real Secrets Manager.
    pub fn secret_arns(&self) -> Result<Vec<(SecretKind, String)>, ConfigError> {
        let mut arns = Vec::new();
        for kind in SECRETS {
            match self.get(kind.variable) {
                Some(arn) if !arn.starts_with("arn:") => {
                    return Err(invalid(
                        kind.variable,
                        format!(
                            "{arn:?} is not a Secrets Manager ARN (leave it empty to run without this secret)"
                        ),
                    ));
                }
                Some(arn) => arns.push((kind, arn)),
                None => {}
            }
        }
        Ok(arns)
    }

    /// `EXTRA_ROOT_CERTIFICATES`: a PEM file of certificate authorities to trust besides the
    /// Mozilla roots compiled in, for the benchmark, whose local services answer over TLS with a
    /// test authority of their own. Production never sets it (the template does not).
    pub fn extra_root_certificates(&self) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        const NAME: &str = "EXTRA_ROOT_CERTIFICATES";
        let Some(path) = self.get(NAME) else {
            return Ok(Vec::new());
        };
        let certificates = CertificateDer::pem_file_iter(&path)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(NAME, format!("{path}: {e}")))?;
        if certificates.is_empty() {
            return Err(invalid(NAME, format!("{path} holds no certificate")));
        }
        let mut store = rustls::RootCertStore::empty();
        for certificate in &certificates {
            store.add(certificate.clone()).map_err(|e| invalid(NAME, format!("{path}: {e}")))?;
        }
        Ok(certificates)
    }

    /// `SECRETSMANAGER_ENDPOINT`: a local stand-in for Secrets Manager (tests); unset in AWS.
    pub fn secrets_manager_endpoint(&self) -> Result<Option<Url>, ConfigError> {
        self.url("SECRETSMANAGER_ENDPOINT")
    }

    /// Under `sam local` (which sets `AWS_SAM_LOCAL`), a function must be pointed at DynamoDB Local
    /// and the emulator: without them it would reach the real AWS and Microsoft with the
    /// developer's own credentials.
    pub fn check_local_run(&self) -> Result<(), ConfigError> {
        self.check_local_endpoints(&["DYNAMODB_ENDPOINT", "MARKETPLACE_API_BASE", "ENTRA_AUTHORITY"])
    }

    /// [`Self::check_local_run`] for a function that calls only the services these name.
    pub fn check_local_endpoints(&self, names: &[&'static str]) -> Result<(), ConfigError> {
        if !self.flag("AWS_SAM_LOCAL", false)? {
            return Ok(());
        }
        for &name in names {
            if self.get(name).is_none() {
                return Err(invalid(
                    name,
                    "must be set under sam local (in the --env-vars file): unset, the function would call the real service",
                ));
            }
        }
        Ok(())
    }

    /// Every setting, e.g. to hand on to a child process (local runs and benchmarks only).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The trimmed value of `name`; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(invalid(name, format!("{other:?} is not true or false"))),
        }
    }

    fn number<T: std::str::FromStr<Err: std::fmt::Display>>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        self.get(name).map(|v| v.parse::<T>().map_err(|e| invalid(name, e))).transpose()
    }

    fn millis(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.number::<u64>(name)?.map_or(default, Duration::from_millis))
    }

    /// An https URL; plain http only to this machine (local runs, tests) or under `sam local`
    /// (its containers reach the host by name).
    fn url(&self, name: &'static str) -> Result<Option<Url>, ConfigError> {
        let Some(url) = self.get(name).map(|v| Url::parse(&v).map_err(|e| invalid(name, e))).transpose()?
        else {
            return Ok(None);
        };
        let loopback = match url.host() {
            Some(url::Host::Domain(domain)) => domain == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => Ok(Some(url)),
            "http" if loopback || self.flag("AWS_SAM_LOCAL", false)? => Ok(Some(url)),
            "http" => {
                Err(invalid(name, "must be an https URL (plain http only to this machine, for local runs)"))
            }
            _ => Err(invalid(name, "must be an https URL")),
        }
    }

    /// A GUID, as Entra's token claims carry it (a tenant's domain name would never match one).
    fn guid(&self, name: &'static str) -> Result<String, ConfigError> {
        let value = self.required(name)?;
        match uuid::Uuid::try_parse(&value) {
            Ok(_) if value.len() == 36 => Ok(value),
            _ => Err(invalid(name, "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")),
        }
    }

    fn authority(&self) -> Result<Url, ConfigError> {
        Ok(self.url("ENTRA_AUTHORITY")?.unwrap_or_else(|| Url::parse(ENTRA_AUTHORITY).expect("a URL")))
    }

    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`: what Lambda
    /// sets for the function's execution role.
    pub fn aws(&self) -> Result<AwsSettings, ConfigError> {
        Ok(AwsSettings::new(
            self.required("AWS_REGION")?,
            self.required("AWS_ACCESS_KEY_ID")?,
            self.required("AWS_SECRET_ACCESS_KEY")?,
            self.get("AWS_SESSION_TOKEN"),
        ))
    }

    /// `TABLE_NAME`, `USAGE_TABLE_NAME`, and `DYNAMODB_ENDPOINT` for DynamoDB Local.
    pub fn store(&self) -> Result<StoreSettings, ConfigError> {
        Ok(StoreSettings {
            table_name: self.required("TABLE_NAME")?,
            usage_table_name: self.required("USAGE_TABLE_NAME")?,
            endpoint: self.url("DYNAMODB_ENDPOINT")?,
        })
    }

    /// `EVENT_BUS_NAME`, and `EVENTBRIDGE_ENDPOINT` for a local stand-in (the lifecycle events).
    pub fn event_bus(&self) -> Result<EventBusSettings, ConfigError> {
        Ok(EventBusSettings {
            bus_name: self.required("EVENT_BUS_NAME")?,
            endpoint: self.url("EVENTBRIDGE_ENDPOINT")?,
        })
    }

    /// The publisher's app registration (`ENTRA_*`) and Microsoft's API (`MARKETPLACE_*`).
    pub fn marketplace(&self) -> Result<MarketplaceConfig, ConfigError> {
        let mut entra = EntraConfig::new(
            self.required("ENTRA_TENANT_ID")?,
            self.required("ENTRA_CLIENT_ID")?,
            self.client_credentials()?,
            self.authority()?,
        );
        if let Some(resource) = self.get("MARKETPLACE_RESOURCE_ID") {
            entra.resource = resource;
        }
        entra.version = match self.get("ENTRA_TOKEN_VERSION").as_deref() {
            None | Some("v2" | "2") => TokenEndpointVersion::V2,
            Some("v1" | "1") => TokenEndpointVersion::V1,
            Some(other) => return Err(invalid("ENTRA_TOKEN_VERSION", format!("{other:?} is not v1 or v2"))),
        };
        let mut config = MarketplaceConfig::new(entra);
        if let Some(base) = self.url("MARKETPLACE_API_BASE")? {
            config.api_base = base;
        }
        if let Some(version) = self.get("MARKETPLACE_API_VERSION") {
            config.api_version = version;
        }
        config.connect_timeout = self.millis("MARKETPLACE_CONNECT_TIMEOUT_MS", config.connect_timeout)?;
        config.attempt_timeout = self.millis("MARKETPLACE_ATTEMPT_TIMEOUT_MS", config.attempt_timeout)?;
        config.call_timeout = self.millis("MARKETPLACE_CALL_TIMEOUT_MS", config.call_timeout)?;
        if let Some(retries) = self.number("MARKETPLACE_MAX_RETRIES")? {
            config.retry.max_retries = retries;
        }
        Ok(config)
    }

    /// How the app proves itself to Entra ID, in the order tried: a certificate
    /// (`ENTRA_CLIENT_CERTIFICATE` and `ENTRA_CLIENT_CERTIFICATE_KEY`, PEM), the client secret
    /// (`ENTRA_CLIENT_SECRET`), and during a rotation the next secret (`ENTRA_CLIENT_SECRET_NEXT`).
    fn client_credentials(&self) -> Result<Vec<ClientCredential>, ConfigError> {
        let mut credentials = Vec::new();
        if let Some(certificate) = self.get("ENTRA_CLIENT_CERTIFICATE") {
            let key = self.required("ENTRA_CLIENT_CERTIFICATE_KEY")?;
            let certificate = Certificate::from_pem(&certificate, &key)
                .map_err(|reason| invalid("ENTRA_CLIENT_CERTIFICATE", reason))?;
            credentials.push(ClientCredential::Certificate(Arc::new(certificate)));
        }
        for name in ["ENTRA_CLIENT_SECRET", "ENTRA_CLIENT_SECRET_NEXT"] {
            if let Some(secret) = self.get(name) {
                credentials.push(ClientCredential::secret(name, secret));
            }
        }
        if credentials.is_empty() {
            return Err(ConfigError::Missing("ENTRA_CLIENT_SECRET"));
        }
        Ok(credentials)
    }

    /// What a webhook's bearer token must say: `ENTRA_TENANT_ID` and `ENTRA_CLIENT_ID` (GUIDs:
    /// they are compared with the token's `tid` and `aud`), the keys under `ENTRA_AUTHORITY`, or
    /// at `WEBHOOK_JWKS_URL`.
    pub fn webhook_token(&self) -> Result<WebhookTokenSettings, ConfigError> {
        let tenant_id = self.guid("ENTRA_TENANT_ID")?;
        let jwks_url = match self.url("WEBHOOK_JWKS_URL")? {
            Some(url) => url,
            None => {
                let mut url = self.authority()?;
                url.path_segments_mut()
                    .map_err(|()| invalid("ENTRA_AUTHORITY", "cannot have a path appended"))?
                    .pop_if_empty()
                    .extend([tenant_id.as_str(), "discovery", "v2.0", "keys"]);
                url
            }
        };
        Ok(WebhookTokenSettings {
            tenant_id,
            app_id: self.guid("ENTRA_CLIENT_ID")?,
            marketplace_app_id: MARKETPLACE_RESOURCE_ID.into(),
            jwks_url: jwks_url.to_string(),
            leeway: DEFAULT_LEEWAY,
        })
    }

    /// Which customer changes the webhook accepts: `ACCEPT_CUSTOMER_CHANGES`, `ALLOWED_PLANS`
    /// (comma-separated), `MIN_SEATS`, `MAX_SEATS`.
    pub fn change_policy(&self) -> Result<ChangePolicy, ConfigError> {
        let defaults = ChangePolicy::default();
        Ok(ChangePolicy {
            accept_changes: self.flag("ACCEPT_CUSTOMER_CHANGES", defaults.accept_changes)?,
            allowed_plans: self
                .get("ALLOWED_PLANS")
                .map(|plans| plans.split(',').filter_map(PlanId::parse).collect()),
            min_seats: self.number("MIN_SEATS")?,
            max_seats: self.number("MAX_SEATS")?,
        })
    }

    /// The reconciliation: `RECONCILE_INTERVAL_MINUTES` (how long after a pass started the next one
    /// starts; the schedule's ticks in between go on with a pass under way, or do nothing).
    pub fn reconcile(&self) -> Result<ReconcileSettings, ConfigError> {
        let minutes: u32 = self.number("RECONCILE_INTERVAL_MINUTES")?.unwrap_or(60);
        Ok(ReconcileSettings { interval: chrono::Duration::minutes(i64::from(minutes)) })
    }

    /// The buyer-facing pages: `FORM_SIGNING_KEY`, `LANDING_URL`, `ACTIVATE_URL`, `PRODUCT_NAME`,
    /// `PRODUCT_URL`, `AUTO_ACTIVATE`, `SECURE_COOKIES`, and sign-in with `OIDC_*`.
    pub fn web(&self) -> Result<WebSettings, ConfigError> {
        let key = self.required("FORM_SIGNING_KEY")?;
        let sealer = Sealer::new(key.as_bytes())
            .ok_or_else(|| invalid("FORM_SIGNING_KEY", format!("must be at least {MIN_KEY_BYTES} bytes")))?;
        let landing_url = self.url("LANDING_URL")?.ok_or(ConfigError::Missing("LANDING_URL"))?;
        let activate_url = match self.url("ACTIVATE_URL")? {
            Some(url) => url,
            None => landing_url.join("activate").map_err(|e| invalid("LANDING_URL", e))?,
        };
        let signin = match self.get("OIDC_CLIENT_ID") {
            None => None,
            Some(client_id) => Some(OidcSettings {
                authority: match self.url("OIDC_AUTHORITY")? {
                    Some(url) => url,
                    None => Url::parse(&format!("{ENTRA_AUTHORITY}/organizations/v2.0")).expect("a URL"),
                },
                client_id,
                client_secret: self.get("OIDC_CLIENT_SECRET").map(SecretString::from),
                redirect_uri: self.url("OIDC_REDIRECT_URI")?.unwrap_or_else(|| landing_url.clone()),
            }),
        };
        Ok(WebSettings {
            sealer,
            product_name: self.get("PRODUCT_NAME").unwrap_or_else(|| "Our product".into()),
            product_url: self.url("PRODUCT_URL")?.map(String::from),
            landing_url,
            activate_url,
            auto_activate: self.flag("AUTO_ACTIVATE", false)?,
            secure_cookies: self.flag("SECURE_COOKIES", true)?,
            signin,
            form_lifetime: FORM_LIFETIME,
        })
    }

    /// The logs ([`crate::logging`]): `AWS_LAMBDA_LOG_FORMAT` (`JSON` for one object a line) and
    /// `AWS_LAMBDA_LOG_LEVEL`, which Lambda sets from the template's `LoggingConfig`; `RUST_LOG`'s
    /// directives (`warn,fulfillment::wiring=info`): its default level where Lambda sets none, its
    /// modules' levels always (Lambda still drops JSON lines below its own level). An unreadable
    /// value is ignored as a whole (INFO where nothing else sets a level) and reported, not fatal:
    /// a function must not fail to start for its logs.
    pub fn logging(&self) -> LogSettings {
        let mut filter = Targets::new();
        let mut problems = Vec::new();
        if let Some(directives) = self.get("RUST_LOG") {
            match directives.parse::<Targets>() {
                Ok(parsed) => filter = parsed,
                Err(e) => problems.push(format!("RUST_LOG {directives:?}: {e}")),
            }
        }
        let lambda_level = self.get("AWS_LAMBDA_LOG_LEVEL").and_then(|name| {
            let level = crate::logging::lambda_level(&name);
            if level.is_none() {
                problems.push(format!("AWS_LAMBDA_LOG_LEVEL {name:?} is not a level"));
            }
            level
        });
        // Lambda's level over RUST_LOG's default; INFO where neither sets one.
        if let Some(level) = lambda_level.or(filter.default_level().is_none().then_some(LevelFilter::INFO)) {
            filter = filter.with_default(level);
        }
        let json = self.get("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        LogSettings { json, filter, problem }
    }
}

/// How the functions log ([`Environment::logging`]).
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// One JSON object a line (Lambda's `LogFormat: JSON`), else plain text.
    pub json: bool,
    pub filter: Targets,
    /// A setting that could not be read, to be logged once the logs work.
    pub problem: Option<String>,
}

/// How often the reconciliation starts a pass.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    pub interval: chrono::Duration,
}

/// Where lifecycle events go.
#[derive(Debug, Clone)]
pub struct EventBusSettings {
    pub bus_name: String,
    /// A local EventBridge stand-in's URL; unset in AWS.
    pub endpoint: Option<Url>,
}

/// Where the subscriptions and the metered usage live.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub table_name: String,
    pub usage_table_name: String,
    /// DynamoDB Local's URL for local runs; unset in AWS.
    pub endpoint: Option<Url>,
}
