//! The permission matrix: every subscribe rule, allowed and refused, on the built-in policy
//! and on the worked examples in `examples/channels/`.

use serde_json::json;

use super::*;
use crate::protocol::Topic;

const CHAT: &str = include_str!("../../../examples/channels/chat.json");
const FEED: &str = include_str!("../../../examples/channels/feed.json");

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn sub(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::new(name)
}

fn grants(subscribe: &[&str]) -> Grants {
    Grants {
        subscribe: subscribe
            .iter()
            .map(|p| TopicPattern::parse(p).unwrap())
            .collect(),
        publish: Vec::new(),
    }
}

/// `Ok(())` or the refusal's reason, for `user` with `grants` subscribing to `name`.
fn subscribe(channels: &Channels, name: &str, who: &str, granted: &[&str]) -> Result<(), String> {
    channels
        .check_subscribe(&sub(name), &user(who), &grants(granted))
        .map_err(|f| {
            assert_eq!(f.topic, name);
            f.reason
        })
}

/// Every rule in one configuration, plus a default namespace.
fn every_rule() -> Channels {
    Channels::parse(
        &json!({
            "namespaces": {
                "open": {"subscribe": "authenticated"},
                "user": {"subscribe": "owner"},
                "team": {"subscribe": "claim"},
                "admin": {"subscribe": "server"},
                "closed": {"subscribe": "nobody"}
            },
            "default": {"subscribe": "authenticated"}
        })
        .to_string(),
    )
    .unwrap()
}

#[test]
fn authenticated_lets_any_connection_in() {
    let channels = every_rule();
    assert_eq!(subscribe(&channels, "open:1", "alice", &[]), Ok(()));
    assert_eq!(subscribe(&channels, "open:1", "bob", &[]), Ok(()));
}

#[test]
fn owner_lets_in_only_the_user_the_topic_names() {
    let channels = every_rule();
    assert_eq!(subscribe(&channels, "user:alice", "alice", &[]), Ok(()));
    let refused = subscribe(&channels, "user:bob", "alice", &[]).unwrap_err();
    assert!(refused.contains("owner-only"), "{refused}");
    // a prefix or an extension of the user id is someone else
    assert!(subscribe(&channels, "user:alic", "alice", &[]).is_err());
    assert!(subscribe(&channels, "user:alice:2", "alice", &[]).is_err());
    // and grants do not open an owner-only namespace
    assert!(subscribe(&channels, "user:bob", "alice", &["user:*"]).is_err());
}

#[test]
fn claim_lets_in_exactly_what_the_token_grants() {
    let channels = every_rule();
    assert_eq!(subscribe(&channels, "team:7", "alice", &["team:7"]), Ok(()));
    assert_eq!(
        subscribe(&channels, "team:7:board", "alice", &["team:7:*"]),
        Ok(())
    );
    let refused = subscribe(&channels, "team:8", "alice", &["team:7", "team:7:*"]).unwrap_err();
    assert!(refused.contains("\"channels\" claim"), "{refused}");
    assert!(subscribe(&channels, "team:7", "alice", &[]).is_err());
    assert!(subscribe(&channels, "team:70", "alice", &["team:7"]).is_err());
}

#[test]
fn server_only_refuses_every_client_and_accepts_the_backend() {
    let channels = every_rule();
    let refused = subscribe(&channels, "admin:alerts", "alice", &["admin:*"]).unwrap_err();
    assert!(refused.contains("POST /subscribe"), "{refused}");
    assert_eq!(
        channels.check_server_subscribe(&sub("admin:alerts")),
        Ok(())
    );
}

#[test]
fn nobody_refuses_clients_and_backends_alike() {
    let channels = every_rule();
    assert!(subscribe(&channels, "closed:1", "alice", &["*"]).is_err());
    let refused = channels
        .check_server_subscribe(&sub("closed:1"))
        .unwrap_err();
    assert!(refused.reason.contains("closed"), "{}", refused.reason);
}

#[test]
fn topics_outside_every_namespace_fall_to_the_default_or_are_refused() {
    // GIVEN a default namespace: unprefixed and unknown-prefix topics use it
    let channels = every_rule();
    assert_eq!(subscribe(&channels, "demo", "alice", &[]), Ok(()));
    assert_eq!(subscribe(&channels, "org/42/board", "alice", &[]), Ok(()));
    assert_eq!(subscribe(&channels, "unknown:1", "alice", &[]), Ok(()));

    // GIVEN no default namespace: they are refused, with the reason
    let strict =
        Channels::parse(r#"{"namespaces":{"room":{"subscribe":"authenticated"}}}"#).unwrap();
    let refused = subscribe(&strict, "demo", "alice", &[]).unwrap_err();
    assert!(refused.contains("no configured namespace"), "{refused}");
    assert!(subscribe(&strict, "unknown:1", "alice", &[]).is_err());
    assert!(strict.check_server_subscribe(&sub("demo")).is_err());
    assert_eq!(subscribe(&strict, "room:1", "alice", &[]), Ok(()));
}

#[test]
fn the_built_in_policy_keeps_user_topics_private_and_the_rest_open() {
    let channels = Channels::default();
    assert_eq!(subscribe(&channels, "user:alice", "alice", &[]), Ok(()));
    assert!(subscribe(&channels, "user:bob", "alice", &[]).is_err());
    for open in ["demo", "list:123", "org/42/board", "board:7"] {
        assert_eq!(subscribe(&channels, open, "alice", &[]), Ok(()), "{open}");
    }
    let (namespaces, default) = channels.namespaces();
    assert!(
        namespaces
            .values()
            .chain(default)
            .all(|n| n.publish == PublishRule::Nobody)
    );
}

#[test]
fn grants_are_read_only_from_the_claims_a_rule_uses() {
    let claims = |value: serde_json::Value| value.as_object().cloned().unwrap();
    // the built-in policy has no claim rule: a malformed claim cannot refuse a token
    let builtin = Channels::default();
    let odd = claims(json!({"sub": "alice", "channels": 42}));
    assert_eq!(builtin.grants_of(&odd), Ok(Grants::default()));

    // with a claim rule, the configured claim is read, and a malformed one is an error
    let custom = Channels::parse(
        r#"{"namespaces":{"team":{"subscribe":"claim","publish":"claim"}},
            "claims":{"subscribe":"teams","publish":"can_post"}}"#,
    )
    .unwrap();
    let token =
        claims(json!({"teams": ["team:1"], "can_post": "team:1 team:2", "channels": ["x"]}));
    let granted = custom.grants_of(&token).unwrap();
    assert_eq!(
        granted.subscribe,
        vec![TopicPattern::parse("team:1").unwrap()]
    );
    assert_eq!(granted.publish.len(), 2);
    assert!(custom.grants_of(&claims(json!({"teams": 42}))).is_err());
}

#[test]
fn the_chat_example_is_what_its_description_says() {
    let chat = Channels::parse(CHAT).unwrap();
    let room = chat.namespace_of(&topic("room:1")).unwrap();
    assert_eq!(room.subscribe, SubscribeRule::Authenticated);
    assert_eq!(room.publish, PublishRule::Subscribers);
    assert!(room.presence && room.join_leave && !room.wildcards);
    assert_eq!(
        room.history,
        Some(History {
            size: 100,
            ttl: Duration::from_secs(3_600)
        })
    );
    let list = chat.namespace_of(&topic("list:123")).unwrap();
    assert!(list.wildcards);
    assert_eq!(list.subscribe, SubscribeRule::Authenticated);
    assert_eq!(subscribe(&chat, "user:alice", "alice", &[]), Ok(()));
    assert!(subscribe(&chat, "user:bob", "alice", &[]).is_err());
    assert!(
        subscribe(&chat, "demo", "alice", &[]).is_err(),
        "no default namespace"
    );
}

#[test]
fn the_feed_example_is_what_its_description_says() {
    let feed = Channels::parse(FEED).unwrap();
    assert_eq!(subscribe(&feed, "user:alice", "alice", &[]), Ok(()));
    assert!(subscribe(&feed, "user:bob", "alice", &[]).is_err());
    assert_eq!(subscribe(&feed, "team:7", "alice", &["team:7"]), Ok(()));
    assert!(subscribe(&feed, "team:8", "alice", &["team:7"]).is_err());
    assert!(subscribe(&feed, "admin:alerts", "alice", &[]).is_err());
    assert_eq!(feed.check_server_subscribe(&sub("admin:alerts")), Ok(()));
    let (namespaces, default) = feed.namespaces();
    assert!(
        namespaces
            .values()
            .chain(default)
            .all(|n| n.publish == PublishRule::Nobody)
    );
}

#[test]
fn configuration_errors_name_the_entry_and_what_to_fix() {
    let error = |json: serde_json::Value| Channels::parse(&json.to_string()).unwrap_err();
    let cases = [
        (
            json!({"namespaces": {"room": {"subscribe": "everyone"}}}),
            "namespaces.room.subscribe",
            "authenticated",
        ),
        (
            json!({"namespaces": {"room": {"publish": "subscribers"}}}),
            "namespaces.room",
            "subscribe",
        ),
        (
            json!({"namespaces": {"room": {"subscribe": "owner", "wildcards": true}}}),
            "namespaces.room.wildcards",
            "owner-only",
        ),
        (
            json!({"namespaces": {"room": {"subscribe": "authenticated", "history": {"size": 0, "ttl_seconds": 60}}}}),
            "namespaces.room.history.size",
            "outside",
        ),
        (
            json!({"namespaces": {"room": {"subscribe": "authenticated", "history": {"size": 10, "ttl_seconds": 0}}}}),
            "namespaces.room.history.ttl_seconds",
            "outside",
        ),
        (
            json!({"namespaces": {"room": {"subscribe": "authenticated", "histroy": {}}}}),
            "namespaces.room.histroy",
            "expected one of",
        ),
        (
            json!({"namespaces": {"a:b": {"subscribe": "authenticated"}}}),
            "namespaces.a:b",
            "':'",
        ),
        (
            json!({"default": {"subscribe": "owner"}}),
            "default.subscribe",
            "prefix",
        ),
        (
            json!({"default": {"subscribe": "authenticated"}, "claims": {"subscribe": ""}}),
            "claims.subscribe",
            "1 to",
        ),
        (json!({"namespace": {}}), "namespace", "namespaces"),
        (json!(42), ".", "struct Document"),
        (json!({}), ".", "built-in"),
    ];
    for (json, path, hint) in cases {
        let e = error(json.clone());
        assert_eq!(e.path, path, "{json}: {e}");
        assert!(e.message.contains(hint), "{json}: {e}");
    }
    assert!(Channels::parse("{not json").is_err());
}

#[test]
fn an_empty_key_at_the_top_of_the_document_is_named_as_the_document() {
    // GIVEN a key "" at the top; the first is the configuration the channels_config fuzz
    // target found an error naming no entry for
    for json in ["{\"\"doni\u{1}", r#"{"": 1}"#] {
        // WHEN it is parsed
        let e = Channels::parse(json).unwrap_err();
        // THEN the error names the document, and says what is wrong
        assert_eq!(e.path, ".", "{json}: {e}");
        assert!(e.message.contains("unknown field ``"), "{json}: {e}");
        assert!(e.to_string().starts_with(".: "), "{e}");
    }
}

#[test]
fn text_after_the_document_is_refused() {
    for text in [
        r#"{"default": {"subscribe": "authenticated"}} }"#,
        r#"{} {}"#,
        r#"{} trailing"#,
    ] {
        let error = Channels::parse(text).unwrap_err();
        assert!(
            error.to_string().contains("text after the document"),
            "{text}: {error}"
        );
    }
    assert!(Channels::parse("{\"default\": {\"subscribe\": \"authenticated\"}}  \n").is_ok());
}
