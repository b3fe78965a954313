//! The answers DynamoDB gives under stress, shaped as the service sends them (JSON 1.0
//! protocol: the error type in `__type`, after the `#`), and batch requests split into the
//! part that is processed and the part that is not.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{Answer, Upstream};

const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.0";

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
    response
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Answer {
    json_answer(status, &json!({"__type": error_type, "message": message}))
}

pub(super) fn provisioned_throughput_exceeded() -> Answer {
    error(
        StatusCode::BAD_REQUEST,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. \
         Consider increasing your provisioning level with the UpdateTable API.",
    )
}

pub(super) fn throttling() -> Answer {
    error(
        StatusCode::BAD_REQUEST,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    )
}

pub(super) fn internal_server_error() -> Answer {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "Internal server error",
    )
}

/// A `TransactWriteItems` cancelled because of its first item, for `reason`
/// (`ThrottlingError`, `TransactionConflict`): one reason per item, as DynamoDB lists them.
pub(super) fn transaction_cancelled(request: &[u8], reason: &str) -> Answer {
    let items = serde_json::from_slice::<Value>(request)
        .ok()
        .and_then(|r| r["TransactItems"].as_array().map(Vec::len))
        .unwrap_or(1)
        .max(1);
    let message = match reason {
        "ThrottlingError" => {
            "Throughput exceeds the current capacity of your table or index. DynamoDB is \
             automatically scaling your table or index so please try again shortly."
        }
        _ => "Transaction is ongoing for the item",
    };
    let mut reasons = vec![json!({"Code": reason, "Message": message})];
    reasons.resize(items, json!({"Code": "None"}));
    let codes: Vec<&str> = reasons
        .iter()
        .map(|r| r["Code"].as_str().unwrap_or_default())
        .collect();
    json_answer(
        StatusCode::BAD_REQUEST,
        &json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": format!(
                "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                codes.join(", ")
            ),
            "CancellationReasons": reasons,
        }),
    )
}

/// A batch request cut in two.
pub(super) struct Split {
    /// The request with only the processed part, `None` when nothing is processed.
    pub(super) forwarded: Option<Bytes>,
    /// The rest, as the answer's `UnprocessedItems` / `UnprocessedKeys` lists it.
    unprocessed: Map<String, Value>,
}

/// Where a batch operation keeps each table's items in the request, and what the answer
/// calls the unprocessed ones.
fn batch_shape(operation: &str) -> Option<(Option<&'static str>, &'static str)> {
    match operation {
        // RequestItems: {table: [WriteRequest]}
        "BatchWriteItem" => Some((None, "UnprocessedItems")),
        // RequestItems: {table: {Keys: [key], ProjectionExpression, ConsistentRead, ...}}
        "BatchGetItem" => Some((Some("Keys"), "UnprocessedKeys")),
        _ => None,
    }
}

/// Cuts each table's items of a batch in two: the first half (rounded down) is processed,
/// the rest is not. `None` when `operation` is not a batch or the body is not one.
pub(super) fn split_batch(operation: &str, body: &[u8]) -> Option<Split> {
    let (items_key, _) = batch_shape(operation)?;
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let tables = request.get_mut("RequestItems")?.as_object_mut()?;
    let mut processed = Map::new();
    let mut unprocessed = Map::new();
    for (table, entry) in std::mem::take(tables) {
        let items = match items_key {
            Some(key) => entry.get(key)?.as_array()?.clone(),
            None => entry.as_array()?.clone(),
        };
        let (done, rest) = items.split_at(items.len() / 2);
        let with = |part: &[Value]| match items_key {
            Some(key) => {
                let mut entry = entry.clone();
                entry[key] = Value::Array(part.to_vec());
                entry
            }
            None => Value::Array(part.to_vec()),
        };
        if !done.is_empty() {
            processed.insert(table.clone(), with(done));
        }
        if !rest.is_empty() {
            unprocessed.insert(table, with(rest));
        }
    }
    let forwarded = (!processed.is_empty()).then(|| {
        request["RequestItems"] = Value::Object(processed);
        Bytes::from(request.to_string())
    });
    Some(Split {
        forwarded,
        unprocessed,
    })
}

/// The answer to a split batch: DynamoDB Local's answer to the processed part (or an empty
/// success when nothing was processed) with the rest added as unprocessed. A failed answer
/// is passed back as it is.
pub(super) fn with_unprocessed(
    operation: &str,
    processed: Option<Upstream>,
    split: Split,
) -> Answer {
    let Some((_, unprocessed_key)) = batch_shape(operation) else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", operation);
    };
    let mut answer = match processed {
        Some(upstream) if !upstream.status.is_success() => return upstream.into_answer(),
        Some(upstream) => match serde_json::from_slice::<Value>(&upstream.body) {
            Ok(answer) => answer,
            Err(_) => return upstream.into_answer(),
        },
        None if operation == "BatchGetItem" => json!({"Responses": {}}),
        None => json!({}),
    };
    let mut merged = answer[unprocessed_key]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (table, rest) in split.unprocessed {
        match (merged.get_mut(&table), rest) {
            // DynamoDB Local left some unprocessed itself (it never does, but keep them).
            (Some(Value::Array(items)), Value::Array(more)) => items.extend(more),
            (Some(entry), Value::Object(more)) if entry.get("Keys").is_some() => {
                if let (Some(keys), Some(Value::Array(more))) =
                    (entry["Keys"].as_array_mut(), more.get("Keys").cloned())
                {
                    keys.extend(more);
                }
            }
            (_, rest) => {
                merged.insert(table, rest);
            }
        }
    }
    answer[unprocessed_key] = Value::Object(merged);
    // The body changed, so DynamoDB Local's checksum header no longer applies: the answer
    // carries only what the SDK needs.
    json_answer(StatusCode::OK, &answer)
}
