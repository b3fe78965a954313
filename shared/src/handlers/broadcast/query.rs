//! What backends ask of the bridge: `GET /presence?topic=room:1` (who is in a room),
//! `GET /online?user_id=alice` (is she connected, on which devices) and
//! `GET /history?topic=room:1` (its last messages). Each reads one partition or two: no Scan,
//! whatever the table's size.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;
use tracing::error;

use super::{error_response, internal_error, json_response};
use crate::handlers::Context;
use crate::handlers::default::{PRESENCE_PAGE, presence_reply};
use crate::handlers::history::{REPLY_BYTES, Read, history_of, stream};
use crate::protocol::broadcast::{ApiError, ApiErrorCode};
use crate::protocol::client::MAX_HISTORY_LIMIT;
use crate::protocol::manage::{
    HistoryQuery, HistoryReport, OnlineConnection, OnlineQuery, OnlineReport, PresenceQuery,
};
use crate::protocol::{Topic, UserId};
use crate::store::history::Position;

/// The request's query string as `T`; a missing, unknown or repeated parameter is the
/// caller's mistake, said with the route's usage.
fn query<T: DeserializeOwned>(request: &Request, usage: &str) -> Result<T, ApiError> {
    let raw = request.uri().query().unwrap_or_default();
    serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::new(ApiErrorCode::InvalidRequest, format!("{e}; use {usage}")))
}

/// `GET /presence?topic=…`: the topic's users (the first page) and totals, as a client's
/// `presence` frame shows them. Only for namespaces that keep presence: elsewhere there are
/// no rows to read, and an empty answer would be a lie.
pub async fn presence(request: &Request, ctx: &Context<'_>) -> Response<Body> {
    const USAGE: &str = "GET /presence?topic=room:1";
    let topic = query::<PresenceQuery>(request, USAGE).and_then(|q| {
        Topic::parse(&q.topic)
            .map_err(|e| ApiError::new(ApiErrorCode::InvalidTarget, format!("topic: {e}")))
    });
    let topic = match topic {
        Ok(topic) => topic,
        Err(mistake) => return error_response(mistake),
    };
    if let Err(refused) = ctx.channels.check_presence(&topic) {
        return error_response(ApiError::new(ApiErrorCode::Forbidden, refused.to_string()));
    }
    match ctx.store.presence(&topic, PRESENCE_PAGE).await {
        Ok(page) => json_response(StatusCode::OK, &presence_reply(topic, page)),
        Err(e) => {
            error!(error = %e, %topic, "presence read failed");
            error_response(internal_error())
        }
    }
}

/// `GET /history?topic=…`: a topic's last messages (`limit`, default and at most 100), or
/// those after a position (`since_offset` and `since_epoch`), as a client's `history` frame
/// gets them.
pub async fn history(request: &Request, ctx: &Context<'_>) -> Response<Body> {
    const USAGE: &str = "GET /history?topic=room:1&limit=20 (or &since_offset=41&since_epoch=…)";
    let asked = query::<HistoryQuery>(request, USAGE).and_then(|q| {
        let topic = Topic::parse(&q.topic)
            .map_err(|e| ApiError::new(ApiErrorCode::InvalidTarget, format!("topic: {e}")))?;
        let limit = q.limit.unwrap_or(MAX_HISTORY_LIMIT);
        if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
            return Err(ApiError::new(
                ApiErrorCode::InvalidRequest,
                format!("limit must be 1 to {MAX_HISTORY_LIMIT}"),
            ));
        }
        let since = match (q.since_offset, q.since_epoch) {
            (Some(offset), Some(epoch)) => Some(Position { offset, epoch }),
            (None, None) => None,
            _ => {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidRequest,
                    format!("since_offset and since_epoch go together; use {USAGE}"),
                ));
            }
        };
        Ok((topic, limit, since))
    });
    let (topic, limit, since) = match asked {
        Ok(asked) => asked,
        Err(mistake) => return error_response(mistake),
    };
    let Some(history) = history_of(ctx, &topic) else {
        return error_response(ApiError::new(
            ApiErrorCode::Forbidden,
            format!("topic {:?}: its namespace keeps no history", topic.as_str()),
        ));
    };
    let read = match &since {
        Some(since) => Read::Since(since, limit),
        None => Read::Last(limit),
    };
    match stream(ctx, &topic, &history, read, REPLY_BYTES).await {
        Ok(stream) => json_response(StatusCode::OK, &HistoryReport { topic, stream }),
        Err(e) => {
            error!(error = %e, %topic, "history read failed");
            error_response(internal_error())
        }
    }
}

/// `GET /online?user_id=…`: the user's live connections, read consistently from their
/// registry (a device that connected a moment ago is there).
pub async fn online(request: &Request, ctx: &Context<'_>) -> Response<Body> {
    const USAGE: &str = "GET /online?user_id=alice";
    let user = query::<OnlineQuery>(request, USAGE).and_then(|q| {
        UserId::parse(&q.user_id)
            .map_err(|e| ApiError::new(ApiErrorCode::InvalidTarget, format!("user_id: {e}")))
    });
    let user = match user {
        Ok(user) => user,
        Err(mistake) => return error_response(mistake),
    };
    match ctx.store.user_connections(&user).await {
        Ok(mut connections) => {
            connections.sort_by(|a, b| (a.connected_at, &a.id).cmp(&(b.connected_at, &b.id)));
            let report = OnlineReport {
                user_id: user,
                online: !connections.is_empty(),
                connections: connections
                    .into_iter()
                    .map(|c| OnlineConnection {
                        connection_id: c.id,
                        connected_at: c.connected_at,
                    })
                    .collect(),
            };
            json_response(StatusCode::OK, &report)
        }
        Err(e) => {
            error!(error = %e, %user, "online read failed");
            error_response(internal_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use serde_json::{Value, json};

    use super::super::tests::call;
    use crate::channels::{Channels, TopicPattern};
    use crate::config::BroadcastConfig;
    use crate::handlers::broadcast::handle;
    use crate::protocol::ConnectionId;
    use crate::store::ConnectionStore;
    use crate::test_support::{RecordingSender, Settings, store_with, topic};

    const CHAT: &str = include_str!("../../../../examples/channels/chat.json");

    fn get(path: &str) -> lambda_http::Request {
        lambda_http::http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(lambda_http::Body::Empty)
            .unwrap()
    }

    async fn get_chat(store: &dyn crate::store::Store, path: &str) -> (u16, Value) {
        let settings = Settings {
            channels: Channels::parse(CHAT).unwrap(),
            ..Settings::default()
        };
        let sender = RecordingSender::new();
        let response = handle(
            &get(path),
            &settings.context(store, &sender),
            &BroadcastConfig::default(),
            &crate::test_support::RecordingLauncher::new(),
        )
        .await;
        let body = serde_json::from_slice(response.body()).unwrap();
        (response.status().as_u16(), body)
    }

    async fn join(store: &dyn ConnectionStore, id: &str, room: &str) {
        let room = topic(room);
        store
            .subscribe(
                &ConnectionId::parse(id).unwrap(),
                &[TopicPattern::exact(&room)],
                &[room],
                100,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn presence_counts_users_once_with_their_devices() {
        // GIVEN alice on two devices and bob on one in room:1, carol connected elsewhere
        let store = store_with(&[
            ("c-a1", "alice"),
            ("c-a2", "alice"),
            ("c-b", "bob"),
            ("c-c", "carol"),
        ])
        .await;
        for id in ["c-a1", "c-a2", "c-b"] {
            join(&store, id, "room:1").await;
        }

        // WHEN a backend asks who is in room:1 (the topic percent-encoded, as curl sends it)
        let (status, body) = get_chat(&store, "/presence?topic=room%3A1").await;

        // THEN each user appears once with their connection count, and the totals add up
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({
                "topic": "room:1",
                "users": [
                    {"user_id": "alice", "connections": 2},
                    {"user_id": "bob", "connections": 1}
                ],
                "total_users": 2,
                "total_connections": 3,
                "complete": true
            })
        );
    }

    #[tokio::test]
    async fn presence_is_refused_where_the_namespace_keeps_none_and_for_bad_queries() {
        let store = store_with(&[("c-a", "alice")]).await;
        // list: keeps no presence in the chat configuration
        let (status, body) = get_chat(&store, "/presence?topic=list:1").await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
        assert!(
            body["details"].as_str().unwrap().contains("presence"),
            "{body}"
        );
        // no topic, an extra parameter, an invalid topic
        for path in [
            "/presence",
            "/presence?topic=room:1&limit=5",
            "/presence?topic=",
        ] {
            let (status, body) = get_chat(&store, path).await;
            assert_eq!(status, 400, "{path}: {body}");
        }
        let (_, body) = get_chat(&store, "/presence").await;
        assert!(
            body["details"]
                .as_str()
                .unwrap()
                .contains("GET /presence?topic="),
            "the refusal shows the usage: {body}"
        );
    }

    #[tokio::test]
    async fn online_lists_a_users_devices_oldest_first() {
        // GIVEN alice on two devices, the second connected later
        let store = store_with(&[("c-b", "bob")]).await;
        let mut first = crate::test_support::connection("c-a1", "alice");
        first.connected_at = 1_000;
        let mut second = crate::test_support::connection("c-a0", "alice");
        second.connected_at = 2_000;
        crate::test_support::put(&store, &second).await;
        crate::test_support::put(&store, &first).await;

        // WHEN a backend asks whether alice and dave are online
        let (status, alice) = get_chat(&store, "/online?user_id=alice").await;
        let (_, dave) = get_chat(&store, "/online?user_id=dave").await;

        // THEN alice's devices come in connection order, dave is offline
        assert_eq!(status, 200, "{alice}");
        assert_eq!(
            alice,
            json!({
                "user_id": "alice",
                "online": true,
                "connections": [
                    {"connection_id": "c-a1", "connected_at": 1000},
                    {"connection_id": "c-a0", "connected_at": 2000}
                ]
            })
        );
        assert_eq!(
            dave,
            json!({"user_id": "dave", "online": false, "connections": []})
        );
        let (status, _) = get_chat(&store, "/online?user=alice").await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn the_read_routes_answer_only_get() {
        let store = store_with(&[]).await;
        let sender = RecordingSender::new();
        let request = lambda_http::http::Request::builder()
            .method(Method::POST)
            .uri("/online?user_id=alice")
            .body(lambda_http::Body::Empty)
            .unwrap();
        let response = call(&request, &store, &sender, &BroadcastConfig::default()).await;
        assert_eq!(response.status().as_u16(), 405);
    }
}
