//! The local gateway's event builders: what a WebSocket handshake, a frame, a close and an
//! HTTP request become before the handlers see them. Each built event must read back through
//! `aws_lambda_events` / `lambda_http` (as the gateway reads it) carrying what the client sent.
//!
//! Input: NUL-separated sections, each with a default when absent:
//! `query string`, `header lines (Name: value, one a line)`, `message or request body`,
//! `close reason`, `HTTP path and query`, `HTTP method`, `close code`. Only what hyper and
//! tungstenite would hand the gateway is built: a query and path that make a URI, headers that
//! are headers, a UTF-8 close reason.

#![no_main]

use std::net::SocketAddr;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use lambda_http::RequestExt;
use libfuzzer_sys::fuzz_target;
use wsbridge_fuzz::{sections, text_or};
use wsbridge_local::events::{self, ApiInfo, ClientInfo, HttpRequest, UnreadableRequest};

const CONNECTION: &str = "L0SM9cOFvHcCIhw=";
const CONNECTED_AT: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let parts = sections(data, 7);
    let headers = header_map(parts.get(1).copied().unwrap_or_default());
    let api = ApiInfo {
        api_id: "local".into(),
        stage: "local".into(),
        domain: "127.0.0.1:3001".into(),
    };
    let address: SocketAddr = ([127, 0, 0, 1], 50_000).into();
    let client = ClientInfo::new(address, &headers);
    let body = parts.get(2).copied().unwrap_or(br#"{"action":"ping"}"#);

    if let Some(query) = text_or(&parts, 0, "").and_then(uri_query) {
        check_connect(&api, &client, &headers, query);
    }
    check_message(&api, &client, body);
    if let (Some(reason), Some(status)) = (
        text_or(&parts, 3, "Client-side close frame status not set"),
        text_or(&parts, 6, "1005").and_then(|code| code.parse::<u16>().ok()),
    ) {
        check_disconnect(&api, &client, status, reason);
    }
    if let (Some(target), Some(method)) = (
        text_or(&parts, 4, "/broadcast").and_then(|t| t.parse::<Uri>().ok()),
        text_or(&parts, 5, "POST").and_then(|m| Method::from_bytes(m.as_bytes()).ok()),
    ) {
        check_http_api(&headers, &target, &method, body);
    }
});

/// Header lines as hyper would have read them: invalid names and values never get that far.
fn header_map(block: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in block.split(|byte| *byte == b'\n') {
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// The query of a request target, as the gateway takes it from the request's URI; `Some(None)`
/// for none, `None` when no URI has this query.
fn uri_query(query: &str) -> Option<Option<String>> {
    if query.is_empty() {
        return Some(None);
    }
    let uri: Uri = format!("/?{query}").parse().ok()?;
    Some(uri.query().map(str::to_owned))
}

/// The header values an event carries: those that are text, in order.
fn text_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The event read back at all: a failed read leaves a default event, without a connection id.
fn check_context(event: &ApiGatewayWebsocketProxyRequest, route_key: &str, event_type: &str) {
    let context = &event.request_context;
    assert_eq!(context.connection_id.as_deref(), Some(CONNECTION));
    assert_eq!(context.route_key.as_deref(), Some(route_key));
    assert_eq!(context.event_type.as_deref(), Some(event_type));
    assert_eq!(context.connected_at, CONNECTED_AT);
    assert_eq!(context.domain_name.as_deref(), Some("127.0.0.1:3001"));
    assert_eq!(context.stage.as_deref(), Some("local"));
}

fn check_connect(api: &ApiInfo, client: &ClientInfo, headers: &HeaderMap, query: Option<String>) {
    let event = events::connect(
        api,
        CONNECTION,
        CONNECTED_AT,
        client,
        headers,
        query.as_deref(),
    );
    check_context(&event, "$connect", "CONNECT");
    assert_eq!(
        event.request_context.identity.user_agent.as_deref(),
        headers.get(USER_AGENT).and_then(|v| v.to_str().ok())
    );
    // Every text header, the last value in the single view, all in the multi-value one.
    let mut names = 0;
    for name in headers.keys() {
        let values = text_values(headers, name);
        let Some(last) = values.last() else {
            continue;
        };
        names += 1;
        assert_eq!(
            event.headers.get(name).and_then(|v| v.to_str().ok()),
            Some(*last)
        );
        let multi: Vec<&str> = text_values(&event.multi_value_headers, name);
        assert_eq!(multi, values, "{name}");
    }
    assert_eq!(event.headers.keys_len(), names);
    // Every query parameter, decoded, likewise.
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
    for (name, _) in &pairs {
        let values: Vec<&str> = pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            event.query_string_parameters.first(name),
            values.last().copied()
        );
        assert_eq!(
            event.multi_value_query_string_parameters.all(name),
            Some(values)
        );
    }
    if pairs.is_empty() {
        assert!(event.query_string_parameters.is_empty());
    }
}

/// A text frame as is; a binary one base64-encoded, as the gateway sends it.
fn check_message(api: &ApiInfo, client: &ClientInfo, body: &[u8]) {
    let (text, is_base64_encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (STANDARD.encode(body), true),
    };
    let event = events::message(
        api,
        CONNECTION,
        CONNECTED_AT,
        client,
        &text,
        is_base64_encoded,
    );
    check_context(&event, "$default", "MESSAGE");
    assert_eq!(event.body.as_deref(), Some(text.as_str()));
    assert_eq!(event.is_base64_encoded, is_base64_encoded);
    assert!(event.request_context.message_id.is_some());
}

fn check_disconnect(api: &ApiInfo, client: &ClientInfo, status: u16, reason: &str) {
    let event = events::disconnect(api, CONNECTION, CONNECTED_AT, client, status, reason);
    check_context(&event, "$disconnect", "DISCONNECT");
    assert_eq!(
        event.request_context.disconnect_status_code,
        Some(i64::from(status))
    );
    assert_eq!(
        event.request_context.disconnect_reason.as_deref(),
        Some(reason)
    );
}

/// The broadcast API's request, built as the gateway's HTTP handler builds it.
fn check_http_api(headers: &HeaderMap, target: &Uri, method: &Method, body: &[u8]) {
    let domain = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let built = events::http_api(&HttpRequest {
        method: method.as_str(),
        path: target.path(),
        raw_query: target.query(),
        headers,
        body,
        source_ip: "127.0.0.1".to_owned(),
        domain,
    });
    let request = match built {
        Ok(request) => request,
        // Answered 400: only a client's own Host or X-Forwarded-Proto can make no URI.
        Err(UnreadableRequest::NoUrl(_)) => {
            assert!(headers.contains_key(HOST) || headers.contains_key("x-forwarded-proto"));
            return;
        }
        Err(e) => panic!("the gateway built an event lambda_http cannot read: {e}"),
    };
    assert_eq!(request.method(), method);
    assert_eq!(request.raw_http_path(), target.path());
    assert_eq!(request.body().as_ref(), body);
    for name in headers.keys() {
        if !text_values(headers, name).is_empty() {
            assert!(request.headers().contains_key(name), "{name} lost");
        }
    }
}
