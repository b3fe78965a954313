//! Verifying the JWT a client presents on `$connect`, and finding it in the request.

mod jwks;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{ASYMMETRIC_ALGORITHMS, AuthConfig, ConfigError, JwtKey};
use crate::protocol::UserId;
use jwks::JwksKeys;

/// Tokens longer than this are refused before any parsing: no legitimate identity token is
/// near 8 KB, and a bound keeps hostile input cheap.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. Logged for operators, never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token is {0} bytes; the limit is {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    #[error("token has an empty sub")]
    EmptySubject,
    #[error("token's sub is not a string")]
    SubjectNotAString,
    #[error("token names no key (kid), and keys come from a JWK set")]
    MissingKeyId,
    #[error("no key {0:?} in the JWK set (checked again at most once per refresh interval)")]
    UnknownKeyId(String),
    #[error("key {kid:?} does not verify {algorithm:?} tokens")]
    AlgorithmMismatch { kid: String, algorithm: Algorithm },
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

/// Where verification keys come from.
enum Keys {
    /// One key and the one algorithm it verifies (HS256 secret, PEM public key).
    Pinned {
        key: DecodingKey,
        algorithm: Algorithm,
    },
    /// A JWK set: the token's `kid` picks the key, which says which algorithms it verifies.
    Jwks(JwksKeys),
}

/// Verifies tokens with the keys configured at start-up.
pub struct TokenVerifier {
    keys: Keys,
    /// One validation per algorithm a key here may verify, each allowing only that one:
    /// `alg: none` and an HS256 token signed with a public key (key confusion) both fail.
    validations: Vec<(Algorithm, Validation)>,
}

impl TokenVerifier {
    /// Builds the keys (a JWKS URL is fetched on first use, not here).
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        let (keys, algorithms) = match &config.key {
            JwtKey::Secret(secret) => (
                Keys::Pinned {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    algorithm: Algorithm::HS256,
                },
                vec![Algorithm::HS256],
            ),
            JwtKey::PublicKeyPem { algorithm, pem } => {
                let parsed = match algorithm {
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
                    _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
                };
                let key = parsed.map_err(|e| ConfigError::Invalid {
                    name: "JWT_PUBLIC_KEY",
                    reason: format!("not a {algorithm:?} public key in PEM: {e}"),
                })?;
                let pinned = Keys::Pinned {
                    key,
                    algorithm: *algorithm,
                };
                (pinned, vec![*algorithm])
            }
            JwtKey::Jwks(jwks) => (
                Keys::Jwks(JwksKeys::new(jwks)?),
                ASYMMETRIC_ALGORITHMS.to_vec(),
            ),
        };
        let validations = algorithms
            .into_iter()
            .map(|algorithm| (algorithm, validation(config, algorithm)))
            .collect();
        Ok(Self { keys, validations })
    }

    /// Verifies a token and returns its user and every claim it carries (the channel
    /// configuration reads grants from a claim it names). Async because a JWK set may need
    /// to be fetched.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge(token.len()));
        }
        let data = match &self.keys {
            Keys::Pinned { key, algorithm } => self.decode(token, key, *algorithm)?,
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token)?;
                let kid = header.kid.ok_or(AuthError::MissingKeyId)?;
                let entry = jwks.key(&kid).await?;
                // The token's `alg` must be one its key is for: an RSA key never verifies
                // an HS256 token, a key published for RS256 never a PS256 one.
                if !entry.algorithms.contains(&header.alg) {
                    return Err(AuthError::AlgorithmMismatch {
                        kid,
                        algorithm: header.alg,
                    });
                }
                self.decode(token, &entry.key, header.alg)?
            }
        };
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

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
    ) -> Result<jsonwebtoken::TokenData<Map<String, Value>>, AuthError> {
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, v)| v)
            .ok_or_else(|| {
                jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm)
            })?;
        Ok(jsonwebtoken::decode(token, key, validation)?)
    }
}

/// The checks every token passes, for tokens signed with `algorithm`.
fn validation(config: &AuthConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
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
        // `aud` may be one string or a list; either passes when it holds this one.
        Some(audience) => validation.set_audience(&[audience]),
        // Without a configured audience a token's `aud` is not ours to judge.
        None => validation.validate_aud = false,
    }
    validation
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

/// Seconds since the Unix epoch (kept here too: the store and handlers read it from `auth`).
pub use crate::clock::now_seconds;

#[cfg(test)]
mod tests;
