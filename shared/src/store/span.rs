//! Where a fan-out stands in its audience. Both stores read every audience in connection-id
//! order, so a part of an audience is a range of ids, and how far a reader got is the last id
//! it read: a span. A broadcast too large for one invocation is split into spans that run in
//! parallel, and each hands the rest of its span to its continuation.

use serde::{Deserialize, Serialize};

use super::Recipient;
use crate::protocol::ConnectionId;

/// Characters that split spans: API Gateway's connection ids are base64 (`L0SM9cOFvHcCIhw=`),
/// so their first character spreads evenly over these. Ids of any other shape still fall in
/// exactly one span; they only spread less evenly.
const BOUNDARIES: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The connections of an audience whose ids lie in a range, in id order (bytewise, as
/// DynamoDB orders strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Ids at or above this; `None`: from the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ConnectionId>,
    /// Ids strictly above this: where a reader of the span stopped. Always at or above
    /// `from` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ConnectionId>,
    /// Ids strictly below this; `None`: to the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<ConnectionId>,
}

/// One page of an audience read in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Live connections, by id, each once.
    pub recipients: Vec<Recipient>,
    /// What is left of the span after this page; `None` when this page ended it.
    pub rest: Option<Span>,
}

impl Span {
    /// The whole audience.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether `id` lies in the span (not yet read, if it is a reader's).
    pub fn contains(&self, id: &str) -> bool {
        let above = match (&self.after, &self.from) {
            (Some(after), _) => id > after.as_str(),
            (None, Some(from)) => id >= from.as_str(),
            (None, None) => true,
        };
        above && self.until.as_ref().is_none_or(|until| id < until.as_str())
    }

    /// The rest of the span once `id` has been read.
    pub fn after(&self, id: &ConnectionId) -> Self {
        Self {
            after: Some(id.clone()),
            ..self.clone()
        }
    }

    /// Whether `id` lies below the span's end.
    pub fn below_end(&self, id: &str) -> bool {
        self.until.as_ref().is_none_or(|until| id < until.as_str())
    }

    /// Up to `parts` spans that together hold exactly what this one holds, each id in one
    /// of them, in id order. Fewer when the span is too narrow to split at a first character.
    pub fn split(&self, parts: usize) -> Vec<Span> {
        let lower = self.after.as_ref().or(self.from.as_ref());
        let candidates: Vec<String> = BOUNDARIES
            .chars()
            .map(String::from)
            .filter(|c| lower.is_none_or(|l| c.as_str() > l.as_str()) && self.below_end(c))
            .collect();
        let parts = parts.clamp(1, candidates.len() + 1);
        let mut boundaries: Vec<&String> = (1..parts)
            .map(|k| &candidates[k * candidates.len() / parts])
            .collect();
        boundaries.dedup();
        let mut spans = Vec::with_capacity(boundaries.len() + 1);
        let mut first = self.clone();
        let mut rest_from = None;
        for boundary in boundaries {
            let bound = ConnectionId::new(boundary.clone());
            match rest_from.replace(bound.clone()) {
                None => first.until = Some(bound),
                Some(from) => spans.push(Span {
                    from: Some(from),
                    after: None,
                    until: Some(bound),
                }),
            }
        }
        spans.insert(0, first);
        if let Some(from) = rest_from {
            spans.push(Span {
                from: Some(from),
                after: None,
                until: self.until.clone(),
            });
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ConnectionId {
        ConnectionId::new(s)
    }

    /// Ids of many shapes: API Gateway's, the local gateway's, unicode, the boundaries
    /// themselves and their neighbours.
    fn ids() -> Vec<String> {
        let mut ids: Vec<String> = [
            "L0SM9cOFvHcCIhw=",
            "+abc",
            "/x",
            "0",
            "09",
            "9zz",
            "=",
            "A",
            "AAAA",
            "Z",
            "Z~",
            "_",
            "a",
            "m",
            "mm",
            "z",
            "zzzz",
            "~",
            "é",
            "日本",
            "B00000000000001=",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for c in BOUNDARIES.chars() {
            ids.push(format!("{c}"));
            ids.push(format!("{c}5"));
        }
        ids.sort();
        ids.dedup();
        ids
    }

    #[test]
    fn split_spans_hold_every_id_of_the_span_exactly_once_in_order() {
        let spans_to_split = [
            Span::all(),
            Span::all().after(&id("L0SM9cOFvHcCIhw=")),
            Span {
                from: Some(id("c")),
                after: None,
                until: Some(id("q")),
            },
            Span::all().after(&id("zz")),
            Span::all().after(&id("日")),
        ];
        for span in spans_to_split {
            for parts in [1, 2, 3, 4, 7, 16, 100] {
                // WHEN the span is split
                let spans = span.split(parts);
                // THEN there are at most `parts`, and each id of the span is in exactly one,
                // the spans in id order
                assert!(
                    !spans.is_empty() && spans.len() <= parts,
                    "{span:?} / {parts}"
                );
                for id in ids() {
                    let holders: Vec<usize> = (0..spans.len())
                        .filter(|&i| spans[i].contains(&id))
                        .collect();
                    let expected = usize::from(span.contains(&id));
                    assert_eq!(holders.len(), expected, "{id:?} in {spans:?}");
                }
                for pair in spans.windows(2) {
                    assert_eq!(pair[0].until, pair[1].from, "{spans:?}");
                }
            }
        }
    }

    #[test]
    fn a_wide_span_splits_into_as_many_parts_as_asked() {
        // GIVEN base64 ids, as API Gateway makes them
        let spans = Span::all().split(4);
        assert_eq!(spans.len(), 4);
        // THEN each part holds about a quarter of the first characters
        let starts: Vec<usize> = spans
            .iter()
            .map(|s| {
                BOUNDARIES
                    .chars()
                    .filter(|c| s.contains(&c.to_string()))
                    .count()
            })
            .collect();
        assert!(starts.iter().all(|&n| (15..=16).contains(&n)), "{starts:?}");
    }

    #[test]
    fn a_span_survives_its_journey_through_json() {
        let span = Span {
            from: Some(id("c")),
            after: Some(id("d=")),
            until: None,
        };
        let json = serde_json::to_string(&span).unwrap();
        assert_eq!(json, r#"{"from":"c","after":"d="}"#);
        assert_eq!(serde_json::from_str::<Span>(&json).unwrap(), span);
        assert_eq!(serde_json::from_str::<Span>("{}").unwrap(), Span::all());
    }
}
