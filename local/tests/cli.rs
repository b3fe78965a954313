//! The binary as a newcomer uses it: start it, read the banner, and run the commands it
//! prints (the `client` subcommand, the WebSocket URL with its token, the `curl` broadcast,
//! the `token` subcommand) exactly as printed.

use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use wsbridge::auth::TokenVerifier;

const BINARY: &str = env!("CARGO_BIN_EXE_wsbridge-local");
const PATIENCE: Duration = Duration::from_secs(10);

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line within the patience window")
        .expect("stdout readable")
        .expect("the process is still running")
}

/// The banner, up to its last line.
async fn banner(lines: &mut Lines<BufReader<ChildStdout>>) -> Vec<String> {
    let mut banner = Vec::new();
    loop {
        let line = next_line(lines).await;
        let last = line.starts_with("Logs:");
        banner.push(line);
        if last {
            return banner;
        }
    }
}

fn line_after<'a>(banner: &'a [String], marker: &str) -> &'a str {
    let at = banner
        .iter()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in the banner:\n{}", banner.join("\n")));
    banner[at + 1].trim()
}

fn line_with<'a>(banner: &'a [String], needle: &str) -> &'a str {
    banner
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in the banner:\n{}", banner.join("\n")))
        .trim()
}

/// `cargo run -q -p wsbridge-local -- ARGS` as printed, run as the built binary.
fn printed_subcommand(line: &str) -> Vec<String> {
    let (_, args) = line
        .split_once(" -- ")
        .unwrap_or_else(|| panic!("not a cargo run line: {line}"));
    args.split_whitespace().map(str::to_owned).collect()
}

fn dev_verifier() -> TokenVerifier {
    TokenVerifier::new(&wsbridge::dev::auth_config()).unwrap()
}

#[tokio::test]
async fn the_printed_commands_work_as_printed() {
    // GIVEN the gateway started as the README says, on free ports
    let mut gateway = Command::new(BINARY)
        .args(["--ws-port", "0", "--http-port", "0"])
        .env_remove("JWT_SECRET")
        .env_remove("BROADCAST_API_KEY")
        .env_remove("CHANNELS_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let _gateway = Running(gateway);
    let banner = banner(&mut lines).await;

    // THEN the dev token it prints is valid for alice
    let token = line_after(&banner, "A dev token for user alice");
    assert_eq!(
        dev_verifier().verify(token).await.unwrap().user_id.as_str(),
        "alice"
    );

    // AND the printed client command connects and subscribes
    let client_line = line_with(&banner, "-- client --sub alice");
    let mut client = Command::new(BINARY)
        .args(printed_subcommand(client_line))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the client starts");
    let mut client_in = client.stdin.take().unwrap();
    let mut client_out = BufReader::new(client.stdout.take().unwrap()).lines();
    let _client = Running(client);
    // The default channel configuration is the chat example: the banner names it, and its
    // example topic is one of its namespaces.
    let channels = line_with(&banner, "channels");
    assert!(
        channels.contains("list: room: typing: user:") && channels.contains("other topics refused"),
        "{channels}"
    );
    assert!(
        banner
            .iter()
            .any(|l| l.contains("the chat example (examples/channels/chat.json), the default")),
        "{}",
        banner.join("\n")
    );
    let subscribe = line_after(&banner, "in the client, subscribe");
    let topic = serde_json::from_str::<serde_json::Value>(subscribe).unwrap()["topic"]
        .as_str()
        .unwrap()
        .to_owned();
    let subscribed = serde_json::json!({"action": "subscribed", "topics": [topic]}).to_string();
    client_in
        .write_all(format!("{subscribe}\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(next_line(&mut client_out).await, subscribed);

    // AND the printed WebSocket URL (the wscat line) connects with its token
    let wscat = line_with(&banner, "wscat -c");
    let url = wscat.split('\'').nth(1).expect("a quoted URL");
    let (mut socket, _) = connect_async(url).await.expect("the printed URL connects");
    socket
        .send(Message::text(subscribe.to_owned()))
        .await
        .unwrap();
    let reply = timeout(PATIENCE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), subscribed);

    // AND the printed curl broadcast reaches both, and reports it
    let curl = line_with(&banner, "curl -s -X POST");
    let output = Command::new("sh")
        .args(["-c", curl])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{curl}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["delivered"], 2, "{report}");
    let envelope: serde_json::Value =
        serde_json::from_str(&next_line(&mut client_out).await).unwrap();
    assert_eq!(
        (&envelope["topic"], &envelope["event"], &envelope["data"]),
        (
            &topic.as_str().into(),
            &"hello".into(),
            &serde_json::json!({"n": 1})
        )
    );
    let received = timeout(PATIENCE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let received: serde_json::Value = serde_json::from_str(received.to_text().unwrap()).unwrap();
    assert_eq!(received["id"], report["id"]);

    // AND the printed token command mints a valid token for bob
    let token_line = line_with(&banner, "-- token --sub bob");
    let output = Command::new(BINARY)
        .args(printed_subcommand(token_line))
        .output()
        .await
        .unwrap();
    let minted = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        dev_verifier()
            .verify(minted.trim())
            .await
            .unwrap()
            .user_id
            .as_str(),
        "bob"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = Command::new(BINARY)
        .args(["--ws-port", &port, "--http-port", "0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// A file of the repository, from this crate's directory.
fn repository_file(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn the_chat_example_runs_with_channels_and_its_rules_apply() {
    // GIVEN the gateway started with the chat example, as README says
    let mut gateway = Command::new(BINARY)
        .args(["--ws-port", "0", "--http-port", "0", "--channels"])
        .arg(repository_file("examples/channels/chat.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let _gateway = Running(gateway);
    let banner = banner(&mut lines).await;

    // THEN the banner names the namespaces
    let channels = line_with(&banner, "channels");
    assert!(
        channels.contains("list: room: typing: user:") && channels.contains("other topics refused"),
        "{channels}"
    );

    // AND the banner's example subscribes to a topic the rules allow
    assert!(line_with(&banner, "\"action\":\"subscribe\"").contains("list:1"));

    // AND a client may join a room but not a topic outside every namespace
    let token = line_after(&banner, "A dev token for user alice");
    let ws = line_with(&banner, "WebSocket API")
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let (mut client, _) = connect_async(format!("{ws}/?token={token}")).await.unwrap();
    for (topic, expected) in [("room:1", "subscribed"), ("demo", "forbidden")] {
        let frame = serde_json::json!({"action": "subscribe", "topic": topic}).to_string();
        client.send(Message::text(frame)).await.unwrap();
        let reply = timeout(PATIENCE, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let reply: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        let outcome = reply["action"].as_str().or(reply["error"].as_str());
        assert_eq!(outcome, Some(expected), "{topic}: {reply}");
    }
}

#[tokio::test]
async fn a_bad_channels_file_is_a_clear_error_naming_the_entry() {
    let dir = std::env::temp_dir().join(format!("wsbridge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("channels.json");
    std::fs::write(&bad, r#"{"namespaces":{"room":{"subscribe":"everyone"}}}"#).unwrap();
    for (file, expected) in [
        (bad.clone(), "namespaces.room.subscribe"),
        (dir.join("missing.json"), "missing.json"),
    ] {
        let output = Command::new(BINARY)
            .args(["--ws-port", "0", "--http-port", "0", "--channels"])
            .arg(&file)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--channels") && stderr.contains(expected),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn listening_off_loopback_with_the_dev_secret_or_an_open_broadcast_api_is_refused() {
    // The gateway must refuse before binding: these runs never listen anywhere.
    let run = |secret: Option<&str>, api_key: Option<&str>| {
        let mut command = Command::new(BINARY);
        command
            .args(["--bind", "0.0.0.0", "--ws-port", "0", "--http-port", "0"])
            .env_remove("JWT_SECRET")
            .env_remove("BROADCAST_API_KEY")
            .kill_on_drop(true);
        if let Some(secret) = secret {
            command.env("JWT_SECRET", secret);
        }
        if let Some(key) = api_key {
            command.env("BROADCAST_API_KEY", key);
        }
        async move { timeout(PATIENCE, command.output()).await.unwrap().unwrap() }
    };

    // GIVEN the defaults: the public dev secret and no broadcast key
    let output = run(None, None).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:"),
        "{stderr}"
    );
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("BROADCAST_API_KEY"), "{stderr}");
    assert!(output.stdout.is_empty(), "no banner: nothing was started");

    // AND the dev secret set explicitly is no better; a key alone is not enough
    let output = run(Some(wsbridge::dev::DEV_SECRET), Some("backend-key")).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(!stderr.contains("BROADCAST_API_KEY"), "{stderr}");

    // AND a secret of one's own without a broadcast key is refused for the key
    let output = run(Some("a-secret-of-our-own-32-bytes-long!!"), None).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("BROADCAST_API_KEY"), "{stderr}");
}

#[tokio::test]
async fn logs_to_a_pipe_carry_no_terminal_colour_codes() {
    // GIVEN the gateway with its output to a pipe, as `wsbridge-local > gateway.log` runs it
    let mut gateway = Command::new(BINARY)
        .args(["--ws-port", "0", "--http-port", "0"])
        .env_remove("JWT_SECRET")
        .env_remove("BROADCAST_API_KEY")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let _gateway = Running(gateway);
    let banner = banner(&mut lines).await;

    // WHEN a client connects and sends a message, which logs a line each
    let wscat = line_with(&banner, "wscat -c");
    let url = wscat.split('\'').nth(1).expect("a quoted URL");
    let (mut socket, _) = connect_async(url).await.expect("the printed URL connects");
    socket
        .send(Message::text(r#"{"action":"ping"}"#))
        .await
        .unwrap();
    timeout(PATIENCE, socket.next()).await.unwrap();
    let mut logged = Vec::new();
    while !logged.iter().any(|l: &String| l.contains("message")) {
        logged.push(next_line(&mut lines).await);
    }

    // THEN the log lines are plain text
    assert!(logged.iter().any(|l| l.contains("connect")), "{logged:?}");
    for line in banner.iter().chain(&logged) {
        assert!(!line.contains('\x1b'), "colour codes in {line:?}");
    }
}
