//! The Entra-like token endpoints and discovery documents, the control API and the command line.

mod common;

use common::{Api, WAIT, fast_config, start};
use marketplace_emulator::{
    ControlClient, Endpoint, Fault, MARKETPLACE_RESOURCE_ID, Purchase, Quirk, WebhookFaults,
};
use serde_json::Value;

async fn token_request(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_v1_and_v2_token_endpoints_should_issue_tokens_in_entra_shapes() {
    let emu = start(fast_config()).await;
    let c = emu.config();
    let (status, v1) = token_request(
        &emu.token_url_v1(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.publisher_app_id),
            ("client_secret", &c.publisher_client_secret),
            ("resource", MARKETPLACE_RESOURCE_ID),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v1["token_type"], "Bearer");
    assert_eq!(v1["expires_in"], "3600", "v1 numbers are strings");
    assert!(v1["expires_on"].is_string() && v1["not_before"].is_string());
    assert_eq!(v1["resource"], MARKETPLACE_RESOURCE_ID);

    let scope = format!("{MARKETPLACE_RESOURCE_ID}/.default");
    let (status, v2) = token_request(
        &emu.token_url_v2(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.publisher_app_id),
            ("client_secret", &c.publisher_client_secret),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v2["expires_in"], 3600, "v2 numbers are numbers");
    assert_eq!(emu.tokens_issued(), 2);

    let api = Api {
        http: reqwest::Client::new(),
        base: emu.api_base(),
        token: v2["access_token"].as_str().unwrap().into(),
    };
    assert_eq!(api.get("/saas/subscriptions").await.status, 200);
}

#[tokio::test]
async fn the_token_endpoint_should_refuse_wrong_tenant_client_secret_resource_and_grant() {
    let emu = start(fast_config()).await;
    let c = emu.config();
    let good = |k: &str| -> String {
        match k {
            "grant_type" => "client_credentials".into(),
            "client_id" => c.publisher_app_id.clone(),
            "client_secret" => c.publisher_client_secret.clone(),
            _ => MARKETPLACE_RESOURCE_ID.into(),
        }
    };
    let with = |key: &str, value: &str| -> Vec<(String, String)> {
        ["grant_type", "client_id", "client_secret", "resource"]
            .iter()
            .map(|k| (k.to_string(), if *k == key { value.to_string() } else { good(k) }))
            .collect()
    };
    let cases = [
        ("client_secret", "wrong", 401, "invalid_client"),
        ("client_id", "00000000-0000-4000-8000-000000000000", 400, "unauthorized_client"),
        ("resource", "62d94f6c-d599-489b-a797-3e10e42fbe22", 400, "invalid_resource"),
        ("grant_type", "password", 400, "unsupported_grant_type"),
    ];
    for (key, value, status, error) in cases {
        let form = with(key, value);
        let r = reqwest::Client::new().post(emu.token_url_v1()).form(&form).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{key}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], error, "{key}");
        assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS"));
    }
    let other_tenant =
        emu.token_url_v1().replace(&c.publisher_tenant_id, "11111111-0000-4000-8000-000000000000");
    let r = reqwest::Client::new().post(other_tenant).form(&with("", "")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let (status, body) = token_request(
        &emu.token_url_v2(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.publisher_app_id),
            ("client_secret", &c.publisher_client_secret),
            ("scope", MARKETPLACE_RESOURCE_ID),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));
    assert_eq!(emu.tokens_issued(), 0);
}

#[tokio::test]
async fn the_discovery_documents_should_point_at_the_served_keys_and_name_both_issuers() {
    let emu = start(fast_config()).await;
    let tid = emu.config().publisher_tenant_id.clone();
    let v2: Value = reqwest::get(format!("{}/{tid}/v2.0/.well-known/openid-configuration", emu.authority()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["issuer"], format!("https://login.microsoftonline.com/{tid}/v2.0"));
    let v1: Value = reqwest::get(format!("{}/{tid}/.well-known/openid-configuration", emu.authority()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{tid}/"));
    for doc in [v1, v2] {
        let keys: Value =
            reqwest::get(doc["jwks_uri"].as_str().unwrap()).await.unwrap().json().await.unwrap();
        assert_eq!(keys, emu.jwks());
        assert_eq!(keys["keys"][0]["kid"], emu.kid());
        assert_eq!(keys["keys"][0]["kty"], "RSA");
    }
}

#[tokio::test]
async fn the_control_api_should_drive_the_customer_side_and_faults() {
    let emu = start(fast_config()).await;
    let control = ControlClient::new(&emu.url());
    let config = control.config().await.unwrap();
    assert_eq!(config["apiBase"], emu.api_base());

    let p = control.purchase(&Purchase::plan("team-monthly").quantity(4)).await.unwrap();
    let api = Api::new(&emu).await;
    assert_eq!(api.resolve(&p.token).await.status, 200);
    assert_eq!(api.activate(&p.subscription_id, "team-monthly", Some(4)).await.status, 200);
    let fresh = control.landing_token(&p.subscription_id).await.unwrap();
    assert_eq!(api.resolve(&fresh).await.json()["id"], p.subscription_id.as_str());

    let handle = control.change_quantity(&p.subscription_id, 6).await.unwrap();
    assert_eq!(
        emu.operation(&p.subscription_id, &handle.operation_id).await.unwrap()["status"],
        "InProgress"
    );
    let rejected = control.change_quantity(&p.subscription_id, 7).await;
    assert!(matches!(rejected, Err(marketplace_emulator::EmulatorError::Rejected(_))), "{rejected:?}");
    assert!(control.action(&p.subscription_id, "reinstate").await.is_err());
    assert!(matches!(
        control.action("unknown-id", "suspend").await,
        Err(marketplace_emulator::EmulatorError::NotFound(_))
    ));

    control.inject(Endpoint::GetSubscription, &Fault::status_retry_after(429, "1"), 1).await.unwrap();
    assert_eq!(api.get(&format!("/saas/subscriptions/{}", p.subscription_id)).await.status, 429);
    control.set_quirk(Quirk::PaddedStatus, true).await.unwrap();
    let padded = api.get(&format!("/saas/subscriptions/{}", p.subscription_id)).await.json();
    assert_eq!(padded["saasSubscriptionStatus"], " Subscribed ");
    control.webhook_faults(&WebhookFaults { drop: true, ..WebhookFaults::default() }).await.unwrap();
    control.action(&p.subscription_id, "renew").await.unwrap();
    let webhooks = control.webhooks().await.unwrap();
    assert!(webhooks.iter().any(|w| w.action == "Renew" && w.dropped));
    control.clear_faults().await.unwrap();
    assert_eq!(control.subscriptions().await.unwrap().len(), 1);
    assert!(!control.requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_command_line_should_purchase_and_print_a_percent_encoded_landing_url() {
    let emu = start(fast_config()).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_marketplace-emulator"))
        .args([
            "purchase",
            "--plan",
            "team-yearly",
            "--quantity",
            "8",
            "--landing-url",
            "https://app.example/landing",
        ])
        .env("EMULATOR_URL", emu.url())
        .output();
    let output = tokio::time::timeout(WAIT, output).await.expect("CLI finishes").expect("CLI runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    let id = field("subscription id:");
    let token = field("token:");
    let landing = field("landing url:");
    assert_eq!(emu.subscription(&id).await.unwrap()["quantity"], 8);
    let encoded = landing.strip_prefix("https://app.example/landing?token=").expect("landing URL");
    assert!(
        !encoded.contains('+')
            && !encoded.contains('/')
            && encoded.contains("%2B")
            && encoded.contains("%2F")
    );
    let decoded: String =
        url::form_urlencoded::parse(format!("t={encoded}").as_bytes()).next().unwrap().1.into_owned();
    assert_eq!(decoded, token);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_marketplace-emulator"))
        .args(["suspend", &id])
        .env("EMULATOR_URL", emu.url())
        .output();
    let output = tokio::time::timeout(WAIT, output).await.expect("CLI finishes").expect("CLI runs");
    assert!(!output.status.success(), "a pending subscription cannot be suspended");
    assert!(String::from_utf8_lossy(&output.stderr).contains("error"));
}
