//! `template.yaml` against the code it deploys. The template repeats what the code decides:
//! binary names, the variables each function reads, the table's keys and indexes, the routes,
//! the DynamoDB calls each function makes. Each test here fails when the two drift apart,
//! before a deployment would.
//!
//! The template is also evaluated for the parameter values a user may choose (conditions
//! decided, `AWS::NoValue` dropped) and the result fed to the functions' own config parsers,
//! so a value the template allows but a function refuses at start-up fails here.

#[path = "template/auth.rs"]
mod auth;
#[path = "template/cfn.rs"]
mod cfn;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, KeySchemaElement};
use serde_json::Value as Json;
use serde_norway::Value;
use wsbridge::auth::{TokenVerifier, token_of};
use wsbridge::config::{
    AuthConfig, BroadcastConfig, ChannelsConfig, ConfigError, FanoutConfig, ManagementConfig,
    SecretVar, SessionConfig, StoreConfig,
};
use wsbridge::dev::SAM_LOCAL_SECRET;
use wsbridge::secrets::{self, SecretError, SecretSource};
use wsbridge::shards::SHARD_EVENT_KEY;
use wsbridge::store::dynamodb::schema;
use wsbridge_tests::event;

use cfn::{Template, get_att, one_or_many, ref_name, scalar, sub_names, sub_text};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> Template {
    let path = root().join("template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Template::parse(&text)
}

// ---- the workspace, as cargo sees it ----

/// Every binary in the workspace: name -> path of its `main.rs`.
fn workspace_binaries() -> BTreeMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Json = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let mut binaries = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        for target in package["targets"].as_array().expect("targets") {
            if target["kind"]
                .as_array()
                .expect("kind")
                .contains(&"bin".into())
            {
                binaries.insert(
                    target["name"].as_str().expect("name").to_owned(),
                    PathBuf::from(target["src_path"].as_str().expect("src_path")),
                );
            }
        }
    }
    binaries
}

/// The config types a binary reads: every `XConfig::from_env` or `XConfig::from_lookup`
/// (after its secrets are read) in its `main.rs`.
fn configs_read_by(main_rs: &Path) -> BTreeSet<String> {
    let source = std::fs::read_to_string(main_rs)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", main_rs.display()));
    source
        .match_indices("::from_env")
        .chain(source.match_indices("::from_lookup"))
        .map(|(at, _)| {
            let before = &source[..at];
            let start = before
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            before[start..].to_owned()
        })
        .collect()
}

type Env = BTreeMap<String, String>;

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What this test knows of a config type: the variables it reads, the secrets its function
/// reads from Secrets Manager first, and its parser.
struct ConfigKind {
    env_vars: &'static [&'static str],
    secrets: &'static [SecretVar],
    parse: fn(Lookup) -> Result<(), ConfigError>,
}

fn lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
    |name| env.get(name).cloned()
}

fn config_kind(name: &str) -> ConfigKind {
    match name {
        "StoreConfig" => ConfigKind {
            env_vars: StoreConfig::ENV_VARS,
            secrets: &[],
            parse: |env| StoreConfig::from_lookup(env).map(drop),
        },
        "AuthConfig" => ConfigKind {
            env_vars: AuthConfig::ENV_VARS,
            secrets: AuthConfig::SECRETS,
            parse: |env| AuthConfig::from_lookup(env).map(drop),
        },
        "SessionConfig" => ConfigKind {
            env_vars: SessionConfig::ENV_VARS,
            secrets: &[],
            parse: |env| SessionConfig::from_lookup(env).map(drop),
        },
        "BroadcastConfig" => ConfigKind {
            env_vars: BroadcastConfig::ENV_VARS,
            secrets: BroadcastConfig::SECRETS,
            parse: |env| BroadcastConfig::from_lookup(env).map(drop),
        },
        "ChannelsConfig" => ConfigKind {
            env_vars: ChannelsConfig::ENV_VARS,
            secrets: &[],
            parse: |env| ChannelsConfig::from_lookup(env).map(drop),
        },
        "ManagementConfig" => ConfigKind {
            env_vars: ManagementConfig::ENV_VARS,
            secrets: &[],
            parse: |env| ManagementConfig::from_lookup(env).map(drop),
        },
        "FanoutConfig" => ConfigKind {
            env_vars: FanoutConfig::ENV_VARS,
            secrets: &[],
            parse: |env| FanoutConfig::from_lookup(env).map(drop),
        },
        other => panic!("a main.rs reads {other}::from_env; add it to config_kind in this test"),
    }
}

/// Variables a function may be given that the AWS SDK reads, not our configs.
const SDK_VARIABLES: &[&str] = &["AWS_ENDPOINT_URL_DYNAMODB"];

/// Variables the configs read that the template must never declare, and why.
const NEVER_DECLARED: &[(&str, &str)] = &[
    (
        "AWS_SAM_LOCAL",
        "SAM CLI sets it in its local containers; a deployed function must not have it",
    ),
    (
        "JWT_JWKS",
        "an inline JWK set is for local runs; a deployment fetches JwtJwksUrl",
    ),
];

/// The template's functions: logical id -> binary, and the binary's configs.
struct Function {
    id: String,
    binary: String,
    configs: BTreeSet<String>,
}

fn functions(template: &Template) -> Vec<Function> {
    let binaries = workspace_binaries();
    template
        .resources_of("AWS::Serverless::Function")
        .into_iter()
        .map(|(id, _)| {
            let metadata = template.resource(id).get("Metadata");
            let binary = metadata
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|p| p.get("Binary"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{id} has no Metadata.BuildProperties.Binary"));
            let main_rs = binaries.get(binary).unwrap_or_else(|| {
                panic!(
                    "{id} builds binary {binary}, which no [[bin]] of the workspace defines \
                     (binaries: {:?})",
                    binaries.keys()
                )
            });
            let configs = configs_read_by(main_rs);
            assert!(
                !configs.is_empty(),
                "{} reads no XConfig::from_env; the scan in this test is broken",
                main_rs.display()
            );
            Function {
                id: id.to_owned(),
                binary: binary.to_owned(),
                configs,
            }
        })
        .collect()
}

fn function_of_binary<'a>(functions: &'a [Function], binary: &str) -> &'a Function {
    functions
        .iter()
        .find(|f| f.binary == binary)
        .unwrap_or_else(|| panic!("no function in template.yaml builds {binary}"))
}

/// The variables a function's configs read.
fn variables_read(function: &Function) -> BTreeSet<&'static str> {
    function
        .configs
        .iter()
        .flat_map(|c| config_kind(c).env_vars.iter().copied())
        .collect()
}

// ---- binaries and build ----

#[test]
fn every_function_builds_one_binary_of_the_workspace_and_every_lambda_binary_is_deployed() {
    let template = template();
    let functions = functions(&template);
    let globals = template.doc.get("Globals").and_then(|g| g.get("Function"));
    for (id, properties) in template.resources_of("AWS::Serverless::Function") {
        let setting = |name: &str| {
            properties
                .get(name)
                .or_else(|| globals.and_then(|g| g.get(name)))
                .unwrap_or_else(|| panic!("{id} has no {name}, itself or in Globals"))
        };
        let metadata = template.resource(id).get("Metadata").expect("Metadata");
        assert_eq!(
            metadata.get("BuildMethod").and_then(Value::as_str),
            Some("rust-cargolambda"),
            "{id}"
        );
        assert_eq!(scalar(setting("Runtime")), "provided.al2023", "{id}");
        assert_eq!(scalar(setting("Handler")), "bootstrap", "{id}");
        // cargo-lambda runs in CodeUri: it must be the workspace root to find Cargo.lock.
        let code_uri = root().join(scalar(setting("CodeUri")));
        let manifest = std::fs::read_to_string(code_uri.join("Cargo.toml")).unwrap_or_default();
        assert!(
            manifest.contains("[workspace]"),
            "{id}: CodeUri {} is not the workspace root",
            code_uri.display()
        );
        let architectures = setting("Architectures").as_sequence().expect("a list");
        assert_eq!(architectures.len(), 1, "{id}");
        assert_eq!(ref_name(&architectures[0]), Some("Architecture"), "{id}");
    }
    let architecture = template.section("Parameters").get("Architecture").unwrap();
    assert_eq!(scalar(architecture.get("Default").unwrap()), "arm64");
    let allowed: BTreeSet<String> = architecture
        .get("AllowedValues")
        .unwrap()
        .as_sequence()
        .unwrap()
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(allowed, BTreeSet::from(["arm64".into(), "x86_64".into()]));

    let deployed: BTreeSet<&str> = functions.iter().map(|f| f.binary.as_str()).collect();
    assert_eq!(
        deployed.len(),
        functions.len(),
        "two functions build the same binary"
    );
    let lambda_binaries: BTreeSet<String> = workspace_binaries()
        .into_iter()
        .filter(|(_, main_rs)| {
            main_rs.starts_with(root().join("functions").canonicalize().unwrap())
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        deployed,
        lambda_binaries.iter().map(String::as_str).collect(),
        "every binary under functions/ is a Lambda function of the template, and only those"
    );
}

// ---- environment ----

#[test]
fn every_variable_a_function_reads_is_declared_and_nothing_else() {
    let template = template();
    for function in functions(&template) {
        let declared = template.declared_environment(&function.id);
        let read = variables_read(&function);
        for (variable, why) in NEVER_DECLARED {
            assert!(
                !declared.contains(*variable),
                "template.yaml declares {variable} for {}: {why}",
                function.id
            );
        }
        let never: BTreeSet<&str> = NEVER_DECLARED.iter().map(|(v, _)| *v).collect();
        for variable in read.difference(&never) {
            assert!(
                declared.contains(*variable),
                "{} ({}) reads {variable} (through {:?}) but template.yaml does not set it",
                function.id,
                function.binary,
                function.configs
            );
        }
        for variable in &declared {
            assert!(
                read.contains(variable.as_str()) || SDK_VARIABLES.contains(&variable.as_str()),
                "template.yaml sets {variable} for {}, which reads no such variable (a typo?)",
                function.id
            );
        }
    }
}

/// What Secrets Manager would answer a deployed function: the same text for every secret.
struct StandInSecrets;

#[async_trait::async_trait]
impl SecretSource for StandInSecrets {
    async fn secret_string(
        &self,
        _secret_id: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Some(
            "a-secret-of-at-least-thirty-two-bytes-from-secrets-manager".into(),
        ))
    }
}

/// For `sam local invoke`: every secret must come from `events/env.json`.
struct NoSecrets;

#[async_trait::async_trait]
impl SecretSource for NoSecrets {
    async fn secret_string(
        &self,
        secret_id: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("sam local invoke would read secret {secret_id} from Secrets Manager").into())
    }
}

/// Starts a function's configs as its `main` does: the secrets it names read from `source`
/// (dynamic references to SSM stood in, as CloudFormation resolves them at deploy time),
/// then every config parsed. The error says why the function would refuse to start.
fn start(function: &Function, env: &Env, source: &dyn SecretSource) -> Result<(), String> {
    let mut env = env.clone();
    for value in env.values_mut() {
        assert!(
            !value.contains("{{resolve:secretsmanager:"),
            "a secret resolved into a plain environment variable: {value}"
        );
        if value.starts_with("{{resolve:ssm:") {
            *value = "-----BEGIN PUBLIC KEY-----\\nMFkw...\\n-----END PUBLIC KEY-----".into();
        }
    }
    let secret_vars: Vec<SecretVar> = function
        .configs
        .iter()
        .flat_map(|c| config_kind(c).secrets.iter().copied())
        .collect();
    let resolved =
        futures::executor::block_on(secrets::resolve(lookup(&env), &secret_vars, source))
            .map_err(|e: SecretError| e.to_string())?;
    for config in &function.configs {
        (config_kind(config).parse)(&resolved).map_err(|e| e.to_string())?;
    }
    Ok(())
}

const JWKS_URL: &str =
    "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example/.well-known/jwks.json";

/// Every value a parameter allows that a function's environment uses: its default, each of
/// its AllowedValues, its MinValue and MaxValue, and a real value for the free-text ones.
fn parameter_choices(template: &Template) -> Vec<(String, String)> {
    let mut choices = Vec::new();
    for (name, spec) in template.section("Parameters") {
        let name = scalar(name);
        for key in ["Default", "MinValue", "MaxValue"] {
            if let Some(value) = spec.get(key) {
                choices.push((name.clone(), scalar(value)));
            }
        }
        if let Some(allowed) = spec.get("AllowedValues").and_then(Value::as_sequence) {
            choices.extend(allowed.iter().map(|v| (name.clone(), scalar(v))));
        }
    }
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:wsbridge/jwt-secret-AbCdEf";
    choices.push(("WebSocketCustomDomainName".into(), "ws.example.com".into()));
    choices.push(("JwtIssuer".into(), "https://issuer.example.com".into()));
    choices.push(("JwtAudience".into(), "wsbridge".into()));
    choices.push(("JwtJwksUrl".into(), JWKS_URL.into()));
    choices.push(("JwtSecretName".into(), arn.into()));
    choices.push(("BroadcastApiKeySecretName".into(), arn.into()));
    // The worked examples, as a deployment would pass them.
    for example in ["chat.json", "feed.json"] {
        let path = root().join("examples/channels").join(example);
        let json = std::fs::read_to_string(&path).unwrap();
        choices.push(("ChannelsConfig".into(), json));
    }
    choices
}

/// The ways tokens can be verified, each complete enough to deploy; every parameter choice
/// is tried on top of each.
const AUTH_MODES: &[&[(&str, &str)]] = &[
    &[],
    &[("BroadcastAuth", "API_KEY")],
    &[
        ("JwtAlgorithm", "RS256"),
        ("JwtIssuer", "https://issuer.example.com"),
        ("JwtAudience", "wsbridge"),
    ],
    &[
        ("JwtAlgorithm", "JWKS"),
        ("JwtJwksUrl", JWKS_URL),
        ("JwtIssuer", "https://issuer.example.com"),
        ("JwtAudience", "wsbridge"),
    ],
];

#[test]
fn every_parameter_value_the_template_allows_gives_environments_the_functions_accept() {
    let template = template();
    let functions = functions(&template);
    let connect = function_of_binary(&functions, "wsbridge-connect");
    let mut deployable = 0;
    for mode in AUTH_MODES {
        for (parameter, value) in parameter_choices(&template) {
            let mut overrides = mode.to_vec();
            overrides.push((&parameter, &value));
            let parameters = template.parameters(&overrides);
            let broken = template.broken_rules(&parameters);
            for function in &functions {
                let env = template.environment(&function.id, &parameters);
                let started = start(function, &env, &StandInSecrets);
                match (&started, broken.is_empty()) {
                    (Err(e), true) => panic!(
                        "with {overrides:?}, {} would refuse to start: {e}\n(environment: {env:?})",
                        function.id
                    ),
                    // CloudFormation refuses what the connect function would refuse: the
                    // rules and the config agree.
                    (Ok(()), false) if function.id == connect.id => panic!(
                        "with {overrides:?} the template's Rules refuse the deployment \
                         ({broken:?}), but {} would start",
                        function.id
                    ),
                    _ => {}
                }
                for plain in ["JWT_SECRET", "BROADCAST_API_KEY"] {
                    assert!(
                        !env.contains_key(plain),
                        "with {overrides:?} a deployment sets {plain} for {}",
                        function.id
                    );
                }
            }
            deployable += usize::from(broken.is_empty());
        }
    }
    assert!(
        deployable > 0,
        "no parameter choice passes the template's Rules"
    );

    // The algorithm parameter is the one the function reads, or the key set decides.
    for algorithm in ["HS256", "RS256", "PS256", "ES256", "EdDSA", "JWKS"] {
        let parameters = template.parameters(&[
            ("JwtAlgorithm", algorithm),
            ("JwtIssuer", "https://issuer.example.com"),
            ("JwtAudience", "wsbridge"),
            ("JwtJwksUrl", JWKS_URL),
        ]);
        let env = template.environment(&connect.id, &parameters);
        start(connect, &env, &StandInSecrets).unwrap();
        let expected = (algorithm != "JWKS").then_some(algorithm);
        assert_eq!(env.get("JWT_ALGORITHM").map(String::as_str), expected);
    }
}

// ---- the table ----

fn key_schema_of(value: &Value) -> Vec<(String, String)> {
    value
        .as_sequence()
        .expect("KeySchema is a list")
        .iter()
        .map(|k| (scalar(&k["AttributeName"]), scalar(&k["KeyType"])))
        .collect()
}

fn expected_key_schema(keys: &[KeySchemaElement]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect()
}

/// An index as (name, key schema, projection type, non-key attributes).
type IndexShape = (String, Vec<(String, String)>, String, BTreeSet<String>);

fn expected_index(index: &GlobalSecondaryIndex) -> IndexShape {
    let projection = index.projection().expect("projection");
    (
        index.index_name().to_owned(),
        expected_key_schema(index.key_schema()),
        projection
            .projection_type()
            .expect("type")
            .as_str()
            .to_owned(),
        projection.non_key_attributes().iter().cloned().collect(),
    )
}

#[test]
fn the_table_has_the_keys_indexes_and_ttl_of_the_store_schema() {
    let template = template();
    let tables = template.resources_of("AWS::DynamoDB::Table");
    let [(id, table)] = tables.as_slice() else {
        panic!("expected one table, found {}", tables.len());
    };
    assert_eq!(
        key_schema_of(&table["KeySchema"]),
        expected_key_schema(&schema::key_schema()),
        "{id}: KeySchema"
    );
    let attributes: BTreeSet<(String, String)> = table["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| (scalar(&a["AttributeName"]), scalar(&a["AttributeType"])))
        .collect();
    let expected_attributes: BTreeSet<(String, String)> = schema::attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        attributes, expected_attributes,
        "{id}: AttributeDefinitions"
    );

    let indexes: BTreeSet<IndexShape> = table["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| {
            (
                scalar(&i["IndexName"]),
                key_schema_of(&i["KeySchema"]),
                scalar(&i["Projection"]["ProjectionType"]),
                i["Projection"]
                    .get("NonKeyAttributes")
                    .and_then(Value::as_sequence)
                    .map(|a| a.iter().map(scalar).collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let expected_indexes: BTreeSet<IndexShape> = schema::global_secondary_indexes()
        .iter()
        .map(expected_index)
        .collect();
    assert_eq!(indexes, expected_indexes, "{id}: GlobalSecondaryIndexes");

    let ttl = &table["TimeToLiveSpecification"];
    assert_eq!(scalar(&ttl["AttributeName"]), schema::TTL_ATTRIBUTE);
    assert_eq!(ttl["Enabled"].as_bool(), Some(true));
    assert_eq!(scalar(&table["BillingMode"]), "PAY_PER_REQUEST");
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["SSESpecification"]["SSEEnabled"].as_bool(),
        Some(true)
    );
}

// ---- routes ----

/// The API resource of `protocol`: its logical id and properties.
fn api<'a>(template: &'a Template, protocol: &str) -> (&'a str, &'a Value) {
    let apis: Vec<_> = template
        .resources_of("AWS::ApiGatewayV2::Api")
        .into_iter()
        .filter(|(_, p)| p["ProtocolType"].as_str() == Some(protocol))
        .collect();
    match apis.as_slice() {
        [api] => *api,
        other => panic!("expected one {protocol} API, found {}", other.len()),
    }
}

/// Route key -> (route id, the function its integration invokes) for one API.
fn routes(template: &Template, api_id: &str) -> BTreeMap<String, (String, String)> {
    template
        .resources_of("AWS::ApiGatewayV2::Route")
        .into_iter()
        .filter(|(_, route)| ref_name(&route["ApiId"]) == Some(api_id))
        .map(|(route_id, route)| {
            let target = sub_text(&route["Target"]).expect("Target is !Sub integrations/${..}");
            let integration_id = target
                .strip_prefix("integrations/${")
                .and_then(|t| t.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{route_id}: Target {target} names no integration"));
            let integration = template.properties(integration_id);
            assert_eq!(
                ref_name(&integration["ApiId"]),
                Some(api_id),
                "{integration_id}"
            );
            assert_eq!(
                scalar(&integration["IntegrationType"]),
                "AWS_PROXY",
                "{integration_id}"
            );
            let uri = &integration["IntegrationUri"];
            let function = get_att(uri)
                .map(|(resource, _)| resource)
                .or_else(|| {
                    let text = sub_text(uri)?;
                    let name = sub_names(text).into_iter().find(|n| n.ends_with(".Arn"))?;
                    Some(name.trim_end_matches(".Arn").to_owned())
                })
                .unwrap_or_else(|| panic!("{integration_id}: IntegrationUri names no function"));
            (scalar(&route["RouteKey"]), (route_id.to_owned(), function))
        })
        .collect()
}

/// Lambda permissions: (function, source ARN as written in the !Sub).
fn permissions(template: &Template) -> Vec<(String, String)> {
    template
        .resources_of("AWS::Lambda::Permission")
        .into_iter()
        .map(|(id, p)| {
            assert_eq!(scalar(&p["Principal"]), "apigateway.amazonaws.com", "{id}");
            assert_eq!(scalar(&p["Action"]), "lambda:InvokeFunction", "{id}");
            (
                ref_name(&p["FunctionName"])
                    .expect("FunctionName: !Ref")
                    .to_owned(),
                sub_text(&p["SourceArn"])
                    .expect("SourceArn: !Sub")
                    .to_owned(),
            )
        })
        .collect()
}

fn binary_of(functions: &[Function], id: &str) -> String {
    functions
        .iter()
        .find(|f| f.id == id)
        .map(|f| f.binary.clone())
        .unwrap_or_else(|| panic!("{id} is not a function of the template"))
}

/// A route's path as the source ARN of an invocation names it: the request's path, so each
/// path parameter (`{id}`, greedy `{id+}`) is a `*`.
fn source_arn_path(route_path: &str) -> String {
    route_path
        .split('/')
        .map(
            |segment| match segment.starts_with('{') && segment.ends_with('}') {
                true => "*",
                false => segment,
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Route keys of the sample events in `events/` of one kind.
fn sample_route_keys(http: bool) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("events")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "env.json" {
            continue;
        }
        let sample: Json = serde_json::from_str(&event(&name)).unwrap();
        if sample.get(SHARD_EVENT_KEY).is_some() {
            // The broadcast function's own asynchronous invocation: no route.
            continue;
        }
        let key = sample
            .get("routeKey")
            .or_else(|| sample["requestContext"].get("routeKey"))
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("events/{name} has no routeKey"));
        if (sample["version"] == "2.0") == http {
            keys.insert(key.to_owned());
        }
    }
    keys
}

#[test]
fn websocket_routes_reach_their_handlers_and_default_replies_reach_the_client() {
    let template = template();
    let functions = functions(&template);
    let (api_id, api) = api(&template, "WEBSOCKET");
    assert_eq!(
        scalar(&api["RouteSelectionExpression"]),
        "$request.body.action"
    );

    let routes = routes(&template, api_id);
    let reached: BTreeMap<&str, String> = routes
        .iter()
        .map(|(key, (_, function))| (key.as_str(), binary_of(&functions, function)))
        .collect();
    assert_eq!(
        reached,
        BTreeMap::from([
            ("$connect", "wsbridge-connect".into()),
            ("$disconnect", "wsbridge-disconnect".into()),
            ("$default", "wsbridge-default".into()),
        ])
    );
    let samples = sample_route_keys(false);
    assert!(
        samples.iter().all(|k| routes.contains_key(k)),
        "sample events use routes {samples:?}; the API has {:?}",
        routes.keys()
    );

    // $default is two-way: its Lambda response body is the reply frame.
    let (default_route, _) = &routes["$default"];
    let route = template.properties(default_route);
    assert_eq!(
        scalar(&route["RouteResponseSelectionExpression"]),
        "$default"
    );
    let responses = template.resources_of("AWS::ApiGatewayV2::RouteResponse");
    let [(response_id, response)] = responses.as_slice() else {
        panic!("expected one RouteResponse, found {}", responses.len());
    };
    assert_eq!(ref_name(&response["RouteId"]), Some(default_route.as_str()));
    assert_eq!(scalar(&response["RouteResponseKey"]), "$default");

    // The deployment waits for every route, the stage serves it, with throttling.
    let deployments = template.resources_of("AWS::ApiGatewayV2::Deployment");
    let [(deployment_id, _)] = deployments.as_slice() else {
        panic!("expected one Deployment, found {}", deployments.len());
    };
    let depends_on: BTreeSet<String> = one_or_many(&template.resource(deployment_id)["DependsOn"])
        .into_iter()
        .map(scalar)
        .collect();
    for (route_id, _) in routes.values() {
        assert!(
            depends_on.contains(route_id),
            "{deployment_id} must depend on {route_id}"
        );
    }
    assert!(depends_on.contains(*response_id));
    let stage = template
        .resources_of("AWS::ApiGatewayV2::Stage")
        .into_iter()
        .find(|(_, s)| ref_name(&s["ApiId"]) == Some(api_id))
        .expect("a stage of the WebSocket API")
        .1;
    assert_eq!(ref_name(&stage["DeploymentId"]), Some(*deployment_id));
    assert_eq!(ref_name(&stage["StageName"]), Some("StageName"));
    for limit in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
        assert!(
            stage["DefaultRouteSettings"].get(limit).is_some(),
            "stage {limit}"
        );
    }

    // Each function may be invoked by this API's stage on its own route only.
    let permissions = permissions(&template);
    for (key, (_, function)) in &routes {
        let expected = format!("${{{api_id}}}/${{StageName}}/{key}");
        assert!(
            permissions
                .iter()
                .any(|(f, arn)| f == function && arn.ends_with(&expected)),
            "no permission lets {api_id} invoke {function} on {key} (wanted a SourceArn ending {expected})"
        );
    }
}

#[test]
fn broadcast_routes_reach_the_broadcast_function_signed_with_iam_unless_api_key_mode() {
    let template = template();
    let functions = functions(&template);
    let (api_id, _) = api(&template, "HTTP");
    let routes = routes(&template, api_id);
    assert_eq!(
        routes.keys().cloned().collect::<BTreeSet<_>>(),
        wsbridge::handlers::broadcast::route_keys()
            .into_iter()
            .collect::<BTreeSet<_>>(),
        "the HTTP API routes exactly what the server API handler serves"
    );
    assert_eq!(sample_route_keys(true), routes.keys().cloned().collect());
    let iam = template.parameters(&[]);
    let api_key = template.parameters(&[("BroadcastAuth", "API_KEY")]);
    let permissions = permissions(&template);
    for (key, (route_id, function)) in &routes {
        assert_eq!(
            binary_of(&functions, function),
            "wsbridge-broadcast",
            "{key}"
        );
        let route = template.properties(route_id);
        let authorization = &route["AuthorizationType"];
        assert_eq!(
            template.evaluate(authorization, &iam).as_deref(),
            Some("AWS_IAM"),
            "{key}"
        );
        assert_eq!(
            template.evaluate(authorization, &api_key).as_deref(),
            Some("NONE"),
            "{key}"
        );
        let integration_id = sub_text(&route["Target"]).unwrap();
        let integration_id = &integration_id["integrations/${".len()..integration_id.len() - 1];
        assert_eq!(
            scalar(&template.properties(integration_id)["PayloadFormatVersion"]),
            "2.0",
            "lambda_http reads payload format 2.0"
        );
        let (method, path) = key.split_once(' ').unwrap();
        let expected = format!("${{{api_id}}}/*/{method}{}", source_arn_path(path));
        assert!(
            permissions
                .iter()
                .any(|(f, arn)| f == function && arn.ends_with(&expected)),
            "no permission lets {api_id} invoke {function} on {key}"
        );
    }
}

// ---- background broadcasts ----

#[test]
fn the_broadcast_function_answers_within_the_http_api_and_its_parts_are_retried_twice() {
    let template = template();
    let functions = functions(&template);
    let broadcast = function_of_binary(&functions, "wsbridge-broadcast");
    let seconds = |value: &Value| -> u64 {
        scalar(value)
            .parse()
            .unwrap_or_else(|e| panic!("{value:?}: {e}"))
    };
    let timeout = seconds(&template.properties(&broadcast.id)["Timeout"]);

    // The same function answers the HTTP API, which waits for it 30 s at most.
    let (api_id, _) = api(&template, "HTTP");
    let integrations: BTreeSet<String> = routes(&template, api_id)
        .values()
        .map(|(route_id, _)| {
            let target = sub_text(&template.properties(route_id)["Target"]).unwrap();
            target["integrations/${".len()..target.len() - 1].to_owned()
        })
        .collect();
    for integration in &integrations {
        let waits_ms = seconds(&template.properties(integration)["TimeoutInMillis"]);
        assert!(
            waits_ms <= 30_000,
            "{integration}: HTTP API integrations end at 30 s"
        );
        assert!(
            timeout * 1_000 <= waits_ms,
            "{}: a {timeout} s timeout outlives {integration}'s {waits_ms} ms",
            broadcast.id
        );
    }
    // The longest synchronous budget still leaves time to hand the rest over, and a part has
    // time to send before it continues itself.
    let parameters = template.section("Parameters");
    let sync_max = seconds(&parameters["BroadcastSyncSeconds"]["MaxValue"]);
    assert!(
        sync_max < timeout,
        "BroadcastSyncSeconds up to {sync_max} s, timeout {timeout} s"
    );
    assert!(wsbridge::handlers::broadcast::CONTINUE_MARGIN.as_secs() < timeout);
    // The local gateway gives each run of a part what an invocation gets.
    assert_eq!(
        wsbridge_local::DEFAULT_SHARD_RUN_TIME.as_secs(),
        timeout,
        "the local gateway's --shard-run-seconds default"
    );

    // Its asynchronous invocations: retried twice (the local gateway's runner and the README
    // say so), and kept long enough for those retries, and no longer than the job's rows.
    let configs = template.resources_of("AWS::Lambda::EventInvokeConfig");
    let [(config_id, config)] = configs.as_slice() else {
        panic!(
            "expected one EventInvokeConfig, for {}, found {}",
            broadcast.id,
            configs.len()
        );
    };
    assert_eq!(
        ref_name(&config["FunctionName"]),
        Some(broadcast.id.as_str())
    );
    assert_eq!(scalar(&config["Qualifier"]), "$LATEST", "{config_id}");
    assert_eq!(seconds(&config["MaximumRetryAttempts"]), 2, "{config_id}");
    let age = seconds(&config["MaximumEventAgeInSeconds"]);
    // Lambda retries after about 1 and 2 minutes; three runs of the whole timeout.
    assert!(
        age >= 180 + 3 * timeout,
        "{config_id}: {age} s leaves no time for retries"
    );
    assert!(
        age < wsbridge::store::jobs::JOB_TTL_SECONDS,
        "{config_id}: an event older than a job's rows finds nothing to run"
    );
}

// ---- parameter bounds ----

#[test]
fn numeric_parameters_allow_no_value_the_functions_refuse_and_refuse_none_they_accept() {
    // `every_parameter_value_the_template_allows_…` starts the functions with MinValue and
    // MaxValue; here one below and one above must stop them, so the bounds are the code's.
    let template = template();
    let functions = functions(&template);
    let mut checked = BTreeSet::new();
    for (name, spec) in template.section("Parameters") {
        let name = scalar(name);
        let (Some(min), Some(max)) = (spec.get("MinValue"), spec.get("MaxValue")) else {
            continue;
        };
        let bound = |value: &Value| -> i64 { scalar(value).parse().expect("a number") };
        for mode in AUTH_MODES {
            let unchanged = template.parameters(mode);
            for outside in [bound(min) - 1, bound(max) + 1] {
                let outside = outside.to_string();
                let mut overrides = mode.to_vec();
                overrides.push((&name, &outside));
                let parameters = template.parameters(&overrides);
                for function in &functions {
                    let env = template.environment(&function.id, &parameters);
                    if env == template.environment(&function.id, &unchanged) {
                        // Not one of this function's variables (in this mode).
                        continue;
                    }
                    checked.insert(name.clone());
                    assert!(
                        start(function, &env, &StandInSecrets).is_err(),
                        "{name}: the template refuses {outside}, which {} accepts; \
                         MinValue/MaxValue are narrower than the code's bounds",
                        function.id
                    );
                }
            }
        }
    }
    for name in [
        "BroadcastSyncSeconds",
        "BroadcastShards",
        "FanoutConcurrency",
    ] {
        assert!(
            checked.contains(name),
            "{name} reaches no function: {checked:?}"
        );
    }
}

// ---- least privilege ----

// What each function's code calls is not written down here: `wsbridge_tests::iam` runs every
// path of each function's handler on DynamoDB Local and reports the DynamoDB actions (the
// items of transactions included), the `@connections` methods and the Lambda API calls it
// used. The template must grant exactly those, plus `secretsmanager:GetSecretValue` on the
// secret a function's environment names (`*_SECRET_ID`), when it names one.

#[tokio::test]
async fn each_function_may_call_only_what_its_code_calls_on_this_table_and_api() {
    let template = template();
    let mut calls = BTreeMap::new();
    for function in functions(&template) {
        let called = wsbridge_tests::iam::calls_of(&function.binary).await;
        calls.insert(function.binary.clone(), called);
    }
    // Lambda actions are checked below against the function's own ARN: right only while the
    // launcher of a function that calls Lambda invokes the function it runs in.
    let binaries = workspace_binaries();
    for (binary, called) in calls.iter().filter(|(_, c)| !c.lambda.is_empty()) {
        let main_rs = std::fs::read_to_string(&binaries[binary]).expect("its main.rs");
        assert!(
            main_rs.contains("LambdaLauncher::this_function(")
                && !main_rs.contains("LambdaLauncher::new("),
            "{binary} calls {:?}, so its main.rs must build its launcher with \
             LambdaLauncher::this_function (the template allows it to invoke itself only)",
            called.lambda
        );
    }
    let table = &template.resources_of("AWS::DynamoDB::Table")[0]
        .0
        .to_owned();
    let (websocket_api, _) = api(&template, "WEBSOCKET");
    let index_arn = |index: &str| format!("${{{table}.Arn}}/index/{index}");
    let indexes: BTreeSet<String> = schema::global_secondary_indexes()
        .iter()
        .map(|i| index_arn(i.index_name()))
        .collect();
    let connections_arns: Vec<String> = ["POST", "DELETE"]
        .iter()
        .map(|method| format!(
            "arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{websocket_api}}}/${{StageName}}/{method}/@connections/*"
        ))
        .collect();

    // Statements may depend on parameters (a secret is read only in the modes that need it):
    // every mode is checked.
    let modes: &[&[(&str, &str)]] = &[
        &[],
        &[("BroadcastAuth", "API_KEY")],
        &[("JwtAlgorithm", "RS256")],
        &[("JwtAlgorithm", "JWKS")],
        &[
            (
                "JwtSecretName",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt-AbCdEf",
            ),
            ("BroadcastAuth", "API_KEY"),
            (
                "BroadcastApiKeySecretName",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:key-AbCdEf",
            ),
        ],
    ];
    for (mode, function) in modes
        .iter()
        .flat_map(|mode| functions(&template).into_iter().map(move |f| (*mode, f)))
    {
        let id = &function.id;
        let parameters = template.parameters(mode);
        let mut actions = BTreeSet::new();
        let mut queried = BTreeSet::new();
        let mut secrets_read = BTreeSet::new();
        let mut methods = BTreeSet::new();
        // A function's launcher invokes the function it runs in (checked below), so a
        // Lambda action may name that function's ARN only.
        let own_arn = || {
            let name = template.properties(id).get("FunctionName").unwrap_or_else(|| {
                panic!("{id} invokes a function, so it needs a FunctionName: its own policy cannot !GetAtt its ARN")
            });
            format!(
                "arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:function:{}",
                template
                    .evaluate(name, &parameters)
                    .expect("a FunctionName")
            )
        };
        let mut only_in_transactions = BTreeSet::new();
        let policies = template.properties(id)["Policies"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{id} has no Policies"));
        for policy in policies {
            // Inline statements only: a managed policy or a SAM policy template would grant
            // actions this test cannot see.
            let statements = policy
                .get("Statement")
                .and_then(Value::as_sequence)
                .unwrap_or_else(|| {
                    panic!("{id}: policy {policy:?} is not an inline statement list")
                });
            for statement in statements {
                let Some(statement) = template.choose(statement, &parameters) else {
                    continue;
                };
                assert_eq!(scalar(&statement["Effect"]), "Allow", "{id}");
                let in_transactions_only = statement
                    .get("Condition")
                    .and_then(|c| c.get("ForAnyValue:StringEquals"))
                    .and_then(|c| c.get("dynamodb:EnclosingOperation"))
                    .is_some_and(|op| scalar(op) == "TransactWriteItems");
                let resources = one_or_many(&statement["Resource"]);
                for action in one_or_many(&statement["Action"]).into_iter().map(scalar) {
                    assert!(!action.contains('*'), "{id}: wildcard action {action}");
                    for resource in &resources {
                        if action.starts_with("dynamodb:") {
                            let on_table = get_att(resource) == Some((table.clone(), "Arn".into()));
                            let on_index = sub_text(resource).is_some_and(|t| indexes.contains(t));
                            assert!(
                                on_table || (on_index && action == "dynamodb:Query"),
                                "{id}: {action} on {resource:?}, not the table (or, for Query, its indexes)"
                            );
                            if action == "dynamodb:Query" {
                                // `${Table.Arn}/index/by_user` is by_user; the table is `table`
                                queried.insert(sub_text(resource).map_or("table".into(), |t| {
                                    t.rsplit('/').next().unwrap_or_default().to_owned()
                                }));
                            }
                        } else if action == "secretsmanager:GetSecretValue" {
                            let arn = template
                                .choose(resource, &parameters)
                                .and_then(|r| template.evaluate(r, &parameters))
                                .unwrap_or_else(|| panic!("{id}: {action} on nothing"));
                            secrets_read.insert(arn);
                        } else if action.starts_with("lambda:") {
                            let arn = template.evaluate(resource, &parameters).unwrap_or_default();
                            assert_eq!(
                                arn,
                                own_arn(),
                                "{id}: {action} on a function other than itself"
                            );
                        } else {
                            let arn = sub_text(resource).unwrap_or_default();
                            let method = ["POST", "DELETE"]
                                .into_iter()
                                .zip(&connections_arns)
                                .find(|(_, a)| *a == arn)
                                .map(|(m, _)| m)
                                .unwrap_or_else(|| {
                                    panic!("{id}: {action} on {resource:?}, beyond this stage's @connections")
                                });
                            methods.insert(method);
                        }
                    }
                    if in_transactions_only {
                        only_in_transactions.insert(action.clone());
                    }
                    actions.insert(action);
                }
            }
        }
        // The secrets the function reads at start-up: one ARN each (a name matches the six
        // characters Secrets Manager appends; a full ARN is used as it is).
        let env = template.environment(id, &parameters);
        let wanted_secrets: BTreeSet<String> = env
            .iter()
            .filter(|(name, _)| name.ends_with("_SECRET_ID"))
            .map(|(_, secret)| {
                if secret.starts_with("arn:") {
                    secret.clone()
                } else {
                    format!(
                        "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:{secret}-??????"
                    )
                }
            })
            .collect();
        assert_eq!(
            secrets_read, wanted_secrets,
            "{id} with {mode:?}: secrets readable"
        );
        let called = &calls[&function.binary];
        let mut expected: BTreeSet<String> = called.dynamodb.clone();
        expected.extend(called.lambda.iter().cloned());
        if !called.management.is_empty() {
            expected.insert("execute-api:ManageConnections".into());
        }
        if !wanted_secrets.is_empty() {
            expected.insert("secretsmanager:GetSecretValue".into());
        }
        assert_eq!(
            actions, expected,
            "{id} with {mode:?}: IAM actions granted vs. called by the code"
        );
        assert_eq!(
            methods, called.management,
            "{id}: @connections methods granted vs. called"
        );
        // A write allowed only inside a transaction must never be called outside one.
        for action in &only_in_transactions {
            assert!(
                called.only_in_transactions.contains(action),
                "{id}: {action} is granted for TransactWriteItems only, but the code calls it directly"
            );
        }
        assert_eq!(
            queried, called.queried,
            "{id}: Query granted on (table, indexes) vs. queried by the code"
        );
    }
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    assert!(
        !text.contains("dynamodb:Scan"),
        "the code never scans; the template must not allow it"
    );
}

// ---- events/env.json ----

#[tokio::test]
async fn env_json_configures_every_function_for_sam_local_invoke() {
    let template = template();
    let functions = functions(&template);
    let path = root().join("events/env.json");
    let file: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not {{name: {{VAR: value}}}}: {e}", path.display()));

    for section in file.keys() {
        assert!(
            section == "Parameters" || functions.iter().any(|f| &f.id == section),
            "env.json has a section {section}, which is no function of template.yaml"
        );
    }
    // What SAM CLI gives a function: the template's environment for the default parameters,
    // `Parameters` of env.json over it, then the function's own section, and its own marker.
    let sam_local = |function: &Function| -> Env {
        let mut env = template.environment(&function.id, &template.parameters(&[]));
        env.extend(file.get("Parameters").cloned().unwrap_or_default());
        env.extend(file.get(&function.id).cloned().unwrap_or_default());
        env.insert("AWS_SAM_LOCAL".into(), "true".into());
        env
    };
    for function in &functions {
        let mut overrides: Env = file.get("Parameters").cloned().unwrap_or_default();
        overrides.extend(file.get(&function.id).cloned().unwrap_or_default());
        // SAM only overrides variables the template declares: any other would be ignored.
        let declared = template.declared_environment(&function.id);
        for variable in overrides.keys() {
            assert!(
                declared.contains(variable),
                "env.json sets {variable} for {}, but template.yaml does not declare it, so \
                 sam local invoke would silently drop it",
                function.id
            );
        }
        let env = sam_local(function);
        assert!(
            env.get("AWS_ENDPOINT_URL_DYNAMODB")
                .is_some_and(|e| e.starts_with("http://")),
            "{}: env.json must point at a DynamoDB Local",
            function.id
        );
        // Locally, no secret comes from Secrets Manager.
        if let Err(e) = start(function, &env, &NoSecrets) {
            panic!(
                "with events/env.json, {} would refuse to start: {e}",
                function.id
            );
        }
    }

    // The sample tokens verify with the connect function's local configuration: the
    // SAM-local secret, which the same function refuses anywhere but under SAM CLI.
    let connect = function_of_binary(&functions, "wsbridge-connect");
    let mut env = sam_local(connect);
    assert_eq!(
        env.get("JWT_SECRET").map(String::as_str),
        Some(SAM_LOCAL_SECRET)
    );
    let verifier = TokenVerifier::new(&AuthConfig::from_lookup(lookup(&env)).unwrap()).unwrap();
    let request = serde_json::from_str(&event("connect.json")).unwrap();
    let token = token_of(&request).expect("connect.json carries a token");
    assert_eq!(
        verifier.verify(token).await.unwrap().user_id.as_str(),
        "alice"
    );
    env.remove("AWS_SAM_LOCAL");
    assert!(
        start(connect, &env, &NoSecrets)
            .is_err_and(|e| e.contains("JWT_SECRET") && e.contains("sam local only")),
        "outside SAM CLI the sample events' secret must be refused"
    );
}
