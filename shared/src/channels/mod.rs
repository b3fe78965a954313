//! Channel namespaces and permissions: who may subscribe to, and publish to, which topics.
//!
//! A topic's namespace is the part before its first `:` (`room` for `room:42`). Each
//! configured namespace carries its rules; a topic whose prefix names no configured namespace
//! (or that has no `:` at all, like `demo`) falls to the `default` namespace, and is refused
//! when there is none. The configuration is JSON (see `config` and README, "Channels"), read
//! once at start-up by every function and by the local gateway.
//!
//! With nothing configured the built-in policy applies: `user:{sub}` is its owner's alone,
//! every other topic is open to any authenticated user, clients publish nowhere.

mod config;
pub mod grants;
pub mod pattern;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

pub use config::ChannelsError;
pub use grants::{GrantError, Grants, MAX_GRANTS};
pub use pattern::{PatternError, TopicPattern};

use crate::protocol::{Topic, UserId};

/// Who may subscribe a connection to a namespace's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRule {
    /// Any connection (every connection carries a verified token).
    Authenticated,
    /// Only the user the topic names: the part after `namespace:` must equal the `sub`.
    Owner,
    /// Connections whose token grants the topic (or a pattern covering it) in the subscribe
    /// claim.
    Claim,
    /// Only a backend, through `POST /subscribe` of the broadcast API.
    Server,
    /// Nobody, not even a backend.
    Nobody,
}

/// Who may publish to a namespace's topics from a client connection. Backends always may,
/// through `POST /broadcast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRule {
    Nobody,
    /// Connections subscribed to the topic.
    Subscribers,
    /// Connections whose token grants the topic in the publish claim.
    Claim,
    /// Any connection.
    Authenticated,
}

/// How much of a topic's recent messages is kept for recovery and history reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Messages kept per topic.
    pub size: u32,
    /// How long each message is kept.
    pub ttl: Duration,
}

/// The rules of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `None` for the default namespace.
    pub name: Option<String>,
    pub subscribe: SubscribeRule,
    pub publish: PublishRule,
    /// Subscriptions to patterns such as `list:*`.
    pub wildcards: bool,
    /// Who is subscribed, per user, can be asked for.
    pub presence: bool,
    /// Subscribers hear when a user's first connection joins and their last one leaves.
    pub join_leave: bool,
    pub history: Option<History>,
}

impl Namespace {
    /// A namespace with `subscribe` as its rule and every other setting off.
    pub fn new(name: Option<&str>, subscribe: SubscribeRule) -> Self {
        Self {
            name: name.map(str::to_owned),
            subscribe,
            publish: PublishRule::Nobody,
            wildcards: false,
            presence: false,
            join_leave: false,
            history: None,
        }
    }

    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("namespace {name:?}"),
            None => "the default namespace".to_owned(),
        }
    }
}

/// A refused request: which topic, and the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub topic: String,
    pub reason: String,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic {:?}: {}", self.topic, self.reason)
    }
}

/// The claims grants are read from when a namespace uses the `claim` rule.
pub const DEFAULT_SUBSCRIBE_CLAIM: &str = "channels";
pub const DEFAULT_PUBLISH_CLAIM: &str = "publish_channels";

/// The whole channel configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    namespaces: BTreeMap<String, Namespace>,
    default: Option<Namespace>,
    subscribe_claim: String,
    publish_claim: String,
}

impl Default for Channels {
    /// The built-in policy: `user:{sub}` owner-only, every other topic open to any
    /// authenticated user, no client publish.
    fn default() -> Self {
        Self {
            namespaces: BTreeMap::from([(
                "user".to_owned(),
                Namespace::new(Some("user"), SubscribeRule::Owner),
            )]),
            default: Some(Namespace::new(None, SubscribeRule::Authenticated)),
            subscribe_claim: DEFAULT_SUBSCRIBE_CLAIM.to_owned(),
            publish_claim: DEFAULT_PUBLISH_CLAIM.to_owned(),
        }
    }
}

impl Channels {
    /// Parses and validates a JSON configuration; errors name the offending entry.
    pub fn parse(json: &str) -> Result<Self, ChannelsError> {
        config::parse(json)
    }

    /// The namespace `topic` belongs to, if any.
    pub fn namespace_of(&self, topic: &Topic) -> Option<&Namespace> {
        topic
            .split_namespace()
            .and_then(|(prefix, _)| self.namespaces.get(prefix))
            .or(self.default.as_ref())
    }

    /// Configured namespaces by name, and the default one.
    pub fn namespaces(&self) -> (&BTreeMap<String, Namespace>, Option<&Namespace>) {
        (&self.namespaces, self.default.as_ref())
    }

    fn namespace_or_refuse(&self, topic: &Topic) -> Result<&Namespace, Forbidden> {
        self.namespace_of(topic).ok_or_else(|| Forbidden {
            topic: topic.to_string(),
            reason: "it is in no configured namespace, and no default namespace is configured"
                .to_owned(),
        })
    }

    /// Whether a client connection of `user` holding `grants` may subscribe itself to
    /// `topic`.
    pub fn check_subscribe(
        &self,
        topic: &Topic,
        user: &UserId,
        grants: &Grants,
    ) -> Result<(), Forbidden> {
        let namespace = self.namespace_or_refuse(topic)?;
        let refuse = |reason: String| {
            Err(Forbidden {
                topic: topic.to_string(),
                reason,
            })
        };
        match namespace.subscribe {
            SubscribeRule::Authenticated => Ok(()),
            SubscribeRule::Owner => match topic.split_namespace() {
                Some((_, owner)) if owner == user.as_str() => Ok(()),
                _ => refuse(format!(
                    "{} is owner-only: only the user the topic names may subscribe",
                    namespace.label()
                )),
            },
            SubscribeRule::Claim => {
                if grants.subscribe.iter().any(|g| g.matches(topic.as_str())) {
                    Ok(())
                } else {
                    refuse(format!(
                        "{} needs the topic granted in the token's {:?} claim",
                        namespace.label(),
                        self.subscribe_claim
                    ))
                }
            }
            SubscribeRule::Server => refuse(format!(
                "{} is server-only: a backend subscribes connections with POST /subscribe",
                namespace.label()
            )),
            SubscribeRule::Nobody => refuse(format!("{} is closed", namespace.label())),
        }
    }

    /// Whether a backend may subscribe connections to `topic`: any namespace but a closed one.
    pub fn check_server_subscribe(&self, topic: &Topic) -> Result<(), Forbidden> {
        let namespace = self.namespace_or_refuse(topic)?;
        if namespace.subscribe == SubscribeRule::Nobody {
            return Err(Forbidden {
                topic: topic.to_string(),
                reason: format!("{} is closed", namespace.label()),
            });
        }
        Ok(())
    }

    /// The grants a verified token carries, as the configured claims say. Only claims a
    /// `claim` rule uses are read: a claim nothing here needs cannot refuse a token.
    pub fn grants_of(&self, claims: &Map<String, Value>) -> Result<Grants, GrantError> {
        let rules = || self.namespaces.values().chain(self.default.as_ref());
        let subscribe = if rules().any(|n| n.subscribe == SubscribeRule::Claim) {
            grants::patterns_of(claims, &self.subscribe_claim)?
        } else {
            Vec::new()
        };
        let publish = if rules().any(|n| n.publish == PublishRule::Claim) {
            grants::patterns_of(claims, &self.publish_claim)?
        } else {
            Vec::new()
        };
        Ok(Grants { subscribe, publish })
    }
}

#[cfg(test)]
mod tests;
