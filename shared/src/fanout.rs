//! Fan-out: one payload to every recipient of a target, with bounded concurrency, and a
//! report of what happened to each.

use std::collections::HashSet;
use std::future::ready;

use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::{debug, warn};

use crate::protocol::ConnectionId;
use crate::protocol::broadcast::{Exclusions, FanoutReport, Target};
use crate::sender::{ConnectionSender, SendError};
use crate::store::{RecipientStore, StoreError};

/// Reading recipients failed part-way; `report` is what was sent before that.
#[derive(Debug, thiserror::Error)]
#[error("fan-out stopped after {} of its recipients: {source}", report.recipients)]
pub struct FanoutError {
    pub report: FanoutReport,
    #[source]
    pub source: StoreError,
}

/// Sends `payload` to every live connection `target` names, except `exclusions`, at most
/// `concurrency` posts at a time, and removes the connections that answered 410.
///
/// Recipients stream in page by page, so sends start with the first page. One failing
/// connection never fails the broadcast; it is counted and logged.
pub async fn fan_out(
    store: &dyn RecipientStore,
    sender: &dyn ConnectionSender,
    target: &Target,
    exclusions: &Exclusions,
    payload: &[u8],
    concurrency: usize,
) -> Result<FanoutReport, FanoutError> {
    let mut report = FanoutReport::default();
    let mut gone: Vec<ConnectionId> = Vec::new();
    // Only for `Target::Connections`: ids the store did not return are gone too.
    let mut found: HashSet<ConnectionId> = HashSet::new();
    let track_found = matches!(target, Target::Connections(_));

    let mut results = store
        .recipients(target)
        .map_ok(|page| stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
        .try_filter(|recipient| {
            ready(!exclusions.excludes(&recipient.connection_id, &recipient.user_id))
        })
        .map_ok(|recipient| async move {
            let outcome = sender.send(&recipient, payload).await;
            Ok::<_, StoreError>((recipient, outcome))
        })
        .try_buffer_unordered(concurrency.max(1));

    let mut failure = None;
    while let Some(result) = results.next().await {
        let (recipient, outcome) = match result {
            Ok(sent) => sent,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        report.recipients += 1;
        if track_found {
            found.insert(recipient.connection_id.clone());
        }
        match outcome {
            Ok(()) => report.delivered += 1,
            Err(SendError::Gone) => {
                debug!(connection_id = %recipient.connection_id, "gone");
                report.gone += 1;
                gone.push(recipient.connection_id);
            }
            Err(e) => {
                warn!(connection_id = %recipient.connection_id, reason = %e, "post failed");
                report.failed += 1;
            }
        }
    }
    drop(results);

    if let (Target::Connections(ids), None) = (target, &failure) {
        let unknown = ids
            .iter()
            .filter(|id| !found.contains(*id) && exclusions.connection.as_ref() != Some(*id));
        for id in unknown {
            debug!(connection_id = %id, "not connected");
            report.recipients += 1;
            report.gone += 1;
        }
    }

    if !gone.is_empty() {
        // Rows of gone connections also expire by TTL, so a failed clean-up costs only
        // a few wasted posts later; it does not fail the broadcast.
        if let Err(e) = store.remove_connections(&gone).await {
            warn!(count = gone.len(), error = %e, "could not remove gone connections");
        }
    }
    match failure {
        Some(source) => Err(FanoutError { report, source }),
        None => Ok(report),
    }
}
