//! The local gateway end to end: real WebSocket clients and real HTTP over loopback, the
//! same handlers the Lambda functions run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_apigatewaymanagement::primitives::Blob;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsbridge::protocol::ConnectionId;
use wsbridge_local::{Limits, RunningGateway, Storage};
use wsbridge_tests::gateway::{
    Client, PATIENCE, broadcast, connect, drain, dynamodb_storage, eventually, management_client,
    receive, request, send, start_gateway, subscribe, token, whoami,
};

async fn memory_gateway() -> RunningGateway {
    start_gateway(Limits::default(), Storage::Memory).await
}

/// The close frame the server sends next (skipping anything else).
async fn close_frame(client: &mut Client) -> (CloseCode, String) {
    let frame = tokio::time::timeout(PATIENCE, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code, frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    frame.expect("a close frame within the patience window")
}

#[tokio::test]
async fn subscriber_receives_the_envelope_and_exclusions_are_honoured() {
    // GIVEN alice (twice) and bob subscribed to one topic
    let gateway = memory_gateway().await;
    let mut alice_laptop = connect(&gateway, "alice").await;
    let mut alice_phone = connect(&gateway, "alice").await;
    let mut bob = connect(&gateway, "bob").await;
    for client in [&mut alice_laptop, &mut alice_phone, &mut bob] {
        subscribe(client, &["list:123"]).await;
    }
    let laptop_id = whoami(&mut alice_laptop).await;

    // WHEN a backend broadcasts to the topic
    let (status, report) = broadcast(
        &gateway,
        json!({"topic": "list:123", "event": "item.updated", "data": {"id": 7}}),
    )
    .await;

    // THEN everyone gets the envelope
    assert_eq!(status, 200);
    assert_eq!(
        (report["recipients"].clone(), report["delivered"].clone()),
        (json!(3), json!(3))
    );
    for client in [&mut alice_laptop, &mut alice_phone, &mut bob] {
        let envelope = receive(client).await;
        assert_eq!(envelope["topic"], "list:123");
        assert_eq!(envelope["event"], "item.updated");
        assert_eq!(envelope["data"], json!({"id": 7}));
        assert_eq!(envelope["id"], report["id"]);
        assert!(envelope["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }

    // AND exclude_user leaves out both of alice's connections
    let (_, report) = broadcast(
        &gateway,
        json!({"topic": "list:123", "event": "e1", "exclude_user": "alice"}),
    )
    .await;
    assert_eq!(report["recipients"], 1);
    assert_eq!(receive(&mut bob).await["event"], "e1");

    // AND exclude_connection leaves out only that connection
    let (_, report) = broadcast(
        &gateway,
        json!({"topic": "list:123", "event": "e2", "exclude_connection": laptop_id}),
    )
    .await;
    assert_eq!(report["recipients"], 2);
    assert_eq!(receive(&mut alice_phone).await["event"], "e2");
    assert_eq!(receive(&mut bob).await["event"], "e2");
    // the laptop got neither e1 nor e2
    assert!(
        drain(&mut alice_laptop, Duration::from_millis(300))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_user_on_two_connections_receives_a_user_message_on_both() {
    let gateway = memory_gateway().await;
    let mut first = connect(&gateway, "carol").await;
    let mut second = connect(&gateway, "carol").await;
    let mut other = connect(&gateway, "dave").await;

    let (status, report) = broadcast(
        &gateway,
        json!({"user_id": "carol", "message": {"direct": true}}),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(report["delivered"], 2);
    assert_eq!(receive(&mut first).await, json!({"direct": true}));
    assert_eq!(receive(&mut second).await, json!({"direct": true}));
    assert!(
        drain(&mut other, Duration::from_millis(300))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_bad_or_absent_token_refuses_the_handshake_with_401() {
    let gateway = memory_gateway().await;
    let forged = format!("{}x", token("mallory"));
    for url in [
        format!("{}/?token={forged}", gateway.ws_url()),
        format!("{}/?token=garbage", gateway.ws_url()),
        format!("{}/", gateway.ws_url()),
    ] {
        match connect_async(&url).await {
            Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 401, "{url}"),
            other => panic!("{url}: expected a refused handshake, got {other:?}"),
        }
    }
    assert_eq!(gateway.store().count_connections().await.unwrap(), 0);
    assert_eq!(gateway.open_connections(), 0);
}

#[tokio::test]
async fn a_client_that_drops_tcp_is_disconnected_and_never_counted_delivered() {
    // GIVEN a subscribed client
    let gateway = memory_gateway().await;
    let mut client = connect(&gateway, "erin").await;
    subscribe(&mut client, &["t"]).await;
    let id = whoami(&mut client).await;

    // WHEN its TCP connection goes away without a close frame
    drop(client);

    // THEN $disconnect removes its rows
    let store = gateway.store();
    let connection = ConnectionId::new(id.as_str());
    eventually("the connection's rows are gone", || {
        let store = store.clone();
        let connection = connection.clone();
        async move { store.get_connection(&connection).await.unwrap().is_none() }
    })
    .await;
    assert_eq!(gateway.open_connections(), 0);
    // AND broadcasts never count it delivered
    let (_, report) = broadcast(&gateway, json!({"topic": "t", "event": "e"})).await;
    assert_eq!(report["recipients"], 0);
    assert_eq!(report["delivered"], 0);
    let (_, report) = broadcast(&gateway, json!({"connection_ids": [id], "event": "e"})).await;
    assert_eq!(
        (report["delivered"].clone(), report["gone"].clone()),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn management_api_answers_like_api_gateway_to_the_sdk_client() {
    let gateway = memory_gateway().await;
    let management = management_client(&gateway);
    let mut client = connect(&gateway, "frank").await;
    let id = whoami(&mut client).await;

    // POST reaches the client
    management
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new(r#"{"direct":1}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(receive(&mut client).await, json!({"direct": 1}));

    // GET tells when and from where it connected
    let details = management
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    let connected_at = details.connected_at().expect("ConnectedAt").secs();
    assert!((wsbridge::auth::now_seconds() as i64 - connected_at).abs() < 60);
    assert!(details.last_active_at().unwrap().secs() >= connected_at);
    assert_eq!(details.identity().unwrap().source_ip(), Some("127.0.0.1"));

    // a body over 128 KB is refused with 413
    let too_big = vec![b'x'; 128 * 1024 + 1];
    let refused = management
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new(too_big))
        .send()
        .await
        .unwrap_err();
    assert!(
        refused
            .into_service_error()
            .is_payload_too_large_exception()
    );

    // DELETE closes the socket and $disconnect follows
    management
        .delete_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    let (code, _) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Normal);
    let store = gateway.store();
    eventually("the deleted connection's rows are gone", || {
        let store = store.clone();
        let id = ConnectionId::new(id.as_str());
        async move { store.get_connection(&id).await.unwrap().is_none() }
    })
    .await;

    // unknown (and now closed) ids are 410 Gone for every verb
    for unknown in [id.as_str(), "bm9ib2R5aGVyZQ="] {
        let post = management
            .post_to_connection()
            .connection_id(unknown)
            .data(Blob::new("x"))
            .send()
            .await
            .unwrap_err();
        assert!(post.into_service_error().is_gone_exception());
        let get = management
            .get_connection()
            .connection_id(unknown)
            .send()
            .await
            .unwrap_err();
        assert!(get.into_service_error().is_gone_exception());
        let delete = management
            .delete_connection()
            .connection_id(unknown)
            .send()
            .await
            .unwrap_err();
        assert!(delete.into_service_error().is_gone_exception());
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_with_1009() {
    let gateway = memory_gateway().await;
    let mut client = connect(&gateway, "gina").await;
    let id = whoami(&mut client).await;

    // one 40 KB frame: over the 32 KB frame limit
    let big = json!({"action": "ping", "pad": "x".repeat(40 * 1024)}).to_string();
    client.send(Message::text(big)).await.unwrap();

    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Size);
    assert_eq!(reason, "Message too big");
    let store = gateway.store();
    eventually("the closed connection's rows are gone", || {
        let store = store.clone();
        let id = ConnectionId::new(id.as_str());
        async move { store.get_connection(&id).await.unwrap().is_none() }
    })
    .await;
}

#[tokio::test]
async fn an_oversized_message_in_small_frames_closes_with_1009_but_a_fragmented_one_within_limits_is_served()
 {
    let gateway = memory_gateway().await;
    let mut client = connect(&gateway, "hank").await;

    // a 60 KB message in two 30 KB frames is within both limits and gets its reply
    let frame = |data: Vec<u8>, opcode: Data, last: bool| {
        Message::Frame(Frame::message(data, OpCode::Data(opcode), last))
    };
    let body = json!({"action": "ping", "pad": "y".repeat(60 * 1024)}).to_string();
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    client
        .send(frame(head.to_vec(), Data::Text, false))
        .await
        .unwrap();
    client
        .send(frame(tail.to_vec(), Data::Continue, true))
        .await
        .unwrap();
    assert_eq!(receive(&mut client).await, json!({"action": "pong"}));

    // five 30 KB frames make 150 KB: over the 128 KB message limit
    let chunk = vec![b' '; 30 * 1024];
    client
        .send(frame(chunk.clone(), Data::Text, false))
        .await
        .unwrap();
    for n in 1..5 {
        let last = n == 4;
        // the server may close before the last frames arrive
        if client
            .send(frame(chunk.clone(), Data::Continue, last))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, _) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Size);
}

#[tokio::test]
async fn pings_are_answered_at_the_protocol_level_and_by_the_protocol() {
    let gateway = memory_gateway().await;
    let mut client = connect(&gateway, "ivy").await;

    client
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(PATIENCE, client.next()).await.unwrap();
    match pong {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong frame, got {other:?}"),
    }
    assert_eq!(
        request(&mut client, json!({"action": "ping"})).await,
        json!({"action": "pong"})
    );
}

#[tokio::test]
async fn mistakes_get_error_frames() {
    let gateway = memory_gateway().await;
    let mut client = connect(&gateway, "jack").await;

    let unknown = request(&mut client, json!({"action": "dance"})).await;
    assert_eq!(unknown["error"], "unknown_action");
    assert!(unknown["details"].as_str().unwrap().contains("subscribe"));

    client.send(Message::text("{not json")).await.unwrap();
    assert_eq!(receive(&mut client).await["error"], "invalid_json");

    client
        .send(Message::binary(b"{\"action\":\"ping\"}".to_vec()))
        .await
        .unwrap();
    assert_eq!(receive(&mut client).await["error"], "invalid_json");

    let bad_topic = request(&mut client, json!({"action": "subscribe", "topic": "a b"})).await;
    assert_eq!(bad_topic["error"], "invalid_topic");
}

#[tokio::test]
async fn a_silent_connection_is_closed_with_1001_after_the_idle_timeout() {
    // GIVEN a short idle timeout, and a maximum duration that cannot come first
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        max_connection_duration: Duration::from_secs(3_600),
        ..Limits::default()
    };
    let gateway = start_gateway(limits, Storage::Memory).await;

    // WHEN a client says nothing, THEN it is closed as API Gateway closes idle connections
    let mut idle = connect(&gateway, "kim").await;
    let (code, reason) = close_frame(&mut idle).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "Going away"));
}

#[tokio::test]
async fn activity_keeps_a_connection_past_the_idle_timeout_but_not_past_the_maximum() {
    // GIVEN an idle timeout of 1.5 s and a maximum of 3.5 s
    let idle_timeout = Duration::from_millis(1_500);
    let limits = Limits {
        idle_timeout,
        max_connection_duration: Duration::from_millis(3_500),
        ..Limits::default()
    };
    let gateway = start_gateway(limits, Storage::Memory).await;

    // WHEN a client pings every 100 ms
    let mut chatty = connect(&gateway, "lee").await;
    let started = tokio::time::Instant::now();
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&mut chatty, json!({"action": "ping"})).await;
        match tokio::time::timeout(PATIENCE, chatty.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => continue,
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };

    // THEN it is still closed with 1001, at the maximum: only after two idle timeouts, which
    // its pings outlived (a lower bound: a slow machine makes it later, never earlier)
    assert_eq!(closed.code, CloseCode::Away);
    assert!(
        started.elapsed() >= 2 * idle_timeout,
        "{:?}",
        started.elapsed()
    );
}

/// 200 clients over 20 topics (each on two), 50 broadcasts: every subscriber gets every
/// message of its topics exactly once, and nothing else.
async fn many_clients_many_topics(gateway: &RunningGateway) {
    const CLIENTS: usize = 200;
    const TOPICS: usize = 20;
    const BROADCASTS: usize = 50;
    let topics_of = |client: usize| [client % TOPICS, (client * 7 + 3) % TOPICS];

    let mut clients = Vec::with_capacity(CLIENTS);
    for n in 0..CLIENTS {
        let mut client = connect(gateway, &format!("user{}", n % 50)).await;
        let [a, b] = topics_of(n);
        let names: Vec<String> = BTreeSet::from([a, b])
            .into_iter()
            .map(|t| format!("topic:{t}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        subscribe(&mut client, &names).await;
        clients.push(client);
    }

    let mut expected: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for b in 0..BROADCASTS {
        let topic = b % TOPICS;
        let (status, report) = broadcast(
            gateway,
            json!({"topic": format!("topic:{topic}"), "event": format!("e{b}")}),
        )
        .await;
        assert_eq!(status, 200);
        let subscribers: Vec<usize> = (0..CLIENTS)
            .filter(|c| topics_of(*c).contains(&topic))
            .collect();
        assert_eq!(
            report["delivered"],
            json!(subscribers.len()),
            "broadcast {b}"
        );
        for client in subscribers {
            expected.entry(client).or_default().insert(format!("e{b}"));
        }
    }

    // Each client reads as many frames as it should get (however long they take), then
    // anything else that arrives in a short while: a duplicate or a stray message.
    let counts: Vec<usize> = (0..CLIENTS)
        .map(|n| expected.get(&n).map_or(0, BTreeSet::len))
        .collect();
    let received = futures::future::join_all(clients.iter_mut().zip(counts).map(
        |(client, count)| async move {
            let mut frames = Vec::with_capacity(count);
            for _ in 0..count {
                frames.push(receive(client).await);
            }
            frames.extend(drain(client, Duration::from_millis(200)).await);
            frames
                .iter()
                .map(|frame| frame["event"].as_str().unwrap().to_owned())
                .collect::<Vec<String>>()
        },
    ))
    .await;
    for (n, events) in received.into_iter().enumerate() {
        let unique: BTreeSet<String> = events.iter().cloned().collect();
        assert_eq!(unique.len(), events.len(), "client {n} got a message twice");
        assert_eq!(
            unique,
            expected.remove(&n).unwrap_or_default(),
            "client {n} (topics {:?})",
            topics_of(n)
        );
    }
}

#[tokio::test]
async fn two_hundred_clients_twenty_topics_fifty_broadcasts_in_memory() {
    let gateway = memory_gateway().await;
    many_clients_many_topics(&gateway).await;
}

#[tokio::test]
async fn two_hundred_clients_twenty_topics_fifty_broadcasts_on_dynamodb_local() {
    let gateway = start_gateway(Limits::default(), dynamodb_storage()).await;
    many_clients_many_topics(&gateway).await;
}
