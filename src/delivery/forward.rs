//! `{ns}.deliver`: jobs back from a delay tier (a retry, a short-circuit, an
//! ordering hold), replays, and jobs an earlier release wrote. Each goes on
//! to its webhook's backlog, behind the jobs already waiting there, so every
//! job is delivered from one place: the backlog.

use super::context::DeliverContext;
use crate::backlog::Routed;
use crate::consume::Settle;
use crate::job::DeliveryJob;

/// Moves one job of `{ns}.deliver` to its webhook's backlog (confirmed,
/// then acked); an undecodable one is rejected with its reason.
pub(crate) async fn forward_job(ctx: &DeliverContext, data: &[u8]) -> Settle {
    let job = match DeliveryJob::decode(data) {
        Ok(job) => job,
        Err(e) => return super::worker::reject(ctx, data, &e).await,
    };
    let routed = Routed {
        webhook_id: &job.webhook_id,
        payload: data,
        message_id: &job.event_id,
    };
    match ctx.router.route(&ctx.publisher, &[routed]).await {
        Ok(()) => {
            ctx.metrics.job_moved_to_backlog();
            Settle::Ack
        }
        Err(e) => {
            tracing::warn!(error = %crate::logging::Chain(&e), event_id = %job.event_id, "cannot move the job to its backlog; handed back");
            Settle::Requeue
        }
    }
}
