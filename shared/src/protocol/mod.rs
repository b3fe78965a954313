//! Every wire type wsbridge speaks: the identifiers shared by all routes, the client protocol on
//! the WebSocket (`client`), and the broadcast HTTP API (`broadcast`).

pub mod broadcast;
pub mod client;

use std::fmt;

use serde::{Deserialize, Serialize};

/// API Gateway's limit for one WebSocket message (and for a PostToConnection body): 128 KB.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// The id API Gateway gives a WebSocket connection (e.g. `L0SM9cOFvHcCIhw=`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(String);

impl ConnectionId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
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
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
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

/// A validated topic name: 1 to [`MAX_TOPIC_LEN`] bytes of `A-Z a-z 0-9 _ - . : / @`.
///
/// The charset keeps topics safe to embed in DynamoDB keys (which use `#` as separator), in
/// log lines and in URLs, while allowing the usual `list:123` / `org/42/board` shapes.
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
    #[error("topic contains {0:?}; allowed are A-Z a-z 0-9 and _ - . : / @")]
    InvalidChar(char),
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
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '@')
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
    }
}
