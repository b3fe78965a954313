//! Verifying the JWT a client presents on `$connect`, and finding it in the request.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use serde_json::{Map, Value};

use crate::config::{AuthConfig, ConfigError, JwtKey};
use crate::protocol::UserId;

/// The secret the sample events, the local gateway and the tests sign with. Local use only:
/// it is public, so a deployment configured with it accepts anyone's tokens.
pub const DEV_SECRET: &str = "wsbridge-local-dev-secret-not-for-production";

/// Tokens longer than this are refused before any parsing: no legitimate identity token is
/// near 8 KB, and a bound keeps hostile input cheap.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims wsbridge reads. `exp` and `sub` are required; `nbf`, `iss` and `aud` are checked
/// by `jsonwebtoken` when present or configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    /// A token's claims for `sub`, valid from now for `valid_for`.
    pub fn new(sub: impl Into<String>, valid_for: std::time::Duration) -> Self {
        Self {
            sub: sub.into(),
            exp: now_seconds() + valid_for.as_secs(),
            nbf: None,
            iss: None,
            aud: None,
        }
    }
}

/// Why a token was refused. Logged for operators, never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token: pass ?token=… or Authorization: Bearer …")]
    Missing,
    #[error("token is {0} bytes; the limit is {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    #[error("token has an empty sub")]
    EmptySubject,
    #[error("token's sub is not a string")]
    SubjectNotAString,
    #[error(transparent)]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// A token that passed verification.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The `sub` claim.
    pub user_id: UserId,
    /// Every claim of the token, `sub` included.
    pub claims: Map<String, Value>,
}

/// Verifies tokens with one pinned algorithm and key, built once at start-up.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        let key = match &config.key {
            JwtKey::Secret(secret) => DecodingKey::from_secret(secret.as_bytes()),
            JwtKey::PublicKeyPem(pem) => {
                let parsed = match config.algorithm {
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                    _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
                };
                parsed.map_err(|e| ConfigError::Invalid {
                    name: "JWT_PUBLIC_KEY",
                    reason: format!("not a {:?} public key in PEM: {e}", config.algorithm),
                })?
            }
        };
        // `Validation::new` allows exactly one algorithm: `alg: none` and an HS256 token
        // signed with an RS256 public key (key confusion) both fail here.
        let mut validation = Validation::new(config.algorithm);
        // A configured issuer or audience must also be present: jsonwebtoken checks only
        // the claims a token carries unless they are required.
        let mut required = vec!["exp", "sub"];
        if config.issuer.is_some() {
            required.push("iss");
        }
        if config.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            // Without a configured audience a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    /// Verifies a token and returns its user and every claim it carries (the channel
    /// configuration reads grants from a claim it names). Async because a key source may
    /// need to be fetched (JWKS).
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge(token.len()));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)?;
        let user_id = match data.claims.get("sub") {
            Some(Value::String(sub)) if sub.is_empty() => return Err(AuthError::EmptySubject),
            Some(Value::String(sub)) => UserId::new(sub.clone()),
            _ => return Err(AuthError::SubjectNotAString),
        };
        Ok(VerifiedToken {
            user_id,
            claims: data.claims,
        })
    }
}

/// The token of a `$connect` request: the `token` query parameter (browsers cannot set headers
/// on a WebSocket), else `Authorization: Bearer …` (servers and native clients).
pub fn token_of(request: &ApiGatewayWebsocketProxyRequest) -> Option<&str> {
    if let Some(token) = request
        .query_string_parameters
        .first("token")
        .filter(|t| !t.is_empty())
    {
        return Some(token);
    }
    let header = request
        .headers
        .get(lambda_http::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Signs an HS256 token: for the local gateway's dev tokens and for tests.
pub fn sign_hs256(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Seconds since the Unix epoch (kept here too: the store and handlers read it from `auth`).
pub use crate::clock::now_seconds;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RSA_PRIVATE: &str = include_str!("../testdata/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../testdata/rsa-public.pem");
    const EC_PRIVATE: &str = include_str!("../testdata/ec-private.pem");
    const EC_PUBLIC: &str = include_str!("../testdata/ec-public.pem");

    fn hs256_config() -> AuthConfig {
        AuthConfig::dev()
    }

    fn pem_config(algorithm: Algorithm, public: &str) -> AuthConfig {
        AuthConfig {
            algorithm,
            key: JwtKey::PublicKeyPem(public.to_owned()),
            ..hs256_config()
        }
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
    async fn valid_rs256_and_es256_tokens_are_accepted() {
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = sign_with(Algorithm::RS256, &rsa, &claims("rsa-user"));
        let config = pem_config(Algorithm::RS256, RSA_PUBLIC);
        assert_eq!(
            verifier(&config)
                .verify(&token)
                .await
                .unwrap()
                .user_id
                .as_str(),
            "rsa-user"
        );

        let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let token = sign_with(Algorithm::ES256, &ec, &claims("ec-user"));
        let config = pem_config(Algorithm::ES256, EC_PUBLIC);
        assert_eq!(
            verifier(&config)
                .verify(&token)
                .await
                .unwrap()
                .user_id
                .as_str(),
            "ec-user"
        );
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

    #[test]
    fn a_public_key_that_is_not_pem_is_a_config_error() {
        let config = pem_config(Algorithm::RS256, "not a key");
        assert!(matches!(
            TokenVerifier::new(&config),
            Err(ConfigError::Invalid {
                name: "JWT_PUBLIC_KEY",
                ..
            })
        ));
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
}
