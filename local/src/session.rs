//! One open connection's task, as API Gateway runs a connection: each message runs
//! `$default` and its response body goes back as the route response; posts from
//! `@connections` are written out; idle and overlong connections are closed; any end of the
//! connection runs `$disconnect`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use aws_lambda_events::encodings::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{info, warn};
use wsbridge::clock::now_millis;
use wsbridge::handlers::{default, disconnect};

use crate::Bridge;
use crate::events::{self, ClientInfo};
use crate::outbox::{Inbox, Outbound};
use crate::registry::Slot;

/// How long a close waits for the client's own close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The reason `$disconnect` reports for a client dropped because it stopped reading.
const NOT_READING: &str = "Client not reading: send timed out";

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How a connection ended: the close code and reason `$disconnect` reports.
type Ending = (u16, String);

fn abnormal() -> Ending {
    (1006, "Connection closed abnormally".into())
}

pub(crate) struct Session {
    pub bridge: Arc<Bridge>,
    pub id: String,
    pub connected_at: i64,
    pub client: ClientInfo,
    pub last_active: Arc<AtomicI64>,
    /// Held until the task ends, then freed for another connection.
    pub _slot: Slot,
}

impl Session {
    /// Completes the upgrade, serves the socket until it ends, then runs `$disconnect`.
    pub async fn run(self, on_upgrade: OnUpgrade, mut inbox: Inbox) {
        let (status, reason) = match on_upgrade.await {
            Ok(upgraded) => {
                let limits = &self.bridge.limits;
                let config = WebSocketConfig::default()
                    .max_frame_size(Some(limits.max_frame_bytes))
                    .max_message_size(Some(limits.max_message_bytes));
                let mut socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                self.drive(&mut socket, &mut inbox).await
            }
            Err(e) => {
                warn!(connection_id = %self.id, error = %e, "upgrade failed");
                (1006, "Connection upgrade failed".to_owned())
            }
        };
        self.finish(status, &reason).await;
    }

    /// Serves the socket until it ends. Every send is bounded by `send_timeout`, so the
    /// idle and maximum-duration timers are never stuck behind a client that does not read.
    async fn drive(&self, socket: &mut Socket, inbox: &mut Inbox) -> Ending {
        let limits = &self.bridge.limits;
        let deadline = sleep(limits.max_connection_duration);
        tokio::pin!(deadline);
        let mut idle_until = Instant::now() + limits.idle_timeout;
        loop {
            // Biased, in this order: the connection's time is up before anything else; what
            // was posted to it goes out before the next client frame is read, so a reply
            // never overtakes a message posted before its frame arrived (clients and tests
            // can rely on "pong came, nothing was pending"); the idle timer last, as any
            // traffic postpones it.
            let step = tokio::select! {
                biased;
                () = &mut deadline => Err(self.close(socket, CloseCode::Away, "Going away").await),
                outbound = inbox.recv() => self.on_outbound(socket, inbox, outbound).await,
                frame = socket.next() => {
                    if matches!(frame, Some(Ok(_))) {
                        idle_until = Instant::now() + limits.idle_timeout;
                        self.last_active.store(now_millis(), Ordering::Relaxed);
                    }
                    self.on_frame(socket, frame).await
                }
                () = sleep_until(idle_until) => {
                    Err(self.close(socket, CloseCode::Away, "Going away").await)
                }
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// A frame from the client (or the end of the stream); `Err` ends the connection.
    async fn on_frame(
        &self,
        socket: &mut Socket,
        frame: Option<Result<Message, WsError>>,
    ) -> Result<(), Ending> {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(WsError::Capacity(e))) => {
                info!(connection_id = %self.id, error = %e, "frame or message too big");
                return Err(self.close(socket, CloseCode::Size, "Message too big").await);
            }
            Some(Err(WsError::Protocol(e))) => {
                info!(connection_id = %self.id, error = %e, "protocol error");
                return Err(self
                    .close(socket, CloseCode::Protocol, "Protocol error")
                    .await);
            }
            Some(Err(_)) | None => return Err(abnormal()),
        };
        let reply = match frame {
            Message::Text(text) => self.route(text.as_str(), false).await,
            Message::Binary(bytes) => self.route(&STANDARD.encode(&bytes), true).await,
            Message::Close(frame) => {
                // tungstenite answers the close frame on this flush.
                let _ = timeout(self.bridge.limits.send_timeout, socket.close(None)).await;
                return Err(match frame {
                    Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
                    None => (1005, "Client-side close frame status not set".into()),
                });
            }
            // Pings are answered by tungstenite itself, as API Gateway does.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        };
        match reply {
            Some(reply) => self.send(socket, Message::text(reply)).await,
            None => Ok(()),
        }
    }

    /// What `@connections` asked for; `Err` ends the connection.
    async fn on_outbound(
        &self,
        socket: &mut Socket,
        inbox: &Inbox,
        outbound: Option<Outbound>,
    ) -> Result<(), Ending> {
        match outbound {
            Some(Outbound::Data(data)) => {
                let bytes = data.len();
                let message = match String::from_utf8(data) {
                    Ok(text) => Message::text(text),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                let sent = self.send(socket, message).await;
                inbox.done(bytes);
                sent
            }
            Some(Outbound::Close) | None => Err(self
                .close(socket, CloseCode::Normal, "Connection deleted")
                .await),
        }
    }

    /// Writes one message. A client that has not taken it after `send_timeout` is not
    /// reading: its connection is dropped (a close frame could not reach it either), so it
    /// holds neither this task nor its outbox any longer.
    async fn send(&self, socket: &mut Socket, message: Message) -> Result<(), Ending> {
        let limit = self.bridge.limits.send_timeout;
        match timeout(limit, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(abnormal()),
            Err(_) => {
                warn!(connection_id = %self.id, timeout_ms = limit.as_millis(), "client not reading: connection dropped");
                Err((1006, NOT_READING.into()))
            }
        }
    }

    /// Runs `$default` for one message; returns the route response to send back, if any.
    async fn route(&self, body: &str, is_base64_encoded: bool) -> Option<String> {
        let event = events::message(
            &self.bridge.api,
            &self.id,
            self.connected_at,
            &self.client,
            body,
            is_base64_encoded,
        );
        let answer = default::handle(&event, &self.bridge.context()).await;
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
        reply
    }

    /// Sends a close frame and waits (briefly) for the client's answer; both bounded, as a
    /// client that does not read would otherwise hold the close forever.
    async fn close(&self, socket: &mut Socket, code: CloseCode, reason: &str) -> Ending {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        let close = socket.send(Message::Close(Some(frame)));
        if let Ok(Ok(())) = timeout(self.bridge.limits.send_timeout, close).await {
            let _ = timeout(CLOSE_WAIT, async {
                while let Some(Ok(_)) = socket.next().await {}
            })
            .await;
        }
        (u16::from(code), reason.to_owned())
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
        disconnect::handle(&event, &self.bridge.context()).await;
        info!(connection_id = %self.id, status, reason, "disconnect");
    }
}
