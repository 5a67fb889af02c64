//! The shared, in-memory state of one emulator instance.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;

use crate::config::{EmulatorConfig, SigninUser};
use crate::faults::{Endpoint, Fault, IdTokenFault, Quirk, WebhookFaults};
use crate::keys::Signer;
use crate::model::{Op, Sub};
use crate::signin::{AuthCode, SigninRecord};
use crate::{RecordedRequest, WebhookDelivery};

/// Everything the handlers, timers and the `Emulator` handle share.
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    /// "http://127.0.0.1:PORT".
    pub base_url: String,
    pub signer: Signer,
    /// A second key, never published, for the `UnpublishedKey` ID-token fault (made on first use).
    pub rogue_signer: std::sync::OnceLock<Option<Signer>>,
    pub state: Mutex<State>,
    /// Bumped on every state change, so waiters re-check without polling.
    pub changes: watch::Sender<u64>,
    /// Becomes `true` when the emulator shuts down; background tasks stop.
    pub shutdown: watch::Receiver<bool>,
    /// Client for webhook deliveries.
    pub http: reqwest::Client,
    pub tokens_issued: AtomicU64,
    /// Object id of the marketplace service principal in the publisher tenant (webhook `oid`).
    pub marketplace_oid: String,
    /// Random part of continuation tokens (contains `+` and `/`, so decoding mistakes show).
    pub paging_key: String,
}

impl Shared {
    /// Locks the state; a poisoned lock is recovered (the state stays usable).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes everything waiting for a change.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// `{base}/api`.
    pub(crate) fn api_base(&self) -> String {
        format!("{}/api", self.base_url)
    }

    /// Sleeps for `d` unless the emulator shuts down first; returns `false` on shutdown.
    pub(crate) async fn sleep(&self, d: std::time::Duration) -> bool {
        let mut rx = self.shutdown.clone();
        if *rx.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = rx.wait_for(|down| *down) => false,
        }
    }
}

/// A purchase token's target and expiry.
pub(crate) struct PurchaseToken {
    pub subscription_id: String,
    pub expires: DateTime<Utc>,
}

/// An accepted usage event, for duplicate detection and `GET /usageEvents`.
#[derive(Debug, Clone)]
pub(crate) struct UsageRecord {
    pub resource_id: String,
    pub dimension: String,
    pub plan_id: String,
    pub offer_id: String,
    pub quantity: f64,
    pub effective_start: DateTime<Utc>,
    /// The 200 body returned for it (re-used in the 409's `acceptedMessage`).
    pub accepted: Value,
}

/// A webhook waiting to be delivered (held by the reorder fault).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub payload: Value,
    pub operation_id: String,
    pub subscription_id: String,
    pub action: String,
    pub partner: bool,
    pub ackable: bool,
}

/// The mutable state.
#[derive(Default)]
pub(crate) struct State {
    /// Keyed by lowercase id.
    pub subs: HashMap<String, Sub>,
    /// Lowercase ids in creation order (stable paging).
    pub order: Vec<String>,
    /// Keyed by lowercase operation id.
    pub ops: HashMap<String, Op>,
    pub purchase_tokens: HashMap<String, PurchaseToken>,
    /// Access token → expiry.
    pub access_tokens: HashMap<String, DateTime<Utc>>,
    /// (resource, dimension, hour) → index into `usage`.
    pub usage_index: HashMap<(String, String, i64), usize>,
    pub usage: Vec<UsageRecord>,
    pub faults: HashMap<Endpoint, VecDeque<Fault>>,
    pub webhook_faults: WebhookFaults,
    pub held_webhooks: Vec<Outgoing>,
    pub quirks: HashSet<Quirk>,
    pub deliveries: Vec<WebhookDelivery>,
    pub requests: Vec<RecordedRequest>,
    /// The user the authorize endpoint signs in.
    pub signin_user: SigninUser,
    /// Lowercase ids of every tenant a sign-in user has had (they "exist" for discovery).
    pub signin_tenants: HashSet<String>,
    /// Authorization codes issued (redeemed ones stay, marked, to tell "already redeemed").
    pub auth_codes: HashMap<String, AuthCode>,
    /// Every authorize request, in arrival order.
    pub signins: Vec<SigninRecord>,
    pub id_token_fault: Option<IdTokenFault>,
    /// The client-credentials grant fails with this Entra error while set.
    pub credential_fault: Option<crate::faults::CredentialFault>,
    /// Lowercase resource id → how the Metering API answers its events while set.
    pub metering_faults: HashMap<String, crate::faults::MeteringFault>,
}

impl State {
    /// The subscription with this id (any case).
    pub(crate) fn sub(&self, id: &str) -> Option<&Sub> {
        self.subs.get(&id.to_ascii_lowercase())
    }

    /// The subscription with this id (any case), mutable.
    pub(crate) fn sub_mut(&mut self, id: &str) -> Option<&mut Sub> {
        self.subs.get_mut(&id.to_ascii_lowercase())
    }

    /// Inserts or replaces a subscription, keeping creation order.
    pub(crate) fn insert_sub(&mut self, sub: Sub) {
        let key = sub.id.to_ascii_lowercase();
        if self.subs.insert(key.clone(), sub).is_none() {
            self.order.push(key);
        }
    }

    /// The operation with this id belonging to this subscription.
    pub(crate) fn op(&self, subscription_id: &str, operation_id: &str) -> Option<&Op> {
        self.ops
            .get(&operation_id.to_ascii_lowercase())
            .filter(|op| op.subscription_id.eq_ignore_ascii_case(subscription_id))
    }

    /// Whether any operation of the subscription is still in progress (the pending-operation lock).
    pub(crate) fn is_locked(&self, subscription_id: &str) -> bool {
        self.ops.values().any(|op| {
            op.status == crate::model::OpStatus::InProgress
                && op.subscription_id.eq_ignore_ascii_case(subscription_id)
        })
    }

    /// Makes `user` the one signed in from now on (its tenant becomes known).
    pub(crate) fn set_signin_user(&mut self, user: SigninUser) {
        self.signin_tenants.insert(user.tid.to_ascii_lowercase());
        self.signin_user = user;
    }

    /// Takes the next queued fault for an endpoint, if any.
    pub(crate) fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let queue = self.faults.get_mut(&endpoint)?;
        let fault = queue.pop_front();
        if queue.is_empty() {
            self.faults.remove(&endpoint);
        }
        fault
    }
}
