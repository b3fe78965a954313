//! Parts of background broadcasts as tasks of this process, run as Lambda runs them as
//! invocations of the broadcast function: each run has an invocation's time (29 s, like the
//! template's function), continues itself before it ends, and a run that fails is tried
//! again twice, with a pause, as Lambda retries a failed asynchronous invocation.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};
use wsbridge::handlers::Context;
use wsbridge::handlers::broadcast::run_part;
use wsbridge::shards::{LaunchError, Shard, ShardLauncher};

use crate::Bridge;

/// Runs of a part: the first and Lambda's two retries.
const ATTEMPTS: u32 = 3;

/// Queues parts for the gateway's runner task.
pub(crate) struct TaskLauncher {
    queue: mpsc::UnboundedSender<Shard>,
}

#[async_trait]
impl ShardLauncher for TaskLauncher {
    async fn launch(&self, shard: &Shard) -> Result<(), LaunchError> {
        self.queue.send(shard.clone()).map_err(|_| LaunchError {
            broadcast_id: shard.broadcast_id.clone(),
            part: shard.part,
            reason: "the gateway is stopping".into(),
        })
    }
}

/// A launcher, and the queue its runner task reads.
pub(crate) fn launcher() -> (TaskLauncher, mpsc::UnboundedReceiver<Shard>) {
    let (queue, parts) = mpsc::unbounded_channel();
    (TaskLauncher { queue }, parts)
}

/// Runs every queued part as a task of its own, for as long as the gateway lives (the
/// bridge is held weakly, so a stopped gateway is not kept alive by its runner).
pub(crate) async fn run_queue(bridge: Weak<Bridge>, mut parts: mpsc::UnboundedReceiver<Shard>) {
    while let Some(shard) = parts.recv().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        tokio::spawn(run(bridge, shard));
    }
}

async fn run(bridge: Arc<Bridge>, shard: Shard) {
    // Lambda retries a failed invocation under its request id, which the run uses as its
    // runner id: a retry takes the part back at once instead of waiting out the lease.
    let runner = uuid::Uuid::new_v4().to_string();
    for attempt in 1..=ATTEMPTS {
        let ctx = Context {
            deadline: Some(Instant::now() + bridge.shard_run_time),
            ..bridge.context()
        };
        match run_part(&shard, &runner, &ctx, &bridge.broadcast, &bridge.launcher).await {
            Ok(outcome) => {
                info!(broadcast_id = %shard.broadcast_id, part = shard.part, ?outcome, "part run");
                return;
            }
            Err(e) if attempt < ATTEMPTS => {
                warn!(broadcast_id = %shard.broadcast_id, part = shard.part, error = %e, attempt, "part run failed; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            Err(e) => {
                warn!(broadcast_id = %shard.broadcast_id, part = shard.part, error = %e, "part run failed; reading the status starts it again");
            }
        }
    }
}
