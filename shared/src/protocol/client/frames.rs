//! What the server sends back: reply frames, error frames and their codes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channels::TopicPattern;
use crate::protocol::{ConnectionId, Topic, UserId};

/// A reply frame for a successful action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ServerFrame {
    Subscribed {
        topics: Vec<TopicPattern>,
        /// Where each subscribed topic with history stands, and, for those asked for with
        /// `since`, what the connection missed.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        history: BTreeMap<Topic, StreamReply>,
    },
    Unsubscribed {
        topics: Vec<TopicPattern>,
    },
    /// A client publish went out: the message's id, and how many it reached (counted as
    /// `POST /broadcast` counts).
    Published {
        topic: Topic,
        id: String,
        /// Its place in the topic's stream, for a topic with history.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        recipients: u64,
        delivered: u64,
        gone: u64,
        failed: u64,
    },
    /// Who is subscribed to a topic now.
    Presence(PresenceReply),
    /// A topic's kept messages.
    History {
        topic: Topic,
        #[serde(flatten)]
        stream: StreamReply,
    },
    Pong,
    Whoami {
        connection_id: ConnectionId,
        user_id: UserId,
    },
}

/// The users subscribed to a topic, each with its number of connections, and totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PresenceReply {
    pub topic: Topic,
    /// At most one page of users, by user id.
    pub users: Vec<PresentUser>,
    pub total_users: u64,
    pub total_connections: u64,
    /// False when the topic has more users than one answer reads: `users` is the first
    /// page and the totals count what was read (lower bounds).
    pub complete: bool,
}

/// A topic's stream as a reply shows it: where it stands and kept messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReply {
    /// The stream's epoch; `null` while the topic has kept nothing.
    pub epoch: Option<String>,
    /// The offset of its last message (0 when it has none).
    pub offset: u64,
    /// After a `since`: whether `messages` continue from it without a gap. `false`: the
    /// gap cannot be filled (trimmed, expired, or another epoch); refetch state and resume
    /// from `epoch`/`offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// The messages, as they were delivered.
    pub messages: Vec<Value>,
    /// More follow the last one: the reply was full (128 KB) or the limit was reached; ask
    /// again with `since` the last offset received.
    pub more: bool,
}

/// One user present in a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PresentUser {
    pub user_id: UserId,
    pub connections: u64,
}

/// Machine-readable error codes of error frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    MissingAction,
    UnknownAction,
    MissingTopic,
    InvalidTopic,
    TooManyTopics,
    /// A publish without a usable `event`, `data` or `echo`.
    InvalidMessage,
    /// The channel configuration does not let this connection do that to that topic.
    Forbidden,
    /// The namespace lets only subscribers publish, and this connection is not one.
    NotSubscribed,
    /// The message as delivered would exceed API Gateway's 128 KB.
    PayloadTooLarge,
    /// Over the connection's frame rate; `retry_after_ms` says when to try again.
    RateLimited,
    /// A `since` that is not `{"offset": n, "epoch": "…"}` for a subscribed topic, or a
    /// history `limit` out of range.
    InvalidSince,
    /// A `ref` that is neither a short string nor a non-negative integer.
    InvalidRef,
    NotConnected,
    InternalError,
}

/// `{"error": code, "details": text}`: what went wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorFrame {
    pub error: ErrorCode,
    pub details: String,
    /// With `rate_limited`: milliseconds until a frame would be accepted again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorFrame {
    pub fn new(error: ErrorCode, details: impl Into<String>) -> Self {
        Self {
            error,
            details: details.into(),
            retry_after_ms: None,
        }
    }

    pub fn rate_limited(retry_after: std::time::Duration, per_second: u32, burst: u32) -> Self {
        // Rounded up: a client that waits exactly this long is admitted.
        let retry_after_ms = retry_after.as_micros().div_ceil(1_000) as u64;
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(
                ErrorCode::RateLimited,
                format!(
                    "this connection may send {per_second} frames per second (bursts of {burst}); \
                     retry in {retry_after_ms} ms"
                ),
            )
        }
    }

    pub fn too_many_topics(requested: usize, limit: usize) -> Self {
        Self::new(
            ErrorCode::TooManyTopics,
            format!("{requested} topics requested; a connection may hold at most {limit}"),
        )
    }
}
