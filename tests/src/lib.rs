//! Support for the end-to-end tests: DynamoDB Local (and a fault proxy in front of it), a
//! local Secrets Manager, the local gateway, the sample events.
//! (Fixtures shared with the library's unit tests, such as `RecordingSender`, are in
//! `wsbridge::test_support`.)

pub mod faults;
pub mod gateway;
pub mod iam;
pub mod lambda;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use wsbridge::store::DynamoDbStore;
use wsbridge::store::dynamodb::schema;
use wsbridge_local::local_sdk_config;

/// Set by the test command (`scripts/test.sh`) to the DynamoDB Local it started.
pub const DYNAMODB_ENDPOINT_VAR: &str = "WSBRIDGE_TEST_DYNAMODB_ENDPOINT";

/// Set by the test command to the local Secrets Manager (moto's server) it started.
pub const SECRETSMANAGER_ENDPOINT_VAR: &str = "WSBRIDGE_TEST_SECRETSMANAGER_ENDPOINT";

/// The local Secrets Manager endpoint. Fails the test, loudly, when there is none.
pub fn secretsmanager_endpoint() -> String {
    match std::env::var(SECRETSMANAGER_ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => panic!(
            "{SECRETSMANAGER_ENDPOINT_VAR} is not set: run the tests with scripts/test.sh, which \
             installs and starts moto's server, or point the variable at a running one \
             (scripts/secretsmanager-local.sh start)"
        ),
    }
}

/// The DynamoDB Local endpoint. Fails the test, loudly, when there is none: a store test
/// that silently passed without a database would prove nothing.
pub fn dynamodb_endpoint() -> String {
    match std::env::var(DYNAMODB_ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => panic!(
            "{DYNAMODB_ENDPOINT_VAR} is not set: run the tests with scripts/test.sh, which \
             installs and starts DynamoDB Local, or point the variable at a running one"
        ),
    }
}

/// A DynamoDB Local client with a fresh table of its own, created from the one table
/// definition the store uses.
pub async fn fresh_dynamodb_store() -> DynamoDbStore {
    static TABLES: AtomicU32 = AtomicU32::new(0);
    let endpoint = dynamodb_endpoint();
    let client = aws_sdk_dynamodb::Client::new(&local_sdk_config(Some(&endpoint)));
    let table = format!(
        "wsbridge-test-{}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(e) = schema::create_table(&client, &table).await {
        panic!("cannot create table {table} on DynamoDB Local at {endpoint}: {e}");
    }
    DynamoDbStore::new(client, table)
}

/// Path of a file in `events/`.
pub fn event_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name)
}

/// A worked channel configuration of `examples/channels/` (`chat`, `feed`), as the README
/// shows it: tests load the files themselves so that they cannot rot.
pub fn example_channels(name: &str) -> wsbridge::channels::Channels {
    let path = event_path(&format!("../examples/channels/{name}.json"));
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    wsbridge::channels::Channels::parse(&json).unwrap_or_else(|e| panic!("{name}.json: {e}"))
}

/// The text of a file in `events/`.
pub fn event(name: &str) -> String {
    let path = event_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rows per page in the conformance suites: small, so that every multi-row read crosses page
/// boundaries.
pub const PAGE_SIZE: usize = 3;

/// One suite, run against both stores: each named scenario, an
/// `async fn(&dyn Store, &Clock)`, becomes a test on a `MemoryStore` (module `memory`) and one
/// on a fresh `DynamoDbStore` on DynamoDB Local (module `dynamodb`), both with pages of
/// [`PAGE_SIZE`] rows and a manual clock standing at the wall clock's time, which the
/// scenario may move to make rows expire without waiting.
#[macro_export]
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let clock = wsbridge::clock::Clock::manual(wsbridge::clock::now_seconds());
                    let store = wsbridge::store::MemoryStore::new()
                        .with_page_size($crate::PAGE_SIZE)
                        .with_clock(clock.clone());
                    super::$scenario(&store, &clock).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let clock = wsbridge::clock::Clock::manual(wsbridge::clock::now_seconds());
                    let store = $crate::fresh_dynamodb_store()
                        .await
                        .with_page_size($crate::PAGE_SIZE as i32)
                        .with_clock(clock.clone());
                    super::$scenario(&store, &clock).await;
                }
            )*
        }
    };
}
