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
pub use pattern::{MAX_WILDCARD_DEPTH, PatternError, TopicPattern};

use crate::protocol::broadcast::Target;
use crate::protocol::{Topic, UserId};
use crate::store::Audience;

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

/// Why a client publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRefusal {
    Forbidden(Forbidden),
    /// The namespace lets subscribers publish, and the connection is not one.
    NotSubscribed(Forbidden),
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

    /// The namespace of a subscription: a topic's, or a wildcard's (the part before its
    /// first `:`, which a wildcard must have: it never reaches past its namespace).
    fn namespace_of_pattern(&self, pattern: &TopicPattern) -> Result<&Namespace, Forbidden> {
        let refuse = |reason: &str| Forbidden {
            topic: pattern.to_string(),
            reason: reason.to_owned(),
        };
        let namespace = match pattern.as_topic() {
            Some(topic) => self.namespace_of(&topic),
            None => pattern
                .as_str()
                .split_once(':')
                .and_then(|(prefix, _)| self.namespaces.get(prefix)),
        };
        let namespace = namespace.ok_or_else(|| {
            refuse(if pattern.is_wildcard() {
                "a wildcard subscription must start with a configured namespace, e.g. \"list:*\""
            } else {
                "it is in no configured namespace, and no default namespace is configured"
            })
        })?;
        if pattern.is_wildcard() && !namespace.wildcards {
            return Err(refuse(&format!(
                "{} does not allow wildcard subscriptions",
                namespace.label()
            )));
        }
        Ok(namespace)
    }

    /// Whether a client connection of `user` holding `grants` may subscribe itself to
    /// `pattern`: a topic, or a wildcard in a namespace that allows them. A claim grants a
    /// wildcard only through a grant that covers all of it (`list:*` grants `list:*` and every
    /// `list:` topic; `list:7` grants `list:7` alone).
    pub fn check_subscribe(
        &self,
        pattern: &TopicPattern,
        user: &UserId,
        grants: &Grants,
    ) -> Result<(), Forbidden> {
        let namespace = self.namespace_of_pattern(pattern)?;
        let refuse = |reason: String| {
            Err(Forbidden {
                topic: pattern.to_string(),
                reason,
            })
        };
        match namespace.subscribe {
            SubscribeRule::Authenticated => Ok(()),
            SubscribeRule::Owner => match pattern.as_str().split_once(':') {
                Some((_, owner)) if owner == user.as_str() && !pattern.is_wildcard() => Ok(()),
                _ => refuse(format!(
                    "{} is owner-only: only the user the topic names may subscribe",
                    namespace.label()
                )),
            },
            SubscribeRule::Claim => {
                if grants.subscribe.iter().any(|g| g.covers(pattern)) {
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

    /// Whether a backend may subscribe connections to `pattern`: any namespace but a closed
    /// one (wildcards where the namespace allows them).
    pub fn check_server_subscribe(&self, pattern: &TopicPattern) -> Result<(), Forbidden> {
        let namespace = self.namespace_of_pattern(pattern)?;
        if namespace.subscribe == SubscribeRule::Nobody {
            return Err(Forbidden {
                topic: pattern.to_string(),
                reason: format!("{} is closed", namespace.label()),
            });
        }
        Ok(())
    }

    /// The subscription keys a message to `topic` reaches: the topic itself, and, in a
    /// namespace with wildcards, every pattern that can match it (at most
    /// [`MAX_WILDCARD_DEPTH`]), so that a broadcast reads at most 1 + 4 partitions.
    pub fn subscription_keys(&self, topic: &Topic) -> Vec<TopicPattern> {
        let mut keys = vec![TopicPattern::exact(topic)];
        if let Some((prefix, _)) = topic.split_namespace()
            && self.namespaces.get(prefix).is_some_and(|n| n.wildcards)
        {
            keys.extend(pattern::enclosing_patterns(topic, prefix.len()));
        }
        keys
    }

    /// What a broadcast's target reads: topics become their subscription keys.
    pub fn audience(&self, target: &Target) -> Audience {
        match target {
            Target::Topic(topic) => Audience::Subscribers(self.subscription_keys(topic)),
            Target::Topics(topics) => {
                let mut keys: Vec<TopicPattern> = topics
                    .iter()
                    .flat_map(|t| self.subscription_keys(t))
                    .collect();
                keys.sort();
                keys.dedup();
                Audience::Subscribers(keys)
            }
            Target::User(user) => Audience::User(user.clone()),
            Target::Connections(ids) => Audience::Connections(ids.clone()),
            Target::All => Audience::All,
        }
    }

    /// Which of these subscriptions record their user's presence: the topics (not wildcards)
    /// of namespaces with `presence` or `join_leave`.
    pub fn presence_topics(&self, subscriptions: &[TopicPattern]) -> Vec<Topic> {
        subscriptions
            .iter()
            .filter_map(TopicPattern::as_topic)
            .filter(|topic| {
                self.namespace_of(topic)
                    .is_some_and(|n| n.presence || n.join_leave)
            })
            .collect()
    }

    /// Whether a connection may publish to `topic`, `subscribed` saying whether it receives
    /// the topic (holds it, or a wildcard matching it).
    pub fn check_publish(
        &self,
        topic: &Topic,
        grants: &Grants,
        subscribed: bool,
    ) -> Result<(), PublishRefusal> {
        let pattern = TopicPattern::exact(topic);
        let namespace = self
            .namespace_of_pattern(&pattern)
            .map_err(PublishRefusal::Forbidden)?;
        let refuse = |reason: String| Forbidden {
            topic: topic.to_string(),
            reason,
        };
        match namespace.publish {
            PublishRule::Authenticated => Ok(()),
            PublishRule::Subscribers if subscribed => Ok(()),
            PublishRule::Subscribers => Err(PublishRefusal::NotSubscribed(refuse(format!(
                "{} lets subscribers publish: subscribe to the topic first",
                namespace.label()
            )))),
            PublishRule::Claim if grants.publish.iter().any(|g| g.matches(topic.as_str())) => {
                Ok(())
            }
            PublishRule::Claim => Err(PublishRefusal::Forbidden(refuse(format!(
                "{} needs the topic granted in the token's {:?} claim",
                namespace.label(),
                self.publish_claim
            )))),
            PublishRule::Nobody => Err(PublishRefusal::Forbidden(refuse(format!(
                "clients may not publish in {}; a backend broadcasts with POST /broadcast",
                namespace.label()
            )))),
        }
    }

    /// Whether `topic`'s presence may be asked for: its namespace keeps presence.
    pub fn check_presence(&self, topic: &Topic) -> Result<(), Forbidden> {
        let namespace = self.namespace_of_pattern(&TopicPattern::exact(topic))?;
        if namespace.presence {
            Ok(())
        } else {
            Err(Forbidden {
                topic: topic.to_string(),
                reason: format!("{} does not keep presence", namespace.label()),
            })
        }
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
