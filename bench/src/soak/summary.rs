//! The soak's tables and checks, from the clients' result, the rows left and the RSS trend.

use serde_json::Value;

use super::Churn;
use super::rows::RowsLeft;
use super::trend::Flatness;
use crate::report::{Check, Table, fmt_count, mib, print_checks};

pub struct Inputs<'a> {
    pub churn: &'a Churn,
    /// The child's `RESULT`.
    pub result: &'a Value,
    pub rows: &'a RowsLeft,
    pub flatness: Option<&'a Flatness>,
    /// Every connection closed and unregistered within the drain window.
    pub drained: bool,
    pub churn_seconds: f64,
}

fn count(value: &Value) -> String {
    value.as_u64().map_or_else(|| "?".to_owned(), fmt_count)
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(u64::MAX)
}

/// Prints the tables and the checks; returns the checks as JSON.
pub fn print(inputs: &Inputs) -> Value {
    let (clients, broadcasts) = (&inputs.result["clients"], &inputs.result["broadcasts"]);
    let tally = &clients["tally"];
    let sessions = clients["sessions"].as_f64().unwrap_or_default();

    let mut churn = Table::new(
        "Soak: churn",
        &[
            "clients",
            "users",
            "minutes",
            "sessions",
            "sessions/s",
            "clean close",
            "TCP drop",
            "server close",
            "of which failed",
            "refused",
            "ended unasked",
            "forgotten at connect",
            "errors",
        ],
    );
    churn.row(vec![
        fmt_count(inputs.churn.clients as u64),
        fmt_count(inputs.churn.users() as u64),
        format!("{:.1}", inputs.churn.minutes),
        count(&clients["sessions"]),
        format!("{:.1}", sessions / inputs.churn_seconds.max(1.0)),
        count(&clients["clean_closes"]),
        count(&clients["aborts"]),
        count(&clients["server_closes"]),
        count(&clients["server_closes_failed"]),
        count(&clients["refused"]),
        count(&clients["unexpected_ends"]),
        count(&clients["forgotten"]),
        count(&inputs.result["errors"]["count"]),
    ]);
    churn.print();

    let mut sent = Table::new(
        "Soak: broadcasts (the gateway's reports, summed)",
        &[
            "sent",
            "per s",
            "answered",
            "errors",
            "recipients",
            "delivered",
            "gone",
            "failed",
            "retries",
            "not adding up",
        ],
    );
    sent.row(vec![
        count(&broadcasts["sent"]),
        format!(
            "{:.1}",
            broadcasts["sent"].as_f64().unwrap_or_default() / inputs.churn_seconds.max(1.0)
        ),
        count(&broadcasts["answered"]),
        count(&broadcasts["errors"]),
        count(&broadcasts["recipients"]),
        count(&broadcasts["delivered"]),
        count(&broadcasts["gone"]),
        count(&broadcasts["failed"]),
        count(&broadcasts["retries"]),
        count(&broadcasts["mismatched"]),
    ]);
    sent.print();

    let mut owed = Table::new(
        "Soak: what the clients got (per session, then summed)",
        &[
            "required",
            "delivered",
            "lost",
            "duplicates",
            "extra (joined/left during)",
            "unexpected",
            "received in all",
        ],
    );
    owed.row(vec![
        count(&tally["required"]),
        count(&tally["delivered"]),
        count(&tally["lost"]),
        count(&tally["duplicates"]),
        count(&tally["extra"]),
        count(&tally["unexpected"]),
        count(&inputs.result["received"]),
    ]);
    owed.print();

    let rows = inputs.rows;
    let mut left = Table::new(
        format!("Soak: rows left after everyone left ({})", rows.counted_by),
        &["connections", "subscriptions", "users", "other"],
    );
    left.row(vec![
        fmt_count(rows.connections),
        fmt_count(rows.subscriptions),
        fmt_count(rows.users),
        fmt_count(rows.other),
    ]);
    left.print();
    if !rows.examples.is_empty() {
        println!("  e.g. {}", rows.examples.join(", "));
    }

    if let Some(rss) = inputs.flatness {
        let mut memory = Table::new(
            "Soak: the gateway's RSS (MiB)",
            &[
                "first sample",
                "median 40-60 %",
                "median last 10 %",
                "peak",
                "growth",
                "slope, 2nd half (MiB/h)",
                "heap in use 40-60 % / last 10 %",
            ],
        );
        memory.row(vec![
            format!("{:.1}", mib(rss.start_kib)),
            format!("{:.1}", rss.middle_kib / 1_024.0),
            format!("{:.1}", rss.end_kib / 1_024.0),
            format!("{:.1}", mib(rss.peak_kib)),
            format!("{:+.1} %", rss.growth * 100.0),
            format!("{:+.2}", rss.slope_kib_per_hour / 1_024.0),
            match (rss.heap_middle_kib, rss.heap_end_kib) {
                (Some(middle), Some(end)) => {
                    format!("{:.1} / {:.1}", middle / 1_024.0, end / 1_024.0)
                }
                _ => "unknown".to_owned(),
            },
        ]);
        memory.print();
    }
    print_checks(&checks(inputs))
}

fn checks(inputs: &Inputs) -> Vec<Check> {
    let (clients, broadcasts) = (&inputs.result["clients"], &inputs.result["broadcasts"]);
    let tally = &clients["tally"];
    let zero = |name: &str, value: &Value| Check::new(name, count(value), "0", number(value) == 0);
    let mut checks = vec![
        Check::new(
            "messages owed, all delivered",
            format!(
                "{} of {}",
                count(&tally["delivered"]),
                count(&tally["required"])
            ),
            "lost = 0",
            number(&tally["lost"]) == 0 && number(&tally["required"]) > 0,
        ),
        zero("duplicates", &tally["duplicates"]),
        zero("messages never owed (unexpected)", &tally["unexpected"]),
        zero(
            "reports with recipients ≠ delivered + gone + failed",
            &broadcasts["mismatched"],
        ),
        zero("broadcasts not answered 200", &broadcasts["errors"]),
        zero(
            "connections whose rows were gone right after the handshake",
            &clients["forgotten"],
        ),
        zero("client errors", &inputs.result["errors"]["count"]),
        Check::new(
            "every connection closed and unregistered at the end",
            if inputs.drained { "yes" } else { "no" },
            "yes",
            inputs.drained,
        ),
        Check::new(
            "rows left in the store",
            fmt_count(inputs.rows.total()),
            "0",
            inputs.rows.total() == 0,
        ),
    ];
    checks.push(match inputs.flatness {
        Some(rss) => Check::new(
            "RSS flat: median of the last 10 % vs. 40-60 %",
            format!("{:+.1} %", rss.growth * 100.0),
            format!("≤ +{:.0} %", rss.threshold * 100.0),
            rss.flat,
        ),
        None => Check::new(
            "RSS flat",
            "too few samples",
            "a sample in each window",
            false,
        ),
    });
    checks
}
