//! `wsbridge-local`: run the whole bridge on this machine, mint dev tokens, try it from a
//! terminal.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wsbridge::channels::{Channels, Grants, TopicPattern};
use wsbridge::config::{AuthConfig, BroadcastConfig, ChannelsConfig, FanoutConfig, SessionConfig};
use wsbridge::dev::local_auth_config;
use wsbridge::protocol::UserId;
use wsbridge_local::{GatewayConfig, Limits, RunningGateway, SigV4Credentials, Storage, tokens};

/// The whole wsbridge on one machine: API Gateway's WebSocket API and @connections
/// management API, and the broadcast HTTP API, running the same handlers as the Lambda
/// functions. JWT and limit settings read the same environment variables as the functions
/// (JWT_SECRET defaults to the public dev secret, so listening off loopback needs JWT_SECRET
/// and BROADCAST_API_KEY set).
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on. Loopback by default; any other address needs JWT_SECRET and
    /// BROADCAST_API_KEY set (the dev secret is public), and @connections still answers
    /// this machine only.
    #[arg(long, env = "WSBRIDGE_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Port of the WebSocket API and the @connections management API.
    #[arg(long, env = "WSBRIDGE_WS_PORT", default_value_t = 3001)]
    ws_port: u16,
    /// Port of the broadcast HTTP API.
    #[arg(long, env = "WSBRIDGE_HTTP_PORT", default_value_t = 3000)]
    http_port: u16,
    /// Stage name reported in events.
    #[arg(long, env = "WSBRIDGE_STAGE", default_value = "local")]
    stage: String,
    /// Keep connections in DynamoDB at this endpoint (e.g. DynamoDB Local) instead of memory;
    /// the table is created if absent.
    #[arg(long, env = "WSBRIDGE_DYNAMODB_ENDPOINT")]
    dynamodb_endpoint: Option<String>,
    /// Table name with --dynamodb-endpoint.
    #[arg(long, env = "TABLE_NAME", default_value = "wsbridge-local")]
    table: String,
    /// Largest WebSocket frame in bytes (API Gateway: 32 KB).
    #[arg(long, env = "WSBRIDGE_MAX_FRAME_BYTES", default_value_t = 32 * 1024)]
    max_frame_bytes: usize,
    /// Largest WebSocket message in bytes (API Gateway: 128 KB).
    #[arg(long, env = "WSBRIDGE_MAX_MESSAGE_BYTES", default_value_t = 128 * 1024)]
    max_message_bytes: usize,
    /// Seconds without a client frame before the connection is closed (API Gateway: 600).
    #[arg(long, env = "WSBRIDGE_IDLE_TIMEOUT_SECONDS", default_value_t = 600)]
    idle_timeout_seconds: u64,
    /// Seconds before any connection is closed (API Gateway: 7200).
    #[arg(long, env = "WSBRIDGE_MAX_CONNECTION_SECONDS", default_value_t = 7_200)]
    max_connection_seconds: u64,
    /// Bytes posted to one client and not yet written before posts get 429 (at least 131072).
    #[arg(long, env = "WSBRIDGE_OUTBOX_BYTES", default_value_t = Limits::default().outbox_bytes)]
    outbox_bytes: usize,
    /// Messages posted to one client and not yet written before posts get 429.
    #[arg(long, env = "WSBRIDGE_OUTBOX_MESSAGES", default_value_t = Limits::default().outbox_messages)]
    outbox_messages: usize,
    /// Seconds a client may take to accept one message before it is dropped as not reading.
    #[arg(long, env = "WSBRIDGE_SEND_TIMEOUT_SECONDS", default_value_t = Limits::default().send_timeout.as_secs())]
    send_timeout_seconds: u64,
    /// Open connections beyond which handshakes are answered 503.
    #[arg(long, env = "WSBRIDGE_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds a client has to send a request head (the WebSocket upgrade included).
    #[arg(long, env = "WSBRIDGE_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = Limits::default().handshake_timeout.as_secs())]
    handshake_timeout_seconds: u64,
    /// Milliseconds each `@connections` post takes to answer, as API Gateway's ≈ 10–30 ms:
    /// broadcasts then take as long as they would deployed (0: as fast as this machine goes).
    #[arg(long, env = "WSBRIDGE_POST_LATENCY_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    post_latency_ms: u64,
    /// Seconds one run of a background broadcast's part lasts before it continues itself in
    /// a new run, as a Lambda invocation of the broadcast function does (the template: 29).
    #[arg(long, env = "WSBRIDGE_SHARD_RUN_SECONDS", default_value_t = wsbridge_local::DEFAULT_SHARD_RUN_TIME.as_secs(), value_parser = clap::value_parser!(u64).range(6..=900))]
    shard_run_seconds: u64,
    /// Require SigV4-signed requests on the broadcast API, as the deployed API does in IAM mode:
    /// signed for execute-api in AWS_REGION (default us-east-1) with AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY (default: local / local).
    #[arg(long, env = "WSBRIDGE_SIGV4")]
    sigv4: bool,
    /// Channel namespaces and permissions: a JSON file (e.g. examples/channels/chat.json).
    /// Without it, CHANNELS_CONFIG (the JSON itself) is read, else the built-in policy.
    #[arg(long, env = "WSBRIDGE_CHANNELS_FILE", value_name = "FILE")]
    channels: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Print an HS256 token for a user, signed with JWT_SECRET (default: the dev secret).
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_seconds: u64,
    },
    /// Connect to a running gateway; print what arrives, send each line typed.
    Client {
        /// Connect as this user with a fresh dev token.
        #[arg(long, conflicts_with = "token")]
        sub: Option<String>,
        /// Connect with this token.
        #[arg(long)]
        token: Option<String>,
        /// The WebSocket API.
        #[arg(long, default_value = "ws://127.0.0.1:3001")]
        url: String,
    },
}

fn auth_config() -> Result<AuthConfig, String> {
    local_auth_config(|name| std::env::var(name).ok()).map_err(|e| e.to_string())
}

fn mint(sub: &str, ttl_seconds: u64) -> Result<String, String> {
    tokens::mint(&auth_config()?, sub, Duration::from_secs(ttl_seconds)).map_err(|e| e.to_string())
}

/// The identity `--sigv4` accepts: the environment's, else the dummy one every local tool
/// here uses.
fn sigv4_credentials() -> SigV4Credentials {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    SigV4Credentials {
        access_key_id: var("AWS_ACCESS_KEY_ID", "local"),
        secret_access_key: var("AWS_SECRET_ACCESS_KEY", "local"),
        region: var("AWS_REGION", "us-east-1"),
    }
}

/// The chat example, the channel configuration when none is given: rooms with publish,
/// presence, join/leave and history, and typing indicators, which the chat demo needs.
const CHAT_EXAMPLE: &str = include_str!("../../examples/channels/chat.json");

/// The channel configuration and where it came from: `--channels FILE`, else
/// `CHANNELS_CONFIG`, else the chat example.
fn channels(args: &ServeArgs) -> Result<(Channels, String), String> {
    if let Some(path) = &args.channels {
        let json = std::fs::read_to_string(path)
            .map_err(|e| format!("--channels {}: {e}", path.display()))?;
        let channels =
            Channels::parse(&json).map_err(|e| format!("--channels {}: {e}", path.display()))?;
        return Ok((channels, format!("from {}", path.display())));
    }
    if std::env::var("CHANNELS_CONFIG").is_ok_and(|v| !v.is_empty()) {
        let channels = ChannelsConfig::from_env().map_err(|e| e.to_string())?;
        return Ok((channels.channels, "from CHANNELS_CONFIG".to_owned()));
    }
    let channels = Channels::parse(CHAT_EXAMPLE)
        .map_err(|e| format!("the built-in chat example is invalid: {e}"))?;
    Ok((
        channels,
        "the chat example (examples/channels/chat.json), the default; --channels FILE for yours"
            .to_owned(),
    ))
}

fn gateway_config(args: &ServeArgs, channels: Channels) -> Result<GatewayConfig, String> {
    Ok(GatewayConfig {
        ws_address: SocketAddr::new(args.bind, args.ws_port),
        http_address: SocketAddr::new(args.bind, args.http_port),
        stage: args.stage.clone(),
        limits: Limits {
            max_frame_bytes: args.max_frame_bytes,
            max_message_bytes: args.max_message_bytes,
            idle_timeout: Duration::from_secs(args.idle_timeout_seconds),
            max_connection_duration: Duration::from_secs(args.max_connection_seconds),
            outbox_messages: args.outbox_messages,
            outbox_bytes: args.outbox_bytes,
            send_timeout: Duration::from_secs(args.send_timeout_seconds),
            max_connections: args.max_connections,
            handshake_timeout: Duration::from_secs(args.handshake_timeout_seconds),
            post_latency: Duration::from_millis(args.post_latency_ms),
        },
        auth: auth_config()?,
        session: SessionConfig::from_env().map_err(|e| e.to_string())?,
        broadcast: BroadcastConfig::from_env().map_err(|e| e.to_string())?,
        fanout: FanoutConfig::from_env().map_err(|e| e.to_string())?,
        channels,
        sigv4: args.sigv4.then(sigv4_credentials),
        storage: match &args.dynamodb_endpoint {
            Some(endpoint) => Storage::DynamoDb {
                endpoint: endpoint.clone(),
                table: args.table.clone(),
            },
            None => Storage::Memory,
        },
        shard_run_time: Duration::from_secs(args.shard_run_seconds),
    })
}

fn banner(
    gateway: &RunningGateway,
    config: &GatewayConfig,
    channels_source: &str,
    token: &str,
) -> String {
    let ws = gateway.ws_url();
    let http = gateway.http_url();
    let store = match &config.storage {
        Storage::Memory => "in memory (gone when this stops)".to_owned(),
        Storage::DynamoDb { endpoint, table } => format!("DynamoDB at {endpoint}, table {table}"),
    };
    let channels = format!(
        "{}\n                   {channels_source}",
        channels_summary(&config.channels)
    );
    let topic = example_topic(&config.channels);
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    let mut key_header = match &config.broadcast.api_key {
        Some(key) => format!(" -H 'x-api-key: {key}'"),
        None => String::new(),
    };
    if let Some(identity) = &config.sigv4 {
        key_header.push_str(&format!(
            " --aws-sigv4 'aws:amz:{}:execute-api' --user '{}:{}'",
            identity.region, identity.access_key_id, identity.secret_access_key
        ));
    }
    format!(
        "\nwsbridge local gateway\n\
         \n  WebSocket API    {ws}\
         \n  @connections     {management}/@connections/{{connection_id}}\
         \n  broadcast API    {http}/broadcast   {http}/connections/count\
         \n  chat demo        {http}/   (open it in two browser windows){demo_note}\
         \n  store            {store}\
         \n  channels         {channels}\
         \n\nA dev token for user alice (24 h):\n  {token}\
         \n\nTry it:\
         \n  1. connect a client, in a second shell (either one):\
         \n       cargo run -q{release} -p wsbridge-local -- client --sub alice --url {ws}\
         \n       npx -y wscat -c '{ws}/?token={token}'\
         \n  2. in the client, subscribe:\
         \n       {{\"action\":\"subscribe\",\"topic\":\"{topic}\"}}\
         \n  3. broadcast, in a third shell:\
         \n       curl -s -X POST {http}/broadcast -H 'content-type: application/json'{key_header} -d '{{\"topic\":\"{topic}\",\"event\":\"hello\",\"data\":{{\"n\":1}}}}'\
         \n  4. post to one connection with the AWS CLI (its id: send {{\"action\":\"whoami\"}}):\
         \n       AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1 aws apigatewaymanagementapi post-to-connection --endpoint-url {management} --connection-id CONNECTION_ID --data '{{\"hi\":1}}'\
         \n\nMore tokens: cargo run -q{release} -p wsbridge-local -- token --sub bob\
         \nLogs: one line per connect, message, broadcast and disconnect (RUST_LOG adjusts).\n",
        management = gateway.management_url(),
        demo_note = if tokens::verifies_with_dev_secret(&config.auth) {
            String::new()
        } else {
            format!(
                "\n                   sign-in off (not the dev secret): open {http}/?token=JWT&ws={ws}"
            )
        },
    )
}

/// A topic the banner's alice may subscribe to: `demo` when topics outside namespaces are
/// open (the built-in policy), else one of a namespace that lets her in.
fn example_topic(channels: &Channels) -> String {
    let alice = UserId::new("alice");
    let (namespaces, _) = channels.namespaces();
    std::iter::once("demo".to_owned())
        .chain(
            namespaces
                .keys()
                .flat_map(|name| [format!("{name}:1"), format!("{name}:alice")]),
        )
        .find(|name| {
            TopicPattern::parse(name).is_ok_and(|t| {
                channels
                    .check_subscribe(&t, &alice, &Grants::default())
                    .is_ok()
            })
        })
        .unwrap_or_else(|| "demo".to_owned())
}

/// One line on the channel configuration: its namespaces and whether others are open.
fn channels_summary(channels: &Channels) -> String {
    if *channels == Channels::default() {
        return "built-in: user:{sub} private to its user, every other topic open".to_owned();
    }
    let (namespaces, default) = channels.namespaces();
    let names: Vec<String> = namespaces.keys().map(|name| format!("{name}:")).collect();
    let rest = match default {
        Some(_) => "other topics: the default namespace",
        None => "other topics refused",
    };
    format!("{} ({rest})", names.join(" "))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Token { sub, ttl_seconds }) => {
            mint(&sub, ttl_seconds).map(|t| println!("{t}"))
        }
        Some(Command::Client { sub, token, url }) => client(sub, token, &url).await,
        None => serve(&cli.serve).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wsbridge-local: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn client(sub: Option<String>, token: Option<String>, url: &str) -> Result<(), String> {
    let token = match (token, sub) {
        (Some(token), _) => token,
        (None, Some(sub)) => mint(&sub, 86_400)?,
        (None, None) => return Err("pass --sub USER or --token TOKEN".into()),
    };
    // A bare `ws://host:port` would otherwise be requested as `GET ?token=…`.
    let has_path = url
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    let path = if has_path { "" } else { "/" };
    let separator = if url.contains('?') { '&' } else { '?' };
    wsbridge_local::client::run(&format!("{url}{path}{separator}token={token}"))
        .await
        .map_err(|e| e.to_string())
}

async fn serve(args: &ServeArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("wsbridge_local=info,wsbridge=warn")),
        )
        .with_target(false)
        // Colour is for people: `wsbridge-local > gateway.log` or `| grep` get plain text.
        .with_ansi(wsbridge::logging::stdout_wants_colour())
        .init();
    let (channels, channels_source) = channels(args)?;
    let config = gateway_config(args, channels)?;
    let token = mint("alice", 86_400)?;
    let gateway = wsbridge_local::start(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", banner(&gateway, &config, &channels_source, &token));
    tokio::select! {
        () = gateway.wait() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
