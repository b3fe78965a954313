//! Attempts at recipients, a few to a task: posts spread over every worker thread of the
//! runtime, while the engine that launches them only counts.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::{Instant, timeout_at};

use crate::sender::{ConnectionSender, Payload, SendError};
use crate::store::Recipient;

/// A recipient on its way: where it was read, and what was tried so far.
#[derive(Debug)]
pub(super) struct Job {
    pub recipient: Recipient,
    /// The page it was read in (see `Ledger`).
    pub page: u64,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Of those, the ones answered 429.
    pub throttled: u32,
}

/// What one attempt came to.
#[derive(Debug)]
pub(super) struct Attempted {
    pub job: Job,
    pub sent_at: Instant,
    pub result: Result<(), SendError>,
    /// The attempt was cut short: the invocation's time is up.
    pub out_of_time: bool,
}

/// What the attempt task needs, shared by every attempt of a fan-out.
#[derive(Clone)]
pub(super) struct Poster {
    pub sender: Arc<dyn ConnectionSender>,
    pub payload: Arc<Payload>,
    /// No attempt runs past this.
    pub give_up_at: Option<Instant>,
    pub results: UnboundedSender<Attempted>,
}

impl Poster {
    /// Starts these attempts on the runtime, as one task; each result arrives on `results`
    /// as soon as it is known.
    pub fn launch(&self, jobs: Vec<Job>) {
        let poster = self.clone();
        tokio::spawn(async move {
            let mut attempts: FuturesUnordered<_> =
                jobs.into_iter().map(|job| poster.attempt(job)).collect();
            while let Some(attempted) = attempts.next().await {
                // The engine is gone only when its caller dropped the fan-out: nobody is
                // counting any more.
                let _ = poster.results.send(attempted);
            }
        });
    }

    /// One attempt, however it ends.
    async fn attempt(&self, job: Job) -> Attempted {
        let sent_at = Instant::now();
        // A sender that panics must still answer, or the engine would wait for it forever
        // (where panics unwind: release builds abort).
        let send = AssertUnwindSafe(self.sender.send(&job.recipient, &self.payload))
            .catch_unwind()
            .map(|sent| {
                sent.unwrap_or_else(|_| Err(SendError::Failed("the sender panicked".into())))
            });
        let (result, out_of_time) = match self.give_up_at {
            Some(at) => match timeout_at(at, send).await {
                Ok(result) => (result, false),
                Err(_) => (
                    Err(SendError::Transient("deadline reached mid-post".into())),
                    true,
                ),
            },
            None => (send.await, false),
        };
        Attempted {
            job,
            sent_at,
            result,
            out_of_time,
        }
    }
}
