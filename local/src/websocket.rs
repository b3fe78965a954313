//! The WebSocket API's handshake as API Gateway runs it: the upgrade request runs `$connect`
//! and is refused with its status; an accepted one becomes a `Session`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use aws_lambda_events::encodings::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::info;
use wsbridge::clock::now_millis;
use wsbridge::handlers::connect;
use wsbridge::protocol::ConnectionId;

use crate::Bridge;
use crate::events::{self, ClientInfo};
use crate::outbox::outbox;
use crate::registry::LiveConnection;
use crate::session::Session;

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Sec-WebSocket-Key` of a well-formed upgrade request, or the answer to a malformed one.
fn websocket_key(headers: &HeaderMap) -> Result<HeaderValue, (StatusCode, &'static str)> {
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this is the WebSocket API: connect with a WebSocket client\n",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n"));
    };
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err((
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13\n",
        ));
    }
    Ok(key)
}

/// `GET /` (or `/{stage}`) with `Upgrade: websocket`.
pub(crate) async fn upgrade(
    State(bridge): State<Arc<Bridge>>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let key = match websocket_key(request.headers()) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(slot) = bridge.connections.claim() else {
        info!(ip = %address.ip(), max = bridge.connections.max(), "connect refused: at the connection limit");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the gateway holds its maximum of {} connections; retry later\n",
                bridge.connections.max()
            ),
        )
            .into_response();
    };

    let id = events::gateway_id();
    let connected_at = now_millis();
    let client = ClientInfo::new(address, request.headers());
    let handshake = Handshake {
        headers: request.headers(),
        query: request.uri().query(),
    };
    if let Err(refusal) = run_connect(&bridge, &id, connected_at, &client, handshake).await {
        return refusal.into_response();
    }

    // Registered before the 101 goes out, so a post right after the handshake is queued
    // rather than answered 410.
    let (outbox, inbox) = outbox(bridge.outbox_limits.clone());
    let last_active = Arc::new(AtomicI64::new(connected_at));
    bridge.connections.insert(
        id.clone(),
        LiveConnection {
            outbox,
            connected_at,
            client: client.clone(),
            last_active: last_active.clone(),
        },
    );
    let on_upgrade = hyper::upgrade::on(&mut request);
    let session = Session {
        bridge: bridge.clone(),
        id,
        connected_at,
        client,
        last_active,
        _slot: slot,
    };
    tokio::spawn(session.run(on_upgrade, inbox));
    switching_protocols(&key)
}

/// What `$connect` sees of the upgrade request. (Not the request itself: its body is not
/// `Sync`, so a borrow of it cannot be held across the handler's `.await`s.)
struct Handshake<'a> {
    headers: &'a HeaderMap,
    query: Option<&'a str>,
}

/// `$connect` for the handshake; its non-2xx answer is the handshake's answer.
async fn run_connect(
    bridge: &Bridge,
    id: &str,
    connected_at: i64,
    client: &ClientInfo,
    handshake: Handshake<'_>,
) -> Result<(), (StatusCode, String)> {
    let event = events::connect(
        &bridge.api,
        id,
        connected_at,
        client,
        handshake.headers,
        handshake.query,
    );
    let answer = connect::handle(&event, &bridge.verifier, &bridge.context()).await;
    if !(200..300).contains(&answer.status_code) {
        info!(connection_id = %id, status = answer.status_code, ip = %client.source_ip, "connect refused");
        let status = u16::try_from(answer.status_code)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match answer.body {
            Some(Body::Text(text)) => text,
            _ => String::new(),
        };
        return Err((status, body));
    }
    let user = bridge
        .store
        .get_connection(&ConnectionId::new(id))
        .await
        .ok()
        .flatten()
        .map(|c| c.user_id.to_string())
        .unwrap_or_default();
    info!(connection_id = %id, user_id = %user, ip = %client.source_ip, "connect");
    Ok(())
}

fn switching_protocols(key: &HeaderValue) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
