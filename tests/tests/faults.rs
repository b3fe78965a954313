//! DynamoDB faults through every route's handler, and through the runs of background
//! broadcasts' parts: the real `DynamoDbStore` talks to DynamoDB Local through a proxy that
//! throttles, fails, times out, drops connections and leaves batch items unprocessed by rule
//! (`wsbridge_tests::faults`). Each case asserts the route's answer (or the run's outcome)
//! and the state left in the table, read directly from DynamoDB Local.
//!
//! * transient: a fault on every attempt of one call but the last, which the SDK's retries
//!   (or the store's own, for unprocessed batch items and cancelled transactions) absorb: the
//!   route answers as if nothing happened, and the table holds the same;
//! * persistent: the fault on every call of one operation: the route answers as documented
//!   (README, "Faults"), and the table holds exactly what the documentation says is left.

#[path = "faults/background.rs"]
mod background;
#[path = "faults/broadcast.rs"]
mod broadcast;
#[path = "faults/manage.rs"]
mod manage;
#[path = "faults/proxy.rs"]
mod proxy;
#[path = "faults/queries.rs"]
mod queries;
#[path = "faults/rooms.rs"]
mod rooms;
#[path = "faults/server_api.rs"]
mod server_api;
#[path = "faults/websocket.rs"]
mod websocket;

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt};
use tokio::sync::Semaphore;

use wsbridge::protocol::ConnectionId;
use wsbridge::store::ConnectionStore;
use wsbridge::test_support::{connection, pattern, put};
use wsbridge_tests::faults::setup::{Faulty, Traces, sdk_attempts};
use wsbridge_tests::faults::{Fault, Rule, When};

/// The operations that write nothing.
const READS: [&str; 3] = ["GetItem", "Query", "BatchGetItem"];

/// What kind of operation a fault case hits: which faults DynamoDB can answer it with.
fn faults_of(operation: &str) -> Vec<Fault> {
    let mut faults: Vec<Fault> = Fault::ANSWERED
        .into_iter()
        .chain(Fault::UNANSWERED)
        .collect();
    match operation {
        "TransactWriteItems" => {
            faults.extend([Fault::TransactionThrottled, Fault::TransactionConflict])
        }
        "BatchWriteItem" => faults.push(Fault::Unprocessed),
        _ => {}
    }
    if READS.contains(&operation) {
        // A read's lost answer is a timeout and nothing more: nothing was written.
        faults.retain(|f| *f != Fault::LostAnswer);
    }
    if operation == "BatchGetItem" {
        faults.push(Fault::Unprocessed);
    }
    faults
}

/// Rounds of unprocessed items a transient case leaves before the batch goes through: the
/// store retries up to 8.
const UNPROCESSED_ROUNDS: u64 = 3;

/// Every fault on `operation` that retries absorb: all attempts of one call but the last
/// (for unprocessed items and cancelled transactions, a few of the store's own rounds).
fn transient(operation: &'static str) -> Vec<Rule> {
    faults_of(operation)
        .into_iter()
        .map(|fault| {
            let calls = match fault {
                Fault::Unprocessed => UNPROCESSED_ROUNDS,
                _ => sdk_attempts() - 1,
            };
            Rule::new(operation, When::Next(calls), fault)
        })
        .collect()
}

/// Every fault on `operation`, on every call.
fn persistent(operation: &'static str) -> Vec<Rule> {
    faults_of(operation)
        .into_iter()
        .map(|fault| Rule::new(operation, When::Always, fault))
        .collect()
}

/// Runs `step` with `rule` in force, then clears it; asserts the rule hit, and, when it
/// is a transient one, exactly as many calls as it names.
async fn under<T>(f: &Faulty, rule: Rule, step: impl Future<Output = T>) -> T {
    f.proxy.reset_counts();
    f.proxy.inject(rule);
    let out = step.await;
    f.proxy.clear();
    let calls = f.proxy.calls(rule.operation);
    assert!(calls.injected > 0, "{}: the fault never hit", label(&rule));
    if let When::Next(k) = rule.when {
        assert_eq!(calls.injected, k, "{}: {calls:?}", label(&rule));
    }
    out
}

fn cases(operations: &[&'static str]) -> Vec<(Rule, bool)> {
    operations
        .iter()
        .flat_map(|op| {
            let transient = transient(op).into_iter().map(|r| (r, false));
            transient.chain(persistent(op).into_iter().map(|r| (r, true)))
        })
        .collect()
}

/// Registers `id` of `user` on `topics`, with no fault.
async fn registered(f: &Faulty, id: &str, user: &str, topics: &[&str]) {
    put(&f.store, &connection(id, user)).await;
    if !topics.is_empty() {
        let topics: Vec<_> = topics.iter().map(|t| pattern(t)).collect();
        f.store
            .subscribe(&ConnectionId::new(id), &topics, &[], 10)
            .await
            .unwrap();
    }
}

/// Cases run at once, across all the tests of this file (they run in parallel in one
/// process). Most of a case is waiting (a held request costs up to three attempt timeouts),
/// so a few together keep the suite short; a bound on them all keeps DynamoDB Local answering
/// well within the attempt timeout, which a case's last, unfaulted attempt relies on.
const CASES_IN_FLIGHT: usize = 16;

/// The permits of [`CASES_IN_FLIGHT`]: a tokio semaphore works across the tests' runtimes.
static IN_FLIGHT: Semaphore = Semaphore::const_new(CASES_IN_FLIGHT);

/// Runs `case` for each of `cases`, numbered, each with its own proxy and store on `f`'s
/// table (so its rules and counts are its own), at most [`CASES_IN_FLIGHT`] cases of all
/// tests at a time.
async fn each_case<F, Fut>(f: &Faulty, cases: Vec<(Rule, bool)>, case: F)
where
    F: Fn(usize, Rule, bool, Faulty) -> Fut,
    Fut: Future<Output = ()>,
{
    let case = &case;
    stream::iter(cases.into_iter().enumerate())
        .map(|(n, (rule, persists))| async move {
            let _permit = IN_FLIGHT.acquire().await.unwrap();
            case(n, rule, persists, f.another().await).await;
        })
        .buffer_unordered(CASES_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
}

/// `rule` for assertion messages.
fn label(rule: &Rule) -> String {
    let holding = rule
        .holding
        .map(|text| format!(" holding {text}"))
        .unwrap_or_default();
    format!(
        "{:?} on {}{holding} ({:?})",
        rule.fault, rule.operation, rule.when
    )
}

/// A deletion whose old image was lost: DynamoDB deleted the connection row, but the SDK's
/// retry finds nothing, so the store cannot learn its topics or its user.
fn lost_deletion(rule: &Rule) -> bool {
    rule.operation == "DeleteItem" && rule.fault == Fault::LostAnswer
}

/// What a connection on `topics` leaves when its removal meets `rule` for good (or loses its
/// deletion's answer): removal deletes the connection row, then its subscription rows, then
/// its entry in the user row, and the steps after a failure still run.
fn left_by_removal(rule: &Rule, topics: &[&str]) -> Traces {
    let all: BTreeSet<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    match (rule.operation, rule.fault) {
        // Deleted by the first attempt, whose answer (the topics, the user) never came.
        ("DeleteItem", Fault::LostAnswer) => Traces {
            connection_row: false,
            subscription_rows: all,
            counted: true,
        },
        ("DeleteItem", _) => Traces {
            connection_row: true,
            subscription_rows: all,
            counted: true,
        },
        // Applied by the first attempt: only the answer was lost.
        ("BatchWriteItem", Fault::LostAnswer) => Traces::none(),
        ("BatchWriteItem", _) => Traces {
            connection_row: false,
            subscription_rows: all,
            counted: false,
        },
        ("UpdateItem", Fault::LostAnswer) => Traces::none(),
        ("UpdateItem", _) => Traces {
            connection_row: false,
            subscription_rows: BTreeSet::new(),
            counted: true,
        },
        (operation, _) => panic!("removal does not call {operation}"),
    }
}
