//! The events API Gateway hands to the Lambda functions, built here as API Gateway builds them
//! (as JSON, then parsed by the same `aws_lambda_events` / `lambda_http` types the functions
//! use), so the handlers cannot tell the local gateway from the cloud.

use std::net::SocketAddr;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use rand::RngCore;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;
use wsbridge::clock::now_millis;

/// What API Gateway knows of the API a connection belongs to.
#[derive(Debug, Clone)]
pub struct ApiInfo {
    pub api_id: String,
    pub stage: String,
    /// `host:port` the WebSocket API is served on: the `domainName` of events.
    pub domain: String,
}

/// What API Gateway knows of the client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub source_ip: String,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn new(address: SocketAddr, headers: &HeaderMap) -> Self {
        Self {
            source_ip: address.ip().to_string(),
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// An id in API Gateway's format: 11 random bytes in base64, e.g. `L0SM9cOFvHcCIhw=`. The
/// URL-safe alphabet keeps ids free of `/` and `+`, so they paste into URLs and shells as is.
pub fn gateway_id() -> String {
    let mut bytes = [0u8; 11];
    loop {
        rand::rng().fill_bytes(&mut bytes);
        let id = URL_SAFE.encode(bytes);
        // A leading `-` would read as an option to command-line tools.
        if !id.starts_with(['-', '_']) {
            return id;
        }
    }
}

/// API Gateway's `requestTime`: `09/Feb/2024:18:23:28 +0000`.
fn request_time(now: OffsetDateTime) -> String {
    now.format(format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    ))
    .unwrap_or_default()
}

/// The fields every WebSocket event's `requestContext` carries.
fn context(
    api: &ApiInfo,
    connection_id: &str,
    connected_at: i64,
    client: &ClientInfo,
    route_key: &str,
    event_type: &str,
) -> Map<String, Value> {
    let now = OffsetDateTime::now_utc();
    let request_id = gateway_id();
    let mut identity = json!({"sourceIp": client.source_ip});
    if let Some(agent) = &client.user_agent {
        identity["userAgent"] = json!(agent);
    }
    let context = json!({
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": request_time(now),
        "messageDirection": "IN",
        "stage": api.stage,
        "connectedAt": connected_at,
        "requestTimeEpoch": now_millis(),
        "identity": identity,
        "requestId": request_id,
        "domainName": api.domain,
        "connectionId": connection_id,
        "apiId": api.api_id,
    });
    match context {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn parse(event: Value) -> ApiGatewayWebsocketProxyRequest {
    // Every field the type requires is set above; a failure here would be a bug in this
    // module, and the default (an event without connection id) is refused by every handler.
    serde_json::from_value(event).unwrap_or_else(|e| {
        tracing::error!(error = %e, "built an event aws_lambda_events cannot read");
        ApiGatewayWebsocketProxyRequest::default()
    })
}

/// API Gateway's two views of repeated names: `name → last value` and `name → [values]`.
fn single_and_multi(pairs: impl Iterator<Item = (String, String)>) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in pairs {
        match multi.get_mut(&name) {
            Some(Value::Array(values)) => values.push(json!(value)),
            _ => {
                multi.insert(name.clone(), json!([value]));
            }
        }
        single.insert(name, json!(value));
    }
    (Value::Object(single), Value::Object(multi))
}

fn header_maps(headers: &HeaderMap) -> (Value, Value) {
    single_and_multi(
        headers
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned()))),
    )
}

fn query_maps(raw_query: Option<&str>) -> (Value, Value) {
    single_and_multi(
        form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned())),
    )
}

/// `$connect`: the handshake's headers and query string, no body.
pub fn connect(
    api: &ApiInfo,
    connection_id: &str,
    connected_at: i64,
    client: &ClientInfo,
    headers: &HeaderMap,
    raw_query: Option<&str>,
) -> ApiGatewayWebsocketProxyRequest {
    let (headers, multi_value_headers) = header_maps(headers);
    let (query, multi_value_query) = query_maps(raw_query);
    let mut event = json!({
        "headers": headers,
        "multiValueHeaders": multi_value_headers,
        "requestContext": context(api, connection_id, connected_at, client, "$connect", "CONNECT"),
        "isBase64Encoded": false,
    });
    if query.as_object().is_some_and(|q| !q.is_empty()) {
        event["queryStringParameters"] = query;
        event["multiValueQueryStringParameters"] = multi_value_query;
    }
    parse(event)
}

/// A message: text as is, binary frames base64-encoded. Its route is `$default`, as in the
/// deployed API: route selection on `$request.body.action` finds no other route there.
pub fn message(
    api: &ApiInfo,
    connection_id: &str,
    connected_at: i64,
    client: &ClientInfo,
    body: &str,
    is_base64_encoded: bool,
) -> ApiGatewayWebsocketProxyRequest {
    let mut context = context(
        api,
        connection_id,
        connected_at,
        client,
        "$default",
        "MESSAGE",
    );
    context.insert("messageId".into(), json!(gateway_id()));
    parse(json!({
        "requestContext": context,
        "body": body,
        "isBase64Encoded": is_base64_encoded,
    }))
}

/// `$disconnect`, with the close code and reason API Gateway reports.
pub fn disconnect(
    api: &ApiInfo,
    connection_id: &str,
    connected_at: i64,
    client: &ClientInfo,
    status: u16,
    reason: &str,
) -> ApiGatewayWebsocketProxyRequest {
    let mut context = context(
        api,
        connection_id,
        connected_at,
        client,
        "$disconnect",
        "DISCONNECT",
    );
    context.insert("disconnectStatusCode".into(), json!(status));
    context.insert("disconnectReason".into(), json!(reason));
    parse(json!({
        "headers": {"Host": api.domain},
        "multiValueHeaders": {"Host": [api.domain]},
        "requestContext": context,
        "isBase64Encoded": false,
    }))
}

/// An HTTP API (payload format 2.0) request, as the broadcast function receives it.
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: String,
    pub domain: &'a str,
}

pub fn http_api(request: &HttpRequest<'_>) -> Result<lambda_http::Request, serde_json::Error> {
    let now = OffsetDateTime::now_utc();
    let mut headers = Map::new();
    for (name, value) in request.headers {
        let Ok(value) = value.to_str() else { continue };
        // HTTP API joins repeated headers with commas.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.to_string(), json!(value));
            }
        }
    }
    let route_key = format!("{} {}", request.method, request.path);
    let (body, is_base64_encoded) = match std::str::from_utf8(request.body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (STANDARD.encode(request.body), true),
    };
    let user_agent = request
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.raw_query.unwrap_or_default(),
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": request.domain,
            "domainPrefix": request.domain.split('.').next().unwrap_or_default(),
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": user_agent,
            },
            "requestId": gateway_id(),
            "routeKey": route_key,
            "stage": "$default",
            "time": request_time(now),
            "timeEpoch": now_millis(),
        },
        "body": body,
        "isBase64Encoded": is_base64_encoded,
    });
    lambda_http::request::from_str(&event.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> ApiInfo {
        ApiInfo {
            api_id: "local".into(),
            stage: "local".into(),
            domain: "127.0.0.1:3001".into(),
        }
    }

    fn client() -> ClientInfo {
        ClientInfo {
            source_ip: "127.0.0.1".into(),
            user_agent: Some("test-agent".into()),
        }
    }

    #[test]
    fn ids_look_like_api_gateway_ids_and_are_safe_on_a_command_line() {
        for _ in 0..200 {
            let id = gateway_id();
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.ends_with('='), "{id}");
            assert!(!id.starts_with(['-', '_']), "{id}");
            assert!(!id.contains(['/', '+']), "{id}");
        }
    }

    #[test]
    fn connect_event_carries_headers_query_and_every_context_field() {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        let event = connect(
            &api(),
            "abc=",
            42,
            &client(),
            &headers,
            Some("token=t&tag=1&tag=2"),
        );
        let context = &event.request_context;
        assert_eq!(context.route_key.as_deref(), Some("$connect"));
        assert_eq!(context.event_type.as_deref(), Some("CONNECT"));
        assert_eq!(context.connection_id.as_deref(), Some("abc="));
        assert_eq!(context.connected_at, 42);
        assert!(context.request_time_epoch > 0);
        assert!(
            context
                .request_time
                .as_deref()
                .is_some_and(|t| t.ends_with("+0000"))
        );
        assert_eq!(context.domain_name.as_deref(), Some("127.0.0.1:3001"));
        assert_eq!(context.identity.user_agent.as_deref(), Some("test-agent"));
        assert_eq!(event.query_string_parameters.first("token"), Some("t"));
        assert_eq!(
            event.multi_value_query_string_parameters.all("tag"),
            Some(vec!["1", "2"])
        );
        let multi: Vec<_> = event
            .multi_value_headers
            .get_all("x-multi")
            .iter()
            .collect();
        assert_eq!(multi.len(), 2);
    }

    #[test]
    fn disconnect_event_reports_code_and_reason() {
        let event = disconnect(&api(), "abc=", 1, &client(), 1006, "gone");
        let context = &event.request_context;
        assert_eq!(context.event_type.as_deref(), Some("DISCONNECT"));
        assert_eq!(context.disconnect_status_code, Some(1006));
        assert_eq!(context.disconnect_reason.as_deref(), Some("gone"));
    }
}
