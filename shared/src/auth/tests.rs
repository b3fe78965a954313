//! Token verification with each kind of key: HS256, PEM public keys, an inline JWK set.
//! (A JWK set fetched over HTTP is tested against a real server in `tests/tests/jwks.rs`.)

use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use super::*;
use crate::config::{JwksConfig, JwksSource};
use crate::dev::{Claims, DEV_SECRET, sign_hs256};

const RSA_PRIVATE: &str = include_str!("../../testdata/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../testdata/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("../../testdata/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../../testdata/ec-public.pem");
const ED_PRIVATE: &str = include_str!("../../testdata/ed25519-private.pem");
const ED_PUBLIC: &str = include_str!("../../testdata/ed25519-public.pem");
const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "wsbridge";

fn hs256_config() -> AuthConfig {
    crate::dev::auth_config()
}

fn pem_config(algorithm: Algorithm, public: &str) -> AuthConfig {
    AuthConfig {
        key: JwtKey::PublicKeyPem {
            algorithm,
            pem: public.to_owned(),
        },
        ..hs256_config()
    }
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap()
}

fn ed() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap()
}

fn claims(sub: &str) -> Claims {
    Claims::new(sub, Duration::from_secs(600))
}

fn sign_with(algorithm: Algorithm, key: &EncodingKey, claims: &impl Serialize) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

fn verifier(config: &AuthConfig) -> TokenVerifier {
    TokenVerifier::new(config).unwrap()
}

#[tokio::test]
async fn valid_hs256_token_yields_its_subject() {
    let token = sign_hs256(DEV_SECRET, &claims("alice")).unwrap();
    let user = verifier(&hs256_config()).verify(&token).await.unwrap();
    assert_eq!(user.user_id, UserId::new("alice"));
}

#[tokio::test]
async fn tokens_signed_with_each_asymmetric_algorithm_verify_with_its_pem_key() {
    let cases = [
        (Algorithm::RS256, rsa(), RSA_PUBLIC),
        (Algorithm::PS256, rsa(), RSA_PUBLIC),
        (Algorithm::ES256, ec(), EC_PUBLIC),
        (Algorithm::EdDSA, ed(), ED_PUBLIC),
    ];
    for (algorithm, private, public) in &cases {
        // GIVEN a verifier pinned to one algorithm and its public key
        let verifier = verifier(&pem_config(*algorithm, public));
        let sub = format!("{algorithm:?}-user");

        // THEN a token signed that way verifies, with its subject
        let token = sign_with(*algorithm, private, &claims(&sub));
        assert_eq!(verifier.verify(&token).await.unwrap().user_id.as_str(), sub);

        // AND a token from the same key under another algorithm of its family does not
        let other = match algorithm {
            Algorithm::RS256 => Some(Algorithm::PS256),
            Algorithm::PS256 => Some(Algorithm::RS256),
            _ => None,
        };
        if let Some(other) = other {
            let token = sign_with(other, private, &claims(&sub));
            assert!(
                verifier.verify(&token).await.is_err(),
                "{other:?} accepted by {algorithm:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_audience_may_be_one_string_or_a_list_holding_ours() {
    // GIVEN a verifier expecting an issuer and an audience
    let config = AuthConfig {
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..pem_config(Algorithm::RS256, RSA_PUBLIC)
    };
    let verifier = verifier(&config);
    let token = |aud: serde_json::Value| {
        let claims = serde_json::json!({
            "sub": "alice", "exp": now_seconds() + 600, "iss": ISSUER, "aud": aud,
        });
        sign_with(Algorithm::RS256, &rsa(), &claims)
    };

    // THEN "aud": "wsbridge" and "aud": [.., "wsbridge", ..] pass
    for aud in [
        serde_json::json!(AUDIENCE),
        serde_json::json!([AUDIENCE]),
        serde_json::json!(["other-app", AUDIENCE]),
    ] {
        let verified = verifier.verify(&token(aud.clone())).await;
        assert_eq!(verified.unwrap().claims["aud"], aud);
    }
    // AND an audience that does not hold ours, as a string or a list, is refused
    for aud in [
        serde_json::json!("other-app"),
        serde_json::json!(["other-app", "third-app"]),
        serde_json::json!([]),
    ] {
        assert!(verifier.verify(&token(aud.clone())).await.is_err(), "{aud}");
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    // GIVEN a token whose header says alg none and whose signature is empty
    let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let body = base64_url(
        serde_json::to_string(&claims("mallory"))
            .unwrap()
            .as_bytes(),
    );
    let token = format!("{header}.{body}.");
    // THEN neither an HS256 nor an RS256 configuration accepts it
    assert!(verifier(&hs256_config()).verify(&token).await.is_err());
    let rs256 = pem_config(Algorithm::RS256, RSA_PUBLIC);
    assert!(verifier(&rs256).verify(&token).await.is_err());
}

#[tokio::test]
async fn hs256_token_signed_with_the_public_key_is_refused_by_rs256_config() {
    // The classic key-confusion attack: the public key used as an HMAC secret.
    let forged = sign_hs256(RSA_PUBLIC, &claims("mallory")).unwrap();
    let config = pem_config(Algorithm::RS256, RSA_PUBLIC);
    assert!(verifier(&config).verify(&forged).await.is_err());
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let v = verifier(&hs256_config());
    let expired = Claims {
        exp: now_seconds() - 10,
        ..claims("alice")
    };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &expired).unwrap())
            .await
            .is_err()
    );
    let early = Claims {
        nbf: Some(now_seconds() + 600),
        ..claims("alice")
    };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &early).unwrap())
            .await
            .is_err()
    );
    let started = Claims {
        nbf: Some(now_seconds() - 10),
        ..claims("alice")
    };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &started).unwrap())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let config = AuthConfig {
        issuer: Some("https://id.example".into()),
        audience: Some("wsbridge".into()),
        ..hs256_config()
    };
    let v = verifier(&config);
    let good = Claims {
        iss: Some("https://id.example".into()),
        aud: Some("wsbridge".into()),
        ..claims("alice")
    };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &good).unwrap())
            .await
            .is_ok()
    );
    let wrong_iss = Claims {
        iss: Some("https://evil.example".into()),
        ..good.clone()
    };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &wrong_iss).unwrap())
            .await
            .is_err()
    );
    let wrong_aud = Claims {
        aud: Some("other-app".into()),
        ..good.clone()
    };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &wrong_aud).unwrap())
            .await
            .is_err()
    );
    let no_iss = Claims {
        iss: None,
        ..good.clone()
    };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &no_iss).unwrap())
            .await
            .is_err()
    );
    let no_aud = Claims { aud: None, ..good };
    assert!(
        v.verify(&sign_hs256(DEV_SECRET, &no_aud).unwrap())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn missing_or_empty_sub_and_missing_exp_are_refused() {
    let v = verifier(&hs256_config());
    let key = EncodingKey::from_secret(DEV_SECRET.as_bytes());
    let no_sub = serde_json::json!({"exp": now_seconds() + 600});
    assert!(
        v.verify(&sign_with(Algorithm::HS256, &key, &no_sub))
            .await
            .is_err()
    );
    let no_exp = serde_json::json!({"sub": "alice"});
    assert!(
        v.verify(&sign_with(Algorithm::HS256, &key, &no_exp))
            .await
            .is_err()
    );
    let empty_sub = claims("");
    assert!(matches!(
        v.verify(&sign_hs256(DEV_SECRET, &empty_sub).unwrap()).await,
        Err(AuthError::EmptySubject)
    ));
}

#[tokio::test]
async fn wrong_secret_garbage_and_oversized_tokens_are_refused() {
    let v = verifier(&hs256_config());
    let other = sign_hs256("another-secret-that-is-32-bytes-long!!", &claims("a")).unwrap();
    assert!(v.verify(&other).await.is_err());
    for garbage in ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        assert!(v.verify(garbage).await.is_err(), "{garbage:?} accepted");
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(v.verify(&huge).await, Err(AuthError::TooLarge(_))));
}

// ---- an inline JWK set (JWT_JWKS) ----

fn jwk(key: &EncodingKey, algorithm: Algorithm, kid: &str) -> serde_json::Value {
    let mut jwk = Jwk::from_encoding_key(key, algorithm).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn jwks_config(keys: &[serde_json::Value]) -> AuthConfig {
    AuthConfig {
        key: JwtKey::Jwks(JwksConfig {
            source: JwksSource::Inline(serde_json::json!({ "keys": keys }).to_string()),
            algorithm: None,
            refresh_interval: Duration::from_secs(300),
            max_age: Duration::from_secs(3_600),
        }),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        leeway: Duration::ZERO,
    }
}

fn signed(algorithm: Algorithm, key: &EncodingKey, kid: Option<&str>, sub: &str) -> String {
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::new(algorithm)
    };
    let claims = serde_json::json!({
        "sub": sub, "exp": now_seconds() + 600, "iss": ISSUER, "aud": AUDIENCE,
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn a_jwk_set_picks_the_key_by_kid_for_each_algorithm() {
    // GIVEN a set of an RSA key (no alg: RS256 and PS256), an EC and an Ed25519 key
    let mut rsa_any = jwk(&rsa(), Algorithm::RS256, "rsa");
    rsa_any.as_object_mut().unwrap().remove("alg");
    let config = jwks_config(&[
        rsa_any,
        jwk(&ec(), Algorithm::ES256, "ec"),
        jwk(&ed(), Algorithm::EdDSA, "ed"),
    ]);
    let verifier = verifier(&config);

    // THEN each token verifies with the key its kid names
    for (algorithm, key, kid) in [
        (Algorithm::RS256, rsa(), "rsa"),
        (Algorithm::PS256, rsa(), "rsa"),
        (Algorithm::ES256, ec(), "ec"),
        (Algorithm::EdDSA, ed(), "ed"),
    ] {
        let token = signed(algorithm, &key, Some(kid), kid);
        assert_eq!(verifier.verify(&token).await.unwrap().user_id.as_str(), kid);
    }

    // AND a token naming a key that is not for its algorithm is refused before any check
    let lying = signed(Algorithm::ES256, &ec(), Some("ed"), "mallory");
    assert!(matches!(
        verifier.verify(&lying).await,
        Err(AuthError::AlgorithmMismatch { .. })
    ));
}

#[tokio::test]
async fn a_jwk_set_refuses_unknown_or_missing_kids_and_algs_its_keys_are_not_for() {
    let config = jwks_config(&[
        jwk(&rsa(), Algorithm::RS256, "rsa"),
        jwk(&ec(), Algorithm::ES256, "ec"),
    ]);
    let verifier = verifier(&config);
    let unknown = signed(Algorithm::RS256, &rsa(), Some("other"), "a");
    assert!(
        matches!(verifier.verify(&unknown).await, Err(AuthError::UnknownKeyId(kid)) if kid == "other")
    );
    let kidless = signed(Algorithm::RS256, &rsa(), None, "a");
    assert!(matches!(
        verifier.verify(&kidless).await,
        Err(AuthError::MissingKeyId)
    ));
    // The key says RS256: the same RSA key under PS256 is refused.
    let pss = signed(Algorithm::PS256, &rsa(), Some("rsa"), "a");
    assert!(matches!(
        verifier.verify(&pss).await,
        Err(AuthError::AlgorithmMismatch {
            algorithm: Algorithm::PS256,
            ..
        })
    ));
    // Key confusion: the RSA key's public modulus as an HMAC secret.
    let public_pem = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());
    let forged = signed(Algorithm::HS256, &public_pem, Some("rsa"), "a");
    assert!(verifier.verify(&forged).await.is_err());
    // alg none, with a kid the set has.
    let header = base64_url(br#"{"alg":"none","typ":"JWT","kid":"rsa"}"#);
    let body = base64_url(br#"{"sub":"mallory","exp":4102444800}"#);
    assert!(verifier.verify(&format!("{header}.{body}.")).await.is_err());
}

#[tokio::test]
async fn a_jwk_set_checks_issuer_and_audience_like_any_key() {
    let verifier = verifier(&jwks_config(&[jwk(&rsa(), Algorithm::RS256, "rsa")]));
    let header = Header {
        kid: Some("rsa".into()),
        ..Header::new(Algorithm::RS256)
    };
    for claims in [
        serde_json::json!({"sub": "a", "exp": now_seconds() + 600, "iss": ISSUER, "aud": "other"}),
        serde_json::json!({"sub": "a", "exp": now_seconds() + 600, "iss": "https://evil", "aud": AUDIENCE}),
        serde_json::json!({"sub": "a", "exp": now_seconds() + 600, "aud": AUDIENCE}),
        serde_json::json!({"sub": "a", "exp": now_seconds() - 60, "iss": ISSUER, "aud": AUDIENCE}),
    ] {
        let token = jsonwebtoken::encode(&header, &claims, &rsa()).unwrap();
        assert!(verifier.verify(&token).await.is_err(), "{claims}");
    }
}

#[test]
fn an_inline_set_without_usable_keys_is_a_config_error() {
    let oct = serde_json::json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"});
    for config in [jwks_config(&[]), jwks_config(&[oct])] {
        assert!(matches!(
            TokenVerifier::new(&config),
            Err(ConfigError::Invalid {
                name: "JWT_JWKS",
                ..
            })
        ));
    }
}

#[test]
fn a_public_key_that_is_not_pem_is_a_config_error() {
    for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let config = pem_config(algorithm, "not a key");
        assert!(matches!(
            TokenVerifier::new(&config),
            Err(ConfigError::Invalid {
                name: "JWT_PUBLIC_KEY",
                ..
            })
        ));
    }
}

#[test]
fn token_is_found_in_query_or_bearer_header() {
    let mut request = ApiGatewayWebsocketProxyRequest::default();
    assert_eq!(token_of(&request), None);
    request
        .headers
        .insert("authorization", "bearer abc".parse().unwrap());
    assert_eq!(token_of(&request), Some("abc"));
    request
        .headers
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(token_of(&request), None);
    request
        .headers
        .insert("authorization", "Bearer abc".parse().unwrap());
    request.query_string_parameters =
        std::collections::HashMap::from([("token".to_owned(), String::new())]).into();
    assert_eq!(
        token_of(&request),
        Some("abc"),
        "an empty ?token= falls back"
    );
    request.query_string_parameters =
        std::collections::HashMap::from([("token".to_owned(), "q".to_owned())]).into();
    assert_eq!(token_of(&request), Some("q"));
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
