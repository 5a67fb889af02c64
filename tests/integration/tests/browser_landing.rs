//! The landing page in a real browser (headless Chromium): the buyer sees plan and seats, presses
//! the button and sees the confirmation.

use std::time::Duration;

use fulfillment::domain::{SubscriptionId, SubscriptionStatus};
use fulfillment::store::SubscriptionStore;
use integration_tests::browser::Browser;
use local_stack::{LocalStack, Options};
use marketplace_emulator::Purchase;

const WAIT: Duration = Duration::from_secs(15);

async fn buy_and_confirm(options: Options, screenshot: &str) {
    let stack = LocalStack::start(options).await.expect("the local stack starts");
    let bought = stack.emulator.purchase(Purchase::plan("team-monthly").quantity(10)).await;
    let browser = Browser::start().await;

    browser.goto(&stack.landing_url(&bought.token)).await;
    browser.wait_for_text("Confirm your subscription", WAIT).await;
    let text = browser.text().await;
    assert!(text.contains("Team (monthly)"), "the plan is shown: {text}");
    assert!(text.contains("Seats") && text.contains("10"), "the seats are shown: {text}");
    browser.screenshot(&format!("target/screenshots/{screenshot}-landing.png")).await;

    browser.click("button[type=submit]").await;
    browser.wait_for_text("Your subscription is now active", WAIT).await;
    browser.screenshot(&format!("target/screenshots/{screenshot}-active.png")).await;
    let text = browser.text().await;
    browser.close().await;

    let id = SubscriptionId::parse(&bought.subscription_id).expect("id");
    let record = stack.store.get(&id).await.expect("read").expect("recorded");
    assert_eq!(record.status(), SubscriptionStatus::Subscribed, "{text}");
    assert_eq!(record.subscription.quantity, Some(10));
}

#[tokio::test]
async fn a_buyer_confirms_the_purchase_in_a_browser() {
    buy_and_confirm(integration_tests::stack_options(), "no-signin").await;
}

#[tokio::test]
async fn a_buyer_signs_in_then_confirms_in_a_browser() {
    let options = Options { signin: true, ..integration_tests::stack_options() };
    buy_and_confirm(options, "signin").await;
}
