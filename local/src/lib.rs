//! The local gateway: the whole bridge on one machine. It serves API Gateway's WebSocket API
//! and management API (`@connections`) on one origin and the broadcast HTTP API on another,
//! and runs the same handlers the Lambda functions run.

mod access;
pub mod client;
mod demo;
pub mod events;
mod http_api;
mod limits;
mod management;
mod outbox;
mod registry;
mod serve;
mod session;
mod shards;
mod sigv4;
pub mod tokens;
mod websocket;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wsbridge::auth::TokenVerifier;
use wsbridge::channels::Channels;
use wsbridge::config::{AuthConfig, BroadcastConfig, ConfigError, FanoutConfig, SessionConfig};
use wsbridge::fanout::Fanout;
use wsbridge::handlers::Context;
use wsbridge::sender::{ApiGatewaySender, ConnectionSender};
use wsbridge::store::dynamodb::schema;
use wsbridge::store::{DynamoDbStore, MemoryStore, Store, StoreError};

pub use crate::access::check_exposure;
use crate::events::ApiInfo;
pub use crate::limits::Limits;
use crate::outbox::OutboxLimits;
use crate::registry::Registry;
pub use crate::sigv4::{Refusal as SigV4Refusal, SigV4Credentials};

/// A run of a background broadcast's part: as long as the template's broadcast function
/// may run.
pub const DEFAULT_SHARD_RUN_TIME: std::time::Duration = std::time::Duration::from_secs(29);

/// Where connections and subscriptions are kept.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In this process; gone when it stops. Nothing to install.
    Memory,
    /// A DynamoDB endpoint (e.g. DynamoDB Local); the table is created if absent.
    DynamoDb { endpoint: String, table: String },
}

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The WebSocket API and `@connections` (port 0 picks a free one).
    pub ws_address: SocketAddr,
    /// The broadcast HTTP API (port 0 picks a free one).
    pub http_address: SocketAddr,
    pub stage: String,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub broadcast: BroadcastConfig,
    /// How broadcasts, publishes and join/leave events fan out (`FANOUT_CONCURRENCY`).
    pub fanout: FanoutConfig,
    /// Channel namespaces and permissions (`--channels FILE`, `CHANNELS_CONFIG`).
    pub channels: Channels,
    /// When set (`--sigv4`), the broadcast API accepts only requests signed with these
    /// credentials, as the deployed API does in IAM mode.
    pub sigv4: Option<SigV4Credentials>,
    pub storage: Storage,
    /// How long one run of a background broadcast's part lasts before it continues itself:
    /// a Lambda invocation's time (the template's 29 s).
    pub shard_run_time: std::time::Duration,
}

impl GatewayConfig {
    /// Free loopback ports, API Gateway's limits, tokens signed with the public dev secret
    /// (no clock leeway), the in-memory store: what tests and benchmarks start.
    pub fn loopback() -> Self {
        Self {
            ws_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            stage: "local".into(),
            limits: Limits::default(),
            auth: wsbridge::dev::auth_config(),
            session: SessionConfig::default(),
            broadcast: BroadcastConfig::default(),
            fanout: FanoutConfig::default(),
            channels: Channels::default(),
            sigv4: None,
            storage: Storage::Memory,
            shard_run_time: DEFAULT_SHARD_RUN_TIME,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on {address}, off loopback, without {missing}: anyone who can reach \
         it could connect with a token they sign themselves or broadcast to every client. Set \
         them, or listen on loopback only (the default, --bind 127.0.0.1)"
    )]
    Exposed {
        address: SocketAddr,
        missing: String,
    },
    #[error("limits: {0}")]
    Limits(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// What every request handler shares.
pub(crate) struct Bridge {
    pub api: ApiInfo,
    pub limits: Limits,
    pub store: Arc<dyn Store>,
    pub verifier: TokenVerifier,
    pub session: SessionConfig,
    pub broadcast: BroadcastConfig,
    pub fanout: Fanout,
    pub channels: Channels,
    pub sigv4: Option<SigV4Credentials>,
    pub sender: Arc<dyn ConnectionSender>,
    pub connections: Registry,
    pub outbox_limits: Arc<OutboxLimits>,
    /// Runs the parts of background broadcasts as tasks.
    pub launcher: shards::TaskLauncher,
    /// How long one run of such a part lasts, as a Lambda invocation's time does.
    pub shard_run_time: std::time::Duration,
}

impl Bridge {
    /// What the handlers work with, as a Lambda function builds it per invocation (no
    /// deadline: handlers here run to the end).
    pub(crate) fn context(&self) -> Context<'_> {
        Context {
            store: self.store.as_ref(),
            sender: self.sender.clone(),
            session: &self.session,
            channels: &self.channels,
            fanout: &self.fanout,
            deadline: None,
        }
    }
}

/// A started gateway; dropping it stops the listeners.
pub struct RunningGateway {
    pub ws_address: SocketAddr,
    pub http_address: SocketAddr,
    bridge: Arc<Bridge>,
    servers: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// `ws://…` URL of the WebSocket API.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.ws_address)
    }

    /// `http://…` base URL of the management API (same origin as the WebSocket API).
    pub fn management_url(&self) -> String {
        format!("http://{}", self.ws_address)
    }

    /// `http://…` base URL of the broadcast HTTP API.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_address)
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.bridge.connections.len()
    }

    /// Bytes posted to connection `id` and not yet written to its socket; `None` once it is
    /// closed.
    pub fn outbox_bytes(&self, id: &str) -> Option<usize> {
        self.bridge
            .connections
            .with(id, |c| c.outbox.queued_bytes())
    }

    /// The most bytes any one connection's outbox has held since the gateway started: never
    /// more than `Limits::outbox_bytes`.
    pub fn peak_outbox_bytes(&self) -> usize {
        self.bridge.outbox_limits.peak_bytes()
    }

    /// The store the gateway runs on.
    pub fn store(&self) -> Arc<dyn Store> {
        self.bridge.store.clone()
    }

    /// Serves until the process is stopped.
    pub async fn wait(mut self) {
        for server in self.servers.drain(..) {
            let _ = server.await;
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// SDK configuration for local endpoints (DynamoDB Local, this gateway's `@connections`),
/// the one the gateway and the tests share: `AWS_REGION` or `us-east-1`, and
/// dummy credentials unless the environment has real ones (DynamoDB Local accepts any);
/// nothing is read from the machine's AWS profile.
pub fn local_sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        ));
    let credentials = match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(key), Ok(secret)) => Credentials::new(key, secret, None, None, "environment"),
        _ => Credentials::new("local", "local", None, None, "wsbridge-local"),
    };
    builder = builder.credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder.build()
}

async fn bind(address: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| GatewayError::Bind { address, source })
}

/// Where the gateway's own broadcasts reach its `@connections`: the listening address, or
/// loopback when it listens on every interface (an unspecified address is not one to dial).
fn management_address(ws_address: SocketAddr) -> SocketAddr {
    let ip = match ws_address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, ws_address.port())
}

async fn open_store(storage: &Storage) -> Result<Arc<dyn Store>, GatewayError> {
    Ok(match storage {
        Storage::Memory => Arc::new(MemoryStore::new()),
        Storage::DynamoDb { endpoint, table } => {
            let client = aws_sdk_dynamodb::Client::new(&local_sdk_config(Some(endpoint)));
            schema::create_table(&client, table).await?;
            // Pages of 1 000 rows, as the functions read them.
            Arc::new(DynamoDbStore::new(client, table.clone()).with_page_size(1_000))
        }
    })
}

/// The WebSocket API and, on the same origin, `@connections` (for this machine only).
fn ws_app(bridge: Arc<Bridge>) -> Router {
    let management = Router::new()
        .route(
            "/@connections/{id}",
            post(management::post)
                .get(management::get)
                .delete(management::delete),
        )
        .route(
            "/{stage}/@connections/{id}",
            post(management::post_staged)
                .get(management::get_staged)
                .delete(management::delete_staged),
        )
        .route_layer(middleware::from_fn(management::this_machine_only));
    Router::new()
        .route("/", get(websocket::upgrade))
        .route("/{stage}", get(websocket::upgrade))
        .merge(management)
        .with_state(bridge)
}

/// The broadcast HTTP API, with the chat demo beside it (exact paths the API has no use for).
fn http_app(bridge: Arc<Bridge>, auth: &AuthConfig, ws_address: SocketAddr) -> Router {
    let ws_url = format!("ws://{}", management_address(ws_address));
    Router::new()
        .merge(demo::routes(auth, &ws_url))
        .fallback(http_api::handle)
        .with_state(bridge)
}

/// Binds both listeners, prepares the store, and serves in the background. Refuses, before
/// binding anything, a configuration that is unsafe off loopback (`check_exposure`).
pub async fn start(config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    check_exposure(&config)?;
    config.limits.check()?;
    let ws_listener = bind(config.ws_address).await?;
    let http_listener = bind(config.http_address).await?;
    let local_address = |listener: &TcpListener, address| {
        listener
            .local_addr()
            .map_err(|source| GatewayError::Bind { address, source })
    };
    let ws_address = local_address(&ws_listener, config.ws_address)?;
    let http_address = local_address(&http_listener, config.http_address)?;

    // Handlers post through the real management API client, to this gateway's own
    // `@connections`, whatever endpoint a connection row stores.
    let sender = ApiGatewaySender::new(
        &local_sdk_config(None),
        Some(format!("http://{}", management_address(ws_address))),
    );
    let limits = config.limits.clone();
    let (launcher, parts) = shards::launcher();
    let bridge = Arc::new(Bridge {
        api: ApiInfo {
            api_id: "local".into(),
            stage: config.stage.clone(),
            domain: ws_address.to_string(),
        },
        store: open_store(&config.storage).await?,
        verifier: TokenVerifier::new(&config.auth)?,
        session: config.session,
        broadcast: config.broadcast.clone(),
        fanout: Fanout::new(config.fanout),
        channels: config.channels.clone(),
        sigv4: config.sigv4.clone(),
        sender: Arc::new(sender),
        connections: Registry::new(limits.max_connections),
        outbox_limits: Arc::new(OutboxLimits::new(
            limits.outbox_messages,
            limits.outbox_bytes,
        )),
        limits,
        launcher,
        shard_run_time: config.shard_run_time,
    });

    let head_timeout = bridge.limits.handshake_timeout;
    let http_app = http_app(bridge.clone(), &config.auth, ws_address);
    let servers = vec![
        tokio::spawn(serve::serve(
            ws_listener,
            ws_app(bridge.clone()),
            head_timeout,
        )),
        tokio::spawn(serve::serve(http_listener, http_app, head_timeout)),
        tokio::spawn(shards::run_queue(Arc::downgrade(&bridge), parts)),
    ];
    Ok(RunningGateway {
        ws_address,
        http_address,
        bridge,
        servers,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode};
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::connect_async;
    use tokio_tungstenite::tungstenite::Message;
    use tower::ServiceExt;
    use wsbridge::dev::{Claims, DEV_SECRET, sign_hs256};

    use super::*;
    use crate::serve::AcceptedOn;

    #[test]
    fn the_gateway_reaches_its_own_connections_api_on_an_address_it_can_dial() {
        let on = |address: &str| management_address(address.parse().unwrap()).to_string();
        assert_eq!(on("0.0.0.0:3001"), "127.0.0.1:3001");
        assert_eq!(on("[::]:3001"), "[::1]:3001");
        assert_eq!(on("192.0.2.10:3001"), "192.0.2.10:3001");
        assert_eq!(on("127.0.0.1:3001"), "127.0.0.1:3001");
    }

    #[tokio::test]
    async fn the_connections_api_answers_this_machine_only() {
        // GIVEN a running gateway with one client
        let gateway = start(GatewayConfig::loopback()).await.unwrap();
        let token = sign_hs256(DEV_SECRET, &Claims::new("alice", Duration::from_secs(60))).unwrap();
        let url = format!("{}/?token={token}", gateway.ws_url());
        let (mut client, _) = connect_async(url).await.unwrap();
        client
            .send(Message::text(r#"{"action":"whoami"}"#))
            .await
            .unwrap();
        let whoami = client.next().await.unwrap().unwrap().into_text().unwrap();
        let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
        let id = whoami["connection_id"].as_str().unwrap().to_owned();
        let app = ws_app(gateway.bridge.clone());
        let post_from = |peer: &str, body: &'static str| {
            Request::post(format!("/@connections/{id}"))
                .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
                .extension(AcceptedOn(gateway.ws_address))
                .body(Body::from(body))
                .unwrap()
        };

        // WHEN another machine posts to it, THEN it gets API Gateway's 403 for an unsigned call
        let response = app
            .clone()
            .oneshot(post_from("203.0.113.5:40000", r#"{"from":"afar"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["x-amzn-ErrorType"], "ForbiddenException");

        // AND the same post from this machine is delivered, and is the only one that was
        let response = app
            .oneshot(post_from("127.0.0.1:40000", r#"{"from":"here"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let delivered = client.next().await.unwrap().unwrap().into_text().unwrap();
        assert_eq!(delivered.as_str(), r#"{"from":"here"}"#);
        assert_eq!(gateway.peak_outbox_bytes(), r#"{"from":"here"}"#.len());
    }
}
