//! Topic patterns: what a grant claim lists (`list:12`, `org:7:*`) and, with wildcard
//! namespaces, what a client may subscribe to.
//!
//! A pattern is a topic name, or a prefix ending in `:*` or `/*` that matches every topic
//! starting with that prefix and at least one more character, across any number of further
//! segments (`org:7:*` matches `org:7:board` and `org:7:board:3`, not `org:7` or `org:70`).
//! `*` alone matches every topic. A `*` anywhere else is not a pattern.

use std::fmt;

use crate::protocol::{MAX_TOPIC_LEN, Topic, is_topic_char};

/// Deepest wildcard subscription: `a:b:c:d:*` (4 levels).
pub const MAX_WILDCARD_DEPTH: usize = 4;

/// The wildcard patterns, up to [`MAX_WILDCARD_DEPTH`] levels, that match `topic` and end at
/// one of its separators at or after `from` (the namespace's `:`): for `list:7:items`,
/// `list:*` and `list:7:*`.
pub fn enclosing_patterns(topic: &Topic, from: usize) -> Vec<TopicPattern> {
    let text = topic.as_str();
    text.char_indices()
        .filter(|(at, c)| *at >= from && matches!(c, ':' | '/') && *at + 1 < text.len())
        .map(|(at, _)| TopicPattern(format!("{}*", &text[..=at])))
        .filter(|p| p.depth() <= MAX_WILDCARD_DEPTH)
        .collect()
}

/// A validated topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPattern(String);

/// Why a string is not a [`TopicPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern must not be empty")]
    Empty,
    #[error("pattern is {0} bytes long; the limit is {limit}", limit = MAX_TOPIC_LEN + 1)]
    TooLong(usize),
    #[error(
        "{0:?}: `*` may only end a pattern, right after `:` or `/` (e.g. \"org:7:*\"), or be the whole pattern"
    )]
    MisplacedWildcard(String),
    #[error(
        "{pattern:?} contains {found:?}; allowed are A-Z a-z 0-9 and _ - . : / @ | + =, and a final *"
    )]
    InvalidChar { pattern: String, found: char },
}

impl PatternError {
    /// What is wrong, without repeating the pattern: for messages that already show it (a
    /// client's error frame echoes a bounded prefix of what it sent, and escaping the whole
    /// pattern again could make the frame several times the pattern's size).
    pub fn reason(&self) -> String {
        match self {
            PatternError::MisplacedWildcard(_) => "`*` may only end a pattern, right after `:` \
                 or `/` (e.g. \"org:7:*\"), or be the whole pattern"
                .to_owned(),
            PatternError::InvalidChar { found, .. } => format!(
                "contains {found:?}; allowed are A-Z a-z 0-9 and _ - . : / @ | + =, and a final *"
            ),
            other => other.to_string(),
        }
    }
}

impl TopicPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        // One more byte than a topic: the `*`.
        if text.len() > MAX_TOPIC_LEN + 1 {
            return Err(PatternError::TooLong(text.len()));
        }
        let body = text.strip_suffix('*').unwrap_or(text);
        if body.len() < text.len() && !(body.is_empty() || body.ends_with([':', '/'])) {
            return Err(PatternError::MisplacedWildcard(text.to_owned()));
        }
        if let Some(found) = body.chars().find(|c| !is_topic_char(*c)) {
            return Err(if found == '*' {
                PatternError::MisplacedWildcard(text.to_owned())
            } else {
                PatternError::InvalidChar {
                    pattern: text.to_owned(),
                    found,
                }
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// The pattern for exactly one topic.
    pub fn exact(topic: &Topic) -> Self {
        Self(topic.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `Some(prefix)` for a wildcard pattern (`org:7:` for `org:7:*`, empty for `*`).
    pub fn prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }

    /// Whether this pattern stands for more than one topic (ends in `*`).
    pub fn is_wildcard(&self) -> bool {
        self.prefix().is_some()
    }

    /// Segment separators (`:` and `/`) before the `*` of a wildcard: `list:*` is 1 level
    /// deep, `org:7:board:*` 3. Bounded (`MAX_WILDCARD_DEPTH`), since a broadcast to a topic
    /// reads one partition per level that a pattern could end at.
    pub fn depth(&self) -> usize {
        self.prefix()
            .map_or(0, |p| p.chars().filter(|c| matches!(c, ':' | '/')).count())
    }

    /// The exact topic this pattern is, unless it is a wildcard.
    pub fn as_topic(&self) -> Option<Topic> {
        if self.is_wildcard() {
            return None;
        }
        Topic::parse(&self.0).ok()
    }

    /// Whether `topic` is one of the topics this pattern stands for.
    pub fn matches(&self, topic: &str) -> bool {
        match self.prefix() {
            Some(prefix) => topic.len() > prefix.len() && topic.starts_with(prefix),
            None => self.0 == topic,
        }
    }

    /// Whether every topic `other` stands for is one this pattern stands for too: a grant of
    /// `org:*` covers a subscription to `org:7:*`; a grant of `org:7:*` does not cover `org:*`.
    pub fn covers(&self, other: &TopicPattern) -> bool {
        match (self.prefix(), other.prefix()) {
            (None, None) => self.0 == other.0,
            // An exact grant never covers a wildcard: the wildcard also stands for topics
            // the grant does not name.
            (None, Some(_)) => false,
            (Some(_), None) => self.matches(&other.0),
            (Some(mine), Some(theirs)) => theirs.starts_with(mine),
        }
    }
}

impl serde::Serialize for TopicPattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TopicPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TopicPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> TopicPattern {
        TopicPattern::parse(text).unwrap()
    }

    #[test]
    fn exact_patterns_match_only_their_topic() {
        let p = pattern("list:12");
        assert!(p.matches("list:12"));
        assert!(!p.matches("list:123"));
        assert!(!p.matches("list:1"));
        assert_eq!(p.prefix(), None);
    }

    #[test]
    fn a_trailing_wildcard_matches_whole_segments_below_its_prefix() {
        let p = pattern("org:7:*");
        assert!(p.matches("org:7:board"));
        assert!(p.matches("org:7:board:3"));
        assert!(
            !p.matches("org:7:"),
            "at least one character after the prefix"
        );
        assert!(!p.matches("org:7"));
        assert!(!p.matches("org:70:board"));
        assert!(pattern("files/*").matches("files/a/b"));
        assert!(pattern("*").matches("anything:at:all"));
    }

    #[test]
    fn misplaced_wildcards_and_foreign_characters_are_refused() {
        for bad in ["org*", "org:*:board", "**", "a:b*c", ":**"] {
            assert!(
                matches!(
                    TopicPattern::parse(bad),
                    Err(PatternError::MisplacedWildcard(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            TopicPattern::parse("a b"),
            Err(PatternError::InvalidChar { found: ' ', .. })
        ));
        assert_eq!(TopicPattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            TopicPattern::parse(&"x".repeat(200)),
            Err(PatternError::TooLong(200))
        ));
        assert!(TopicPattern::parse(&format!("{}:*", "x".repeat(MAX_TOPIC_LEN - 1))).is_ok());
    }

    #[test]
    fn the_patterns_enclosing_a_topic_are_its_prefixes_up_to_the_depth_limit() {
        let topic = Topic::parse("list:7:items/a").unwrap();
        let texts: Vec<String> = enclosing_patterns(&topic, 4)
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(texts, ["list:*", "list:7:*", "list:7:items/*"]);
        for pattern in enclosing_patterns(&topic, 4) {
            assert!(pattern.matches(topic.as_str()), "{pattern}");
        }
        let deep = Topic::parse("a:1:2:3:4:5:6").unwrap();
        let depths: Vec<usize> = enclosing_patterns(&deep, 1)
            .iter()
            .map(TopicPattern::depth)
            .collect();
        assert_eq!(depths, [1, 2, 3, 4]);
        assert!(enclosing_patterns(&Topic::parse("list:").unwrap(), 4).is_empty());
    }

    #[test]
    fn covers_is_inclusion_of_the_topic_sets() {
        assert!(pattern("org:*").covers(&pattern("org:7:*")));
        assert!(pattern("org:*").covers(&pattern("org:7")));
        assert!(pattern("org:7:*").covers(&pattern("org:7:*")));
        assert!(!pattern("org:7:*").covers(&pattern("org:*")));
        assert!(!pattern("org:7").covers(&pattern("org:7:*")));
        assert!(pattern("org:7").covers(&pattern("org:7")));
        assert!(!pattern("org:7").covers(&pattern("org:8")));
        assert!(pattern("*").covers(&pattern("org:*")));
    }
}
