//! A store wrapper that runs scripted steps before chosen writes: another writer getting in
//! between a read and a write, an outage, or a write whose answer is lost. Deterministic: steps
//! are tied to the n-th call of `apply`, never to time.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::domain::{OperationId, PlanId, SubscriptionId, Timestamp};
use crate::store::usage::{Added, HourKey, UsageHour, UsageReport, UsageStore};
use crate::store::{
    Change, Committed, HistoryEntry, HistoryPage, ListFilter, ListPage, OperationRecord, ReconcileCheckpoint,
    RejectedDelivery, StoreError, SubscriptionRecord, SubscriptionStore,
};

type Writer<S> = Box<dyn FnOnce(S) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What happens at one `apply` call.
pub enum StoreStep<S> {
    /// Another writer runs on the store first (it gets the inner store), then the call proceeds.
    Interleave(Writer<S>),
    /// The store is unavailable: the call fails and writes nothing.
    Outage,
    /// The write commits but its answer is lost: the caller sees the store unavailable.
    LostAnswer,
}

impl<S> StoreStep<S> {
    /// A second writer: `write` runs on the inner store before the call it is tied to.
    pub fn interleave<F, Fut>(write: F) -> Self
    where
        F: FnOnce(S) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::Interleave(Box::new(move |store| Box::pin(write(store))))
    }
}

struct Script<S> {
    applies: usize,
    steps: BTreeMap<usize, StoreStep<S>>,
    /// Every call fails while set.
    down: bool,
    /// Every call is refused (as a missing table or permission would) while set.
    refusing: bool,
    /// Every call takes this long first.
    delay: std::time::Duration,
    /// So many more `get_many` calls fail.
    failing_batch_reads: usize,
}

/// Wraps `S` (cloned for each interleaved writer); clones share the script.
#[derive(Clone)]
pub struct ScriptedStore<S> {
    inner: S,
    script: Arc<Mutex<Script<S>>>,
}

fn outage(action: &'static str) -> StoreError {
    StoreError::Unavailable { action, source: "scripted outage".into() }
}

impl<S: SubscriptionStore + Clone + 'static> ScriptedStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            script: Arc::new(Mutex::new(Script {
                applies: 0,
                steps: BTreeMap::new(),
                down: false,
                refusing: false,
                delay: std::time::Duration::ZERO,
                failing_batch_reads: 0,
            })),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Runs `step` at the `n`-th `apply` from now (1 for the next one).
    pub fn at_apply(&self, n: usize, step: StoreStep<S>) {
        let mut script = self.script.lock().expect("script");
        let at = script.applies + n;
        script.steps.insert(at, step);
    }

    /// Drops every step not run yet and brings the store up.
    pub fn clear(&self) {
        let mut script = self.script.lock().expect("script");
        script.steps.clear();
        script.down = false;
        script.refusing = false;
    }

    /// While down, every call fails as unavailable.
    pub fn set_down(&self, down: bool) {
        self.script.lock().expect("script").down = down;
    }

    /// How many `apply` calls were made.
    pub fn applies(&self) -> usize {
        self.script.lock().expect("script").applies
    }

    /// Every call takes this long before it acts (a slow table).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.script.lock().expect("script").delay = delay;
    }

    /// The next `n` batch reads (`get_many`) fail as unavailable (e.g. DynamoDB throttling).
    pub fn fail_batch_reads(&self, n: usize) {
        self.script.lock().expect("script").failing_batch_reads = n;
    }

    /// While refusing, every call fails as refused (not retryable).
    pub fn set_refusing(&self, refusing: bool) {
        self.script.lock().expect("script").refusing = refusing;
    }

    async fn check(&self, action: &'static str) -> Result<(), StoreError> {
        let delay = self.script.lock().expect("script").delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let script = self.script.lock().expect("script");
        if script.refusing {
            return Err(StoreError::Refused { action, source: "scripted refusal".into() });
        }
        if script.down { Err(outage(action)) } else { Ok(()) }
    }
}

impl<S: SubscriptionStore + Clone + 'static> SubscriptionStore for ScriptedStore<S> {
    async fn get(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRecord>, StoreError> {
        self.check("get subscription").await?;
        self.inner.get(id).await
    }

    async fn apply(&self, change: &Change) -> Result<Committed, StoreError> {
        self.check("apply change").await?;
        let step = {
            let mut script = self.script.lock().expect("script");
            script.applies += 1;
            let n = script.applies;
            script.steps.remove(&n)
        };
        match step {
            Some(StoreStep::Interleave(write)) => write(self.inner.clone()).await,
            Some(StoreStep::Outage) => return Err(outage("apply change")),
            Some(StoreStep::LostAnswer) => {
                self.inner.apply(change).await?;
                return Err(outage("apply change"));
            }
            None => {}
        }
        self.inner.apply(change).await
    }

    async fn get_many(&self, ids: &[SubscriptionId]) -> Result<Vec<SubscriptionRecord>, StoreError> {
        self.check("get subscriptions").await?;
        {
            let mut script = self.script.lock().expect("script");
            if script.failing_batch_reads > 0 {
                script.failing_batch_reads -= 1;
                return Err(outage("get subscriptions"));
            }
        }
        self.inner.get_many(ids).await
    }

    async fn list(
        &self,
        filter: &ListFilter,
        page: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, StoreError> {
        self.check("list subscriptions").await?;
        self.inner.list(filter, page, limit).await
    }

    async fn operation(
        &self,
        subscription_id: &SubscriptionId,
        operation_id: &OperationId,
    ) -> Result<Option<OperationRecord>, StoreError> {
        self.check("get operation").await?;
        self.inner.operation(subscription_id, operation_id).await
    }

    async fn history(&self, id: &SubscriptionId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.check("read history").await?;
        self.inner.history(id).await
    }

    async fn history_page(
        &self,
        id: &SubscriptionId,
        page: Option<&str>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        self.check("read history").await?;
        self.inner.history_page(id, page, limit).await
    }

    async fn record_rejected(&self, delivery: &RejectedDelivery) -> Result<(), StoreError> {
        self.check("record rejected delivery").await?;
        self.inner.record_rejected(delivery).await
    }

    async fn rejected_on(&self, day: chrono::NaiveDate) -> Result<Vec<RejectedDelivery>, StoreError> {
        self.check("read rejected deliveries").await?;
        self.inner.rejected_on(day).await
    }

    async fn by_beneficiary_tenant(&self, tenant_id: &str) -> Result<Vec<SubscriptionRecord>, StoreError> {
        self.check("find by beneficiary tenant").await?;
        self.inner.by_beneficiary_tenant(tenant_id).await
    }

    async fn checkpoint(&self) -> Result<Option<ReconcileCheckpoint>, StoreError> {
        self.check("read the reconciliation's checkpoint").await?;
        self.inner.checkpoint().await
    }

    async fn save_checkpoint(&self, checkpoint: &ReconcileCheckpoint) -> Result<u64, StoreError> {
        self.check("save the reconciliation's checkpoint").await?;
        self.inner.save_checkpoint(checkpoint).await
    }
}

/// Usage goes to the inner store, with the same outage, refusal and delay as every other call.
impl<S: SubscriptionStore + UsageStore + Clone + 'static> UsageStore for ScriptedStore<S> {
    async fn add_usage_to(
        &self,
        report: &UsageReport,
        hour: Timestamp,
        plan: &PlanId,
        now: Timestamp,
    ) -> Result<Added, StoreError> {
        self.check("add usage").await?;
        self.inner.add_usage_to(report, hour, plan, now).await
    }

    async fn unsettled(&self, hour: Timestamp) -> Result<Vec<UsageHour>, StoreError> {
        self.check("list unsettled usage").await?;
        self.inner.unsettled(hour).await
    }

    async fn close_hour(&self, key: &HourKey, now: Timestamp) -> Result<Option<UsageHour>, StoreError> {
        self.check("close usage hour").await?;
        self.inner.close_hour(key, now).await
    }

    async fn record_send(&self, hour: &UsageHour) -> Result<(), StoreError> {
        self.check("record usage sent").await?;
        self.inner.record_send(hour).await
    }

    async fn usage_of(
        &self,
        id: &SubscriptionId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageHour>, StoreError> {
        self.check("read usage").await?;
        self.inner.usage_of(id, from, to).await
    }
}
