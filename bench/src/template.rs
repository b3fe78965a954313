//! What the template deploys the broadcast function with, read from `template.yaml`, so that
//! "at the template's defaults" follows the template when it changes: the `FanoutConcurrency`
//! parameter's default, and the function's `MemorySize` and `Timeout`. The template is read
//! as lines (its `!Ref` tags are not YAML a plain parser takes).

use std::time::Duration;

use serde_json::{Value, json};

use crate::report::Result;

#[derive(Debug, Clone, Copy)]
pub struct BroadcastDefaults {
    pub fanout_concurrency: usize,
    pub memory_mb: u32,
    pub timeout: Duration,
}

impl BroadcastDefaults {
    pub fn read() -> Result<Self> {
        let path = crate::workspace_root().join("template.yaml");
        Self::parse(&std::fs::read_to_string(&path)?)
    }

    fn parse(template: &str) -> Result<Self> {
        let concurrency = value_under(template, "  FanoutConcurrency:", "Default:")?;
        let memory = value_under(template, "  BroadcastFunction:", "MemorySize:")?;
        let timeout = value_under(template, "  BroadcastFunction:", "Timeout:")?;
        Ok(Self {
            fanout_concurrency: concurrency.parse()?,
            memory_mb: memory.parse()?,
            timeout: Duration::from_secs(timeout.parse()?),
        })
    }

    /// Lambda's CPU share at this memory: one vCPU at 1 769 MB, in proportion below.
    pub fn vcpu(&self) -> f64 {
        f64::from(self.memory_mb) / 1_769.0
    }

    pub fn json(&self) -> Value {
        json!({
            "fanout_concurrency": self.fanout_concurrency, "memory_mb": self.memory_mb,
            "timeout_seconds": self.timeout.as_secs(), "vcpu": self.vcpu(),
        })
    }
}

/// The value of the first `key` line after the line `section` (the next top-level entry of
/// the same indentation ends the search).
fn value_under(template: &str, section: &str, key: &str) -> Result<String> {
    let mut lines = template.lines().skip_while(|line| *line != section);
    lines
        .next()
        .ok_or_else(|| format!("template.yaml has no {section:?}"))?;
    let indent = section.len() - section.trim_start().len();
    for line in lines {
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && line.len() - trimmed.len() <= indent && !trimmed.starts_with('#')
        {
            break;
        }
        if let Some(value) = trimmed.strip_prefix(key) {
            return Ok(value.trim().to_owned());
        }
    }
    Err(format!("template.yaml: no {key} under {section:?}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_template_names_the_broadcast_defaults() {
        let defaults = BroadcastDefaults::read().unwrap();
        assert!(defaults.fanout_concurrency >= 1);
        assert!(defaults.memory_mb >= 128);
        assert!(defaults.timeout <= Duration::from_secs(900));
    }

    #[test]
    fn a_key_is_read_under_its_section_only() {
        let template = "Parameters:\n  Other:\n    Default: 7\n  FanoutConcurrency:\n    Type: Number\n    Default: 64\nResources:\n  BroadcastFunction:\n    Properties:\n      MemorySize: 1024\n      Timeout: 29\n";
        let defaults = BroadcastDefaults::parse(template).unwrap();
        assert_eq!(defaults.fanout_concurrency, 64);
        assert_eq!(defaults.memory_mb, 1_024);
        assert_eq!(defaults.timeout, Duration::from_secs(29));
    }
}
