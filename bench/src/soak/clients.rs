//! The soak's child process: the churning clients, the broadcaster, and the accounting.
//! It prints `PROGRESS {json}` every second, `STOPPING` when the churn ends and everyone
//! leaves, and `RESULT {json}` once every client has left and every session is judged.
//!
//! A client's loop: connect as its user → `whoami` (its connection id) → subscribe to a few
//! pool topics, some also to `user:{sub}` → stay a random while, reading → leave → pause →
//! again. Leaving starts with a flush: the harness posts a marker to the connection's own
//! `@connections` and the client reads until the marker arrives. A connection's outbox is
//! one queue, so every broadcast answered before the leave began is then in the client's
//! hands, whatever way it leaves next: a message the gateway still held for a client that
//! then drops TCP is not a loss, and a message the gateway dropped is one.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsbridge::dev::{Claims, DEV_SECRET, sign_hs256};

use super::broadcaster::{self, BroadcastTotals, Kind};
use super::ledger::{Audience, Joined, Ledger, Session, Tally};
use super::socket::{Event, next_event, request};
use super::{Churn, pool_topic, user, user_topic};
use crate::e2e::raise_open_files;
use crate::report::Result;

/// How long a client waits for a reply, a flush marker or the end of a close.
pub(super) const PATIENCE: Duration = Duration::from_secs(30);
/// Errors kept word for word; the rest are only counted.
const ERRORS_KEPT: usize = 20;

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the gateway listens.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub ws_url: String,
    pub http_url: String,
    /// `@connections`, on the WebSocket API's origin.
    pub management_url: String,
}

/// Live counts the progress lines report.
#[derive(Default)]
pub(super) struct Counters {
    pub received: AtomicU64,
    sessions: AtomicU64,
    open: AtomicI64,
}

/// What every task of the child shares.
pub(super) struct Shared {
    pub churn: Churn,
    pub endpoints: Endpoints,
    pub http: reqwest::Client,
    pub stop: watch::Receiver<bool>,
    ledger: Mutex<Ledger>,
    pub counters: Counters,
    errors: Mutex<(u64, Vec<String>)>,
}

impl Shared {
    /// The ledger; never held across an `.await`.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn error(&self, error: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.0 += 1;
        if errors.1.len() < ERRORS_KEPT {
            errors.1.push(error);
        }
    }
}

/// One client's sessions, summed.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct ClientTotals {
    pub tally: Tally,
    pub sessions: u64,
    pub clean_closes: u64,
    pub aborts: u64,
    pub server_closes: u64,
    /// `POST /disconnect` named the connection in `disconnected`.
    pub server_closes_confirmed: u64,
    /// `POST /disconnect` reported the close as `failed` (the gateway's own DeleteConnection
    /// timed out): the client then closes by itself.
    pub server_closes_failed: u64,
    /// Handshakes refused (429 at the per-user limit, 503 at the gateway's cap).
    pub refused: u64,
    /// Connections that ended without the client leaving.
    pub unexpected_ends: u64,
    /// Handshakes that succeeded, and whose `whoami` or `subscribe` right after was answered
    /// `not_connected`: the rows `$connect` wrote were removed while the connection was open.
    pub forgotten: u64,
    /// Flush markers that did not arrive within the patience window.
    pub flush_missing: u64,
    pub errors: u64,
}

impl ClientTotals {
    fn add(&mut self, other: &ClientTotals) {
        self.tally += other.tally;
        self.sessions += other.sessions;
        self.clean_closes += other.clean_closes;
        self.aborts += other.aborts;
        self.server_closes += other.server_closes;
        self.server_closes_confirmed += other.server_closes_confirmed;
        self.server_closes_failed += other.server_closes_failed;
        self.refused += other.refused;
        self.unexpected_ends += other.unexpected_ends;
        self.forgotten += other.forgotten;
        self.flush_missing += other.flush_missing;
        self.errors += other.errors;
    }
}

/// The child: runs the churn for its duration, then everyone leaves; prints the result.
pub async fn run(endpoints: Endpoints, churn: Churn) -> Result<()> {
    churn.check()?;
    raise_open_files(churn.clients as u64 + 256)?;
    let (stop_all, stop) = watch::channel(false);
    let duration = churn.duration();
    let shared = Arc::new(Shared {
        churn,
        endpoints,
        // The gateway closes a connection that sends no request head within its handshake
        // timeout (10 s): idle pooled connections go first, so a request never races that
        // close on a connection about to be dropped.
        http: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?,
        stop,
        ledger: Mutex::default(),
        counters: Counters::default(),
        errors: Mutex::default(),
    });
    let started = Instant::now();
    let progress = tokio::spawn(progress(shared.clone(), started));
    let broadcasters: Vec<_> = [Kind::Topic, Kind::User]
        .into_iter()
        .map(|kind| tokio::spawn(broadcaster::run(kind, shared.clone())))
        .collect();
    let clients: Vec<_> = (0..shared.churn.clients)
        .map(|n| tokio::spawn(client(n, shared.clone())))
        .collect();
    tokio::time::sleep(duration).await;
    println!("STOPPING");
    let _ = stop_all.send(true);

    let mut broadcasts = BroadcastTotals::default();
    for done in broadcasters {
        broadcasts.add(&done.await?);
    }
    let mut totals = ClientTotals::default();
    let mut per_client = Vec::with_capacity(clients.len());
    for done in clients {
        let client = done.await?;
        totals.add(&client);
        per_client.push(client);
    }
    progress.abort();
    print_progress(&shared, started);
    let (error_count, errors) = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let result = json!({
        "seconds": started.elapsed().as_secs_f64(),
        "clients": totals,
        "per_client": per_client_summary(&per_client),
        "broadcasts": broadcasts,
        "received": shared.counters.received.load(Ordering::Relaxed),
        "errors": {"count": error_count, "first": errors},
    });
    println!("RESULT {result}");
    Ok(())
}

/// The spread of deliveries over clients, and every client that lost or doubled a message.
fn per_client_summary(clients: &[ClientTotals]) -> Value {
    let delivered: Vec<f64> = clients.iter().map(|c| c.tally.delivered as f64).collect();
    let sessions: Vec<f64> = clients.iter().map(|c| c.sessions as f64).collect();
    let flagged = |pick: fn(&ClientTotals) -> u64| -> Vec<Value> {
        clients
            .iter()
            .enumerate()
            .filter(|(_, c)| pick(c) > 0)
            .map(|(n, c)| json!({"client": n, "count": pick(c)}))
            .collect()
    };
    json!({
        "delivered": crate::report::Stats::of(delivered).json(),
        "sessions": crate::report::Stats::of(sessions).json(),
        "with_loss": flagged(|c| c.tally.lost),
        "with_duplicates": flagged(|c| c.tally.duplicates),
        "with_unexpected": flagged(|c| c.tally.unexpected),
    })
}

async fn progress(shared: Arc<Shared>, started: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        print_progress(&shared, started);
    }
}

fn print_progress(shared: &Shared, started: Instant) {
    let counters = &shared.counters;
    let broadcasts = shared.ledger().len();
    println!(
        "PROGRESS {}",
        json!({
            "t": started.elapsed().as_secs_f64(),
            "received": counters.received.load(Ordering::Relaxed),
            "sessions": counters.sessions.load(Ordering::Relaxed),
            "open": counters.open.load(Ordering::Relaxed),
            "broadcasts": broadcasts,
        })
    );
}

/// Client `n`: sessions one after another until the churn ends.
async fn client(n: usize, shared: Arc<Shared>) -> ClientTotals {
    let churn = &shared.churn;
    let user = user(n / churn.clients_per_user);
    let mut totals = ClientTotals::default();
    let token = match sign_hs256(DEV_SECRET, &Claims::new(&user, Duration::from_secs(86_400))) {
        Ok(token) => token,
        Err(e) => {
            shared.error(format!("client {n}: token: {e}"));
            totals.errors += 1;
            return totals;
        }
    };
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut stop = shared.stop.clone();
    // The first connects spread over one longest stay, so the churn is steady from the start.
    let first = Duration::from_secs_f64(rng.random_range(0.0..=churn.stay_max_seconds));
    if tokio::time::timeout(first, stop.wait_for(|stop| *stop))
        .await
        .is_ok()
    {
        return totals;
    }
    while !*stop.borrow() {
        if let Err(e) = session(&shared, &user, &token, &mut rng, &mut totals).await {
            totals.errors += 1;
            shared.error(format!("client {n} ({user}): {e}"));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    }
    totals
}

/// One connection, from handshake to leave; judged by the ledger whatever happened.
async fn session(
    shared: &Shared,
    user: &str,
    token: &str,
    rng: &mut StdRng,
    totals: &mut ClientTotals,
) -> Result<()> {
    let asked_at = Instant::now();
    let url = format!("{}/?token={token}", shared.endpoints.ws_url);
    let mut socket = match connect_async(url).await {
        Ok((socket, _)) => socket,
        Err(WsError::Http(response)) if matches!(response.status().as_u16(), 429 | 503) => {
            totals.refused += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        Err(e) => return Err(format!("handshake: {e}").into()),
    };
    let mut s = Session::default();
    s.joined.push(Joined {
        audience: Audience::User(user.to_owned()),
        asked_at,
        joined_at: Instant::now(),
    });
    shared.counters.open.fetch_add(1, Ordering::Relaxed);
    let outcome = live(shared, &mut socket, &mut s, user, rng, totals).await;
    shared.counters.open.fetch_sub(1, Ordering::Relaxed);
    s.left_at.get_or_insert_with(Instant::now);
    totals.tally += shared.ledger().settle(&s);
    totals.sessions += 1;
    shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
    outcome
}

/// How a session leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    Close,
    Abort,
    ServerClose,
}

/// A connected session: whoami, subscribe, stay, flush, leave.
async fn live(
    shared: &Shared,
    socket: &mut Socket,
    s: &mut Session,
    user: &str,
    rng: &mut StdRng,
    totals: &mut ClientTotals,
) -> Result<()> {
    let churn = &shared.churn;
    let reply = request(shared, socket, s, json!({"action": "whoami"})).await?;
    if reply["error"] == "not_connected" {
        // Handshake done, rows already gone: see `ClientTotals::forgotten`.
        totals.forgotten += 1;
        return Ok(());
    }
    let id = reply["connection_id"]
        .as_str()
        .ok_or_else(|| format!("whoami answered {reply}"))?
        .to_owned();
    let mut topics: Vec<String> =
        rand::seq::index::sample(rng, churn.topics, churn.topics_per_client)
            .into_iter()
            .map(pool_topic)
            .collect();
    if rng.random_bool(churn.user_topic_share.clamp(0.0, 1.0)) {
        topics.push(user_topic(user));
    }
    let asked_at = Instant::now();
    let subscribe = json!({"action": "subscribe", "topics": topics});
    let reply = request(shared, socket, s, subscribe).await?;
    if reply["error"] == "not_connected" {
        totals.forgotten += 1;
        return Ok(());
    }
    if reply != json!({"action": "subscribed", "topics": topics}) {
        return Err(format!("subscribe answered {reply}").into());
    }
    let joined_at = Instant::now();
    s.joined.extend(topics.into_iter().map(|topic| Joined {
        audience: Audience::Topic(topic),
        asked_at,
        joined_at,
    }));

    let stay = rng.random_range(churn.stay_min_seconds..=churn.stay_max_seconds);
    let until = Instant::now() + Duration::from_secs_f64(stay);
    let mut stop = shared.stop.clone();
    // Broadcasts are recorded as they come; anything else that arrives ends the stay.
    let event = tokio::select! {
        event = next_event(shared, socket, s, until) => event?,
        _ = stop.wait_for(|stop| *stop) => None,
    };
    match event {
        None => {}
        Some(Event::Ended) => {
            totals.unexpected_ends += 1;
            return Ok(());
        }
        Some(other) => return Err(format!("while staying: {other:?}").into()),
    }

    s.left_at = Some(Instant::now());
    if !flush(shared, socket, s, &id, totals).await? {
        return Ok(());
    }
    let draw = rng.random_range(0.0..1.0);
    let leave = if draw < churn.abort_share {
        Leave::Abort
    } else if draw < churn.abort_share + churn.server_close_share {
        Leave::ServerClose
    } else {
        Leave::Close
    };
    leave_by(shared, socket, s, &id, leave, totals).await
}

async fn leave_by(
    shared: &Shared,
    socket: &mut Socket,
    s: &mut Session,
    id: &str,
    leave: Leave,
    totals: &mut ClientTotals,
) -> Result<()> {
    match leave {
        Leave::Abort => {
            totals.aborts += 1;
            // An abortive close (RST), as a phone losing its network: no close frame, no FIN.
            if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
                tcp.set_zero_linger()?;
            }
            return Ok(());
        }
        Leave::Close => {
            totals.clean_closes += 1;
            socket.close(None).await?;
        }
        Leave::ServerClose => {
            totals.server_closes += 1;
            let response = shared
                .http
                .post(format!("{}/disconnect", shared.endpoints.http_url))
                .json(&json!({"connection_ids": [id]}))
                .send()
                .await?;
            let report: Value = response.json().await?;
            if report["disconnected"] == json!([id]) {
                totals.server_closes_confirmed += 1;
            } else if report["failed"][0]["connection_id"] == id {
                // "Rows kept, retry", as documented: here the client leaves by itself.
                totals.server_closes_failed += 1;
                socket.close(None).await?;
            } else {
                return Err(format!("POST /disconnect answered {report}").into());
            }
        }
    }
    // Read to the end: broadcasts may still arrive before the close, as extras.
    let until = Instant::now() + PATIENCE;
    loop {
        match next_event(shared, socket, s, until).await? {
            Some(Event::Ended) => return Ok(()),
            None => return Err(format!("{leave:?}: the connection did not end").into()),
            Some(_) => {}
        }
    }
}

/// Posts a marker to the connection's `@connections` and reads until it arrives. False when
/// the connection turned out to be gone.
async fn flush(
    shared: &Shared,
    socket: &mut Socket,
    s: &mut Session,
    id: &str,
    totals: &mut ClientTotals,
) -> Result<bool> {
    let marker = shared.counters.sessions.load(Ordering::Relaxed);
    let post = || {
        shared
            .http
            .post(format!(
                "{}/@connections/{id}",
                shared.endpoints.management_url
            ))
            .json(&json!({ "flush": marker }))
            .send()
    };
    // A loaded machine may drop the request itself: try again (a marker arriving twice is
    // harmless, only the first is waited for).
    let mut response = post().await;
    for _ in 0..2 {
        if response.is_ok() {
            break;
        }
        response = post().await;
    }
    let response = response?;
    if response.status().as_u16() == 410 {
        totals.unexpected_ends += 1;
        return Ok(false);
    }
    if !response.status().is_success() {
        return Err(format!("flush post answered {}", response.status()).into());
    }
    let until = Instant::now() + PATIENCE;
    loop {
        match next_event(shared, socket, s, until).await? {
            Some(Event::Flush(seen)) if seen == marker => return Ok(true),
            Some(Event::Ended) => {
                totals.unexpected_ends += 1;
                return Ok(false);
            }
            None => {
                totals.flush_missing += 1;
                return Ok(true);
            }
            Some(_) => {}
        }
    }
}
