//! The self-check's pure parts: Entra's errors in plain words, the secret's age, the report.

use chrono::{Duration, TimeZone, Utc};
use fulfillment::self_check::{Finding, Verdict, entra_advice, healthy, render, secret_age};

#[test]
fn each_entra_error_gets_its_own_advice() {
    let cases = [
        ("AADSTS7000229: missing service principal", "az ad sp create"),
        ("AADSTS7000215: Invalid client secret provided", "secret is wrong"),
        ("AADSTS7000222: expired", "has expired"),
        ("AADSTS700016: Application not found", "technical configuration"),
        ("AADSTS90002: Tenant not found", "ENTRA_TENANT_ID"),
        ("AADSTS50000: something new", "check ENTRA_TENANT_ID, ENTRA_CLIENT_ID"),
    ];
    let mut seen = std::collections::HashSet::new();
    for (error, expected) in cases {
        let advice = entra_advice(error);
        assert!(advice.contains(expected), "{error}: {advice}");
        assert!(seen.insert(advice), "{error}: the same advice as another error");
    }
}

#[test]
fn a_secret_is_flagged_well_before_entra_expires_it() {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("time");
    assert_eq!(secret_age(Ok(Some(now - Duration::days(30))), now).verdict, Verdict::Pass);
    let old = secret_age(Ok(Some(now - Duration::days(600))), now);
    assert_eq!(old.verdict, Verdict::Warn);
    assert!(old.advice.contains("rotate"), "{old:?}");
    assert_eq!(secret_age(Ok(None), now).verdict, Verdict::Skipped);
    assert_eq!(secret_age(Err("AccessDenied".into()), now).verdict, Verdict::Warn);
}

#[test]
fn the_report_has_one_line_per_check_and_only_a_failure_is_unhealthy() {
    let findings = vec![
        Finding {
            check: "table".into(),
            verdict: Verdict::Pass,
            detail: "the table answers".into(),
            advice: String::new(),
        },
        Finding {
            check: "secret-age".into(),
            verdict: Verdict::Warn,
            detail: "600 days".into(),
            advice: "rotate".into(),
        },
    ];
    let report = render(&findings);
    assert_eq!(report.lines().count(), 2, "{report}");
    assert!(
        report.lines().nth(1).is_some_and(|l| l.starts_with("warn") && l.ends_with("-- rotate")),
        "{report}"
    );
    assert!(healthy(&findings));
    let failed = [Finding { verdict: Verdict::Fail, ..findings[0].clone() }];
    assert!(!healthy(&failed));
}

#[test]
fn only_a_refused_credential_makes_the_next_one_worth_trying() {
    use fulfillment::marketplace::TokenError;
    let refused =
        |error: &str| TokenError::Rejected { status: 401, error: error.into() }.is_credential_refused();
    for code in ["AADSTS7000215", "AADSTS7000222", "AADSTS700027", "AADSTS700024"] {
        assert!(refused(&format!("invalid_client: {code}: ...")), "{code}");
    }
    for code in ["AADSTS700016", "AADSTS7000229", "AADSTS90002", "AADSTS1002012"] {
        assert!(!refused(&format!("unauthorized_client: {code}: ...")), "{code}: no credential would do");
    }
    assert!(!TokenError::DeadlineExceeded.is_credential_refused());
}
