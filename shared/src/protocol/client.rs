//! The client protocol on the WebSocket: JSON frames keyed on `action`.
//!
//! Client → server: `subscribe` / `unsubscribe` (with `topic` or `topics`), `ping`, `whoami`.
//! Server → client: `subscribed` / `unsubscribed` / `pong` / `whoami` replies, and error frames
//! `{"error": code, "details": text}` — a client never meets silence.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;

use super::{ConnectionId, Topic, UserId};

/// The actions a client may send, listed in error details.
pub const SUPPORTED_ACTIONS: [&str; 4] = ["subscribe", "unsubscribe", "ping", "whoami"];

/// One parsed client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Subscribe(Vec<Topic>),
    Unsubscribe(Vec<Topic>),
    Ping,
    Whoami,
}

impl ClientAction {
    /// Parses a frame body. `max_topics` bounds one subscribe/unsubscribe request; duplicate
    /// topics collapse into one (first occurrence wins the order).
    pub fn parse(body: Option<&str>, max_topics: usize) -> Result<Self, ErrorFrame> {
        let body = body.unwrap_or_default();
        let value: Value = serde_json::from_str(body)
            .map_err(|e| ErrorFrame::new(ErrorCode::InvalidJson, format!("{e}")))?;
        let Value::Object(fields) = value else {
            return Err(ErrorFrame::new(
                ErrorCode::InvalidJson,
                "expected a JSON object such as {\"action\":\"ping\"}",
            ));
        };
        let action = match fields.get("action") {
            Some(Value::String(action)) => action.as_str(),
            Some(_) => {
                return Err(ErrorFrame::new(
                    ErrorCode::MissingAction,
                    format!("\"action\" must be a string, one of: {}", supported_list()),
                ));
            }
            None => {
                return Err(ErrorFrame::new(
                    ErrorCode::MissingAction,
                    format!("add \"action\", one of: {}", supported_list()),
                ));
            }
        };
        match action {
            "subscribe" => parse_topics(&fields, max_topics).map(ClientAction::Subscribe),
            "unsubscribe" => parse_topics(&fields, max_topics).map(ClientAction::Unsubscribe),
            "ping" => Ok(ClientAction::Ping),
            "whoami" => Ok(ClientAction::Whoami),
            other => Err(ErrorFrame::new(
                ErrorCode::UnknownAction,
                format!("unknown action {other:?}; supported: {}", supported_list()),
            )),
        }
    }
}

fn supported_list() -> String {
    SUPPORTED_ACTIONS.join(", ")
}

fn parse_topics(
    fields: &serde_json::Map<String, Value>,
    max_topics: usize,
) -> Result<Vec<Topic>, ErrorFrame> {
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

/// Topic names as sent (JSON values), validated: strings, distinct (first occurrence keeps
/// its place), at most `max_topics`.
///
/// Linear in the input: duplicates are found by hashing, and the count is checked as topics
/// are added, so a frame of thousands of distinct topics stops at the limit + 1 instead of
/// validating (and comparing) every one of them.
pub(crate) fn parse_topic_list<'a>(
    names: impl ExactSizeIterator<Item = &'a Value>,
    max_topics: usize,
) -> Result<Vec<Topic>, ErrorFrame> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(names.len().min(max_topics + 1));
    let mut topics: Vec<Topic> = Vec::with_capacity(names.len().min(max_topics + 1));
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
        let topic = Topic::parse(name).map_err(|e| {
            ErrorFrame::new(
                ErrorCode::InvalidTopic,
                format!("topic {:?}: {e}", short_str(name)),
            )
        })?;
        topics.push(topic);
    }
    Ok(topics)
}

/// At most this much of a client's value is echoed in an error frame.
const ECHO_BYTES: usize = 64;

fn short_str(text: &str) -> &str {
    match text.char_indices().nth(ECHO_BYTES) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    short_str(&text).to_owned()
}

/// A reply frame for a successful action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ServerFrame {
    Subscribed {
        topics: Vec<Topic>,
    },
    Unsubscribed {
        topics: Vec<Topic>,
    },
    Pong,
    Whoami {
        connection_id: ConnectionId,
        user_id: UserId,
    },
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
    /// The channel configuration does not let this connection do that to that topic.
    Forbidden,
    /// Over the connection's frame rate; `retry_after_ms` says when to try again.
    RateLimited,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|n| Topic::parse(n).unwrap()).collect()
    }

    fn error_of(body: &str) -> ErrorFrame {
        ClientAction::parse(Some(body), 10).unwrap_err()
    }

    #[test]
    fn parses_every_supported_action() {
        let parse = |body: &str| ClientAction::parse(Some(body), 10);
        assert_eq!(
            parse(r#"{"action":"subscribe","topic":"list:1"}"#),
            Ok(ClientAction::Subscribe(topics(&["list:1"])))
        );
        assert_eq!(
            parse(r#"{"action":"unsubscribe","topics":["a","b","a"]}"#),
            Ok(ClientAction::Unsubscribe(topics(&["a", "b"])))
        );
        assert_eq!(parse(r#"{"action":"ping"}"#), Ok(ClientAction::Ping));
        assert_eq!(parse(r#"{"action":"whoami"}"#), Ok(ClientAction::Whoami));
    }

    #[test]
    fn every_mistake_has_its_own_error_code() {
        assert_eq!(error_of("{nope").error, ErrorCode::InvalidJson);
        assert_eq!(error_of("[1,2]").error, ErrorCode::InvalidJson);
        assert_eq!(error_of("").error, ErrorCode::InvalidJson);
        assert_eq!(error_of(r#"{"topic":"a"}"#).error, ErrorCode::MissingAction);
        assert_eq!(error_of(r#"{"action":7}"#).error, ErrorCode::MissingAction);
        assert_eq!(
            error_of(r#"{"action":"subscribe"}"#).error,
            ErrorCode::MissingTopic
        );
        assert_eq!(
            error_of(r#"{"action":"subscribe","topics":[]}"#).error,
            ErrorCode::MissingTopic
        );
        assert_eq!(
            error_of(r#"{"action":"subscribe","topic":"a b"}"#).error,
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            error_of(r#"{"action":"subscribe","topic":1}"#).error,
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            error_of(r#"{"action":"subscribe","topic":"a","topics":["b"]}"#).error,
            ErrorCode::InvalidTopic
        );
    }

    #[test]
    fn unknown_action_lists_the_supported_ones() {
        let frame = error_of(r#"{"action":"dance"}"#);
        assert_eq!(frame.error, ErrorCode::UnknownAction);
        for action in SUPPORTED_ACTIONS {
            assert!(frame.details.contains(action), "{}", frame.details);
        }
    }

    #[test]
    fn too_many_topics_in_one_request_is_refused() {
        let body = r#"{"action":"subscribe","topics":["a","b","c"]}"#;
        let frame = ClientAction::parse(Some(body), 2).unwrap_err();
        assert_eq!(frame.error, ErrorCode::TooManyTopics);
        // duplicates count once, so this one is within the limit
        let body = r#"{"action":"subscribe","topics":["a","b","a","b","a"]}"#;
        assert_eq!(
            ClientAction::parse(Some(body), 2),
            Ok(ClientAction::Subscribe(topics(&["a", "b"])))
        );
    }

    /// Distinct topic names of at most 5 bytes: `"xxxxx",` is 8 bytes of frame each.
    fn distinct_names(count: usize) -> Vec<String> {
        const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..count)
            .map(|mut n| {
                let mut name = String::from("t");
                loop {
                    name.push(char::from(DIGITS[n % 36]));
                    n /= 36;
                    if n == 0 {
                        break name;
                    }
                }
            })
            .collect()
    }

    fn topic_parses_during(
        body: &str,
        max_topics: usize,
    ) -> (Result<ClientAction, ErrorFrame>, usize) {
        let before = crate::protocol::TOPIC_PARSES.with(|c| c.get());
        let parsed = ClientAction::parse(Some(body), max_topics);
        let after = crate::protocol::TOPIC_PARSES.with(|c| c.get());
        (parsed, after - before)
    }

    #[test]
    fn a_frame_of_16_000_distinct_topics_is_refused_after_the_limit_not_after_all_of_them() {
        // GIVEN a 128 KB frame naming 16 000 distinct topics
        let body = json!({"action": "subscribe", "topics": distinct_names(16_000)}).to_string();
        assert!(
            body.len() <= crate::protocol::MAX_MESSAGE_BYTES,
            "{}",
            body.len()
        );

        // WHEN it is parsed against the default limit of 50
        let (parsed, validations) = topic_parses_during(&body, 50);

        // THEN it is refused as too many, having validated no more than 51 names: work grows
        // with the limit, not with the frame (quadratic de-duplication of all 16 000 names
        // first is what this catches)
        assert_eq!(parsed.unwrap_err().error, ErrorCode::TooManyTopics);
        assert!(validations <= 51, "{validations} topic validations");
    }

    #[test]
    fn a_frame_of_one_topic_repeated_16_000_times_validates_it_once() {
        let body = json!({"action": "subscribe", "topics": vec!["list:1"; 16_000]}).to_string();
        let (parsed, validations) = topic_parses_during(&body, 50);
        assert_eq!(parsed, Ok(ClientAction::Subscribe(topics(&["list:1"]))));
        assert_eq!(validations, 1);
    }

    #[test]
    fn error_frames_echo_at_most_a_short_prefix_of_what_was_sent() {
        let long = "é".repeat(10_000);
        let body = json!({"action": "subscribe", "topic": long}).to_string();
        let frame = error_of(&body);
        assert_eq!(frame.error, ErrorCode::InvalidTopic);
        assert!(frame.details.len() < 300, "{}", frame.details.len());
    }

    #[test]
    fn frames_serialize_as_documented() {
        let reply = ServerFrame::Subscribed {
            topics: topics(&["a"]),
        };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"action": "subscribed", "topics": ["a"]})
        );
        assert_eq!(
            serde_json::to_value(ServerFrame::Pong).unwrap(),
            serde_json::json!({"action": "pong"})
        );
        let error = ErrorFrame::new(ErrorCode::InvalidJson, "x");
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            serde_json::json!({"error": "invalid_json", "details": "x"})
        );
    }
}
