//! The HTML the buyer sees: one small, accessible page per situation. Every value that comes from
//! outside is escaped.

use std::fmt::Write;

use crate::domain::{AadIdentifier, Plan, Subscription, SubscriptionStatus, Term, TermUnit};
use crate::identity::SignedInUser;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What every page shows around its content.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub product_name: &'a str,
    pub user: Option<&'a SignedInUser>,
}

/// The confirmation form of a pending subscription.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmForm<'a> {
    pub action: &'a str,
    pub subscription_id: &'a str,
    pub form_token: &'a str,
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f5f6f8;color:#1b1f24;line-height:1.5}\
header{background:#1b1f24;color:#fff;padding:.75rem 1.5rem;display:flex;justify-content:space-between;flex-wrap:wrap;gap:.5rem}\
main{max-width:42rem;margin:2rem auto;padding:1.5rem 2rem;background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002}\
h1{font-size:1.6rem;margin-top:0}dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1.5rem}dt{font-weight:600}dd{margin:0}\
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.5rem 1rem}\
button,.button{font:inherit;background:#0b5cad;color:#fff;border:0;border-radius:6px;padding:.6rem 1.2rem;cursor:pointer;text-decoration:none;display:inline-block}\
button:focus,.button:focus,a:focus{outline:3px solid #e0a800;outline-offset:2px}small{color:#555}";

fn page(frame: &Frame, title: &str, body: &str) -> String {
    let user = match frame.user {
        Some(user) => format!(
            "<span>Signed in as {}</span>",
            escape(user.name.as_deref().or(user.email.as_deref()).unwrap_or(&user.object_id))
        ),
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · {product}</title><style>{STYLE}</style></head>\
<body><header><strong>{product}</strong>{user}</header><main>\n<h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape(title),
        product = escape(frame.product_name),
    )
}

fn term_unit(unit: &TermUnit) -> String {
    match unit {
        TermUnit::P1M => "1 month".into(),
        TermUnit::P1Y => "1 year".into(),
        TermUnit::P2Y => "2 years".into(),
        TermUnit::P3Y => "3 years".into(),
        TermUnit::P4Y => "4 years".into(),
        TermUnit::P5Y => "5 years".into(),
        TermUnit::Unknown(raw) => raw.clone(),
    }
}

fn term(term: &Term) -> Option<String> {
    let unit = term.term_unit.as_ref().map(term_unit);
    let dates = match (term.start_date, term.end_date) {
        (Some(start), Some(end)) => {
            Some(format!("{} to {}", start.format("%-d %B %Y"), end.format("%-d %B %Y")))
        }
        _ => None,
    };
    match (unit, dates) {
        (Some(unit), Some(dates)) => Some(format!("{unit} ({dates})")),
        (Some(one), None) | (None, Some(one)) => Some(one),
        (None, None) => None,
    }
}

fn price(plan: &Plan, subscription: &Subscription) -> Option<String> {
    let unit = subscription.term.as_ref().and_then(|t| t.term_unit.as_ref());
    let terms = &plan.plan_components.as_ref()?.recurrent_billing_terms;
    let billing = terms.iter().find(|t| t.term_unit.as_ref() == unit).or(terms.first())?;
    let per = match billing.term_unit.as_ref() {
        Some(TermUnit::P1M) => "month".to_owned(),
        Some(TermUnit::P1Y) => "year".to_owned(),
        Some(other) => term_unit(other),
        None => "term".to_owned(),
    };
    let seat = if plan.is_price_per_seat { " per seat" } else { "" };
    Some(format!("{} {:.2}{seat} per {per}", billing.currency.as_deref().unwrap_or(""), billing.price?))
}

/// Who an identity is; e-mail addresses only for a signed-in visitor (without sign-in, anyone
/// holding the page's link would read them).
fn who(identity: &AadIdentifier, signed_in: bool) -> String {
    let email = identity.email_id.as_ref().filter(|_| signed_in);
    match (email, &identity.tenant_id) {
        (Some(email), Some(tenant)) => {
            format!("{} <small>(tenant {})</small>", escape(email), escape(tenant))
        }
        (Some(email), None) => escape(email),
        (None, Some(tenant)) => format!("tenant {}", escape(tenant)),
        (None, None) => "unknown".into(),
    }
}

/// The purchase as a definition list: offer, plan, seats, term, price, purchaser and beneficiary.
fn details(subscription: &Subscription, plan: Option<&Plan>, signed_in: bool) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    if let Some(name) = &subscription.name {
        rows.push(("Subscription", escape(name)));
    }
    if let Some(offer) = &subscription.offer_id {
        rows.push(("Offer", escape(offer)));
    }
    let plan_id = subscription.plan_id.as_ref().map(|p| p.as_str()).unwrap_or("unknown");
    let plan_name = match plan.and_then(|p| p.display_name.as_deref()) {
        Some(name) => format!("{} <small>({})</small>", escape(name), escape(plan_id)),
        None => escape(plan_id),
    };
    rows.push(("Plan", plan_name));
    rows.push((
        "Seats",
        subscription.quantity.map_or_else(|| "Flat rate (no seat count)".to_owned(), |q| q.to_string()),
    ));
    if let Some(term) = subscription.term.as_ref().and_then(term) {
        rows.push(("Term", escape(&term)));
    }
    if let Some(price) = plan.and_then(|p| price(p, subscription)) {
        rows.push(("Price", escape(&price)));
    }
    if let Some(purchaser) = &subscription.purchaser {
        rows.push(("Purchased by", who(purchaser, signed_in)));
    }
    if let Some(beneficiary) = &subscription.beneficiary {
        rows.push(("For", who(beneficiary, signed_in)));
    }
    let mut html = String::from("<dl>");
    for (term, value) in rows {
        let _ = write!(html, "<dt>{term}</dt><dd>{value}</dd>");
    }
    html.push_str("</dl>");
    if subscription.bought_for_someone_else() {
        html.push_str(
            "<p class=\"note\">This subscription was bought on behalf of another organisation, for example by \
a reseller (Cloud Solution Provider). It is set up for the organisation named under <em>For</em>.</p>",
        );
    }
    if subscription.is_free_trial {
        html.push_str("<p class=\"note\">This is a free trial: nothing is charged until it ends.</p>");
    }
    html
}

/// The confirmation form: a sealed token bound to the subscription, and one button.
fn confirm_form(form: &ConfirmForm) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"subscription_id\" value=\"{id}\">\
<input type=\"hidden\" name=\"form_token\" value=\"{token}\"><button type=\"submit\">Confirm and activate</button></form>",
        action = escape(form.action),
        id = escape(form.subscription_id),
        token = escape(form.form_token),
    )
}

/// The landing page for a subscription in any status.
pub fn landing(
    frame: &Frame,
    subscription: &Subscription,
    plan: Option<&Plan>,
    confirm: Option<ConfirmForm>,
) -> String {
    let details = details(subscription, plan, frame.user.is_some());
    let status = subscription.status.clone().unwrap_or_else(|| SubscriptionStatus::Unknown(String::new()));
    let (title, body) = match (&status, confirm) {
        (SubscriptionStatus::PendingFulfillmentStart | SubscriptionStatus::NotStarted, Some(form)) => (
            "Confirm your subscription",
            format!(
                "<p>Thank you for your purchase. Please check the details below and confirm.</p>{details}\
<h2>What happens next</h2><p>When you confirm, we set up your account and activate the subscription \
with Microsoft. Billing starts from activation.</p>{}",
                confirm_form(&form)
            ),
        ),
        (SubscriptionStatus::PendingFulfillmentStart | SubscriptionStatus::NotStarted, None) => (
            "Your subscription is being set up",
            format!(
                "{details}<p>We are setting up your account. Reopen this page from the marketplace in a moment.</p>"
            ),
        ),
        (SubscriptionStatus::Subscribed, _) => (
            "Your subscription is active",
            format!(
                "{details}<p>Everything is ready. Sign in to {} to start working.</p>",
                escape(frame.product_name)
            ),
        ),
        (SubscriptionStatus::Suspended, _) => (
            "Your subscription is suspended",
            format!(
                "{details}<p class=\"note\">Microsoft suspended this subscription, usually because a payment \
failed. Access is paused but all your data is kept. Update the payment method in the Azure portal or the \
Microsoft 365 admin center to restore access.</p>"
            ),
        ),
        (SubscriptionStatus::Unsubscribed, _) => (
            "This subscription was cancelled",
            format!(
                "{details}<p>This subscription is no longer active, so it cannot be set up again. Your data is \
kept for at least 7 days after cancellation. To use {} again, buy a new subscription in the marketplace.</p>",
                escape(frame.product_name)
            ),
        ),
        (SubscriptionStatus::Unknown(raw), _) => (
            "Subscription status unknown",
            format!(
                "{details}<p>Microsoft reports the status <code>{}</code>, which we do not know yet. \
Please contact support.</p>",
                escape(raw)
            ),
        ),
    };
    page(frame, title, &body)
}

/// After the confirmation form.
pub fn activated(
    frame: &Frame,
    subscription: &Subscription,
    plan: Option<&Plan>,
    now: bool,
    product_url: Option<&str>,
) -> String {
    let lead = if now { "Your subscription is now active." } else { "Your subscription was already active." };
    let next = match product_url {
        Some(url) => format!(
            "<p><a class=\"button\" href=\"{}\">Go to {}</a></p>",
            escape(url),
            escape(frame.product_name)
        ),
        None => String::new(),
    };
    page(
        frame,
        "Your subscription is active",
        &format!("<p>{lead}</p>{}{next}", details(subscription, plan, frame.user.is_some())),
    )
}

/// A missing, malformed, expired or unknown purchase token.
pub fn invalid_link(frame: &Frame) -> String {
    page(
        frame,
        "This link is no longer valid",
        "<p>The link you followed is incomplete or has expired (links from the marketplace are valid for \
24 hours).</p><p>To get a new one, open your subscription again from where you bought it:</p><ul>\
<li>in the <strong>Azure portal</strong>, under <em>SaaS</em> (Software as a Service), select the subscription \
and then <em>Open SaaS Account on publisher's site</em>;</li><li>in the <strong>Microsoft 365 admin \
center</strong>, under <em>Billing</em> &gt; <em>Your products</em>, select the subscription and then \
<em>Configure account</em> or <em>Manage account</em>.</li></ul>",
    )
}

/// Microsoft, Entra ID or our store did not answer in time: nothing is lost, try again.
pub fn unavailable(frame: &Frame, retry_url: &str) -> String {
    page(
        frame,
        "Please try again in a moment",
        &format!(
            "<p>We could not look up your subscription just now: a service it depends on did not answer \
in time. Nothing is lost.</p><p><a class=\"button\" href=\"{}\">Try again</a></p>",
            escape(retry_url)
        ),
    )
}

/// Activation did not finish (Microsoft or our store did not answer in time); the same form,
/// freshly signed, to retry: a second press activates once.
pub fn confirm_again(frame: &Frame, form: ConfirmForm) -> String {
    page(
        frame,
        "Please confirm again",
        &format!(
            "<p>We could not finish activating your subscription just now: a service it depends on did \
not answer in time. Nothing is lost: confirm again, and it is activated once.</p>{}",
            confirm_form(&form)
        ),
    )
}

/// The confirmation form is forged, expired, or for another subscription.
pub fn form_rejected(frame: &Frame) -> String {
    page(
        frame,
        "This confirmation has expired",
        "<p>For your security the confirmation form is valid for a limited time. Please open the \
subscription again from the marketplace and confirm once more.</p>",
    )
}

/// Activation is not possible in this status (cancelled, suspended).
pub fn not_activatable(frame: &Frame, status: &SubscriptionStatus) -> String {
    let reason = match status {
        SubscriptionStatus::Unsubscribed => "It was cancelled, so it cannot be activated again. Buy a new subscription in the marketplace to continue.".to_owned(),
        SubscriptionStatus::Suspended => "It is suspended by Microsoft, usually because a payment failed. Update the payment method in the Azure portal or the Microsoft 365 admin center.".to_owned(),
        other => format!("Its status is {}.", escape(other.as_str())),
    };
    page(frame, "This subscription cannot be activated", &format!("<p>{reason}</p>"))
}

/// Anything else that went wrong, without internals.
pub fn problem(frame: &Frame, title: &str, message: &str) -> String {
    page(frame, title, &format!("<p>{}</p>", escape(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        let mut subscription = Subscription::new(crate::domain::SubscriptionId::parse("s").expect("id"));
        subscription.name = Some("<img src=x onerror=alert(1)>".into());
        subscription.status = Some(SubscriptionStatus::Subscribed);
        let html = landing(&Frame { product_name: "P", user: None }, &subscription, None, None);
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }

    /// Without sign-in, whoever holds the page's link sees it: no e-mail address is shown, only
    /// the tenants. A signed-in visitor sees the addresses.
    #[test]
    fn the_purchasers_and_beneficiarys_addresses_are_shown_only_to_a_signed_in_visitor() {
        let mut subscription = Subscription::new(crate::domain::SubscriptionId::parse("s").expect("id"));
        subscription.status = Some(SubscriptionStatus::Subscribed);
        let identity = |email: &str, tenant: &str| crate::domain::AadIdentifier {
            email_id: Some(email.into()),
            tenant_id: Some(tenant.into()),
            ..Default::default()
        };
        subscription.purchaser = Some(identity("buyer@reseller.example", "tenant-r"));
        subscription.beneficiary = Some(identity("ops@fabrikam.example", "tenant-f"));
        let anonymous = landing(&Frame { product_name: "P", user: None }, &subscription, None, None);
        assert!(!anonymous.contains("@"), "{anonymous}");
        assert!(anonymous.contains("tenant-r") && anonymous.contains("tenant-f"), "{anonymous}");
        let user =
            SignedInUser { name: None, email: None, object_id: "u".into(), tenant_id: "tenant-f".into() };
        let signed_in = landing(&Frame { product_name: "P", user: Some(&user) }, &subscription, None, None);
        assert!(signed_in.contains("buyer@reseller.example") && signed_in.contains("ops@fabrikam.example"));
        assert!(
            !activated(&Frame { product_name: "P", user: None }, &subscription, None, false, None)
                .contains("@")
        );
    }
}
