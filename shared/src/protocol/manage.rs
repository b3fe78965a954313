//! The server API's connection management: a backend subscribes and unsubscribes
//! connections (`POST /subscribe`, `POST /unsubscribe`) and closes them (`POST /disconnect`),
//! by connection id or by user; and asks who is there (`GET /presence`, `GET /online`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::broadcast::{ApiError, ApiErrorCode, connection_ids, user_id};
use super::{ConnectionId, UserId};
use crate::channels::TopicPattern;

/// Whose connections a request is about: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connections {
    Ids(Vec<ConnectionId>),
    /// Every live connection of the user.
    User(UserId),
}

/// The body of `POST /subscribe` and `POST /unsubscribe`, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionRequest {
    topic: Option<String>,
    topics: Option<Vec<Value>>,
    connection_ids: Option<Vec<String>>,
    user_id: Option<String>,
}

/// The body of `POST /disconnect`, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    connection_ids: Option<Vec<String>>,
    user_id: Option<String>,
}

/// A validated `POST /subscribe` or `POST /unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub connections: Connections,
    /// Topics or wildcard patterns, distinct, in the order given.
    pub topics: Vec<TopicPattern>,
}

/// A validated `POST /disconnect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub connections: Connections,
}

fn body_error(e: serde_json::Error) -> ApiError {
    let code = match e.classify() {
        serde_json::error::Category::Data => ApiErrorCode::InvalidRequest,
        _ => ApiErrorCode::InvalidJson,
    };
    ApiError::new(code, e.to_string())
}

fn connections_of(ids: Option<Vec<String>>, user: Option<String>) -> Result<Connections, ApiError> {
    match (ids, user) {
        (Some(ids), None) => Ok(Connections::Ids(connection_ids(ids)?)),
        (None, Some(user)) => Ok(Connections::User(user_id("user_id", &user)?)),
        (None, None) => Err(ApiError::new(
            ApiErrorCode::MissingTarget,
            "name the connections: connection_ids or user_id",
        )),
        (Some(_), Some(_)) => Err(ApiError::new(
            ApiErrorCode::MultipleTargets,
            "name the connections once: connection_ids or user_id, not both",
        )),
    }
}

impl SubscriptionChange {
    /// Parses a body; at most `max_topics` distinct topics.
    pub fn parse(body: &[u8], max_topics: usize) -> Result<Self, ApiError> {
        let request: SubscriptionRequest = serde_json::from_slice(body).map_err(body_error)?;
        let names: Vec<Value> = match (request.topic, request.topics) {
            (Some(one), None) => vec![Value::String(one)],
            (None, Some(many)) if !many.is_empty() => many,
            (None, Some(_)) => {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidRequest,
                    "\"topics\" must not be empty",
                ));
            }
            (None, None) => {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidRequest,
                    "add \"topic\": \"name\" or \"topics\": [\"a\", \"b\"]",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidRequest,
                    "send either \"topic\" or \"topics\", not both",
                ));
            }
        };
        // The client protocol's own rules: linear de-duplication, the per-connection limit
        // per request, and the same messages.
        let topics = super::client::parse_topic_list(names.iter(), max_topics)
            .map_err(|refused| ApiError::new(ApiErrorCode::InvalidRequest, refused.details))?;
        Ok(Self {
            connections: connections_of(request.connection_ids, request.user_id)?,
            topics,
        })
    }
}

impl Disconnect {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let request: DisconnectRequest = serde_json::from_slice(body).map_err(body_error)?;
        Ok(Self {
            connections: connections_of(request.connection_ids, request.user_id)?,
        })
    }
}

/// One connection a request could not be applied to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionFailure {
    pub connection_id: ConnectionId,
    /// A client protocol error code (`too_many_topics`) or `failed`.
    pub error: String,
    pub details: String,
}

/// The 200 body of `POST /subscribe` and `POST /unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionReport {
    /// `subscribed` or `unsubscribed`.
    pub action: String,
    pub topics: Vec<TopicPattern>,
    /// Connections that now hold (or no longer hold) every topic.
    pub connections: Vec<ConnectionId>,
    /// Named connections that are not registered (closed, or expired).
    pub not_connected: Vec<ConnectionId>,
    /// Connections left as they were, with the reason (all or nothing per connection).
    pub failed: Vec<ConnectionFailure>,
}

/// The 200 body of `POST /disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectReport {
    /// Closed (or found already closed by API Gateway), rows removed.
    pub disconnected: Vec<ConnectionId>,
    /// Named connections that were not registered; any rows left of them are removed.
    pub not_connected: Vec<ConnectionId>,
    /// API Gateway did not close them (throttled, unavailable): rows kept, retry.
    pub failed: Vec<ConnectionFailure>,
}

/// The query of `GET /presence`: `?topic=room:1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    pub topic: String,
}

/// The query of `GET /history`: `?topic=room:1&limit=20`, or the messages after a position:
/// `&since_offset=41&since_epoch=…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub topic: String,
    pub limit: Option<usize>,
    pub since_offset: Option<u64>,
    pub since_epoch: Option<String>,
}

/// The 200 body of `GET /history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReport {
    pub topic: crate::protocol::Topic,
    #[serde(flatten)]
    pub stream: crate::protocol::client::StreamReply,
}

/// The query of `GET /online`: `?user_id=alice`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineQuery {
    pub user_id: String,
}

/// The 200 body of `GET /online`: whether a user has live connections, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineReport {
    pub user_id: UserId,
    pub online: bool,
    /// Oldest first.
    pub connections: Vec<OnlineConnection>,
}

/// One live connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineConnection {
    pub connection_id: ConnectionId,
    /// Milliseconds since the Unix epoch.
    pub connected_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(body: Value) -> Result<SubscriptionChange, ApiError> {
        SubscriptionChange::parse(body.to_string().as_bytes(), 3)
    }

    #[test]
    fn subscription_changes_name_topics_and_connections() {
        let by_ids = change(
            json!({"topics": ["admin:1", "admin:1", "admin:2"], "connection_ids": ["a", "b", "a"]}),
        )
        .unwrap();
        assert_eq!(
            by_ids.connections,
            Connections::Ids(vec![ConnectionId::new("a"), ConnectionId::new("b")])
        );
        assert_eq!(
            by_ids.topics,
            vec![
                TopicPattern::parse("admin:1").unwrap(),
                TopicPattern::parse("admin:2").unwrap()
            ]
        );
        let by_user = change(json!({"topic": "admin:1", "user_id": "alice"})).unwrap();
        assert_eq!(by_user.connections, Connections::User(UserId::new("alice")));
    }

    #[test]
    fn malformed_subscription_changes_are_refused_with_their_code() {
        let code = |body: Value| change(body).unwrap_err().error;
        assert_eq!(code(json!({"topic": "a"})), ApiErrorCode::MissingTarget);
        assert_eq!(
            code(json!({"topic": "a", "user_id": "u", "connection_ids": ["c"]})),
            ApiErrorCode::MultipleTargets
        );
        assert_eq!(code(json!({"user_id": "u"})), ApiErrorCode::InvalidRequest);
        assert_eq!(
            code(json!({"topics": [], "user_id": "u"})),
            ApiErrorCode::InvalidRequest
        );
        assert_eq!(
            code(json!({"topic": "a b", "user_id": "u"})),
            ApiErrorCode::InvalidRequest
        );
        assert_eq!(
            code(json!({"topics": ["a", "b", "c", "d"], "user_id": "u"})),
            ApiErrorCode::InvalidRequest
        );
        assert_eq!(
            code(json!({"topic": "a", "user": "u"})),
            ApiErrorCode::InvalidRequest,
            "unknown field"
        );
        assert_eq!(
            code(json!({"topic": "a", "user_id": "x".repeat(200)})),
            ApiErrorCode::InvalidTarget
        );
        assert_eq!(
            SubscriptionChange::parse(b"{", 3).unwrap_err().error,
            ApiErrorCode::InvalidJson
        );
    }

    #[test]
    fn disconnects_name_connections_or_a_user() {
        let parse = |body: Value| Disconnect::parse(body.to_string().as_bytes());
        assert_eq!(
            parse(json!({"user_id": "alice"})).unwrap().connections,
            Connections::User(UserId::new("alice"))
        );
        assert_eq!(
            parse(json!({"connection_ids": ["a"]})).unwrap().connections,
            Connections::Ids(vec![ConnectionId::new("a")])
        );
        assert_eq!(
            parse(json!({})).unwrap_err().error,
            ApiErrorCode::MissingTarget
        );
        assert_eq!(
            parse(json!({"connection_ids": []})).unwrap_err().error,
            ApiErrorCode::InvalidTarget
        );
    }
}
