//! A JWK set (RFC 7517): the keys an identity provider signs with, chosen by a token's `kid`.
//!
//! A set at a URL is fetched on first use and kept. A `kid` it lacks (the provider rotated
//! its keys) or keys older than `max_age` cause one more fetch, but never two within the
//! refresh interval (10 s after a failed one, if shorter): a flood of tokens with made-up
//! `kid`s costs the provider one request per interval, and concurrent verifications wait for
//! the one fetch in flight instead of starting their own. A failed fetch or a malformed set
//! changes nothing: the keys held stay, and a token whose key is not among them is refused.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tracing::{info, warn};

use super::AuthError;
use crate::config::{ConfigError, JwksConfig, JwksSource};
use crate::https::{HttpsClient, chain};

/// A fetch gives up after this long: a `$connect` waits for it, and API Gateway gives the
/// handshake 29 s.
const FETCH_TIMEOUT: Duration = Duration::from_secs(4);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest JWK set read. Providers publish a few keys in a few KB (certificate chains
/// included, tens of KB); a bound keeps a broken or hostile endpoint from filling memory.
pub const MAX_JWKS_BYTES: usize = 128 * 1024;
/// After a failed fetch, the next may come this soon even if the refresh interval is longer:
/// a cold start during a provider hiccup should not refuse everyone for the whole interval.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// A key of the set and the algorithms it may verify.
pub(super) struct VerificationKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

type KeyMap = HashMap<String, Arc<VerificationKey>>;

#[derive(Default)]
struct Held {
    keys: KeyMap,
    /// The last fetch that gave keys.
    fetched_at: Option<Instant>,
    /// The last fetch tried, and whether it failed.
    attempted_at: Option<Instant>,
    failed: bool,
}

pub(super) struct JwksKeys {
    /// `None` for an inline set: nothing to fetch. Boxed: the HTTPS client is large, and
    /// these keys are one variant of an enum of small ones.
    fetcher: Option<Box<Fetcher>>,
    pinned: Option<Algorithm>,
    refresh_interval: Duration,
    max_age: Duration,
    held: RwLock<Held>,
    /// Held while fetching: the single flight.
    refreshing: tokio::sync::Mutex<()>,
}

impl JwksKeys {
    pub fn new(config: &JwksConfig) -> Result<Self, ConfigError> {
        let mut held = Held::default();
        let fetcher = match &config.source {
            JwksSource::Inline(json) => {
                held.keys =
                    parse_key_set(json, config.algorithm).map_err(|e| ConfigError::Invalid {
                        name: "JWT_JWKS",
                        reason: e.to_string(),
                    })?;
                None
            }
            JwksSource::Url(url) => Some(Box::new(Fetcher::new(url)?)),
        };
        Ok(Self {
            fetcher,
            pinned: config.algorithm,
            refresh_interval: config.refresh_interval,
            max_age: config.max_age,
            held: RwLock::new(held),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The key named `kid`, fetching the set first if it lacks the key (or is old) and a
    /// fetch is due.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, AuthError> {
        let (key, due) = self.lookup(kid);
        if !due {
            return key.ok_or_else(|| AuthError::UnknownKeyId(kid.to_owned()));
        }
        {
            let _single_flight = self.refreshing.lock().await;
            // Verifications that waited here find the keys the first one fetched, and no
            // fetch due: a burst makes one request.
            let (key, due) = self.lookup(kid);
            if !due {
                return key.ok_or_else(|| AuthError::UnknownKeyId(kid.to_owned()));
            }
            self.refresh().await;
        }
        self.lookup(kid)
            .0
            .ok_or_else(|| AuthError::UnknownKeyId(kid.to_owned()))
    }

    /// The key held for `kid`, and whether a fetch is due for it now.
    fn lookup(&self, kid: &str) -> (Option<Arc<VerificationKey>>, bool) {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still
        // whole (it is replaced, never edited in place).
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let key = held.keys.get(kid).cloned();
        if self.fetcher.is_none() {
            return (key, false);
        }
        let now = Instant::now();
        let old = held
            .fetched_at
            .is_none_or(|at| now.duration_since(at) >= self.max_age);
        let wait = if held.failed {
            self.refresh_interval.min(RETRY_AFTER_FAILURE)
        } else {
            self.refresh_interval
        };
        let allowed = held
            .attempted_at
            .is_none_or(|at| now.duration_since(at) >= wait);
        (key.clone(), allowed && (key.is_none() || old))
    }

    async fn refresh(&self) {
        let Some(fetcher) = &self.fetcher else {
            return;
        };
        let fetched = fetcher.fetch().await.and_then(|body| {
            parse_key_set(&body, self.pinned).map_err(|e| FetchError::Malformed(e.to_string()))
        });
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        held.attempted_at = Some(now);
        match fetched {
            Ok(keys) => {
                info!(url = %fetcher.url, keys = keys.len(), "JWK set fetched");
                held.keys = keys;
                held.fetched_at = Some(now);
                held.failed = false;
            }
            Err(error) => {
                // Keys held stay: a provider outage must not turn away every user whose
                // key is known, nor let anything unverified through.
                warn!(url = %fetcher.url, %error, keys_kept = held.keys.len(), "JWK set fetch failed");
                held.failed = true;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    TimedOut,
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("malformed JWK set: {0}")]
    Malformed(String),
}

impl From<hyper_util::client::legacy::Error> for FetchError {
    fn from(error: hyper_util::client::legacy::Error) -> Self {
        Self::Http(chain(&error))
    }
}

impl From<hyper::Error> for FetchError {
    fn from(error: hyper::Error) -> Self {
        Self::Http(chain(&error))
    }
}

struct Fetcher {
    url: http::Uri,
    /// The bridge's HTTPS client (redirects are never followed: the configured URL is the
    /// one trusted).
    client: HttpsClient,
}

impl Fetcher {
    fn new(url: &str) -> Result<Self, ConfigError> {
        let url = url.parse().map_err(|e| ConfigError::Invalid {
            name: "JWT_JWKS_URL",
            reason: format!("not a URL: {e}"),
        })?;
        Ok(Self {
            url,
            client: crate::https::client(Some(CONNECT_TIMEOUT)),
        })
    }

    async fn fetch(&self) -> Result<String, FetchError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.exchange())
            .await
            .unwrap_or(Err(FetchError::TimedOut))
    }

    async fn exchange(&self) -> Result<String, FetchError> {
        let request = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let response = self.client.request(request).await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        if response
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        // Read frame by frame: a missing or false Content-Length must not get past the bound.
        let mut body = response.into_body();
        let mut read = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Some(chunk) = frame?.data_ref() {
                if read.len() + chunk.len() > MAX_JWKS_BYTES {
                    return Err(FetchError::TooLarge);
                }
                read.extend_from_slice(chunk);
            }
        }
        String::from_utf8(read).map_err(|_| FetchError::NotUtf8)
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum KeySetError {
    #[error("not a JWK set ({{\"keys\": [...]}}): {0}")]
    NotAKeySet(serde_json::Error),
    #[error("no usable signing key among {0} keys (RSA, EC P-256 or Ed25519, with a kid)")]
    NoUsableKey(usize),
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWK set document, by `kid`. Keys this bridge cannot or must not use
/// are left out with a warning (a provider may publish encryption keys next to signing
/// keys); a set with none left is an error.
pub(super) fn parse_key_set(json: &str, pinned: Option<Algorithm>) -> Result<KeyMap, KeySetError> {
    let document: Document = serde_json::from_str(json).map_err(KeySetError::NotAKeySet)?;
    let total = document.keys.len();
    let mut keys = KeyMap::new();
    for value in document.keys {
        match usable_key(value, pinned) {
            Ok((kid, key)) => {
                if keys.contains_key(&kid) {
                    warn!(%kid, "JWK set names two keys with one kid; keeping the first");
                    continue;
                }
                keys.insert(kid, Arc::new(key));
            }
            Err(reason) => warn!(%reason, "JWK left out"),
        }
    }
    if keys.is_empty() {
        return Err(KeySetError::NoUsableKey(total));
    }
    Ok(keys)
}

fn usable_key(
    value: serde_json::Value,
    pinned: Option<Algorithm>,
) -> Result<(String, VerificationKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err(format!("{kid}: not a signing key (use)"));
    }
    let algorithms: Vec<Algorithm> = algorithms_of(&jwk)
        .map_err(|reason| format!("{kid}: {reason}"))?
        .into_iter()
        .filter(|a| pinned.is_none_or(|p| p == *a))
        .collect();
    if algorithms.is_empty() {
        return Err(format!("{kid}: not for JWT_ALGORITHM {pinned:?}"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{kid}: {e}"))?;
    Ok((kid, VerificationKey { key, algorithms }))
}

/// The algorithms a JWK may verify: its `alg` when it names one, else every algorithm its
/// key type is for. Symmetric (`oct`) keys never: anyone who can read a public set could
/// sign with them.
fn algorithms_of(jwk: &Jwk) -> Result<Vec<Algorithm>, String> {
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[Algorithm::RS256, Algorithm::PS256],
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            &[Algorithm::ES256]
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (oct) key".into()),
        _ => return Err("unsupported key type or curve".into()),
    };
    match jwk.common.key_algorithm {
        None => Ok(by_type.to_vec()),
        Some(named) => match Algorithm::try_from(named) {
            Ok(algorithm) if by_type.contains(&algorithm) => Ok(vec![algorithm]),
            _ => Err(format!("alg {named} is not supported for this key type")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;

    const RSA_PRIVATE: &str = include_str!("../../testdata/rsa-private.pem");
    const EC_PRIVATE: &str = include_str!("../../testdata/ec-private.pem");
    const ED_PRIVATE: &str = include_str!("../../testdata/ed25519-private.pem");

    fn jwk(key: &EncodingKey, algorithm: Algorithm, kid: &str) -> serde_json::Value {
        let mut jwk = Jwk::from_encoding_key(key, algorithm).unwrap();
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    fn rsa() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
    }

    fn set(keys: &[serde_json::Value]) -> String {
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn algorithms(keys: &KeyMap, kid: &str) -> Vec<Algorithm> {
        keys[kid].algorithms.clone()
    }

    #[test]
    fn each_key_verifies_its_own_alg_or_what_its_type_allows() {
        // GIVEN an RSA key with alg RS256, one with no alg, an EC and an Ed25519 key
        let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        let mut no_alg = jwk(&rsa(), Algorithm::RS256, "rsa-any");
        no_alg.as_object_mut().unwrap().remove("alg");
        let json = set(&[
            jwk(&rsa(), Algorithm::RS256, "rsa"),
            no_alg,
            jwk(&ec, Algorithm::ES256, "ec"),
            jwk(&ed, Algorithm::EdDSA, "ed"),
        ]);

        // WHEN the set is read
        let keys = parse_key_set(&json, None).unwrap();

        // THEN each key is known by its kid, for the algorithms it may verify
        assert_eq!(algorithms(&keys, "rsa"), [Algorithm::RS256]);
        assert_eq!(
            algorithms(&keys, "rsa-any"),
            [Algorithm::RS256, Algorithm::PS256]
        );
        assert_eq!(algorithms(&keys, "ec"), [Algorithm::ES256]);
        assert_eq!(algorithms(&keys, "ed"), [Algorithm::EdDSA]);

        // AND a pinned JWT_ALGORITHM leaves out keys for anything else
        let pinned = parse_key_set(&json, Some(Algorithm::PS256)).unwrap();
        assert_eq!(pinned.keys().collect::<Vec<_>>(), ["rsa-any"]);
    }

    #[test]
    fn symmetric_encryption_kidless_and_mislabelled_keys_are_left_out() {
        let mut encryption = jwk(&rsa(), Algorithm::RS256, "enc");
        encryption["use"] = "enc".into();
        let mut mislabelled = jwk(&rsa(), Algorithm::RS256, "rsa-as-es");
        mislabelled["alg"] = "ES256".into();
        let mut hmac_labelled = jwk(&rsa(), Algorithm::RS256, "rsa-as-hs");
        hmac_labelled["alg"] = "HS256".into();
        let mut kidless = jwk(&rsa(), Algorithm::RS256, "x");
        kidless.as_object_mut().unwrap().remove("kid");
        let oct = serde_json::json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0", "alg": "HS256"});
        let good = jwk(&rsa(), Algorithm::RS256, "good");

        let keys = parse_key_set(
            &set(&[
                encryption,
                mislabelled,
                hmac_labelled,
                kidless,
                oct.clone(),
                serde_json::json!({"kty": "nonsense"}),
                good,
            ]),
            None,
        )
        .unwrap();

        assert_eq!(keys.keys().collect::<Vec<_>>(), ["good"]);
        // A set of nothing but a symmetric key is no key set at all.
        assert!(matches!(
            parse_key_set(&set(&[oct]), None),
            Err(KeySetError::NoUsableKey(1))
        ));
    }

    #[test]
    fn documents_that_are_not_key_sets_are_errors() {
        for json in [
            "",
            "[]",
            "{}",
            r#"{"keys": {}}"#,
            "<html>",
            r#"{"keys": []}"#,
        ] {
            assert!(parse_key_set(json, None).is_err(), "{json:?}");
        }
    }
}
