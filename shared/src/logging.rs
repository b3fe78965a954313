//! Log set-up. The functions log as `lambda_runtime::tracing::init_default_subscriber` sets
//! up (`AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO; JSON lines when
//! `AWS_LAMBDA_LOG_FORMAT=JSON`; no target, no time, as CloudWatch stamps each line), with one
//! difference: colour only when stdout is a terminal. The runtime's version leaves colour to
//! tracing-subscriber's default, which is on whenever its `ansi` feature is compiled in, and
//! cargo compiles it into every binary built with the local gateway (which asks for it): the
//! functions' CloudWatch lines then read `\x1b[32m INFO\x1b[0m`.

use std::io::IsTerminal;
use std::str::FromStr;

use lambda_runtime::tracing::subscriber::filter::{EnvFilter, LevelFilter};
use lambda_runtime::tracing::subscriber::fmt::{self, MakeWriter};
use lambda_runtime::tracing::subscriber::util::SubscriberInitExt;

/// Colour for people only: stdout is a terminal and `NO_COLOR` (no-color.org) is not set.
/// Files, pipes and Lambda's log capture get plain text.
pub fn stdout_wants_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the functions' subscriber, writing to stdout. Call once, first thing in `main`.
pub fn init() {
    subscriber(
        &|name| std::env::var(name).ok(),
        std::io::stdout,
        stdout_wants_colour(),
    )
    .init();
}

/// The functions' subscriber over `writer`, configured from `lookup` (the environment).
fn subscriber<W>(
    lookup: &impl Fn(&str) -> Option<String>,
    writer: W,
    colour: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let level = lookup("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| lookup("RUST_LOG"))
        .and_then(|level| LevelFilter::from_str(&level).ok())
        .unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .parse_lossy(lookup("RUST_LOG").unwrap_or_default());
    let builder = fmt::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter)
        .with_writer(writer);
    let json = lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        Box::new(builder.with_ansi(false).json().finish())
    } else {
        Box::new(builder.with_ansi(colour).finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what is logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What the functions' subscriber writes for one debug and one info event, under `vars`.
    fn logged(vars: &[(&str, &str)], colour: bool) -> String {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let captured = Captured::default();
        let subscriber = subscriber(&|name| vars.get(name).cloned(), captured.clone(), colour);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("details");
            tracing::info!(connection_id = "L0SM9cOFvHcCIhw=", "subscribed");
        });
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_text_off_a_terminal_at_info_by_default() {
        let text = logged(&[], false);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("INFO"), "{text}");
        assert!(
            text.contains("subscribed connection_id=\"L0SM9cOFvHcCIhw=\""),
            "{text}"
        );
        assert!(!text.contains("details"), "{text}");
    }

    #[test]
    fn json_lines_when_lambda_asks_for_them_whatever_the_terminal() {
        let text = logged(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")], true);
        assert!(!text.contains('\x1b'), "{text:?}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "subscribed");
        assert_eq!(line["fields"]["connection_id"], "L0SM9cOFvHcCIhw=");
    }

    #[test]
    fn the_level_comes_from_lambda_or_rust_log() {
        let text = logged(&[("AWS_LAMBDA_LOG_LEVEL", "WARN")], false);
        assert!(!text.contains("subscribed"), "{text}");
        let text = logged(&[("RUST_LOG", "debug")], false);
        assert!(text.contains("details"), "{text}");
    }
}
