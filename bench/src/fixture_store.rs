//! Recipients in memory for the scenarios that time the engine: each topic's subscribers as
//! one sorted vector, read a page at a time in id order as `RecipientStore` asks.
//!
//! Why not `MemoryStore`: registering a connection there looks through every connection for
//! the user's others (`counted`), so filling it is quadratic — 50 000 connections took most of
//! the engine scenario's set-up, and the 200 000 of a throttled run would take minutes. What
//! fan-out reads of a store is only `pages`, which this answers the same way: ids in order,
//! each page saying where the rest of its span starts.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::stream;
use wsbridge::channels::TopicPattern;
use wsbridge::protocol::ConnectionId;
use wsbridge::store::{
    Audience, Page, Recipient, RecipientStore, Removed, Span, SpanPages, StoreError,
};

use crate::fixtures::{recipient, topic};
use crate::report::Result;

/// Recipients per page: what the broadcast function asks of DynamoDB
/// (`with_page_size(1_000)` in `functions/broadcast`).
pub const PAGE_SIZE: usize = 1_000;

pub struct FixtureStore {
    /// Each topic's subscribers, sorted by connection id.
    topics: HashMap<TopicPattern, Vec<Recipient>>,
    page_size: usize,
}

impl FixtureStore {
    /// `topic(n)` held by the fixture recipients `0..n`, for each `n` in `sizes`.
    pub fn nested(sizes: &[usize]) -> Result<Self> {
        let most = sizes.iter().copied().max().unwrap_or_default();
        let everyone = sorted((0..most).map(recipient).collect());
        let mut topics = HashMap::new();
        for &size in sizes {
            let members = everyone
                .iter()
                .filter(|r| {
                    crate::fixtures::connection_index(r.connection_id.as_str())
                        .is_some_and(|n| n < size)
                })
                .cloned()
                .collect();
            topics.insert(TopicPattern::exact(&topic(size)?), members);
        }
        Ok(Self {
            topics,
            page_size: PAGE_SIZE,
        })
    }

    /// One topic per entry, named as given, held by the recipients `range`: disjoint
    /// audiences for broadcasts that run at once.
    pub fn disjoint(audiences: &[(&str, std::ops::Range<usize>)]) -> Result<Self> {
        let mut topics = HashMap::new();
        for (name, range) in audiences {
            let topic = wsbridge::protocol::Topic::parse(name)?;
            topics.insert(
                TopicPattern::exact(&topic),
                sorted(range.clone().map(recipient).collect()),
            );
        }
        Ok(Self {
            topics,
            page_size: PAGE_SIZE,
        })
    }

    /// The page of `audience` in `span`: up to a page of ids in order, and where the rest
    /// starts when anything is left.
    fn page(&self, audience: &Audience, span: &Span) -> Page {
        let members: &[Recipient] = match audience {
            Audience::Subscribers(keys) => keys
                .first()
                .and_then(|key| self.topics.get(key))
                .map_or(&[], Vec::as_slice),
            _ => &[],
        };
        // The first id at or above the span's lower end (those past its end count as above).
        let start = members.partition_point(|r| {
            let id = r.connection_id.as_str();
            !span.contains(id) && span.below_end(id)
        });
        let recipients: Vec<Recipient> = members[start..]
            .iter()
            .take_while(|r| span.below_end(r.connection_id.as_str()))
            .take(self.page_size)
            .cloned()
            .collect();
        let next = members.get(start + recipients.len());
        let rest = match (recipients.last(), next) {
            (Some(last), Some(next)) if span.below_end(next.connection_id.as_str()) => {
                Some(span.after(&last.connection_id))
            }
            _ => None,
        };
        Page { recipients, rest }
    }
}

fn sorted(mut recipients: Vec<Recipient>) -> Vec<Recipient> {
    recipients.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
    recipients
}

#[async_trait]
impl RecipientStore for FixtureStore {
    fn pages<'a>(&'a self, audience: &'a Audience, span: Span) -> SpanPages<'a> {
        Box::pin(stream::unfold(Some(span), move |span| async move {
            let page = self.page(audience, &span?);
            let rest = page.rest.clone();
            Some((Ok(page), rest))
        }))
    }

    async fn count_connections(&self) -> std::result::Result<u64, StoreError> {
        Ok(self
            .topics
            .values()
            .map(|t| t.len() as u64)
            .max()
            .unwrap_or(0))
    }

    /// The sink answers no 410: nothing is ever gone.
    async fn remove_gone(
        &self,
        _ids: &[ConnectionId],
        _via: &Audience,
    ) -> std::result::Result<Vec<Removed>, StoreError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn pages_cover_a_topic_once_in_id_order_and_resume_from_any_span() {
        // GIVEN 2 500 subscribers of one topic, and 10 of another
        let store = FixtureStore::nested(&[10, 2_500]).unwrap();
        let audience = Audience::topic(&topic(2_500).unwrap());
        // WHEN the whole topic is read
        let pages: Vec<Page> = store
            .pages(&audience, Span::all())
            .map(|p| p.unwrap())
            .collect()
            .await;
        // THEN pages of 1 000, in order, everyone once, the last without a rest
        let sizes: Vec<usize> = pages.iter().map(|p| p.recipients.len()).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
        let ids: Vec<&str> = pages
            .iter()
            .flat_map(|p| p.recipients.iter().map(|r| r.connection_id.as_str()))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(pages[2].rest.is_none() && pages[0].rest.is_some());
        // AND a split reads the same recipients, part by part
        let mut again = 0;
        for part in Span::all().split(4) {
            let mut stream = store.pages(&audience, part);
            while let Some(page) = stream.next().await {
                again += page.unwrap().recipients.len();
            }
        }
        assert_eq!(again, 2_500);
        assert_eq!(
            FixtureStore::nested(&[10, 2_500]).unwrap().topics
                [&TopicPattern::exact(&topic(10).unwrap())]
                .len(),
            10
        );
    }
}
