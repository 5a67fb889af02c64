//! Microsoft's Metering API as the tests script it (feature `test-util`): each batch item is
//! answered with the status scripted for its subscription (`Accepted` otherwise), or the whole
//! batch fails as scripted: every per-item status on demand, which the fake marketplace of
//! `fulfillment::testing` (Microsoft's rules) cannot give. Only `post_usage_events` and
//! `get_usage_events` (what it accepted) are answered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use fulfillment::domain::{
    BatchUsageEventResult, Operation, OperationId, Plan, PlanId, ResolvedSubscription, Subscription,
    SubscriptionId, UsageEvent, UsageEventResult, UsageEventStatus, UsageQuery, UsageRecord,
};
use fulfillment::marketplace::{
    AckStatus, ApiError, Call, MarketplaceApi, MarketplaceError, OperationLocation, PageToken, ResponseMeta,
    SubscriptionsPage, UsageOutcome,
};

/// How a whole batch fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFault {
    /// 403: our app may not report usage for the offer.
    Forbidden,
    /// 503: Microsoft failed (the next run sends again).
    Unavailable,
}

#[derive(Default)]
struct Script {
    statuses: HashMap<SubscriptionId, UsageEventStatus>,
    faults: VecDeque<BatchFault>,
    correlation_ids: Vec<String>,
    sent: Vec<UsageEvent>,
    /// What it accepted: its usage record.
    accepted: Vec<UsageEvent>,
}

#[derive(Clone, Default)]
pub struct ScriptedMicrosoft(Arc<Mutex<Script>>);

impl ScriptedMicrosoft {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every item of `id` is answered with `status` from now on.
    pub fn answer(&self, id: &SubscriptionId, status: UsageEventStatus) {
        self.0.lock().expect("script").statuses.insert(id.clone(), status);
    }

    /// The next batch fails as a whole.
    pub fn fail_next(&self, fault: BatchFault) {
        self.0.lock().expect("script").faults.push_back(fault);
    }

    /// The correlation id of every batch call, in order.
    pub fn correlation_ids(&self) -> Vec<String> {
        self.0.lock().expect("script").correlation_ids.clone()
    }

    /// Every event sent, in order (failed batches included).
    pub fn sent(&self) -> Vec<UsageEvent> {
        self.0.lock().expect("script").sent.clone()
    }
}

fn failure(status: u16) -> (ApiError, ResponseMeta) {
    let error = ApiError { message: Some(format!("scripted {status}")), ..ApiError::default() };
    (error, ResponseMeta { status, ..ResponseMeta::default() })
}

const UNSCRIPTED: &str = "only the Metering API's batch call is scripted";

impl MarketplaceApi for ScriptedMicrosoft {
    async fn resolve(&self, _: &str, _: &Call) -> Result<ResolvedSubscription, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn activate(
        &self,
        _: &SubscriptionId,
        _: &PlanId,
        _: Option<u32>,
        _: &Call,
    ) -> Result<(), MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn list_subscriptions(
        &self,
        _: Option<&PageToken>,
        _: &Call,
    ) -> Result<SubscriptionsPage, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn get_subscription(&self, _: &SubscriptionId, _: &Call) -> Result<Subscription, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn list_available_plans(
        &self,
        _: &SubscriptionId,
        _: Option<&PlanId>,
        _: &Call,
    ) -> Result<Vec<Plan>, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn change_plan(
        &self,
        _: &SubscriptionId,
        _: &PlanId,
        _: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn change_quantity(
        &self,
        _: &SubscriptionId,
        _: u32,
        _: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn delete_subscription(
        &self,
        _: &SubscriptionId,
        _: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn list_outstanding_operations(
        &self,
        _: &SubscriptionId,
        _: &Call,
    ) -> Result<Vec<Operation>, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn get_operation(
        &self,
        _: &SubscriptionId,
        _: &OperationId,
        _: &Call,
    ) -> Result<Operation, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn update_operation_status(
        &self,
        _: &SubscriptionId,
        _: &OperationId,
        _: AckStatus,
        _: &Call,
    ) -> Result<(), MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn post_usage_event(&self, _: &UsageEvent, _: &Call) -> Result<UsageOutcome, MarketplaceError> {
        unreachable!("{UNSCRIPTED}")
    }

    async fn post_usage_events(
        &self,
        events: &[UsageEvent],
        call: &Call,
    ) -> Result<BatchUsageEventResult, MarketplaceError> {
        let mut script = self.0.lock().expect("script");
        script.correlation_ids.push(call.correlation_id.clone());
        script.sent.extend(events.iter().cloned());
        match script.faults.pop_front() {
            Some(BatchFault::Forbidden) => {
                let (error, meta) = failure(403);
                return Err(MarketplaceError::Forbidden { error, meta });
            }
            Some(BatchFault::Unavailable) => {
                let (error, meta) = failure(503);
                return Err(MarketplaceError::Server { error, meta });
            }
            None => {}
        }
        let result = events
            .iter()
            .map(|event| {
                let status =
                    script.statuses.get(&event.resource_id).cloned().unwrap_or(UsageEventStatus::Accepted);
                let accepted = status == UsageEventStatus::Accepted;
                if accepted {
                    script.accepted.push(event.clone());
                }
                UsageEventResult {
                    usage_event_id: accepted.then(|| format!("event-{}", event.resource_id)),
                    error: (!accepted)
                        .then(|| serde_json::json!({ "code": status.to_string(), "message": "scripted" })),
                    status: Some(status),
                    message_time: Some(event.effective_start_time),
                    resource_id: Some(event.resource_id.to_string()),
                    quantity: Some(event.quantity),
                    dimension: Some(event.dimension.clone()),
                    effective_start_time: Some(event.effective_start_time),
                    plan_id: Some(event.plan_id.clone()),
                }
            })
            .collect::<Vec<_>>();
        Ok(BatchUsageEventResult { count: Some(result.len() as u32), result })
    }

    /// What it accepted, one record per event (Microsoft adds them up per day).
    async fn get_usage_events(&self, _: &UsageQuery, _: &Call) -> Result<Vec<UsageRecord>, MarketplaceError> {
        let script = self.0.lock().expect("script");
        let records = script.accepted.iter().map(|event| {
            serde_json::from_value(serde_json::json!({
                "usageDate": event.effective_start_time,
                "usageResourceId": event.resource_id.to_string(),
                "dimension": event.dimension,
                "planId": event.plan_id.as_str(),
                "submittedQuantity": event.quantity,
                "processedQuantity": event.quantity,
                "submittedCount": 1,
            }))
            .expect("a usage record")
        });
        Ok(records.collect())
    }
}
