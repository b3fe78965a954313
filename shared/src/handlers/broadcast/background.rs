//! Broadcasts sent in the background: handed over when the audience cannot be reached
//! within the synchronous call's budget (or the caller asked, `"async": true`), split into
//! parts that run in parallel as invocations of their own, each continuing itself in a new
//! invocation before its deadline, each followed at `GET /broadcasts/{id}`.

use std::sync::atomic::{AtomicBool, Ordering};

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use tokio::time::{Duration, Instant};
use tracing::{error, info, warn};

use super::{error_response, internal_error, json_response};
use crate::clock::now_millis;
use crate::config::BroadcastConfig;
use crate::fanout::{Checkpoint, Checkpoints, Resume, fan_out_from, metrics};
use crate::handlers::Context;
use crate::handlers::announce::{Change, announce};
use crate::protocol::broadcast::{
    ApiError, ApiErrorCode, BroadcastResponse, BroadcastState, Exclusions, Target,
};
use crate::protocol::status::{BroadcastStatus, ShardState, ShardStatus};
use crate::sender::Payload;
use crate::shards::{Shard, ShardLauncher};
use crate::store::history::Position;
use crate::store::jobs::{Claim, JOB_TTL_SECONDS, Job, Part, Progress, Tally};
use crate::store::{Audience, JobStore, StoreError};

/// Time a part keeps before its invocation's deadline: it stops reading pages then,
/// finishes the page it is sending (whose posts the deadline margin then bounds), saves
/// where it stands and starts its continuation.
pub const CONTINUE_MARGIN: Duration = Duration::from_secs(5);

/// A part nobody has run for this long, though not done, is stalled: its invocation and
/// Lambda's retries of it all failed (or it was never started).
pub const STALL_AFTER_MS: i64 = 60_000;

/// Attempts at starting one part before the failure is left to the status reader.
const LAUNCH_ATTEMPTS: u32 = 3;

/// What a broadcast handed to the background was: enough to answer for it.
pub(super) struct Handover<'a> {
    pub id: &'a str,
    pub target: &'a Target,
    pub audience: Audience,
    pub exclusions: Exclusions,
    pub payload: &'a Payload,
    /// What is left, and what the call sent itself before.
    pub rest: Checkpoint,
    pub position: Option<&'a Position>,
    pub accepted_at: i64,
}

/// Records the broadcast's parts and starts them; answers 202's body, or what the caller
/// must hear when the parts could not even be recorded.
pub(super) async fn hand_over(
    handover: Handover<'_>,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &dyn ShardLauncher,
) -> Result<BroadcastResponse, ApiError> {
    let Handover {
        id,
        target,
        audience,
        exclusions,
        payload,
        rest,
        position,
        accepted_at,
    } = handover;
    let head = Tally {
        report: rest.report,
        retries: rest.retries,
    };
    let job = Job {
        id: id.to_owned(),
        audience,
        exclusions,
        payload: payload.bytes().clone(),
        head,
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.clone()),
        created_at_ms: accepted_at,
        expires_at: crate::clock::now_seconds() + JOB_TTL_SECONDS,
        parts: parts(rest.rest, rest.unsent, config.shards, accepted_at),
    };
    match ctx.store.create_job(&job).await {
        Ok(()) => {}
        // A retry of a broadcast whose first call handed it over and died before it answered
        // (its idempotency claim then lapsed): the parts already run; follow them.
        Err(StoreError::Exists(_)) => {
            warn!(broadcast_id = %id, "already in the background: answering its status");
            let existing = match ctx.store.job(id).await {
                Ok(Some(existing)) => existing,
                _ => return Err(internal_error()),
            };
            // That call may have died, or lost the store's answer, before it started the
            // parts: start those nobody runs. A part runs one invocation at a time, from
            // its last save, so one whose event was only late runs once all the same.
            let now = now_millis();
            for part in &existing.parts {
                if let ShardState::Waiting | ShardState::Stalled = shard_state(part, now) {
                    let shard = Shard {
                        broadcast_id: id.to_owned(),
                        part: part.index,
                    };
                    start(launcher, &shard).await;
                }
            }
            return Ok(accepted(&existing, now));
        }
        Err(e) => {
            error!(broadcast_id = %id, error = %e, "background broadcast not recorded");
            // Nothing was handed over: what was sent is reported, and the rest is not sent.
            return Err(match head.report.recipients {
                0 => internal_error(),
                _ => ApiError::new(
                    ApiErrorCode::InternalError,
                    format!(
                        "{} recipients were sent to, then the rest could not be handed to the \
                         background (the store failed); retry with \"id\": {id:?}: the \
                         retry sends to everyone, and clients drop what they already got by \
                         its id",
                        head.report.recipients
                    ),
                ),
            });
        }
    }
    for part in &job.parts {
        start(
            launcher,
            &Shard {
                broadcast_id: id.to_owned(),
                part: part.index,
            },
        )
        .await;
    }
    info!(
        broadcast_id = %id,
        target = ?target,
        shards = job.parts.len(),
        sent_before = head.report.recipients,
        "broadcast handed to the background"
    );
    Ok(BroadcastResponse {
        report: head.report,
        retries: head.retries,
        ..accepted(&job, now_millis())
    })
}

/// The 202 body for a broadcast in the background: where to follow it, and how far it got.
fn accepted(job: &Job, now_ms: i64) -> BroadcastResponse {
    let status = status_of(job, now_ms);
    BroadcastResponse {
        id: job.id.clone(),
        status: status.status,
        report: status.report,
        retries: status.retries,
        deadline_reached: false,
        store_failed: false,
        offset: job.offset,
        epoch: job.epoch.clone(),
        replayed: false,
        status_url: Some(status_path(&job.id)),
        shards: Some(job.parts.len() as u32),
    }
}

/// `/broadcasts/{id}`, the id percent-encoded as one path segment (ids may hold `/`).
pub fn status_path(id: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(id, SEGMENT);
    format!("/broadcasts/{encoded}")
}

/// What a path segment must encode: everything but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What is left, as parts: the span split in `shards`, the unsent with the first.
fn parts(
    span: Option<crate::store::Span>,
    unsent: Vec<crate::store::Recipient>,
    shards: u32,
    now_ms: i64,
) -> Vec<Part> {
    let spans = match span {
        Some(span) => span.split(shards as usize).into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut unsent = Some(unsent);
    spans
        .into_iter()
        .enumerate()
        .map(|(index, rest)| {
            let progress = Progress {
                rest,
                unsent: unsent.take().unwrap_or_default(),
                tally: Tally::default(),
            };
            Part::new(index as u32, progress, now_ms)
        })
        .collect()
}

/// Starts a part, trying a few times; a part that cannot be started stays recorded, and
/// reading the broadcast's status starts it again.
async fn start(launcher: &dyn ShardLauncher, shard: &Shard) {
    for attempt in 1..=LAUNCH_ATTEMPTS {
        match launcher.launch(shard).await {
            Ok(()) => return,
            Err(e) if attempt < LAUNCH_ATTEMPTS => {
                warn!(error = %e, attempt, "part not started; trying again");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => error!(error = %e, "part not started; the status route will start it"),
        }
    }
}

/// `GET /broadcasts/{id}`: where a background broadcast stands. Parts found stalled are
/// started again.
pub(super) async fn status(
    id: &str,
    ctx: &Context<'_>,
    launcher: &dyn ShardLauncher,
) -> Response<Body> {
    let job = match ctx.store.job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return error_response(ApiError::new(
                ApiErrorCode::NotFound,
                format!(
                    "no background broadcast {id:?}: only broadcasts answered 202 are followed, \
                     for 24 hours"
                ),
            ));
        }
        Err(e) => {
            error!(broadcast_id = %id, error = %e, "status read failed");
            return error_response(internal_error());
        }
    };
    let now = now_millis();
    let status = status_of(&job, now);
    for shard in status
        .shards
        .iter()
        .filter(|s| s.status == ShardState::Stalled)
    {
        warn!(broadcast_id = %id, part = shard.part, "part stalled: starting it again");
        start(
            launcher,
            &Shard {
                broadcast_id: id.to_owned(),
                part: shard.part,
            },
        )
        .await;
    }
    json_response(StatusCode::OK, &status)
}

/// A broadcast's status as of `now_ms`.
pub fn status_of(job: &Job, now_ms: i64) -> BroadcastStatus {
    let mut total = job.head;
    let (mut continuations, mut restarts, mut updated_at) = (0, 0, job.created_at_ms);
    let shards: Vec<ShardStatus> = job
        .parts
        .iter()
        .map(|part| {
            total.add(&part.progress.tally);
            continuations += u64::from(part.runs.saturating_sub(1 + part.restarts));
            restarts += u64::from(part.restarts);
            updated_at = updated_at.max(part.updated_at_ms);
            ShardStatus {
                part: part.index,
                status: shard_state(part, now_ms),
                report: part.progress.tally.report,
                retries: part.progress.tally.retries,
                runs: part.runs,
                restarts: part.restarts,
                updated_at: part.updated_at_ms,
            }
        })
        .collect();
    let done = shards.iter().all(|s| s.status == ShardState::Done);
    BroadcastStatus {
        id: job.id.clone(),
        status: if done {
            BroadcastState::Done
        } else {
            BroadcastState::Running
        },
        report: total.report,
        retries: total.retries,
        continuations,
        restarts,
        offset: job.offset,
        epoch: job.epoch.clone(),
        created_at: job.created_at_ms,
        updated_at,
        shards,
    }
}

fn shard_state(part: &Part, now_ms: i64) -> ShardState {
    if part.progress.is_done() {
        ShardState::Done
    } else if part.runner.is_some() && part.lease_until_ms >= now_ms {
        ShardState::Running
    } else if now_ms - part.updated_at_ms > STALL_AFTER_MS {
        ShardState::Stalled
    } else {
        ShardState::Waiting
    }
}

/// A part's checkpoints, saved on its row while its runner holds it.
struct PartCheckpoints<'a> {
    store: &'a dyn JobStore,
    shard: &'a Shard,
    runner: &'a str,
    /// What earlier runs did.
    base: Tally,
    /// A checkpoint found the part taken over by another runner.
    lease_lost: AtomicBool,
}

impl PartCheckpoints<'_> {
    fn progress(&self, checkpoint: &Checkpoint) -> Progress {
        let mut tally = self.base;
        tally.add(&Tally {
            report: checkpoint.report,
            retries: checkpoint.retries,
        });
        Progress {
            rest: checkpoint.rest.clone(),
            unsent: checkpoint.unsent.clone(),
            tally,
        }
    }

    async fn save_progress(&self, progress: &Progress, release: bool) -> Result<(), StoreError> {
        let Shard { broadcast_id, part } = self.shard;
        self.store
            .save_part(
                broadcast_id,
                *part,
                self.runner,
                progress,
                release,
                now_millis(),
            )
            .await
    }
}

#[async_trait::async_trait]
impl Checkpoints for PartCheckpoints<'_> {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let saved = self.save_progress(&self.progress(checkpoint), false).await;
        if let Err(StoreError::LeaseLost { .. }) = saved {
            self.lease_lost.store(true, Ordering::Relaxed);
        }
        saved
    }
}

/// What one run of a part came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// It sent what it could and saved where it stands; `continued`: a continuation was
    /// started for the rest.
    Ran { done: bool, continued: bool },
    /// Nothing to do: the part is done, another runner holds it, or it is unknown.
    Skipped(&'static str),
}

/// Why a run failed: the invocation should fail, so that Lambda retries it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Launch(#[from] crate::shards::LaunchError),
    /// A checkpoint could not be saved (the store failed, the warning before says how): the
    /// run stopped, and still holds the part at its last save.
    #[error("a checkpoint of part {part} of broadcast {id} could not be saved")]
    Checkpoint { id: String, part: u32 },
}

/// Runs one part of a background broadcast for `runner` until `ctx.deadline` (less
/// [`CONTINUE_MARGIN`]), then saves where it stands and starts its continuation.
pub async fn run_part(
    shard: &Shard,
    runner: &str,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &dyn ShardLauncher,
) -> Result<RunOutcome, RunError> {
    let Shard { broadcast_id, part } = shard;
    let Some(job) = ctx.store.job(broadcast_id).await? else {
        warn!(broadcast_id = %broadcast_id, part, "part of an unknown broadcast: nothing to run");
        return Ok(RunOutcome::Skipped("unknown"));
    };
    // Lambda ends the invocation at its deadline: the lease ends with it.
    let lease_until = now_millis()
        + ctx.deadline.map_or(60_000, |d| {
            d.saturating_duration_since(Instant::now()).as_millis() as i64
        });
    let held = match ctx
        .store
        .claim_part(broadcast_id, *part, runner, lease_until, now_millis())
        .await?
    {
        Claim::Claimed(held) => held,
        Claim::Done => return Ok(RunOutcome::Skipped("done")),
        Claim::Busy { runner: other, .. } => {
            info!(broadcast_id = %broadcast_id, part, holder = %other, "part held by another runner");
            return Ok(RunOutcome::Skipped("busy"));
        }
        Claim::Unknown => return Ok(RunOutcome::Skipped("unknown")),
    };
    let checkpoints = PartCheckpoints {
        store: ctx.store,
        shard,
        runner,
        base: held.progress.tally,
        lease_lost: AtomicBool::new(false),
    };
    let stop_reading_at = ctx
        .deadline
        .map(|d| d.checked_sub(CONTINUE_MARGIN).unwrap_or_else(Instant::now));
    let options = ctx.fanout_options().stopping_reading_at(stop_reading_at);
    let start = Resume {
        span: held.progress.rest.clone(),
        unsent: held.progress.unsent.clone(),
    };
    let outcome = fan_out_from(
        ctx.store,
        &ctx.sender,
        &job.audience,
        start,
        &job.exclusions,
        &Payload::new(job.payload.clone()),
        &options,
        Some(&checkpoints),
    )
    .await;
    let (summary, failure) = match &outcome {
        Ok(summary) => (summary, None),
        Err(e) => (&e.summary, Some(&e.source)),
    };
    for (user, topic) in &summary.left {
        announce(ctx, Change::Leave, user, std::slice::from_ref(topic)).await;
    }
    if config.emit_metrics {
        let target = target_of(&job.audience);
        println!(
            "{}",
            metrics::emf(summary, &target, broadcast_id, now_millis())
        );
    }
    if summary.checkpoint_failed {
        if checkpoints.lease_lost.load(Ordering::Relaxed) {
            // Another runner holds the part now: it carries on from the last save.
            return Ok(RunOutcome::Skipped("lease lost"));
        }
        // The store failed: nobody else will take the part up before this run's lease
        // ends, and then only a status read would. Fail, so that Lambda retries the
        // invocation; its retry, under the same request id, takes the part back at once.
        return Err(RunError::Checkpoint {
            id: broadcast_id.clone(),
            part: *part,
        });
    }
    let progress = checkpoints.progress(&summary.checkpoint());
    let moved = progress != held.progress;
    checkpoints.save_progress(&progress, true).await?;
    info!(
        broadcast_id = %broadcast_id,
        part,
        run = held.runs,
        delivered = summary.report.delivered,
        failed = summary.report.failed,
        unsent = progress.unsent.len(),
        done = progress.is_done(),
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "part run"
    );
    if progress.is_done() {
        return Ok(RunOutcome::Ran {
            done: true,
            continued: false,
        });
    }
    if let (Some(e), false) = (failure, moved) {
        // The store failed before anything moved: fail, so that Lambda retries later
        // instead of continuations spinning on a store that is down.
        return Err(RunError::Store(StoreError::backend(
            "Query",
            crate::store::Failure::Unavailable,
            e.to_string(),
        )));
    }
    launcher.launch(shard).await?;
    Ok(RunOutcome::Ran {
        done: false,
        continued: true,
    })
}

/// The target kind a stored audience came from, for metrics' dimension.
fn target_of(audience: &Audience) -> Target {
    match audience {
        Audience::Subscribers(_) => Target::Topics(Vec::new()),
        Audience::User(user) => Target::User(user.clone()),
        Audience::Connections(_) => Target::Connections(Vec::new()),
        Audience::All => Target::All,
    }
}
