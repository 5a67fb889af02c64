//! The fulfillment core: Microsoft's SaaS Fulfillment v2 from the publisher's side.
//!
//! Domain types and the lifecycle state machine are pure; the ports ([`store::SubscriptionStore`],
//! [`clock::Clock`]) are traits the use cases depend on; the adapters (DynamoDB) live beside them.
//! Nothing here knows about Lambda.

pub mod admin;
pub mod aws;
pub mod changes;
pub mod clock;
pub mod config;
pub mod domain;
pub mod emission;
pub mod events;
pub mod http;
pub mod identity;
pub mod lifecycle;
pub mod logging;
pub mod marketplace;
pub mod metering;
pub mod onboarding;
pub mod reconcile;
pub mod self_check;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod web;
pub mod webhook;
pub mod wiring;

/// An error with all its sources on one line, for one log entry.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
