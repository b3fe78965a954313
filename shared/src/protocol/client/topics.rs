//! Topic lists as clients (and backends) send them: `topic` or `topics`, validated, distinct,
//! bounded, in linear time.

use std::collections::HashSet;

use serde_json::Value;

use super::{ErrorCode, ErrorFrame};
use crate::channels::{MAX_WILDCARD_DEPTH, TopicPattern};

pub(super) fn parse_topics(
    fields: &serde_json::Map<String, Value>,
    max_topics: usize,
) -> Result<Vec<TopicPattern>, ErrorFrame> {
    let names: Vec<&Value> = match (fields.get("topic"), fields.get("topics")) {
        (Some(_), Some(_)) => {
            return Err(ErrorFrame::new(
                ErrorCode::InvalidTopic,
                "send either \"topic\" or \"topics\", not both",
            ));
        }
        (Some(one), None) => vec![one],
        (None, Some(Value::Array(many))) => many.iter().collect(),
        (None, Some(_)) => {
            return Err(ErrorFrame::new(
                ErrorCode::InvalidTopic,
                "\"topics\" must be an array of strings",
            ));
        }
        (None, None) => {
            return Err(ErrorFrame::new(
                ErrorCode::MissingTopic,
                "add \"topic\": \"name\" or \"topics\": [\"a\", \"b\"]",
            ));
        }
    };
    if names.is_empty() {
        return Err(ErrorFrame::new(
            ErrorCode::MissingTopic,
            "\"topics\" must not be empty",
        ));
    }
    parse_topic_list(names.into_iter(), max_topics)
}

/// Topic names as sent (JSON values), validated: strings, each a topic or a wildcard pattern
/// (`list:*`, which must start with a namespace and be at most [`MAX_WILDCARD_DEPTH`] levels
/// deep; whether its namespace allows it is the channel configuration's call), distinct
/// (first occurrence keeps its place), at most `max_topics`.
///
/// Linear in the input: duplicates are found by hashing, and the count is checked as topics
/// are added, so a frame of thousands of distinct topics stops at the limit + 1 instead of
/// validating (and comparing) every one of them.
pub(crate) fn parse_topic_list<'a>(
    names: impl ExactSizeIterator<Item = &'a Value>,
    max_topics: usize,
) -> Result<Vec<TopicPattern>, ErrorFrame> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(names.len().min(max_topics + 1));
    let mut topics: Vec<TopicPattern> = Vec::with_capacity(names.len().min(max_topics + 1));
    for name in names {
        let Value::String(name) = name else {
            return Err(ErrorFrame::new(
                ErrorCode::InvalidTopic,
                format!("topic must be a string, got {}", short(name)),
            ));
        };
        if !seen.insert(name.as_str()) {
            continue;
        }
        if topics.len() == max_topics {
            return Err(ErrorFrame::new(
                ErrorCode::TooManyTopics,
                format!(
                    "more than {max_topics} topics requested; a connection may hold at most {max_topics}"
                ),
            ));
        }
        topics.push(parse_subscription(name)?);
    }
    Ok(topics)
}

/// One topic or wildcard pattern.
fn parse_subscription(name: &str) -> Result<TopicPattern, ErrorFrame> {
    let invalid = |why: String| {
        ErrorFrame::new(
            ErrorCode::InvalidTopic,
            format!("topic {:?}: {why}", short_str(name)),
        )
    };
    #[cfg(test)]
    crate::protocol::TOPIC_PARSES.with(|count| count.set(count.get() + 1));
    let pattern = TopicPattern::parse(name).map_err(|e| invalid(e.reason()))?;
    if pattern.is_wildcard() {
        if !pattern.as_str().contains(':') {
            return Err(invalid(
                "a wildcard must start with its namespace, e.g. \"list:*\"".into(),
            ));
        }
        if pattern.depth() > MAX_WILDCARD_DEPTH {
            return Err(invalid(format!(
                "a wildcard may be at most {MAX_WILDCARD_DEPTH} levels deep"
            )));
        }
    } else if pattern.as_topic().is_none() {
        return Err(invalid("not a topic".into()));
    }
    Ok(pattern)
}

/// At most this much of a client's value is echoed in an error frame.
const ECHO_BYTES: usize = 64;

pub(super) fn short_str(text: &str) -> &str {
    match text.char_indices().nth(ECHO_BYTES) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

pub(super) fn short(value: &Value) -> String {
    let text = value.to_string();
    short_str(&text).to_owned()
}
