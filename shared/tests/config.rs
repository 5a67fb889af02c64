//! Every setting is read in one place: defaults, overrides, and a named error for what is missing
//! or invalid.

use std::time::Duration;

use fulfillment::config::{ConfigError, Environment, MARKETPLACE_SECRET, PAGES_SECRET};
use fulfillment::domain::PlanId;
use fulfillment::marketplace::{ClientCredential, MARKETPLACE_RESOURCE_ID, TokenEndpointVersion};
use fulfillment::webhook::ChangePolicy;
use secrecy::ExposeSecret;

fn environment(pairs: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(pairs.iter().copied())
}

/// `pairs` with `name` set to `value` (replacing it if present).
fn with(pairs: &[(&'static str, &'static str)], name: &'static str, value: &'static str) -> Environment {
    let mut pairs = pairs.to_vec();
    pairs.retain(|(n, _)| *n != name);
    pairs.push((name, value));
    environment(&pairs)
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, ConfigError>, name: &str, value: &str) {
    match result {
        Err(ConfigError::Invalid { name: reported, .. }) => assert_eq!(reported, name, "{value}"),
        other => panic!("{name}={value}: {other:?}"),
    }
}

const TENANT: &str = "72f988bf-0000-4000-8000-00000000e001";
const APP: &str = "a1b2c3d4-0000-4000-8000-00000000a991";
const MARKETPLACE: [(&str, &str); 3] =
    [("ENTRA_TENANT_ID", TENANT), ("ENTRA_CLIENT_ID", APP), ("ENTRA_CLIENT_SECRET", "secret")];

#[test]
fn the_marketplace_defaults_point_at_microsoft() {
    let config = environment(&MARKETPLACE).marketplace().expect("valid");
    assert_eq!(config.api_base.as_str(), "https://marketplaceapi.microsoft.com/api");
    assert_eq!(config.api_version, "2018-08-31");
    assert_eq!(config.entra.resource, MARKETPLACE_RESOURCE_ID);
    assert_eq!(config.entra.version, TokenEndpointVersion::V2);
    assert_eq!(
        config.entra.token_url().as_str(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    );
    match config.entra.credentials.as_slice() {
        [ClientCredential::Secret { name: "ENTRA_CLIENT_SECRET", value }] => {
            assert_eq!(value.expose_secret(), "secret")
        }
        other => panic!("one client secret expected: {other:?}"),
    }
    assert!(!format!("{config:?}").contains("secret\""), "the secret is not printed");
}

#[test]
fn every_marketplace_setting_can_be_overridden() {
    let mut pairs = MARKETPLACE.to_vec();
    pairs.extend([
        ("MARKETPLACE_API_BASE", "http://127.0.0.1:8600/api"),
        ("MARKETPLACE_API_VERSION", "2018-09-15"),
        ("ENTRA_AUTHORITY", "http://127.0.0.1:8600/entra"),
        ("ENTRA_TOKEN_VERSION", "v1"),
        ("MARKETPLACE_RESOURCE_ID", "62d94f6c-d599-489b-a797-3e10e42fbe22"),
        ("MARKETPLACE_CONNECT_TIMEOUT_MS", "500"),
        ("MARKETPLACE_ATTEMPT_TIMEOUT_MS", "2500"),
        ("MARKETPLACE_CALL_TIMEOUT_MS", "8000"),
        ("MARKETPLACE_MAX_RETRIES", "1"),
    ]);
    let config = environment(&pairs).marketplace().expect("valid");
    assert_eq!(config.api_base.as_str(), "http://127.0.0.1:8600/api");
    assert_eq!(config.api_version, "2018-09-15");
    assert_eq!(
        config.entra.token_url().as_str(),
        format!("http://127.0.0.1:8600/entra/{TENANT}/oauth2/token")
    );
    assert_eq!(config.entra.resource, "62d94f6c-d599-489b-a797-3e10e42fbe22");
    assert_eq!(
        (config.connect_timeout, config.attempt_timeout, config.call_timeout),
        (Duration::from_millis(500), Duration::from_millis(2500), Duration::from_secs(8))
    );
    assert_eq!(config.retry.max_retries, 1);
}

#[test]
fn missing_or_invalid_marketplace_settings_are_named() {
    assert_eq!(
        environment(&MARKETPLACE[..2]).marketplace().err(),
        Some(ConfigError::Missing("ENTRA_CLIENT_SECRET"))
    );
    assert_eq!(
        with(&MARKETPLACE, "ENTRA_TENANT_ID", " ").marketplace().err(),
        Some(ConfigError::Missing("ENTRA_TENANT_ID"))
    );
    for (name, value) in [
        ("ENTRA_TOKEN_VERSION", "v3"),
        ("ENTRA_AUTHORITY", "mailto:keys@example.com"),
        ("MARKETPLACE_API_BASE", "not a url"),
        ("MARKETPLACE_CALL_TIMEOUT_MS", "ten"),
        ("MARKETPLACE_MAX_RETRIES", "-1"),
    ] {
        assert_invalid(with(&MARKETPLACE, name, value).marketplace(), name, value);
    }
}

#[test]
fn webhook_tokens_are_checked_against_the_public_cloud_by_default() {
    let settings = environment(&MARKETPLACE).webhook_token().expect("settings");
    assert_eq!((settings.tenant_id.as_str(), settings.app_id.as_str()), (TENANT, APP));
    assert_eq!(settings.marketplace_app_id, MARKETPLACE_RESOURCE_ID);
    assert_eq!(settings.jwks_url, format!("https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"));
    assert_eq!(settings.leeway, Duration::from_secs(60));
}

#[test]
fn the_webhook_keys_follow_the_authority_unless_overridden() {
    for authority in ["http://127.0.0.1:9/entra", "http://127.0.0.1:9/entra/"] {
        let settings = with(&MARKETPLACE, "ENTRA_AUTHORITY", authority).webhook_token().expect("settings");
        assert_eq!(settings.jwks_url, format!("http://127.0.0.1:9/entra/{TENANT}/discovery/v2.0/keys"));
    }
    let mut pairs = MARKETPLACE.to_vec();
    pairs.extend([
        ("ENTRA_AUTHORITY", "http://127.0.0.1:9/entra"),
        ("WEBHOOK_JWKS_URL", "https://keys.example/jwks"),
    ]);
    assert_eq!(environment(&pairs).webhook_token().expect("settings").jwks_url, "https://keys.example/jwks");
}

#[test]
fn webhook_settings_refuse_what_would_refuse_every_webhook() {
    let read = |pairs: &[(&str, &str)]| environment(pairs).webhook_token();
    assert_eq!(read(&[("ENTRA_CLIENT_ID", APP)]).unwrap_err(), ConfigError::Missing("ENTRA_TENANT_ID"));
    assert_eq!(read(&[("ENTRA_TENANT_ID", TENANT)]).unwrap_err(), ConfigError::Missing("ENTRA_CLIENT_ID"));
    for (name, value) in [
        ("ENTRA_TENANT_ID", "contoso.onmicrosoft.com"),
        ("ENTRA_TENANT_ID", "72f988bf00004000800000000000e001"),
        ("ENTRA_CLIENT_ID", "api://a1b2c3d4-0000-4000-8000-00000000a991"),
        ("ENTRA_AUTHORITY", "not a url"),
        ("ENTRA_AUTHORITY", "mailto:keys@example.com"),
        ("WEBHOOK_JWKS_URL", "ftp://keys.example/jwks"),
    ] {
        assert_invalid(with(&MARKETPLACE, name, value).webhook_token(), name, value);
    }
}

#[test]
fn the_change_policy_is_read_from_the_environment() {
    let policy = environment(&[
        ("ACCEPT_CUSTOMER_CHANGES", "true"),
        ("ALLOWED_PLANS", "gold, silver ,"),
        ("MIN_SEATS", "2"),
        ("MAX_SEATS", "200"),
    ])
    .change_policy()
    .expect("valid");
    let plan = |p| PlanId::parse(p).expect("a plan");
    assert_eq!(policy.allowed_plans, Some(vec![plan("gold"), plan("silver")]));
    assert_eq!((policy.min_seats, policy.max_seats), (Some(2), Some(200)));
    assert_eq!(Environment::default().change_policy().expect("defaults"), ChangePolicy::default());
    assert_invalid(environment(&[("MAX_SEATS", "many")]).change_policy(), "MAX_SEATS", "many");
    assert_invalid(
        environment(&[("ACCEPT_CUSTOMER_CHANGES", "maybe")]).change_policy(),
        "ACCEPT_CUSTOMER_CHANGES",
        "maybe",
    );
}

const WEB: [(&str, &str); 2] = [
    ("FORM_SIGNING_KEY", "a-form-signing-key-of-at-least-32-bytes"),
    ("LANDING_URL", "https://saas.example/landing"),
];

#[test]
fn the_pages_default_to_secure_cookies_and_the_confirmation_step() {
    let web = environment(&WEB).web().expect("valid");
    assert_eq!(web.activate_url.as_str(), "https://saas.example/activate");
    assert!(web.secure_cookies && !web.auto_activate && web.signin.is_none());
    let signin = with(&WEB, "OIDC_CLIENT_ID", APP).web().expect("valid").signin.expect("sign-in");
    assert_eq!(signin.authority.as_str(), "https://login.microsoftonline.com/organizations/v2.0");
    assert_eq!(signin.redirect_uri.as_str(), "https://saas.example/landing");
}

#[test]
fn invalid_page_settings_are_named() {
    assert_eq!(
        environment(&WEB[1..]).web().err().map(|e| e.to_string()),
        Some("FORM_SIGNING_KEY is not set".into())
    );
    for (name, value) in [
        ("FORM_SIGNING_KEY", "short"),
        ("LANDING_URL", "not a url"),
        ("AUTO_ACTIVATE", "sometimes"),
        ("SECURE_COOKIES", "2"),
    ] {
        assert_invalid(with(&WEB, name, value).web(), name, value);
    }
}

#[test]
fn aws_settings_come_from_the_lambda_environment() {
    let lambda = [("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "AKIA"), ("AWS_SECRET_ACCESS_KEY", "s")];
    let aws = environment(&lambda).aws().expect("valid");
    assert_eq!(aws.region.as_ref(), "eu-west-1");
    assert!(!format!("{aws:?}").contains("\"s\""), "the secret key is not printed");
    assert_eq!(environment(&lambda[..2]).aws().err(), Some(ConfigError::Missing("AWS_SECRET_ACCESS_KEY")));
    let tables = [("TABLE_NAME", "subscriptions"), ("USAGE_TABLE_NAME", "usage")];
    let store = with(&tables, "DYNAMODB_ENDPOINT", "http://127.0.0.1:8000").store().expect("valid");
    assert_eq!((store.table_name.as_str(), store.usage_table_name.as_str()), ("subscriptions", "usage"));
    assert_eq!(environment(&[]).store().err(), Some(ConfigError::Missing("TABLE_NAME")));
    assert_eq!(environment(&tables[..1]).store().err(), Some(ConfigError::Missing("USAGE_TABLE_NAME")));
}

#[test]
fn values_are_never_printed() {
    let printed = format!("{:?}", environment(&MARKETPLACE));
    assert!(printed.contains("ENTRA_CLIENT_SECRET") && !printed.contains("secret\""), "{printed}");
}

#[test]
fn a_blank_declaration_never_shadows_the_secret() {
    let marketplace: std::collections::HashMap<String, String> =
        [("ENTRA_CLIENT_SECRET".to_owned(), "from-the-secret".to_owned())].into();
    let pages: std::collections::HashMap<String, String> =
        [("FORM_SIGNING_KEY".to_owned(), "also-from-the-secret-and-32-bytes-long".to_owned())].into();
    let environment = environment(&[("ENTRA_CLIENT_SECRET", ""), ("FORM_SIGNING_KEY", " ")])
        .with_secret(MARKETPLACE_SECRET, marketplace)
        .and_then(|e| e.with_secret(PAGES_SECRET, pages))
        .expect("blank declarations take the secrets' values");
    assert_eq!(environment.get("ENTRA_CLIENT_SECRET").as_deref(), Some("from-the-secret"));
    assert_eq!(
        environment.get("FORM_SIGNING_KEY").as_deref(),
        Some("also-from-the-secret-and-32-bytes-long")
    );
}

/// A setting in both places used to be the environment's, silently: a stale variable left from a
/// test would shadow the rotated secret. It stops the start, naming the setting.
#[test]
fn a_setting_both_in_the_environment_and_in_the_secret_is_refused() {
    let secret: std::collections::HashMap<String, String> =
        [("FORM_SIGNING_KEY".to_owned(), "from-the-secret-and-at-least-32-bytes".to_owned())].into();
    let both = environment(&[("FORM_SIGNING_KEY", "set-in-the-environment-itself-32b")])
        .with_secret(PAGES_SECRET, secret.clone());
    match both {
        Err(error @ ConfigError::InBothPlaces(_)) => {
            assert!(error.to_string().starts_with("FORM_SIGNING_KEY is set both"), "{error}");
            assert!(!error.to_string().contains("32b"), "no value is shown: {error}");
        }
        other => panic!("refused: {other:?}"),
    }
    let same = environment(&[("FORM_SIGNING_KEY", "from-the-secret-and-at-least-32-bytes")])
        .with_secret(PAGES_SECRET, secret);
    assert!(same.is_ok(), "the same value in both places is no conflict");
}

/// Outside local runs every URL is https: a token, a purchase token or a signing key never
/// travels in the clear, and no URL that cannot be a base (`mailto:`) gets as far as a call.
#[test]
fn outside_local_runs_every_url_setting_is_https() {
    for name in ["MARKETPLACE_API_BASE", "ENTRA_AUTHORITY"] {
        assert_invalid(
            with(&MARKETPLACE, name, "http://marketplace.example/api").marketplace(),
            name,
            "http",
        );
        assert_invalid(with(&MARKETPLACE, name, "mailto:ops@example.com").marketplace(), name, "mailto");
    }
    assert_invalid(
        with(&MARKETPLACE, "WEBHOOK_JWKS_URL", "http://keys.example/keys").webhook_token(),
        "WEBHOOK_JWKS_URL",
        "http",
    );
    let pages = [
        ("FORM_SIGNING_KEY", "0123456789abcdef0123456789abcdef"),
        ("LANDING_URL", "https://app.example/landing"),
    ];
    for name in ["LANDING_URL", "ACTIVATE_URL", "OIDC_REDIRECT_URI", "OIDC_AUTHORITY", "PRODUCT_URL"] {
        let mut pairs = pages.to_vec();
        pairs.push(("OIDC_CLIENT_ID", APP));
        assert_invalid(with(&pairs, name, "http://app.example/x").web(), name, "http");
    }
    // This machine (local runs and tests) and sam local's containers may use plain http.
    assert!(with(&MARKETPLACE, "MARKETPLACE_API_BASE", "http://127.0.0.1:8600/api").marketplace().is_ok());
    assert!(with(&MARKETPLACE, "ENTRA_AUTHORITY", "http://localhost:8600/entra").marketplace().is_ok());
    let mut sam_local = MARKETPLACE.to_vec();
    sam_local.push(("AWS_SAM_LOCAL", "true"));
    assert!(
        with(&sam_local, "MARKETPLACE_API_BASE", "http://host.docker.internal:8600/api")
            .marketplace()
            .is_ok()
    );
}

#[test]
fn only_an_arn_names_a_secret() {
    assert_eq!(
        environment(&[("MARKETPLACE_SECRET_ARN", ""), ("PAGES_SECRET_ARN", " ")]).secret_arns(),
        Ok(vec![])
    );
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:saas-AbCdEf";
    let pages = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pages-GhIjKl";
    assert_eq!(
        environment(&[("MARKETPLACE_SECRET_ARN", arn), ("PAGES_SECRET_ARN", pages)]).secret_arns(),
        Ok(vec![(MARKETPLACE_SECRET, arn.to_owned()), (PAGES_SECRET, pages.to_owned())])
    );
    // What sam local passes for a parameter nobody set.
    assert_invalid(
        environment(&[("MARKETPLACE_SECRET_ARN", arn), ("PAGES_SECRET_ARN", "PagesSecretArn")]).secret_arns(),
        "PAGES_SECRET_ARN",
        "PagesSecretArn",
    );
}

/// Issue 15: each function reads only the secret values it needs. A secret holding another
/// purpose's field would hand that field to every function given the secret (one secret with
/// everything, passed as both, would undo the split), so it stops the start, naming the field.
#[test]
fn a_secret_holding_another_purposes_field_is_refused() {
    let everything: std::collections::HashMap<String, String> = [
        ("ENTRA_CLIENT_SECRET".to_owned(), "the-client-secret".to_owned()),
        ("FORM_SIGNING_KEY".to_owned(), "a-form-signing-key-of-32-bytes-or-more".to_owned()),
    ]
    .into();
    for kind in [MARKETPLACE_SECRET, PAGES_SECRET] {
        match environment(&[]).with_secret(kind, everything.clone()) {
            Err(error @ ConfigError::NotInThisSecret { .. }) => {
                let text = error.to_string();
                assert!(text.starts_with(&format!("the secret named by {}", kind.variable)), "{text}");
                assert!(
                    !text.contains("the-client-secret") && !text.contains("a-form-signing-key"),
                    "no value: {text}"
                );
            }
            other => panic!("{} refuses a foreign field: {other:?}", kind.variable),
        }
    }
    // The fields of the two kinds are disjoint, and each kind takes all of its own.
    for field in MARKETPLACE_SECRET.fields {
        assert!(!PAGES_SECRET.fields.contains(field), "{field}");
    }
    for kind in [MARKETPLACE_SECRET, PAGES_SECRET] {
        let own = kind.fields.iter().map(|f| (f.to_string(), "value".to_owned())).collect();
        let taken = environment(&[]).with_secret(kind, own).expect("its own fields");
        assert!(kind.fields.iter().all(|f| taken.get(f).is_some()), "{kind:?}");
    }
}

#[test]
fn under_sam_local_a_function_never_falls_back_to_the_real_services() {
    let local = [
        ("AWS_SAM_LOCAL", "true"),
        ("DYNAMODB_ENDPOINT", "http://host.docker.internal:8000"),
        ("MARKETPLACE_API_BASE", "http://host.docker.internal:8600/api"),
        ("ENTRA_AUTHORITY", "http://host.docker.internal:8600/entra"),
    ];
    assert_eq!(environment(&local).check_local_run(), Ok(()));
    for name in ["DYNAMODB_ENDPOINT", "MARKETPLACE_API_BASE", "ENTRA_AUTHORITY"] {
        assert_invalid(with(&local, name, "").check_local_run(), name, "blank");
    }
    assert_eq!(
        environment(&local[1..]).check_local_run(),
        Ok(()),
        "in AWS the defaults are the real services"
    );
}

#[test]
fn the_credentials_are_tried_certificate_first_then_the_secrets_of_a_rotation() {
    let mut pairs = MARKETPLACE.to_vec();
    pairs.push(("ENTRA_CLIENT_SECRET_NEXT", "the-next-one"));
    let config = environment(&pairs).marketplace().expect("valid");
    match config.entra.credentials.as_slice() {
        [ClientCredential::Secret { value: current, .. }, ClientCredential::Secret { name, value: next }] => {
            assert_eq!((current.expose_secret(), next.expose_secret()), ("secret", "the-next-one"));
            assert_eq!(*name, "ENTRA_CLIENT_SECRET_NEXT");
        }
        other => panic!("two secrets expected: {other:?}"),
    }
    let no_secret = [MARKETPLACE[0], MARKETPLACE[1]];
    assert_eq!(
        environment(&no_secret).marketplace().err(),
        Some(ConfigError::Missing("ENTRA_CLIENT_SECRET"))
    );
    // A certificate needs its key, and both must be PEM.
    let with_certificate = [MARKETPLACE[0], MARKETPLACE[1], ("ENTRA_CLIENT_CERTIFICATE", "not PEM")];
    assert_eq!(
        environment(&with_certificate).marketplace().err(),
        Some(ConfigError::Missing("ENTRA_CLIENT_CERTIFICATE_KEY"))
    );
    let mut broken = with_certificate.to_vec();
    broken.push(("ENTRA_CLIENT_CERTIFICATE_KEY", "not PEM either"));
    assert_invalid(environment(&broken).marketplace(), "ENTRA_CLIENT_CERTIFICATE", "not PEM");
}

/// Whether the log settings let an event of `level` from `target` through.
fn logs(environment: &Environment, target: &str, level: tracing::Level) -> bool {
    environment.logging().filter.would_enable(target, &level)
}

#[test]
fn logs_follow_lambdas_logging_controls_and_rust_log() {
    use tracing::Level;
    let default = environment(&[]);
    let settings = default.logging();
    assert!(!settings.json && settings.problem.is_none(), "{settings:?}");
    assert!(logs(&default, "fulfillment::webhook", Level::INFO));
    assert!(!logs(&default, "fulfillment::webhook", Level::DEBUG));

    // The template's LoggingConfig: LogFormat JSON, ApplicationLogLevel, as Lambda passes them.
    assert!(environment(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).logging().json);
    assert!(environment(&[("AWS_LAMBDA_LOG_FORMAT", "json")]).logging().json);
    assert!(!environment(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).logging().json);
    let warn = environment(&[("AWS_LAMBDA_LOG_LEVEL", "WARN")]);
    assert!(!logs(&warn, "fulfillment::webhook", Level::INFO));
    assert!(logs(&warn, "fulfillment::webhook", Level::WARN));
    let fatal = environment(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]);
    assert!(!logs(&fatal, "fulfillment::webhook", Level::WARN));
    assert!(logs(&fatal, "fulfillment::webhook", Level::ERROR));

    // RUST_LOG's directives: a default and a module of its own (the benchmark reads the warm-up).
    let directives = environment(&[("RUST_LOG", "warn,fulfillment::wiring=info")]);
    assert!(logs(&directives, "fulfillment::wiring", Level::INFO));
    assert!(!logs(&directives, "fulfillment::webhook", Level::INFO));
    assert!(logs(&directives, "fulfillment::webhook", Level::WARN));
    // Directives for modules alone leave INFO for the rest.
    let modules = environment(&[("RUST_LOG", "fulfillment::wiring=debug")]);
    assert!(logs(&modules, "fulfillment::wiring", Level::DEBUG));
    assert!(logs(&modules, "fulfillment::webhook", Level::INFO));
    assert!(!logs(&modules, "fulfillment::webhook", Level::DEBUG));
    // Lambda's level is the default; RUST_LOG still names its modules.
    let both =
        environment(&[("AWS_LAMBDA_LOG_LEVEL", "ERROR"), ("RUST_LOG", "info,fulfillment::wiring=debug")]);
    assert!(!logs(&both, "fulfillment::webhook", Level::WARN));
    assert!(logs(&both, "fulfillment::wiring", Level::DEBUG));
}

#[test]
fn an_unreadable_log_setting_leaves_info_and_says_which() {
    use tracing::Level;
    for (name, value) in [("RUST_LOG", "fulfillment=loud"), ("AWS_LAMBDA_LOG_LEVEL", "LOUD")] {
        let unreadable = environment(&[(name, value)]);
        let problem = unreadable.logging().problem.unwrap_or_default();
        assert!(problem.contains(name) && problem.contains(value), "{name}={value}: {problem:?}");
        assert!(logs(&unreadable, "fulfillment::webhook", Level::INFO), "{name}={value}");
        assert!(!logs(&unreadable, "fulfillment::webhook", Level::DEBUG), "{name}={value}");
    }
    // Both at once: both are named.
    let both = environment(&[("RUST_LOG", "fulfillment=loud"), ("AWS_LAMBDA_LOG_LEVEL", "LOUD")]);
    let problem = both.logging().problem.unwrap_or_default();
    assert!(problem.contains("RUST_LOG") && problem.contains("AWS_LAMBDA_LOG_LEVEL"), "{problem:?}");
}
