//! The channel configuration (`CHANNELS_CONFIG`, `--channels FILE`), the grants read from a
//! token's claims, the subscribe, publish and presence rules, the subscription keys a message
//! reads, and topic patterns.
//!
//! Input: NUL-separated sections `configuration JSON`, `claims JSON`, `user id`, then topics
//! and patterns, one a section. Missing sections take defaults (a few grants, `alice`, a probe
//! list of topics and patterns), so a bare configuration file is a useful input.

#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wsbridge::channels::{
    Channels, Grants, MAX_GRANTS, MAX_WILDCARD_DEPTH, Namespace, PublishRefusal, PublishRule,
    SubscribeRule, TopicPattern,
};
use wsbridge::protocol::{Topic, UserId};
use wsbridge_fuzz::{sections, text_or};

const DEFAULT_CLAIMS: &str =
    r#"{"channels": ["team:blue", "team:red:*", "list:*"], "publish_channels": "room:1 room:*"}"#;
const PROBES: [&str; 14] = [
    "user:alice",
    "user:bob",
    "team:blue",
    "team:red:1",
    "team:green",
    "admin:alerts",
    "room:42",
    "list:7",
    "demo",
    "org:7:board",
    "team:*",
    "org:7:*",
    "files/*",
    "*",
];
/// Topics and patterns of one input: triples of patterns are compared.
const MAX_PROBES: usize = 16;

fuzz_target!(|data: &[u8]| {
    let parts = sections(data, 3 + MAX_PROBES);
    let (Some(config), Some(claims), Some(user)) = (
        text_or(&parts, 0, "{}"),
        text_or(&parts, 1, DEFAULT_CLAIMS),
        text_or(&parts, 2, "alice"),
    ) else {
        return;
    };
    let probes: Vec<&str> = if parts.len() > 3 {
        parts[3..]
            .iter()
            .filter_map(|p| std::str::from_utf8(p).ok())
            .collect()
    } else {
        PROBES.to_vec()
    };
    let patterns: Vec<TopicPattern> = probes
        .iter()
        .filter_map(|p| TopicPattern::parse(p).ok())
        .collect();
    let mut topics: BTreeSet<Topic> = probes.iter().filter_map(|t| Topic::parse(t).ok()).collect();
    topics.extend(patterns.iter().flat_map(witnesses));
    check_patterns(&patterns, &topics);

    let channels = match Channels::parse(config) {
        Ok(channels) => channels,
        Err(refused) => {
            assert!(!refused.path.is_empty() && !refused.message.is_empty());
            return;
        }
    };
    check_namespaces(&channels, config);
    let claims: Map<String, Value> = serde_json::from_str(claims).unwrap_or_default();
    let grants = match channels.grants_of(&claims) {
        Ok(grants) => {
            check_grants(&grants.subscribe);
            check_grants(&grants.publish);
            grants
        }
        Err(_) => Grants::default(),
    };
    let Ok(user) = UserId::parse(user) else {
        return;
    };
    // What a connection can hold: what the client and server APIs accept as a subscription,
    // a topic or a wildcard with a namespace. A pattern of 129 bytes without `*` parses (the
    // extra byte is the wildcard's) but is neither: the APIs refuse it.
    let subscriptions: BTreeSet<TopicPattern> = patterns
        .iter()
        .cloned()
        .chain(topics.iter().map(TopicPattern::exact))
        .filter(|p| {
            p.as_topic().is_some()
                || (p.is_wildcard() && p.as_str().contains(':') && p.depth() <= MAX_WILDCARD_DEPTH)
        })
        .collect();
    for subscription in &subscriptions {
        check_subscribe_rules(&channels, subscription, &user, &grants);
    }
    for topic in &topics {
        check_topic_rules(&channels, topic, &grants, &subscriptions);
    }
});

/// Topics a pattern stands for, when it stands for any: itself, or its prefix and one more
/// segment (two different ones, so one differs from any exact pattern).
fn witnesses(pattern: &TopicPattern) -> Vec<Topic> {
    let texts = match pattern.prefix() {
        None => vec![pattern.as_str().to_owned()],
        Some(prefix) => vec![format!("{prefix}x"), format!("{prefix}y")],
    };
    texts.iter().filter_map(|t| Topic::parse(t).ok()).collect()
}

/// `covers` is exactly inclusion of the topic sets `matches` defines: reflexive, transitive,
/// sound (a covered pattern's topics all match) and complete (when not covered, a topic of
/// the other pattern does not match).
fn check_patterns(patterns: &[TopicPattern], topics: &BTreeSet<Topic>) {
    for a in patterns {
        assert_eq!(TopicPattern::parse(a.as_str()).as_ref(), Ok(a));
        assert!(a.covers(a), "{a} does not cover itself");
        for topic in witnesses(a) {
            assert!(a.matches(topic.as_str()), "{a} does not match {topic}");
        }
        if let Some(prefix) = a.prefix() {
            assert!(!a.matches(prefix), "{a} matches its bare prefix");
        }
        for b in patterns {
            let covers = a.covers(b);
            if covers {
                for topic in topics {
                    if b.matches(topic.as_str()) {
                        assert!(a.matches(topic.as_str()), "{a} covers {b}, not {topic}");
                    }
                }
                for c in patterns {
                    if b.covers(c) {
                        assert!(a.covers(c), "{a} covers {b} covers {c}");
                    }
                }
            } else {
                // Not covered: one of `b`'s topics is not `a`'s, unless `b` stands for no
                // topic at all (a pattern of a 128-byte prefix).
                let topics = witnesses(b);
                assert!(
                    topics.is_empty() || topics.iter().any(|t| !a.matches(t.as_str())),
                    "{a} does not cover {b}, yet matches each of its topics"
                );
            }
        }
    }
}

/// Namespaces as configured: named after their key, each reached by its own topics, the
/// default never owner-only, and each keeping exactly the history its entry asks for.
fn check_namespaces(channels: &Channels, config: &str) {
    // `Channels::parse` reads one document and ignores whatever follows it: read it so too.
    let document: Value = serde_json::Deserializer::from_str(config)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .expect("an accepted configuration is JSON");
    let (namespaces, default) = channels.namespaces();
    assert!(!namespaces.is_empty() || default.is_some());
    for (name, namespace) in namespaces {
        check_history(namespace, &document["namespaces"][name]["history"]);
        assert_eq!(namespace.name.as_deref(), Some(name.as_str()));
        assert!(
            (1..=64).contains(&name.len()) && !name.contains(':'),
            "{name:?}"
        );
        let topic = Topic::parse(&format!("{name}:x")).expect("a namespace name makes topics");
        assert_eq!(channels.namespace_of(&topic), Some(namespace));
    }
    if let Some(default) = default {
        check_history(default, &document["default"]["history"]);
        assert_eq!(default.name, None);
        assert_ne!(default.subscribe, SubscribeRule::Owner);
    }
}

/// A namespace keeps history exactly when its entry says so, as much and as long as it says,
/// within the README's bounds (`size` 1–1000, `ttl_seconds` 1–604800).
fn check_history(namespace: &Namespace, entry: &Value) {
    match &namespace.history {
        None => assert!(entry.is_null(), "history {entry} ignored"),
        Some(history) => {
            let size = u64::from(history.size);
            let ttl = history.ttl.as_secs();
            assert_eq!(entry["size"].as_u64(), Some(size), "{entry}");
            assert_eq!(entry["ttl_seconds"].as_u64(), Some(ttl), "{entry}");
            assert_eq!(history.ttl.subsec_nanos(), 0);
            assert!((1..=1_000).contains(&size), "{entry}");
            assert!((1..=604_800).contains(&ttl), "{entry}");
        }
    }
}

/// Grants as read from claims: bounded, sorted, distinct, each a pattern that parses back.
fn check_grants(grants: &[TopicPattern]) {
    assert!(grants.len() <= MAX_GRANTS);
    assert!(
        grants.windows(2).all(|pair| pair[0] < pair[1]),
        "{grants:?}"
    );
    for grant in grants {
        assert_eq!(TopicPattern::parse(grant.as_str()).as_ref(), Ok(grant));
    }
}

/// The namespace a subscription belongs to, as the README says: a topic's own (or the
/// default), a wildcard's configured namespace before its first `:` only, which must allow
/// wildcards.
fn expected_namespace<'a>(channels: &'a Channels, pattern: &TopicPattern) -> Option<&'a Namespace> {
    let (namespaces, default) = channels.namespaces();
    match pattern.as_topic() {
        Some(topic) => topic
            .split_namespace()
            .and_then(|(prefix, _)| namespaces.get(prefix))
            .or(default),
        None => pattern
            .as_str()
            .split_once(':')
            .and_then(|(prefix, _)| namespaces.get(prefix))
            .filter(|namespace| namespace.wildcards),
    }
}

/// A client's subscribe and a backend's, against what the subscription's namespace rule says.
fn check_subscribe_rules(
    channels: &Channels,
    pattern: &TopicPattern,
    user: &UserId,
    grants: &Grants,
) {
    if let Some(topic) = pattern.as_topic() {
        let (namespaces, default) = channels.namespaces();
        let expected = topic
            .split_namespace()
            .and_then(|(prefix, _)| namespaces.get(prefix))
            .or(default);
        assert_eq!(channels.namespace_of(&topic), expected);
    }
    let namespace = expected_namespace(channels, pattern);
    let client = channels.check_subscribe(pattern, user, grants);
    let allowed = namespace.is_some_and(|namespace| match namespace.subscribe {
        SubscribeRule::Authenticated => true,
        SubscribeRule::Owner => {
            !pattern.is_wildcard()
                && pattern
                    .as_str()
                    .split_once(':')
                    .is_some_and(|(_, owner)| owner == user.as_str())
        }
        SubscribeRule::Claim => grants.subscribe.iter().any(|g| g.covers(pattern)),
        SubscribeRule::Server | SubscribeRule::Nobody => false,
    });
    assert_eq!(client.is_ok(), allowed, "{pattern} for {user}: {client:?}");
    if let Err(refused) = client {
        assert_eq!(refused.topic, pattern.as_str());
    }

    let server = channels.check_server_subscribe(pattern);
    let open = namespace.is_some_and(|namespace| namespace.subscribe != SubscribeRule::Nobody);
    assert_eq!(server.is_ok(), open, "{pattern} for a backend: {server:?}");
}

/// What a message to `topic` reaches, who may publish to it, and whether its presence is
/// kept, given the subscriptions `subscriptions` a connection could hold.
fn check_topic_rules(
    channels: &Channels,
    topic: &Topic,
    grants: &Grants,
    subscriptions: &BTreeSet<TopicPattern>,
) {
    let namespace = channels.namespace_of(topic);
    // Every subscription a connection can hold that matches the topic is a key a message
    // to it reads, so its holder gets the message; and every key matches the topic.
    let keys = channels.subscription_keys(topic);
    assert_eq!(keys.first(), Some(&TopicPattern::exact(topic)));
    assert!(keys.len() <= 1 + MAX_WILDCARD_DEPTH, "{keys:?}");
    for key in &keys {
        assert!(key.matches(topic.as_str()), "{key} read for {topic}");
    }
    for subscription in subscriptions {
        if channels.check_server_subscribe(subscription).is_ok()
            && subscription.matches(topic.as_str())
        {
            assert!(keys.contains(subscription), "{subscription} misses {topic}");
        }
    }

    let presence = channels.presence_topics(&[TopicPattern::exact(topic)]);
    let tracked = namespace.is_some_and(|n| n.presence || n.join_leave);
    assert_eq!(presence, if tracked { vec![topic.clone()] } else { vec![] });
    let asked = channels.check_presence(topic);
    assert_eq!(
        asked.is_ok(),
        namespace.is_some_and(|n| n.presence),
        "{asked:?}"
    );

    for subscribed in [false, true] {
        let publish = channels.check_publish(topic, grants, subscribed);
        let expected = match namespace.map(|n| n.publish) {
            None | Some(PublishRule::Nobody) => Some(false),
            Some(PublishRule::Authenticated) => None,
            Some(PublishRule::Subscribers) if subscribed => None,
            Some(PublishRule::Subscribers) => Some(true),
            Some(PublishRule::Claim)
                if grants.publish.iter().any(|g| g.matches(topic.as_str())) =>
            {
                None
            }
            Some(PublishRule::Claim) => Some(false),
        };
        // None: allowed; Some(true): refused as not subscribed; Some(false): forbidden.
        match (&publish, expected) {
            (Ok(()), None)
            | (Err(PublishRefusal::NotSubscribed(_)), Some(true))
            | (Err(PublishRefusal::Forbidden(_)), Some(false)) => {}
            _ => panic!(
                "{topic} publish (subscribed: {subscribed}): {publish:?}, expected {expected:?}"
            ),
        }
    }
}
