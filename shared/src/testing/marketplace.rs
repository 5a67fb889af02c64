//! A model of Microsoft's side in memory: subscriptions, operations, the customer's actions and
//! the webhooks they cause, and scripted faults. It follows Microsoft's rules (docs/marketplace-api.md#subscription-api, #operations-api, #webhook,
//! docs/marketplace-api.md#subscription-lifecycle) closely enough for the core's flows; the Marketplace emulator (an HTTP server) is the
//! faithful one for end-to-end tests.

// The port's error type is large by design (it keeps Microsoft's answer); the model returns it as is.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::ManualClock;
use crate::clock::Clock;
use crate::domain::{
    AadIdentifier, BatchUsageEventResult, CustomerOperation, Operation, OperationAction, OperationId,
    OperationStatus, Plan, PlanId, RequestSource, ResolvedSubscription, Subscription, SubscriptionId,
    SubscriptionStatus, Term, TermUnit, UsageEvent, UsageQuery, UsageRecord, WebhookPayload,
};
use crate::marketplace::{
    AckStatus, ApiError, Call, MarketplaceApi, MarketplaceError, OperationLocation, PageToken, ResponseMeta,
    SubscriptionsPage, UsageOutcome,
};

/// How one scripted call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketFault {
    /// 429: nothing happened.
    Throttled,
    /// 500 before anything happened.
    Server,
    /// The call takes effect but its answer is lost (500 to the caller).
    LostAnswer,
    /// 400, as the real service answers now and then.
    BadRequest,
    /// 403: the publisher's app is not the offer's (a configuration error).
    Forbidden,
    /// 404: Microsoft does not know what was asked for.
    NotFound,
}

#[derive(Debug, Default)]
struct Market {
    subscriptions: BTreeMap<SubscriptionId, Subscription>,
    operations: BTreeMap<OperationId, Operation>,
    tokens: HashMap<String, SubscriptionId>,
    plans: Vec<PlanId>,
    /// Each plan's metering dimensions (none unless set).
    dimensions: HashMap<PlanId, Vec<String>>,
    faults: HashMap<&'static str, VecDeque<MarketFault>>,
    /// Microsoft has been seen to apply a change the publisher refused (docs/marketplace-api.md#webhook-responses).
    refusals_ignored: bool,
    page_size: usize,
    /// How long each call takes, in real time (a slow Microsoft).
    delay: std::time::Duration,
    /// How far each `list_subscriptions` call moves the clock (how long it "takes").
    list_takes: chrono::Duration,
    counter: u64,
    calls: Vec<&'static str>,
}

/// The model; clones share the same state.
#[derive(Debug, Clone)]
pub struct FakeMarketplace {
    market: Arc<Mutex<Market>>,
    clock: ManualClock,
}

fn meta(status: u16) -> ResponseMeta {
    ResponseMeta { status, request_id: "fake".into(), ..ResponseMeta::default() }
}

fn error(message: &str) -> ApiError {
    ApiError { code: Some("BadArgument".into()), message: Some(message.into()), ..ApiError::default() }
}

fn bad(message: &str) -> MarketplaceError {
    MarketplaceError::BadRequest { error: error(message), meta: meta(400) }
}

fn not_found(message: &str) -> MarketplaceError {
    MarketplaceError::NotFound { error: error(message), meta: meta(404) }
}

fn failed(fault: MarketFault) -> MarketplaceError {
    match fault {
        MarketFault::Throttled => MarketplaceError::Throttled { retry_after: None, meta: meta(429) },
        MarketFault::Server | MarketFault::LostAnswer => {
            MarketplaceError::Server { error: ApiError::default(), meta: meta(500) }
        }
        MarketFault::BadRequest => bad("scripted"),
        MarketFault::Forbidden => MarketplaceError::Forbidden { error: error("scripted"), meta: meta(403) },
        MarketFault::NotFound => not_found("scripted"),
    }
}

impl FakeMarketplace {
    /// A marketplace whose offer has these plans.
    pub fn new(clock: ManualClock, plans: &[&str]) -> Self {
        let market = Market {
            plans: plans.iter().filter_map(|p| PlanId::parse(p)).collect(),
            page_size: 100,
            ..Market::default()
        };
        Self { market: Arc::new(Mutex::new(market)), clock }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Market) -> T) -> T {
        f(&mut self.market.lock().expect("market"))
    }

    /// `plan`'s metering dimensions, as Partner Center would define them.
    pub fn set_dimensions(&self, plan: &str, dimensions: &[&str]) {
        let plan = PlanId::parse(plan).expect("a plan id");
        self.with(|m| m.dimensions.insert(plan, dimensions.iter().map(|d| (*d).to_owned()).collect()));
    }

    /// The next `count` calls named `call` (the trait method's name) fail with `fault`.
    pub fn fail_next(&self, call: &'static str, fault: MarketFault, count: usize) {
        self.with(|m| m.faults.entry(call).or_default().extend(std::iter::repeat_n(fault, count)));
    }

    /// No scripted fault is left.
    pub fn clear_faults(&self) {
        self.with(|m| m.faults.clear());
    }

    /// Whether a `Failure` acknowledgement is ignored (the change applied anyway).
    pub fn ignore_refusals(&self, ignored: bool) {
        self.with(|m| m.refusals_ignored = ignored);
    }

    /// Each `list_subscriptions` call moves the shared clock on by `takes`: time passes as pages
    /// are read, so that deadlines are reached without waiting.
    pub fn set_list_takes(&self, takes: chrono::Duration) {
        self.with(|m| m.list_takes = takes);
    }

    /// Every call takes this long before it acts (a slow Microsoft).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.with(|m| m.delay = delay);
    }

    pub fn set_page_size(&self, size: usize) {
        self.with(|m| m.page_size = size.max(1));
    }

    /// The names of the calls made so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.with(|m| m.calls.clone())
    }

    /// Microsoft's view of a subscription.
    pub fn subscription(&self, id: &SubscriptionId) -> Option<Subscription> {
        self.with(|m| m.subscriptions.get(id).cloned())
    }

    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.with(|m| m.subscriptions.values().cloned().collect())
    }

    pub fn operation(&self, id: &OperationId) -> Option<Operation> {
        self.with(|m| m.operations.get(id).cloned())
    }

    /// Changes Microsoft's view directly (what no webhook announces).
    pub fn edit(&self, id: &SubscriptionId, edit: impl FnOnce(&mut Subscription)) {
        let now = self.clock.now();
        self.with(|m| {
            if let Some(s) = m.subscriptions.get_mut(id) {
                edit(s);
                s.last_modified = Some(now);
            }
        });
    }

    /// Puts a subscription into Microsoft's records as it is given (for fixtures naming their own ids).
    pub fn insert_subscription(&self, subscription: Subscription) {
        self.with(|m| m.subscriptions.insert(subscription.id.clone(), subscription));
    }

    /// Makes `token` a landing-page token of the subscription `id`.
    pub fn insert_token(&self, token: &str, id: &SubscriptionId) {
        self.with(|m| m.tokens.insert(token.to_owned(), id.clone()));
    }

    /// Puts an operation into Microsoft's records as it is given.
    pub fn insert_operation(&self, operation: Operation) {
        self.with(|m| m.operations.insert(operation.id.clone(), operation));
    }

    /// Removes an operation from Microsoft's records (Get operation answers 404).
    pub fn forget_operation(&self, id: &OperationId) {
        self.with(|m| m.operations.remove(id));
    }

    fn take_fault(&self, call: &'static str) -> Option<MarketFault> {
        self.with(|m| {
            m.calls.push(call);
            m.faults.get_mut(call).and_then(VecDeque::pop_front)
        })
    }

    /// A fault that stops the call before it acts; a lost answer is returned for after.
    async fn before(&self, call: &'static str) -> Result<Option<MarketFault>, MarketplaceError> {
        let delay = self.with(|m| m.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match self.take_fault(call) {
            Some(MarketFault::LostAnswer) => Ok(Some(MarketFault::LostAnswer)),
            Some(fault) => Err(failed(fault)),
            None => Ok(None),
        }
    }

    fn after<T>(lost: Option<MarketFault>, value: T) -> Result<T, MarketplaceError> {
        match lost {
            Some(fault) => Err(failed(fault)),
            None => Ok(value),
        }
    }

    // The customer's side ---------------------------------------------------------------------

    /// A purchase: a `PendingFulfillmentStart` subscription and the landing page's token.
    pub fn purchase(&self, plan: &str, seats: Option<u32>, tenant: &str) -> (SubscriptionId, String) {
        let now = self.clock.now();
        self.with(|m| {
            m.counter += 1;
            let id =
                SubscriptionId::parse(&format!("00000000-0000-4000-8000-{:012x}", m.counter)).expect("id");
            let mut s = Subscription::new(id.clone());
            s.offer_id = Some("offer".into());
            s.publisher_id = Some("publisher".into());
            s.name = Some(format!("subscription {}", m.counter));
            s.status = Some(SubscriptionStatus::PendingFulfillmentStart);
            s.plan_id = PlanId::parse(plan);
            s.quantity = seats;
            let who = AadIdentifier { tenant_id: Some(tenant.to_owned()), ..AadIdentifier::default() };
            s.beneficiary = Some(who.clone());
            s.purchaser = Some(who);
            s.allowed_customer_operations =
                vec![CustomerOperation::Read, CustomerOperation::Update, CustomerOperation::Delete];
            s.auto_renew = Some(true);
            s.created = Some(now);
            s.last_modified = Some(now);
            let token = format!("token+{}/{}", m.counter, id);
            m.tokens.insert(token.clone(), id.clone());
            m.subscriptions.insert(id.clone(), s);
            (id, token)
        })
    }

    /// The customer changes the plan: an operation waiting for the publisher, and its webhook.
    pub fn customer_change_plan(&self, id: &SubscriptionId, plan: &str) -> Option<WebhookPayload> {
        let plan = PlanId::parse(plan)?;
        self.customer_change(id, OperationAction::ChangePlan, Some(plan), None)
    }

    pub fn customer_change_quantity(&self, id: &SubscriptionId, seats: u32) -> Option<WebhookPayload> {
        self.customer_change(id, OperationAction::ChangeQuantity, None, Some(seats))
    }

    fn customer_change(
        &self,
        id: &SubscriptionId,
        action: OperationAction,
        plan: Option<PlanId>,
        seats: Option<u32>,
    ) -> Option<WebhookPayload> {
        let now = self.clock.now();
        self.with(|m| {
            let s = m.subscriptions.get(id)?;
            if s.status != Some(SubscriptionStatus::Subscribed) || m.locked(id) {
                return None;
            }
            if (plan.is_some() && plan == s.plan_id) || (seats.is_some() && seats == s.quantity) {
                return None;
            }
            let operation =
                m.new_operation(id, action, RequestSource::Azure, OperationStatus::InProgress, now);
            let operation = Operation {
                plan_id: plan.or(operation.plan_id),
                quantity: seats.or(operation.quantity),
                ..operation
            };
            m.operations.insert(operation.id.clone(), operation.clone());
            Some(m.payload(&operation))
        })
    }

    /// The 10 seconds pass: every customer change still waiting is accepted.
    pub fn expire_acknowledgements(&self) -> usize {
        let now = self.clock.now();
        self.with(|m| {
            let waiting: Vec<OperationId> = m
                .operations
                .values()
                .filter(|o| o.status == Some(OperationStatus::InProgress))
                .filter(|o| o.operation_request_source == Some(RequestSource::Azure))
                .map(|o| o.id.clone())
                .collect();
            for id in &waiting {
                m.complete(id, true, now);
            }
            waiting.len()
        })
    }

    /// Microsoft finishes the publisher's own changes and sends their webhooks.
    pub fn complete_publisher_operations(&self) -> Vec<WebhookPayload> {
        let now = self.clock.now();
        self.with(|m| {
            let running: Vec<OperationId> = m
                .operations
                .values()
                .filter(|o| o.status == Some(OperationStatus::InProgress))
                .filter(|o| o.operation_request_source == Some(RequestSource::Partner))
                .map(|o| o.id.clone())
                .collect();
            running
                .iter()
                .filter_map(|id| {
                    m.complete(id, true, now);
                    m.operations.get(id).cloned().map(|o| m.payload(&o))
                })
                .collect()
        })
    }

    /// A notify-only change on Microsoft's side (suspend, reinstate, renew, unsubscribe) and its
    /// webhook; `None` when the subscription's status does not allow it.
    pub fn lifecycle(&self, id: &SubscriptionId, action: OperationAction) -> Option<WebhookPayload> {
        let now = self.clock.now();
        self.with(|m| {
            let s = m.subscriptions.get_mut(id)?;
            let status = s.status.clone()?;
            use SubscriptionStatus as S;
            let next = match (&action, status) {
                (OperationAction::Suspend, S::Subscribed) => S::Suspended,
                (OperationAction::Reinstate, S::Suspended) => S::Subscribed,
                (OperationAction::Renew, S::Subscribed) => {
                    if let Some(term) = s.term.as_mut() {
                        term.start_date = term.end_date;
                        term.end_date = term.end_date.map(|e| e + chrono::Duration::days(30));
                    }
                    S::Subscribed
                }
                (OperationAction::Unsubscribe, S::Subscribed | S::Suspended | S::PendingFulfillmentStart) => {
                    S::Unsubscribed
                }
                _ => return None,
            };
            s.status = Some(next);
            s.last_modified = Some(now);
            let operation =
                m.new_operation(id, action, RequestSource::Azure, OperationStatus::Succeeded, now);
            m.operations.insert(operation.id.clone(), operation.clone());
            // A pending change ends with the subscription.
            if m.subscriptions.get(id).and_then(|s| s.status.clone()) == Some(S::Unsubscribed) {
                for o in m.operations.values_mut() {
                    if &o.subscription_id == id && o.status == Some(OperationStatus::InProgress) {
                        o.status = Some(OperationStatus::Failed);
                    }
                }
            }
            Some(m.payload(&operation))
        })
    }
}

impl Market {
    fn locked(&self, id: &SubscriptionId) -> bool {
        self.operations.values().any(|o| {
            &o.subscription_id == id
                && o.status == Some(OperationStatus::InProgress)
                && matches!(
                    o.action,
                    Some(
                        OperationAction::ChangePlan
                            | OperationAction::ChangeQuantity
                            | OperationAction::Unsubscribe
                    )
                )
        })
    }

    fn new_operation(
        &mut self,
        id: &SubscriptionId,
        action: OperationAction,
        source: RequestSource,
        status: OperationStatus,
        now: crate::domain::Timestamp,
    ) -> Operation {
        self.counter += 1;
        let s = self.subscriptions.get(id);
        Operation {
            id: OperationId::parse(&format!("0000aaaa-0000-4000-8000-{:012x}", self.counter)).expect("id"),
            subscription_id: id.clone(),
            action: Some(action),
            activity_id: None,
            publisher_id: s.and_then(|s| s.publisher_id.clone()),
            offer_id: s.and_then(|s| s.offer_id.clone()),
            plan_id: s.and_then(|s| s.plan_id.clone()),
            quantity: s.and_then(|s| s.quantity),
            time_stamp: Some(now),
            status: Some(status),
            error_status_code: None,
            error_message: None,
            operation_request_source: Some(source),
        }
    }

    /// Finishes an operation: applied (`Succeeded`) or not (`Failed`).
    fn complete(&mut self, id: &OperationId, success: bool, now: crate::domain::Timestamp) {
        let Some(operation) = self.operations.get_mut(id) else { return };
        operation.status = Some(if success { OperationStatus::Succeeded } else { OperationStatus::Failed });
        let operation = operation.clone();
        if !success {
            return;
        }
        let Some(s) = self.subscriptions.get_mut(&operation.subscription_id) else { return };
        match operation.action {
            Some(OperationAction::ChangePlan) => s.plan_id = operation.plan_id.clone(),
            Some(OperationAction::ChangeQuantity) => s.quantity = operation.quantity,
            Some(OperationAction::Unsubscribe) => s.status = Some(SubscriptionStatus::Unsubscribed),
            _ => {}
        }
        s.last_modified = Some(now);
    }

    fn payload(&self, operation: &Operation) -> WebhookPayload {
        WebhookPayload {
            operation: operation.clone(),
            subscription: self.subscriptions.get(&operation.subscription_id).cloned(),
            purchase_token: None,
        }
    }

    fn start(
        &mut self,
        id: &SubscriptionId,
        action: OperationAction,
        plan: Option<PlanId>,
        seats: Option<u32>,
        now: crate::domain::Timestamp,
    ) -> Result<OperationLocation, MarketplaceError> {
        let s = self.subscriptions.get(id).ok_or_else(|| not_found("no such subscription"))?;
        let needed = if action == OperationAction::Unsubscribe {
            CustomerOperation::Delete
        } else {
            CustomerOperation::Update
        };
        if !s.allows(&needed) {
            return Err(bad("the operation is not allowed"));
        }
        match (&action, &s.status) {
            (OperationAction::Unsubscribe, Some(SubscriptionStatus::Unsubscribed)) => {
                return Err(bad("already unsubscribed"));
            }
            (OperationAction::Unsubscribe, _) => {}
            (_, Some(SubscriptionStatus::Subscribed)) => {}
            _ => return Err(bad("the subscription is not Subscribed")),
        }
        if self.locked(id) {
            return Err(bad("The subscription is locked due to pending operations"));
        }
        if plan.is_some() && (plan == s.plan_id || !self.plans.contains(plan.as_ref().expect("some"))) {
            return Err(bad("the plan is the current one or not available"));
        }
        if seats.is_some() && seats == s.quantity {
            return Err(bad("the quantity is the current one"));
        }
        let operation =
            self.new_operation(id, action, RequestSource::Partner, OperationStatus::InProgress, now);
        let operation = Operation {
            plan_id: plan.or(operation.plan_id),
            quantity: seats.or(operation.quantity),
            ..operation
        };
        self.operations.insert(operation.id.clone(), operation.clone());
        Ok(OperationLocation { operation_id: operation.id, url: None })
    }
}

impl MarketplaceApi for FakeMarketplace {
    async fn resolve(&self, token: &str, _call: &Call) -> Result<ResolvedSubscription, MarketplaceError> {
        let lost = self.before("resolve").await?;
        let resolved = self.with(|m| {
            let id = m.tokens.get(token).ok_or_else(|| bad("the token is not valid"))?;
            let s = m.subscriptions.get(id).ok_or_else(|| bad("the token is not valid"))?;
            Ok::<_, MarketplaceError>(ResolvedSubscription {
                id: s.id.clone(),
                subscription_name: s.name.clone(),
                offer_id: s.offer_id.clone(),
                plan_id: s.plan_id.clone(),
                quantity: s.quantity,
                subscription: Some(s.clone()),
            })
        })?;
        Self::after(lost, resolved)
    }

    async fn activate(
        &self,
        id: &SubscriptionId,
        plan: &PlanId,
        quantity: Option<u32>,
        _call: &Call,
    ) -> Result<(), MarketplaceError> {
        let lost = self.before("activate").await?;
        let now = self.clock.now();
        self.with(|m| {
            let s = m.subscriptions.get_mut(id).ok_or_else(|| not_found("no such subscription"))?;
            match s.status {
                Some(SubscriptionStatus::PendingFulfillmentStart) => {}
                Some(SubscriptionStatus::Unsubscribed) => return Err(not_found("unsubscribed")),
                _ => return Err(bad("the subscription is already activated")),
            }
            if s.plan_id.as_ref() != Some(plan) || (quantity.is_some() && s.quantity != quantity) {
                return Err(bad("the plan or quantity is not the purchased one"));
            }
            s.status = Some(SubscriptionStatus::Subscribed);
            s.term = Some(Term {
                start_date: Some(now),
                end_date: Some(now + chrono::Duration::days(30)),
                term_unit: Some(TermUnit::P1M),
                charge_duration: None,
            });
            s.last_modified = Some(now);
            Ok(())
        })?;
        Self::after(lost, ())
    }

    async fn list_subscriptions(
        &self,
        page: Option<&PageToken>,
        _call: &Call,
    ) -> Result<SubscriptionsPage, MarketplaceError> {
        let takes = self.with(|m| m.list_takes);
        self.clock.advance(takes);
        let lost = self.before("list_subscriptions").await?;
        let start = match page {
            Some(PageToken(token)) => token.parse::<usize>().map_err(|_| bad("continuation token"))?,
            None => 0,
        };
        let listed = self.with(|m| {
            let all: Vec<Subscription> = m.subscriptions.values().cloned().collect();
            let end = (start + m.page_size).min(all.len());
            let subscriptions = all.get(start..end).map(<[_]>::to_vec).unwrap_or_default();
            let next = (end < all.len()).then(|| PageToken(end.to_string()));
            SubscriptionsPage { subscriptions, next }
        });
        Self::after(lost, listed)
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
        _call: &Call,
    ) -> Result<Subscription, MarketplaceError> {
        let lost = self.before("get_subscription").await?;
        let found = self.subscription(id).ok_or_else(|| not_found("no such subscription"))?;
        Self::after(lost, found)
    }

    async fn list_available_plans(
        &self,
        id: &SubscriptionId,
        plan: Option<&PlanId>,
        _call: &Call,
    ) -> Result<Vec<Plan>, MarketplaceError> {
        let lost = self.before("list_available_plans").await?;
        let plans = self.with(|m| {
            if !m.subscriptions.contains_key(id) {
                return Err(not_found("no such subscription"));
            }
            Ok(m.plans
                .iter()
                .filter(|p| plan.is_none_or(|wanted| *p == wanted))
                .map(|p| Plan {
                    plan_id: p.clone(),
                    display_name: Some(p.to_string()),
                    is_private: false,
                    description: None,
                    min_quantity: Some(1),
                    max_quantity: Some(1000),
                    has_free_trials: false,
                    is_price_per_seat: true,
                    is_stop_sell: false,
                    market: None,
                    plan_components: m.dimensions.get(p).map(|dimensions| crate::domain::PlanComponents {
                        recurrent_billing_terms: Vec::new(),
                        metering_dimensions: dimensions
                            .iter()
                            .map(|d| crate::domain::MeteringDimension {
                                id: Some(d.clone()),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    source_offers: Vec::new(),
                })
                .collect())
        })?;
        Self::after(lost, plans)
    }

    async fn change_plan(
        &self,
        id: &SubscriptionId,
        plan: &PlanId,
        _call: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        let lost = self.before("change_plan").await?;
        let now = self.clock.now();
        let started =
            self.with(|m| m.start(id, OperationAction::ChangePlan, Some(plan.clone()), None, now))?;
        Self::after(lost, started)
    }

    async fn change_quantity(
        &self,
        id: &SubscriptionId,
        quantity: u32,
        _call: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        let lost = self.before("change_quantity").await?;
        let now = self.clock.now();
        let started =
            self.with(|m| m.start(id, OperationAction::ChangeQuantity, None, Some(quantity), now))?;
        Self::after(lost, started)
    }

    async fn delete_subscription(
        &self,
        id: &SubscriptionId,
        _call: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        let lost = self.before("delete_subscription").await?;
        let now = self.clock.now();
        let started = self.with(|m| m.start(id, OperationAction::Unsubscribe, None, None, now))?;
        Self::after(lost, started)
    }

    async fn list_outstanding_operations(
        &self,
        id: &SubscriptionId,
        _call: &Call,
    ) -> Result<Vec<Operation>, MarketplaceError> {
        let lost = self.before("list_outstanding_operations").await?;
        let operations = self.with(|m| {
            m.operations
                .values()
                .filter(|o| &o.subscription_id == id && o.status == Some(OperationStatus::InProgress))
                .cloned()
                .collect()
        });
        Self::after(lost, operations)
    }

    async fn get_operation(
        &self,
        id: &SubscriptionId,
        operation: &OperationId,
        _call: &Call,
    ) -> Result<Operation, MarketplaceError> {
        let lost = self.before("get_operation").await?;
        let found = self
            .operation(operation)
            .filter(|o| &o.subscription_id == id)
            // The real service answers 400, not 404, for an operation it does not know.
            .ok_or_else(|| bad("no such operation"))?;
        Self::after(lost, found)
    }

    async fn update_operation_status(
        &self,
        id: &SubscriptionId,
        operation: &OperationId,
        status: AckStatus,
        _call: &Call,
    ) -> Result<(), MarketplaceError> {
        let lost = self.before("update_operation_status").await?;
        let now = self.clock.now();
        self.with(|m| {
            let o = m
                .operations
                .get(operation)
                .filter(|o| &o.subscription_id == id)
                .ok_or_else(|| not_found("no such operation"))?;
            if o.status != Some(OperationStatus::InProgress)
                || o.operation_request_source != Some(RequestSource::Azure)
            {
                return Err(MarketplaceError::Conflict { error: error("already decided"), meta: meta(409) });
            }
            match status {
                AckStatus::Success => m.complete(operation, true, now),
                AckStatus::Failure if m.refusals_ignored => {
                    m.complete(operation, true, now);
                    if let Some(o) = m.operations.get_mut(operation) {
                        o.status = Some(OperationStatus::Failed);
                    }
                }
                AckStatus::Failure => m.complete(operation, false, now),
            }
            Ok(())
        })?;
        Self::after(lost, ())
    }

    async fn post_usage_event(
        &self,
        _event: &UsageEvent,
        _call: &Call,
    ) -> Result<UsageOutcome, MarketplaceError> {
        Err(MarketplaceError::Invalid("metering is not modelled by the fake marketplace"))
    }

    async fn post_usage_events(
        &self,
        _events: &[UsageEvent],
        _call: &Call,
    ) -> Result<BatchUsageEventResult, MarketplaceError> {
        Err(MarketplaceError::Invalid("metering is not modelled by the fake marketplace"))
    }

    async fn get_usage_events(
        &self,
        _query: &UsageQuery,
        _call: &Call,
    ) -> Result<Vec<UsageRecord>, MarketplaceError> {
        Err(MarketplaceError::Invalid("metering is not modelled by the fake marketplace"))
    }
}
