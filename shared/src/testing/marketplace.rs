//! A model of Microsoft's side in memory: subscriptions, operations, the customer's actions and
//! the webhooks they cause, metering, and scripted faults. It follows Microsoft's rules (docs/marketplace-api.md#subscription-api, #operations-api, #webhook,
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
    OperationStatus, Plan, PlanId, ReconStatus, RequestSource, ResolvedSubscription, Subscription,
    SubscriptionId, SubscriptionStatus, Term, TermUnit, Timestamp, UsageEvent, UsageEventResult,
    UsageEventStatus, UsageQuery, UsageRecord, WebhookPayload,
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
    /// Accepted usage events.
    usage: Vec<AcceptedUsage>,
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
        event: &UsageEvent,
        _call: &Call,
    ) -> Result<UsageOutcome, MarketplaceError> {
        let lost = self.before("post_usage_event").await?;
        let now = self.clock.now();
        let result = self.with(|m| m.meter(event, now));
        match result.status {
            Some(UsageEventStatus::Accepted) => Self::after(lost, UsageOutcome::Accepted(result)),
            Some(UsageEventStatus::Duplicate) => {
                let earlier =
                    result.error.as_ref().and_then(|e| e.pointer("/additionalInfo/acceptedMessage"));
                let earlier = earlier.and_then(|e| serde_json::from_value(e.clone()).ok());
                Self::after(lost, UsageOutcome::Duplicate(earlier))
            }
            _ => {
                let message = result.error.as_ref().and_then(|e| e["message"].as_str()).unwrap_or("refused");
                Err(bad(message))
            }
        }
    }

    async fn post_usage_events(
        &self,
        events: &[UsageEvent],
        _call: &Call,
    ) -> Result<BatchUsageEventResult, MarketplaceError> {
        if events.is_empty() || events.len() > crate::marketplace::MAX_BATCH {
            return Err(MarketplaceError::Invalid("a usage batch holds 1 to 25 events"));
        }
        let lost = self.before("post_usage_events").await?;
        let now = self.clock.now();
        let result: Vec<UsageEventResult> = self.with(|m| events.iter().map(|e| m.meter(e, now)).collect());
        Self::after(lost, BatchUsageEventResult { count: Some(result.len() as u32), result })
    }

    async fn get_usage_events(
        &self,
        query: &UsageQuery,
        _call: &Call,
    ) -> Result<Vec<UsageRecord>, MarketplaceError> {
        let lost = self.before("get_usage_events").await?;
        let now = self.clock.now();
        let records = self.with(|m| m.usage_record(query, now));
        Self::after(lost, records)
    }
}

/// An accepted usage event, as Microsoft keeps it.
#[derive(Debug)]
struct AcceptedUsage {
    event: UsageEvent,
    offer_id: Option<String>,
    answer: UsageEventResult,
}

impl Market {
    /// Microsoft's answer to one usage event, in the order the emulator checks its rules; an
    /// accepted one is recorded.
    fn meter(&mut self, event: &UsageEvent, now: Timestamp) -> UsageEventResult {
        let mut answer = UsageEventResult {
            usage_event_id: None,
            status: None,
            message_time: Some(now),
            resource_id: Some(event.resource_id.to_string()),
            quantity: Some(event.quantity),
            dimension: Some(event.dimension.clone()),
            effective_start_time: Some(event.effective_start_time),
            plan_id: Some(event.plan_id.clone()),
            error: None,
        };
        let refuse = |mut answer: UsageEventResult, status: UsageEventStatus, message: String| {
            answer.error = Some(serde_json::json!({"code": status.to_string(), "message": message}));
            answer.status = Some(status);
            answer
        };
        let at = event.effective_start_time;
        if !(event.quantity.is_finite() && event.quantity > 0.0) {
            return refuse(
                answer,
                UsageEventStatus::InvalidQuantity,
                "The quantity must be greater than 0.".into(),
            );
        }
        if at > now {
            return refuse(
                answer,
                UsageEventStatus::BadArgument,
                "The effectiveStartTime is in the future.".into(),
            );
        }
        if now - at > chrono::Duration::hours(24) {
            return refuse(answer, UsageEventStatus::Expired, "The usage event has expired.".into());
        }
        let Some(subscription) = self.subscriptions.get(&event.resource_id) else {
            return refuse(answer, UsageEventStatus::ResourceNotFound, "The resource was not found.".into());
        };
        if subscription.status != Some(SubscriptionStatus::Subscribed) {
            return refuse(
                answer,
                UsageEventStatus::ResourceNotActive,
                "The subscription is not Subscribed.".into(),
            );
        }
        if subscription.plan_id.as_ref() != Some(&event.plan_id) {
            return refuse(
                answer,
                UsageEventStatus::BadArgument,
                "The planId is not the subscription's.".into(),
            );
        }
        if !self.dimensions.get(&event.plan_id).is_some_and(|d| d.contains(&event.dimension)) {
            return refuse(
                answer,
                UsageEventStatus::InvalidDimension,
                "The plan has no such dimension.".into(),
            );
        }
        let hour = crate::store::usage::hour_of(at);
        let earlier = self.usage.iter().find(|u| {
            u.event.resource_id == event.resource_id
                && u.event.dimension == event.dimension
                && crate::store::usage::hour_of(u.event.effective_start_time) == hour
        });
        if let Some(earlier) = earlier {
            let mut accepted = serde_json::to_value(&earlier.answer).expect("an answer serializes");
            accepted["status"] = "Duplicate".into();
            answer.error = Some(serde_json::json!({
                "code": "Conflict",
                "message": "This usage event already exist.",
                "additionalInfo": {"acceptedMessage": accepted},
            }));
            answer.status = Some(UsageEventStatus::Duplicate);
            return answer;
        }
        self.counter += 1;
        answer.usage_event_id = Some(format!("00000000-0000-4000-9000-{:012x}", self.counter));
        answer.status = Some(UsageEventStatus::Accepted);
        let offer_id = subscription.offer_id.clone();
        self.usage.push(AcceptedUsage { event: event.clone(), offer_id, answer: answer.clone() });
        answer
    }

    /// `GET /usageEvents`: accepted usage per day, resource, dimension and plan.
    fn usage_record(&self, query: &UsageQuery, now: Timestamp) -> Vec<UsageRecord> {
        let day = |t: Timestamp| t.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let end = query.usage_end_date.unwrap_or(now);
        let mut days: BTreeMap<(Timestamp, String, String, String), UsageRecord> = BTreeMap::new();
        for u in &self.usage {
            let (e, at) = (&u.event, u.event.effective_start_time);
            let wanted = day(at) >= day(query.usage_start_date)
                && at <= end
                && query.offer_id.as_ref().is_none_or(|o| Some(o) == u.offer_id.as_ref())
                && query.plan_id.as_ref().is_none_or(|p| *p == e.plan_id)
                && query.dimension.as_ref().is_none_or(|d| *d == e.dimension);
            if !wanted {
                continue;
            }
            let key = (day(at), e.resource_id.to_string(), e.dimension.clone(), e.plan_id.to_string());
            let record = days.entry(key).or_insert_with(|| UsageRecord {
                usage_date: Some(day(at)),
                usage_resource_id: Some(e.resource_id.to_string()),
                dimension: Some(e.dimension.clone()),
                plan_id: Some(e.plan_id.to_string()),
                plan_name: None,
                offer_id: u.offer_id.clone(),
                offer_name: None,
                offer_type: Some("SaaS".into()),
                azure_subscription_id: None,
                recon_status: Some(ReconStatus::Accepted),
                submitted_quantity: Some(0.0),
                processed_quantity: Some(0.0),
                submitted_count: Some(0),
            });
            *record.submitted_quantity.get_or_insert(0.0) += e.quantity;
            *record.processed_quantity.get_or_insert(0.0) += e.quantity;
            *record.submitted_count.get_or_insert(0) += 1;
        }
        days.into_values().collect()
    }
}
