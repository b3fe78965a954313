//! One CloudWatch Embedded Metric Format line per broadcast: printed to stdout in Lambda,
//! CloudWatch turns it into metrics with no agent and no API call.

use serde_json::{Value, json};

use super::FanoutSummary;
use crate::protocol::broadcast::Target;

/// The CloudWatch namespace of wsbridge's metrics.
pub const NAMESPACE: &str = "wsbridge";

fn target_kind(target: &Target) -> &'static str {
    match target {
        Target::Topic(_) => "topic",
        Target::Topics(_) => "topics",
        Target::User(_) => "user",
        Target::Connections(_) => "connections",
        Target::All => "all",
    }
}

/// The EMF document for one broadcast, dimensioned by target kind (never by topic or user:
/// every distinct dimension value is a billed metric).
pub fn emf(
    summary: &FanoutSummary,
    target: &Target,
    broadcast_id: &str,
    timestamp_ms: i64,
) -> Value {
    let report = &summary.report;
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["TargetKind"]],
                "Metrics": [
                    {"Name": "Recipients", "Unit": "Count"},
                    {"Name": "Delivered", "Unit": "Count"},
                    {"Name": "Gone", "Unit": "Count"},
                    {"Name": "Failed", "Unit": "Count"},
                    {"Name": "Retries", "Unit": "Count"},
                    {"Name": "Duration", "Unit": "Milliseconds"},
                ],
            }],
        },
        "TargetKind": target_kind(target),
        "Recipients": report.recipients,
        "Delivered": report.delivered,
        "Gone": report.gone,
        "Failed": report.failed,
        "Retries": summary.retries,
        "Duration": summary.elapsed.as_secs_f64() * 1_000.0,
        "BroadcastId": broadcast_id,
        "DeadlineReached": summary.unfinished(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::broadcast::FanoutReport;

    #[test]
    fn every_declared_metric_has_a_value_and_the_dimension_is_set() {
        let summary = FanoutSummary {
            left: Vec::new(),
            report: FanoutReport {
                recipients: 10,
                delivered: 7,
                gone: 2,
                failed: 1,
            },
            retries: 3,
            elapsed: Duration::from_millis(42),
            ..FanoutSummary::default()
        };
        let line = emf(&summary, &Target::All, "b-1", 1_700_000_000_000);
        let declared = &line["_aws"]["CloudWatchMetrics"][0];
        for metric in declared["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} has no value");
        }
        for dimension in declared["Dimensions"][0].as_array().unwrap() {
            assert!(line[dimension.as_str().unwrap()].is_string());
        }
        assert_eq!(line["Delivered"], 7);
        assert_eq!(line["Retries"], 3);
        assert_eq!(line["Duration"], 42.0);
        assert_eq!(line["TargetKind"], "all");
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }
}
