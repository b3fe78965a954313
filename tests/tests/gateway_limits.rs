//! The local gateway's protections against clients that would hold it: one that stops
//! reading (a bounded outbox, 429 beyond it, dropped after the send timeout), too many
//! connections (503), and a TCP client that never completes its handshake (dropped). Real
//! sockets and the real management API client; the slow-client cases on both stores.

use std::time::Duration;

use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;
use wsbridge::protocol::ConnectionId;
use wsbridge_local::{Limits, Storage};
use wsbridge_tests::gateway::{
    PATIENCE, broadcast, connect, connect_then_stop_reading, dynamodb_storage, eventually, get,
    management_client, receive, request, start_gateway, subscribe, token,
};

/// Each connection's outbox: room for two 100 KB posts, not three.
const OUTBOX_BYTES: usize = 256 * 1024;
const POST_BYTES: usize = 100 * 1024;

fn slow_client_limits(send_timeout: Duration) -> Limits {
    Limits {
        outbox_bytes: OUTBOX_BYTES,
        send_timeout,
        ..Limits::default()
    }
}

/// One 100 KB post to `id`: `Ok`, or the service's refusal.
async fn post(management: &Client, id: &str) -> Result<(), PostToConnectionError> {
    management
        .post_to_connection()
        .connection_id(id)
        .data(Blob::new(vec![b'x'; POST_BYTES]))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.into_service_error())
}

/// A client that stops reading fills its outbox up to the bound and no further; posts beyond
/// it get 429 while everyone else is served as usual.
async fn a_client_that_stops_reading_is_refused_beyond_its_outbox(storage: Storage) {
    // GIVEN a client that has stopped reading and a reader, both on topic "t", and a send
    // timeout long enough never to end the stuck client during the test
    let gateway = start_gateway(slow_client_limits(Duration::from_secs(3_600)), storage).await;
    let (stuck, stuck_id) = connect_then_stop_reading(&gateway, "sloth", "t").await;
    let mut reader = connect(&gateway, "hare").await;
    subscribe(&mut reader, &["t"]).await;
    let management = management_client(&gateway);

    // WHEN @connections posts 100 KB messages to the stuck client until one is refused
    let mut accepted = 0;
    let refused = loop {
        match post(&management, &stuck_id).await {
            Ok(()) => accepted += 1,
            Err(refusal) => break refusal,
        }
        let queued = gateway.outbox_bytes(&stuck_id).expect("still connected");
        assert!(queued <= OUTBOX_BYTES, "{queued} bytes queued");
        // the kernel's buffers take a few MB at most before the socket blocks
        assert!(accepted < 1_000, "{accepted} posts and never refused");
    };

    // THEN the refusal is API Gateway's 429, given once the outbox was full: its peak is
    // within one post of the bound, and never beyond it
    assert!(refused.is_limit_exceeded_exception(), "{refused:?}");
    let peak = gateway.peak_outbox_bytes();
    assert!(peak <= OUTBOX_BYTES, "peak {peak}");
    assert!(peak + POST_BYTES > OUTBOX_BYTES, "peak {peak}");

    // AND the reader still gets replies, and a broadcast as large as the refused post: the
    // reader receives it; the stuck client's 429s are taken for a passing storm first (the
    // post goes on in the background, 202), and failed when they outlast a second run
    assert_eq!(
        request(&mut reader, json!({"action": "ping"})).await,
        json!({"action": "pong"})
    );
    let pad = "y".repeat(POST_BYTES);
    let (status, accepted) = broadcast(
        &gateway,
        json!({"topic": "t", "message": {"still": "here", "pad": pad}}),
    )
    .await;
    assert_eq!(
        (status, &accepted["delivered"]),
        (202, &json!(1)),
        "{accepted}"
    );
    assert_eq!(receive(&mut reader).await["still"], "here");
    let id = accepted["id"].as_str().unwrap();
    let report = loop {
        let (_, status) = get(&gateway, &format!("/broadcasts/{id}")).await;
        if status["status"] == "done" {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            &report["recipients"],
            &report["delivered"],
            &report["failed"]
        ),
        (&json!(2), &json!(1), &json!(1)),
        "{report}"
    );
    // AND the stuck client is still connected, its outbox within the bound
    let queued = gateway.outbox_bytes(&stuck_id).expect("still connected");
    assert!(queued <= OUTBOX_BYTES, "{queued}");
    drop(stuck);
}

/// After the send timeout a client that does not read is dropped, `$disconnect` runs, and
/// posts to it are 410.
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout(storage: Storage) {
    // GIVEN a gateway that gives a client 500 ms to take a message, a client that has
    // stopped reading and a reader, both on topic "t"
    let gateway = start_gateway(slow_client_limits(Duration::from_millis(500)), storage).await;
    let (_stuck, stuck_id) = connect_then_stop_reading(&gateway, "sloth", "t").await;
    let mut reader = connect(&gateway, "hare").await;
    subscribe(&mut reader, &["t"]).await;
    let management = management_client(&gateway);

    // WHEN posts keep coming until the gateway gives up on it
    let started = tokio::time::Instant::now();
    loop {
        match post(&management, &stuck_id).await {
            Ok(()) => {}
            Err(full) if full.is_limit_exceeded_exception() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(gone) if gone.is_gone_exception() => break,
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < PATIENCE, "never dropped");
    }

    // THEN $disconnect has removed its rows, and the outbox never outgrew its bound
    let store = gateway.store();
    eventually("the dropped connection's rows are gone", || {
        let store = store.clone();
        let id = ConnectionId::new(stuck_id.as_str());
        async move { store.get_connection(&id).await.unwrap().is_none() }
    })
    .await;
    assert_eq!(gateway.outbox_bytes(&stuck_id), None);
    assert!(gateway.peak_outbox_bytes() <= OUTBOX_BYTES);
    // AND the reader is served as before; the topic has only it left
    assert_eq!(
        request(&mut reader, json!({"action": "ping"})).await,
        json!({"action": "pong"})
    );
    let (_, report) = broadcast(&gateway, json!({"topic": "t", "event": "after"})).await;
    assert_eq!(
        (&report["recipients"], &report["delivered"]),
        (&json!(1), &json!(1)),
        "{report}"
    );
    assert_eq!(receive(&mut reader).await["event"], "after");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_refused_beyond_its_outbox_in_memory() {
    a_client_that_stops_reading_is_refused_beyond_its_outbox(Storage::Memory).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_refused_beyond_its_outbox_on_dynamodb_local() {
    a_client_that_stops_reading_is_refused_beyond_its_outbox(dynamodb_storage()).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout_in_memory() {
    a_client_that_stops_reading_is_dropped_after_the_send_timeout(Storage::Memory).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout_on_dynamodb_local() {
    a_client_that_stops_reading_is_dropped_after_the_send_timeout(dynamodb_storage()).await;
}

#[tokio::test]
async fn handshakes_beyond_the_connection_cap_get_503_until_a_connection_ends() {
    // GIVEN a gateway for two connections, holding two
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let gateway = start_gateway(limits, Storage::Memory).await;
    let first = connect(&gateway, "ann").await;
    let _second = connect(&gateway, "ben").await;
    let url = format!("{}/?token={}", gateway.ws_url(), token("cat"));

    // WHEN a third client handshakes, THEN it is refused with 503 before `$connect` runs
    match connect_async(&url).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    assert_eq!(gateway.store().count_connections().await.unwrap(), 2);
    assert_eq!(gateway.open_connections(), 2);

    // AND once a connection ends, a newcomer gets in
    drop(first);
    let started = tokio::time::Instant::now();
    let mut third = loop {
        match connect_async(&url).await {
            Ok((client, _)) => break client,
            Err(WsError::Http(response)) if response.status().as_u16() == 503 => {
                assert!(started.elapsed() < PATIENCE, "the slot was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    };
    subscribe(&mut third, &["in"]).await;
    assert_eq!(gateway.open_connections(), 2);
}

/// Reads until the peer closes the connection; `true` if it did within the patience window.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        // whatever the server says before closing (e.g. an error status) is skipped
        while let Ok(1..) = stream.read(&mut buffer).await {}
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn tcp_clients_that_never_complete_the_handshake_are_dropped() {
    // GIVEN a gateway that gives a client 300 ms for its request head
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let gateway = start_gateway(limits, Storage::Memory).await;

    // WHEN one client connects and says nothing, and another stops halfway through its
    // upgrade request
    let mut silent = TcpStream::connect(gateway.ws_address).await.unwrap();
    let mut halfway = TcpStream::connect(gateway.ws_address).await.unwrap();
    halfway
        .write_all(b"GET /?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();

    // THEN the gateway closes both connections
    assert!(
        closed_by_peer(&mut silent).await,
        "the silent client is held"
    );
    assert!(
        closed_by_peer(&mut halfway).await,
        "the halfway client is held"
    );
    // AND a client that completes its handshake is served
    let mut client = connect(&gateway, "dot").await;
    subscribe(&mut client, &["ok"]).await;
    assert_eq!(gateway.open_connections(), 1);
}
