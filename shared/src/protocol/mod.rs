//! Every wire type wsbridge speaks: the identifiers shared by all routes, the client protocol on
//! the WebSocket (`client`), and the server HTTP API: broadcasts (`broadcast`) and connection
//! management (`manage`).

pub mod broadcast;
pub mod client;
pub mod manage;
pub mod status;

use std::fmt;

use serde::{Deserialize, Serialize};

/// API Gateway's limit for one WebSocket message (and for a PostToConnection body): 128 KB.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// Longest user id (the JWT `sub`) and connection id accepted, in bytes: far above what
/// identity providers issue (Cognito 36, Auth0 about 30, API Gateway connection ids 16) and
/// far below DynamoDB's key limits (1 024 bytes for a sort key), so an oversized id is a
/// client's mistake (400/401), never a failed write (500).
pub const MAX_ID_BYTES: usize = 128;

/// Why a string is not a valid user or connection id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} bytes long; the limit is {MAX_ID_BYTES}")]
    TooLong(usize),
}

fn check_id(id: &str) -> Result<(), IdError> {
    match id.len() {
        0 => Err(IdError::Empty),
        n if n > MAX_ID_BYTES => Err(IdError::TooLong(n)),
        _ => Ok(()),
    }
}

/// The id API Gateway gives a WebSocket connection (e.g. `L0SM9cOFvHcCIhw=`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(String);

impl ConnectionId {
    /// An id from a trusted source (API Gateway, the store).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// An id a caller sent: non-empty and at most [`MAX_ID_BYTES`].
    pub fn parse(id: &str) -> Result<Self, IdError> {
        check_id(id).map(|()| Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The application's user id: the verified JWT `sub` of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// An id from a trusted source (a verified token, the store).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// An id a caller sent: non-empty and at most [`MAX_ID_BYTES`].
    pub fn parse(id: &str) -> Result<Self, IdError> {
        check_id(id).map(|()| Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated topic name: 1 to [`MAX_TOPIC_LEN`] bytes of `A-Z a-z 0-9 _ - . : / @ | + =`.
///
/// The charset keeps topics safe to embed in DynamoDB keys (which use `#` as separator) and
/// in log lines, while allowing the usual `list:123` / `org/42/board` shapes and the user ids
/// identity providers issue after `user:` (`auth0|abc`, `a+b@example.com`, base64 `=`).
/// The part before the first `:` names the topic's namespace (see `channels`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Topic(String);

/// Why a string is not a valid [`Topic`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic must not be empty")]
    Empty,
    #[error("topic is {0} bytes long; the limit is {MAX_TOPIC_LEN}")]
    TooLong(usize),
    #[error("topic contains {0:?}; allowed are A-Z a-z 0-9 and _ - . : / @ | + =")]
    InvalidChar(char),
}

#[cfg(test)]
thread_local! {
    /// Topic validations done on this thread by the client protocol's topic lists: lets tests
    /// count parse work instead of timing it.
    pub(crate) static TOPIC_PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Topic {
    pub fn parse(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong(name.len()));
        }
        if let Some(bad) = name.chars().find(|c| !is_topic_char(*c)) {
            return Err(TopicError::InvalidChar(bad));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(namespace, rest)` when the topic has a `:`: `user:alice` is `("user", "alice")`.
    pub fn split_namespace(&self) -> Option<(&str, &str)> {
        self.0.split_once(':')
    }
}

pub(crate) fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '@' | '|' | '+' | '=')
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Topic::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_topic_shapes() {
        for name in [
            "list:123",
            "org/42/board",
            "user@example.com",
            "user:auth0|64b1f0",
            "user:a+b@example.com",
            "user:L0SM9cOFvHcCIhw=",
            "a",
            "A-b_c.d",
        ] {
            assert_eq!(Topic::parse(name).map(|t| t.0), Ok(name.to_owned()));
        }
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        let long = "x".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(Topic::parse(&long), Err(TopicError::TooLong(129)));
        assert!(Topic::parse(&"x".repeat(MAX_TOPIC_LEN)).is_ok());
        assert_eq!(Topic::parse("a#b"), Err(TopicError::InvalidChar('#')));
        assert_eq!(Topic::parse("a b"), Err(TopicError::InvalidChar(' ')));
        assert_eq!(Topic::parse("tôpic"), Err(TopicError::InvalidChar('ô')));
        assert_eq!(Topic::parse("a*"), Err(TopicError::InvalidChar('*')));
    }

    #[test]
    fn ids_from_callers_are_bounded() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty));
        assert_eq!(
            UserId::parse(&"u".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong(MAX_ID_BYTES + 1))
        );
        assert!(UserId::parse(&"u".repeat(MAX_ID_BYTES)).is_ok());
        assert_eq!(ConnectionId::parse(""), Err(IdError::Empty));
        assert_eq!(
            ConnectionId::parse(&"c".repeat(500)),
            Err(IdError::TooLong(500))
        );
        assert_eq!(
            ConnectionId::parse("L0SM9cOFvHcCIhw=").map(|c| c.0),
            Ok("L0SM9cOFvHcCIhw=".to_owned())
        );
    }

    #[test]
    fn the_namespace_is_the_part_before_the_first_colon() {
        let topic = Topic::parse("org:7:board").unwrap();
        assert_eq!(topic.split_namespace(), Some(("org", "7:board")));
        assert_eq!(Topic::parse("demo").unwrap().split_namespace(), None);
    }
}
