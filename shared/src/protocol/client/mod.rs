//! The client protocol on the WebSocket: JSON frames keyed on `action`.
//!
//! Client → server: `subscribe` / `unsubscribe` (with `topic` or `topics`, wildcards where a
//! namespace allows them), `publish`, `presence`, `ping`, `whoami`.
//! Server → client: `subscribed` / `unsubscribed` / `published` / `presence` / `pong` /
//! `whoami` replies, and error frames `{"error": code, "details": text}` — a client never
//! meets silence.
//!
//! Any frame may carry a `ref` (a string of 1 to [`MAX_REF_BYTES`] bytes, or a non-negative
//! integer): its reply or error frame carries the same `ref`, so a client with several
//! requests in flight can tell which reply answers which. Frames without one are answered
//! as before.

mod frames;
mod history;
mod reference;
mod topics;

use serde_json::{Map, Value};

pub use frames::{ErrorCode, ErrorFrame, PresenceReply, PresentUser, ServerFrame, StreamReply};
pub use history::{HistoryRequest, MAX_HISTORY_LIMIT, Subscribe};
pub use reference::{MAX_REF_BYTES, Ref, Reply};
pub(crate) use topics::parse_topic_list;

use super::Topic;
use crate::channels::TopicPattern;
use topics::{parse_topics, short, short_str};

/// The actions a client may send, listed in error details.
pub const SUPPORTED_ACTIONS: [&str; 7] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "history",
    "ping",
    "whoami",
];

/// Longest event name of a publish, in bytes.
pub const MAX_EVENT_BYTES: usize = 128;

/// One parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAction {
    Subscribe(Subscribe),
    Unsubscribe(Vec<TopicPattern>),
    Publish(Publish),
    Presence(Topic),
    History(HistoryRequest),
    Ping,
    Whoami,
}

/// `{"action":"publish","topic":…,"event":…,"data":…,"echo":false}`: a message from a client
/// to a topic's subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: Topic,
    pub event: String,
    pub data: Value,
    /// Deliver to the sending connection too (off by default: the sender has its message).
    pub echo: bool,
}

impl ClientAction {
    /// Parses a frame body. `max_topics` bounds one subscribe/unsubscribe request; duplicate
    /// topics collapse into one (first occurrence wins the order).
    pub fn parse(body: Option<&str>, max_topics: usize) -> Result<Self, ErrorFrame> {
        Self::parse_with_ref(body, max_topics).1
    }

    /// [`parse`](Self::parse), and the frame's `ref` to answer with: present whenever the
    /// frame is a JSON object with a valid `ref`, whether or not the rest of it is valid.
    pub fn parse_with_ref(
        body: Option<&str>,
        max_topics: usize,
    ) -> (Option<Ref>, Result<Self, ErrorFrame>) {
        let body = body.unwrap_or_default();
        let mut fields = match serde_json::from_str(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                let expected = "expected a JSON object such as {\"action\":\"ping\"}";
                return (None, Err(ErrorFrame::new(ErrorCode::InvalidJson, expected)));
            }
            Err(e) => {
                return (
                    None,
                    Err(ErrorFrame::new(ErrorCode::InvalidJson, format!("{e}"))),
                );
            }
        };
        match reference::take(&mut fields) {
            Ok(reference) => (reference, Self::from_fields(fields, max_topics)),
            Err(refused) => (None, Err(refused)),
        }
    }

    fn from_fields(fields: Map<String, Value>, max_topics: usize) -> Result<Self, ErrorFrame> {
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
            "subscribe" => {
                history::parse_subscribe(&fields, max_topics).map(ClientAction::Subscribe)
            }
            "unsubscribe" => parse_topics(&fields, max_topics).map(ClientAction::Unsubscribe),
            "publish" => parse_publish(fields).map(ClientAction::Publish),
            "presence" => one_topic(&fields).map(ClientAction::Presence),
            "history" => history::parse_history(&fields).map(ClientAction::History),
            "ping" => Ok(ClientAction::Ping),
            "whoami" => Ok(ClientAction::Whoami),
            other => Err(ErrorFrame::new(
                ErrorCode::UnknownAction,
                format!(
                    "unknown action {:?}; supported: {}",
                    short_str(other),
                    supported_list()
                ),
            )),
        }
    }
}

fn supported_list() -> String {
    SUPPORTED_ACTIONS.join(", ")
}

/// The one exact topic a publish or presence frame names in `topic`.
fn one_topic(fields: &Map<String, Value>) -> Result<Topic, ErrorFrame> {
    match fields.get("topic") {
        Some(Value::String(name)) => Topic::parse(name).map_err(|e| {
            ErrorFrame::new(
                ErrorCode::InvalidTopic,
                format!("topic {:?}: {e} (one topic, no wildcard)", short_str(name)),
            )
        }),
        Some(other) => Err(ErrorFrame::new(
            ErrorCode::InvalidTopic,
            format!("topic must be a string, got {}", short(other)),
        )),
        None => Err(ErrorFrame::new(
            ErrorCode::MissingTopic,
            "add \"topic\": \"name\"",
        )),
    }
}

fn parse_publish(mut fields: Map<String, Value>) -> Result<Publish, ErrorFrame> {
    let topic = one_topic(&fields)?;
    let invalid = |details: String| ErrorFrame::new(ErrorCode::InvalidMessage, details);
    let event = match fields.remove("event") {
        Some(Value::String(event)) if !event.is_empty() && event.len() <= MAX_EVENT_BYTES => event,
        Some(_) | None => {
            return Err(invalid(format!(
                "publish needs \"event\": a name of 1 to {MAX_EVENT_BYTES} bytes, e.g. \"message\""
            )));
        }
    };
    let echo = match fields.remove("echo") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => {
            return Err(invalid(format!(
                "\"echo\" must be true or false, got {}",
                short(&other)
            )));
        }
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "action" | "topic" | "data"))
    {
        return Err(invalid(format!(
            "unknown field {:?}; a publish has topic, event, data and echo (the sender is set by the bridge)",
            short_str(unknown)
        )));
    }
    Ok(Publish {
        topic,
        event,
        data: fields.remove("data").unwrap_or(Value::Null),
        echo,
    })
}

#[cfg(test)]
mod tests;
