//! The client protocol through `$default`, on the in-memory store.
use serde_json::json;

use super::*;
use crate::channels::Channels;
use crate::config::SessionConfig;
use crate::store::{Connection, MemoryStore, Store};
use crate::test_support::{
    FailingStore, RecordingSender, Settings, frame_of, ids, store_with, subscribers, ws_request,
};

/// `$default` on `store` with these settings, posts recorded and dropped.
async fn handle_with(
    request: &ApiGatewayWebsocketProxyRequest,
    store: &dyn Store,
    session: &SessionConfig,
    channels: &Channels,
) -> ApiGatewayProxyResponse {
    let settings = Settings {
        session: *session,
        channels: channels.clone(),
        ..Settings::default()
    };
    let sender = RecordingSender::new();
    handle(request, &settings.context(store, &sender)).await
}

/// A connection may hold three topics.
fn session() -> SessionConfig {
    SessionConfig {
        max_topics_per_connection: 3,
        ..SessionConfig::default()
    }
}

async fn alice_connected() -> MemoryStore {
    store_with(&[("c-alice", "alice")]).await
}

async fn send(store: &dyn Store, frame: &str) -> ApiGatewayProxyResponse {
    handle_with(
        &ws_request("c-alice", Some(frame)),
        store,
        &session(),
        &Channels::default(),
    )
    .await
}

#[tokio::test]
async fn subscribe_then_whoami_answers_with_the_topics_and_the_user() {
    // GIVEN alice's registered connection
    let store = alice_connected().await;

    // WHEN she subscribes to two topics, then asks who she is
    let subscribed = send(&store, r#"{"action":"subscribe","topics":["b:1","b:2"]}"#).await;
    let whoami = send(&store, r#"{"action":"whoami"}"#).await;

    // THEN both topics are held and whoami names her connection and user
    assert_eq!(subscribed.status_code, 200);
    assert_eq!(
        frame_of(&subscribed),
        json!({"action": "subscribed", "topics": ["b:1", "b:2"]})
    );
    assert_eq!(subscribers(&store, "b:1").await, ids(&["c-alice"]));
    assert_eq!(subscribers(&store, "b:2").await, ids(&["c-alice"]));
    assert_eq!(whoami.status_code, 200);
    assert_eq!(
        frame_of(&whoami),
        json!({"action": "whoami", "connection_id": "c-alice", "user_id": "alice"})
    );
}

#[tokio::test]
async fn subscribing_past_the_limit_across_requests_adds_nothing_of_the_second() {
    // GIVEN alice holds two of her three topics
    let store = alice_connected().await;
    send(&store, r#"{"action":"subscribe","topics":["b:1","b:2"]}"#).await;

    // WHEN she asks for two more (one request alone is within the limit)
    let refused = send(&store, r#"{"action":"subscribe","topics":["b:3","b:4"]}"#).await;

    // THEN the frame says too many, and neither new topic was added
    assert_eq!(refused.status_code, 200);
    let frame = frame_of(&refused);
    assert_eq!(frame["error"], "too_many_topics");
    let details = frame["details"].as_str().unwrap();
    assert!(
        details.contains("4 topics") && details.contains("at most 3"),
        "{details}"
    );
    assert!(subscribers(&store, "b:3").await.is_empty());
    assert!(subscribers(&store, "b:4").await.is_empty());
    assert_eq!(subscribers(&store, "b:1").await, ids(&["c-alice"]));

    // AND one more topic, up to the limit, is still accepted
    let third = send(&store, r#"{"action":"subscribe","topic":"b:3"}"#).await;
    assert_eq!(frame_of(&third)["action"], "subscribed");
    assert_eq!(subscribers(&store, "b:3").await, ids(&["c-alice"]));
}

#[tokio::test]
async fn unsubscribe_drops_only_the_named_topics() {
    // GIVEN alice holds two topics
    let store = alice_connected().await;
    send(&store, r#"{"action":"subscribe","topics":["b:1","b:2"]}"#).await;

    // WHEN she unsubscribes from one, and from one she never held
    let reply = send(&store, r#"{"action":"unsubscribe","topics":["b:1","b:9"]}"#).await;

    // THEN the reply echoes them and only b:1 is gone from her subscriptions
    assert_eq!(reply.status_code, 200);
    assert_eq!(
        frame_of(&reply),
        json!({"action": "unsubscribed", "topics": ["b:1", "b:9"]})
    );
    assert!(subscribers(&store, "b:1").await.is_empty());
    assert_eq!(subscribers(&store, "b:2").await, ids(&["c-alice"]));
}

#[tokio::test]
async fn a_connection_the_store_does_not_know_gets_not_connected() {
    // GIVEN a store without alice's connection (TTL removed it, say)
    let store = MemoryStore::new();

    for action in [
        r#"{"action":"subscribe","topic":"b:1"}"#,
        r#"{"action":"unsubscribe","topic":"b:1"}"#,
        r#"{"action":"whoami"}"#,
    ] {
        // WHEN she sends a frame that needs her connection
        let reply = send(&store, action).await;

        // THEN she is told to reconnect, and nothing is subscribed
        assert_eq!(reply.status_code, 200, "{action}");
        assert_eq!(frame_of(&reply)["error"], "not_connected", "{action}");
    }
    assert!(subscribers(&store, "b:1").await.is_empty());
}

#[tokio::test]
async fn a_binary_frame_is_refused_even_if_it_decodes_to_a_valid_action() {
    use base64::Engine;
    // GIVEN alice's connection and a subscribe frame sent as binary
    let store = alice_connected().await;
    let body =
        base64::engine::general_purpose::STANDARD.encode(r#"{"action":"subscribe","topic":"b:1"}"#);
    let mut request = ws_request("c-alice", Some(&body));
    request.is_base64_encoded = true;

    // WHEN it reaches $default
    let reply = handle_with(&request, &store, &session(), &Channels::default()).await;

    // THEN an error frame explains text frames, and nothing is subscribed
    assert_eq!(reply.status_code, 200);
    let frame = frame_of(&reply);
    assert_eq!(frame["error"], "invalid_json");
    assert!(frame["details"].as_str().unwrap().contains("text frame"));
    assert!(subscribers(&store, "b:1").await.is_empty());
}

#[tokio::test]
async fn ping_and_malformed_frames_need_no_store() {
    // GIVEN a store that is down
    let store = FailingStore;

    // WHEN a ping and a malformed frame arrive
    let pong = send(&store, r#"{"action":"ping"}"#).await;
    let malformed = send(&store, r#"{"action":"subscribe"}"#).await;

    // THEN both are answered without touching the store
    assert_eq!(pong.status_code, 200);
    assert_eq!(frame_of(&pong), json!({"action": "pong"}));
    assert_eq!(malformed.status_code, 200);
    assert_eq!(frame_of(&malformed)["error"], "missing_topic");
}

#[tokio::test]
async fn a_failing_store_answers_500_with_an_internal_error_frame() {
    // GIVEN a store that is down
    let store = FailingStore;

    for action in [
        r#"{"action":"subscribe","topic":"b:1"}"#,
        r#"{"action":"unsubscribe","topic":"b:1"}"#,
        r#"{"action":"whoami"}"#,
    ] {
        // WHEN a frame needs it
        let reply = send(&store, action).await;

        // THEN the client gets 500 and an internal_error frame, not silence
        assert_eq!(reply.status_code, 500, "{action}");
        assert_eq!(frame_of(&reply)["error"], "internal_error", "{action}");
    }
}

/// Every subscribe rule, plus a default namespace; alice's connection may hold ten topics.
fn every_rule() -> Channels {
    Channels::parse(
        &json!({
            "namespaces": {
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

/// alice's connection, granted team:7 and team:9:* by her token.
async fn alice_with_grants() -> MemoryStore {
    let store = MemoryStore::new();
    let alice = Connection {
        grants: crate::channels::Grants {
            subscribe: ["team:7", "team:9:*"]
                .iter()
                .map(|p| crate::channels::TopicPattern::parse(p).unwrap())
                .collect(),
            publish: Vec::new(),
        },
        ..crate::test_support::connection("c-alice", "alice")
    };
    crate::test_support::put(&store, &alice).await;
    store
}

async fn subscribe_as_alice(store: &MemoryStore, topics: &[&str]) -> serde_json::Value {
    let frame = json!({"action": "subscribe", "topics": topics}).to_string();
    let session = SessionConfig {
        max_topics_per_connection: 10,
        ..SessionConfig::default()
    };
    let reply = handle_with(
        &ws_request("c-alice", Some(&frame)),
        store,
        &session,
        &every_rule(),
    )
    .await;
    assert_eq!(reply.status_code, 200);
    frame_of(&reply)
}

#[tokio::test]
async fn the_permission_matrix_admits_and_refuses_as_each_rule_says() {
    for (topic, allowed, rule) in [
        ("demo", true, "default namespace, authenticated"),
        ("user:alice", true, "owner, her own"),
        ("user:bob", false, "owner, someone else's"),
        ("team:7", true, "claim, granted exactly"),
        ("team:9:board", true, "claim, granted by pattern"),
        ("team:8", false, "claim, not granted"),
        ("admin:alerts", false, "server only"),
        ("closed:1", false, "nobody"),
    ] {
        // GIVEN alice's connection with her grants
        let store = alice_with_grants().await;

        // WHEN she subscribes to the topic
        let reply = subscribe_as_alice(&store, &[topic]).await;

        // THEN she holds it exactly when the rule allows it, and a refusal names the topic
        let holds = subscribers(&store, topic).await == ids(&["c-alice"]);
        assert_eq!(holds, allowed, "{rule}: {reply}");
        if allowed {
            assert_eq!(
                reply,
                json!({"action": "subscribed", "topics": [topic]}),
                "{rule}"
            );
        } else {
            assert_eq!(reply["error"], "forbidden", "{rule}");
            let details = reply["details"].as_str().unwrap();
            assert!(details.contains(&format!("{topic:?}")), "{rule}: {details}");
        }
    }
}

#[tokio::test]
async fn one_forbidden_topic_refuses_the_whole_request() {
    // GIVEN alice's connection
    let store = alice_with_grants().await;

    // WHEN she asks for two allowed topics and bob's private one in one frame
    let reply = subscribe_as_alice(&store, &["demo", "team:7", "user:bob"]).await;

    // THEN she is refused, naming the forbidden topic, and holds none of them
    assert_eq!(reply["error"], "forbidden");
    assert!(reply["details"].as_str().unwrap().contains("user:bob"));
    for topic in ["demo", "team:7", "user:bob"] {
        assert!(subscribers(&store, topic).await.is_empty(), "{topic}");
    }
}

#[tokio::test]
async fn a_flood_meets_rate_limited_and_each_refused_frame_changes_nothing() {
    // GIVEN alice's connection with a budget of 3 frames, 1 a second
    let store = alice_connected().await;
    let session = SessionConfig {
        rate_limit: Some(crate::limits::RateLimit {
            per_second: 1,
            burst: 3,
        }),
        ..session()
    };
    let settings = Settings {
        session,
        ..Settings::default()
    };
    let sender = RecordingSender::new();
    let ctx = settings.context(&store, &sender);
    let at = |frame: &str, now_us: i64| {
        let request = ws_request("c-alice", Some(frame));
        let ctx = &ctx;
        async move { frame_of(&handle_at(&request, ctx, now_us).await) }
    };
    let t0 = 1_800_000_000_000_000;

    // WHEN she sends ten subscribes at the same instant
    let mut replies = Vec::new();
    for n in 0..10 {
        replies.push(at(&format!(r#"{{"action":"subscribe","topic":"b:{n}"}}"#), t0).await);
    }

    // THEN three are applied and seven are refused with the wait, holding nothing
    for (n, reply) in replies.iter().enumerate() {
        let held = !subscribers(&store, &format!("b:{n}")).await.is_empty();
        if n < 3 {
            assert_eq!(reply["action"], "subscribed", "{n}");
            assert!(held);
        } else {
            assert_eq!(reply["error"], "rate_limited", "{n}: {reply}");
            assert_eq!(reply["retry_after_ms"], 1_000, "{n}");
            assert!(!held, "{n}");
        }
    }

    // AND pings are never limited, and a second later one more frame fits
    assert_eq!(
        at(r#"{"action":"ping"}"#, t0).await,
        json!({"action": "pong"})
    );
    assert_eq!(
        at(r#"{"action":"whoami"}"#, t0 + 1_000_000).await["action"],
        "whoami"
    );
    assert_eq!(
        at(r#"{"action":"whoami"}"#, t0 + 1_000_000).await["error"],
        "rate_limited"
    );
}

#[tokio::test]
async fn every_answer_carries_the_ref_of_the_frame_it_answers() {
    // GIVEN alice's connection with a budget of one frame
    let store = alice_connected().await;
    let settings = Settings {
        session: SessionConfig {
            rate_limit: Some(crate::limits::RateLimit {
                per_second: 1,
                burst: 1,
            }),
            ..session()
        },
        ..Settings::default()
    };
    let sender = RecordingSender::new();
    let ctx = settings.context(&store, &sender);
    let t0 = 1_800_000_000_000_000;
    let answer = |frame: serde_json::Value, store: &'static str| {
        let request = ws_request("c-alice", Some(&frame.to_string()));
        let ctx = &ctx;
        async move {
            let response = match store {
                "failing" => {
                    let failing = Settings::default();
                    let sender = RecordingSender::new();
                    handle_at(&request, &failing.context(&FailingStore, &sender), t0).await
                }
                _ => handle_at(&request, ctx, t0).await,
            };
            frame_of(&response)
        }
    };

    // WHEN frames with refs are answered by every path: applied, pong, malformed, forbidden
    // (first frame of the budget spent by the subscribe), rate limited, store down
    let subscribed = answer(json!({"action": "subscribe", "topic": "b:1", "ref": 1}), "").await;
    let pong = answer(json!({"action": "ping", "ref": "p"}), "").await;
    let malformed = answer(json!({"action": "subscribe", "ref": 2}), "").await;
    let limited = answer(json!({"action": "whoami", "ref": "w"}), "").await;
    let down = answer(json!({"action": "whoami", "ref": 9}), "failing").await;

    // THEN each answer is what it was before, plus the same ref
    assert_eq!(subscribed["action"], "subscribed");
    assert_eq!(subscribed["ref"], 1);
    assert_eq!(pong, json!({"action": "pong", "ref": "p"}));
    assert_eq!(malformed["error"], "missing_topic");
    assert_eq!(malformed["ref"], 2);
    assert_eq!(limited["error"], "rate_limited");
    assert_eq!(limited["ref"], "w");
    assert_eq!(down["error"], "internal_error");
    assert_eq!(down["ref"], 9);
    // AND the subscribe was applied under its ref as without one
    assert_eq!(subscribers(&store, "b:1").await, ids(&["c-alice"]));
}

#[tokio::test]
async fn a_refused_subscribe_keeps_its_ref() {
    // GIVEN alice's connection under the built-in policy
    let store = alice_connected().await;

    // WHEN she asks for bob's private topic with a ref
    let refused = frame_of(
        &send(
            &store,
            r#"{"action":"subscribe","topic":"user:bob","ref":"s1"}"#,
        )
        .await,
    );

    // THEN the refusal names the rule and carries the ref, and nothing is held
    assert_eq!(refused["error"], "forbidden");
    assert_eq!(refused["ref"], "s1");
    assert!(subscribers(&store, "user:bob").await.is_empty());
}
