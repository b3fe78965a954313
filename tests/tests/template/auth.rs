//! The auth modes of `template.yaml`: its `Rules` against the connect function's own
//! refusals, and secrets passed by name, never by value.

use super::cfn::scalar;
use super::{JWKS_URL, StandInSecrets, function_of_binary, functions, root, start, template};

#[test]
fn the_rules_refuse_exactly_the_auth_choices_the_connect_function_refuses() {
    let template = template();
    let functions = functions(&template);
    let connect = function_of_binary(&functions, "wsbridge-connect");
    let mut refused = 0;
    for algorithm in ["HS256", "RS256", "PS256", "ES256", "EdDSA", "JWKS"] {
        for issuer in ["", "https://issuer.example.com"] {
            for audience in ["", "wsbridge"] {
                for url in ["", JWKS_URL] {
                    let overrides = [
                        ("JwtAlgorithm", algorithm),
                        ("JwtIssuer", issuer),
                        ("JwtAudience", audience),
                        ("JwtJwksUrl", url),
                    ];
                    let parameters = template.parameters(&overrides);
                    let broken = template.broken_rules(&parameters);
                    let env = template.environment(&connect.id, &parameters);
                    let started = start(connect, &env, &StandInSecrets);
                    assert_eq!(
                        broken.is_empty(),
                        started.is_ok(),
                        "{overrides:?}: rules broken {broken:?}, the function {started:?}"
                    );
                    refused += usize::from(!broken.is_empty());
                }
            }
        }
    }
    // HS256 needs none of them; the four PEM algorithms need issuer and audience (3 of
    // their 4 combinations lack one, with or without a URL), JWKS all three (7 of 8 lack one).
    assert_eq!(refused, 4 * 3 * 2 + 7);
}

#[test]
fn secrets_are_read_by_name_at_start_up_and_only_the_needed_keys_are_set() {
    let template = template();
    let functions = functions(&template);
    let connect = &function_of_binary(&functions, "wsbridge-connect").id;
    let broadcast = &function_of_binary(&functions, "wsbridge-broadcast").id;
    let env = |function: &str, overrides: &[(&str, &str)]| {
        template.environment(function, &template.parameters(overrides))
    };
    let claims = [
        ("JwtIssuer", "https://id.example.com"),
        ("JwtAudience", "app"),
    ];

    // HS256 (the default): the secret's name, for the function to read; no public key.
    let hs256 = env(connect, &[]);
    assert_eq!(
        hs256.get("JWT_SECRET_ID").map(String::as_str),
        Some("wsbridge/jwt-secret")
    );
    for absent in ["JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_JWKS_URL", "JWT_ISSUER"] {
        assert!(!hs256.contains_key(absent), "HS256 sets {absent}");
    }
    // A PEM public key from SSM, no secret.
    for algorithm in ["RS256", "PS256", "ES256", "EdDSA"] {
        let asymmetric = env(
            connect,
            &[[("JwtAlgorithm", algorithm)].as_slice(), &claims].concat(),
        );
        assert_eq!(
            asymmetric.get("JWT_PUBLIC_KEY").map(String::as_str),
            Some("{{resolve:ssm:/wsbridge/jwt-public-key}}")
        );
        assert!(!asymmetric.contains_key("JWT_SECRET_ID"));
        assert!(!asymmetric.contains_key("JWT_JWKS_URL"));
        assert_eq!(asymmetric["JWT_ISSUER"], "https://id.example.com");
        assert_eq!(asymmetric["JWT_AUDIENCE"], "app");
    }
    // JWKS: the URL and the refresh interval; no secret, no PEM, no algorithm.
    let jwks = env(
        connect,
        &[
            [("JwtAlgorithm", "JWKS"), ("JwtJwksUrl", JWKS_URL)].as_slice(),
            &claims,
        ]
        .concat(),
    );
    assert_eq!(jwks["JWT_JWKS_URL"], JWKS_URL);
    assert_eq!(jwks["JWT_JWKS_REFRESH_SECONDS"], "300");
    for absent in ["JWT_SECRET_ID", "JWT_PUBLIC_KEY", "JWT_ALGORITHM"] {
        assert!(!jwks.contains_key(absent), "JWKS sets {absent}");
    }

    // Broadcast: IAM by default, so no key; API_KEY mode names its secret.
    let iam = env(broadcast, &[]);
    assert!(!iam.contains_key("BROADCAST_API_KEY_SECRET_ID"));
    let api_key = env(broadcast, &[("BroadcastAuth", "API_KEY")]);
    assert_eq!(
        api_key
            .get("BROADCAST_API_KEY_SECRET_ID")
            .map(String::as_str),
        Some("wsbridge/broadcast-api-key")
    );
    assert!(!api_key.contains_key("BROADCAST_API_KEY"));

    // No secret is resolved into the template.
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    assert!(!text.contains("resolve:secretsmanager"));

    // The stored https://{domainName}/{stage} is right unless a custom domain is in front.
    assert!(!iam.contains_key("WS_MANAGEMENT_ENDPOINT"));
    let custom = env(
        broadcast,
        &[("WebSocketCustomDomainName", "ws.example.com")],
    );
    assert_eq!(
        custom["WS_MANAGEMENT_ENDPOINT"],
        "https://<WebSocketApi>.execute-api.<AWS::Region>.<AWS::URLSuffix>/prod"
    );

    // A deployment never talks to a DynamoDB Local.
    for function in &functions {
        assert!(
            !env(&function.id, &[]).contains_key("AWS_ENDPOINT_URL_DYNAMODB"),
            "{}",
            function.id
        );
    }

    // No secret parameter carries a value of its own: secrets are referenced by name.
    for (name, spec) in template.section("Parameters") {
        let name = scalar(name);
        if name.contains("Secret") || name.contains("Key") {
            assert!(
                name.ends_with("Name"),
                "parameter {name} looks like it holds a secret; take it by reference instead"
            );
            assert!(
                spec.get("NoEcho").is_none(),
                "{name} is a name, not a secret"
            );
        }
    }
}
