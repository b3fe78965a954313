//! Broadcasts too large for one invocation: what every part of one needs (audience,
//! payload, exclusions), where each part stands, who is running it, and what it has done,
//! kept until the broadcast's status is no longer asked for (24 h, by TTL).
//!
//! A part is run by one runner at a time: a runner claims it with a lease that ends with its
//! invocation, checkpoints while it sends, and lets go when it stops. A runner that dies
//! keeps its lease until it runs out; the next runner then takes over from the last
//! checkpoint (a restart), so what the dead one sent after it may be sent again, and nothing
//! before it is.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Audience, Recipient, Span, StoreError};
use crate::protocol::broadcast::{Exclusions, FanoutReport};

/// How long a broadcast's status is kept: as long as its id is remembered for idempotency.
pub const JOB_TTL_SECONDS: u64 = 24 * 3_600;

/// Counts of what was done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    #[serde(flatten)]
    pub report: FanoutReport,
    pub retries: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        let (total, more) = (&mut self.report, other.report);
        total.recipients += more.recipients;
        total.delivered += more.delivered;
        total.gone += more.gone;
        total.failed += more.failed;
        self.retries += other.retries;
    }
}

/// Where a part stands: what is left, and what its runs have done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What is left to read; `None`: nothing.
    #[serde(default)]
    pub rest: Option<Span>,
    /// Read, but not sent yet: the next run sends them first.
    #[serde(default)]
    pub unsent: Vec<Recipient>,
    #[serde(default)]
    pub tally: Tally,
}

impl Progress {
    pub fn is_done(&self) -> bool {
        self.rest.is_none() && self.unsent.is_empty()
    }
}

/// One part of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub progress: Progress,
    /// Runs that claimed it.
    pub runs: u32,
    /// Runs that took over from a runner that died holding it.
    pub restarts: u32,
    /// Who holds it now, and until when (milliseconds since the Unix epoch).
    pub runner: Option<String>,
    pub lease_until_ms: i64,
    pub updated_at_ms: i64,
}

impl Part {
    /// A part of a new broadcast, not yet run.
    pub fn new(index: u32, progress: Progress, now_ms: i64) -> Self {
        Self {
            index,
            progress,
            runs: 0,
            restarts: 0,
            runner: None,
            lease_until_ms: 0,
            updated_at_ms: now_ms,
        }
    }
}

/// A broadcast running in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The broadcast's id (the envelope's `id`).
    pub id: String,
    pub audience: Audience,
    pub exclusions: Exclusions,
    /// The message, exactly as every recipient gets it.
    pub payload: Bytes,
    /// What the call that accepted it sent itself, before it handed the rest on.
    pub head: Tally,
    /// Its place in its topic's stream, for a topic with history.
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    pub created_at_ms: i64,
    /// Seconds since the Unix epoch after which it is forgotten.
    pub expires_at: u64,
    pub parts: Vec<Part>,
}

/// What claiming a part found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds it until its lease ends.
    Claimed(Part),
    /// Nothing is left of it.
    Done,
    /// Another runner holds it.
    Busy { runner: String, lease_until_ms: i64 },
    /// No such broadcast or part (or it has expired).
    Unknown,
}

/// Where broadcasts that run in parts are kept.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Records a new broadcast and its parts. Fails if its id is already recorded.
    async fn create_job(&self, job: &Job) -> Result<(), StoreError>;

    /// The broadcast and its parts, read consistently; `None` when unknown or expired.
    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError>;

    /// Takes part `part` for `runner` until `lease_until_ms`, unless it is done or another
    /// runner's lease is still running. A runner may claim again what it holds (Lambda
    /// retries an invocation with its request id).
    async fn claim_part(
        &self,
        id: &str,
        part: u32,
        runner: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<Claim, StoreError>;

    /// Saves the part's progress while `runner` holds it, and lets go of it when `release`.
    /// Fails with [`StoreError::LeaseLost`] when `runner` no longer holds it.
    async fn save_part(
        &self,
        id: &str,
        part: u32,
        runner: &str,
        progress: &Progress,
        release: bool,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}
