//! Read capacity accounting of the DynamoDB store on DynamoDB Local: what the recipient reads
//! of a broadcast cost, as the benchmarks report it (`DynamoDbStore::with_consumed_capacity`).

use std::sync::Arc;

use futures::TryStreamExt;
use wsbridge::auth::now_seconds;
use wsbridge::channels::TopicPattern;
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::Audience;
use wsbridge::store::dynamodb::ConsumedCapacity;
use wsbridge::store::{Connection, ConnectionStore, DynamoDbStore, Recipient, RecipientStore};
use wsbridge_tests::fresh_dynamodb_store;

const ENDPOINT: &str = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod";

fn topic(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap()
}

/// Registers connections `c-0=` … subscribed to `topic`.
async fn register(store: &DynamoDbStore, count: usize, topic_name: &str) -> Vec<ConnectionId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = ConnectionId::new(format!("c-{n}="));
        let connection = Connection {
            id: id.clone(),
            user_id: UserId::new(format!("user-{n}")),
            connected_at: 1,
            endpoint: ENDPOINT.to_owned(),
            expires_at: now_seconds() + 600,
            grants: Default::default(),
        };
        wsbridge::test_support::put(store, &connection).await;
        store
            .subscribe(&id, &[topic(topic_name)], &[], 10)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn pages(store: &DynamoDbStore, target: &Audience) -> Vec<Vec<Recipient>> {
    store.recipients(target).try_collect().await.unwrap()
}

#[tokio::test]
async fn topic_pages_cost_one_unit_each_and_writes_cost_nothing_here() {
    // GIVEN a store counting read capacity, and seven subscribers of a topic registered
    // through it (PutItem, GetItem and transactions: none of them counted)
    let consumed = Arc::new(ConsumedCapacity::default());
    let store = fresh_dynamodb_store()
        .await
        .with_page_size(3)
        .with_consumed_capacity(consumed.clone());
    register(&store, 7, "board:1").await;
    assert_eq!(consumed.read_units(), 0.0);

    // WHEN the topic's recipients are read, three per page
    let pages = pages(&store, &Audience::Subscribers(vec![topic("board:1")])).await;

    // THEN three strongly consistent Query pages of small items cost one unit each (a topic's
    // subscribers are read consistently: see the store's `query_pages`)
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(consumed.read_units(), 3.0);
}

#[tokio::test]
async fn named_connections_cost_one_unit_per_strongly_consistent_item() {
    // GIVEN three registered connections and a store counting read capacity
    let consumed = Arc::new(ConsumedCapacity::default());
    let store = fresh_dynamodb_store()
        .await
        .with_consumed_capacity(consumed.clone());
    let ids = register(&store, 3, "board:1").await;
    assert_eq!(consumed.read_units(), 0.0);

    // WHEN they are read by id (BatchGetItem, strongly consistent)
    let pages = pages(&store, &Audience::Connections(ids)).await;

    // THEN each item of under 4 KB costs one unit
    assert_eq!(pages.concat().len(), 3);
    assert_eq!(consumed.read_units(), 3.0);
}

#[tokio::test]
async fn a_store_without_a_counter_reads_the_same() {
    // GIVEN one store counting and a clone of it that does not
    let consumed = Arc::new(ConsumedCapacity::default());
    let counting = fresh_dynamodb_store()
        .await
        .with_page_size(2)
        .with_consumed_capacity(consumed.clone());
    register(&counting, 5, "board:1").await;
    let plain = DynamoDbStore::new(counting.client().clone(), counting.table()).with_page_size(2);
    let target = Audience::Subscribers(vec![topic("board:1")]);

    // WHEN both read the topic
    let counted = pages(&counting, &target).await;
    let units = consumed.read_units();
    let uncounted = pages(&plain, &target).await;

    // THEN they return the same pages, and only the counting one added to the counter
    assert_eq!(counted, uncounted);
    assert!(units > 0.0);
    assert_eq!(consumed.read_units(), units);
}
