//! The subscription life cycle: purchases, activation, changes, operations and their timers.
//!
//! Used by the HTTP handlers (publisher side) and by the `Emulator` methods and control API
//! (customer side). Every rule failure is a [`Reject`]; nothing here panics on input.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::PlanSpec;
use crate::model::{AadIdentifier, Action, Change, Op, OpStatus, Source, Sub, SubStatus, guid};
use crate::state::{PurchaseToken, Shared, State};
use crate::webhook;
use crate::{OperationHandle, Purchase, Purchased};

/// Largest quantity the API accepts at all.
pub(crate) const MAX_QUANTITY: i64 = 1_000_000;

/// Why a request or customer action was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reject {
    /// 400 with `{"code":code,"message":…,"target":…,"details":[…]}`.
    BadRequest { code: &'static str, message: String, target: String },
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 500 (`UnexpectedError`).
    Internal(String),
}

impl Reject {
    pub(crate) fn bad(message: impl Into<String>, target: &str) -> Self {
        Self::BadRequest { code: "BadArgument", message: message.into(), target: target.into() }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Self::BadRequest { message, .. }
            | Self::NotFound(message)
            | Self::Conflict(message)
            | Self::Internal(message) => message.clone(),
        }
    }
}

/// A requested plan or quantity change, already syntax-checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChangeRequest {
    Plan(String),
    Quantity(i64),
}

/// A fresh purchase token: long, random, always containing `+` and `/`.
pub(crate) fn new_purchase_token() -> String {
    use base64::Engine;
    use rand::RngExt;
    let mut bytes = [0u8; 96];
    rand::fill(&mut bytes);
    let mut token: Vec<char> = base64::engine::general_purpose::STANDARD.encode(bytes).chars().collect();
    let mut rng = rand::rng();
    if !token.contains(&'+') {
        let i = rng.random_range(0..token.len());
        token[i] = '+';
    }
    if !token.contains(&'/') {
        let mut i = rng.random_range(0..token.len());
        if token[i] == '+' {
            i = (i + 1) % token.len();
        }
        token[i] = '/';
    }
    token.into_iter().collect()
}

fn issue_token(
    shared: &Shared,
    state: &mut State,
    subscription_id: &str,
    now: DateTime<Utc>,
    fixed: Option<String>,
) -> String {
    let token = fixed.unwrap_or_else(new_purchase_token);
    let ttl =
        chrono::Duration::from_std(shared.config.purchase_token_ttl).unwrap_or(chrono::Duration::days(1));
    state.purchase_tokens.insert(
        token.clone(),
        PurchaseToken { subscription_id: subscription_id.to_string(), expires: now + ttl },
    );
    token
}

/// Creates a `PendingFulfillmentStart` subscription (no webhook, as on Microsoft's side).
pub(crate) fn purchase(shared: &Arc<Shared>, p: Purchase) -> Result<Purchased, Reject> {
    let plan = shared.config.plan(&p.offer_id, &p.plan_id).ok_or_else(|| {
        Reject::bad(format!("plan {}/{} is not in the catalog", p.offer_id, p.plan_id), "planId")
    })?;
    let quantity = if plan.is_price_per_seat {
        let q = p.quantity.unwrap_or(plan.min_quantity.unwrap_or(1));
        check_limits(plan, i64::from(q))?;
        Some(q)
    } else {
        None
    };
    if p.is_free_trial && !plan.has_free_trials {
        return Err(Reject::bad(format!("plan {} has no free trial", plan.plan_id), "isFreeTrial"));
    }
    let now = Utc::now();
    let beneficiary_tenant = p.beneficiary_tenant_id.clone().unwrap_or_else(guid);
    let purchaser_tenant = p.purchaser_tenant_id.clone().unwrap_or_else(|| beneficiary_tenant.clone());
    let reseller = !purchaser_tenant.eq_ignore_ascii_case(&beneficiary_tenant);
    let beneficiary_email = p.beneficiary_email.clone().unwrap_or_else(|| "admin@fabrikam.example".into());
    let beneficiary_oid = guid();
    let beneficiary = AadIdentifier {
        email_id: Some(beneficiary_email.clone()),
        object_id: Some(beneficiary_oid.clone()),
        tenant_id: Some(beneficiary_tenant),
        puid: Some(format!("1003{:012}", rand::random::<u64>() % 1_000_000_000_000)),
    };
    let purchaser = if reseller {
        AadIdentifier {
            email_id: Some(p.purchaser_email.clone().unwrap_or_else(|| "partner@reseller.example".into())),
            object_id: Some(guid()),
            tenant_id: Some(purchaser_tenant),
            puid: None,
        }
    } else {
        AadIdentifier {
            email_id: p.purchaser_email.clone().or(Some(beneficiary_email)),
            ..beneficiary.clone()
        }
    };
    let allowed = if reseller {
        vec!["Read".to_string()]
    } else {
        vec!["Read".into(), "Update".into(), "Delete".into()]
    };
    let id = p.subscription_id.clone().unwrap_or_else(guid);
    let sub = Sub {
        id: id.clone(),
        publisher_id: shared.config.publisher_id.clone(),
        offer_id: p.offer_id.clone(),
        name: p.name.clone().unwrap_or_else(|| format!("{} subscription", plan.display_name)),
        status: SubStatus::PendingFulfillmentStart,
        beneficiary,
        purchaser,
        plan_id: plan.plan_id.clone(),
        quantity,
        term_start: None,
        term_end: None,
        term_unit: plan.term_unit.clone(),
        auto_renew: p.auto_renew,
        is_test: p.is_test,
        is_free_trial: p.is_free_trial,
        allowed_customer_operations: allowed,
        sandbox_type: if p.csp_sandbox { "Csp".into() } else { "None".into() },
        session_mode: if p.dry_run { "DryRun".into() } else { "None".into() },
        created: now,
        last_modified: now,
        purchased_plan_id: plan.plan_id.clone(),
        purchased_quantity: quantity,
        unsubscribed_at: None,
    };
    let auto_activate = plan.auto_activate;
    let mut sub = sub;
    if auto_activate {
        // Billing starts with the purchase; Microsoft tells the publisher with a webhook.
        sub.status = SubStatus::Subscribed;
        sub.start_term(now);
    }
    let mut state = shared.lock();
    if state.sub(&id).is_some() {
        return Err(Reject::Conflict(format!("subscription {id} already exists")));
    }
    let quirks = state.quirks.clone();
    let subscribe = auto_activate.then(|| {
        let op = new_op(
            &sub,
            Action::Subscribe,
            Source::Azure,
            OpStatus::Succeeded,
            Change::Nothing,
            sub.plan_id.clone(),
            sub.quantity,
        );
        let out = webhook::outgoing(&op, "Succeeded", sub.to_json(&quirks), &quirks);
        (op, out)
    });
    state.insert_sub(sub);
    let token = issue_token(shared, &mut state, &id, now, p.token.clone());
    let out = subscribe.map(|(op, out)| {
        state.ops.insert(op.id.clone(), op);
        out
    });
    drop(state);
    shared.changed();
    if let Some(out) = out {
        webhook::dispatch(shared, out);
    }
    Ok(Purchased { subscription_id: id, token })
}

/// A fresh purchase token for an existing subscription ("Manage account").
pub(crate) fn landing_token(shared: &Shared, subscription_id: &str) -> Result<String, Reject> {
    let mut state = shared.lock();
    let id = state
        .sub(subscription_id)
        .map(|s| s.id.clone())
        .ok_or_else(|| Reject::NotFound(format!("subscription {subscription_id} not found")))?;
    Ok(issue_token(shared, &mut state, &id, Utc::now(), None))
}

/// Resolve: the `ResolvedSubscription` for an exact, unexpired purchase token.
pub(crate) fn resolve(shared: &Shared, token: Option<&str>) -> Result<Value, Reject> {
    let target = "x-ms-marketplace-token";
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(Reject::BadRequest {
            code: "HeaderNotPresent",
            message: "The x-ms-marketplace-token header is missing.".into(),
            target: target.into(),
        });
    };
    let state = shared.lock();
    let invalid = || Reject::BadRequest {
        code: "InvalidValue",
        message: "Failed to decrypt token with either primary or secondary secret".into(),
        target: target.into(),
    };
    let entry = state.purchase_tokens.get(token).ok_or_else(invalid)?;
    if entry.expires <= Utc::now() {
        return Err(Reject::BadRequest {
            code: "InvalidValue",
            message: "The marketplace token has expired.".into(),
            target: target.into(),
        });
    }
    let sub = state.sub(&entry.subscription_id).ok_or_else(invalid)?;
    Ok(sub.to_resolved_json(&state.quirks))
}

/// Activate (docs/marketplace-api.md#activate).
pub(crate) fn activate(shared: &Shared, subscription_id: &str, body: &Value) -> Result<(), Reject> {
    let plan_id = match body.get("planId") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        _ => return Err(Reject::bad("The planId is required.", "planId")),
    };
    let quantity = match body.get("quantity") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_quantity(v)?),
    };
    let mut state = shared.lock();
    let accept_any_plan = state.quirks.contains(&crate::faults::Quirk::ActivateAcceptsAnyPlan);
    let sub = state
        .sub_mut(subscription_id)
        .ok_or_else(|| Reject::NotFound(format!("Subscription {subscription_id} not found.")))?;
    match sub.status {
        SubStatus::Unsubscribed => {
            return Err(Reject::NotFound(format!("Subscription {subscription_id} is unsubscribed.")));
        }
        SubStatus::Subscribed | SubStatus::Suspended => {
            return Err(Reject::bad(
                format!("The subscription is already {}; it cannot be activated again.", sub.status.as_str()),
                "subscriptionId",
            ));
        }
        SubStatus::PendingFulfillmentStart => {}
    }
    if plan_id != sub.purchased_plan_id && !accept_any_plan {
        return Err(Reject::bad(
            format!("The planId {plan_id} does not match the purchased plan {}.", sub.purchased_plan_id),
            "planId",
        ));
    }
    if let Some(purchased) = sub.purchased_quantity
        && quantity != Some(i64::from(purchased))
    {
        return Err(Reject::bad(
            format!(
                "The quantity {} does not match the purchased quantity {purchased}.",
                quantity.map_or_else(|| "(missing)".to_string(), |q| q.to_string())
            ),
            "quantity",
        ));
    }
    let now = Utc::now();
    sub.status = SubStatus::Subscribed;
    sub.start_term(now);
    sub.last_modified = now;
    drop(state);
    shared.changed();
    Ok(())
}

/// Parses a JSON quantity: a positive integer number not above [`MAX_QUANTITY`].
pub(crate) fn parse_quantity(v: &Value) -> Result<i64, Reject> {
    let q = v.as_i64().ok_or_else(|| Reject::bad("The quantity must be a positive integer.", "quantity"))?;
    if q > MAX_QUANTITY {
        return Err(Reject::bad(
            format!("The quantity {q} exceeded the maximal limit of {MAX_QUANTITY}."),
            "quantity",
        ));
    }
    if q <= 0 {
        return Err(Reject::bad("The quantity must be a positive integer.", "quantity"));
    }
    Ok(q)
}

/// Parses a PATCH subscription body: exactly one of `planId` and `quantity`.
pub(crate) fn parse_change_body(body: &Value) -> Result<ChangeRequest, Reject> {
    if !body.is_object() {
        return Err(Reject::bad("The request body must be a JSON object.", "body"));
    }
    let plan = body.get("planId").filter(|v| !v.is_null());
    let quantity = body.get("quantity").filter(|v| !v.is_null());
    match (plan, quantity) {
        (Some(_), Some(_)) => {
            Err(Reject::bad("The plan and the quantity cannot be changed in the same request.", "body"))
        }
        (None, None) => Err(Reject::bad("Either planId or quantity is required.", "body")),
        (Some(Value::String(p)), None) if !p.trim().is_empty() => Ok(ChangeRequest::Plan(p.clone())),
        (Some(_), None) => Err(Reject::bad("The planId must be a non-empty string.", "planId")),
        (None, Some(q)) => Ok(ChangeRequest::Quantity(parse_quantity(q)?)),
    }
}

fn check_limits(plan: &PlanSpec, q: i64) -> Result<(), Reject> {
    if !plan.is_price_per_seat {
        return Err(Reject::bad(
            format!("The plan {} is not priced per seat; its quantity cannot be changed.", plan.plan_id),
            "quantity",
        ));
    }
    let min = i64::from(plan.min_quantity.unwrap_or(1));
    let max = i64::from(plan.max_quantity.unwrap_or(u32::MAX));
    if q < min || q > max {
        return Err(Reject::bad(
            format!("The quantity {q} is outside the plan's limits ({min}–{max}); change the plan first."),
            "quantity",
        ));
    }
    Ok(())
}

/// Checks a plan/quantity change against the subscription and the catalog; returns the change
/// and the operation's (planId, quantity).
fn validate_change(
    shared: &Shared,
    state: &State,
    subscription_id: &str,
    request: &ChangeRequest,
    check_update_allowed: bool,
) -> Result<(Action, Change, String, Option<u32>), Reject> {
    let sub = state
        .sub(subscription_id)
        .ok_or_else(|| Reject::NotFound(format!("Subscription {subscription_id} not found.")))?;
    if check_update_allowed && !sub.allows("Update") {
        return Err(Reject::bad(
            "The operation Update is not in the subscription's allowedCustomerOperations.",
            "allowedCustomerOperations",
        ));
    }
    if sub.status != SubStatus::Subscribed {
        return Err(Reject::bad(
            format!(
                "The subscription is {}; only Subscribed subscriptions can be updated.",
                sub.status.as_str()
            ),
            "saasSubscriptionStatus",
        ));
    }
    if state.is_locked(&sub.id) {
        return Err(Reject::bad("The subscription is locked due to pending operations.", "subscriptionId"));
    }
    match request {
        ChangeRequest::Plan(plan_id) => {
            let plan = shared.config.plan(&sub.offer_id, plan_id).ok_or_else(|| {
                Reject::bad(format!("The plan {plan_id} does not exist or is not available."), "planId")
            })?;
            if plan.plan_id == sub.plan_id {
                return Err(Reject::bad(format!("The subscription is already on plan {plan_id}."), "planId"));
            }
            if plan.is_stop_sell {
                return Err(Reject::bad(
                    format!("The plan {plan_id} is no longer available (stop sell)."),
                    "planId",
                ));
            }
            let quantity = if plan.is_price_per_seat {
                let min = plan.min_quantity.unwrap_or(1);
                let max = plan.max_quantity.unwrap_or(u32::MAX);
                Some(sub.quantity.unwrap_or(min).clamp(min, max.max(min)))
            } else {
                None
            };
            let change = Change::Plan {
                plan_id: plan.plan_id.clone(),
                quantity,
                term_unit: plan.term_unit.clone(),
                keeps_trial: plan.has_free_trials,
            };
            Ok((Action::ChangePlan, change, plan.plan_id.clone(), quantity))
        }
        ChangeRequest::Quantity(q) => {
            let plan = shared.config.plan(&sub.offer_id, &sub.plan_id).ok_or_else(|| {
                Reject::bad(format!("The current plan {} is not in the catalog.", sub.plan_id), "planId")
            })?;
            if sub.quantity.map(i64::from) == Some(*q) {
                return Err(Reject::bad(format!("The subscription already has quantity {q}."), "quantity"));
            }
            check_limits(plan, *q)?;
            let q =
                u32::try_from(*q).map_err(|_| Reject::bad("The quantity is out of range.", "quantity"))?;
            Ok((Action::ChangeQuantity, Change::Quantity(q), sub.plan_id.clone(), Some(q)))
        }
    }
}

fn new_op(
    sub: &Sub,
    action: Action,
    source: Source,
    status: OpStatus,
    change: Change,
    plan_id: String,
    quantity: Option<u32>,
) -> Op {
    Op {
        id: guid(),
        activity_id: guid(),
        subscription_id: sub.id.clone(),
        offer_id: sub.offer_id.clone(),
        publisher_id: sub.publisher_id.clone(),
        plan_id,
        quantity,
        action,
        time_stamp: Utc::now(),
        status,
        error_status_code: String::new(),
        error_message: String::new(),
        source,
        change,
        ack_started: false,
    }
}

/// Applies a change to a subscription.
fn apply(sub: &mut Sub, change: &Change, now: DateTime<Utc>) {
    match change {
        Change::Plan { plan_id, quantity, term_unit, keeps_trial } => {
            sub.plan_id = plan_id.clone();
            sub.quantity = *quantity;
            if !keeps_trial {
                sub.is_free_trial = false;
            }
            if *term_unit != sub.term_unit {
                sub.term_unit = term_unit.clone();
                sub.start_term(now);
            }
        }
        Change::Quantity(q) => sub.quantity = Some(*q),
        Change::Unsubscribe => {
            sub.status = SubStatus::Unsubscribed;
            sub.unsubscribed_at = Some(now);
        }
        Change::Nothing => {}
    }
    sub.last_modified = now;
}

/// Finishes an in-progress operation: applies it (`accept`) or not. Returns the finished
/// operation when it was still in progress.
fn finish(state: &mut State, operation_id: &str, accept: bool, reason: &str) -> Option<Op> {
    let key = operation_id.to_ascii_lowercase();
    let op = state.ops.get(&key)?;
    if op.status != OpStatus::InProgress {
        return None;
    }
    let now = Utc::now();
    let (change, sub_id) = (op.change.clone(), op.subscription_id.clone());
    let mut status = OpStatus::Failed;
    let mut message = reason.to_string();
    if accept {
        match state.sub_mut(&sub_id) {
            Some(sub)
                if sub.status == SubStatus::Subscribed
                    || (change == Change::Unsubscribe && sub.status == SubStatus::Suspended) =>
            {
                apply(sub, &change, now);
                status = OpStatus::Succeeded;
                message.clear();
            }
            Some(sub) => message = format!("The subscription is {}.", sub.status.as_str()),
            None => message = "The subscription no longer exists.".into(),
        }
    }
    let op = state.ops.get_mut(&key)?;
    op.status = status;
    if status == OpStatus::Failed {
        op.error_status_code = if accept { "Conflict".into() } else { String::new() };
        op.error_message = message;
    }
    Some(op.clone())
}

/// Publisher PATCH (change plan / quantity): 202 + operation completing after `operation_delay`.
pub(crate) fn publisher_change(
    shared: &Arc<Shared>,
    subscription_id: &str,
    body: &Value,
) -> Result<String, Reject> {
    let mut state = shared.lock();
    if state.sub(subscription_id).is_none() {
        return Err(Reject::NotFound(format!("Subscription {subscription_id} not found.")));
    }
    let request = parse_change_body(body)?;
    let (action, change, plan_id, quantity) =
        validate_change(shared, &state, subscription_id, &request, true)?;
    let Some(sub) = state.sub(subscription_id) else {
        return Err(Reject::NotFound(format!("Subscription {subscription_id} not found.")));
    };
    let op = new_op(sub, action, Source::Partner, OpStatus::InProgress, change, plan_id, quantity);
    let op_id = op.id.clone();
    state.ops.insert(op_id.clone(), op);
    drop(state);
    shared.changed();
    spawn_partner_completion(shared, op_id.clone());
    Ok(op_id)
}

/// Publisher DELETE: 202 + operation completing after `operation_delay`.
pub(crate) fn publisher_delete(shared: &Arc<Shared>, subscription_id: &str) -> Result<String, Reject> {
    let mut state = shared.lock();
    let sub = state
        .sub(subscription_id)
        .ok_or_else(|| Reject::NotFound(format!("Subscription {subscription_id} not found.")))?;
    if sub.status == SubStatus::Unsubscribed {
        return Err(Reject::NotFound(format!("Subscription {subscription_id} is already unsubscribed.")));
    }
    if !sub.allows("Delete") {
        return Err(Reject::bad(
            "The operation Delete is not in the subscription's allowedCustomerOperations.",
            "allowedCustomerOperations",
        ));
    }
    let pending_delete = state.ops.values().any(|o| {
        o.status == OpStatus::InProgress
            && o.action == Action::Unsubscribe
            && o.subscription_id.eq_ignore_ascii_case(subscription_id)
    });
    if pending_delete {
        return Err(Reject::bad("The subscription is locked due to pending operations.", "subscriptionId"));
    }
    let op = new_op(
        sub,
        Action::Unsubscribe,
        Source::Partner,
        OpStatus::InProgress,
        Change::Unsubscribe,
        sub.plan_id.clone(),
        sub.quantity,
    );
    let op_id = op.id.clone();
    state.ops.insert(op_id.clone(), op);
    drop(state);
    shared.changed();
    spawn_partner_completion(shared, op_id.clone());
    Ok(op_id)
}

/// After `operation_delay`: apply, mark `Succeeded` (or `Failed`), then send the Partner webhook.
fn spawn_partner_completion(shared: &Arc<Shared>, op_id: String) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if !shared.sleep(shared.config.operation_delay).await {
            return;
        }
        let out = {
            let mut state = shared.lock();
            let Some(op) = finish(&mut state, &op_id, true, "") else { return };
            let subscription = state.sub(&op.subscription_id).map(|s| s.to_json(&state.quirks));
            (op.status == OpStatus::Succeeded).then(|| {
                webhook::outgoing(&op, op.status.as_str(), subscription.unwrap_or(Value::Null), &state.quirks)
            })
        };
        shared.changed();
        if let Some(out) = out {
            webhook::dispatch(&shared, out);
        }
    });
}

/// Customer ChangePlan / ChangeQuantity (source `Azure`): an InProgress operation and an
/// ACK-able webhook; decided by the publisher's PATCH or 4xx, else auto-accepted.
pub(crate) fn customer_change(
    shared: &Arc<Shared>,
    subscription_id: &str,
    request: ChangeRequest,
) -> Result<OperationHandle, Reject> {
    let mut state = shared.lock();
    let (action, change, plan_id, quantity) =
        validate_change(shared, &state, subscription_id, &request, false)?;
    let Some(sub) = state.sub(subscription_id) else {
        return Err(Reject::NotFound(format!("Subscription {subscription_id} not found.")));
    };
    let old = sub.to_json(&state.quirks);
    let op = new_op(sub, action, Source::Azure, OpStatus::InProgress, change, plan_id, quantity);
    let out = webhook::outgoing(&op, "InProgress", old, &state.quirks);
    let handle = OperationHandle { subscription_id: op.subscription_id.clone(), operation_id: op.id.clone() };
    state.ops.insert(op.id.clone(), op);
    drop(state);
    shared.changed();
    webhook::dispatch(shared, out);
    Ok(handle)
}

/// Starts the ACK window of a customer change (once); when it ends undecided, auto-accepts.
pub(crate) fn start_ack_window(shared: &Arc<Shared>, op_id: &str) {
    {
        let mut state = shared.lock();
        let Some(op) = state.ops.get_mut(&op_id.to_ascii_lowercase()) else { return };
        if op.ack_started || op.status != OpStatus::InProgress {
            return;
        }
        op.ack_started = true;
    }
    let shared = Arc::clone(shared);
    let op_id = op_id.to_string();
    tokio::spawn(async move {
        if !shared.sleep(shared.config.ack_window).await {
            return;
        }
        let finished = finish(&mut shared.lock(), &op_id, true, "");
        if finished.is_some() {
            tracing::debug!(operation_id = %op_id, "ACK window ended: change auto-accepted");
            shared.changed();
        }
    });
}

/// A 4xx answer to an ACK-able webhook: the change is refused (if still undecided).
pub(crate) fn reject_by_webhook(shared: &Shared, op_id: &str, status: u16) {
    let finished = finish(
        &mut shared.lock(),
        op_id,
        false,
        &format!("The publisher answered the webhook with {status}."),
    );
    if finished.is_some() {
        shared.changed();
    }
}

/// Notify-only customer/Microsoft actions: state changes now, operation `Succeeded`, webhook.
pub(crate) fn customer_action(
    shared: &Arc<Shared>,
    subscription_id: &str,
    action: Action,
) -> Result<OperationHandle, Reject> {
    let mut state = shared.lock();
    let quirks = state.quirks.clone();
    let sub = state
        .sub_mut(subscription_id)
        .ok_or_else(|| Reject::NotFound(format!("Subscription {subscription_id} not found.")))?;
    let from = sub.status;
    let invalid = || {
        Reject::Conflict(format!("{} is not possible for a {} subscription.", action.as_str(), from.as_str()))
    };
    let now = Utc::now();
    let mut send = true;
    let webhook_status = match (action, from) {
        (Action::Suspend, SubStatus::Subscribed) => {
            sub.status = SubStatus::Suspended;
            "Succeeded"
        }
        (Action::Reinstate, SubStatus::Suspended) => {
            sub.status = SubStatus::Subscribed;
            "InProgress"
        }
        (Action::Renew, SubStatus::Subscribed) => {
            sub.renew_term(now);
            sub.is_free_trial = false;
            "Succeeded"
        }
        (Action::Unsubscribe, SubStatus::Subscribed | SubStatus::Suspended) => {
            sub.status = SubStatus::Unsubscribed;
            sub.unsubscribed_at = Some(now);
            "Succeeded"
        }
        (Action::Unsubscribe, SubStatus::PendingFulfillmentStart) => {
            // Cancelling before activation: no webhook documented, none sent.
            sub.status = SubStatus::Unsubscribed;
            sub.unsubscribed_at = Some(now);
            send = false;
            "Succeeded"
        }
        _ => return Err(invalid()),
    };
    sub.last_modified = now;
    let snapshot = sub.to_json(&quirks);
    let op = new_op(
        sub,
        action,
        Source::Azure,
        OpStatus::Succeeded,
        Change::Nothing,
        sub.plan_id.clone(),
        sub.quantity,
    );
    let handle = OperationHandle { subscription_id: op.subscription_id.clone(), operation_id: op.id.clone() };
    let out = send.then(|| webhook::outgoing(&op, webhook_status, snapshot, &quirks));
    state.ops.insert(op.id.clone(), op);
    drop(state);
    shared.changed();
    if let Some(out) = out {
        webhook::dispatch(shared, out);
    }
    Ok(handle)
}

/// PATCH operation (ACK): `Success` applies, `Failure` refuses; 409 when already decided, 500 for
/// Partner-sourced operations, 400 for unknown operations and other status words.
pub(crate) fn update_operation(
    shared: &Shared,
    subscription_id: &str,
    op_id: &str,
    body: &Value,
) -> Result<(), Reject> {
    let mut state = shared.lock();
    let op = state.op(subscription_id, op_id).ok_or_else(|| Reject::BadRequest {
        code: "EntityNotFound",
        message: format!("Operation {op_id} of subscription {subscription_id} was not found."),
        target: "operationId".into(),
    })?;
    if op.source == Source::Partner {
        return Err(Reject::Internal("PATCH of a Partner-sourced operation".into()));
    }
    let accept = match body.get("status").and_then(Value::as_str) {
        Some("Success") => true,
        Some("Failure") => false,
        Some(other) => {
            return Err(Reject::bad(
                format!("The status '{other}' is invalid; use Success or Failure."),
                "status",
            ));
        }
        None => return Err(Reject::bad("The status is required (Success or Failure).", "status")),
    };
    if op.status != OpStatus::InProgress {
        return Err(Reject::Conflict(format!(
            "The operation {} is no longer in progress (status {}).",
            op.id,
            op.status.as_str()
        )));
    }
    let reason = "The publisher refused the change.";
    finish(&mut state, op_id, accept, reason);
    drop(state);
    shared.changed();
    Ok(())
}
