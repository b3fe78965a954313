//! Broadcasts running in parts, in memory: the same rules as the DynamoDB rows.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::StoreError;
use crate::store::jobs::{Claim, Job, JobStore, Progress};

#[async_trait]
impl JobStore for MemoryStore {
    async fn create_job(&self, job: &Job) -> Result<(), StoreError> {
        let now = self.clock.now_seconds();
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.get(&job.id).is_some_and(|j| j.expires_at > now) {
            return Err(StoreError::Exists(job.id.clone()));
        }
        jobs.insert(job.id.clone(), job.clone());
        Ok(())
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let now = self.clock.now_seconds();
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(jobs.get(id).filter(|j| j.expires_at > now).cloned())
    }

    async fn claim_part(
        &self,
        id: &str,
        part: u32,
        runner: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let now = self.clock.now_seconds();
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = jobs
            .get_mut(id)
            .filter(|j| j.expires_at > now)
            .and_then(|j| j.parts.iter_mut().find(|p| p.index == part))
        else {
            return Ok(Claim::Unknown);
        };
        if held.progress.is_done() {
            return Ok(Claim::Done);
        }
        match &held.runner {
            Some(other) if other != runner && held.lease_until_ms >= now_ms => {
                return Ok(Claim::Busy {
                    runner: other.clone(),
                    lease_until_ms: held.lease_until_ms,
                });
            }
            // Its runner died holding it (or is this one, retried).
            Some(_) => held.restarts += 1,
            None => {}
        }
        held.runner = Some(runner.to_owned());
        held.lease_until_ms = lease_until_ms;
        held.runs += 1;
        held.updated_at_ms = now_ms;
        Ok(Claim::Claimed(held.clone()))
    }

    async fn save_part(
        &self,
        id: &str,
        part: u32,
        runner: &str,
        progress: &Progress,
        release: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let lost = || StoreError::LeaseLost {
            id: id.to_owned(),
            part,
        };
        let held = jobs
            .get_mut(id)
            .and_then(|j| j.parts.iter_mut().find(|p| p.index == part))
            .filter(|p| p.runner.as_deref() == Some(runner))
            .ok_or_else(lost)?;
        held.progress = progress.clone();
        held.updated_at_ms = now_ms;
        if release {
            held.runner = None;
            held.lease_until_ms = 0;
        }
        Ok(())
    }
}
