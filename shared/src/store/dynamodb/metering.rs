//! What a store costs: read capacity consumed, and DynamoDB operations called. Both opt-in,
//! for benchmarks and the tests that pin the cost of an operation down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::query::QueryInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// Read capacity units consumed by a store's Query and BatchGetItem calls, summed. Opt-in
/// (`DynamoDbStore::with_consumed_capacity`): asking for it makes every response longer, and
/// only benchmarks and cost checks need it.
#[derive(Debug, Default)]
pub struct ConsumedCapacity {
    // Eventually consistent reads come in half units: an f64 sum of them stays exact.
    units: Mutex<f64>,
}

impl ConsumedCapacity {
    /// Read capacity units consumed so far.
    pub fn read_units(&self) -> f64 {
        *self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
        if let Some(units) = consumed.and_then(|c| c.capacity_units()) {
            *self.units.lock().unwrap_or_else(|p| p.into_inner()) += units;
        }
    }
}

/// DynamoDB operations called, by name (`GetItem`, `TransactWriteItems`, …): one per call,
/// whatever the SDK retries underneath; and the item writes inside transactions, which IAM
/// authorizes one by one. Opt-in (`DynamoDbStore::with_operation_counts`).
#[derive(Debug, Default)]
pub struct OperationCounts {
    counts: Mutex<BTreeMap<String, u64>>,
    /// `PutItem`, `UpdateItem`, `DeleteItem`, `ConditionCheckItem` seen inside a
    /// `TransactWriteItems`.
    in_transactions: Mutex<BTreeSet<String>>,
    /// What Query calls read: `table`, or an index's name.
    queried: Mutex<BTreeSet<String>>,
}

impl OperationCounts {
    /// Calls so far, by operation name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls so far, all operations.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Forgets what was counted, so a test can measure one step.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.in_transactions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.queried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// What the Query calls so far read: `table` and index names, which IAM authorizes
    /// resource by resource.
    pub fn queried(&self) -> BTreeSet<String> {
        self.queried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The IAM actions the calls so far needed (`dynamodb:GetItem`, …): each operation's own,
    /// and for a `TransactWriteItems` the actions of the items it wrote, since IAM checks a
    /// transaction item by item.
    pub fn iam_actions(&self) -> BTreeSet<String> {
        let direct = self
            .snapshot()
            .into_keys()
            .filter(|name| name != "TransactWriteItems");
        direct
            .chain(self.transaction_items())
            .map(|name| format!("dynamodb:{name}"))
            .collect()
    }

    /// Item actions used inside transactions (`PutItem`, …).
    pub fn transaction_items(&self) -> BTreeSet<String> {
        self.in_transactions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The interceptor behind `OperationCounts`: it sees each operation once, before it is
/// serialized (client interceptors see `before_execution` ahead of the operation's own
/// configuration, which is where its name is), and reads the name from its metadata.
#[derive(Debug)]
pub(super) struct Counter(pub(super) Arc<OperationCounts>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "wsbridge::OperationCounter"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map_or("unknown", |metadata| metadata.name());
        *self
            .0
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default() += 1;
        if let Some(input) = context.input().downcast_ref::<QueryInput>() {
            self.0
                .queried
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(input.index_name().unwrap_or("table").to_owned());
        }
        if let Some(input) = context.input().downcast_ref::<TransactWriteItemsInput>() {
            let mut seen = self
                .0
                .in_transactions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for item in input.transact_items() {
                let action = if item.put().is_some() {
                    "PutItem"
                } else if item.update().is_some() {
                    "UpdateItem"
                } else if item.delete().is_some() {
                    "DeleteItem"
                } else {
                    "ConditionCheckItem"
                };
                seen.insert(action.to_owned());
            }
        }
        Ok(())
    }
}
