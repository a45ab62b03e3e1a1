//! Draining the backlogs: this process consumes every webhook's backlog
//! queue it finds in the registry (or that it declared itself), each with a
//! prefetch of four times the webhook's cap, so a webhook's jobs are at
//! hand as fast as it takes them and their acks can be shared. An idle, empty backlog is deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::Connection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::context::DeliverContext;
use crate::backlog::{Registry, Router, Timing};
use crate::broker;
use crate::consume;

/// How often the registry is read for backlogs other processes declared.
const READ_EVERY: Duration = Duration::from_millis(500);

/// How often each backlog's depth is read from the broker (a passive
/// declare), the first time soon after its consumer starts.
const DEPTH_EVERY: Duration = Duration::from_secs(2);

/// How often the depths read are reported (`webhooks_backlog_jobs`, and
/// per webhook in the registry for the health call's `backlog`).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Backlogs one process consumes at most: each takes a channel, and a
/// connection has at most 2047 (RabbitMQ's default `channel_max`).
const MAX_BACKLOGS: usize = 1500;

/// What draining needs besides the job handling.
pub(crate) struct Drain {
    /// The session's connection.
    pub conn: Arc<Connection>,
    /// Job handling.
    pub ctx: Arc<DeliverContext>,
    /// Which backlogs exist.
    pub registry: Registry,
    /// The router, told when a backlog is deleted here.
    pub router: Arc<Router>,
    /// Jobs in hand per backlog.
    pub prefetch: usize,
    /// How long in-flight jobs get to finish at shutdown.
    pub shutdown: Duration,
    /// When a backlog counts as idle.
    pub timing: Timing,
    /// How backlogs are deleted (by queue type).
    pub topology: broker::TopologySpec,
}

impl Drain {
    /// Whether idle backlogs are deleted: classic ones only. A quorum
    /// queue deleted while a cluster node is down and declared again later
    /// under the same name broke in RabbitMQ 3.10 (consuming it closed the
    /// connection with INTERNAL_ERROR, in the cluster test), so quorum
    /// backlogs stay once declared.
    fn deletes_idle(&self) -> bool {
        self.topology.queue_type == crate::config::QueueType::Classic
    }
}

/// Drains every backlog until `token` is cancelled; `wake` names backlogs
/// this process just declared. Err when the connection is lost.
pub(crate) async fn drain(
    d: Arc<Drain>,
    mut wake: mpsc::UnboundedReceiver<String>,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let depths: Arc<std::sync::Mutex<HashMap<String, u32>>> = Default::default();
    let mut running: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut next_read = tokio::time::Instant::now();
    let mut next_report = tokio::time::Instant::now() + REPORT_EVERY;
    loop {
        let mut found = Vec::new();
        tokio::select! {
            _ = token.cancelled() => break,
            Some(id) = wake.recv() => found.push(id),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    running.remove(&id);
                    lock(&depths).remove(&id);
                }
            }
            _ = tokio::time::sleep_until(next_read) => {
                next_read = tokio::time::Instant::now() + READ_EVERY;
                match d.registry.all().await {
                    Ok(all) => found = all,
                    Err(e) => tracing::debug!(error = %crate::logging::Chain(&e), "backlog registry unreadable"),
                }
            }
            _ = tokio::time::sleep_until(next_report) => {
                next_report = tokio::time::Instant::now() + REPORT_EVERY;
                report(&d, &depths).await;
            }
        }
        if !d.conn.status().connected() {
            break;
        }
        for id in found {
            if running.contains(&id) {
                continue;
            }
            if running.len() >= MAX_BACKLOGS {
                tracing::warn!(
                    limit = MAX_BACKLOGS,
                    "this process drains as many backlogs as it can; the others wait for a free one"
                );
                break;
            }
            running.insert(id.clone());
            tasks.spawn(one(d.clone(), id, depths.clone(), token.clone()));
        }
    }
    // Each task hands back what it has not finished within the shutdown time.
    while tasks.join_next().await.is_some() {}
    d.ctx.metrics.set_backlog_jobs(0);
    ended(&d, token)
}

/// How draining ended: Ok when shutdown stopped it, Err when the
/// connection was lost (the session starts again).
fn ended(d: &Drain, token: &CancellationToken) -> lapin::Result<()> {
    match d.conn.status().connected() || token.is_cancelled() {
        true => Ok(()),
        false => {
            let lost = std::io::Error::other("the connection drained backlogs on was lost");
            Err(lapin::ErrorKind::IOError(Arc::new(lost)).into())
        }
    }
}

/// The total of every backlog's depth, to the gauge and (per webhook) to
/// the registry, where health reads it.
async fn report(d: &Drain, depths: &std::sync::Mutex<HashMap<String, u32>>) {
    let all: Vec<(String, u32)> = lock(depths).iter().map(|(k, v)| (k.clone(), *v)).collect();
    let total: u64 = all.iter().map(|(_, n)| u64::from(*n)).sum();
    d.ctx.metrics.set_backlog_jobs(total as i64);
    if let Err(e) = d.registry.set_depths(&all).await {
        tracing::debug!(error = %crate::logging::Chain(&e), "backlog depths not recorded");
    }
}

/// When this process last started or finished a job of one backlog, and
/// how many it holds now.
#[derive(Default)]
struct Activity {
    held: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn begin(&self) {
        self.held.fetch_add(1, Ordering::AcqRel);
        self.mark();
    }

    fn end(&self) {
        self.mark();
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    fn mark(&self) {
        self.last_ms
            .store(crate::clock::unix_millis() as u64, Ordering::Release);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Acquire);
        Duration::from_millis((crate::clock::unix_millis() as u64).saturating_sub(last))
    }
}

/// Drains backlog `id` until it is deleted, the session ends or `token` is
/// cancelled; returns `id`.
async fn one(
    d: Arc<Drain>,
    id: String,
    depths: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    token: CancellationToken,
) -> String {
    let queue = d.ctx.names.backlog(&id);
    let consuming = match consume::start(&d.conn, queue.clone(), d.prefetch, false).await {
        // A quarter of the window shares an ack: 8 of 32 by default.
        Ok(c) => c.gathering(d.prefetch / 4),
        Err(e) => {
            if broker::is_not_found(&e) {
                // Deleted already; forgotten unless someone declared it again.
                let _ = d.registry.forget_if_idle(&id, d.timing.idle).await;
            } else {
                tracing::debug!(queue = %queue, error = %crate::logging::Chain(&e), "cannot consume a backlog");
            }
            return id;
        }
    };
    let activity = Arc::new(Activity::default());
    activity.mark();
    let handler = {
        let (ctx, activity) = (d.ctx.clone(), activity.clone());
        move |delivery: lapin::message::Delivery, _| {
            let (ctx, activity) = (ctx.clone(), activity.clone());
            activity.begin();
            async move {
                let settle = super::handle_job(&ctx, &delivery.data).await;
                activity.end();
                settle
            }
        }
    };
    let run = consuming.run(&token, d.shutdown, handler);
    tokio::pin!(run);
    tokio::select! {
        ran = &mut run => {
            // The broker cancels the consumer when the queue is deleted.
            if let Err(e) = ran {
                tracing::debug!(queue = %queue, error = %crate::logging::Chain(&e), "backlog consumer ended");
            }
        }
        () = upkeep(&d, &id, &queue, &activity, &depths, &token) => {
            // Deleted: the broker cancels the consumer, and the run ends.
            let _ = tokio::time::timeout(d.shutdown, &mut run).await;
        }
    }
    id
}

/// Marks backlog `id` as used while this process works on it, counts its
/// depth, and deletes it once it has been idle and empty for `WF_BACKLOG_IDLE`;
/// returns when it was deleted.
async fn upkeep(
    d: &Drain,
    id: &str,
    queue: &str,
    activity: &Activity,
    depths: &std::sync::Mutex<HashMap<String, u32>>,
    token: &CancellationToken,
) {
    let mut touched = Instant::now();
    let mut channel: Option<lapin::Channel> = None;
    let mut pause = Duration::from_millis(250);
    loop {
        tokio::select! {
            _ = token.cancelled() => return std::future::pending().await,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = DEPTH_EVERY.min(d.timing.touch_every);
        let every = d.timing.touch_every;
        let busy = activity.held.load(Ordering::Acquire) > 0 || activity.idle_for() < every;
        if busy && touched.elapsed() >= every {
            touched = Instant::now();
            let _ = d.registry.touch(&[id]).await;
        }
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = d.conn.create_channel().await.ok();
        }
        let Some(ch) = &channel else { continue };
        let depth = match broker::queue_depth(ch, queue).await {
            Ok(n) => n,
            Err(_) => continue,
        };
        lock(depths).insert(id.to_string(), depth);
        if d.deletes_idle()
            && depth == 0
            && !busy
            && activity.idle_for() >= d.timing.idle
            && delete(d, id, queue).await
        {
            return;
        }
    }
}

/// Deletes backlog `id` if no process touched it for `WF_BACKLOG_IDLE` and it
/// is empty; true when deleted. The registry entry is claimed first (routers
/// wait while it is: none publishes to the queue meanwhile), the queue is
/// found empty and deleted, then the entry goes; found in use, the queue
/// stays and the entry is touched. Stopped half way, the claim lapses after
/// `CLAIM_FOR` and the backlog is used again (re-declared if it was gone).
async fn delete(d: &Drain, id: &str, queue: &str) -> bool {
    let Ok(Some(claim)) = d.registry.claim(id, d.timing.idle).await else {
        return false;
    };
    let deleting = async {
        let ch = d.conn.create_channel().await.ok()?;
        let deleted = match broker::queue_depth(&ch, queue).await {
            Ok(0) => d.topology.delete_backlog(&ch, queue).await.is_ok(),
            _ => false,
        };
        broker::close_channel(&ch, "deleted").await;
        Some(deleted)
    };
    // Well inside the claim: a late delete must not meet a router again.
    let bound = crate::backlog::CLAIM_FOR / 3;
    let deleted = matches!(tokio::time::timeout(bound, deleting).await, Ok(Some(true)));
    if deleted {
        d.router.forget(id);
        tracing::debug!(queue, "idle backlog deleted");
    }
    let _ = d.registry.unclaim(id, claim, deleted).await;
    deleted
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
