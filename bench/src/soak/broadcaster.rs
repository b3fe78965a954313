//! The soak's broadcasts: at a steady rate for the whole churn, each with its sequence
//! number in `data`, each recorded in the ledger before it is sent and when it is answered,
//! and each answer's report checked: `recipients = delivered + gone + failed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::clients::Shared;
use super::ledger::Audience;
use super::{pool_topic, user, user_topic};
use crate::report::Result;

/// Broadcasts in flight at once; the ticker waits beyond it, so a slow gateway lowers the
/// rate achieved (reported) instead of piling requests up.
const IN_FLIGHT: usize = 64;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// One pool topic at a time.
    Topic,
    /// One user at a time, alternately by `user_id` and to `user:{sub}`.
    User,
}

/// Broadcasts and what their answers reported, summed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct BroadcastTotals {
    pub sent: u64,
    pub answered: u64,
    /// Not answered 200 (or not at all).
    pub errors: u64,
    pub recipients: u64,
    pub delivered: u64,
    pub gone: u64,
    pub failed: u64,
    pub retries: u64,
    pub deadline_reached: u64,
    /// Reports where `recipients != delivered + gone + failed`.
    pub mismatched: u64,
}

impl BroadcastTotals {
    pub fn add(&mut self, other: &BroadcastTotals) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.errors += other.errors;
        self.recipients += other.recipients;
        self.delivered += other.delivered;
        self.gone += other.gone;
        self.failed += other.failed;
        self.retries += other.retries;
        self.deadline_reached += other.deadline_reached;
        self.mismatched += other.mismatched;
    }

    /// Counts one answered broadcast's report; false when it does not add up (or lacks a
    /// count).
    pub fn count_report(&mut self, report: &Value) -> bool {
        let field = |name: &str| report[name].as_u64();
        self.answered += 1;
        self.retries += report["retries"].as_u64().unwrap_or_default();
        if report["deadline_reached"] == true {
            self.deadline_reached += 1;
        }
        let counts = (
            field("recipients"),
            field("delivered"),
            field("gone"),
            field("failed"),
        );
        if let (Some(recipients), Some(delivered), Some(gone), Some(failed)) = counts {
            self.recipients += recipients;
            self.delivered += delivered;
            self.gone += gone;
            self.failed += failed;
            if delivered + gone + failed == recipients {
                return true;
            }
        }
        self.mismatched += 1;
        false
    }
}

/// Broadcasts of one kind until the churn stops; waits for those in flight.
pub async fn run(kind: Kind, shared: Arc<Shared>) -> BroadcastTotals {
    let mut totals = BroadcastTotals::default();
    let rate = match kind {
        Kind::Topic => shared.churn.topic_rate,
        Kind::User => shared.churn.user_rate,
    };
    if rate <= 0.0 {
        return totals;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut stop = shared.stop.clone();
    for n in 0u64.. {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (audience, mut body) = choose(kind, n, &shared, &mut rng);
        let seq = {
            let mut ledger = shared.ledger();
            let sent_at = Instant::now();
            ledger.sent(audience, sent_at)
        };
        body["event"] = "soak".into();
        body["data"] = json!({ "seq": seq });
        totals.sent += 1;
        let poster = shared.clone();
        in_flight.spawn(async move {
            let answer = post(&poster, seq, &body).await;
            drop(permit);
            answer
        });
        while let Some(done) = in_flight.try_join_next() {
            count(&mut totals, &shared, done);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        count(&mut totals, &shared, done);
    }
    totals
}

/// The next broadcast's audience and body (without `event` and `data`).
fn choose(kind: Kind, n: u64, shared: &Shared, rng: &mut StdRng) -> (Audience, Value) {
    match kind {
        Kind::Topic => {
            let topic = pool_topic(rng.random_range(0..shared.churn.topics));
            (Audience::Topic(topic.clone()), json!({ "topic": topic }))
        }
        Kind::User => {
            let user = user(rng.random_range(0..shared.churn.users()));
            if n.is_multiple_of(2) {
                (Audience::User(user.clone()), json!({ "user_id": user }))
            } else {
                let topic = user_topic(&user);
                (Audience::Topic(topic.clone()), json!({ "topic": topic }))
            }
        }
    }
}

/// Sends one broadcast; records its answer in the ledger; returns its report.
async fn post(shared: &Shared, seq: u64, body: &Value) -> Result<Value> {
    let response = shared
        .http
        .post(format!("{}/broadcast", shared.endpoints.http_url))
        .json(body)
        .send()
        .await?;
    let status = response.status();
    let report: Value = response.json().await?;
    if !status.is_success() {
        return Err(format!("broadcast {seq} answered {status}: {report}").into());
    }
    {
        // The instant is read under the lock (see the ledger).
        let mut ledger = shared.ledger();
        let answered_at = Instant::now();
        ledger.answered(seq, answered_at);
    }
    Ok(report)
}

fn count(
    totals: &mut BroadcastTotals,
    shared: &Shared,
    done: std::result::Result<Result<Value>, tokio::task::JoinError>,
) {
    match done {
        Ok(Ok(report)) => {
            if !totals.count_report(&report) {
                shared.error(format!("a broadcast report does not add up: {report}"));
            }
        }
        Ok(Err(e)) => {
            totals.errors += 1;
            shared.error(e.to_string());
        }
        Err(e) => {
            totals.errors += 1;
            shared.error(format!("broadcast task: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_that_add_up_are_counted_and_others_flagged() {
        let mut totals = BroadcastTotals::default();
        let good = json!({"id": "b", "recipients": 5, "delivered": 3, "gone": 1, "failed": 1,
                          "retries": 2, "deadline_reached": false});
        assert!(totals.count_report(&good));
        let bad = json!({"recipients": 5, "delivered": 5, "gone": 1, "failed": 0});
        assert!(!totals.count_report(&bad));
        let missing = json!({"recipients": 5});
        assert!(!totals.count_report(&missing));
        assert_eq!((totals.answered, totals.mismatched), (3, 2));
        assert_eq!((totals.delivered, totals.gone, totals.retries), (8, 2, 2));
    }
}
