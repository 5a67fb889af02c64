//! The self-check against the emulator and DynamoDB Local: healthy, then each broken credential
//! the emulator can play (Entra ID's AADSTS errors, Microsoft refusing the app), the webhook's keys
//! out of reach, and a missing table; each with its advice. Run with `--nocapture` to see the
//! reports as the command prints them.

use fulfillment::config::Environment;
use fulfillment::self_check::Verdict;
use integration_tests::{changed_settings, stack_options};
use local_stack::LocalStack;
use marketplace_emulator::{CredentialFault, Endpoint, Fault};

async fn stack() -> LocalStack {
    LocalStack::start(stack_options()).await.expect("the local stack starts")
}

/// A fresh admin function (nothing cached: its first Entra token is asked for in the check).
async fn report(environment: &Environment) -> (String, bool) {
    let api =
        subscriptions::Deployed::from_environment(environment.clone()).await.expect("the function starts");
    api.self_check_report().await
}

fn verdict_of(report: &str, check: &str) -> Option<Verdict> {
    let line = report.lines().find(|l| l.split_whitespace().nth(1) == Some(check))?;
    Some(match line.split_whitespace().next()? {
        "pass" => Verdict::Pass,
        "warn" => Verdict::Warn,
        "fail" => Verdict::Fail,
        _ => Verdict::Skipped,
    })
}

#[tokio::test]
async fn a_healthy_setup_passes_every_check() {
    let stack = stack().await;
    let (report, healthy) = report(&stack.environment).await;
    println!("healthy setup:\n{report}\n");
    assert!(healthy, "{report}");
    for check in ["entra-token", "marketplace-api", "webhook-signing-keys", "table", "usage-table"] {
        assert_eq!(verdict_of(&report, check), Some(Verdict::Pass), "{check}: {report}");
    }
    assert_eq!(verdict_of(&report, "secret-age"), Some(Verdict::Skipped), "no secret locally: {report}");

    // The IAM-only route, through the local stack's HTTP port.
    let answer = reqwest::get(format!("{}/admin/self-check", stack.url)).await.expect("an answer");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["healthy"], true, "{body}");
}

#[tokio::test]
async fn each_broken_credential_fails_its_check_with_what_to_do() {
    let stack = stack().await;
    for (fault, advice) in [
        (CredentialFault::NoServicePrincipal, "az ad sp create --id"),
        (CredentialFault::WrongSecret, "the client secret is wrong"),
        (CredentialFault::ExpiredSecret, "the client secret has expired"),
        (CredentialFault::UnknownApp, "technical configuration"),
    ] {
        stack.emulator.set_credential_fault(Some(fault)).await;
        let (report, healthy) = report(&stack.environment).await;
        println!("{fault:?}:\n{report}\n");
        assert!(!healthy, "{fault:?}: {report}");
        assert_eq!(verdict_of(&report, "entra-token"), Some(Verdict::Fail), "{fault:?}: {report}");
        assert_eq!(verdict_of(&report, "marketplace-api"), Some(Verdict::Skipped), "{fault:?}: {report}");
        assert!(report.contains(advice), "{fault:?}: {report}");
    }
    stack.emulator.set_credential_fault(None).await;

    // A token, but Microsoft refuses the app: not the offer's.
    stack.emulator.inject(Endpoint::ListSubscriptions, Fault::status(403), 10).await;
    let (report, healthy) = report(&stack.environment).await;
    println!("Microsoft answers 403:\n{report}\n");
    assert!(!healthy);
    assert_eq!(verdict_of(&report, "entra-token"), Some(Verdict::Pass), "{report}");
    assert_eq!(verdict_of(&report, "marketplace-api"), Some(Verdict::Fail), "{report}");
    assert!(report.contains("Partner Center"), "{report}");
}

#[tokio::test]
async fn unreachable_keys_and_a_missing_table_are_named() {
    let stack = stack().await;
    let broken = changed_settings(
        &stack.environment,
        &[],
        &[("WEBHOOK_JWKS_URL", "http://127.0.0.1:9/keys"), ("TABLE_NAME", "no-such-table")],
    );
    let (both, healthy) = report(&broken).await;
    println!("keys out of reach, no table:\n{both}\n");
    assert!(!healthy);
    assert_eq!(verdict_of(&both, "webhook-signing-keys"), Some(Verdict::Fail), "{both}");
    assert_eq!(verdict_of(&both, "table"), Some(Verdict::Fail), "{both}");
    assert!(both.contains("TABLE_NAME"), "{both}");
    assert_eq!(verdict_of(&both, "usage-table"), Some(Verdict::Pass), "the usage table is there: {both}");

    // Each table is checked on its own.
    let no_usage_table =
        changed_settings(&stack.environment, &[], &[("USAGE_TABLE_NAME", "no-such-usage-table")]);
    let (alone, healthy) = report(&no_usage_table).await;
    assert!(!healthy);
    assert_eq!(verdict_of(&alone, "table"), Some(Verdict::Pass), "{alone}");
    assert_eq!(verdict_of(&alone, "usage-table"), Some(Verdict::Fail), "{alone}");
    assert!(
        alone.contains("no-such-usage-table") || alone.contains("non-existent"),
        "DynamoDB's refusal: {alone}"
    );
}
