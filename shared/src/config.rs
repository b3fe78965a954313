//! The environment, read once at start-up, typed, and refused early with "X must be set".
//!
//! Each function reads only the parts it needs, so `$disconnect` never sees the JWT secret.
//! Every part lists the variables it reads in `ENV_VARS`: the README table and the template
//! are checked against these lists.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::channels::Channels;
use crate::limits::{ConnectionLimit, LimitPolicy, RateLimit};

/// Why the environment is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} must be set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    lookup(name)
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing(name))
}

fn optional(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).filter(|v| !v.is_empty())
}

fn number<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    valid: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some(raw) = optional(lookup, name) else {
        return Ok(default);
    };
    let value: T = raw.parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("{raw:?} is not a number"),
    })?;
    if !valid.contains(&value) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{value} is outside {}..={}", valid.start(), valid.end()),
        });
    }
    Ok(value)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The DynamoDB table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub table_name: String,
}

impl StoreConfig {
    pub const ENV_VARS: &'static [&'static str] = &["TABLE_NAME"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(&lookup, "TABLE_NAME")?,
        })
    }
}

/// The key material a token is verified with.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(String),
    /// RS256 / ES256 public key, PEM.
    PublicKeyPem(String),
}

// Hand-written so that a secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<redacted>)"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
        }
    }
}

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// How `$connect` verifies tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub algorithm: Algorithm,
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

impl AuthConfig {
    /// HS256 with the public development secret, no issuer or audience, no clock leeway:
    /// what the sample events, the local tools and the tests verify with.
    pub fn dev() -> Self {
        Self {
            algorithm: Algorithm::HS256,
            key: JwtKey::Secret(crate::auth::DEV_SECRET.to_owned()),
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
        }
    }

    pub const ENV_VARS: &'static [&'static str] = &[
        "JWT_ALGORITHM",
        "JWT_SECRET",
        "JWT_PUBLIC_KEY",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_LEEWAY_SECONDS",
    ];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let algorithm = match optional(&lookup, "JWT_ALGORITHM").as_deref() {
            None | Some("HS256") => Algorithm::HS256,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "JWT_ALGORITHM",
                    reason: format!("{other:?}; use HS256, RS256 or ES256"),
                });
            }
        };
        let key = if algorithm == Algorithm::HS256 {
            let secret = required(&lookup, "JWT_SECRET")?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    reason: format!("at least {MIN_SECRET_BYTES} bytes are needed for HS256"),
                });
            }
            JwtKey::Secret(secret)
        } else {
            // Environment variables often cannot hold newlines; accept `\n` escapes.
            JwtKey::PublicKeyPem(required(&lookup, "JWT_PUBLIC_KEY")?.replace("\\n", "\n"))
        };
        Ok(Self {
            algorithm,
            key,
            issuer: optional(&lookup, "JWT_ISSUER"),
            audience: optional(&lookup, "JWT_AUDIENCE"),
            leeway: Duration::from_secs(number(&lookup, "JWT_LEEWAY_SECONDS", 30, 0..=300)?),
        })
    }
}

/// Limits of a connection's life, its subscriptions and its user's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a connection's rows live before DynamoDB TTL removes them. API Gateway ends
    /// every connection after 2 h, and `$disconnect` is best-effort, so rows expire by design.
    pub connection_ttl: Duration,
    pub max_topics_per_connection: usize,
    /// Live connections one user may hold, and what a connection past it gets.
    pub connection_limit: ConnectionLimit,
    /// The frame budget of one connection; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

/// Upper bound for `MAX_TOPICS_PER_CONNECTION`: a subscribe is one DynamoDB transaction of one
/// update plus one put per topic, and a transaction holds at most 100 items.
pub const MAX_TOPICS_LIMIT: usize = 99;

/// API Gateway's 2 h maximum connection time plus 5 min for clock skew.
const DEFAULT_CONNECTION_TTL_SECONDS: u64 = 7_500;
const DEFAULT_MAX_TOPICS: usize = 50;
/// A phone, a laptop and a few tabs; scripts opening connections in a loop stop here.
const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 10;
/// Upper bound for `MAX_CONNECTIONS_PER_USER`: the user's connection ids share one DynamoDB
/// item, rewritten on every connect.
pub const MAX_CONNECTIONS_PER_USER_LIMIT: usize = 1_000;
/// 10 frames a second sustained, bursts of 40: a person chatting, typing and re-subscribing
/// after a reconnect stays far below it; a script flooding frames meets it within 40 frames.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 10,
    burst: 40,
};

impl SessionConfig {
    pub const ENV_VARS: &'static [&'static str] = &[
        "CONNECTION_TTL_SECONDS",
        "MAX_TOPICS_PER_CONNECTION",
        "MAX_CONNECTIONS_PER_USER",
        "CONNECTION_LIMIT_POLICY",
        "RATE_LIMIT_PER_SECOND",
        "RATE_LIMIT_BURST",
    ];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let policy = match optional(&lookup, "CONNECTION_LIMIT_POLICY").as_deref() {
            None | Some("refuse") => LimitPolicy::Refuse,
            Some("close_oldest") => LimitPolicy::CloseOldest,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CONNECTION_LIMIT_POLICY",
                    reason: format!("{other:?}; use refuse or close_oldest"),
                });
            }
        };
        let per_second = number(
            &lookup,
            "RATE_LIMIT_PER_SECOND",
            DEFAULT_RATE_LIMIT.per_second,
            0..=1_000,
        )?;
        let burst = number(
            &lookup,
            "RATE_LIMIT_BURST",
            DEFAULT_RATE_LIMIT.burst,
            1..=10_000,
        )?;
        Ok(Self {
            connection_ttl: Duration::from_secs(number(
                &lookup,
                "CONNECTION_TTL_SECONDS",
                DEFAULT_CONNECTION_TTL_SECONDS,
                60..=86_400,
            )?),
            max_topics_per_connection: number(
                &lookup,
                "MAX_TOPICS_PER_CONNECTION",
                DEFAULT_MAX_TOPICS,
                1..=MAX_TOPICS_LIMIT,
            )?,
            connection_limit: ConnectionLimit {
                per_user: number(
                    &lookup,
                    "MAX_CONNECTIONS_PER_USER",
                    DEFAULT_MAX_CONNECTIONS_PER_USER,
                    1..=MAX_CONNECTIONS_PER_USER_LIMIT,
                )?,
                policy,
            },
            // 0 frames a second turns the limit off.
            rate_limit: (per_second > 0).then_some(RateLimit { per_second, burst }),
        })
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            connection_ttl: Duration::from_secs(DEFAULT_CONNECTION_TTL_SECONDS),
            max_topics_per_connection: DEFAULT_MAX_TOPICS,
            connection_limit: ConnectionLimit {
                per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
                policy: LimitPolicy::Refuse,
            },
            rate_limit: Some(DEFAULT_RATE_LIMIT),
        }
    }
}

/// The channel configuration (`CHANNELS_CONFIG`, JSON); unset or empty: the built-in policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelsConfig {
    pub channels: Channels,
}

impl ChannelsConfig {
    pub const ENV_VARS: &'static [&'static str] = &["CHANNELS_CONFIG"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let Some(json) = optional(&lookup, "CHANNELS_CONFIG") else {
            return Ok(Self::default());
        };
        Ok(Self {
            channels: Channels::parse(&json).map_err(|e| ConfigError::Invalid {
                name: "CHANNELS_CONFIG",
                reason: e.to_string(),
            })?,
        })
    }
}

/// Where the management API (`@connections`) is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagementConfig {
    /// Sends every PostToConnection and DeleteConnection here instead of the endpoint stored
    /// with the connection: a custom domain, or the local gateway.
    pub endpoint_override: Option<String>,
}

impl ManagementConfig {
    pub const ENV_VARS: &'static [&'static str] = &["WS_MANAGEMENT_ENDPOINT"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint_override: optional(&lookup, "WS_MANAGEMENT_ENDPOINT"),
        })
    }
}

/// PostToConnection calls in flight at once, unless `FANOUT_CONCURRENCY` says otherwise.
pub const DEFAULT_FANOUT_CONCURRENCY: usize = 50;

/// How the broadcast function fans out and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastConfig {
    /// PostToConnection calls in flight at once.
    pub concurrency: usize,
    /// When set, `POST /broadcast` and `GET /connections/count` need `x-api-key: <key>`.
    pub api_key: Option<String>,
    /// Print one CloudWatch Embedded Metric Format line per broadcast (in Lambda).
    pub emit_metrics: bool,
}

impl BroadcastConfig {
    pub const ENV_VARS: &'static [&'static str] = &["FANOUT_CONCURRENCY", "BROADCAST_API_KEY"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            concurrency: number(
                &lookup,
                "FANOUT_CONCURRENCY",
                DEFAULT_FANOUT_CONCURRENCY,
                1..=1_000,
            )?,
            api_key: optional(&lookup, "BROADCAST_API_KEY"),
            emit_metrics: false,
        })
    }
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_FANOUT_CONCURRENCY,
            api_key: None,
            emit_metrics: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn missing_required_variables_are_named() {
        assert_eq!(
            StoreConfig::from_lookup(lookup(&[])),
            Err(ConfigError::Missing("TABLE_NAME"))
        );
        assert_eq!(
            AuthConfig::from_lookup(lookup(&[])),
            Err(ConfigError::Missing("JWT_SECRET"))
        );
        assert_eq!(
            AuthConfig::from_lookup(lookup(&[("JWT_ALGORITHM", "RS256")])),
            Err(ConfigError::Missing("JWT_PUBLIC_KEY"))
        );
        assert_eq!(
            ConfigError::Missing("TABLE_NAME").to_string(),
            "TABLE_NAME must be set"
        );
    }

    #[test]
    fn auth_defaults_to_hs256_and_reads_optional_claims() {
        let config = AuthConfig::from_lookup(lookup(&[
            ("JWT_SECRET", SECRET),
            ("JWT_ISSUER", "https://issuer"),
        ]))
        .unwrap();
        assert_eq!(config.algorithm, Algorithm::HS256);
        assert_eq!(config.issuer.as_deref(), Some("https://issuer"));
        assert_eq!(config.audience, None);
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert!(!format!("{config:?}").contains(SECRET));
    }

    #[test]
    fn weak_secrets_unknown_algorithms_and_bad_numbers_are_refused() {
        assert!(matches!(
            AuthConfig::from_lookup(lookup(&[("JWT_SECRET", "short")])),
            Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                ..
            })
        ));
        assert!(matches!(
            AuthConfig::from_lookup(lookup(&[("JWT_ALGORITHM", "none"), ("JWT_SECRET", SECRET)])),
            Err(ConfigError::Invalid {
                name: "JWT_ALGORITHM",
                ..
            })
        ));
        assert!(matches!(
            BroadcastConfig::from_lookup(lookup(&[("FANOUT_CONCURRENCY", "lots")])),
            Err(ConfigError::Invalid {
                name: "FANOUT_CONCURRENCY",
                ..
            })
        ));
        assert!(matches!(
            SessionConfig::from_lookup(lookup(&[("MAX_TOPICS_PER_CONNECTION", "100")])),
            Err(ConfigError::Invalid {
                name: "MAX_TOPICS_PER_CONNECTION",
                ..
            })
        ));
    }

    #[test]
    fn limits_default_on_and_can_be_tuned_or_turned_off() {
        let session = SessionConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(
            session.connection_limit,
            ConnectionLimit {
                per_user: 10,
                policy: LimitPolicy::Refuse
            }
        );
        assert_eq!(session.rate_limit, Some(DEFAULT_RATE_LIMIT));
        let tuned = SessionConfig::from_lookup(lookup(&[
            ("MAX_CONNECTIONS_PER_USER", "3"),
            ("CONNECTION_LIMIT_POLICY", "close_oldest"),
            ("RATE_LIMIT_PER_SECOND", "0"),
        ]))
        .unwrap();
        assert_eq!(tuned.connection_limit.per_user, 3);
        assert_eq!(tuned.connection_limit.policy, LimitPolicy::CloseOldest);
        assert_eq!(tuned.rate_limit, None);
        for (name, value) in [
            ("CONNECTION_LIMIT_POLICY", "evict"),
            ("MAX_CONNECTIONS_PER_USER", "0"),
            ("RATE_LIMIT_BURST", "0"),
        ] {
            let error = SessionConfig::from_lookup(lookup(&[(name, value)])).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { name: n, .. } if *n == name),
                "{name}={value}: {error}"
            );
        }
    }

    #[test]
    fn a_bad_channel_configuration_refuses_to_start_naming_the_entry() {
        assert_eq!(
            ChannelsConfig::from_lookup(lookup(&[])).unwrap().channels,
            Channels::default()
        );
        let error = ChannelsConfig::from_lookup(lookup(&[(
            "CHANNELS_CONFIG",
            r#"{"namespaces":{"room":{"subscribe":"anyone"}}}"#,
        )]))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("CHANNELS_CONFIG is invalid: namespaces.room.subscribe: "),
            "{error}"
        );
    }

    #[test]
    fn defaults_apply_when_unset() {
        let session = SessionConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(session.connection_ttl, Duration::from_secs(7_500));
        assert_eq!(session.max_topics_per_connection, 50);
        let broadcast = BroadcastConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(broadcast.concurrency, 50);
        assert_eq!(broadcast.api_key, None);
    }
}
