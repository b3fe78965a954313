//! The chat demo on the broadcast API's port: the page (`demo/`) and the JavaScript client
//! (`clients/js/src/`), built into the binary so that `wsbridge-local` serves them from any
//! directory, and — only while the gateway verifies with the public dev secret — a
//! sign-in that mints dev tokens.
//!
//! Every path here is an exact file name, never a pattern: the broadcast API matches its
//! routes by suffix (`/demo/broadcast` is `/broadcast` on a stage named `demo`), so a
//! catch-all such as `/demo/{file}` would shadow it.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use wsbridge::config::AuthConfig;

use crate::tokens::{mint, verifies_with_dev_secret};

/// The files served: path, content type, content.
pub(crate) const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../demo/index.html")),
    ("/demo/", HTML, include_str!("../../demo/index.html")),
    ("/demo/app.js", JS, include_str!("../../demo/app.js")),
    ("/demo/style.css", CSS, include_str!("../../demo/style.css")),
    (
        "/clients/js/src/index.js",
        JS,
        include_str!("../../clients/js/src/index.js"),
    ),
    (
        "/clients/js/src/client.js",
        JS,
        include_str!("../../clients/js/src/client.js"),
    ),
    (
        "/clients/js/src/connection.js",
        JS,
        include_str!("../../clients/js/src/connection.js"),
    ),
    (
        "/clients/js/src/backoff.js",
        JS,
        include_str!("../../clients/js/src/backoff.js"),
    ),
    (
        "/clients/js/src/emitter.js",
        JS,
        include_str!("../../clients/js/src/emitter.js"),
    ),
    (
        "/clients/js/src/errors.js",
        JS,
        include_str!("../../clients/js/src/errors.js"),
    ),
    (
        "/clients/js/src/requests.js",
        JS,
        include_str!("../../clients/js/src/requests.js"),
    ),
    (
        "/clients/js/src/streams.js",
        JS,
        include_str!("../../clients/js/src/streams.js"),
    ),
    (
        "/clients/js/src/topics.js",
        JS,
        include_str!("../../clients/js/src/topics.js"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// How long a demo token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Longest demo user name, in bytes: a name to show, and a topic segment (`user:{name}`).
const MAX_USER_BYTES: usize = 32;

/// The demo's routes, for a gateway verifying with `auth` whose WebSocket API is at `ws_url`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(
    auth: &AuthConfig,
    ws_url: &str,
) -> Router<S> {
    let mut router = Router::new();
    for &(path, content_type, content) in FILES {
        router = router.route(
            path,
            get(move || async move {
                // no-cache: a rebuilt binary's files are picked up on the next reload.
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    content,
                )
            }),
        );
    }
    if verifies_with_dev_secret(auth) {
        let (auth, ws_url) = (auth.clone(), ws_url.to_owned());
        router = router.route(
            "/demo/token",
            post(move |body: Bytes| async move { token(&auth, &ws_url, &body) }),
        );
    }
    router
}

/// `POST /demo/token` `{"user":"alice"}`: a dev token for that user, and where to connect.
fn token(auth: &AuthConfig, ws_url: &str, body: &[u8]) -> Response {
    let user = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => fields
            .get("user")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let Some(user) = user.filter(|u| is_demo_user(u)) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "send {{\"user\":\"alice\"}}: a name of 1 to {MAX_USER_BYTES} letters, digits, '_', '-' or '.'"
            ),
        );
    };
    match mint(auth, &user, TOKEN_LIFETIME) {
        Ok(token) => axum::Json(json!({
            "token": token,
            "user_id": user,
            "ws_url": ws_url,
            "expires_in": TOKEN_LIFETIME.as_secs(),
        }))
        .into_response(),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        ),
    }
}

fn is_demo_user(user: &str) -> bool {
    (1..=MAX_USER_BYTES).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn refusal(status: StatusCode, error: &str, details: String) -> Response {
    (
        status,
        axum::Json(json!({ "error": error, "details": details })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::body::{Body, to_bytes};
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;
    use wsbridge::auth::TokenVerifier;
    use wsbridge::config::JwtKey;

    use super::*;
    use crate::{GatewayConfig, http_app, start};

    const WS_URL: &str = "ws://127.0.0.1:3001";

    fn own_secret() -> AuthConfig {
        AuthConfig {
            key: JwtKey::Secret("a-secret-of-our-own-at-least-32-bytes".into()),
            ..wsbridge::dev::auth_config()
        }
    }

    async fn call(
        app: Router,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, String, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .extension(ConnectInfo(
                "127.0.0.1:40000".parse::<SocketAddr>().unwrap(),
            ))
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    /// The repository's files under `dir` with extension `ext`, as paths from its root.
    fn repository_files(dir: &str, ext: &str) -> Vec<String> {
        let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<String> = std::fs::read_dir(format!("{root}/{dir}"))
            .unwrap()
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(ext))
            .map(|name| format!("/{dir}/{name}"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_module_of_the_client_and_every_demo_file_is_served() {
        // GIVEN the served paths
        let served: Vec<&str> = FILES.iter().map(|(path, _, _)| *path).collect();
        // THEN each of the client's modules (which import one another) and the demo's files is
        // among them: a module added without being served would break the page
        for file in repository_files("clients/js/src", ".js")
            .into_iter()
            .chain(repository_files("demo", ".js"))
            .chain(repository_files("demo", ".css"))
        {
            assert!(served.contains(&file.as_str()), "{file} is not served");
        }
    }

    #[tokio::test]
    async fn the_page_and_the_client_are_served_as_they_are_in_the_repository() {
        let app = || routes::<()>(&wsbridge::dev::auth_config(), WS_URL);
        let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
        for &(path, expected_type, _) in FILES {
            // GIVEN the file a path names: the page for the two directory paths
            let file = match path {
                "/" | "/demo/" => "/demo/index.html",
                file => file,
            };
            let on_disk = std::fs::read_to_string(format!("{root}{file}")).unwrap();
            // WHEN it is asked for
            let (status, content_type, body) = call(app(), "GET", path, "").await;
            // THEN it is that file, byte for byte, with its extension's type
            assert_eq!(status, StatusCode::OK, "{path}");
            let by_extension = match file.rsplit('.').next() {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                other => panic!("{path}: no content type for {other:?}"),
            };
            assert_eq!(
                (content_type.as_str(), expected_type),
                (by_extension, by_extension),
                "{path}"
            );
            assert!(body == on_disk, "{path} is not {file} as it is on disk");
        }
    }

    #[tokio::test]
    async fn the_sign_in_mints_a_token_the_gateway_accepts_for_that_user() {
        // GIVEN a gateway verifying with the dev secret
        let auth = wsbridge::dev::auth_config();
        let app = || routes::<()>(&auth, WS_URL);

        // WHEN bob signs in
        let (status, _, body) = call(app(), "POST", "/demo/token", r#"{"user":"bob"}"#).await;

        // THEN he gets a token for bob, and where to connect
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["ws_url"], WS_URL);
        assert_eq!(answer["user_id"], "bob");
        let token = answer["token"].as_str().unwrap();
        let verified = TokenVerifier::new(&auth)
            .unwrap()
            .verify(token)
            .await
            .unwrap();
        assert_eq!(verified.user_id.as_str(), "bob");

        // AND a name that is no topic segment, or no name, is refused
        for body in [
            r#"{"user":"a b"}"#,
            r#"{"user":""}"#,
            r#"{"name":"bob"}"#,
            "bob",
        ] {
            let (status, _, answer) = call(app(), "POST", "/demo/token", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(answer.contains("invalid_request"), "{answer}");
        }
    }

    #[tokio::test]
    async fn without_the_dev_secret_there_is_no_sign_in_and_the_broadcast_api_is_untouched() {
        // GIVEN a running gateway, and its HTTP API as it would be with a secret of its own
        let gateway = start(GatewayConfig::loopback()).await.unwrap();
        let with_own_secret =
            || http_app(gateway.bridge.clone(), &own_secret(), gateway.ws_address);

        // THEN the sign-in is the broadcast API's 404, while the page is still served
        let (status, _, body) = call(
            with_own_secret(),
            "POST",
            "/demo/token",
            r#"{"user":"bob"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("not_found"), "{body}");
        let (status, _, _) = call(with_own_secret(), "GET", "/demo/app.js", "").await;
        assert_eq!(status, StatusCode::OK);

        // AND a broadcast on a stage named demo still reaches the broadcast API
        let dev = http_app(
            gateway.bridge.clone(),
            &wsbridge::dev::auth_config(),
            gateway.ws_address,
        );
        let (status, _, body) = call(
            dev,
            "POST",
            "/demo/broadcast",
            r#"{"all":true,"event":"e"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let report: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["recipients"], 0, "{report}");
    }
}
