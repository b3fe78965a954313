//! The client protocol on the WebSocket: JSON frames keyed on `action`.
//!
//! Client → server: `subscribe` / `unsubscribe` (with `topic` or `topics`), `ping`, `whoami`.
//! Server → client: `subscribed` / `unsubscribed` / `pong` / `whoami` replies, and error frames
//! `{"error": code, "details": text}` — a client never meets silence.

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
    let mut topics: Vec<Topic> = Vec::with_capacity(names.len());
    for name in names {
        let Value::String(name) = name else {
            return Err(ErrorFrame::new(
                ErrorCode::InvalidTopic,
                format!("topic must be a string, got {name}"),
            ));
        };
        let topic = Topic::parse(name).map_err(|e| {
            ErrorFrame::new(ErrorCode::InvalidTopic, format!("topic {name:?}: {e}"))
        })?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    if topics.len() > max_topics {
        return Err(ErrorFrame::too_many_topics(topics.len(), max_topics));
    }
    Ok(topics)
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
    NotConnected,
    InternalError,
}

/// `{"error": code, "details": text}`: what went wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorFrame {
    pub error: ErrorCode,
    pub details: String,
}

impl ErrorFrame {
    pub fn new(error: ErrorCode, details: impl Into<String>) -> Self {
        Self {
            error,
            details: details.into(),
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
    }

    #[test]
    fn frames_serialize_as_documented() {
        let reply = ServerFrame::Subscribed {
            topics: topics(&["a"]),
        };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            serde_json::json!({"action": "subscribed", "topics": ["a"]})
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
