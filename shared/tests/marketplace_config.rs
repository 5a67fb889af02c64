//! The Marketplace client's configuration, read once from the environment.

use std::collections::HashMap;
use std::time::Duration;

use fulfillment::marketplace::{
    ConfigError, MARKETPLACE_RESOURCE_ID, MarketplaceConfig, TokenEndpointVersion,
};
use secrecy::ExposeSecret;

fn read(pairs: &[(&str, &str)]) -> Result<MarketplaceConfig, ConfigError> {
    let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    MarketplaceConfig::from_lookup(|name| env.get(name).cloned())
}

const REQUIRED: [(&str, &str); 3] =
    [("ENTRA_TENANT_ID", "tenant"), ("ENTRA_CLIENT_ID", "app"), ("ENTRA_CLIENT_SECRET", "secret")];

#[test]
fn the_defaults_point_at_microsoft() {
    let config = read(&REQUIRED).expect("valid");
    assert_eq!(config.api_base.as_str(), "https://marketplaceapi.microsoft.com/api");
    assert_eq!(config.api_version, "2018-08-31");
    assert_eq!(config.entra.resource, MARKETPLACE_RESOURCE_ID);
    assert_eq!(config.entra.version, TokenEndpointVersion::V2);
    assert_eq!(
        config.entra.token_url().as_str(),
        "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"
    );
    assert_eq!(config.entra.client_secret.expose_secret(), "secret");
    assert!(!format!("{config:?}").contains("secret\""), "the secret is not printed");
}

#[test]
fn every_setting_can_be_overridden() {
    let mut pairs = REQUIRED.to_vec();
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
    let config = read(&pairs).expect("valid");
    assert_eq!(config.api_base.as_str(), "http://127.0.0.1:8600/api");
    assert_eq!(config.api_version, "2018-09-15");
    assert_eq!(config.entra.token_url().as_str(), "http://127.0.0.1:8600/entra/tenant/oauth2/token");
    assert_eq!(config.entra.resource, "62d94f6c-d599-489b-a797-3e10e42fbe22");
    assert_eq!(
        (config.connect_timeout, config.attempt_timeout, config.call_timeout),
        (Duration::from_millis(500), Duration::from_millis(2500), Duration::from_secs(8))
    );
    assert_eq!(config.retry.max_retries, 1);
}

#[test]
fn missing_or_invalid_settings_are_named() {
    assert_eq!(read(&REQUIRED[..2]).err(), Some(ConfigError::Missing("ENTRA_CLIENT_SECRET")));
    let blank = [("ENTRA_TENANT_ID", " "), REQUIRED[1], REQUIRED[2]];
    assert_eq!(read(&blank).err(), Some(ConfigError::Missing("ENTRA_TENANT_ID")));
    for (name, value) in [
        ("ENTRA_TOKEN_VERSION", "v3"),
        ("MARKETPLACE_API_BASE", "not a url"),
        ("MARKETPLACE_CALL_TIMEOUT_MS", "ten"),
        ("MARKETPLACE_MAX_RETRIES", "-1"),
    ] {
        let mut pairs = REQUIRED.to_vec();
        pairs.push((name, value));
        assert!(
            matches!(read(&pairs), Err(ConfigError::Invalid { name: n, .. }) if n == name),
            "{name}={value}"
        );
    }
}
