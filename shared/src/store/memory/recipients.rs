//! Which connection ids an audience holds, in id order, a page at a time.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::State;
use crate::protocol::ConnectionId;
use crate::store::{Audience, Span};

/// Where `span` starts, as a range bound over ids.
fn lower(span: &Span) -> Bound<&ConnectionId> {
    match (&span.after, &span.from) {
        (Some(after), _) => Bound::Excluded(after),
        (None, Some(from)) => Bound::Included(from),
        (None, None) => Bound::Unbounded,
    }
}

/// The first `page` ids of `audience` in `span`, in order, each once: live or not (the
/// caller skips the dead), so that a page of dead ids still moves the reader on.
pub(super) fn next_ids(
    state: &State,
    audience: &Audience,
    span: &Span,
    page: usize,
    now: u64,
) -> Vec<ConnectionId> {
    let range = (lower(span), Bound::Unbounded);
    let in_span = |id: &&ConnectionId| span.below_end(id.as_str());
    match audience {
        // The union's first `page` ids are among each key's first `page`.
        Audience::Subscribers(keys) => {
            let ids: BTreeSet<&ConnectionId> = keys
                .iter()
                .filter_map(|key| state.subscribers.get(key))
                .flat_map(|ids| {
                    ids.range::<ConnectionId, _>(range)
                        .take_while(in_span)
                        .take(page)
                })
                .collect();
            ids.into_iter().take(page).cloned().collect()
        }
        Audience::User(user) => state
            .connections
            .range::<ConnectionId, _>(range)
            .map(|(id, _)| id)
            .take_while(in_span)
            .filter(|id| {
                state
                    .connections
                    .get(*id)
                    .is_some_and(|entry| &entry.connection.user_id == user && entry.live(now))
            })
            .take(page)
            .cloned()
            .collect(),
        Audience::Connections(ids) => {
            let ids: BTreeSet<&ConnectionId> =
                ids.iter().filter(|id| span.contains(id.as_str())).collect();
            ids.into_iter().take(page).cloned().collect()
        }
        Audience::All => state
            .connections
            .range::<ConnectionId, _>(range)
            .map(|(id, _)| id)
            .take_while(in_span)
            .take(page)
            .cloned()
            .collect(),
    }
}
