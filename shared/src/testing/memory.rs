//! [`SubscriptionStore`] in memory, with the DynamoDB adapter's semantics (one transaction per
//! change, the same conditions, the same page tokens): checked by [`super::contract`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::domain::{OperationId, PlanId, SubscriptionId, Timestamp};
use crate::store::dynamodb::layout;
use crate::store::usage::{Added, HourKey, HourState, UsageHour, UsageReport, UsageStore, hour_of};
use crate::store::{
    Change, Committed, HistoryEntry, HistoryPage, ListFilter, ListPage, OperationRecord, ReconcileCheckpoint,
    RejectedDelivery, StateWrite, StoreError, SubscriptionRecord, SubscriptionStore, page_token,
};

#[derive(Debug, Default)]
struct Tables {
    records: BTreeMap<SubscriptionId, SubscriptionRecord>,
    operations: HashMap<(SubscriptionId, OperationId), OperationRecord>,
    /// By subscription, then by the history sort key (time first).
    history: BTreeMap<(SubscriptionId, String), HistoryEntry>,
    rejected: Vec<RejectedDelivery>,
    /// Every history entry in commit order: what the table's stream carries.
    stream: Vec<HistoryEntry>,
    checkpoint: Option<ReconcileCheckpoint>,
    /// Usage hours by their key.
    usage: BTreeMap<HourKey, UsageHour>,
    /// Report keys by subscription: the usage each added.
    usage_keys: HashMap<(SubscriptionId, String), (String, Timestamp, f64)>,
}

/// The in-memory store; clones share the same tables.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, by id.
    pub fn records(&self) -> Vec<SubscriptionRecord> {
        self.tables.lock().expect("tables").records.values().cloned().collect()
    }

    /// The history entries written so far, as the table's stream delivers them to Lambda (one
    /// batch, in commit order).
    pub fn stream_batch(&self) -> serde_json::Value {
        super::stream_batch(&self.tables.lock().expect("tables").stream)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Tables) -> T) -> T {
        f(&mut self.tables.lock().expect("tables"))
    }
}

impl SubscriptionStore for MemoryStore {
    async fn get(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRecord>, StoreError> {
        Ok(self.with(|t| t.records.get(id).cloned()))
    }

    async fn apply(&self, change: &Change) -> Result<Committed, StoreError> {
        let id = change.subscription_id().clone();
        self.with(|t| {
            // As DynamoDB reports it: a known operation id wins over every other failed condition.
            let operation_key = (id.clone(), change.operation.id.clone());
            if t.operations.contains_key(&operation_key) {
                return Ok(Committed::Duplicate);
            }
            let stored = t.records.get(&id).map(|r| r.version);
            let (state_holds, version) = match &change.state {
                StateWrite::Create(record) => (stored.is_none(), record.version),
                StateWrite::Replace { expected_version, record } => {
                    (stored == Some(*expected_version), record.version)
                }
                StateWrite::Keep { expected_version } => {
                    (stored == *expected_version, change.history.version)
                }
            };
            let history_key = (id.clone(), layout::event(change.history.at, &change.history.operation_id));
            if !state_holds || t.history.contains_key(&history_key) {
                return Err(StoreError::Conflict { subscription_id: id.clone() });
            }
            if let StateWrite::Create(record) | StateWrite::Replace { record, .. } = &change.state {
                t.records.insert(id.clone(), record.clone());
            }
            t.operations.insert(operation_key, change.operation.clone());
            t.history.insert(history_key, change.history.clone());
            t.stream.push(change.history.clone());
            Ok(Committed::Written { version })
        })
    }

    async fn get_many(&self, ids: &[SubscriptionId]) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let unique: std::collections::BTreeSet<&SubscriptionId> = ids.iter().collect();
        Ok(self.with(|t| unique.into_iter().filter_map(|id| t.records.get(id).cloned()).collect()))
    }

    async fn list(
        &self,
        filter: &ListFilter,
        page: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, StoreError> {
        let after = match page.map(page_token::parse).transpose()? {
            Some((partition, _)) => Some(
                partition
                    .strip_prefix("SUB#")
                    .and_then(SubscriptionId::parse)
                    .ok_or(StoreError::InvalidPageToken)?,
            ),
            None => None,
        };
        let limit = limit.clamp(1, 1000) as usize;
        Ok(self.with(|t| {
            // Like a DynamoDB scan: `limit` items are examined, then filtered.
            let examined: Vec<&SubscriptionRecord> = t
                .records
                .values()
                .filter(|r| after.as_ref().is_none_or(|a| &r.subscription.id > a))
                .take(limit)
                .collect();
            let next =
                (examined.len() == limit).then(|| page_token::after(&examined[limit - 1].subscription.id));
            let subscriptions = examined
                .into_iter()
                .filter(|r| filter.status.as_ref().is_none_or(|s| r.subscription.status.as_ref() == Some(s)))
                .filter(|r| {
                    filter.offer_id.as_ref().is_none_or(|o| r.subscription.offer_id.as_ref() == Some(o))
                })
                .cloned()
                .collect();
            ListPage { subscriptions, next }
        }))
    }

    async fn operation(
        &self,
        subscription_id: &SubscriptionId,
        operation_id: &OperationId,
    ) -> Result<Option<OperationRecord>, StoreError> {
        Ok(self.with(|t| t.operations.get(&(subscription_id.clone(), operation_id.clone())).cloned()))
    }

    async fn history(&self, id: &SubscriptionId) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self.with(|t| {
            t.history.iter().filter(|((sub, _), _)| sub == id).map(|(_, entry)| entry.clone()).collect()
        }))
    }

    async fn history_page(
        &self,
        id: &SubscriptionId,
        page: Option<&str>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        let after = page.map(|token| page_token::history_position(token, id)).transpose()?;
        let limit = limit.clamp(1, 1000) as usize;
        Ok(self.with(|t| {
            let entries: Vec<(String, HistoryEntry)> = t
                .history
                .iter()
                .filter(|((sub, sort), _)| sub == id && after.as_ref().is_none_or(|a| sort > a))
                .take(limit)
                .map(|((_, sort), entry)| (sort.clone(), entry.clone()))
                .collect();
            // As DynamoDB: a full page says where it stopped, whether or not more follows.
            let next = (entries.len() == limit)
                .then(|| entries.last().map(|(sort, _)| page_token::new(&layout::partition(id), sort)))
                .flatten();
            HistoryPage { entries: entries.into_iter().map(|(_, e)| e).collect(), next }
        }))
    }

    async fn record_rejected(&self, delivery: &RejectedDelivery) -> Result<(), StoreError> {
        self.with(|t| t.rejected.push(delivery.clone()));
        Ok(())
    }

    async fn rejected_on(&self, day: chrono::NaiveDate) -> Result<Vec<RejectedDelivery>, StoreError> {
        Ok(self.with(|t| {
            let mut found: Vec<_> =
                t.rejected.iter().filter(|d| d.received_at.date_naive() == day).cloned().collect();
            found.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
            found
        }))
    }

    async fn by_beneficiary_tenant(&self, tenant_id: &str) -> Result<Vec<SubscriptionRecord>, StoreError> {
        Ok(self.with(|t| {
            t.records
                .values()
                .filter(|r| r.subscription.beneficiary_tenant_id() == Some(tenant_id))
                .cloned()
                .collect()
        }))
    }

    async fn checkpoint(&self) -> Result<Option<ReconcileCheckpoint>, StoreError> {
        Ok(self.with(|t| t.checkpoint.clone()))
    }

    async fn save_checkpoint(&self, checkpoint: &ReconcileCheckpoint) -> Result<u64, StoreError> {
        self.with(|t| {
            let stored = t.checkpoint.as_ref().map_or(0, |c| c.version);
            if stored != checkpoint.version {
                return Err(StoreError::CheckpointTaken);
            }
            let version = checkpoint.version + 1;
            t.checkpoint = Some(ReconcileCheckpoint { version, ..checkpoint.clone() });
            Ok(version)
        })
    }
}

impl UsageStore for MemoryStore {
    async fn add_usage_to(
        &self,
        report: &UsageReport,
        hour: Timestamp,
        plan: &PlanId,
        now: Timestamp,
    ) -> Result<Added, StoreError> {
        let key = HourKey {
            subscription_id: report.subscription_id.clone(),
            dimension: report.dimension.clone(),
            hour,
        };
        let remembered = (report.dimension.clone(), hour_of(report.at), report.quantity);
        Ok(self.with(|t| {
            let report_key = (report.subscription_id.clone(), report.key.clone());
            if let Some(seen) = t.usage_keys.get(&report_key) {
                return if *seen == remembered { Added::Repeated } else { Added::KeyReused };
            }
            if let Some(existing) = t.usage.get(&key).filter(|h| h.state != HourState::Open) {
                return Added::HourClosed(existing.state.clone());
            }
            t.usage_keys.insert(report_key, remembered);
            let entry = t.usage.entry(key).or_insert_with(|| UsageHour {
                subscription_id: report.subscription_id.clone(),
                dimension: report.dimension.clone(),
                hour,
                plan_id: plan.clone(),
                quantity: 0.0,
                reports: 0,
                state: HourState::Open,
                updated_at: now,
            });
            entry.quantity += report.quantity;
            entry.reports += 1;
            entry.updated_at = now;
            Added::Added
        }))
    }

    async fn unsettled(&self, hour: Timestamp) -> Result<Vec<UsageHour>, StoreError> {
        Ok(self.with(|t| {
            t.usage.values().filter(|h| h.hour == hour && !h.state.is_settled()).cloned().collect()
        }))
    }

    async fn close_hour(&self, key: &HourKey, now: Timestamp) -> Result<Option<UsageHour>, StoreError> {
        Ok(self.with(|t| {
            let hour = t.usage.get_mut(key)?;
            if hour.state == HourState::Open {
                hour.state =
                    HourState::Sending { sent_quantity: hour.quantity, attempts: 0, last_error: None };
                hour.updated_at = now;
            }
            Some(hour.clone())
        }))
    }

    async fn record_send(&self, hour: &UsageHour) -> Result<(), StoreError> {
        self.with(|t| match t.usage.get_mut(&hour.key()) {
            Some(stored) if matches!(stored.state, HourState::Sending { .. }) => {
                *stored = hour.clone();
                Ok(())
            }
            _ => Err(StoreError::Conflict { subscription_id: hour.subscription_id.clone() }),
        })
    }

    async fn usage_of(
        &self,
        id: &SubscriptionId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageHour>, StoreError> {
        Ok(self.with(|t| {
            let mut hours: Vec<UsageHour> = t
                .usage
                .values()
                .filter(|h| &h.subscription_id == id && h.hour >= from && h.hour <= to)
                .cloned()
                .collect();
            // The table's order: by hour, then by dimension.
            hours.sort_by(|a, b| (a.hour, &a.dimension).cmp(&(b.hour, &b.dimension)));
            hours
        }))
    }
}
