//! What a store costs: read capacity consumed, and DynamoDB operations called. Both opt-in,
//! for benchmarks and the tests that pin the cost of an operation down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
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
/// whatever the SDK retries underneath. Opt-in (`DynamoDbStore::with_operation_counts`).
#[derive(Debug, Default)]
pub struct OperationCounts {
    counts: Mutex<BTreeMap<String, u64>>,
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
        _: &BeforeSerializationInterceptorContextRef<'_>,
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
        Ok(())
    }
}
