//! Transactions DynamoDB cancels because an item was throttled.
//!
//! DynamoDB answers a `TransactWriteItems` that one of its items throttled with
//! `TransactionCanceledException` and a `ThrottlingError` (or `ProvisionedThroughputExceeded`)
//! cancellation reason, not with a throttling error code. The SDK's standard retry only knows
//! the codes, so it would not retry it, and the store would call it a rejected request (a bug
//! to fix) instead of throttling. A cancelled transaction wrote nothing, so it is retried like
//! any throttled call: same attempts, same backoff, same retry quota.

use std::any::Any;

use aws_sdk_dynamodb::config::interceptors::InterceptorContext;
use aws_sdk_dynamodb::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

/// Whether DynamoDB cancelled the transaction for throttling alone. A failed condition among
/// the reasons decides the outcome instead: retrying would fail it again.
pub(super) fn throttled(error: &TransactWriteItemsError) -> bool {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = error else {
        return false;
    };
    let codes = || cancelled.cancellation_reasons().iter().map(|r| r.code());
    codes().any(|code| {
        matches!(
            code,
            Some("ThrottlingError" | "ProvisionedThroughputExceeded")
        )
    }) && !codes().any(|code| code == Some("ConditionalCheckFailed"))
}

/// `throttled`, for a service error of any operation.
pub(super) fn is_throttled_transaction(error: &dyn Any) -> bool {
    error
        .downcast_ref::<TransactWriteItemsError>()
        .is_some_and(throttled)
}

/// Tells the SDK's retry strategy that a transaction cancelled for throttling is throttling.
#[derive(Debug)]
pub(super) struct ThrottledTransactions;

impl ClassifyRetry for ThrottledTransactions {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let cancelled = match ctx.output_or_error() {
            Some(Err(error)) => error
                .as_operation_error()
                .and_then(|e| e.downcast_ref::<TransactWriteItemsError>())
                .is_some_and(throttled),
            _ => false,
        };
        if cancelled {
            RetryAction::throttling_error()
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "wsbridge::ThrottledTransactions"
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::SdkError;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_smithy_types::body::SdkBody;

    use super::super::backend;
    use super::*;
    use crate::store::{Failure, StoreError};

    /// The store's error for a transaction DynamoDB cancelled with these reasons.
    fn cancelled(codes: &[&str]) -> StoreError {
        let reasons = codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect();
        let error = TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons))
                .build(),
        );
        let raw = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
        backend("TransactWriteItems", SdkError::service_error(error, raw))
    }

    #[test]
    fn a_transaction_cancelled_for_throttling_is_throttled_and_a_failed_condition_is_not() {
        for (codes, failure) in [
            (&["ThrottlingError", "None"][..], Failure::Throttled),
            (
                &["None", "ProvisionedThroughputExceeded"][..],
                Failure::Throttled,
            ),
            // A failed condition decides: retrying would fail it again.
            (
                &["ThrottlingError", "ConditionalCheckFailed"][..],
                Failure::Rejected,
            ),
            (&["ValidationError"][..], Failure::Rejected),
        ] {
            let error = cancelled(codes);
            let StoreError::Backend { failure: found, .. } = &error else {
                panic!("{error:?}");
            };
            assert_eq!(*found, failure, "{codes:?}");
        }
    }
}
