//! Keys and items: the only place that knows how domain values are laid out in DynamoDB.
//!
//! | row          | pk              | sk          | attributes                                              |
//! |--------------|-----------------|-------------|---------------------------------------------------------|
//! | connection   | `conn#<id>`     | `conn`      | connection_id, user_id, connected_at, endpoint,         |
//! |              |                 |             | expires_at, topics (SS), grants_sub/grants_pub (SS),    |
//! |              |                 |             | rl (frame budget), gsi_user, gsi_shard                  |
//! | subscription | `topic#<topic>` | `conn#<id>` | connection_id, user_id, endpoint, expires_at            |
//! | user         | `user#<id>`     | `conns`     | conns (map id → expires_at), v (version), expires_at    |
//! | presence     | `presence#<t>`  | `user#<id>` | user_id, conns (map id → expires_at), v, expires_at     |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::schema::{GSI_SHARD, GSI_USER, PK, SK, TTL_ATTRIBUTE};
use crate::channels::{Grants, TopicPattern};
use crate::protocol::{ConnectionId, Topic, UserId};
use crate::store::{Connection, Recipient, StoreError};

pub(super) type Item = HashMap<String, AttributeValue>;

/// Sort key of a connection row.
pub(super) const CONNECTION_SK: &str = "conn";
/// Sort key of a user row.
const USER_SK: &str = "conns";

/// Attributes of the rows, as update and condition expressions name them.
pub(super) const TOPICS: &str = "topics";
pub(super) const GRANTS_SUBSCRIBE: &str = "grants_sub";
pub(super) const GRANTS_PUBLISH: &str = "grants_pub";
/// The frame budget's state: the GCRA theoretical arrival time, in microseconds.
pub(super) const RATE: &str = "rl";
/// A user row's connections: connection id → expires_at.
pub(super) const USER_CONNECTIONS: &str = "conns";
/// A user row's (and a presence row's) version, bumped by every write, so that a decision
/// computed from a stale read cannot commit.
pub(super) const VERSION: &str = "v";
/// A connection row's presence topics: where its user's presence records it.
pub(super) const PRESENCE_TOPICS: &str = "ptopics";

pub(super) fn connection_pk(id: &ConnectionId) -> String {
    format!("conn#{id}")
}

pub(super) fn topic_pk(topic: &str) -> String {
    format!("topic#{topic}")
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn connection_key(id: &ConnectionId) -> Item {
    HashMap::from([
        (PK.into(), s(connection_pk(id))),
        (SK.into(), s(CONNECTION_SK)),
    ])
}

pub(super) fn subscription_key(topic: &str, id: &ConnectionId) -> Item {
    HashMap::from([
        (PK.into(), s(topic_pk(topic))),
        (SK.into(), s(connection_pk(id))),
    ])
}

pub(super) fn presence_key(topic: &Topic, user: &UserId) -> Item {
    HashMap::from([
        (PK.into(), s(format!("presence#{topic}"))),
        (SK.into(), s(format!("user#{user}"))),
    ])
}

pub(super) fn presence_pk(topic: &Topic) -> String {
    format!("presence#{topic}")
}

pub(super) fn user_key(user: &UserId) -> Item {
    HashMap::from([
        (PK.into(), s(format!("user#{user}"))),
        (SK.into(), s(USER_SK)),
    ])
}

fn pattern_set(patterns: &[TopicPattern]) -> Option<AttributeValue> {
    // DynamoDB has no empty sets: no grants, no attribute.
    (!patterns.is_empty())
        .then(|| AttributeValue::Ss(patterns.iter().map(|p| p.to_string()).collect()))
}

pub(super) fn connection_item(connection: &Connection, shard: u32) -> Item {
    let mut item = connection_key(&connection.id);
    item.extend([
        ("connection_id".into(), s(connection.id.as_str())),
        ("user_id".into(), s(connection.user_id.as_str())),
        ("connected_at".into(), n(connection.connected_at)),
        ("endpoint".into(), s(&connection.endpoint)),
        (TTL_ATTRIBUTE.into(), n(connection.expires_at)),
        (GSI_USER.into(), s(connection.user_id.as_str())),
        (GSI_SHARD.into(), s(shard.to_string())),
    ]);
    for (name, patterns) in [
        (GRANTS_SUBSCRIBE, &connection.grants.subscribe),
        (GRANTS_PUBLISH, &connection.grants.publish),
    ] {
        if let Some(set) = pattern_set(patterns) {
            item.insert(name.into(), set);
        }
    }
    item
}

pub(super) fn subscription_item(topic: &TopicPattern, connection: &Connection) -> Item {
    let mut item = subscription_key(topic.as_str(), &connection.id);
    item.extend([
        ("connection_id".into(), s(connection.id.as_str())),
        ("user_id".into(), s(connection.user_id.as_str())),
        ("endpoint".into(), s(&connection.endpoint)),
        (TTL_ATTRIBUTE.into(), n(connection.expires_at)),
    ]);
    item
}

pub(super) fn malformed(item: &Item, reason: String) -> StoreError {
    let key = match (item.get(PK), item.get(SK)) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => format!("{pk}/{sk}"),
        _ => "(no key)".into(),
    };
    StoreError::MalformedItem { key, reason }
}

pub(super) fn string_attr(item: &Item, name: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(malformed(
            item,
            format!("{name} is missing or not a string"),
        )),
    }
}

pub(super) fn number_attr<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| malformed(item, format!("{name} = {value} is out of range"))),
        _ => Err(malformed(
            item,
            format!("{name} is missing or not a number"),
        )),
    }
}

/// A number attribute that may be absent.
pub(super) fn optional_number<T: std::str::FromStr>(
    item: &Item,
    name: &str,
) -> Result<Option<T>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(_) => number_attr(item, name).map(Some),
    }
}

/// Grants as kept: a string set comes back in any order, so they are sorted (as they are
/// when read from a token).
fn patterns_attr(item: &Item, name: &str) -> Result<Vec<TopicPattern>, StoreError> {
    let mut patterns = match item.get(name) {
        None => Vec::new(),
        Some(AttributeValue::Ss(texts)) => texts
            .iter()
            .map(|t| TopicPattern::parse(t).map_err(|e| malformed(item, format!("{name}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(malformed(item, format!("{name} is not a string set"))),
    };
    patterns.sort();
    Ok(patterns)
}

pub(super) fn connection_of(item: &Item) -> Result<Connection, StoreError> {
    Ok(Connection {
        id: ConnectionId::new(string_attr(item, "connection_id")?),
        user_id: UserId::new(string_attr(item, "user_id")?),
        connected_at: number_attr(item, "connected_at")?,
        endpoint: string_attr(item, "endpoint")?,
        expires_at: number_attr(item, TTL_ATTRIBUTE)?,
        grants: Grants {
            subscribe: patterns_attr(item, GRANTS_SUBSCRIBE)?,
            publish: patterns_attr(item, GRANTS_PUBLISH)?,
        },
    })
}

pub(super) fn topics_of(item: &Item) -> Vec<String> {
    string_set(item, TOPICS)
}

/// A connection row's presence topics; any that no longer parse are left out.
pub(super) fn presence_topics_of(item: &Item) -> Vec<Topic> {
    string_set(item, PRESENCE_TOPICS)
        .iter()
        .filter_map(|t| Topic::parse(t).ok())
        .collect()
}

fn string_set(item: &Item, name: &str) -> Vec<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(values)) => values.clone(),
        _ => Vec::new(),
    }
}

pub(super) fn recipient_of(item: &Item) -> Result<Recipient, StoreError> {
    Ok(Recipient {
        connection_id: ConnectionId::new(string_attr(item, "connection_id")?),
        user_id: UserId::new(string_attr(item, "user_id")?),
        endpoint: string_attr(item, "endpoint")?,
    })
}

pub(super) fn live(item: &Item, now: u64) -> bool {
    number_attr::<u64>(item, TTL_ATTRIBUTE).is_ok_and(|expires| expires > now)
}

/// A user row's (or presence row's) connections: id → expires_at. Entries that do not parse
/// count as expired.
pub(super) fn user_connections_of(item: &Item) -> HashMap<String, u64> {
    match item.get(USER_CONNECTIONS) {
        Some(AttributeValue::M(entries)) => entries
            .iter()
            .filter_map(|(id, expires)| match expires {
                AttributeValue::N(n) => n.parse().ok().map(|e| (id.clone(), e)),
                _ => None,
            })
            .collect(),
        _ => HashMap::new(),
    }
}

pub(super) fn user_connections_value(entries: &HashMap<String, u64>) -> AttributeValue {
    AttributeValue::M(entries.iter().map(|(id, e)| (id.clone(), n(e))).collect())
}
