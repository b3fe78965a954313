//! Development scaffolding: the published secrets, configurations that accept them, and
//! minting tokens — for the local gateway, the sample events, tests and benchmarks.
//!
//! This module depends on `auth` and `config`, never the reverse: nothing a deployed
//! function runs reaches it, and the functions' configuration refuses these secrets.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::auth::now_seconds;
use crate::config::{AuthConfig, ConfigError, JwtKey};

/// The secret the local gateway verifies with unless told otherwise, and that the tests and
/// benchmarks sign with. It is public: `AuthConfig::from_env` refuses it.
pub const DEV_SECRET: &str = "wsbridge-local-dev-secret-not-for-production";

/// The secret the sample events' tokens (`events/`) are signed with and `events/env.json`
/// gives the connect function for `sam local invoke`. It is public too: the connect function
/// accepts it only where SAM CLI runs it (`AWS_SAM_LOCAL=true`), and a deployment never has
/// it, since the template takes the HS256 secret from Secrets Manager.
pub const SAM_LOCAL_SECRET: &str = "wsbridge-sam-local-only-secret-not-for-production";

/// HS256 with `DEV_SECRET`, no issuer or audience, no clock leeway: what the tests and the
/// local tools verify with.
pub fn auth_config() -> AuthConfig {
    hs256(DEV_SECRET)
}

/// HS256 with `SAM_LOCAL_SECRET`: how the connect function verifies the sample events.
pub fn sample_events_auth_config() -> AuthConfig {
    hs256(SAM_LOCAL_SECRET)
}

fn hs256(secret: &str) -> AuthConfig {
    AuthConfig {
        key: JwtKey::Secret(secret.to_owned()),
        issuer: None,
        audience: None,
        leeway: Duration::ZERO,
    }
}

/// The local gateway's configuration: the functions' variables, with `JWT_SECRET` defaulting
/// to `DEV_SECRET` when no key is configured, and the published secrets allowed (the gateway
/// listens on loopback).
pub fn local_auth_config(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<AuthConfig, ConfigError> {
    let key_configured = AuthConfig::KEY_SOURCES
        .iter()
        .any(|name| lookup(name).is_some_and(|v| !v.is_empty()));
    AuthConfig::parse(&|name: &str| match lookup(name) {
        None if name == "JWT_SECRET" && !key_configured => Some(DEV_SECRET.to_owned()),
        value => value,
    })
}

/// The claims of a dev token. `exp` and `sub` are what wsbridge requires.
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
    pub fn new(sub: impl Into<String>, valid_for: Duration) -> Self {
        Self {
            sub: sub.into(),
            exp: now_seconds() + valid_for.as_secs(),
            nbf: None,
            iss: None,
            aud: None,
        }
    }
}

/// Signs an HS256 token: for the local gateway's dev tokens, tests and benchmarks.
pub fn sign_hs256(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::lookup;

    #[test]
    fn deployed_configuration_refuses_the_dev_secret_and_the_gateway_defaults_to_it() {
        // GIVEN JWT_SECRET set to the dev secret: a deployed function refuses to start
        assert!(matches!(
            AuthConfig::from_lookup(lookup(&[("JWT_SECRET", DEV_SECRET)])),
            Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                ..
            })
        ));
        // GIVEN nothing set: the local gateway verifies with the dev secret
        assert_eq!(
            local_auth_config(lookup(&[])).unwrap().key,
            auth_config().key
        );
        // GIVEN the dev secret and an issuer: the gateway takes both
        let local = local_auth_config(lookup(&[
            ("JWT_SECRET", DEV_SECRET),
            ("JWT_ISSUER", "https://id.example.com"),
        ]))
        .unwrap();
        assert_eq!(local.issuer.as_deref(), Some("https://id.example.com"));
    }

    #[test]
    fn the_gateway_uses_a_configured_key_instead_of_the_dev_secret() {
        let other = "another-secret-of-at-least-32-bytes-long";
        let local = local_auth_config(lookup(&[("JWT_SECRET", other)])).unwrap();
        assert_eq!(local.key, JwtKey::Secret(other.into()));
        // A JWKS instead: no dev secret added next to it (two key sources would be refused)
        let jwks = local_auth_config(lookup(&[
            ("JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json"),
            ("JWT_ISSUER", "https://id.example.com"),
            ("JWT_AUDIENCE", "wsbridge"),
        ]))
        .unwrap();
        assert!(matches!(jwks.key, JwtKey::Jwks(_)));
    }

    #[test]
    fn the_sam_local_secret_is_accepted_only_where_sam_cli_runs_the_function() {
        let sam = lookup(&[("JWT_SECRET", SAM_LOCAL_SECRET), ("AWS_SAM_LOCAL", "true")]);
        assert_eq!(
            AuthConfig::from_lookup(sam).unwrap(),
            sample_events_auth_config_with_default_leeway()
        );
        for marker in [None, Some("false"), Some("")] {
            let mut vars = vec![("JWT_SECRET", SAM_LOCAL_SECRET)];
            vars.extend(marker.map(|m| ("AWS_SAM_LOCAL", m)));
            assert!(
                matches!(
                    AuthConfig::from_lookup(lookup(&vars)),
                    Err(ConfigError::Invalid {
                        name: "JWT_SECRET",
                        ..
                    })
                ),
                "AWS_SAM_LOCAL={marker:?}"
            );
        }
    }

    fn sample_events_auth_config_with_default_leeway() -> AuthConfig {
        AuthConfig {
            leeway: Duration::from_secs(30),
            ..sample_events_auth_config()
        }
    }
}
