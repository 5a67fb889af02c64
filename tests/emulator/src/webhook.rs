//! Webhook deliveries: signed POSTs to the publisher, retries, faults and the record of attempts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::WebhookDelivery;
use crate::config::{MARKETPLACE_RESOURCE_ID, TokenVersion};
use crate::engine;
use crate::faults::Quirk;
use crate::model::{Op, Source, guid};
use crate::state::{Outgoing, Shared};

/// The webhook for an operation, with `status` as sent and the subscription snapshot.
pub(crate) fn outgoing(op: &Op, status: &str, subscription: Value, quirks: &HashSet<Quirk>) -> Outgoing {
    Outgoing {
        payload: op.webhook_json(status, subscription, quirks),
        operation_id: op.id.clone(),
        subscription_id: op.subscription_id.clone(),
        action: op.action.as_str().to_string(),
        partner: op.source == Source::Partner,
        ackable: op.source == Source::Azure && op.action.is_ackable(),
    }
}

/// The claims of the Entra access token Microsoft sends with a webhook (docs/marketplace-api.md#webhook-authentication).
pub(crate) fn webhook_claims(shared: &Shared) -> Value {
    let cfg = &shared.config;
    let tid = &cfg.publisher_tenant_id;
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "aud": cfg.publisher_app_id,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "aio": guid(),
        "idp": format!("https://sts.windows.net/{tid}/"),
        "oid": shared.marketplace_oid,
        "rh": "0.AAAA.emulator.",
        "sub": shared.marketplace_oid,
        "tid": tid,
        "uti": guid().replace('-', ""),
    });
    if let Value::Object(map) = &mut claims {
        match cfg.webhook_token_version {
            TokenVersion::V1 => {
                map.insert("iss".into(), json!(format!("https://sts.windows.net/{tid}/")));
                map.insert("ver".into(), json!("1.0"));
                map.insert("appid".into(), json!(MARKETPLACE_RESOURCE_ID));
                map.insert("appidacr".into(), json!("2"));
            }
            TokenVersion::V2 => {
                map.insert("iss".into(), json!(format!("https://login.microsoftonline.com/{tid}/v2.0")));
                map.insert("ver".into(), json!("2.0"));
                map.insert("azp".into(), json!(MARKETPLACE_RESOURCE_ID));
                map.insert("azpacr".into(), json!("2"));
            }
        }
    }
    claims
}

fn record(shared: &Shared, delivery: WebhookDelivery) {
    shared.lock().deliveries.push(delivery);
    shared.changed();
}

fn base_record(shared: &Shared, out: &Outgoing) -> WebhookDelivery {
    WebhookDelivery {
        operation_id: out.operation_id.clone(),
        subscription_id: out.subscription_id.clone(),
        action: out.action.clone(),
        url: shared.config.webhook_url.clone(),
        payload: out.payload.clone(),
        jwt: None,
        attempt: 0,
        duplicate: false,
        status: None,
        error: None,
        dropped: false,
        at: Utc::now(),
    }
}

/// Sends (or holds, drops, delays, duplicates) a webhook according to the current faults.
pub(crate) fn dispatch(shared: &Arc<Shared>, out: Outgoing) {
    let (faults, url) = {
        let state = shared.lock();
        (state.webhook_faults.clone(), shared.config.webhook_url.clone())
    };
    if faults.drop || (faults.drop_partner_only && out.partner) {
        record(shared, WebhookDelivery { dropped: true, ..base_record(shared, &out) });
        if out.ackable {
            engine::start_ack_window(shared, &out.operation_id);
        }
        return;
    }
    let Some(url) = url else {
        record(
            shared,
            WebhookDelivery { error: Some("no webhook URL configured".into()), ..base_record(shared, &out) },
        );
        if out.ackable {
            engine::start_ack_window(shared, &out.operation_id);
        }
        return;
    };
    if faults.reorder {
        shared.lock().held_webhooks.push(out);
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if let Some(delay) = faults.delay
            && !shared.sleep(delay).await
        {
            return;
        }
        deliver_copies(&shared, &url, &out, faults.duplicates).await;
    });
}

/// Sends held webhooks in reverse order, one after another.
pub(crate) fn flush(shared: &Arc<Shared>) -> usize {
    let (held, faults) = {
        let mut state = shared.lock();
        (std::mem::take(&mut state.held_webhooks), state.webhook_faults.clone())
    };
    let Some(url) = shared.config.webhook_url.clone() else { return 0 };
    let count = held.len();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        for out in held.into_iter().rev() {
            if let Some(delay) = faults.delay
                && !shared.sleep(delay).await
            {
                return;
            }
            deliver_copies(&shared, &url, &out, faults.duplicates).await;
        }
    });
    count
}

async fn deliver_copies(shared: &Arc<Shared>, url: &str, out: &Outgoing, duplicates: u32) {
    if out.ackable {
        engine::start_ack_window(shared, &out.operation_id);
    }
    for copy in 0..=duplicates {
        if *shared.shutdown.borrow() {
            return;
        }
        deliver(shared, url, out, copy > 0).await;
    }
}

/// One delivery with retries on 5xx, 408, 429, timeouts and connection errors.
async fn deliver(shared: &Arc<Shared>, url: &str, out: &Outgoing, duplicate: bool) {
    let retries = shared.config.webhook_retries;
    let mut backoff = shared.config.webhook_retry_backoff;
    for attempt in 1..=retries.saturating_add(1) {
        let jwt = shared.signer.sign(&webhook_claims(shared));
        let result = shared
            .http
            .post(url)
            .timeout(shared.config.webhook_timeout)
            .header("content-type", "application/json")
            .bearer_auth(&jwt)
            .body(out.payload.to_string())
            .send()
            .await;
        let mut delivery = WebhookDelivery {
            jwt: Some(jwt),
            attempt,
            duplicate,
            at: Utc::now(),
            ..base_record(shared, out)
        };
        let retry = match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                delivery.status = Some(status);
                status >= 500 || status == 408 || status == 429
            }
            Err(e) => {
                delivery.error = Some(error_chain(e));
                true
            }
        };
        record(shared, delivery);
        if let Ok(response) = &result {
            let status = response.status();
            if status.is_client_error() && !retry && out.ackable {
                engine::reject_by_webhook(shared, &out.operation_id, status.as_u16());
            }
        }
        if !retry || attempt > retries {
            return;
        }
        if !shared.sleep(backoff).await {
            return;
        }
        backoff = backoff.saturating_mul(2).min(Duration::from_secs(60));
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
