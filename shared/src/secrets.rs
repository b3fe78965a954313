//! Secrets read from Secrets Manager once at start-up.
//!
//! A deployed function is given the *name* of a secret (`JWT_SECRET_ID`,
//! `BROADCAST_API_KEY_SECRET_ID`), never its value, so the value is in no template, stack
//! parameter or Lambda configuration. `resolve` reads each named secret and hands the
//! configuration parsers a lookup in which the plain variable (`JWT_SECRET`,
//! `BROADCAST_API_KEY`) holds the value: parsing stays pure, and local runs and tests set
//! the plain variable directly.

use std::collections::HashMap;
use std::error::Error as StdError;

use async_trait::async_trait;
use aws_config::SdkConfig;

use crate::config::{ConfigError, SecretVar};

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{variable}: cannot read secret {secret_id:?}: {source}")]
    Read {
        variable: &'static str,
        secret_id: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("{variable}: secret {secret_id:?} has no SecretString (store the value as text)")]
    NotText {
        variable: &'static str,
        secret_id: String,
    },
}

/// Where secrets are read: Secrets Manager in a function, anything in a test.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's text, `None` when it holds only binary data.
    async fn secret_string(
        &self,
        secret_id: &str,
    ) -> Result<Option<String>, Box<dyn StdError + Send + Sync>>;
}

/// AWS Secrets Manager (`GetSecretValue`, current version).
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            client: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }
}

#[async_trait]
impl SecretSource for SecretsManager {
    async fn secret_string(
        &self,
        secret_id: &str,
    ) -> Result<Option<String>, Box<dyn StdError + Send + Sync>> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await?;
        Ok(output.secret_string)
    }
}

/// The process environment with the secrets `vars` name read from Secrets Manager: what a
/// function's `main` hands to `XConfig::from_lookup`.
pub async fn resolve_env(
    sdk: &SdkConfig,
    vars: &[SecretVar],
) -> Result<impl Fn(&str) -> Option<String> + use<>, SecretError> {
    resolve(
        |name| std::env::var(name).ok(),
        vars,
        &SecretsManager::new(sdk),
    )
    .await
}

/// `lookup` with each secret that `vars` name by id read from `source` into its plain
/// variable, and the id variable gone. Setting both forms of one secret is an error.
pub async fn resolve<L>(
    lookup: L,
    vars: &[SecretVar],
    source: &dyn SecretSource,
) -> Result<impl Fn(&str) -> Option<String> + use<L>, SecretError>
where
    L: Fn(&str) -> Option<String>,
{
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let mut resolved: HashMap<&'static str, String> = HashMap::new();
    let mut consumed: Vec<&'static str> = Vec::new();
    for var in vars {
        let Some(secret_id) = set(var.secret_id) else {
            continue;
        };
        if set(var.name).is_some() {
            return Err(ConfigError::Invalid {
                name: var.secret_id,
                reason: format!("set {} or {}, not both", var.name, var.secret_id),
            }
            .into());
        }
        let value = source
            .secret_string(&secret_id)
            .await
            .map_err(|source| SecretError::Read {
                variable: var.secret_id,
                secret_id: secret_id.clone(),
                source,
            })?
            .ok_or_else(|| SecretError::NotText {
                variable: var.secret_id,
                secret_id: secret_id.clone(),
            })?;
        resolved.insert(var.name, value);
        consumed.push(var.secret_id);
    }
    Ok(move |name: &str| {
        if consumed.contains(&name) {
            return None;
        }
        resolved.get(name).cloned().or_else(|| lookup(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::lookup;
    use crate::config::{AuthConfig, BroadcastConfig, JwtKey};

    /// Secrets held in memory; what Secrets Manager would answer.
    struct Held(HashMap<&'static str, Option<&'static str>>);

    #[async_trait]
    impl SecretSource for Held {
        async fn secret_string(
            &self,
            secret_id: &str,
        ) -> Result<Option<String>, Box<dyn StdError + Send + Sync>> {
            match self.0.get(secret_id) {
                Some(value) => Ok(value.map(str::to_owned)),
                None => Err(format!("ResourceNotFoundException: {secret_id}").into()),
            }
        }
    }

    const JWT_SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!!";

    fn held() -> Held {
        Held(HashMap::from([
            ("wsbridge/jwt-secret", Some(JWT_SECRET)),
            ("wsbridge/binary", None),
        ]))
    }

    #[tokio::test]
    async fn a_named_secret_takes_the_place_of_the_plain_variable() {
        // GIVEN the connect function's deployed environment: the secret's name only
        let env = lookup(&[
            ("JWT_SECRET_ID", "wsbridge/jwt-secret"),
            ("TABLE_NAME", "t"),
        ]);

        // WHEN its secrets are resolved
        let resolved = resolve(env, AuthConfig::SECRETS, &held()).await.unwrap();

        // THEN the configuration reads the secret's value, the id is consumed, the rest kept
        assert_eq!(resolved("JWT_SECRET").as_deref(), Some(JWT_SECRET));
        assert_eq!(resolved("JWT_SECRET_ID"), None);
        assert_eq!(resolved("TABLE_NAME").as_deref(), Some("t"));
        let config = AuthConfig::from_lookup(resolved).unwrap();
        assert_eq!(config.key, JwtKey::Secret(JWT_SECRET.into()));
    }

    #[tokio::test]
    async fn without_a_secret_id_nothing_is_read_and_the_plain_variable_stays() {
        let env = lookup(&[("BROADCAST_API_KEY", "k-1")]);
        // No source would answer: none must be asked.
        let empty = Held(HashMap::new());
        let resolved = resolve(env, BroadcastConfig::SECRETS, &empty)
            .await
            .unwrap();
        let config = BroadcastConfig::from_lookup(resolved).unwrap();
        assert_eq!(config.api_key.as_deref(), Some("k-1"));
    }

    #[tokio::test]
    async fn both_forms_a_missing_secret_and_a_binary_secret_are_errors_naming_the_variable() {
        let both = lookup(&[
            ("JWT_SECRET", JWT_SECRET),
            ("JWT_SECRET_ID", "wsbridge/jwt-secret"),
        ]);
        assert!(matches!(
            resolve(both, AuthConfig::SECRETS, &held()).await,
            Err(SecretError::Config(ConfigError::Invalid {
                name: "JWT_SECRET_ID",
                ..
            }))
        ));
        let missing = lookup(&[("JWT_SECRET_ID", "wsbridge/nope")]);
        let error = resolve(missing, AuthConfig::SECRETS, &held())
            .await
            .err()
            .unwrap();
        assert!(matches!(
            error,
            SecretError::Read {
                variable: "JWT_SECRET_ID",
                ..
            }
        ));
        assert!(error.to_string().contains("wsbridge/nope"), "{error}");
        let binary = lookup(&[("JWT_SECRET_ID", "wsbridge/binary")]);
        assert!(matches!(
            resolve(binary, AuthConfig::SECRETS, &held()).await,
            Err(SecretError::NotText {
                variable: "JWT_SECRET_ID",
                ..
            })
        ));
    }
}
