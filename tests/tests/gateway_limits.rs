//! The local gateway's protections against clients that would hold it: a TCP client that
//! never completes its handshake is dropped. Real sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsbridge_local::{Limits, Storage};
use wsbridge_tests::gateway::{PATIENCE, connect, start_gateway, subscribe};

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
