//! Auto-activated plans (Microsoft, 2026): the purchase bills at once and Microsoft sends a
//! `Subscribe` webhook; the publisher never calls Activate. The webhook records the subscription,
//! and a later visit to the landing page shows it active without a second activation.

use std::time::Duration;

use fulfillment::domain::SubscriptionStatus;
use fulfillment::store::ChangeSource;
use integration_tests::flows::{history, lifecycle_events, record, types};
use integration_tests::stack_options;
use local_stack::LocalStack;
use marketplace_emulator::Purchase;

#[tokio::test]
async fn an_auto_activated_purchase_is_recorded_from_its_subscribe_webhook_and_never_activated_again() {
    let stack = LocalStack::start(stack_options()).await.expect("the local stack starts");
    let bought = stack.emulator.purchase(Purchase::plan("team-auto").quantity(7)).await;

    let delivery = stack
        .emulator
        .wait_webhook(Duration::from_secs(15), |d| {
            d.subscription_id == bought.subscription_id && d.action == "Subscribe" && d.status.is_some()
        })
        .await
        .expect("a Subscribe webhook, answered");
    assert_eq!(delivery.status, Some(200), "{delivery:?}");
    let recorded = record(&stack, &bought.subscription_id).await;
    assert_eq!(recorded.status(), SubscriptionStatus::Subscribed);
    assert_eq!(recorded.subscription.quantity, Some(7));
    assert_eq!(recorded.subscription.plan_id.as_ref().map(|p| p.as_str()), Some("team-auto"));
    assert!(
        recorded.subscription.beneficiary.is_some() && recorded.subscription.term.is_some(),
        "{recorded:?}"
    );
    let by_webhook = history(&stack, &bought.subscription_id).await;
    assert_eq!(by_webhook.len(), 1, "recorded once: {by_webhook:?}");
    assert_eq!(by_webhook[0].source, ChangeSource::Webhook);

    // The buyer's "Configure account now" later: the page shows the subscription, active.
    let page = reqwest::get(stack.landing_url(&bought.token)).await.expect("landing");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("page");
    assert!(page.contains("Your subscription is active") && !page.contains("form_token"), "{page}");
    let activations =
        stack.emulator.requests().await.iter().filter(|r| r.path.ends_with("/activate")).count();
    assert_eq!(activations, 0, "an auto-activated plan is never activated by the publisher");

    // The product hears of it once: activated, from the webhook, before anyone landed.
    let events = lifecycle_events(&stack, &bought.subscription_id).await;
    assert_eq!(types(&events), ["SubscriptionActivated"], "{events:#?}");
    assert_eq!(events[0]["source"], "webhook");
    assert_eq!(events[0]["statusBefore"], serde_json::Value::Null);
    assert_eq!(events[0]["seats"], 7);
    assert_eq!(events[0]["planId"], "team-auto");
}
