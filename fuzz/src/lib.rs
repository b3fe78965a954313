//! What the fuzz targets share: how an input is cut into fields, and the invariants more than
//! one parser must keep.
//!
//! Inputs are plain text wherever the thing fuzzed is text, so that the seed corpora are real
//! frames, bodies and configuration files a person can read. A target that needs several
//! fields takes them as sections separated by NUL bytes: a NUL is never part of a JSON text,
//! a header or a query string, so no real input loses anything by the framing.

use std::collections::HashSet;

use wsbridge::channels::{MAX_WILDCARD_DEPTH, TopicPattern};
use wsbridge::protocol::{ConnectionId, MAX_ID_BYTES, Topic};

/// The sections of an input: the bytes between NULs, at most `max` of them (the rest is
/// ignored, so an input cannot make a target do unbounded work).
pub fn sections(data: &[u8], max: usize) -> Vec<&[u8]> {
    data.split(|byte| *byte == 0).take(max).collect()
}

/// Section `index` as UTF-8, or `default` when the input has no such section. `None` when it
/// is there but not UTF-8.
pub fn text_or<'a>(sections: &[&'a [u8]], index: usize, default: &'a str) -> Option<&'a str> {
    match sections.get(index) {
        Some(bytes) => std::str::from_utf8(bytes).ok(),
        None => Some(default),
    }
}

/// A topic list a parser accepted: 1 to `max` topics, distinct, each a topic that parses back
/// to itself.
pub fn assert_topic_list(topics: &[Topic], max: usize) {
    assert!(!topics.is_empty(), "an accepted topic list is never empty");
    assert!(
        topics.len() <= max,
        "{} topics accepted with a limit of {max}",
        topics.len()
    );
    let mut seen = HashSet::new();
    for topic in topics {
        assert!(seen.insert(topic.as_str()), "{topic} accepted twice");
        assert_eq!(
            Topic::parse(topic.as_str()).as_ref(),
            Ok(topic),
            "an accepted topic does not parse back"
        );
    }
}

/// A subscription list a parser accepted (client frames, `POST /subscribe`): 1 to `max`
/// entries, distinct, each parsing back to itself, and each a topic or a wildcard that names
/// its namespace and is at most [`MAX_WILDCARD_DEPTH`] levels deep.
pub fn assert_pattern_list(patterns: &[TopicPattern], max: usize) {
    assert!(
        !patterns.is_empty(),
        "an accepted topic list is never empty"
    );
    assert!(
        patterns.len() <= max,
        "{} topics accepted with a limit of {max}",
        patterns.len()
    );
    let mut seen = HashSet::new();
    for pattern in patterns {
        assert!(seen.insert(pattern.as_str()), "{pattern} accepted twice");
        assert_eq!(
            TopicPattern::parse(pattern.as_str()).as_ref(),
            Ok(pattern),
            "an accepted pattern does not parse back"
        );
        if pattern.is_wildcard() {
            assert!(pattern.as_str().contains(':'), "{pattern}: no namespace");
            assert!(pattern.depth() <= MAX_WILDCARD_DEPTH, "{pattern}: too deep");
        } else {
            assert!(pattern.as_topic().is_some(), "{pattern}: not a topic");
        }
    }
}

/// Connection ids a caller named: 1 to `max`, distinct, each 1 to [`MAX_ID_BYTES`] bytes.
pub fn assert_connection_ids(ids: &[ConnectionId], max: usize) {
    assert!(
        !ids.is_empty() && ids.len() <= max,
        "{} ids accepted",
        ids.len()
    );
    let mut seen = HashSet::new();
    for id in ids {
        assert!(seen.insert(id.as_str()), "{id} accepted twice");
        assert!(
            !id.as_str().is_empty() && id.as_str().len() <= MAX_ID_BYTES,
            "connection id of {} bytes accepted",
            id.as_str().len()
        );
    }
}
