//! The publisher's self-check, after a deployment or a credential rotation: can the functions get
//! an Entra ID token, call the Marketplace API as the offer's app, fetch the webhook's signing keys,
//! use the table, and is the secret fresh? One finding per check, each with what to do. The admin
//! API serves it (`GET /admin/self-check`) and the `self-check` command prints it.

use serde::Serialize;

use crate::domain::Timestamp;
use crate::identity::JwksCache;
use crate::marketplace::{Call, MarketplaceApi, MarketplaceError, TokenError};
use crate::store::usage::UsageStore;
use crate::store::{ListFilter, StoreError, SubscriptionStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    /// Not run: an earlier check it depends on failed.
    Skipped,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
    /// What to do (empty when nothing).
    pub advice: String,
}

impl Finding {
    fn new(check: &str, verdict: Verdict, detail: impl Into<String>, advice: impl Into<String>) -> Self {
        Self { check: check.to_owned(), verdict, detail: detail.into(), advice: advice.into() }
    }
}

/// Entra ID's client-credentials errors, in plain words.
pub fn entra_advice(error: &str) -> String {
    let advice = if error.contains("AADSTS7000229") {
        "the app has no service principal in the publisher tenant: create it with `az ad sp create --id <ENTRA_CLIENT_ID>` (or open the app once under Enterprise applications)"
    } else if error.contains("AADSTS7000215") {
        "the client secret is wrong: put the secret's value (not its id) into the Secrets Manager secret's ENTRA_CLIENT_SECRET"
    } else if error.contains("AADSTS7000222") {
        "the client secret has expired: add a new one to the app in Entra ID and rotate to it (docs/deploy.md, Rotating secrets)"
    } else if error.contains("AADSTS700027") {
        "Entra ID does not know the certificate, or the key does not match it: upload the certificate (ENTRA_CLIENT_CERTIFICATE) to the app's Certificates & secrets"
    } else if error.contains("AADSTS700024") {
        "the client assertion's time is off: check the clock of the machine that runs the function"
    } else if error.contains("AADSTS700021") || error.contains("AADSTS700023") {
        "the client assertion names the wrong audience or app: check ENTRA_AUTHORITY, ENTRA_TENANT_ID and ENTRA_CLIENT_ID"
    } else if error.contains("AADSTS700016") {
        "no such app in this tenant: ENTRA_CLIENT_ID and ENTRA_TENANT_ID must be the app and tenant of Partner Center's technical configuration"
    } else if error.contains("AADSTS90002") {
        "no such tenant: ENTRA_TENANT_ID must be the publisher tenant's id (a GUID)"
    } else {
        "see Entra ID's error above; check ENTRA_TENANT_ID, ENTRA_CLIENT_ID and the client secret"
    };
    advice.to_owned()
}

/// Entra ID and the Marketplace API in one call: one page of subscriptions needs a token first.
pub async fn marketplace(marketplace: &impl MarketplaceApi, call: &Call) -> [Finding; 2] {
    let token = "entra-token";
    let api = "marketplace-api";
    match marketplace.list_subscriptions(None, call).await {
        Ok(page) => [
            Finding::new(token, Verdict::Pass, "a token for the Marketplace API was issued", ""),
            Finding::new(
                api,
                Verdict::Pass,
                format!("listed {} subscriptions (one page)", page.subscriptions.len()),
                "",
            ),
        ],
        Err(MarketplaceError::Authentication(error)) => {
            let advice = match &error {
                TokenError::Rejected { error, .. } => entra_advice(error),
                _ => "Entra ID did not answer: try again; if it persists, check ENTRA_AUTHORITY and the network".into(),
            };
            [
                Finding::new(token, Verdict::Fail, crate::error_chain(&error), advice),
                Finding::new(api, Verdict::Skipped, "needs a token", ""),
            ]
        }
        Err(error @ MarketplaceError::Forbidden { .. }) => [
            Finding::new(token, Verdict::Pass, "a token for the Marketplace API was issued", ""),
            Finding::new(
                api,
                Verdict::Fail,
                crate::error_chain(&error),
                "Microsoft refused this app: ENTRA_CLIENT_ID must be the app id of the offer's technical configuration in Partner Center (and ENTRA_TENANT_ID its tenant)",
            ),
        ],
        Err(error) => [
            Finding::new(token, Verdict::Pass, "a token for the Marketplace API was issued", ""),
            Finding::new(
                api,
                if error.is_retryable() { Verdict::Warn } else { Verdict::Fail },
                crate::error_chain(&error),
                "Microsoft's API did not answer as expected: try again; check MARKETPLACE_API_BASE",
            ),
        ],
    }
}

/// Each configured credential on its own (a rotation's next secret must work before the current
/// one is removed): pass when Entra accepts it; a refused one is a warning while a later one
/// works, and a failure otherwise.
pub async fn credentials(marketplace: &impl MarketplaceApi, call: &Call) -> Vec<Finding> {
    let probes = marketplace.probe_credentials(call).await;
    let mut findings = Vec::with_capacity(probes.len());
    for (index, (name, result)) in probes.iter().enumerate() {
        let check = format!("credential:{name}");
        let later_works = probes[index + 1..].iter().any(|(_, r)| r.is_ok());
        findings.push(match result {
            Ok(()) => Finding::new(&check, Verdict::Pass, "Entra ID accepts it", ""),
            Err(error) if error.is_credential_refused() && later_works => Finding::new(
                &check,
                Verdict::Warn,
                crate::error_chain(error),
                format!(
                    "the functions fall back to the next credential; {}",
                    entra_advice(&error.to_string())
                ),
            ),
            Err(error) => Finding::new(
                &check,
                Verdict::Fail,
                crate::error_chain(error),
                entra_advice(&error.to_string()),
            ),
        });
    }
    findings
}

/// The webhook's signing keys (the publisher tenant's).
pub async fn signing_keys(keys: &JwksCache) -> Finding {
    let check = "webhook-signing-keys";
    match keys.refresh().await {
        Ok(0) => Finding::new(
            check,
            Verdict::Fail,
            "the key set is empty",
            "check ENTRA_AUTHORITY, ENTRA_TENANT_ID and WEBHOOK_JWKS_URL",
        ),
        Ok(count) => Finding::new(check, Verdict::Pass, format!("signing keys fetched: {count}"), ""),
        Err(error) => Finding::new(
            check,
            Verdict::Fail,
            crate::error_chain(&error),
            "every webhook would be answered 503: check ENTRA_AUTHORITY, ENTRA_TENANT_ID (a GUID) and WEBHOOK_JWKS_URL",
        ),
    }
}

/// The table: one read.
pub async fn table(store: &impl SubscriptionStore) -> Finding {
    let read = store.list(&ListFilter::default(), None, 1).await.map(drop);
    table_finding(
        "table",
        read,
        "the table answers",
        "check TABLE_NAME and the function's IAM policy (the template grants exactly what each function needs)",
    )
}

/// The usage table (metered billing): one read, of a subscription that does not exist.
pub async fn usage_table(store: &impl UsageStore, now: Timestamp) -> Finding {
    table_finding(
        "usage-table",
        store.usage_of(&crate::domain::SubscriptionId::nobody(), now, now).await.map(drop),
        "the usage table answers",
        "usage reports would be refused: check USAGE_TABLE_NAME and the function's IAM policy",
    )
}

/// A table's read: passed, not answered (a warning: try again), or refused (what to check).
fn table_finding(check: &str, read: Result<(), StoreError>, answers: &str, refused: &str) -> Finding {
    match read {
        Ok(()) => Finding::new(check, Verdict::Pass, answers, ""),
        Err(error @ StoreError::Unavailable { .. }) => Finding::new(
            check,
            Verdict::Warn,
            crate::error_chain(&error),
            "DynamoDB did not answer: try again",
        ),
        Err(error) => Finding::new(check, Verdict::Fail, crate::error_chain(&error), refused),
    }
}

/// Entra ID client secrets last at most two years; warn well before.
const SECRET_WARN_AFTER: chrono::Duration = chrono::Duration::days(540);

/// The secret's age: `changed` is when the Secrets Manager secret last changed (`None`: no secret
/// configured), or why it could not be read.
pub fn secret_age(changed: Result<Option<Timestamp>, String>, now: Timestamp) -> Finding {
    let check = "secret-age";
    match changed {
        Ok(None) => Finding::new(
            check,
            Verdict::Skipped,
            "no MARKETPLACE_SECRET_ARN: the credentials come from the environment",
            "",
        ),
        Ok(Some(at)) => {
            let days = (now - at).num_days();
            if now - at > SECRET_WARN_AFTER {
                Finding::new(
                    check,
                    Verdict::Warn,
                    format!("the secret last changed {days} days ago"),
                    "Entra ID client secrets expire after at most 24 months: check its expiry under the app's Certificates & secrets and rotate it (docs/deploy.md)",
                )
            } else {
                Finding::new(check, Verdict::Pass, format!("the secret last changed {days} days ago"), "")
            }
        }
        Err(reason) => Finding::new(
            check,
            Verdict::Warn,
            reason,
            "the function may lack secretsmanager:DescribeSecret on the secret",
        ),
    }
}

/// Whether nothing failed.
pub fn healthy(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.verdict != Verdict::Fail)
}

/// One line per check: `pass  table  the table answers`, with what to do after a dash.
pub fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            let verdict = serde_json::to_value(f.verdict).ok().and_then(|v| v.as_str().map(str::to_owned));
            let mut line = format!("{:<7} {:<21} {}", verdict.unwrap_or_default(), f.check, f.detail);
            if !f.advice.is_empty() {
                line.push_str(" -- ");
                line.push_str(&f.advice);
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}
