//! Verifying tokens with a JWK set fetched over HTTP, as from Cognito, Auth0 or Okta: a real
//! HTTP server on 127.0.0.1 serves a set the test changes and counts the fetches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::join_all;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wsbridge::auth::{AuthError, TokenVerifier, now_seconds};
use wsbridge::config::{AuthConfig, JwksConfig, JwksSource, JwtKey};
use wsbridge::handlers::connect;
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::{ConnectionStore, MemoryStore, RecipientStore};
use wsbridge::test_support::ws_request;

const ISSUER: &str = "https://id.example.com/pool";
const AUDIENCE: &str = "wsbridge-app";

// ---- the identity provider's keys ----

fn pem(name: &str) -> String {
    let path = format!("{}/../shared/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Key {
    kid: &'static str,
    algorithm: Algorithm,
    private: EncodingKey,
}

fn rsa(kid: &'static str) -> Key {
    Key {
        kid,
        algorithm: Algorithm::RS256,
        private: EncodingKey::from_rsa_pem(pem("rsa-private.pem").as_bytes()).unwrap(),
    }
}

/// The key a provider rotates to.
fn rsa_2(kid: &'static str) -> Key {
    Key {
        kid,
        algorithm: Algorithm::RS256,
        private: EncodingKey::from_rsa_pem(pem("rsa-2-private.pem").as_bytes()).unwrap(),
    }
}

fn ec(kid: &'static str) -> Key {
    Key {
        kid,
        algorithm: Algorithm::ES256,
        private: EncodingKey::from_ec_pem(pem("ec-private.pem").as_bytes()).unwrap(),
    }
}

fn ed(kid: &'static str) -> Key {
    Key {
        kid,
        algorithm: Algorithm::EdDSA,
        private: EncodingKey::from_ed_pem(pem("ed25519-private.pem").as_bytes()).unwrap(),
    }
}

impl Key {
    fn public_jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.private, self.algorithm).unwrap();
        jwk.common.key_id = Some(self.kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    /// A token for `sub` with this key's kid, issuer and audience, valid for 10 minutes.
    fn token(&self, sub: &str) -> String {
        self.token_with_kid(self.kid, sub)
    }

    fn token_with_kid(&self, kid: &str, sub: &str) -> String {
        let header = Header {
            kid: Some(kid.into()),
            ..Header::new(self.algorithm)
        };
        let claims =
            json!({"sub": sub, "iss": ISSUER, "aud": [AUDIENCE], "exp": now_seconds() + 600});
        jsonwebtoken::encode(&header, &claims, &self.private).unwrap()
    }
}

fn key_set(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()}).to_string()
}

// ---- the JWKS endpoint ----

#[derive(Clone)]
enum Answer {
    Json(String),
    Status(StatusCode),
    Redirect(String),
}

struct Endpoint {
    answer: Mutex<Answer>,
    fetches: AtomicUsize,
    /// Held before answering, so concurrent verifications overlap one fetch for sure.
    delay: Duration,
}

async fn serve(State(endpoint): State<Arc<Endpoint>>) -> Response {
    endpoint.fetches.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(endpoint.delay).await;
    let answer = endpoint.answer.lock().unwrap().clone();
    match answer {
        Answer::Json(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Answer::Status(status) => status.into_response(),
        Answer::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
    }
}

/// A JWKS endpoint on a free loopback port; stops when dropped.
struct Provider {
    endpoint: Arc<Endpoint>,
    url: String,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start(keys: &[&Key]) -> Self {
        Self::start_with(Answer::Json(key_set(keys)), Duration::ZERO).await
    }

    async fn start_with(answer: Answer, delay: Duration) -> Self {
        let endpoint = Arc::new(Endpoint {
            answer: Mutex::new(answer),
            fetches: AtomicUsize::new(0),
            delay,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/.well-known/jwks.json", get(serve))
            .route("/elsewhere/jwks.json", get(serve))
            .with_state(endpoint.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            endpoint,
            url: format!("{base}/.well-known/jwks.json"),
            base,
            server,
        }
    }

    fn publish(&self, keys: &[&Key]) {
        self.answer(Answer::Json(key_set(keys)));
    }

    fn answer(&self, answer: Answer) {
        *self.endpoint.answer.lock().unwrap() = answer;
    }

    fn fetches(&self) -> usize {
        self.endpoint.fetches.load(Ordering::SeqCst)
    }

    fn verifier(&self, refresh_interval: Duration) -> TokenVerifier {
        verifier_for(&self.url, refresh_interval, NEVER)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A verifier of tokens from `url`'s keys. Intervals are injected: `Duration::ZERO` lets
/// every unknown kid refetch, `NEVER` no second fetch at all.
fn verifier_for(url: &str, refresh_interval: Duration, max_age: Duration) -> TokenVerifier {
    TokenVerifier::new(&AuthConfig {
        key: JwtKey::Jwks(JwksConfig {
            source: JwksSource::Url(url.to_owned()),
            algorithm: None,
            refresh_interval,
            max_age,
        }),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        leeway: Duration::ZERO,
    })
    .unwrap()
}

/// Long enough that no test ever sees an interval pass on its own.
const NEVER: Duration = Duration::from_secs(3_600);

async fn user(verifier: &TokenVerifier, token: &str) -> Result<String, AuthError> {
    verifier
        .verify(token)
        .await
        .map(|v| v.user_id.as_str().to_owned())
}

// ---- tests ----

#[tokio::test]
async fn keys_are_chosen_by_kid_and_fetched_once() {
    // GIVEN a provider publishing an RSA, an EC and an Ed25519 key
    let (rsa, ec, ed) = (rsa("rsa-1"), ec("ec-1"), ed("ed-1"));
    let provider = Provider::start(&[&rsa, &ec, &ed]).await;
    let verifier = provider.verifier(NEVER);
    // Nothing is fetched before the first token.
    assert_eq!(provider.fetches(), 0);

    // WHEN tokens signed with each arrive, twice over
    for _ in 0..2 {
        for (key, sub) in [(&rsa, "rsa-user"), (&ec, "ec-user"), (&ed, "ed-user")] {
            // THEN each verifies with the key its kid names
            assert_eq!(user(&verifier, &key.token(sub)).await.unwrap(), sub);
        }
    }
    // AND the set was fetched once
    assert_eq!(provider.fetches(), 1);

    // AND a token signed by one key but naming another is refused
    let forged = rsa_2("x").token_with_kid("rsa-1", "mallory");
    assert!(matches!(
        verifier.verify(&forged).await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    // GIVEN a verifier that has fetched the provider's one key
    let (old, new) = (rsa("2024-key"), rsa_2("2025-key"));
    let provider = Provider::start(&[&old]).await;
    let verifier = provider.verifier(Duration::ZERO);
    assert_eq!(user(&verifier, &old.token("alice")).await.unwrap(), "alice");
    assert_eq!(provider.fetches(), 1);

    // WHEN the provider rotates: publishes the new key next to the old and signs with it
    provider.publish(&[&old, &new]);

    // THEN the first token naming the new kid makes one refetch and is accepted
    assert_eq!(user(&verifier, &new.token("bob")).await.unwrap(), "bob");
    assert_eq!(provider.fetches(), 2);
    // AND both keys verify from the cache from then on
    assert_eq!(user(&verifier, &new.token("bob")).await.unwrap(), "bob");
    assert_eq!(user(&verifier, &old.token("alice")).await.unwrap(), "alice");
    assert_eq!(provider.fetches(), 2);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    // GIVEN a verifier with a one-hour refresh interval, before any fetch
    // (EC keys: 400 tokens sign fast)
    let known = ec("known");
    let provider =
        Provider::start_with(Answer::Json(key_set(&[&known])), Duration::from_millis(100)).await;
    let verifier = provider.verifier(NEVER);

    // WHEN 200 tokens with made-up kids arrive at once, then 200 more
    for round in 0..2 {
        let tokens: Vec<String> = (0..200)
            .map(|n| known.token_with_kid(&format!("made-up-{round}-{n}"), "mallory"))
            .collect();
        let results = join_all(tokens.iter().map(|t| verifier.verify(t))).await;

        // THEN every one is refused, and the set was fetched once in all
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(AuthError::UnknownKeyId(_)))),
            "round {round}"
        );
        assert_eq!(provider.fetches(), 1, "round {round}");
    }

    // AND within the interval even a kid that now exists waits for the next one: the bound
    // holds whatever the tokens say
    let late = ed("late");
    provider.publish(&[&known, &late]);
    assert!(matches!(
        verifier.verify(&late.token("b")).await,
        Err(AuthError::UnknownKeyId(_))
    ));
    // while the keys held keep working without a fetch
    assert_eq!(user(&verifier, &known.token("a")).await.unwrap(), "a");
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn concurrent_first_verifications_share_one_fetch() {
    // GIVEN a fresh verifier and a provider that takes a moment to answer
    let key = ec("ec-1");
    let provider =
        Provider::start_with(Answer::Json(key_set(&[&key])), Duration::from_millis(200)).await;
    let verifier = provider.verifier(NEVER);

    // WHEN 50 tokens arrive before any key is held
    let tokens: Vec<String> = (0..50).map(|n| key.token(&format!("user-{n}"))).collect();
    let results = join_all(tokens.iter().map(|t| user(&verifier, t))).await;

    // THEN all verify, after one fetch
    for (n, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap(), format!("user-{n}"));
    }
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn with_the_provider_down_nothing_unverified_gets_through() {
    // GIVEN a JWKS URL where nothing listens
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let verifier = verifier_for(&url, Duration::ZERO, NEVER);

    // THEN tokens are refused, whatever they claim
    let key = rsa("rsa-1");
    for token in [key.token("alice"), key.token_with_kid("other", "alice")] {
        assert!(matches!(
            verifier.verify(&token).await,
            Err(AuthError::UnknownKeyId(_))
        ));
    }

    // GIVEN a verifier that fetched the keys, then its provider failing (500, then gone)
    let provider = Provider::start(&[&key]).await;
    let verifier = provider.verifier(Duration::ZERO);
    assert_eq!(user(&verifier, &key.token("alice")).await.unwrap(), "alice");
    provider.answer(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR));
    let newcomer = rsa_2("new");
    assert!(matches!(
        verifier.verify(&newcomer.token("bob")).await,
        Err(AuthError::UnknownKeyId(_))
    ));
    assert_eq!(provider.fetches(), 2, "the unknown kid was looked up");
    drop(provider);

    // THEN the keys it held still verify, and an unknown kid is still refused
    assert_eq!(user(&verifier, &key.token("alice")).await.unwrap(), "alice");
    assert!(matches!(
        verifier.verify(&newcomer.token("bob")).await,
        Err(AuthError::UnknownKeyId(_))
    ));
}

#[tokio::test]
async fn malformed_oversized_or_redirected_sets_are_refused_and_old_keys_kept() {
    let key = rsa("rsa-1");
    let oct = json!({"keys": [{"kty": "oct", "kid": "rsa-1", "k": "c2VjcmV0", "alg": "HS256"}]});
    let huge = json!({"keys": [], "padding": "x".repeat(200 * 1024)}).to_string();
    let bad_answers = [
        Answer::Json("<html>not json</html>".into()),
        Answer::Json(r#"{"keys": {}}"#.into()),
        // A symmetric key under the very kid tokens name: never used.
        Answer::Json(oct.to_string()),
        Answer::Json(huge),
        Answer::Status(StatusCode::NOT_FOUND),
    ];
    for answer in bad_answers.iter().cloned() {
        // GIVEN a provider serving something that is not a usable key set
        let provider = Provider::start_with(answer, Duration::ZERO).await;
        let verifier = provider.verifier(Duration::ZERO);
        // THEN a token is refused
        assert!(verifier.verify(&key.token("alice")).await.is_err());
        assert_eq!(provider.fetches(), 1);
        // AND an HS256 token signed with the "secret" the set offers is refused too
        let hs = Key {
            kid: "rsa-1",
            algorithm: Algorithm::HS256,
            private: EncodingKey::from_secret(b"secret"),
        };
        assert!(verifier.verify(&hs.token("mallory")).await.is_err());
    }

    // GIVEN keys held, WHEN the set turns malformed, THEN the held keys stay in use
    let provider = Provider::start(&[&key]).await;
    let verifier = provider.verifier(Duration::ZERO);
    assert_eq!(user(&verifier, &key.token("alice")).await.unwrap(), "alice");
    for answer in bad_answers {
        provider.answer(answer);
        let other = rsa_2("other");
        assert!(verifier.verify(&other.token("bob")).await.is_err());
        assert_eq!(user(&verifier, &key.token("alice")).await.unwrap(), "alice");
    }

    // A redirect is not followed, even to a good set on the same host.
    let provider = Provider::start(&[&key]).await;
    let to = format!("{}/elsewhere/jwks.json", provider.base);
    provider.answer(Answer::Redirect(to));
    let verifier = provider.verifier(Duration::ZERO);
    assert!(verifier.verify(&key.token("alice")).await.is_err());
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn keys_grown_old_are_fetched_again_and_a_withdrawn_key_stops_verifying() {
    // GIVEN keys fetched, which count as old after 300 ms (fetches at least 100 ms apart)
    let (withdrawn, current) = (rsa("withdrawn"), rsa_2("current"));
    let provider = Provider::start(&[&withdrawn, &current]).await;
    let verifier = verifier_for(
        &provider.url,
        Duration::from_millis(100),
        Duration::from_millis(300),
    );
    assert_eq!(user(&verifier, &withdrawn.token("a")).await.unwrap(), "a");

    // WHEN the provider withdraws a key and the keys held grow old
    provider.publish(&[&current]);
    tokio::time::sleep(Duration::from_millis(400)).await;

    // THEN the next verification fetches the set again, and the withdrawn key is refused
    assert!(verifier.verify(&withdrawn.token("a")).await.is_err());
    assert_eq!(provider.fetches(), 2);
    assert_eq!(user(&verifier, &current.token("b")).await.unwrap(), "b");
}

#[tokio::test]
async fn the_connect_handler_registers_a_user_of_the_identity_provider() {
    // GIVEN the connect handler verifying with the provider's JWK set
    let key = rsa("rsa-1");
    let provider = Provider::start(&[&key]).await;
    let verifier = provider.verifier(NEVER);
    let store = MemoryStore::new();
    let settings = wsbridge::test_support::Settings::default();
    let sender = wsbridge::test_support::RecordingSender::new();
    let request = |token: &str| {
        let mut request = ws_request("jwks-conn=", None);
        request.query_string_parameters =
            HashMap::from([("token".to_owned(), token.to_owned())]).into();
        request
    };

    // WHEN a token for a user of the provider connects
    let response = connect::handle(
        &request(&key.token("cognito-user-1")),
        &verifier,
        &settings.context(&store, &sender),
    )
    .await;

    // THEN the connection is registered to that user
    assert_eq!(response.status_code, 200);
    let stored = store
        .get_connection(&ConnectionId::new("jwks-conn="))
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(stored.user_id, UserId::new("cognito-user-1"));

    // AND a token for another audience of the same provider is refused with 401
    let other_app = {
        let header = Header {
            kid: Some("rsa-1".into()),
            ..Header::new(Algorithm::RS256)
        };
        let claims =
            json!({"sub": "u", "iss": ISSUER, "aud": "another-app", "exp": now_seconds() + 600});
        jsonwebtoken::encode(&header, &claims, &key.private).unwrap()
    };
    let store = MemoryStore::new();
    let response = connect::handle(
        &request(&other_app),
        &verifier,
        &settings.context(&store, &sender),
    )
    .await;
    assert_eq!(response.status_code, 401);
    assert_eq!(store.count_connections().await.unwrap(), 0);
}
