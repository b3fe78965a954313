//! The broadcast HTTP API: what app backends POST, and what they get back.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ConnectionId, MAX_MESSAGE_BYTES, Topic, UserId, is_topic_char};
use crate::store::history::Position;

/// Most connection ids one broadcast may name; larger lists belong in a topic.
pub const MAX_CONNECTION_IDS: usize = 1000;

/// Most topics one broadcast may name (`topics`): each is read as its own partition.
pub const MAX_BROADCAST_TOPICS: usize = 100;

/// Most messages in one batch (`{"batch": [...]}`): they run one after the other within the
/// invocation's time.
pub const MAX_BATCH: usize = 25;

/// The body of `POST /broadcast`, as sent. Unknown fields are refused so that a typo such as
/// `"topci"` is a 400, not a message silently sent to nobody.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    pub topic: Option<String>,
    pub topics: Option<Vec<String>>,
    pub user_id: Option<String>,
    pub connection_ids: Option<Vec<String>>,
    pub all: Option<bool>,
    pub event: Option<String>,
    pub data: Option<Value>,
    pub message: Option<Value>,
    pub exclude_user: Option<String>,
    pub exclude_connection: Option<String>,
    /// The backend's own message id, delivered in the envelope and kept as an idempotency
    /// key: the same id again within the window is not sent twice.
    pub id: Option<String>,
    /// Answer 202 at once and send in the background, in parallel parts, however large
    /// the audience (`GET /broadcasts/{id}` tells how far it got).
    #[serde(rename = "async")]
    pub run_async: Option<bool>,
}

/// Longest message id a backend may give, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 128;

/// Who a broadcast is for: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Topic(Topic),
    /// Several topics at once: each connection gets the message once, however many of them
    /// it holds.
    Topics(Vec<Topic>),
    User(UserId),
    Connections(Vec<ConnectionId>),
    All,
}

/// Recipients to leave out, so a user acting in the app does not get their own echo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusions {
    pub user: Option<UserId>,
    pub connection: Option<ConnectionId>,
}

impl Exclusions {
    pub fn excludes(&self, connection: &ConnectionId, user: &UserId) -> bool {
        self.connection.as_ref() == Some(connection) || self.user.as_ref() == Some(user)
    }
}

/// What a broadcast sends: the standard envelope or a raw JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Event { event: String, data: Value },
    Raw(Value),
}

/// A validated broadcast request.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub target: Target,
    pub message: Message,
    pub exclusions: Exclusions,
    /// The backend's message id (and idempotency key), when it gave one.
    pub id: Option<String>,
    /// Sent in the background from the start (`"async": true`).
    pub run_async: bool,
}

/// The envelope clients receive for `event` + `data` messages: backend broadcasts, client
/// publishes, join and leave events.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// The topic a topic message went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a Topic>,
    /// The topics a several-topic broadcast went to (a connection may hold any of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<&'a [Topic]>,
    pub event: &'a str,
    pub data: &'a Value,
    /// Unique per message: clients de-duplicate and correlate with it.
    pub id: &'a str,
    /// Milliseconds since the Unix epoch, when the message was accepted.
    pub timestamp: i64,
    /// The user who published it, for a client publish: set by the bridge from the
    /// connection's verified token, never taken from the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a UserId>,
    /// Its place in the topic's stream, in namespaces with `history`: clients resume from
    /// it (`since`) after a reconnect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
}

impl Envelope<'_> {
    /// Serialized once per message, refused over API Gateway's 128 KB: every post would fail.
    pub fn to_payload(&self) -> Result<Vec<u8>, PayloadError> {
        let bytes = serde_json::to_vec(self).map_err(|e| PayloadError::Invalid(e.to_string()))?;
        check_size(bytes)
    }
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("message is {0} bytes; API Gateway delivers at most {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(String),
}

fn check_size(bytes: Vec<u8>) -> Result<Vec<u8>, PayloadError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(PayloadError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        let code = match e {
            PayloadError::TooLarge(_) => ApiErrorCode::PayloadTooLarge,
            PayloadError::Invalid(_) => ApiErrorCode::InvalidRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

/// What `POST /broadcast` carries: one message, or a batch of them, each with its own target.
#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastBody {
    One(Broadcast),
    Batch(Vec<Broadcast>),
}

fn body_error(e: serde_json::Error) -> ApiError {
    // Valid JSON of the wrong shape (an unknown field, a number for a topic) is a different
    // mistake from a body that is not JSON at all.
    let code = match e.classify() {
        serde_json::error::Category::Data => ApiErrorCode::InvalidRequest,
        _ => ApiErrorCode::InvalidJson,
    };
    ApiError::new(code, e.to_string())
}

impl BroadcastBody {
    /// Parses and validates a request body: a broadcast, or `{"batch": [broadcast, …]}` of
    /// 1 to [`MAX_BATCH`]; an invalid member refuses the batch, naming its index.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(body_error)?;
        let Some(batch) = value.get("batch") else {
            let request: BroadcastRequest = serde_json::from_value(value).map_err(body_error)?;
            return request.validate().map(BroadcastBody::One);
        };
        let Value::Object(fields) = &value else {
            return Err(ApiError::new(
                ApiErrorCode::InvalidRequest,
                "expected an object",
            ));
        };
        if fields.len() > 1 {
            return Err(ApiError::new(
                ApiErrorCode::InvalidRequest,
                "a batch is {\"batch\": [...]} and nothing else",
            ));
        }
        let Value::Array(members) = batch else {
            return Err(ApiError::new(
                ApiErrorCode::InvalidRequest,
                "\"batch\" must be an array of broadcasts",
            ));
        };
        if members.is_empty() || members.len() > MAX_BATCH {
            return Err(ApiError::new(
                ApiErrorCode::InvalidRequest,
                format!(
                    "a batch holds 1 to {MAX_BATCH} broadcasts, not {}",
                    members.len()
                ),
            ));
        }
        members
            .iter()
            .enumerate()
            .map(|(at, member)| {
                serde_json::from_value::<BroadcastRequest>(member.clone())
                    .map_err(body_error)
                    .and_then(BroadcastRequest::validate)
                    .map_err(|mut e| {
                        e.details = format!("batch[{at}]: {}", e.details);
                        e
                    })
            })
            .collect::<Result<_, _>>()
            .map(BroadcastBody::Batch)
    }
}

impl Broadcast {
    /// Parses and validates a body of one broadcast (not a batch).
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let request: BroadcastRequest = serde_json::from_slice(body).map_err(body_error)?;
        request.validate()
    }

    /// The bytes every recipient gets, serialized once per broadcast. Refused when over
    /// API Gateway's 128 KB message limit, since every PostToConnection would fail.
    /// The message as delivered; `position` is its place in the topic's stream, when kept.
    pub fn payload(
        &self,
        id: &str,
        timestamp: i64,
        position: Option<&Position>,
    ) -> Result<Vec<u8>, ApiError> {
        let bytes = match &self.message {
            Message::Event { event, data } => Envelope {
                topic: match &self.target {
                    Target::Topic(topic) => Some(topic),
                    _ => None,
                },
                topics: match &self.target {
                    Target::Topics(topics) => Some(topics),
                    _ => None,
                },
                event,
                data,
                id,
                timestamp,
                from: None,
                offset: position.map(|p| p.offset),
                epoch: position.map(|p| p.epoch.as_str()),
            }
            .to_payload()?,
            Message::Raw(value) => serde_json::to_vec(value)
                .map_err(|e| PayloadError::Invalid(e.to_string()))
                .and_then(check_size)?,
        };
        Ok(bytes)
    }
}

impl BroadcastRequest {
    fn validate(self) -> Result<Broadcast, ApiError> {
        let mut targets = Vec::new();
        let parse_topic = |topic: &str| {
            Topic::parse(topic).map_err(|e| {
                ApiError::new(ApiErrorCode::InvalidTarget, format!("topic {topic:?}: {e}"))
            })
        };
        if let Some(topic) = self.topic {
            targets.push(Target::Topic(parse_topic(&topic)?));
        }
        if let Some(names) = self.topics {
            if names.is_empty() || names.len() > MAX_BROADCAST_TOPICS {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidTarget,
                    format!(
                        "topics holds 1 to {MAX_BROADCAST_TOPICS} topics, not {}",
                        names.len()
                    ),
                ));
            }
            let mut seen = HashSet::new();
            let mut topics = Vec::with_capacity(names.len());
            for name in &names {
                if seen.insert(name.as_str()) {
                    topics.push(parse_topic(name)?);
                }
            }
            targets.push(Target::Topics(topics));
        }
        if let Some(user) = self.user_id {
            targets.push(Target::User(user_id("user_id", &user)?));
        }
        if let Some(ids) = self.connection_ids {
            targets.push(Target::Connections(connection_ids(ids)?));
        }
        if self.all == Some(true) {
            targets.push(Target::All);
        }
        let target = match targets.len() {
            1 => targets.remove(0),
            0 => {
                return Err(ApiError::new(
                    ApiErrorCode::MissingTarget,
                    "name one target: topic, topics, user_id, connection_ids or all: true",
                ));
            }
            _ => {
                return Err(ApiError::new(
                    ApiErrorCode::MultipleTargets,
                    "name exactly one target: topic, topics, user_id, connection_ids or all: true",
                ));
            }
        };
        let id = self.id.map(message_id).transpose()?;
        let message = match (self.event, self.data, self.message) {
            (Some(event), data, None) => Message::Event {
                event,
                data: data.unwrap_or(Value::Null),
            },
            (None, None, Some(raw)) => Message::Raw(raw),
            (None, None, None) => {
                return Err(ApiError::new(
                    ApiErrorCode::MissingMessage,
                    "send \"event\" (with optional \"data\") or a raw \"message\"",
                ));
            }
            (None, Some(_), _) => {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidRequest,
                    "\"data\" needs an \"event\" name",
                ));
            }
            (Some(_), _, Some(_)) => {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidRequest,
                    "send either \"event\"/\"data\" or \"message\", not both",
                ));
            }
        };
        Ok(Broadcast {
            target,
            message,
            exclusions: Exclusions {
                user: self
                    .exclude_user
                    .map(|user| user_id("exclude_user", &user))
                    .transpose()?,
                connection: self
                    .exclude_connection
                    .map(|id| connection_id("exclude_connection", &id))
                    .transpose()?,
            },
            id,
            run_async: self.run_async.unwrap_or(false),
        })
    }
}

/// A backend's message id: 1 to [`MAX_MESSAGE_ID_BYTES`] of the topic characters (a UUID,
/// an order number, `invoice-42:paid`), so it is safe in a key and a log line.
fn message_id(id: String) -> Result<String, ApiError> {
    if id.is_empty() || id.len() > MAX_MESSAGE_ID_BYTES || !id.chars().all(is_topic_char) {
        return Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            format!(
                "id must be 1 to {MAX_MESSAGE_ID_BYTES} bytes of A-Z a-z 0-9 _ - . : / @ | + =, e.g. a UUID"
            ),
        ));
    }
    Ok(id)
}

/// A user id a caller sent, bounded (see [`super::MAX_ID_BYTES`]).
pub(crate) fn user_id(field: &str, id: &str) -> Result<UserId, ApiError> {
    UserId::parse(id)
        .map_err(|e| ApiError::new(ApiErrorCode::InvalidTarget, format!("{field} {e}")))
}

/// A connection id a caller sent, bounded (see [`super::MAX_ID_BYTES`]).
pub(crate) fn connection_id(field: &str, id: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(id)
        .map_err(|e| ApiError::new(ApiErrorCode::InvalidTarget, format!("{field}: an id {e}")))
}

/// Connection ids a caller sent: 1 to [`MAX_CONNECTION_IDS`], each bounded, duplicates
/// counted once (first occurrence keeps its place).
pub(crate) fn connection_ids(ids: Vec<String>) -> Result<Vec<ConnectionId>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::new(
            ApiErrorCode::InvalidTarget,
            "connection_ids must not be empty",
        ));
    }
    if ids.len() > MAX_CONNECTION_IDS {
        return Err(ApiError::new(
            ApiErrorCode::InvalidTarget,
            format!(
                "{} connection_ids; at most {MAX_CONNECTION_IDS} per request (use a topic)",
                ids.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut unique: Vec<ConnectionId> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = connection_id("connection_ids", &id)?;
        if seen.insert(id.clone()) {
            unique.push(id);
        }
    }
    Ok(unique)
}

/// What a broadcast did: `recipients = delivered + gone + failed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutReport {
    /// Connections targeted, after exclusions.
    pub recipients: u64,
    /// PostToConnection succeeded.
    pub delivered: u64,
    /// The connection no longer exists (410, or unknown id); its rows are removed.
    pub gone: u64,
    /// Any other failure; logged with the connection id and reason.
    pub failed: u64,
}

/// Whether a broadcast has reached everyone it will reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastState {
    /// Every recipient has its outcome.
    #[default]
    Done,
    /// Parts of it are still being sent in the background.
    Running,
}

/// The body of `POST /broadcast`: 200 when `status` is `done`, 202 when `running` (the
/// counts are then what was sent before the rest was handed to the background).
#[derive(Debug, Serialize, Deserialize)]
pub struct BroadcastResponse {
    /// The broadcast's id, as in the envelope clients receive.
    pub id: String,
    #[serde(default)]
    pub status: BroadcastState,
    #[serde(flatten)]
    pub report: FanoutReport,
    /// Posts tried again after a 429 or 5xx.
    pub retries: u64,
    /// Not everyone was reached and the rest was not handed to the background: recipients
    /// not yet read are not in `recipients`, and those read but not sent to are in `failed`.
    /// Only with `store_failed`, since a broadcast out of time goes on in the background
    /// (`status: running`).
    pub deadline_reached: bool,
    /// The store failed while recipients were being read: those not yet read are in no
    /// count (the ones counted were handled). A retry with the same `id` answers this report.
    pub store_failed: bool,
    /// Its place in the topic's stream, for a topic with history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// This answers a repeat of an `id` already sent: nothing was sent this time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// Where to follow a running broadcast: `GET` it (relative to the API's base URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    /// Parts sending the rest in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
}

/// The 200 body of a batch: one report per message, in the batch's order.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<BroadcastResponse>,
}

/// The body of `GET /connections/count`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectionCount {
    pub count: u64,
}

/// Error codes of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorCode {
    InvalidJson,
    InvalidRequest,
    MissingTarget,
    MultipleTargets,
    InvalidTarget,
    MissingMessage,
    PayloadTooLarge,
    Unauthorized,
    /// The channel configuration refuses it (e.g. subscribing to a closed namespace).
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// A broadcast with this `id` is being sent by another request right now.
    Conflict,
    InternalError,
}

/// `{"error": code, "details": text}` of a refused HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub error: ApiErrorCode,
    pub details: String,
}

impl ApiError {
    pub fn new(error: ApiErrorCode, details: impl Into<String>) -> Self {
        Self {
            error,
            details: details.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self.error {
            ApiErrorCode::Unauthorized => 401,
            ApiErrorCode::Forbidden => 403,
            ApiErrorCode::NotFound => 404,
            ApiErrorCode::MethodNotAllowed => 405,
            ApiErrorCode::Conflict => 409,
            ApiErrorCode::InternalError => 500,
            _ => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<Broadcast, ApiError> {
        Broadcast::parse(body.to_string().as_bytes())
    }

    fn code(body: Value) -> ApiErrorCode {
        parse(body).unwrap_err().error
    }

    #[test]
    fn each_target_form_parses() {
        let topic = parse(json!({"topic": "list:1", "event": "e"})).unwrap();
        assert_eq!(topic.target, Target::Topic(Topic::parse("list:1").unwrap()));
        let user = parse(json!({"user_id": "alice", "message": 1})).unwrap();
        assert_eq!(user.target, Target::User(UserId::new("alice")));
        let ids = parse(json!({"connection_ids": ["a", "b", "a"], "event": "e"})).unwrap();
        assert_eq!(
            ids.target,
            Target::Connections(vec![ConnectionId::new("a"), ConnectionId::new("b")])
        );
        let all = parse(json!({"all": true, "event": "e", "exclude_user": "bob"})).unwrap();
        assert_eq!(all.target, Target::All);
        assert_eq!(all.exclusions.user, Some(UserId::new("bob")));
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        assert_eq!(
            Broadcast::parse(b"{oops").unwrap_err().error,
            ApiErrorCode::InvalidJson
        );
        assert_eq!(code(json!({"event": "e"})), ApiErrorCode::MissingTarget);
        assert_eq!(
            code(json!({"all": false, "event": "e"})),
            ApiErrorCode::MissingTarget
        );
        assert_eq!(
            code(json!({"topic": "a", "all": true, "event": "e"})),
            ApiErrorCode::MultipleTargets
        );
        assert_eq!(
            code(json!({"topic": "a b", "event": "e"})),
            ApiErrorCode::InvalidTarget
        );
        assert_eq!(
            code(json!({"connection_ids": [], "event": "e"})),
            ApiErrorCode::InvalidTarget
        );
        assert_eq!(code(json!({"topic": "a"})), ApiErrorCode::MissingMessage);
        assert_eq!(
            code(json!({"topic": "a", "data": 1})),
            ApiErrorCode::InvalidRequest
        );
        assert_eq!(
            code(json!({"topic": "a", "event": "e", "message": 1})),
            ApiErrorCode::InvalidRequest
        );
        assert_eq!(
            code(json!({"topci": "a", "event": "e"})),
            ApiErrorCode::InvalidRequest
        );
    }

    #[test]
    fn oversized_ids_are_400_before_they_reach_a_store_key() {
        let long = "x".repeat(crate::protocol::MAX_ID_BYTES + 1);
        for body in [
            json!({"user_id": long, "event": "e"}),
            json!({"connection_ids": ["ok", long], "event": "e"}),
            json!({"all": true, "event": "e", "exclude_user": long}),
            json!({"all": true, "event": "e", "exclude_connection": long}),
            json!({"user_id": "", "event": "e"}),
            json!({"connection_ids": [""], "event": "e"}),
        ] {
            let error = parse(body.clone()).unwrap_err();
            assert_eq!(error.error, ApiErrorCode::InvalidTarget, "{body}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn envelope_carries_topic_event_data_id_and_timestamp() {
        let broadcast = parse(json!({"topic": "t", "event": "e", "data": {"k": 1}})).unwrap();
        let bytes = broadcast.payload("id-1", 42, None).unwrap();
        let sent: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            sent,
            json!({"topic": "t", "event": "e", "data": {"k": 1}, "id": "id-1", "timestamp": 42})
        );
        let raw = parse(json!({"all": true, "message": {"x": [1, 2]}})).unwrap();
        assert_eq!(
            raw.payload("id", 1, None).unwrap(),
            br#"{"x":[1,2]}"#.to_vec()
        );
    }

    /// The numbers a client reads from a payload: the `data` of an envelope, or the message.
    fn numbers_received(broadcast: &Broadcast) -> Value {
        let sent: Value =
            serde_json::from_slice(&broadcast.payload("id", 1, None).unwrap()).unwrap();
        match broadcast.message {
            Message::Raw(_) => sent,
            Message::Event { .. } => sent["data"].clone(),
        }
    }

    #[test]
    fn numbers_reach_recipients_as_the_backend_sent_them() {
        // GIVEN a number the default float parser reads one unit in the last place off (the
        // broadcast_body fuzz target's input), and the extremes of f64 in an envelope
        let raw = Broadcast::parse(
            br#"{"all":true,"message":[4444444444444444444444444444444444444444444.24,55]}"#,
        )
        .unwrap();
        let extremes = json!([0.1, 1e-7, 2.2250738585072014e-308, 1.7976931348623157e308]);
        let event = parse(json!({"all": true, "event": "e", "data": extremes})).unwrap();
        // WHEN each is serialized for the recipients and read back as a client reads it
        // THEN every number is the one read from the request
        let Message::Raw(sent) = &raw.message else {
            panic!("a raw message");
        };
        assert_eq!(&numbers_received(&raw), sent);
        assert_eq!(numbers_received(&event), extremes);
    }

    #[test]
    fn payload_over_the_api_gateway_limit_is_refused() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let broadcast = parse(json!({"all": true, "message": big})).unwrap();
        let error = broadcast.payload("id", 1, None).unwrap_err();
        assert_eq!(error.error, ApiErrorCode::PayloadTooLarge);
        assert_eq!(error.status(), 400);
    }
}
