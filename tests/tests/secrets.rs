//! Reading the functions' secrets from Secrets Manager at start-up, through the real SDK
//! client, against a local Secrets Manager (moto's server, started by `scripts/test.sh`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_secretsmanager::primitives::Blob;
use wsbridge::auth::TokenVerifier;
use wsbridge::config::{AuthConfig, BroadcastConfig, ConfigError, JwtKey};
use wsbridge::dev::{Claims, sign_hs256};
use wsbridge::secrets::{SecretError, SecretsManager, resolve};
use wsbridge_local::local_sdk_config;
use wsbridge_tests::secretsmanager_endpoint;

fn client() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&local_sdk_config(Some(&secretsmanager_endpoint())))
}

fn source() -> SecretsManager {
    SecretsManager::new(&local_sdk_config(Some(&secretsmanager_endpoint())))
}

/// A secret name no other test uses; returns the name and the secret's ARN.
async fn create_secret(value: &str) -> (String, String) {
    static SECRETS: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "wsbridge-test/{}-{}",
        std::process::id(),
        SECRETS.fetch_add(1, Ordering::Relaxed)
    );
    let created = client()
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create secret {name}: {e:?}"));
    (name, created.arn.expect("an ARN"))
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

const JWT_SECRET: &str = "a-fresh-secret-for-this-deployment-only-0123456789";

#[tokio::test]
async fn the_connect_function_verifies_with_the_secret_named_by_jwt_secret_id() {
    // GIVEN the HS256 secret stored in Secrets Manager, and the deployed environment naming it
    let (name, arn) = create_secret(JWT_SECRET).await;

    for id in [&name, &arn] {
        // WHEN the connect function starts: secrets read, then the configuration parsed
        let resolved = resolve(
            env(&[("JWT_SECRET_ID", id)]),
            AuthConfig::SECRETS,
            &source(),
        )
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"));
        let config = AuthConfig::from_lookup(resolved).unwrap();

        // THEN it holds the stored secret (by name or by ARN) and verifies tokens signed with it
        assert_eq!(config.key, JwtKey::Secret(JWT_SECRET.into()), "{id}");
        let verifier = TokenVerifier::new(&config).unwrap();
        let claims = Claims::new("alice", std::time::Duration::from_secs(60));
        let token = sign_hs256(JWT_SECRET, &claims).unwrap();
        assert_eq!(
            verifier.verify(&token).await.unwrap().user_id.as_str(),
            "alice"
        );
    }
}

#[tokio::test]
async fn the_broadcast_function_reads_its_api_key_by_name() {
    let (name, _) = create_secret("k-7f3a9c").await;
    let resolved = resolve(
        env(&[
            ("BROADCAST_API_KEY_SECRET_ID", &name),
            ("FANOUT_CONCURRENCY", "8"),
        ]),
        BroadcastConfig::SECRETS,
        &source(),
    )
    .await
    .unwrap();
    assert_eq!(
        resolved("FANOUT_CONCURRENCY").as_deref(),
        Some("8"),
        "other variables pass through"
    );
    let config = BroadcastConfig::from_lookup(resolved).unwrap();
    assert_eq!(config.api_key.as_deref(), Some("k-7f3a9c"));
}

#[tokio::test]
async fn a_missing_secret_or_a_binary_one_stops_the_function_naming_the_variable() {
    // GIVEN a name nothing was stored under
    let missing = resolve(
        env(&[("JWT_SECRET_ID", "wsbridge-test/never-created")]),
        AuthConfig::SECRETS,
        &source(),
    )
    .await;
    match missing {
        Err(
            error @ SecretError::Read {
                variable: "JWT_SECRET_ID",
                ..
            },
        ) => {
            assert!(
                error.to_string().contains("wsbridge-test/never-created"),
                "{error}"
            )
        }
        Err(other) => panic!("expected a read error, got {other}"),
        Ok(_) => panic!("a missing secret was read"),
    }

    // GIVEN a secret holding only binary data
    let name = format!("wsbridge-test/binary-{}", std::process::id());
    client()
        .create_secret()
        .name(&name)
        .secret_binary(Blob::new(b"\x00\x01".to_vec()))
        .send()
        .await
        .unwrap();
    let binary = resolve(
        env(&[("JWT_SECRET_ID", &name)]),
        AuthConfig::SECRETS,
        &source(),
    )
    .await;
    assert!(matches!(
        binary,
        Err(SecretError::NotText {
            variable: "JWT_SECRET_ID",
            ..
        })
    ));
}

#[tokio::test]
async fn a_stored_secret_that_is_too_short_or_published_is_refused_like_a_plain_one() {
    for (value, published) in [("short", false), (wsbridge::dev::DEV_SECRET, true)] {
        let (name, _) = create_secret(value).await;
        let resolved = resolve(
            env(&[("JWT_SECRET_ID", &name)]),
            AuthConfig::SECRETS,
            &source(),
        )
        .await
        .unwrap();
        match AuthConfig::from_lookup(resolved) {
            Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                reason,
            }) => {
                assert_eq!(reason.contains("anyone can sign"), published, "{reason}")
            }
            other => panic!("{value:?}: expected JWT_SECRET refused, got {other:?}"),
        }
    }
}
