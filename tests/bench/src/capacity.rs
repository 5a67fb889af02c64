//! DynamoDB's request units as measured, not derived: an interceptor on the benchmark's own client
//! asks every item call for its consumed capacity and adds up what DynamoDB Local answers.
//! DynamoDB bills a transaction's item at twice a plain write (2 units per item up to 1 KB);
//! DynamoDB Local doubles a transaction's units only when it also writes an index entry, so a
//! transaction is counted at no less than 2 units per item, plus the index units it reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::{
    batch_get_item::{BatchGetItemInput, BatchGetItemOutput},
    batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput},
    delete_item::{DeleteItemInput, DeleteItemOutput},
    get_item::{GetItemInput, GetItemOutput},
    put_item::{PutItemInput, PutItemOutput},
    query::{QueryInput, QueryOutput},
    transact_get_items::{TransactGetItemsInput, TransactGetItemsOutput},
    transact_write_items::{TransactWriteItemsInput, TransactWriteItemsOutput},
    update_item::{UpdateItemInput, UpdateItemOutput},
};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_types::config_bag::{Storable, StoreReplace};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Read and write units consumed through the clients it is attached to, in thousandths.
#[derive(Debug, Clone, Default)]
pub struct CapacityMeter {
    read_milli: Arc<AtomicU64>,
    write_milli: Arc<AtomicU64>,
}

/// Units consumed between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Units {
    pub read: f64,
    pub write: f64,
}

impl std::ops::Add for Units {
    type Output = Units;
    fn add(self, other: Units) -> Units {
        Units { read: self.read + other.read, write: self.write + other.write }
    }
}

impl std::ops::Sub for Units {
    type Output = Units;
    fn sub(self, earlier: Units) -> Units {
        Units { read: self.read - earlier.read, write: self.write - earlier.write }
    }
}

impl CapacityMeter {
    /// `client` with this meter attached.
    pub fn attach(&self, client: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
        let config = client.config().to_builder().interceptor(self.clone()).build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// Everything consumed so far.
    pub fn units(&self) -> Units {
        Units {
            read: self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            write: self.write_milli.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    fn add(&self, counter: &AtomicU64, capacities: &[ConsumedCapacity]) {
        let units: f64 = capacities.iter().filter_map(|c| c.capacity_units).sum();
        counter.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    /// A transaction of `items`: the table's units at no less than 2 per item, and the indexes'.
    fn add_transaction(&self, counter: &AtomicU64, capacities: &[ConsumedCapacity], items: usize) {
        let table: f64 = capacities.iter().filter_map(|c| c.table.as_ref()?.capacity_units).sum();
        let indexes: f64 = capacities
            .iter()
            .flat_map(|c| c.global_secondary_indexes.iter().flat_map(|i| i.values()))
            .filter_map(|c| c.capacity_units)
            .sum();
        let units = table.max(2.0 * items as f64) + indexes;
        counter.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }
}

/// How many items the transaction being sent writes (its output does not say).
#[derive(Debug, Clone)]
struct TransactionItems(usize);

impl Storable for TransactionItems {
    type Storer = StoreReplace<Self>;
}

/// Sets `ReturnConsumedCapacity` on every input type the store sends.
macro_rules! ask_for_capacity {
    ($input:expr, $($kind:ty),+) => {
        $(if let Some(input) = $input.downcast_mut::<$kind>() {
            input.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
        })+
    };
}

impl Intercept for CapacityMeter {
    fn name(&self) -> &'static str {
        "CapacityMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        if let Some(transaction) = input.downcast_ref::<TransactWriteItemsInput>() {
            let items = transaction.transact_items.as_ref().map_or(0, Vec::len);
            cfg.interceptor_state().store_put(TransactionItems(items));
        }
        ask_for_capacity!(
            input,
            GetItemInput,
            PutItemInput,
            UpdateItemInput,
            DeleteItemInput,
            QueryInput,
            BatchGetItemInput,
            BatchWriteItemInput,
            TransactGetItemsInput,
            TransactWriteItemsInput
        );
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // A refused call (a failed condition, a cancelled transaction) is billed too, but DynamoDB
        // Local does not say how much: those are left out, and the benchmark has none.
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        let (read, write) = (&self.read_milli, &self.write_milli);
        let one = |c: &Option<ConsumedCapacity>| c.iter().cloned().collect::<Vec<_>>();
        if let Some(o) = output.downcast_ref::<GetItemOutput>() {
            self.add(read, &one(&o.consumed_capacity));
        } else if let Some(o) = output.downcast_ref::<QueryOutput>() {
            self.add(read, &one(&o.consumed_capacity));
        } else if let Some(o) = output.downcast_ref::<BatchGetItemOutput>() {
            self.add(read, o.consumed_capacity.as_deref().unwrap_or_default());
        } else if let Some(o) = output.downcast_ref::<TransactGetItemsOutput>() {
            let items = o.responses.as_ref().map_or(0, Vec::len);
            self.add_transaction(read, o.consumed_capacity.as_deref().unwrap_or_default(), items);
        } else if let Some(o) = output.downcast_ref::<PutItemOutput>() {
            self.add(write, &one(&o.consumed_capacity));
        } else if let Some(o) = output.downcast_ref::<UpdateItemOutput>() {
            self.add(write, &one(&o.consumed_capacity));
        } else if let Some(o) = output.downcast_ref::<DeleteItemOutput>() {
            self.add(write, &one(&o.consumed_capacity));
        } else if let Some(o) = output.downcast_ref::<BatchWriteItemOutput>() {
            self.add(write, o.consumed_capacity.as_deref().unwrap_or_default());
        } else if let Some(o) = output.downcast_ref::<TransactWriteItemsOutput>() {
            let items = cfg.load::<TransactionItems>().map_or(0, |t| t.0);
            self.add_transaction(write, o.consumed_capacity.as_deref().unwrap_or_default(), items);
        }
        Ok(())
    }
}
