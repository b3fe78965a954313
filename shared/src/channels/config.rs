//! The channel configuration as JSON, and its validation. Every error names the entry it is
//! about (`namespaces.room.history.size: …`), so a bad deployment fails at start-up with a
//! message that says what to fix.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{
    Channels, DEFAULT_PUBLISH_CLAIM, DEFAULT_SUBSCRIBE_CLAIM, History, Namespace, PublishRule,
    SubscribeRule,
};
use crate::protocol::is_topic_char;

/// Bounds of the `history` setting: messages per topic, and how long each is kept.
pub const MAX_HISTORY_SIZE: u32 = 1_000;
pub const MAX_HISTORY_TTL_SECONDS: u64 = 7 * 24 * 3_600;
/// Longest namespace and claim name.
const MAX_NAME_LEN: usize = 64;

/// A configuration that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ChannelsError {
    /// The entry, e.g. `namespaces.room.subscribe` (`.` for the document itself).
    pub path: String,
    pub message: String,
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ChannelsError {
    ChannelsError {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    /// Free text for the people who read the file; ignored.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default)]
    namespaces: BTreeMap<String, NamespaceEntry>,
    #[serde(default)]
    default: Option<NamespaceEntry>,
    #[serde(default)]
    claims: ClaimsEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceEntry {
    subscribe: SubscribeRuleEntry,
    #[serde(default)]
    publish: PublishRuleEntry,
    #[serde(default)]
    wildcards: bool,
    #[serde(default)]
    presence: bool,
    #[serde(default)]
    join_leave: bool,
    #[serde(default)]
    history: Option<HistoryEntry>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum SubscribeRuleEntry {
    Authenticated,
    Owner,
    Claim,
    Server,
    Nobody,
}

#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum PublishRuleEntry {
    #[default]
    Nobody,
    Subscribers,
    Claim,
    Authenticated,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryEntry {
    size: u32,
    ttl_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimsEntry {
    #[serde(default = "default_subscribe_claim")]
    subscribe: String,
    #[serde(default = "default_publish_claim")]
    publish: String,
}

impl Default for ClaimsEntry {
    fn default() -> Self {
        Self {
            subscribe: default_subscribe_claim(),
            publish: default_publish_claim(),
        }
    }
}

fn default_subscribe_claim() -> String {
    DEFAULT_SUBSCRIBE_CLAIM.to_owned()
}

fn default_publish_claim() -> String {
    DEFAULT_PUBLISH_CLAIM.to_owned()
}

pub(super) fn parse(json: &str) -> Result<Channels, ChannelsError> {
    let deserializer = &mut serde_json::Deserializer::from_str(json);
    let document: Document = serde_path_to_error::deserialize(&mut *deserializer).map_err(|e| {
        // A key "" at the top of the document prints as no path at all, and the error as
        // `: …`, naming nothing: the entry is the document's own.
        let path = match e.path().to_string() {
            path if path.is_empty() => ".".to_owned(),
            path => path,
        };
        invalid(path, e.into_inner().to_string())
    })?;
    // A stray `}` or a second document after it would otherwise be ignored, silently.
    deserializer
        .end()
        .map_err(|e| invalid(".".to_owned(), format!("text after the document: {e}")))?;
    let mut namespaces = BTreeMap::new();
    for (name, entry) in document.namespaces {
        let path = format!("namespaces.{name}");
        check_name(&path, &name)?;
        namespaces.insert(name.clone(), namespace(&path, Some(&name), entry)?);
    }
    let default = document
        .default
        .map(|entry| namespace("default", None, entry))
        .transpose()?;
    if namespaces.is_empty() && default.is_none() {
        return Err(invalid(
            ".",
            "no namespace and no default: every topic would be refused; configure one, or \
             leave the configuration unset for the built-in policy",
        ));
    }
    for (path, claim) in [
        ("claims.subscribe", &document.claims.subscribe),
        ("claims.publish", &document.claims.publish),
    ] {
        if claim.is_empty() || claim.len() > MAX_NAME_LEN {
            return Err(invalid(path, format!("must be 1 to {MAX_NAME_LEN} bytes")));
        }
    }
    Ok(Channels {
        namespaces,
        default,
        subscribe_claim: document.claims.subscribe,
        publish_claim: document.claims.publish,
    })
}

fn check_name(path: &str, name: &str) -> Result<(), ChannelsError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(
            path,
            format!("a namespace name is 1 to {MAX_NAME_LEN} bytes"),
        ));
    }
    if let Some(bad) = name.chars().find(|c| *c == ':' || !is_topic_char(*c)) {
        return Err(invalid(
            path,
            format!(
                "a namespace name may not contain {bad:?}: it is the part of a topic before its \
                 first `:`"
            ),
        ));
    }
    Ok(())
}

fn namespace(
    path: &str,
    name: Option<&str>,
    entry: NamespaceEntry,
) -> Result<Namespace, ChannelsError> {
    let subscribe = match entry.subscribe {
        SubscribeRuleEntry::Authenticated => SubscribeRule::Authenticated,
        SubscribeRuleEntry::Owner => SubscribeRule::Owner,
        SubscribeRuleEntry::Claim => SubscribeRule::Claim,
        SubscribeRuleEntry::Server => SubscribeRule::Server,
        SubscribeRuleEntry::Nobody => SubscribeRule::Nobody,
    };
    let publish = match entry.publish {
        PublishRuleEntry::Nobody => PublishRule::Nobody,
        PublishRuleEntry::Subscribers => PublishRule::Subscribers,
        PublishRuleEntry::Claim => PublishRule::Claim,
        PublishRuleEntry::Authenticated => PublishRule::Authenticated,
    };
    if subscribe == SubscribeRule::Owner && name.is_none() {
        return Err(invalid(
            format!("{path}.subscribe"),
            "owner needs a namespace prefix (`user:{sub}`); the default namespace has none",
        ));
    }
    if entry.wildcards && name.is_none() {
        return Err(invalid(
            format!("{path}.wildcards"),
            "a wildcard needs a namespace prefix (`list:*`); the default namespace has none",
        ));
    }
    if entry.wildcards && subscribe == SubscribeRule::Owner {
        return Err(invalid(
            format!("{path}.wildcards"),
            "an owner-only namespace has one topic per user: a wildcard would cover other users'",
        ));
    }
    let history = entry
        .history
        .map(|h| {
            if !(1..=MAX_HISTORY_SIZE).contains(&h.size) {
                return Err(invalid(
                    format!("{path}.history.size"),
                    format!("{} is outside 1..={MAX_HISTORY_SIZE}", h.size),
                ));
            }
            if !(1..=MAX_HISTORY_TTL_SECONDS).contains(&h.ttl_seconds) {
                return Err(invalid(
                    format!("{path}.history.ttl_seconds"),
                    format!("{} is outside 1..={MAX_HISTORY_TTL_SECONDS}", h.ttl_seconds),
                ));
            }
            Ok(History {
                size: h.size,
                ttl: Duration::from_secs(h.ttl_seconds),
            })
        })
        .transpose()?;
    Ok(Namespace {
        name: name.map(str::to_owned),
        subscribe,
        publish,
        wildcards: entry.wildcards,
        presence: entry.presence,
        join_leave: entry.join_leave,
        history,
    })
}
