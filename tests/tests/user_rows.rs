//! The user row of the DynamoDB store (`user#<sub>` / `conns`: the map of the user's
//! connections the per-user limit reads) lives as long as the user has connections: a user
//! who left holds no row, so a table whose clients have all gone is empty. Removing the last
//! connection races new registrations of the same user; neither may lose the other.

use futures::future::join;
use wsbridge::auth::now_seconds;
use wsbridge::channels::Grants;
use wsbridge::limits::{ConnectionLimit, LimitPolicy};
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::{Connection, ConnectionStore, DynamoDbStore, Registration};
use wsbridge_tests::fresh_dynamodb_store;

const LIMIT: ConnectionLimit = ConnectionLimit {
    per_user: 10,
    policy: LimitPolicy::Refuse,
};

fn connection(id: &str, user: &str) -> Connection {
    Connection {
        id: ConnectionId::new(format!("{id}=")),
        user_id: UserId::new(user),
        connected_at: 1_700_000_000_000,
        endpoint: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod".into(),
        expires_at: now_seconds() + 7_200,
        grants: Grants::default(),
    }
}

/// The connection ids the user row lists, read straight from the table (keys as in the
/// store's `items` module); `None` when there is no row.
async fn user_row(store: &DynamoDbStore, user: &str) -> Option<Vec<String>> {
    let item = store
        .client()
        .get_item()
        .table_name(store.table())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("user#{user}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("conns".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    let mut ids: Vec<String> = item
        .get("conns")
        .and_then(|conns| conns.as_m().ok())
        .map(|conns| conns.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    Some(ids)
}

async fn register(store: &DynamoDbStore, connection: &Connection) {
    let registration = store.register(connection, &LIMIT).await.unwrap();
    assert_eq!(registration, Registration::Registered { evicted: vec![] });
}

#[tokio::test]
async fn the_user_row_goes_with_the_users_last_connection() {
    // GIVEN a user with two connections
    let store = fresh_dynamodb_store().await;
    let (a, b) = (connection("a", "alice"), connection("b", "alice"));
    register(&store, &a).await;
    register(&store, &b).await;

    // WHEN one leaves, THEN the row lists the other
    store.remove_connection(&a.id).await.unwrap();
    assert_eq!(user_row(&store, "alice").await, Some(vec!["b=".to_owned()]));

    // WHEN the last leaves, THEN no row is left
    store.remove_connection(&b.id).await.unwrap();
    assert_eq!(user_row(&store, "alice").await, None);

    // AND the user connects again as before, counted from nothing
    let c = connection("c", "alice");
    register(&store, &c).await;
    assert_eq!(user_row(&store, "alice").await, Some(vec!["c=".to_owned()]));
    let held = store.user_connections(&UserId::new("alice")).await.unwrap();
    assert_eq!(held, vec![c]);
}

#[tokio::test]
async fn a_registration_racing_the_last_removal_is_never_lost() {
    let store = fresh_dynamodb_store().await;
    for round in 0..20 {
        // GIVEN a user whose one connection leaves while a new one registers
        let user = format!("racer-{round}");
        let (old, new) = (connection("old", &user), connection("new", &user));
        register(&store, &old).await;
        let (removed, registered) = join(
            store.remove_connection(&old.id),
            store.register(&new, &LIMIT),
        )
        .await;
        assert!(removed.unwrap().is_some());
        assert_eq!(
            registered.unwrap(),
            Registration::Registered { evicted: vec![] }
        );

        // THEN the row lists exactly the new connection, and the user holds it alone
        assert_eq!(
            user_row(&store, &user).await,
            Some(vec!["new=".to_owned()]),
            "round {round}"
        );
        let held = store.user_connections(&new.user_id).await.unwrap();
        assert_eq!(held, vec![new.clone()], "round {round}");

        // AND once it leaves too, nothing is left
        store.remove_connection(&new.id).await.unwrap();
        assert_eq!(user_row(&store, &user).await, None, "round {round}");
    }
}
