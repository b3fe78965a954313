//! The fan-out engine: one payload to every recipient of a target, as fast as the
//! management API allows, in flat memory, within the invocation's time, with a report.
//!
//! * Recipients stream in page by page, in connection-id order; the next page loads while
//!   the current one is sent, and about two pages are held whatever the audience's size.
//! * Each attempt is a task of its own, so posts spread over every worker thread; one engine
//!   task launches them and counts (`engine`).
//! * Posts in flight follow an adaptive limit (`limit`): 429s cut it, successes raise it, up
//!   to the configured concurrency; the limit is shared by every fan-out of the process.
//! * 429 and 5xx are retried with jittered exponential backoff (`RetryPolicy`), never past
//!   the deadline. At the deadline the engine stops: what it did not send is counted as
//!   failed, handed back as unsent, and flagged, never a silent timeout.
//! * A fan-out can start anywhere in its audience (a span) and be stopped between pages;
//!   what it settled is checkpointed, so another invocation continues where it stopped.
//! * Connections that answer 410 are deleted in batches while the sends go on.

mod engine;
mod ledger;
mod limit;
pub mod metrics;
mod post;
mod retry;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, warn};

pub use limit::AdaptiveLimit;
pub use retry::RetryPolicy;

use crate::config::FanoutConfig;
use crate::protocol::broadcast::{Exclusions, FanoutReport};
use crate::protocol::{ConnectionId, Topic, UserId};
use crate::sender::{ConnectionSender, Payload};
use crate::store::{Audience, Page, Recipient, RecipientStore, Span, StoreError};

/// Gone connections deleted per batch: one BatchWriteItem's worth of connection rows.
pub const GONE_BATCH: usize = 25;

/// Attempts of a post answered 429 each time, apart from the policy's attempts for 5xx: the
/// adaptive limit slows the whole fan-out down on 429s, so a post gets more chances. One
/// throttled this often (other traffic is holding the account at its limit) is not failed
/// but handed back unsent, for the background or the next run to send later: a 429 says
/// "not now". Once: one refused as often again in that next run is failed, since API
/// Gateway also answers 429 for a client whose own buffer is full.
pub const MAX_THROTTLED_ATTEMPTS: u32 = 8;

/// Time kept back before the deadline: for in-flight posts to finish, gone rows to be
/// deleted, and the response to go out before Lambda ends the invocation.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// How this process fans out: its configuration, and what all its fan-outs have learnt of
/// the account's `@connections` rate. Built once, where the store and sender are.
#[derive(Debug)]
pub struct Fanout {
    pub config: FanoutConfig,
    pub limit: Arc<AdaptiveLimit>,
}

impl Fanout {
    pub fn new(config: FanoutConfig) -> Self {
        Self {
            limit: Arc::new(AdaptiveLimit::new(config.concurrency)),
            config,
        }
    }
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new(FanoutConfig::default())
    }
}

/// How one fan-out runs.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    pub retry: RetryPolicy,
    /// When the invocation ends (Lambda's context deadline); `None`: no limit.
    pub deadline: Option<Instant>,
    /// No page is started after this (the one being sent is finished): where a caller that
    /// can hand the rest on (a broadcast split into shards) stops.
    pub stop_reading_at: Option<Instant>,
    /// Posts in flight: at most its current value, at most the configured concurrency.
    pub limit: Arc<AdaptiveLimit>,
}

impl FanoutOptions {
    /// At most `concurrency` posts in flight, the limit learnt by this fan-out alone.
    pub fn new(concurrency: usize) -> Self {
        Self::with_limit(Arc::new(AdaptiveLimit::new(concurrency)))
    }

    /// Posts in flight as `limit` says, a limit shared with other fan-outs.
    pub fn with_limit(limit: Arc<AdaptiveLimit>) -> Self {
        Self {
            retry: RetryPolicy::default(),
            deadline: None,
            stop_reading_at: None,
            limit,
        }
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn stopping_reading_at(mut self, at: Option<Instant>) -> Self {
        self.stop_reading_at = at;
        self
    }

    /// When no attempt may run any more.
    fn give_up_at(&self) -> Option<Instant> {
        self.deadline.map(|deadline| {
            deadline
                .checked_sub(DEADLINE_MARGIN)
                .unwrap_or(deadline)
                .max(Instant::now().min(deadline))
        })
    }

    /// When no page may be started any more.
    fn stop_reading_at(&self) -> Option<Instant> {
        match (self.stop_reading_at, self.give_up_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// When an invocation ends, from Lambda's deadline (milliseconds since the Unix epoch);
/// `None` when the runtime reports no usable deadline: emulators send 0 or a time already
/// past, and taking that at its word would stop every fan-out before its first post.
pub fn deadline_at(deadline_ms: u64) -> Option<Instant> {
    let now_ms = u64::try_from(crate::clock::now_millis()).ok()?;
    let remaining = deadline_ms.checked_sub(now_ms).filter(|ms| *ms > 0)?;
    Some(Instant::now() + Duration::from_millis(remaining))
}

/// What a fan-out did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutSummary {
    pub report: FanoutReport,
    /// Posts tried again after a 429 or 5xx.
    pub retries: u64,
    /// Recipients read but not posted to, or whose last attempt the deadline cut short
    /// (counted in `failed`): what a continuation sends first.
    pub unsent: Vec<Recipient>,
    /// Where the rest of the audience starts, when the fan-out stopped before its end (the
    /// deadline, `stop_reading_at`, a failed read or checkpoint); those not read are in no
    /// count.
    pub rest: Option<Span>,
    /// A checkpoint could not be saved, so the fan-out stopped.
    pub checkpoint_failed: bool,
    pub elapsed: Duration,
    /// Users whose last connection in a presence topic was found gone (410) and removed:
    /// for the caller to announce their leave.
    pub left: Vec<(UserId, Topic)>,
}

impl FanoutSummary {
    /// Recipients are left: not read (the deadline or a stop came first), or read and not
    /// delivered yet (unsent: the deadline, or the account's rate limit, held them back).
    pub fn unfinished(&self) -> bool {
        self.rest.is_some() || !self.unsent.is_empty()
    }

    /// Where it ended, as a checkpoint: the unsent handed on instead of counted as failed.
    pub fn checkpoint(&self) -> Checkpoint {
        let unsent = self.unsent.len() as u64;
        let mut report = self.report;
        report.recipients -= unsent;
        report.failed -= unsent;
        Checkpoint {
            rest: self.rest.clone(),
            report,
            retries: self.retries,
            unsent: self.unsent.clone(),
        }
    }
}

/// Reading recipients failed part-way; `summary` covers every recipient read before that
/// (their posts are finished, not abandoned), and nobody after it.
#[derive(Debug, thiserror::Error)]
#[error("fan-out stopped after {} of its recipients: {source}", summary.report.recipients)]
pub struct FanoutError {
    pub summary: FanoutSummary,
    #[source]
    pub source: StoreError,
}

/// How far a fan-out has got, counting only settled pages: everyone before `rest` has their
/// outcome or is in `unsent`, nobody after it was counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where the rest starts; `None`: nothing is left.
    pub rest: Option<Span>,
    /// Outcomes so far, the unsent left out.
    pub report: FanoutReport,
    pub retries: u64,
    /// Read but not posted to (the deadline came): to be sent by whoever continues.
    pub unsent: Vec<Recipient>,
}

/// Where a long fan-out keeps its checkpoints (a broadcast shard's row).
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// Saves how far the fan-out got. Fails when it may not go on (another runner has its
    /// part) or the store failed.
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;
}

/// Sends `payload` to every live connection `audience` names, except `exclusions`, and
/// removes the connections that answered 410. One failing connection never fails the
/// broadcast; it is counted and logged.
pub async fn fan_out(
    store: &dyn RecipientStore,
    sender: &Arc<dyn ConnectionSender>,
    audience: &Audience,
    exclusions: &Exclusions,
    payload: &Payload,
    options: &FanoutOptions,
) -> Result<FanoutSummary, FanoutError> {
    let start = Resume {
        span: Some(Span::all()),
        unsent: Vec::new(),
    };
    fan_out_from(
        store, sender, audience, start, exclusions, payload, options, None,
    )
    .await
}

/// Where a fan-out resumes: the recipients an earlier run left unsent, then a span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// What is left to read; `None`: nothing.
    pub span: Option<Span>,
    pub unsent: Vec<Recipient>,
}

/// As [`fan_out`], from `start`, checkpointing settled progress to `checkpoints`.
#[allow(clippy::too_many_arguments)]
pub async fn fan_out_from(
    store: &dyn RecipientStore,
    sender: &Arc<dyn ConnectionSender>,
    audience: &Audience,
    start: Resume,
    exclusions: &Exclusions,
    payload: &Payload,
    options: &FanoutOptions,
    checkpoints: Option<&dyn Checkpoints>,
) -> Result<FanoutSummary, FanoutError> {
    let started = Instant::now();
    let (results_in, results) = mpsc::unbounded_channel();
    let poster = post::Poster {
        sender: sender.clone(),
        payload: Arc::new(payload.clone()),
        give_up_at: options.give_up_at(),
        results: results_in,
    };
    // The producer reads pages into a one-page channel: while the engine sends page N,
    // page N+1 is loading, and nothing beyond that is held.
    let (pages_in, pages) = mpsc::channel::<Result<Page, StoreError>>(1);
    let span = start.span.clone();
    let producer = async move {
        let Some(span) = span else {
            // Nothing to read: the closed channel tells the engine.
            return;
        };
        let mut reader = store.pages(audience, span);
        while let Some(page) = reader.next().await {
            let last = page.as_ref().map_or(true, |p| p.rest.is_none());
            // Closed once the engine stops reading: nothing more is wanted.
            if pages_in.send(page).await.is_err() || last {
                break;
            }
        }
    };
    let engine = engine::Engine::new(
        store,
        audience,
        exclusions,
        options,
        checkpoints,
        poster,
        start.span.clone(),
        start.unsent,
    );
    let ((), (mut summary, ledger, failure, found)) =
        futures::join!(producer, engine.run(pages, results));
    summary.rest = ledger.settled().rest.clone();
    if let (Audience::Connections(ids), Some(found), None, false, Some(span)) =
        (audience, found, &failure, summary.unfinished(), &start.span)
    {
        count_unknown(&mut summary, ids, &found, span, exclusions);
    }
    if summary.unfinished() && !summary.checkpoint_failed {
        warn!(
            unsent = summary.unsent.len(),
            delivered = summary.report.delivered,
            stopped_early = summary.rest.is_some(),
            "fan-out stopped before the end of its audience"
        );
    }
    summary.elapsed = started.elapsed();
    match failure {
        Some(source) => Err(FanoutError { summary, source }),
        None => Ok(summary),
    }
}

/// Named connections the store did not return are gone too.
fn count_unknown(
    summary: &mut FanoutSummary,
    ids: &[ConnectionId],
    found: &HashSet<ConnectionId>,
    span: &Span,
    exclusions: &Exclusions,
) {
    let unknown: HashSet<&ConnectionId> = ids
        .iter()
        .filter(|id| span.contains(id.as_str()))
        .filter(|id| !found.contains(*id) && exclusions.connection.as_ref() != Some(*id))
        .collect();
    for id in unknown {
        debug!(connection_id = %id, "not connected");
        summary.report.recipients += 1;
        summary.report.gone += 1;
    }
}

/// Waits for the removals of gone connections still running, collecting the presence topics
/// their users left into `left`, until half the margin before the deadline (the other half is
/// the response's). Those still running then are left to the next 410 and to TTL: waiting
/// for them would cost the whole report when Lambda ends the invocation.
async fn finish_removals<F: Future<Output = Vec<(UserId, Topic)>>>(
    mut removals: FuturesUnordered<F>,
    left: &mut Vec<(UserId, Topic)>,
    deadline: Option<Instant>,
) {
    let finish = async {
        while let Some(removed) = removals.next().await {
            left.extend(removed);
        }
    };
    let Some(deadline) = deadline else {
        return finish.await;
    };
    let give_up = deadline
        .checked_sub(DEADLINE_MARGIN / 2)
        .unwrap_or(deadline);
    if timeout_at(give_up, finish).await.is_err() {
        warn!("deadline reached: gone connections not all removed; their rows expire by TTL");
    }
}

/// Deletes a batch of gone connections; returns the presence topics their users left. Their
/// rows also expire by TTL, so a failure costs only a few wasted posts later; it is logged
/// and does not fail the broadcast.
async fn remove(
    store: &dyn RecipientStore,
    ids: Vec<ConnectionId>,
    via: &Audience,
) -> Vec<(UserId, Topic)> {
    match store.remove_gone(&ids, via).await {
        Ok(removed) => removed
            .into_iter()
            .flat_map(|r| {
                let user = r.connection.user_id;
                r.left.into_iter().map(move |topic| (user.clone(), topic))
            })
            .collect(),
        Err(e) => {
            warn!(count = ids.len(), error = %e, "could not remove gone connections");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests;
