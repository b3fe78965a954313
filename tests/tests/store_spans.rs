//! Reading an audience by spans, on both stores (DynamoDB Local started by scripts/test.sh;
//! without it these tests fail, never skip): every audience comes in connection-id order,
//! each connection once; a reader resumed after any page reads exactly the rest; the spans of
//! a split read together are the audience, each connection in one of them. A broadcast split
//! across shards, and continued across invocations, is only as exact as this.

use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Grants, TopicPattern};
use wsbridge::clock::Clock;
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::{Audience, Connection, Page, Span, Store};
use wsbridge::test_support::put;

wsbridge_tests::conformance!(
    every_audience_reads_in_id_order_each_connection_once,
    a_reader_resumed_after_any_page_reads_exactly_the_rest,
    the_spans_of_a_split_together_hold_the_audience_once,
);

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Ids as API Gateway makes them: 15 base64 characters and `=`.
fn gateway_ids(count: usize, seed: u64) -> Vec<ConnectionId> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let id: String = (0..15)
                .map(|_| char::from(BASE64[rng.random_range(0..BASE64.len())]))
                .collect();
            ConnectionId::new(format!("{id}="))
        })
        .collect()
}

fn pattern(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap()
}

/// 40 connections of four users; all on `list:*`, every second one on `list:7`, every third
/// on `list:8`, so that a broadcast to `list:7` reaches many through two keys. Three expired.
/// Returns the ids of each audience, sorted.
struct Fixture {
    list7: Vec<ConnectionId>,
    user: Vec<ConnectionId>,
    all: Vec<ConnectionId>,
    named: Vec<ConnectionId>,
}

async fn fixture(store: &dyn Store, clock: &Clock) -> Fixture {
    let ids = gateway_ids(40, 7);
    let mut fixture = Fixture {
        list7: Vec::new(),
        user: Vec::new(),
        all: Vec::new(),
        named: Vec::new(),
    };
    for (n, id) in ids.iter().enumerate() {
        let user = format!("user-{}", n % 4);
        let expired = n % 13 == 5;
        let connection = Connection {
            id: id.clone(),
            user_id: UserId::new(&user),
            connected_at: 1_700_000_000_000,
            endpoint: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod".into(),
            expires_at: if expired {
                now_seconds() + 60
            } else {
                now_seconds() + 7_200
            },
            grants: Grants::default(),
        };
        put(store, &connection).await;
        let mut topics = vec![pattern("list:*")];
        if n % 2 == 0 {
            topics.push(pattern("list:7"));
        }
        if n % 3 == 0 {
            topics.push(pattern("list:8"));
        }
        store.subscribe(id, &topics, &[], 10).await.unwrap();
        if expired {
            continue;
        }
        fixture.all.push(id.clone());
        fixture.list7.push(id.clone());
        if user == "user-1" {
            fixture.user.push(id.clone());
        }
        if n % 5 == 0 {
            fixture.named.push(id.clone());
        }
    }
    // Three connections' rows stay, but their time is up.
    clock.advance(120);
    for list in [
        &mut fixture.list7,
        &mut fixture.user,
        &mut fixture.all,
        &mut fixture.named,
    ] {
        list.sort();
    }
    fixture
}

fn audiences(fixture: &Fixture) -> Vec<(Audience, Vec<ConnectionId>)> {
    let mut named = fixture.named.clone();
    // unknown ids and a repeat are named too
    named.extend([ConnectionId::new("nobody="), fixture.named[0].clone()]);
    vec![
        (
            Audience::Subscribers(vec![pattern("list:7"), pattern("list:*")]),
            fixture.list7.clone(),
        ),
        (Audience::User(UserId::new("user-1")), fixture.user.clone()),
        (Audience::All, fixture.all.clone()),
        (Audience::Connections(named), fixture.named.clone()),
    ]
}

async fn pages(store: &dyn Store, audience: &Audience, span: Span) -> Vec<Page> {
    store.pages(audience, span).try_collect().await.unwrap()
}

fn ids(pages: &[Page]) -> Vec<ConnectionId> {
    pages
        .iter()
        .flat_map(|p| p.recipients.iter().map(|r| r.connection_id.clone()))
        .collect()
}

async fn every_audience_reads_in_id_order_each_connection_once(store: &dyn Store, clock: &Clock) {
    let fixture = fixture(store, clock).await;
    for (audience, expected) in audiences(&fixture) {
        // WHEN the whole audience is read
        let pages = pages(store, &audience, Span::all()).await;
        // THEN it comes in id order, each live connection once, and only the last page
        // ends the span
        assert_eq!(ids(&pages), expected, "{audience:?}");
        let last = pages.len() - 1;
        for (at, page) in pages.iter().enumerate() {
            assert_eq!(page.rest.is_none(), at == last, "{audience:?} page {at}");
        }
    }
}

async fn a_reader_resumed_after_any_page_reads_exactly_the_rest(store: &dyn Store, clock: &Clock) {
    let fixture = fixture(store, clock).await;
    for (audience, expected) in audiences(&fixture) {
        let whole = pages(store, &audience, Span::all()).await;
        let mut read = 0;
        for page in &whole {
            read += page.recipients.len();
            let Some(rest) = &page.rest else { break };
            // WHEN another reader starts where this page left off
            let resumed = ids(&pages(store, &audience, rest.clone()).await);
            // THEN it reads exactly what the first had not read yet
            assert_eq!(
                resumed,
                expected[read..].to_vec(),
                "{audience:?} after {read}"
            );
        }
    }
}

async fn the_spans_of_a_split_together_hold_the_audience_once(store: &dyn Store, clock: &Clock) {
    let fixture = fixture(store, clock).await;
    for (audience, expected) in audiences(&fixture) {
        for parts in [2, 4, 7] {
            // WHEN the audience is split, and each part is read alone
            let mut together = Vec::new();
            for span in Span::all().split(parts) {
                together.extend(ids(&pages(store, &audience, span).await));
            }
            // THEN the parts, in order, are the audience, each connection once
            assert_eq!(together, expected, "{audience:?} in {parts}");
        }
        // AND a reader stopped part-way splits what it has left just as exactly
        let whole = pages(store, &audience, Span::all()).await;
        if let Some(rest) = whole.first().and_then(|p| p.rest.clone()) {
            let done = whole[0].recipients.len();
            let mut together = Vec::new();
            for span in rest.split(3) {
                together.extend(ids(&pages(store, &audience, span).await));
            }
            assert_eq!(together, expected[done..].to_vec(), "{audience:?} rest");
        }
    }
}
