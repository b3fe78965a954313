//! What a scenario prints and writes: tables, target checks, percentiles, the JSON file, and
//! the process figures (CPU time, resident memory) read from `/proc`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Any failure of the harness; a benchmark stops on the first one and says why.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BenchError>;

/// A table printed with aligned columns.
pub struct Table {
    title: String,
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&'static str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .chain([self.headers[column].len()])
                    .max()
                    .unwrap_or_default()
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:>width$}"))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        println!("\n{}\n", self.title);
        line(self.headers.clone());
        // Markdown's right-aligned rule, as wide as the cell and its two spaces.
        let rule: Vec<String> = widths
            .iter()
            .map(|width| format!("{}:", "-".repeat(width + 1)))
            .collect();
        println!("|{}|", rule.join("|"));
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect());
        }
    }
}

/// One target of the issue, checked against a measurement.
pub struct Check {
    pub name: String,
    pub measured: String,
    pub target: String,
    pub met: bool,
}

impl Check {
    pub fn new(
        name: impl Into<String>,
        measured: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) -> Self {
        Self {
            name: name.into(),
            measured: measured.into(),
            target: target.into(),
            met,
        }
    }

    pub fn json(&self) -> Value {
        json!({"name": self.name, "measured": self.measured, "target": self.target, "met": self.met})
    }
}

/// Prints the checks as a table; returns them as JSON.
pub fn print_checks(checks: &[Check]) -> Value {
    if checks.is_empty() {
        return Value::Array(Vec::new());
    }
    let mut table = Table::new("Targets", &["target", "measured", "wanted", "met"]);
    for check in checks {
        table.row(vec![
            check.name.clone(),
            check.measured.clone(),
            check.target.clone(),
            if check.met { "yes" } else { "NO" }.to_owned(),
        ]);
    }
    table.print();
    Value::Array(checks.iter().map(Check::json).collect())
}

/// Order statistics of a sample (nearest rank).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(mut sample: Vec<f64>) -> Self {
        if sample.is_empty() {
            return Self::default();
        }
        sample.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = ((p * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[index - 1]
        };
        Self {
            count: sample.len(),
            min: sample[0],
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sample[sample.len() - 1],
            mean: sample.iter().sum::<f64>() / sample.len() as f64,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "count": self.count, "min": self.min, "p50": self.p50, "p95": self.p95,
            "p99": self.p99, "max": self.max, "mean": self.mean,
        })
    }
}

/// The median of a non-empty sample.
pub fn median(sample: &[f64]) -> f64 {
    Stats::of(sample.to_vec()).p50
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// A count with thin thousands separators, as the README writes them: `50 000`.
pub fn fmt_count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The machine a result was measured on, and when.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    json!({"cpus": cpus, "cpu_model": model, "kernel": kernel.trim(), "date": date})
}

/// Writes a scenario's results, creating the folder.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")?;
    println!("\nresults written to {}", path.display());
    Ok(())
}

/// CPU seconds a process has used so far, all its live threads, from the scheduler's
/// nanosecond accounting (`/proc/<pid>/task/*/schedstat`; `/proc/<pid>/stat` counts only
/// 10 ms ticks, too coarse for a batch of a thousand posts). `pid` may be `self`.
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .filter_map(|task| {
            let schedstat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            schedstat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    nanos as f64 / 1e9
}

/// CPU seconds the whole machine has been busy, all cores (`/proc/stat`: every state but
/// idle and iowait). Counted in ticks of 10 ms (USER_HZ is 100 on Linux): good to a few
/// hundredths of a second, enough over runs of a second or more.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next().and_then(|l| l.strip_prefix("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / 100.0
}

/// A `Vm…` line of `/proc/<pid>/status`, in KiB (`VmHWM`: peak resident set; `VmRSS`: now).
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1_024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let stats = Stats::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (stats.min, stats.p50, stats.p95, stats.p99),
            (1.0, 50.0, 95.0, 99.0)
        );
        assert_eq!(stats.max, 100.0);
        assert_eq!(Stats::of(vec![7.0]).p99, 7.0);
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(fmt_count(50_000), "50 000");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1_000_000), "1 000 000");
    }

    #[test]
    fn this_process_has_cpu_time_and_a_resident_set() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_seconds("self") > 0.0);
        assert!(machine_busy_seconds() > 0.0);
        assert!(status_kib("self", "VmHWM").is_some_and(|kib| kib > 0));
    }
}
