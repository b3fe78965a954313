//! The recovery half of the client protocol: `since` on a subscribe, and `history`.
//!
//! `{"action":"subscribe","topic":"room:1","since":{"offset":41,"epoch":"…"}}` — one topic,
//! one position; with `topics`, `since` maps topics to positions
//! (`{"room:1":{"offset":41,"epoch":"…"}}`), for any of them.
//! `{"action":"history","topic":"room:1","limit":20}` reads the last messages;
//! `"since"` instead reads those after a position.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::topics::{parse_topics, short};
use super::{ErrorCode, ErrorFrame, one_topic};
use crate::channels::TopicPattern;
use crate::protocol::Topic;
use crate::store::history::Position;

/// Most messages one history read returns.
pub const MAX_HISTORY_LIMIT: usize = 100;

/// A subscribe: its topics, and where the client left off in some of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subscribe {
    pub topics: Vec<TopicPattern>,
    pub since: BTreeMap<Topic, Position>,
}

/// A history read: the last `limit` messages, or those after `since`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRequest {
    pub topic: Topic,
    pub limit: usize,
    pub since: Option<Position>,
}

fn invalid(details: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(ErrorCode::InvalidSince, details)
}

/// `{"offset": n, "epoch": "…"}`, nothing else.
fn position(value: &Value) -> Result<Position, ErrorFrame> {
    let usage = "a position is {\"offset\": n, \"epoch\": \"…\"}, as the last message received carried them";
    let Value::Object(fields) = value else {
        return Err(invalid(format!("{usage}, not {}", short(value))));
    };
    if fields.len() != 2 {
        return Err(invalid(usage));
    }
    match (
        fields.get("offset").and_then(Value::as_u64),
        fields.get("epoch"),
    ) {
        (Some(offset), Some(Value::String(epoch))) if !epoch.is_empty() && epoch.len() <= 64 => {
            Ok(Position {
                offset,
                epoch: epoch.clone(),
            })
        }
        _ => Err(invalid(usage)),
    }
}

pub(super) fn parse_subscribe(
    fields: &Map<String, Value>,
    max_topics: usize,
) -> Result<Subscribe, ErrorFrame> {
    let topics = parse_topics(fields, max_topics)?;
    let Some(since) = fields.get("since") else {
        return Ok(Subscribe {
            topics,
            since: BTreeMap::new(),
        });
    };
    let exact = |name: &str| {
        topics
            .iter()
            .filter_map(TopicPattern::as_topic)
            .find(|t| t.as_str() == name)
    };
    let mut positions = BTreeMap::new();
    if fields.contains_key("topic") {
        // One topic: `since` is its position.
        let Some(topic) = topics.first().and_then(TopicPattern::as_topic) else {
            return Err(invalid("since needs a topic, not a wildcard"));
        };
        positions.insert(topic, position(since)?);
    } else {
        let Value::Object(map) = since else {
            return Err(invalid(
                "with \"topics\", since maps topics to positions: {\"room:1\": {\"offset\": 41, \"epoch\": \"…\"}}",
            ));
        };
        for (name, at) in map {
            let Some(topic) = exact(name) else {
                return Err(invalid(format!(
                    "since names {name:?}, which is not one of the topics subscribed"
                )));
            };
            positions.insert(topic, position(at)?);
        }
    }
    Ok(Subscribe {
        topics,
        since: positions,
    })
}

pub(super) fn parse_history(fields: &Map<String, Value>) -> Result<HistoryRequest, ErrorFrame> {
    let topic = one_topic(fields)?;
    let limit = match fields.get("limit") {
        None => MAX_HISTORY_LIMIT,
        Some(value) => match value.as_u64() {
            Some(n) if (1..=MAX_HISTORY_LIMIT as u64).contains(&n) => n as usize,
            _ => {
                return Err(invalid(format!(
                    "limit must be 1 to {MAX_HISTORY_LIMIT}, not {}",
                    short(value)
                )));
            }
        },
    };
    let since = fields.get("since").map(position).transpose()?;
    Ok(HistoryRequest {
        topic,
        limit,
        since,
    })
}
