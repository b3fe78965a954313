//! A fault-injecting proxy in front of DynamoDB Local: it forwards every request, except
//! those a rule picks, which it answers as DynamoDB does under stress (throttling, 500s,
//! cancelled transactions, unprocessed batch items) or not at all (held past the client's
//! attempt timeout, a dropped connection). DynamoDB Local never throttles or fails, so these
//! answers are the only way to see what the store and the handlers make of them.
//!
//! A rule names an operation (`X-Amz-Target: DynamoDB_20120810.<Op>`) and which of its calls
//! it hits; it may see only the requests that hold a given text (a key prefix, a piece of an
//! update expression), to tell apart calls of one operation that do different things. A call
//! is one HTTP request, so each attempt the SDK makes is one call: a fault on the next two
//! `GetItem` calls is one `GetItem` retried twice by the SDK. The proxy counts the calls it
//! forwarded and those it answered itself, per operation, so that tests can assert the
//! retries.

mod answers;
pub mod setup;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The header naming a DynamoDB operation, and its value's prefix.
const TARGET_HEADER: &str = "x-amz-target";
const TARGET_PREFIX: &str = "DynamoDB_20120810.";

/// What the proxy answers instead of DynamoDB Local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 400 `ProvisionedThroughputExceededException`: over the table's capacity.
    ProvisionedThroughputExceeded,
    /// 400 `ThrottlingException`: over the account's or the control plane's rate.
    Throttling,
    /// 500 `InternalServerError`.
    InternalServerError,
    /// `TransactWriteItems` only: 400 `TransactionCanceledException` whose first reason is
    /// `ThrottlingError`, as DynamoDB cancels a transaction that one of its items throttled.
    /// Nothing is written.
    TransactionThrottled,
    /// `TransactWriteItems` only: `TransactionCanceledException` whose first reason is
    /// `TransactionConflict`, as DynamoDB cancels a transaction that raced another write of
    /// one of its items. Nothing is written.
    TransactionConflict,
    /// No answer: the request is not forwarded, and held past the client's attempt timeout.
    Timeout,
    /// The request is forwarded (and applied), its answer held past the client's attempt
    /// timeout: a write that happened, though the client never hears of it.
    LostAnswer,
    /// The connection is closed without an answer; the request is not forwarded.
    Drop,
    /// `BatchWriteItem` / `BatchGetItem` only: the first half of each table's items (rounded
    /// down) is forwarded, the rest is returned as `UnprocessedItems` / `UnprocessedKeys`, so
    /// the table holds exactly what the answer says was processed.
    Unprocessed,
}

impl Fault {
    /// Answered with an error status, nothing forwarded.
    pub const ANSWERED: [Fault; 3] = [
        Fault::ProvisionedThroughputExceeded,
        Fault::Throttling,
        Fault::InternalServerError,
    ];
    /// Never answered in time.
    pub const UNANSWERED: [Fault; 3] = [Fault::Timeout, Fault::LostAnswer, Fault::Drop];
}

/// Which of the calls a rule sees it hits, counted from when the rule was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The nth call (1-based), once.
    Nth(u64),
    /// The next k calls.
    Next(u64),
    /// The nth call and every one after it.
    From(u64),
    /// Every call.
    Always,
}

impl When {
    /// Whether the rule hits the call that is the rule's `call`th (1-based).
    fn hits(self, call: u64) -> bool {
        match self {
            When::Nth(n) => call == n,
            When::Next(k) => call <= k,
            When::From(n) => call >= n,
            When::Always => true,
        }
    }
}

/// One fault on one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub operation: &'static str,
    pub when: When,
    pub fault: Fault,
    /// Text the request's body must hold for the rule to see it; `None`: every request of
    /// the operation.
    pub holding: Option<&'static str>,
}

impl Rule {
    pub fn new(operation: &'static str, when: When, fault: Fault) -> Self {
        Self {
            operation,
            when,
            fault,
            holding: None,
        }
    }

    /// The rule sees (counts and hits) only the operation's requests whose body holds
    /// `text`: one `UpdateItem` among others by its update expression, say.
    pub fn holding(mut self, text: &'static str) -> Self {
        self.holding = Some(text);
        self
    }

    fn sees(&self, operation: &str, body: &[u8]) -> bool {
        self.operation == operation
            && self.holding.is_none_or(|text| {
                let text = text.as_bytes();
                body.windows(text.len()).any(|w| w == text)
            })
    }
}

/// What the proxy did with one operation's calls. A call that was forwarded and then
/// answered falsely (`LostAnswer`, a partly processed batch) counts in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// Every request.
    pub total: u64,
    /// Requests passed on to DynamoDB Local, whole or in part.
    pub forwarded: u64,
    /// Requests a rule answered (or left unanswered).
    pub injected: u64,
}

struct ActiveRule {
    rule: Rule,
    /// Calls the rule saw since it was added.
    seen: u64,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    hold: Duration,
    rules: Mutex<Vec<ActiveRule>>,
    calls: Mutex<BTreeMap<String, Calls>>,
}

impl Shared {
    /// Counts the call and picks the first rule that hits it.
    fn decide(&self, operation: &str, body: &[u8]) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let mut fault = None;
        for active in rules.iter_mut() {
            if !active.rule.sees(operation, body) {
                continue;
            }
            active.seen += 1;
            if fault.is_none() && active.rule.when.hits(active.seen) {
                fault = Some(active.rule.fault);
            }
        }
        let mut calls = self.calls.lock().unwrap();
        let entry = calls.entry(operation.to_owned()).or_default();
        entry.total += 1;
        if fault.is_some() {
            entry.injected += 1;
        }
        fault
    }

    fn count_forwarded(&self, operation: &str) {
        self.calls
            .lock()
            .unwrap()
            .entry(operation.to_owned())
            .or_default()
            .forwarded += 1;
    }
}

/// The proxy, serving on a free loopback port until dropped.
pub struct FaultProxy {
    url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FaultProxy {
    /// How long `Timeout` and `LostAnswer` hold a request unless told otherwise: far past any
    /// attempt timeout a test sets.
    pub const HOLD: Duration = Duration::from_secs(30);

    /// Starts a proxy to DynamoDB (Local) at `upstream`, e.g. `http://127.0.0.1:8000`.
    pub async fn start(upstream: &str) -> Self {
        Self::start_holding(upstream, Self::HOLD).await
    }

    /// A proxy whose `Timeout` and `LostAnswer` hold requests for `hold`.
    pub async fn start_holding(upstream: &str, hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            hold,
            rules: Mutex::default(),
            calls: Mutex::default(),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Self {
            url,
            shared,
            server,
        }
    }

    /// The endpoint to point a DynamoDB client at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds a rule after those already there (the first rule that hits a call wins).
    pub fn inject(&self, rule: Rule) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .push(ActiveRule { rule, seen: 0 });
    }

    /// Removes every rule: from now on everything is forwarded.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// What happened to `operation`'s calls so far.
    pub fn calls(&self, operation: &str) -> Calls {
        self.shared
            .calls
            .lock()
            .unwrap()
            .get(operation)
            .copied()
            .unwrap_or_default()
    }

    /// Every operation's calls so far.
    pub fn all_calls(&self) -> BTreeMap<String, Calls> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Forgets the counts (not the rules), so a test can count one step.
    pub fn reset_counts(&self) {
        self.shared.calls.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, shared.clone()));
            // A dropped connection ends here with an error: that is the point of `Drop`.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The error that makes hyper close the connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a fault rule")
    }
}

impl std::error::Error for Dropped {}

type Answer = Response<Full<Bytes>>;

async fn answer(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Answer, Dropped> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let operation = parts
        .headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(TARGET_PREFIX))
        .unwrap_or("unknown")
        .to_owned();
    let Some(fault) = shared.decide(&operation, &body) else {
        shared.count_forwarded(&operation);
        return Ok(forward(&shared, &parts.headers, body).await.into_answer());
    };
    Ok(match fault {
        Fault::ProvisionedThroughputExceeded => answers::provisioned_throughput_exceeded(),
        Fault::Throttling => answers::throttling(),
        Fault::InternalServerError => answers::internal_server_error(),
        Fault::TransactionThrottled => answers::transaction_cancelled(&body, "ThrottlingError"),
        Fault::TransactionConflict => answers::transaction_cancelled(&body, "TransactionConflict"),
        Fault::Timeout => {
            tokio::time::sleep(shared.hold).await;
            answers::internal_server_error()
        }
        Fault::LostAnswer => {
            shared.count_forwarded(&operation);
            let answer = forward(&shared, &parts.headers, body).await;
            tokio::time::sleep(shared.hold).await;
            answer.into_answer()
        }
        Fault::Drop => return Err(Dropped),
        Fault::Unprocessed => match answers::split_batch(&operation, &body) {
            Some(split) => {
                let processed = match &split.forwarded {
                    Some(part) => {
                        shared.count_forwarded(&operation);
                        Some(forward(&shared, &parts.headers, part.clone()).await)
                    }
                    None => None,
                };
                answers::with_unprocessed(&operation, processed, split)
            }
            // Not a batch: nothing to leave unprocessed, so it goes through.
            None => {
                shared.count_forwarded(&operation);
                forward(&shared, &parts.headers, body).await.into_answer()
            }
        },
    })
}

/// DynamoDB Local's answer to a forwarded request.
struct Upstream {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Upstream {
    /// Passed back as it came, headers included (the SDK reads the error type and the
    /// request id from them).
    fn into_answer(self) -> Answer {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// Passes the request on to DynamoDB Local.
async fn forward(shared: &Shared, headers: &hyper::HeaderMap, body: Bytes) -> Upstream {
    let mut outgoing = headers.clone();
    for hop in ["host", "content-length", "connection"] {
        outgoing.remove(hop);
    }
    let sent = shared
        .http
        .post(&shared.upstream)
        .headers(outgoing)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(upstream) => {
            let status = upstream.status();
            let mut headers = upstream.headers().clone();
            for hop in ["content-length", "transfer-encoding", "connection"] {
                headers.remove(hop);
            }
            let body = upstream.bytes().await.unwrap_or_default();
            Upstream {
                status,
                headers,
                body,
            }
        }
        Err(e) => Upstream {
            status: StatusCode::BAD_GATEWAY,
            headers: hyper::HeaderMap::new(),
            body: Bytes::from(format!("DynamoDB Local: {e}")),
        },
    }
}
