//! The WebSocket API as API Gateway runs it: the handshake runs `$connect` and is refused
//! with its status; each message runs `$default` and its response body goes back as the route
//! response; any end of the connection runs `$disconnect`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lambda_events::encodings::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{info, warn};
use wsbridge::clock::now_millis;
use wsbridge::handlers::{connect, default, disconnect};
use wsbridge::protocol::ConnectionId;

use crate::Bridge;
use crate::events::{self, ClientInfo};

/// What the management API asks a connection's task to do.
pub(crate) enum Outbound {
    Data(Vec<u8>),
    Close,
}

/// A connection the gateway holds open, as the management API sees it.
pub(crate) struct LiveConnection {
    pub outbox: mpsc::Sender<Outbound>,
    pub connected_at: i64,
    pub client: ClientInfo,
    pub last_active: Arc<AtomicI64>,
}

/// Open connections by id.
#[derive(Default)]
pub(crate) struct Registry(Mutex<HashMap<String, LiveConnection>>);

impl Registry {
    /// Runs `f` on the connection, if open. The lock is held only for `f`, never across an
    /// `.await`.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&LiveConnection) -> T) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(f)
    }

    fn insert(&self, id: String, connection: LiveConnection) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, connection);
    }

    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `GET /` (or `/{stage}`) with `Upgrade: websocket`.
pub(crate) async fn upgrade(
    State(bridge): State<Arc<Bridge>>,
    ConnectInfo(address): ConnectInfo<std::net::SocketAddr>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this is the WebSocket API: connect with a WebSocket client\n",
        )
            .into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return (StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n").into_response();
    };
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13\n",
        )
            .into_response();
    }

    let id = events::gateway_id();
    let connected_at = now_millis();
    let client = ClientInfo::new(address, headers);
    let event = events::connect(
        &bridge.api,
        &id,
        connected_at,
        &client,
        headers,
        request.uri().query(),
    );
    let answer = connect::handle(
        &event,
        &bridge.verifier,
        bridge.store.as_ref(),
        &bridge.session,
    )
    .await;
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
        return (status, body).into_response();
    }
    let user = bridge
        .store
        .get_connection(&ConnectionId::new(id.as_str()))
        .await
        .ok()
        .flatten()
        .map(|c| c.user_id.to_string())
        .unwrap_or_default();
    info!(connection_id = %id, user_id = %user, ip = %client.source_ip, "connect");

    // Registered before the 101 goes out, so a post right after the handshake is queued
    // rather than answered 410.
    let (outbox, inbox) = mpsc::channel(bridge.limits.outbox_capacity);
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
    };
    tokio::spawn(async move {
        let (status, reason) = match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_frame_size(Some(session.bridge.limits.max_frame_bytes))
                    .max_message_size(Some(session.bridge.limits.max_message_bytes));
                let mut socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session.drive(&mut socket, inbox).await
            }
            Err(e) => {
                warn!(connection_id = %session.id, error = %e, "upgrade failed");
                (1006, "Connection upgrade failed".to_owned())
            }
        };
        session.finish(status, &reason).await;
    });

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        response_headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// One open connection's task.
struct Session {
    bridge: Arc<Bridge>,
    id: String,
    connected_at: i64,
    client: ClientInfo,
    last_active: Arc<AtomicI64>,
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

impl Session {
    /// Serves the socket until it ends; returns the close code and reason `$disconnect`
    /// reports.
    async fn drive(
        &self,
        socket: &mut Socket,
        mut inbox: mpsc::Receiver<Outbound>,
    ) -> (u16, String) {
        let limits = &self.bridge.limits;
        let deadline = sleep(limits.max_connection_duration);
        tokio::pin!(deadline);
        let mut idle_until = Instant::now() + limits.idle_timeout;
        loop {
            tokio::select! {
                frame = socket.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(WsError::Capacity(e))) => {
                            info!(connection_id = %self.id, error = %e, "frame or message too big");
                            return close(socket, CloseCode::Size, "Message too big").await;
                        }
                        Some(Err(WsError::Protocol(e))) => {
                            info!(connection_id = %self.id, error = %e, "protocol error");
                            return close(socket, CloseCode::Protocol, "Protocol error").await;
                        }
                        Some(Err(_)) | None => {
                            return (1006, "Connection closed abnormally".into());
                        }
                    };
                    idle_until = Instant::now() + limits.idle_timeout;
                    self.last_active.store(now_millis(), Ordering::Relaxed);
                    match frame {
                        Message::Text(text) => self.route(socket, text.as_str(), false).await,
                        Message::Binary(bytes) => {
                            self.route(socket, &STANDARD.encode(&bytes), true).await
                        }
                        Message::Close(frame) => {
                            // tungstenite answers the close frame on the next flush.
                            let _ = socket.close(None).await;
                            return match frame {
                                Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
                                None => (1005, "Client-side close frame status not set".into()),
                            };
                        }
                        // Pings are answered by tungstenite itself, as API Gateway does.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                outbound = inbox.recv() => match outbound {
                    Some(Outbound::Data(data)) => {
                        let message = match String::from_utf8(data) {
                            Ok(text) => Message::text(text),
                            Err(e) => Message::binary(e.into_bytes()),
                        };
                        if socket.send(message).await.is_err() {
                            return (1006, "Connection closed abnormally".into());
                        }
                    }
                    Some(Outbound::Close) | None => {
                        return close(socket, CloseCode::Normal, "Connection deleted").await;
                    }
                },
                () = sleep_until(idle_until) => {
                    return close(socket, CloseCode::Away, "Going away").await;
                }
                () = &mut deadline => {
                    return close(socket, CloseCode::Away, "Going away").await;
                }
            }
        }
    }

    /// Runs `$default` for one message and sends the route response back.
    async fn route(&self, socket: &mut Socket, body: &str, is_base64_encoded: bool) {
        let event = events::message(
            &self.bridge.api,
            &self.id,
            self.connected_at,
            &self.client,
            body,
            is_base64_encoded,
        );
        let answer =
            default::handle(&event, self.bridge.store.as_ref(), &self.bridge.session).await;
        let reply = match answer.body {
            Some(Body::Text(text)) => Some(text),
            _ => None,
        };
        // The reply tells what the message asked for (`subscribed`, `pong`, an error code)
        // without reading the message a second time.
        info!(
            connection_id = %self.id,
            status = answer.status_code,
            reply = reply.as_deref().unwrap_or("-"),
            "message"
        );
        if let Some(reply) = reply {
            let _ = socket.send(Message::text(reply)).await;
        }
    }

    async fn finish(self, status: u16, reason: &str) {
        self.bridge.connections.remove(&self.id);
        let event = events::disconnect(
            &self.bridge.api,
            &self.id,
            self.connected_at,
            &self.client,
            status,
            reason,
        );
        disconnect::handle(&event, self.bridge.store.as_ref()).await;
        info!(connection_id = %self.id, status, reason, "disconnect");
    }
}

/// Sends a close frame and waits (briefly) for the client's answer.
async fn close(socket: &mut Socket, code: CloseCode, reason: &str) -> (u16, String) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    let _ = timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    (u16::from(code), reason.to_owned())
}
