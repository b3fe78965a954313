//! The accept loop both listeners run: `axum::serve`'s job, plus the one thing it cannot be
//! told, a deadline for each request head. Without it a client that opens a TCP connection
//! and never completes its request (an HTTP upgrade included) holds a socket and a task for
//! as long as it likes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::Service;
use tracing::{debug, warn};

/// The local address a connection was accepted on, for handlers that must tell this
/// machine's clients from others.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptedOn(pub SocketAddr);

/// Serves `app` until the task is aborted. Each request head (the first, and every one after
/// it on a kept-alive connection) must arrive within `head_timeout`, or the connection is
/// closed. Handlers see the peer as `ConnectInfo<SocketAddr>` and the local address as
/// `AcceptedOn`.
pub(crate) async fn serve(listener: TcpListener, app: Router, head_timeout: Duration) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Mostly out of file descriptors: wait for some to be freed instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(AcceptedOn(local));
                app.clone().call(request)
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
