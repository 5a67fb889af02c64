//! The IAM actions a DynamoDB client's calls need, as they are sent: an interceptor that records,
//! for every call, each action with the table (and index) it acts on. DynamoDB Local enforces no
//! IAM, so tests compare what a function's code sends with what `template.yaml` grants it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::{
    batch_get_item::BatchGetItemInput, batch_write_item::BatchWriteItemInput, delete_item::DeleteItemInput,
    get_item::GetItemInput, put_item::PutItemInput, query::QueryInput, scan::ScanInput,
    transact_get_items::TransactGetItemsInput, transact_write_items::TransactWriteItemsInput,
    update_item::UpdateItemInput,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One action on one resource: `("dynamodb:Query", "usage-…", Some("ByUnsettledHour"))`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Needed {
    pub action: &'static str,
    pub table: String,
    pub index: Option<String>,
}

/// The actions sent through the clients it is attached to.
#[derive(Debug, Clone, Default)]
pub struct ActionRecorder {
    needed: Arc<Mutex<BTreeSet<Needed>>>,
}

impl ActionRecorder {
    /// `client` with this recorder attached.
    pub fn attach(&self, client: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
        let config = client.config().to_builder().interceptor(self.clone()).build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// Every action recorded so far.
    pub fn needed(&self) -> BTreeSet<Needed> {
        self.needed.lock().expect("not poisoned").clone()
    }

    fn add(&self, action: &'static str, table: Option<&str>, index: Option<&str>) {
        let needed =
            Needed { action, table: table.unwrap_or_default().to_owned(), index: index.map(str::to_owned) };
        self.needed.lock().expect("not poisoned").insert(needed);
    }
}

impl Intercept for ActionRecorder {
    fn name(&self) -> &'static str {
        "ActionRecorder"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        if let Some(i) = input.downcast_ref::<GetItemInput>() {
            self.add("dynamodb:GetItem", i.table_name(), None);
        } else if let Some(i) = input.downcast_ref::<PutItemInput>() {
            self.add("dynamodb:PutItem", i.table_name(), None);
        } else if let Some(i) = input.downcast_ref::<UpdateItemInput>() {
            self.add("dynamodb:UpdateItem", i.table_name(), None);
        } else if let Some(i) = input.downcast_ref::<DeleteItemInput>() {
            self.add("dynamodb:DeleteItem", i.table_name(), None);
        } else if let Some(i) = input.downcast_ref::<QueryInput>() {
            self.add("dynamodb:Query", i.table_name(), i.index_name());
        } else if let Some(i) = input.downcast_ref::<ScanInput>() {
            self.add("dynamodb:Scan", i.table_name(), i.index_name());
        } else if let Some(i) = input.downcast_ref::<BatchGetItemInput>() {
            for table in i.request_items().into_iter().flat_map(|items| items.keys()) {
                self.add("dynamodb:BatchGetItem", Some(table), None);
            }
        } else if let Some(i) = input.downcast_ref::<BatchWriteItemInput>() {
            for table in i.request_items().into_iter().flat_map(|items| items.keys()) {
                self.add("dynamodb:BatchWriteItem", Some(table), None);
            }
        } else if let Some(i) = input.downcast_ref::<TransactGetItemsInput>() {
            for get in i.transact_items().iter().filter_map(|item| item.get()) {
                self.add("dynamodb:GetItem", Some(get.table_name()), None);
            }
        } else if let Some(i) = input.downcast_ref::<TransactWriteItemsInput>() {
            // A transaction needs each of its items' own actions.
            for item in i.transact_items() {
                if let Some(put) = item.put() {
                    self.add("dynamodb:PutItem", Some(put.table_name()), None);
                }
                if let Some(update) = item.update() {
                    self.add("dynamodb:UpdateItem", Some(update.table_name()), None);
                }
                if let Some(check) = item.condition_check() {
                    self.add("dynamodb:ConditionCheckItem", Some(check.table_name()), None);
                }
                if let Some(delete) = item.delete() {
                    self.add("dynamodb:DeleteItem", Some(delete.table_name()), None);
                }
            }
        } else {
            return Err(format!("ActionRecorder does not know this call's input: {input:?}").into());
        }
        Ok(())
    }
}
