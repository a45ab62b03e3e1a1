//! One broker session of a process: connect, declare the topology, run
//! this process's roles (fan-out, delivery) and the depth and publisher
//! watches until the connection is lost or shutdown begins; then reconnect
//! with backoff.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::fan_out::fan_out;
use super::{Wiring, topology};
use crate::backlog;
use crate::backoff::Backoff;
use crate::broker::{self, ConfirmedPublisher};
use crate::consume;
use crate::delivery::{self, DeliverContext};

pub(super) async fn broker_loop(w: Arc<Wiring>, token: CancellationToken) {
    let mut backoff = Backoff::default();
    while !token.is_cancelled() {
        match session(&w, &token, &mut backoff).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "RabbitMQ session lost; reconnecting"
            ),
        }
        w.health.set_broker(false);
        w.health.set_consumers(false);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One connection's life: declare, start this process's consumers, run them.
async fn session(
    w: &Arc<Wiring>,
    token: &CancellationToken,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let s = &w.settings;
    let Some(conn) = connect(w, token).await? else {
        return Ok(());
    };
    // Backlogs this process declares reach its own drainer at once.
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let registry = backlog::Registry::new(w.store.clone(), &s.namespace);
    let router = backlog_router(w, &conn, &registry, wake);
    let deliver = match s.roles.deliver {
        true => {
            Some(consume::start(&conn, w.names.deliver(), s.delivery_concurrency, false).await?)
        }
        false => None,
    };
    // Publishing and consuming use separate channels.
    let ingest_publisher = ConfirmedPublisher::open(&conn).await?;
    let deliver_publisher = ConfirmedPublisher::open(&conn).await?;
    let operational_publisher = ConfirmedPublisher::open(&conn).await?;
    w.operational.attach(Some(operational_publisher.clone()));
    w.health.set_consumers(true);
    backoff.reset();
    tracing::info!(namespace = %s.namespace, "consuming");

    let ingest_run = async {
        match s.roles.ingest {
            true => fan_out(w, &conn, &ingest_publisher, &router, token).await,
            false => idle(token).await,
        }
    };
    let deliver_run = async {
        match deliver {
            Some(consuming) => {
                let publisher = deliver_publisher.clone();
                run_deliver(
                    w, &conn, consuming, publisher, &registry, &router, woken, token,
                )
                .await
            }
            None => idle(token).await,
        }
    };
    let depths = async {
        broker::depth::watch(&conn, depth_queues(w), w.metrics.clone(), token).await;
        Ok(())
    };
    let watched = [
        &ingest_publisher,
        &deliver_publisher,
        &operational_publisher,
    ];
    let publishers = watch_publishers(&watched, token);
    let result = tokio::try_join!(ingest_run, deliver_run, depths, publishers);
    close(w, &watched, &conn, token).await;
    result.map(|_| ()).map_err(Into::into)
}

/// Routes jobs to their webhooks' backlogs over `conn`; the backlogs it
/// declares are named on `wake` when this process delivers.
fn backlog_router(
    w: &Wiring,
    conn: &Arc<lapin::Connection>,
    registry: &backlog::Registry,
    wake: tokio::sync::mpsc::UnboundedSender<String>,
) -> Arc<backlog::Router> {
    let s = &w.settings;
    Arc::new(backlog::Router::new(
        conn.clone(),
        w.names.clone(),
        topology(s),
        registry.clone(),
        backlog::Timing::new(s.backlog_idle),
        s.roles.deliver.then_some(wake),
    ))
}

/// Ends the session: the channels first, then the connection (a channel
/// dropped while the connection closes races with it). At shutdown,
/// operational events still queued get a moment to go out on this session;
/// after a lost session they wait for the next one.
async fn close(
    w: &Wiring,
    publishers: &[&ConfirmedPublisher],
    conn: &lapin::Connection,
    token: &CancellationToken,
) {
    if token.is_cancelled() {
        w.operational.flush(OPERATIONAL_FLUSH).await;
    }
    w.operational.attach(None);
    for publisher in publishers {
        publisher.close().await;
    }
    broker::close_connection(conn, "bye").await;
}

/// Connects and declares the topology (`None`: shutdown began first; it
/// must not wait for a broker that does not answer).
async fn connect(
    w: &Wiring,
    token: &CancellationToken,
) -> anyhow::Result<Option<Arc<lapin::Connection>>> {
    let s = &w.settings;
    let name = format!("webhook-fanout {}", s.namespace);
    let conn = tokio::select! {
        conn = broker::connect(&s.amqp_url.0, &name) => conn.context("cannot connect to RabbitMQ")?,
        _ = token.cancelled() => return Ok(None),
    };
    broker::declare(&conn, &w.names, &topology(s))
        .await
        .context("cannot declare topology")?;
    w.health.set_broker(true);
    Ok(Some(Arc::new(conn)))
}

/// Delivers while the session lasts: drains every backlog, and forwards
/// the jobs back from delay tiers (`{ns}.deliver`) to their backlogs.
#[allow(clippy::too_many_arguments)]
async fn run_deliver(
    w: &Arc<Wiring>,
    conn: &Arc<lapin::Connection>,
    consuming: consume::Consuming,
    publisher: ConfirmedPublisher,
    registry: &backlog::Registry,
    router: &Arc<backlog::Router>,
    woken: tokio::sync::mpsc::UnboundedReceiver<String>,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let s = &w.settings;
    let ctx = Arc::new(DeliverContext {
        cache: w.cache.clone(),
        client: w.client.clone(),
        endpoints: w.endpoints.clone(),
        prepared: Arc::new(delivery::PreparedWebhooks::default()),
        publisher,
        names: w.names.clone(),
        metrics: w.metrics.clone(),
        schedule: s.retry_schedule.clone(),
        max_age: s.max_event_age,
        lifecycle: w.lifecycle.clone(),
        history: w.history.clone(),
        ordering: crate::ordering::Gate::new(
            &w.numbering,
            s.retry_schedule.clone(),
            s.max_event_age,
            w.metrics.clone(),
        ),
        router: router.clone(),
        rates: Arc::new(delivery::Rates::new(w.store.clone(), &s.namespace)),
    });
    let drain = Arc::new(delivery::Drain {
        conn: conn.clone(),
        ctx: ctx.clone(),
        registry: registry.clone(),
        router: router.clone(),
        // Four times the cap: the next jobs are at hand when a request
        // ends, and finished ones can wait a moment to share an ack.
        prefetch: 4 * s.endpoint_concurrency,
        shutdown: s.shutdown_timeout,
        timing: backlog::Timing::new(s.backlog_idle),
        topology: topology(s),
    });
    let forward = consuming.run(token, s.shutdown_timeout, move |d, _| {
        let ctx = ctx.clone();
        async move { delivery::forward_job(&ctx, &d.data).await }
    });
    tokio::try_join!(forward, delivery::drain(drain, woken, token)).map(|_| ())
}

/// How long shutdown waits for queued operational events.
const OPERATIONAL_FLUSH: Duration = Duration::from_secs(2);

/// How often the publisher channels are checked.
const CHANNEL_CHECK: Duration = Duration::from_millis(250);

/// Ends the session (Err) when a publisher channel has closed: a
/// channel-level error (a publish to an exchange deleted from outside, say)
/// closes it for good while the connection and the consumers live on, and
/// every message would be handed back forever. Ending the session makes
/// `/readyz` 503 and starts a new one, with fresh channels and the topology
/// declared again.
async fn watch_publishers(
    publishers: &[&ConfirmedPublisher],
    token: &CancellationToken,
) -> lapin::Result<()> {
    loop {
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(CHANNEL_CHECK) => {}
        }
        if publishers.iter().any(|p| !p.is_open()) && !token.is_cancelled() {
            let closed = std::io::Error::other("a publisher channel was closed by the broker");
            return Err(lapin::ErrorKind::IOError(Arc::new(closed)).into());
        }
    }
}

/// (metric label, queue name) of every queue whose depth is reported.
fn depth_queues(w: &Wiring) -> Vec<(String, String)> {
    let n = &w.names;
    let mut queues = vec![("ingest".to_string(), n.ingest())];
    for p in 0..w.settings.ingest_partitions {
        queues.push((format!("ingest.{p}"), n.ingest_partition(p)));
    }
    queues.extend([
        ("deliver".to_string(), n.deliver()),
        ("rejected".to_string(), n.rejected()),
    ]);
    for tier in w.settings.retry_schedule.distinct_tiers() {
        queues.push((format!("retry.{}", tier.label), n.retry(&tier.label)));
    }
    let hold = crate::retry::hold_tier().label;
    queues.push((format!("retry.{hold}"), n.retry(&hold)));
    queues
}

async fn idle(token: &CancellationToken) -> lapin::Result<()> {
    token.cancelled().await;
    Ok(())
}
