//! The fault proxy itself: rules hit the calls they name, answers are what the SDK reads as
//! DynamoDB's, batches stay truthful; and the store's SDK client: it retries each fault with
//! the standard mode's attempts, and, as the functions build it, gives up on a held attempt.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, TransactWriteItem, WriteRequest,
};
use wsbridge::protocol::ConnectionId;
use wsbridge::store::{ConnectionStore, DynamoDbStore, Failure, StoreError};
use wsbridge_local::local_sdk_config;
use wsbridge_tests::dynamodb_endpoint;
use wsbridge_tests::faults::setup::{faulty_store, sdk_attempts};
use wsbridge_tests::faults::{Calls, Fault, FaultProxy, Rule, When};

use super::label;

/// A client through the proxy that tries each call once, so every call is one request. Its
/// attempt timeout is long (a slow answer from a cold DynamoDB Local must not fail a call
/// here), and still shorter than the proxy holds a request.
fn single_attempt_client(proxy_url: &str) -> Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&local_sdk_config(Some(proxy_url)))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(FaultProxy::HOLD / 3)
                .build(),
        )
        .build();
    Client::from_conf(config)
}

fn key(pk: &str) -> std::collections::HashMap<String, AttributeValue> {
    [
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S("x".to_owned())),
    ]
    .into()
}

#[tokio::test]
async fn rules_hit_the_calls_they_name_and_every_call_is_counted() {
    let f = faulty_store().await;
    let client = single_attempt_client(f.proxy.url());
    for (when, failing) in [
        (When::Nth(2), vec![2]),
        (When::Next(2), vec![1, 2]),
        (When::From(3), vec![3, 4, 5]),
        (When::Always, vec![1, 2, 3, 4, 5]),
    ] {
        // GIVEN a rule on GetItem
        f.proxy.reset_counts();
        f.proxy.inject(Rule::new(
            "GetItem",
            when,
            Fault::ProvisionedThroughputExceeded,
        ));

        // WHEN five GetItems and one Query are made, each tried once
        let mut failed = Vec::new();
        for call in 1..=5 {
            let got = client
                .get_item()
                .table_name(f.table.name())
                .set_key(Some(key("nothing")))
                .send()
                .await;
            if let Err(e) = got {
                assert_eq!(e.code(), Some("ProvisionedThroughputExceededException"));
                failed.push(call);
            }
        }
        client
            .query()
            .table_name(f.table.name())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S("nothing".into()))
            .send()
            .await
            .expect("a Query is not hit by a GetItem rule");
        f.proxy.clear();

        // THEN exactly the calls the rule names failed, and the counts say so
        assert_eq!(failed, failing, "{when:?}");
        let injected = failing.len() as u64;
        assert_eq!(
            f.proxy.calls("GetItem"),
            Calls {
                total: 5,
                forwarded: 5 - injected,
                injected
            },
            "{when:?}"
        );
        assert_eq!(
            f.proxy.calls("Query"),
            Calls {
                total: 1,
                forwarded: 1,
                injected: 0
            }
        );
    }
}

#[tokio::test]
async fn a_rule_holding_a_text_sees_only_the_requests_that_hold_it() {
    // GIVEN a rule on the second GetItem of key `b` (the only key holding "b#")
    let f = faulty_store().await;
    let client = single_attempt_client(f.proxy.url());
    let rule = Rule::new("GetItem", When::Nth(2), Fault::InternalServerError).holding("b#");
    f.proxy.inject(rule);

    // WHEN `a#`, `b#`, `a#`, `b#`, `b#` are read, each tried once
    let mut failed = Vec::new();
    for (call, pk) in ["a#", "b#", "a#", "b#", "b#"].into_iter().enumerate() {
        let got = client
            .get_item()
            .table_name(f.table.name())
            .set_key(Some(key(pk)))
            .send()
            .await;
        if got.is_err() {
            failed.push(call + 1);
        }
    }

    // THEN only the second read of `b#` failed: the reads of `a#` are not counted
    assert_eq!(failed, vec![4]);
    assert_eq!(
        f.proxy.calls("GetItem"),
        Calls {
            total: 5,
            forwarded: 4,
            injected: 1
        }
    );
}

#[tokio::test]
async fn answers_are_read_as_dynamodb_s_own() {
    let f = faulty_store().await;
    let client = single_attempt_client(f.proxy.url());
    let get = || {
        client
            .get_item()
            .table_name(f.table.name())
            .set_key(Some(key("nothing")))
            .send()
    };
    for (fault, code, status) in [
        (
            Fault::ProvisionedThroughputExceeded,
            "ProvisionedThroughputExceededException",
            400,
        ),
        (Fault::Throttling, "ThrottlingException", 400),
        (Fault::InternalServerError, "InternalServerError", 500),
    ] {
        f.proxy.inject(Rule::new("GetItem", When::Nth(1), fault));
        let error = get().await.expect_err("the rule answers");
        f.proxy.clear();
        assert_eq!(error.code(), Some(code), "{fault:?}");
        assert_eq!(
            error.raw_response().map(|r| r.status().as_u16()),
            Some(status)
        );
    }
    f.proxy
        .inject(Rule::new("GetItem", When::Nth(1), Fault::Timeout));
    let error = get().await.expect_err("held past the attempt timeout");
    assert!(matches!(error, SdkError::TimeoutError(_)), "{error:?}");
    f.proxy
        .inject(Rule::new("GetItem", When::Nth(1), Fault::Drop));
    let error = get().await.expect_err("dropped");
    assert!(
        matches!(
            error,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "{error:?}"
    );
    f.proxy.clear();

    // A cancelled transaction names one reason per item, the first ThrottlingError, and
    // writes nothing
    f.proxy.inject(Rule::new(
        "TransactWriteItems",
        When::Nth(1),
        Fault::TransactionThrottled,
    ));
    let puts = (0..3).map(|n| {
        let mut item = key(&format!("t{n}"));
        item.insert("v".into(), AttributeValue::N("1".into()));
        let put = Put::builder()
            .table_name(f.table.name())
            .set_item(Some(item))
            .build()
            .unwrap();
        TransactWriteItem::builder().put(put).build()
    });
    let error = client
        .transact_write_items()
        .set_transact_items(Some(puts.collect()))
        .send()
        .await
        .expect_err("cancelled");
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    else {
        panic!("{error:?}");
    };
    let codes: Vec<_> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|r| r.code().unwrap_or_default())
        .collect();
    assert_eq!(codes, ["ThrottlingError", "None", "None"]);
    for n in 0..3 {
        let row = f
            .table
            .client()
            .get_item()
            .table_name(f.table.name())
            .set_key(Some(key(&format!("t{n}"))))
            .send()
            .await
            .unwrap();
        assert!(row.item.is_none(), "t{n} was written");
    }
}

#[tokio::test]
async fn unprocessed_batches_write_and_read_exactly_what_they_say_they_did() {
    let f = faulty_store().await;
    let client = single_attempt_client(f.proxy.url());
    let table = f.table.name().to_owned();

    // GIVEN a batch of five puts, answered as if only some were processed
    f.proxy.inject(Rule::new(
        "BatchWriteItem",
        When::Nth(1),
        Fault::Unprocessed,
    ));
    let puts: Vec<WriteRequest> = (0..5)
        .map(|n| {
            let put = PutRequest::builder()
                .set_item(Some(key(&format!("b{n}"))))
                .build()
                .unwrap();
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    let written = client
        .batch_write_item()
        .request_items(&table, puts)
        .send()
        .await
        .unwrap();

    // THEN the three it calls unprocessed are not in the table, the two others are
    let unprocessed: Vec<String> = written.unprocessed_items().unwrap()[&table]
        .iter()
        .map(|w| match &w.put_request().unwrap().item()["pk"] {
            AttributeValue::S(pk) => pk.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(unprocessed, ["b2", "b3", "b4"]);
    let keys = KeysAndAttributes::builder()
        .set_keys(Some((0..5).map(|n| key(&format!("b{n}"))).collect()))
        .consistent_read(true)
        .build()
        .unwrap();
    let direct = f
        .table
        .client()
        .batch_get_item()
        .request_items(&table, keys.clone())
        .send()
        .await
        .unwrap();
    let mut found: Vec<_> = direct.responses().unwrap()[&table]
        .iter()
        .map(|item| item["pk"].as_s().unwrap().clone())
        .collect();
    found.sort();
    assert_eq!(found, ["b0", "b1"]);

    // AND a batch read of the five returns two found, and the other three keys unprocessed
    f.proxy
        .inject(Rule::new("BatchGetItem", When::Nth(1), Fault::Unprocessed));
    let read = client
        .batch_get_item()
        .request_items(&table, keys)
        .send()
        .await
        .unwrap();
    let returned = read.responses().unwrap()[&table].len();
    let left = read.unprocessed_keys().unwrap()[&table].keys().len();
    assert_eq!((returned, left), (2, 3));
    assert_eq!(f.proxy.calls("BatchGetItem").forwarded, 1);
}

#[tokio::test]
async fn the_store_s_client_tries_each_fault_the_standard_number_of_times() {
    let f = faulty_store().await;
    let id = ConnectionId::new("nobody=");
    for fault in Fault::ANSWERED.into_iter().chain(Fault::UNANSWERED) {
        // GIVEN every GetItem fails
        let rule = Rule::new("GetItem", When::Always, fault);
        f.proxy.reset_counts();
        f.proxy.inject(rule);

        // WHEN the store reads a connection
        let read = f.store.get_connection(&id).await;
        f.proxy.clear();

        // THEN the SDK tried it exactly as many times as its standard mode allows, and the
        // store calls the failure retryable, throttling as such
        assert_eq!(
            f.proxy.calls("GetItem").total,
            sdk_attempts(),
            "{}",
            label(&rule)
        );
        let Err(error @ StoreError::Backend { failure, .. }) = &read else {
            panic!("{}: {read:?}", label(&rule));
        };
        assert!(error.is_retryable(), "{}: {error}", label(&rule));
        let throttled = matches!(
            fault,
            Fault::ProvisionedThroughputExceeded | Fault::Throttling
        );
        assert_eq!(
            *failure == Failure::Throttled,
            throttled,
            "{}: {error}",
            label(&rule)
        );
    }
}

#[tokio::test]
async fn the_functions_store_abandons_a_held_attempt_and_retries_it() {
    // GIVEN the store as the functions build it (the SDK configuration's defaults, nothing
    // set), through a proxy that holds the first GetItem for an hour
    let f = faulty_store().await;
    let proxy = FaultProxy::start_holding(&dynamodb_endpoint(), Duration::from_secs(3_600)).await;
    let store =
        DynamoDbStore::from_sdk_config(&local_sdk_config(Some(proxy.url())), f.table.name());
    proxy.inject(Rule::new("GetItem", When::Nth(1), Fault::Timeout));

    // WHEN it reads a connection
    let read = tokio::time::timeout(
        Duration::from_secs(60),
        store.get_connection(&ConnectionId::new("nobody=")),
    )
    .await
    .expect("a held attempt must time out and be retried, not be waited for");

    // THEN the held attempt was given up and a retry answered (one retry, unless the
    // machine is so busy that DynamoDB Local itself took over a second)
    assert_eq!(read.unwrap(), None);
    let calls = proxy.calls("GetItem");
    assert_eq!(calls.injected, 1, "{calls:?}");
    assert!(calls.forwarded >= 1, "{calls:?}");
}
