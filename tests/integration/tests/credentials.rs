//! The app's credentials against the emulator's Entra ID: a certificate (a client assertion signed
//! with its key) instead of the secret, and a rotation where Entra refuses the current secret and
//! the next one is used. Each through the admin function's self-check, as a publisher checks it.

use fulfillment::config::Environment;
use fulfillment::marketplace::{Call, HttpMarketplaceClient, MarketplaceApi};
use integration_tests::{changed_settings, stack_options};
use local_stack::{LocalStack, Options};
use marketplace_emulator::EmulatorConfig;

/// A self-signed certificate and its private key, both PEM.
fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("an RSA key");
    let certificate = rcgen::CertificateParams::new(vec!["saas-fulfillment.contoso.example".to_owned()])
        .expect("parameters")
        .self_signed(&key)
        .expect("a certificate");
    (certificate.pem(), key.serialize_pem())
}

async fn stack_trusting(certificates: Vec<String>) -> LocalStack {
    let emulator = EmulatorConfig { publisher_certificates: certificates, ..EmulatorConfig::default() };
    LocalStack::start(Options { emulator, ..stack_options() }).await.expect("the local stack starts")
}

async fn self_check(environment: &Environment) -> (String, bool) {
    let api =
        subscriptions::Deployed::from_environment(environment.clone()).await.expect("the function starts");
    api.self_check_report().await
}

/// The report's line for `check`.
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report.lines().find(|l| l.split_whitespace().nth(1) == Some(check)).unwrap_or_default()
}

/// The dangerous moment of a rotation: the next secret was mistyped while the current one still
/// works. The functions notice nothing yet; the self-check does, before the old one is deleted.
#[tokio::test]
async fn a_next_secret_entra_refuses_fails_the_self_check_while_the_current_one_still_works() {
    let stack = stack_trusting(Vec::new()).await;
    let environment = changed_settings(&stack.environment, &[], &[("ENTRA_CLIENT_SECRET_NEXT", "mistyped")]);
    let (report, healthy) = self_check(&environment).await;
    println!("rotation with a mistyped next secret:\n{report}\n");
    assert!(!healthy, "{report}");
    assert!(line(&report, "entra-token").starts_with("pass"), "{report}");
    assert!(line(&report, "credential:ENTRA_CLIENT_SECRET").starts_with("pass"), "{report}");
    let next = line(&report, "credential:ENTRA_CLIENT_SECRET_NEXT");
    assert!(next.starts_with("fail") && next.contains("AADSTS7000215"), "{report}");
}

#[tokio::test]
async fn a_registered_certificate_replaces_the_secret() {
    let (certificate, key) = certificate();
    let stack = stack_trusting(vec![certificate.clone()]).await;
    let environment = changed_settings(
        &stack.environment,
        &["ENTRA_CLIENT_SECRET"],
        &[("ENTRA_CLIENT_CERTIFICATE", &certificate), ("ENTRA_CLIENT_CERTIFICATE_KEY", &key)],
    );
    let (report, healthy) = self_check(&environment).await;
    println!("certificate:\n{report}\n");
    assert!(healthy, "{report}");
    // Without a secret configured, only the certificate can have earned the token.
    let before = stack.emulator.tokens_issued();
    let client = HttpMarketplaceClient::new(environment.marketplace().expect("config")).expect("client");
    client.list_subscriptions(None, &Call::new()).await.expect("Microsoft's API with a certificate's token");
    assert_eq!(stack.emulator.tokens_issued(), before + 1);
}

#[tokio::test]
async fn a_certificate_entra_does_not_know_is_refused_with_advice() {
    let (registered, _) = certificate();
    let (other, other_key) = certificate();
    let stack = stack_trusting(vec![registered]).await;
    let environment = changed_settings(
        &stack.environment,
        &["ENTRA_CLIENT_SECRET"],
        &[("ENTRA_CLIENT_CERTIFICATE", &other), ("ENTRA_CLIENT_CERTIFICATE_KEY", &other_key)],
    );
    let (report, healthy) = self_check(&environment).await;
    println!("unregistered certificate:\n{report}\n");
    assert!(!healthy);
    assert!(report.contains("AADSTS700027"), "{report}");
}

#[tokio::test]
async fn during_a_rotation_the_next_secret_is_used_when_the_current_one_is_refused() {
    let stack = stack_trusting(Vec::new()).await;
    let valid = stack.emulator.config().publisher_client_secret.clone();
    // The current secret was already removed in Entra; the next one is the valid one.
    let environment = changed_settings(
        &stack.environment,
        &["ENTRA_CLIENT_SECRET"],
        &[("ENTRA_CLIENT_SECRET", "the-old-secret"), ("ENTRA_CLIENT_SECRET_NEXT", &valid)],
    );
    let (report, healthy) = self_check(&environment).await;
    println!("rotation, the current secret already removed in Entra:\n{report}\n");
    assert!(healthy, "the next secret was used: {report}");
    assert!(line(&report, "credential:ENTRA_CLIENT_SECRET").starts_with("warn"), "{report}");
    assert!(line(&report, "credential:ENTRA_CLIENT_SECRET_NEXT").starts_with("pass"), "{report}");
    // Neither secret valid: the current one's refusal is reported.
    let environment = changed_settings(
        &environment,
        &["ENTRA_CLIENT_SECRET_NEXT"],
        &[("ENTRA_CLIENT_SECRET_NEXT", "another-old-one")],
    );
    let (report, healthy) = self_check(&environment).await;
    assert!(!healthy && report.contains("AADSTS7000215"), "{report}");
}
