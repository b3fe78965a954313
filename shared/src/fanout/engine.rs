//! The engine of one fan-out: one task that reads pages, launches attempts (each a task of
//! its own) while the adaptive limit allows, schedules retries, counts outcomes, removes the
//! gone, and checkpoints what is settled. Only this task touches its state, so none of it
//! is shared or locked; the attempt tasks report back on a channel.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

use super::ledger::{Final, Ledger};
use super::post::{Attempted, Job, Poster};
use super::{
    Checkpoint, Checkpoints, FanoutOptions, FanoutSummary, GONE_BATCH, MAX_THROTTLED_ATTEMPTS,
    remove,
};
use crate::protocol::broadcast::Exclusions;
use crate::protocol::{ConnectionId, Topic, UserId};
use crate::sender::SendError;
use crate::store::{Audience, Page, Recipient, RecipientStore, Span, StoreError};

/// Posts launched together as one task (each still answered on its own): a task and its
/// scheduling per post cost about as much as the post's own work, while a few dozen tasks
/// in flight are enough to spread over every worker thread.
const LAUNCH_BATCH: usize = 8;

/// Checkpoints are written at most this often: a continuation after a crash repeats at
/// most about this much sending, and a large broadcast costs one write per second.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A retry waiting for its time.
struct Due {
    at: Instant,
    order: u64,
    job: Job,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// The page being launched.
struct Current {
    page: u64,
    recipients: std::vec::IntoIter<Recipient>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Pages are taken as they come.
    Open,
    /// No page is taken after the current one: the reading ended, or was stopped.
    Closed,
}

pub(super) struct Engine<'a> {
    pub store: &'a dyn RecipientStore,
    pub audience: &'a Audience,
    pub exclusions: &'a Exclusions,
    pub options: &'a FanoutOptions,
    pub checkpoints: Option<&'a dyn Checkpoints>,
    pub poster: Poster,
    pub ledger: Ledger,
    pub summary: FanoutSummary,
    /// Recipients left over by an earlier run, sent first.
    pub pending: Vec<Recipient>,
    in_flight: usize,
    due: BinaryHeap<Reverse<Due>>,
    order: u64,
    current: Option<Current>,
    reading: Reading,
    given_up: bool,
    failure: Option<StoreError>,
    gone: Vec<ConnectionId>,
    /// Ids the store returned: for `Audience::Connections`, the others are gone.
    found: Option<HashSet<ConnectionId>>,
    saved_at: Instant,
    unsaved: bool,
    /// Pages taken from the store: reading stops early only once there is one.
    pages_read: u64,
    /// Reading was stopped before the end: throttled posts are handed back, not retried.
    stopped_early: bool,
    /// The page of the recipients an earlier run handed back.
    pending_page: Option<u64>,
}

type Removals<'a> = FuturesUnordered<BoxFuture<'a, Vec<(UserId, Topic)>>>;

impl<'a> Engine<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &'a dyn RecipientStore,
        audience: &'a Audience,
        exclusions: &'a Exclusions,
        options: &'a FanoutOptions,
        checkpoints: Option<&'a dyn Checkpoints>,
        poster: Poster,
        start: Option<Span>,
        pending: Vec<Recipient>,
    ) -> Self {
        Self {
            store,
            audience,
            exclusions,
            options,
            checkpoints,
            poster,
            ledger: Ledger::new(start),
            summary: FanoutSummary::default(),
            pending,
            in_flight: 0,
            due: BinaryHeap::new(),
            order: 0,
            current: None,
            reading: Reading::Open,
            given_up: false,
            failure: None,
            gone: Vec::new(),
            found: matches!(audience, Audience::Connections(_)).then(HashSet::new),
            saved_at: Instant::now(),
            unsaved: false,
            pages_read: 0,
            stopped_early: false,
            pending_page: None,
        }
    }

    /// Runs until every recipient read has its outcome; returns what the reading ended on.
    pub async fn run(
        mut self,
        mut pages: mpsc::Receiver<Result<Page, StoreError>>,
        mut results: mpsc::UnboundedReceiver<Attempted>,
    ) -> (
        FanoutSummary,
        Ledger,
        Option<StoreError>,
        Option<HashSet<ConnectionId>>,
    ) {
        let mut removals: Removals<'a> = FuturesUnordered::new();
        let stop_reading_at = self.options.stop_reading_at();
        let give_up_at = self.options.give_up_at();
        if !self.pending.is_empty() {
            // Left over by an earlier run: a page of their own, settled at the span's start.
            let rest = self.ledger.settled().rest.clone();
            let page = self.ledger.open(rest);
            let recipients = std::mem::take(&mut self.pending).into_iter();
            self.current = Some(Current { page, recipients });
            self.pending_page = Some(page);
        }
        loop {
            // Checked before anything is launched, not only when the timers below fire: a
            // page may be waiting when the time is already up.
            let now = Instant::now();
            if give_up_at.is_some_and(|at| at <= now) && !self.given_up {
                self.give_up();
            }
            // At least one page is read before stopping: a run stopped before it read anything
            // would hand its continuation exactly what it was given, for ever.
            if stop_reading_at.is_some_and(|at| at <= now) && self.pages_read > 0 {
                self.stop_reading();
            }
            self.launch_what_fits();
            if self.is_done() {
                break;
            }
            let room = self.in_flight < self.options.limit.current();
            let want_page = self.current.is_none() && self.reading == Reading::Open && room;
            let next_retry = self.due.peek().map(|due| due.0.at).filter(|_| room);
            tokio::select! {
                biased;
                Some(attempted) = results.recv() => {
                    // Every answer already in, then one launch for the slots they freed.
                    let mut next = Some(attempted);
                    while let Some(attempted) = next {
                        if let Some(batch) = self.on_result(attempted) {
                            removals.push(Box::pin(remove(self.store, batch, self.audience)));
                        }
                        next = results.try_recv().ok();
                    }
                }
                Some(left) = removals.next(), if !removals.is_empty() => {
                    self.summary.left.extend(left);
                }
                page = pages.recv(), if want_page => self.on_page(page),
                () = sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => {}
                () = sleep_until(stop_reading_at.unwrap_or_else(Instant::now)),
                    if stop_reading_at.is_some() && self.reading == Reading::Open && self.pages_read > 0 => {
                    self.stop_reading();
                }
                () = sleep_until(give_up_at.unwrap_or_else(Instant::now)),
                    if give_up_at.is_some() && !self.given_up => self.give_up(),
            }
            if self.ledger.settle() {
                self.unsaved = true;
            }
            self.checkpoint().await;
        }
        if !self.gone.is_empty() {
            let batch = std::mem::take(&mut self.gone);
            removals.push(Box::pin(remove(self.store, batch, self.audience)));
        }
        super::finish_removals(removals, &mut self.summary.left, self.options.deadline).await;
        // No last checkpoint: the caller saves the end with what it decides (continue or not).
        self.ledger.settle();
        let found = self.found.take();
        (self.summary, self.ledger, self.failure, found)
    }

    /// Every recipient read has its outcome and nothing more will be read.
    fn is_done(&self) -> bool {
        self.in_flight == 0
            && self.due.is_empty()
            && self.current.is_none()
            && self.reading == Reading::Closed
    }

    /// Launches retries that are due, then recipients of the current page, while the limit
    /// has room.
    fn launch_what_fits(&mut self) {
        let mut batch = Vec::new();
        while self.in_flight < self.options.limit.current() {
            if self
                .due
                .peek()
                .is_some_and(|due| due.0.at <= Instant::now())
            {
                if let Some(Reverse(due)) = self.due.pop() {
                    self.in_flight += 1;
                    batch.push(due.job);
                }
            } else {
                let Some(current) = &mut self.current else {
                    break;
                };
                let page = current.page;
                match current.recipients.next() {
                    Some(recipient) => {
                        self.ledger.launched(page);
                        self.in_flight += 1;
                        batch.push(Job {
                            recipient,
                            page,
                            attempts: 0,
                            throttled: 0,
                        });
                    }
                    None => {
                        self.ledger.dispatched(page);
                        self.current = None;
                    }
                }
            }
            if batch.len() == LAUNCH_BATCH {
                self.poster.launch(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            self.poster.launch(batch);
        }
    }

    /// A page arrived (or the reading ended, or failed).
    fn on_page(&mut self, page: Option<Result<Page, StoreError>>) {
        let page = match page {
            Some(Ok(page)) => page,
            Some(Err(e)) => {
                self.failure = Some(e);
                self.reading = Reading::Closed;
                return;
            }
            None => {
                self.reading = Reading::Closed;
                return;
            }
        };
        self.pages_read += 1;
        if page.rest.is_none() {
            self.reading = Reading::Closed;
        }
        if let Some(found) = &mut self.found {
            found.extend(page.recipients.iter().map(|r| r.connection_id.clone()));
        }
        let exclusions = self.exclusions;
        let recipients: Vec<Recipient> = page
            .recipients
            .into_iter()
            .filter(|r| !exclusions.excludes(&r.connection_id, &r.user_id))
            .collect();
        let number = self.ledger.open(page.rest);
        self.current = Some(Current {
            page: number,
            recipients: recipients.into_iter(),
        });
    }

    /// The time to stop reading has come: the page in hand is finished, and retries still
    /// waiting are handed back as unsent, for whoever continues (waiting for them would
    /// hold the caller past its budget).
    fn stop_reading(&mut self) {
        if self.reading == Reading::Closed {
            return;
        }
        self.reading = Reading::Closed;
        self.stopped_early = true;
        self.hand_back_retries();
    }

    /// Retries still waiting are handed back as unsent.
    fn hand_back_retries(&mut self) {
        for Reverse(due) in std::mem::take(&mut self.due).into_vec() {
            let Job {
                recipient,
                page,
                attempts,
                ..
            } = due.job;
            self.finish(page, Final::Unsent(recipient), attempts);
        }
    }

    /// The invocation's time is up: nothing more is launched, and what was not posted to
    /// is handed back as unsent.
    fn give_up(&mut self) {
        self.given_up = true;
        self.reading = Reading::Closed;
        if let Some(current) = self.current.take() {
            for recipient in current.recipients {
                self.ledger.launched(current.page);
                self.finish(current.page, Final::Unsent(recipient), 0);
            }
            self.ledger.dispatched(current.page);
        }
        self.hand_back_retries();
    }

    /// One attempt came back; returns a batch of gone connections to remove when one is full.
    fn on_result(&mut self, attempted: Attempted) -> Option<Vec<ConnectionId>> {
        self.in_flight -= 1;
        let Attempted {
            mut job,
            sent_at,
            result,
            out_of_time,
        } = attempted;
        let limit = &self.options.limit;
        let error = match result {
            Ok(()) => {
                limit.succeeded(sent_at);
                self.finish(job.page, Final::Delivered, job.attempts);
                return None;
            }
            Err(SendError::Gone) => {
                limit.succeeded(sent_at);
                debug!(connection_id = %job.recipient.connection_id, "gone");
                self.gone.push(job.recipient.connection_id.clone());
                self.finish(job.page, Final::Gone, job.attempts);
                return (self.gone.len() >= GONE_BATCH).then(|| std::mem::take(&mut self.gone));
            }
            Err(error) => error,
        };
        if out_of_time {
            self.finish(job.page, Final::Unsent(job.recipient), job.attempts);
            return None;
        }
        let may_retry = match &error {
            SendError::Throttled(_) => {
                limit.throttled(sent_at);
                job.throttled += 1;
                let exhausted = job.throttled >= MAX_THROTTLED_ATTEMPTS;
                // Handed back once already: a 429 that outlasts two runs is the client's own
                // full buffer (API Gateway answers that 429 too), not the account's rate.
                let handed_back_before = self.pending_page == Some(job.page);
                if exhausted && handed_back_before && !self.stopped_early {
                    false
                } else if exhausted || self.stopped_early {
                    debug!(connection_id = %job.recipient.connection_id, throttled = job.throttled, "still throttled: handed back unsent");
                    self.finish(job.page, Final::Unsent(job.recipient), job.attempts);
                    return None;
                } else {
                    true
                }
            }
            SendError::Transient(_) => {
                job.attempts - job.throttled + 1 < self.options.retry.max_attempts
            }
            _ => false,
        };
        if !may_retry {
            warn!(connection_id = %job.recipient.connection_id, reason = %error, attempts = job.attempts + 1, "post failed");
            self.finish(job.page, Final::Failed, job.attempts);
            return None;
        }
        let at = Instant::now() + self.options.retry.backoff(job.attempts);
        if self.given_up || self.options.give_up_at().is_some_and(|end| at >= end) {
            self.finish(job.page, Final::Unsent(job.recipient), job.attempts);
            return None;
        }
        job.attempts += 1;
        self.summary.retries += 1;
        self.order += 1;
        self.due.push(Reverse(Due {
            at,
            order: self.order,
            job,
        }));
        None
    }

    fn finish(&mut self, page: u64, outcome: Final, retries: u32) {
        self.ledger.finished(page, &outcome, retries);
        let report = &mut self.summary.report;
        report.recipients += 1;
        match outcome {
            Final::Delivered => report.delivered += 1,
            Final::Gone => report.gone += 1,
            Final::Failed => report.failed += 1,
            Final::Unsent(recipient) => {
                report.failed += 1;
                self.summary.unsent.push(recipient);
            }
        }
    }

    /// Saves what is settled, at most every [`CHECKPOINT_EVERY`]. A failed save (the lease
    /// lost to another runner, the store down) stops the fan-out: sending on would repeat
    /// what the next runner sends.
    async fn checkpoint(&mut self) {
        let Some(checkpoints) = self.checkpoints else {
            return;
        };
        if !self.unsaved || self.saved_at.elapsed() < CHECKPOINT_EVERY {
            return;
        }
        let settled = self.ledger.settled();
        let checkpoint = Checkpoint {
            rest: settled.rest.clone(),
            report: settled.report,
            retries: settled.retries,
            unsent: settled.unsent.clone(),
        };
        self.saved_at = Instant::now();
        self.unsaved = false;
        if let Err(e) = checkpoints.save(&checkpoint).await {
            warn!(error = %e, "checkpoint not saved: fan-out stops");
            self.summary.checkpoint_failed = true;
            if !self.given_up {
                self.give_up();
            }
        }
    }
}
