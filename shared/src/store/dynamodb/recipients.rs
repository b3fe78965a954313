//! Reading an audience in connection-id order, from any point of a span.
//!
//! Every partition an audience lives in is sorted by `conn#<id>`: a topic's subscription
//! rows by their sort key, the `by_user` and `by_shard` indexes by their range key (the
//! connection row's `pk`). An audience of several partitions (a topic and the patterns that
//! match it, or the 16 shards of all connections) is their merge, which also drops the
//! second row of a connection reached through two keys. So where a reader stands is one id,
//! and a Query resumes there with `ExclusiveStartKey`.

use std::collections::VecDeque;

use futures::future::try_join_all;
use futures::stream::{self, StreamExt};

use super::items::{CONNECTION_SK, Item, connection_pk, live, n, recipient_of, s, topic_pk};
use super::schema::{
    BY_SHARD_INDEX, BY_USER_INDEX, GSI_SHARD, GSI_USER, PK, SHARDS, SK, TTL_ATTRIBUTE,
};
use super::{BATCH_GET_LIMIT, DynamoDbStore, RECIPIENT_PROJECTION, backend};
use crate::protocol::ConnectionId;
use crate::store::{Audience, Page, Recipient, Span, SpanPages, StoreError};

/// Output page when the store sets none: what the broadcast function sets (BENCHMARKS.md,
/// "Memory").
const DEFAULT_PAGE: usize = 1_000;
/// Fewest rows one Query of a merged partition asks for: below it, the Query count grows
/// faster than memory shrinks.
const MIN_PARTITION_PAGE: usize = 25;

/// A partition an audience lives in, sorted by `conn#<id>`.
enum Source {
    /// A topic's (or pattern's) subscription rows, on the table: ordered by `sk`.
    Subscriptions(String),
    /// Connection rows under one key of an index: ordered by its range key, `pk`.
    Index {
        index: &'static str,
        key: &'static str,
        value: String,
    },
}

impl Source {
    /// The attribute the partition is sorted by.
    fn range_key(&self) -> &'static str {
        match self {
            Source::Subscriptions(_) => SK,
            Source::Index { .. } => PK,
        }
    }

    /// The key of the row of connection `id` in this partition, where a Query resumes.
    fn start_after(&self, id: &ConnectionId) -> Item {
        match self {
            Source::Subscriptions(pk) => Item::from([
                (PK.to_owned(), s(pk.clone())),
                (SK.to_owned(), s(connection_pk(id))),
            ]),
            // An index's start key holds the table's key too; a connection row's `sk` is
            // always `conn`.
            Source::Index { key, value, .. } => Item::from([
                ((*key).to_owned(), s(value.clone())),
                (PK.to_owned(), s(connection_pk(id))),
                (SK.to_owned(), s(CONNECTION_SK)),
            ]),
        }
    }
}

/// One partition's part of a merge: what was read and not yet merged, and where to go on.
struct Partition {
    source: Source,
    buffered: VecDeque<Recipient>,
    /// Where the next Query starts (`None` inside: at the span's start); `None`: read to
    /// the end of the span.
    next: Option<Option<Item>>,
}

impl Partition {
    fn new(source: Source, span: &Span) -> Self {
        let start = span.after.as_ref().map(|after| source.start_after(after));
        Self {
            source,
            buffered: VecDeque::new(),
            next: Some(start),
        }
    }

    /// Reads the next Query page of the partition into the buffer.
    async fn fetch(
        &mut self,
        store: &DynamoDbStore,
        span: &Span,
        limit: Option<i32>,
    ) -> Result<(), StoreError> {
        let Some(start) = self.next.take() else {
            return Ok(());
        };
        let lower = match &span.from {
            Some(from) => connection_pk(from),
            None => connection_pk(&ConnectionId::new("")),
        };
        let (index, key, value) = match &self.source {
            Source::Subscriptions(pk) => (None, PK, pk.clone()),
            Source::Index { index, key, value } => (Some(*index), *key, value.clone()),
        };
        // One condition on the range key: from the span's start, up to its end inclusive (a
        // row at exactly `until` belongs to the next span and is dropped below).
        let (condition, upper) = match &span.until {
            Some(until) => (
                "#k = :k AND #r BETWEEN :lo AND :hi",
                Some(connection_pk(until)),
            ),
            None => ("#k = :k AND #r >= :lo", None),
        };
        let mut query = store
            .client
            .query()
            .table_name(&store.table)
            .set_index_name(index.map(str::to_owned))
            // A topic's subscribers, on the table, strongly consistent: a connection told
            // "subscribed" gets every message sent after, and a recovering subscribe misses
            // nothing between its history read and live delivery. Indexes cannot be.
            .consistent_read(index.is_none())
            .key_condition_expression(condition)
            .filter_expression("#ttl > :now")
            .projection_expression(RECIPIENT_PROJECTION)
            .expression_attribute_names("#k", key)
            .expression_attribute_names("#r", self.source.range_key())
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":k", s(value))
            .expression_attribute_values(":lo", s(lower))
            .expression_attribute_values(":now", n(store.clock.now_seconds()))
            .set_exclusive_start_key(start)
            .set_limit(limit)
            .set_return_consumed_capacity(store.return_consumed_capacity());
        if let Some(upper) = upper {
            query = query.expression_attribute_values(":hi", s(upper));
        }
        let output = query.send().await.map_err(|e| backend("Query", e))?;
        if let Some(consumed) = &store.consumed {
            consumed.add(output.consumed_capacity());
        }
        for item in output.items() {
            let recipient = recipient_of(item)?;
            if span.below_end(recipient.connection_id.as_str()) {
                self.buffered.push_back(recipient);
            }
        }
        self.next = output.last_evaluated_key.map(Some);
        Ok(())
    }
}

/// The merge of an audience's partitions, a page at a time.
struct Merge<'a> {
    store: &'a DynamoDbStore,
    partitions: Vec<Partition>,
    span: Span,
    page: usize,
    /// Rows per Query of each partition.
    limit: Option<i32>,
    last: Option<ConnectionId>,
}

impl<'a> Merge<'a> {
    fn new(store: &'a DynamoDbStore, sources: Vec<Source>, span: Span) -> Self {
        let page = store
            .page_size
            .map_or(DEFAULT_PAGE, |p| usize::try_from(p).unwrap_or(DEFAULT_PAGE));
        // One partition: its own pages. Several: each buffers at most its share of a page,
        // so memory stays about one page whatever the number of keys.
        let limit = match sources.len() {
            0 | 1 => store.page_size,
            keys => i32::try_from((page / keys).max(MIN_PARTITION_PAGE)).ok(),
        };
        let partitions = sources
            .into_iter()
            .map(|s| Partition::new(s, &span))
            .collect();
        Self {
            store,
            partitions,
            span,
            page,
            limit,
            last: None,
        }
    }

    /// The next page; the last one has no `rest`.
    async fn next_page(&mut self) -> Result<Page, StoreError> {
        let mut recipients = Vec::new();
        loop {
            // Every partition with more to read must show its next row before the smallest
            // can be told.
            let (store, span, limit) = (self.store, &self.span, self.limit);
            try_join_all(
                self.partitions
                    .iter_mut()
                    .filter(|p| p.buffered.is_empty() && p.next.is_some())
                    .map(|p| p.fetch(store, span, limit)),
            )
            .await?;
            let smallest = self
                .partitions
                .iter_mut()
                .filter(|p| !p.buffered.is_empty())
                .min_by(|a, b| {
                    a.buffered[0]
                        .connection_id
                        .cmp(&b.buffered[0].connection_id)
                });
            let Some(partition) = smallest else {
                return Ok(Page {
                    recipients,
                    rest: None,
                });
            };
            let Some(recipient) = partition.buffered.pop_front() else {
                continue;
            };
            if self.last.as_ref() == Some(&recipient.connection_id) {
                continue;
            }
            self.last = Some(recipient.connection_id.clone());
            recipients.push(recipient);
            if recipients.len() >= self.page {
                let rest = self.last.as_ref().map(|last| self.span.after(last));
                return Ok(Page { recipients, rest });
            }
        }
    }
}

impl DynamoDbStore {
    /// The partitions `audience` lives in.
    fn sources(audience: &Audience) -> Vec<Source> {
        match audience {
            Audience::Subscribers(keys) => keys
                .iter()
                .map(|key| Source::Subscriptions(topic_pk(key.as_str())))
                .collect(),
            Audience::User(user) => vec![Source::Index {
                index: BY_USER_INDEX,
                key: GSI_USER,
                value: user.to_string(),
            }],
            Audience::All => (0..SHARDS)
                .map(|shard| Source::Index {
                    index: BY_SHARD_INDEX,
                    key: GSI_SHARD,
                    value: shard.to_string(),
                })
                .collect(),
            Audience::Connections(_) => Vec::new(),
        }
    }

    /// An audience's pages in `span`, in id order.
    pub(super) fn span_pages<'a>(&'a self, audience: &'a Audience, span: Span) -> SpanPages<'a> {
        if let Audience::Connections(ids) = audience {
            return self.connection_pages(ids, span);
        }
        let merge = Merge::new(self, Self::sources(audience), span);
        Box::pin(stream::unfold(Some(merge), |merge| async move {
            let mut merge = merge?;
            match merge.next_page().await {
                Ok(page) => {
                    let more = page.rest.is_some();
                    Some((Ok(page), more.then_some(merge)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }))
    }

    /// Named connections in `span`: by id, a BatchGetItem per page.
    fn connection_pages<'a>(&'a self, ids: &'a [ConnectionId], span: Span) -> SpanPages<'a> {
        let mut ids: Vec<&ConnectionId> =
            ids.iter().filter(|id| span.contains(id.as_str())).collect();
        ids.sort();
        ids.dedup();
        let chunks: Vec<Vec<ConnectionId>> = ids
            .chunks(BATCH_GET_LIMIT)
            .map(|chunk| chunk.iter().map(|id| (*id).clone()).collect())
            .collect();
        let count = chunks.len();
        Box::pin(
            stream::iter(chunks.into_iter().enumerate()).then(move |(at, chunk)| {
                let span = span.clone();
                async move {
                    let rows = self
                        .connection_rows(&chunk, "connection_id, user_id, endpoint, expires_at")
                        .await?;
                    let now = self.clock.now_seconds();
                    let mut recipients = rows
                        .iter()
                        .filter(|row| live(row, now))
                        .map(recipient_of)
                        .collect::<Result<Vec<_>, _>>()?;
                    recipients.sort();
                    let rest = (at + 1 < count)
                        .then(|| chunk.last().map(|last| span.after(last)))
                        .flatten();
                    Ok(Page { recipients, rest })
                }
            }),
        )
    }
}
