//! `GET /broadcasts/{id}`: how far a broadcast sent in the background has got.

use serde::{Deserialize, Serialize};

use super::broadcast::{BroadcastState, FanoutReport};

/// Where one part of a broadcast stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// A runner holds it and is sending.
    Running,
    /// Between two runs (a continuation is on its way), or not yet started.
    Waiting,
    /// Nobody has run it for a while although it is not done: every invocation of it
    /// failed. Reading the status starts it again.
    Stalled,
    /// Every recipient of it has its outcome.
    Done,
}

/// One part of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub part: u32,
    pub status: ShardState,
    #[serde(flatten)]
    pub report: FanoutReport,
    pub retries: u64,
    /// Invocations that ran it: the first, then one per continuation or restart.
    pub runs: u32,
    /// Runs that took over from one that died part-way; each may have sent again what the
    /// dead one sent after its last checkpoint.
    pub restarts: u32,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// The body of `GET /broadcasts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastStatus {
    pub id: String,
    pub status: BroadcastState,
    /// Everything so far: the accepting call's own sends and every part's.
    #[serde(flatten)]
    pub report: FanoutReport,
    pub retries: u64,
    /// Runs that took a part up where an earlier run let go of it: mostly a part continuing
    /// itself before its invocation's deadline (also a run started again by Lambda's retry
    /// of a failed run, or by a status read).
    pub continuations: u64,
    pub restarts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub shards: Vec<ShardStatus>,
}
