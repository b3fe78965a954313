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

/// Capacity units consumed, by operation name, as DynamoDB reports them: every call asks
/// for `ReturnConsumedCapacity::Total` and adds what it cost. Read units for reads
/// (GetItem, BatchGetItem, Query), write units for the rest. Opt-in
/// (`DynamoDbStore::with_capacity_meter`), for the cost tests and benchmarks.
#[derive(Debug, Default)]
pub struct CapacityMeter {
    units: Mutex<BTreeMap<String, f64>>,
}

impl CapacityMeter {
    /// Units so far, by operation name.
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        self.units.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Read units so far: GetItem, BatchGetItem and Query.
    pub fn read_units(&self) -> f64 {
        self.sum(true)
    }

    /// Write units so far: everything else.
    pub fn write_units(&self) -> f64 {
        self.sum(false)
    }

    fn sum(&self, reads: bool) -> f64 {
        self.snapshot()
            .into_iter()
            .filter(|(name, _)| READS.contains(&name.as_str()) == reads)
            .map(|(_, units)| units)
            .sum()
    }

    pub fn reset(&self) {
        self.units.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn add(&self, operation: &str, units: f64) {
        *self
            .units
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(operation.to_owned())
            .or_default() += units;
    }
}

const READS: [&str; 3] = ["GetItem", "BatchGetItem", "Query"];

/// Sets `return_consumed_capacity` on every input type listed, and sums the capacity of
/// every output type listed: the SDK's inputs and outputs are distinct types with the same
/// field, so one macro covers them.
macro_rules! each_metered_operation {
    ($apply:ident) => {
        $apply!(get_item, GetItemInput, GetItemOutput, one);
        $apply!(put_item, PutItemInput, PutItemOutput, one);
        $apply!(update_item, UpdateItemInput, UpdateItemOutput, one);
        $apply!(delete_item, DeleteItemInput, DeleteItemOutput, one);
        $apply!(query, QueryInput, QueryOutput, one);
        $apply!(batch_get_item, BatchGetItemInput, BatchGetItemOutput, many);
        $apply!(
            batch_write_item,
            BatchWriteItemInput,
            BatchWriteItemOutput,
            many
        );
        $apply!(
            transact_write_items,
            TransactWriteItemsInput,
            TransactWriteItemsOutput,
            many
        );
    };
}

fn units_of(consumed: &aws_sdk_dynamodb::types::ConsumedCapacity) -> f64 {
    consumed.capacity_units().unwrap_or_default()
}

/// The interceptor behind `CapacityMeter`.
#[derive(Debug)]
pub(super) struct Meter(pub(super) Arc<CapacityMeter>);

impl Intercept for Meter {
    fn name(&self) -> &'static str {
        "wsbridge::CapacityMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::types::ReturnConsumedCapacity;
        macro_rules! ask {
            ($module:ident, $input:ident, $output:ident, $shape:ident) => {
                if let Some(input) = context
                    .input_mut()
                    .downcast_mut::<aws_sdk_dynamodb::operation::$module::$input>()
                {
                    input.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
                }
            };
        }
        each_metered_operation!(ask);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef<
            '_,
        >,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        let name = cfg
            .load::<Metadata>()
            .map_or("unknown", |metadata| metadata.name());
        macro_rules! sum {
            ($module:ident, $input:ident, $output:ident, one) => {
                if let Some(out) =
                    output.downcast_ref::<aws_sdk_dynamodb::operation::$module::$output>()
                {
                    self.0
                        .add(name, out.consumed_capacity().map_or(0.0, units_of));
                }
            };
            ($module:ident, $input:ident, $output:ident, many) => {
                if let Some(out) =
                    output.downcast_ref::<aws_sdk_dynamodb::operation::$module::$output>()
                {
                    self.0
                        .add(name, out.consumed_capacity().iter().map(units_of).sum());
                }
            };
        }
        each_metered_operation!(sum);
        Ok(())
    }
}
