//! Wiring: builds every component from the settings, runs the broker session
//! (reconnecting with backoff), the HTTP server and background tasks, and
//! shuts down in order: not ready -> stop consuming -> drain in-flight work
//! (bounded by `WF_SHUTDOWN_TIMEOUT`) -> close the broker -> stop HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::backlog;
use crate::backoff::Backoff;
use crate::broker::{self, ConfirmedPublisher, Names, TopologySpec};
use crate::config::Settings;
use crate::consume;
use crate::dead_letter::DeadLetters;
use crate::delivery::{
    self, BreakerConfig, DeliverContext, DeliveryClient, Endpoints, Lifecycle, TargetPolicy,
};
use crate::event::Catalogue;
use crate::health::Health;
use crate::ingest::{self, IngestContext};
use crate::metrics::Metrics;
use crate::operational::Operational;
use crate::subscription::{EventMarkers, History, Sequences, Store, SubscriptionCache};

/// The components shared by every task of one process.
struct Wiring {
    settings: Settings,
    catalogue: Arc<Catalogue>,
    metrics: Arc<Metrics>,
    store: Store,
    cache: Arc<SubscriptionCache>,
    markers: EventMarkers,
    sequences: Arc<Sequences>,
    health: Arc<Health>,
    client: DeliveryClient,
    endpoints: Arc<Endpoints>,
    dead_letters: Arc<DeadLetters>,
    names: Names,
    operational: Operational,
    lifecycle: Arc<Lifecycle>,
    history: History,
}

/// Runs the service until `shutdown` is cancelled, serving HTTP on `listener`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let w = Arc::new(wire(settings)?);
    let work = CancellationToken::new();
    let background = CancellationToken::new();

    let cache_task = tokio::spawn(w.cache.clone().follow_changes(background.clone()));
    let ping_task = tokio::spawn(watch_redis(w.clone(), background.clone()));
    tokio::spawn(warn_if_redis_forgets(w.store.clone()));
    let dead_task = tokio::spawn(watch_dead_letters(w.clone(), background.clone()));
    let endpoints_task = tokio::spawn(watch_endpoints(w.clone(), background.clone()));
    let http_task = tokio::spawn(admin::serve(listener, admin_state(&w), background.clone()));
    let broker_task = tokio::spawn(broker_loop(w.clone(), work.clone()));

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    w.health.set_stopping();
    // One deadline for the whole shutdown: in-flight work gets
    // WF_SHUTDOWN_TIMEOUT, closing channels, the connection and HTTP share
    // the margin, and nothing waits past both (the orchestrator's grace
    // period is derived from this sum).
    // A second of the margin is left for the process itself to end
    // (the runtime's own shutdown, the last log lines).
    let limit = w.settings.shutdown_timeout + SHUTDOWN_MARGIN - Duration::from_secs(1);
    let stop = async {
        work.cancel();
        let _ = broker_task.await;
        background.cancel();
        let _ = tokio::join!(http_task, cache_task, ping_task, dead_task, endpoints_task);
    };
    match tokio::time::timeout(limit, stop).await {
        Ok(()) => tracing::info!("stopped"),
        Err(_) => tracing::warn!(
            limit_ms = limit.as_millis() as u64,
            "shutdown reached WF_SHUTDOWN_TIMEOUT plus its margin; exiting with work handed back"
        ),
    }
    Ok(())
}

/// What the whole shutdown may take past `WF_SHUTDOWN_TIMEOUT`: closing the
/// channels, the connection and the HTTP server. Grace periods of the
/// deployment manifests are at least `WF_SHUTDOWN_TIMEOUT` + this (+ any
/// preStop sleep).
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

fn wire(settings: Settings) -> anyhow::Result<Wiring> {
    let catalogue = match &settings.event_catalogue {
        Some(path) => Catalogue::from_file(path)
            .map_err(|e| anyhow::anyhow!("invalid WF_EVENT_CATALOGUE: {e}"))?,
        None => Catalogue::embedded(),
    };
    let metrics = Arc::new(Metrics::new(
        catalogue.entries().iter().map(|e| e.event_type.as_str()),
        settings.delivery_timeout,
    ));
    let tiers = settings.retry_schedule.distinct_tiers();
    metrics.register_tiers(tiers.iter().map(|t| t.label.as_str()));
    let store = Store::for_settings(&settings).context("invalid WF_REDIS_URL")?;
    let operational = Operational::start(Names::new(&settings.namespace), metrics.clone());
    let lifecycle = Lifecycle::new(
        store.clone(),
        operational.clone(),
        metrics.clone(),
        settings.disable_on_gone,
        settings.auto_disable_after,
        settings.breaker_threshold,
    );
    Ok(Wiring {
        history: History::start(
            store.clone(),
            settings.attempt_history,
            settings.attempt_history_age,
            metrics.clone(),
        ),
        operational,
        lifecycle,
        cache: SubscriptionCache::new(store.clone(), metrics.clone()),
        markers: EventMarkers::start(store.clone()),
        sequences: Arc::new(Sequences::new(store.clone())),
        client: DeliveryClient::new(settings.delivery_timeout, target_policy(&settings)),
        endpoints: Arc::new(Endpoints::new(
            settings.endpoint_concurrency,
            settings.delivery_concurrency,
            BreakerConfig {
                threshold: settings.breaker_threshold,
                cooldown: settings.breaker_cooldown,
            },
            settings.host_concurrency,
        )),
        names: Names::new(&settings.namespace),
        dead_letters: Arc::new(
            DeadLetters::new(
                &settings.amqp_url.0,
                Names::new(&settings.namespace),
                store.clone(),
                settings.dead_letter_retention,
            )
            .with_metrics(metrics.clone())
            .with_replay_rate(settings.replay_rate),
        ),
        catalogue: Arc::new(catalogue),
        health: Arc::new(Health::default()),
        metrics,
        store,
        settings,
    })
}

/// What the broker topology is declared with.
fn topology(s: &Settings) -> TopologySpec {
    TopologySpec {
        schedule: s.retry_schedule.clone(),
        dead_letter_retention: s.dead_letter_retention,
        queue_type: s.queue_type,
        ingest_partitions: s.ingest_partitions,
    }
}

/// The callback URL rules (`WF_ALLOW_HTTP`, `WF_ALLOW_PRIVATE_TARGETS`).
fn target_policy(s: &Settings) -> TargetPolicy {
    TargetPolicy {
        allow_http: s.allow_http,
        allow_private: s.allow_private_targets,
    }
}

fn admin_state(w: &Wiring) -> Arc<AdminState> {
    Arc::new(AdminState {
        operator_token: w.settings.admin_token.clone(),
        api_enabled: w.settings.roles.api,
        store: w.store.clone(),
        catalogue: w.catalogue.clone(),
        client: w.client.clone(),
        policy: target_policy(&w.settings),
        metrics: w.metrics.clone(),
        health: w.health.clone(),
        dead_letters: w.dead_letters.clone(),
        endpoints: w.endpoints.clone(),
        lifecycle: w.lifecycle.clone(),
        history: w.history.clone(),
        backlogs: backlog::Registry::new(w.store.clone(), &w.settings.namespace),
    })
}

/// Redis holds the system of record for webhooks and tokens: say so at
/// start-up when it keeps nothing on disk.
async fn warn_if_redis_forgets(store: Store) {
    if let Ok(Some(false)) = store.persists().await {
        tracing::warn!(
            "Redis persistence is off (appendonly no, save \"\"): webhooks and API tokens live \
             only in its memory and a Redis restart loses them; turn on appendonly (or a save \
             schedule) on the Redis of WF_REDIS_URL, and back up with `webhook-fanout webhooks export`"
        );
    }
}

async fn watch_redis(w: Arc<Wiring>, token: CancellationToken) {
    loop {
        let up = w.store.ping().await.is_ok();
        w.health.set_redis(up);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(if up { 2 } else { 1 })) => {}
        }
    }
}

/// Every 5 s: forget webhooks unused for long (deleted ones), and refresh
/// `webhooks_circuit_breakers_open` (a forgotten breaker leaves it too).
async fn watch_endpoints(w: Arc<Wiring>, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(broker::depth::DEPTH_INTERVAL) => {}
        }
        w.endpoints.sweep_if_due();
        w.metrics.set_open_circuits(w.endpoints.open_circuits());
    }
}

/// `webhooks_queue_depth{queue="dead"}`, from api-role processes only (one
/// stream read per refresh; the other roles need no extra connection for it).
/// Read only while the broker session is up: before the first one declared
/// the stream, a read would fail with `NOT_FOUND` (which lapin logs as an
/// error) on a healthy first start.
async fn watch_dead_letters(w: Arc<Wiring>, token: CancellationToken) {
    if !w.settings.roles.api {
        return;
    }
    loop {
        let up = w.health.broker_up();
        if up {
            match w.dead_letters.backlog().await {
                Ok(n) => w.metrics.set_queue_depth("dead", n as i64),
                Err(e) => {
                    tracing::debug!(error = %crate::logging::Chain(&e), "dead letter backlog unavailable")
                }
            }
        }
        let wait = match up {
            true => broker::depth::DEPTH_INTERVAL,
            false => Duration::from_millis(200),
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn broker_loop(w: Arc<Wiring>, token: CancellationToken) {
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
    let name = format!("webhook-fanout {}", s.namespace);
    // Shutdown must not wait for a broker that does not answer.
    let conn = tokio::select! {
        conn = broker::connect(&s.amqp_url.0, &name) => conn.context("cannot connect to RabbitMQ")?,
        _ = token.cancelled() => return Ok(()),
    };
    broker::declare(&conn, &w.names, &topology(s))
        .await
        .context("cannot declare topology")?;
    w.health.set_broker(true);
    let conn = Arc::new(conn);
    // Backlogs this process declares reach its own drainer at once.
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let registry = backlog::Registry::new(w.store.clone(), &s.namespace);
    let router = Arc::new(backlog::Router::new(
        conn.clone(),
        w.names.clone(),
        topology(s),
        registry.clone(),
        backlog::Timing::new(s.backlog_idle),
        s.roles.deliver.then_some(wake),
    ));

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
        let Some(consuming) = deliver else {
            return idle(token).await;
        };
        let ctx = Arc::new(DeliverContext {
            cache: w.cache.clone(),
            client: w.client.clone(),
            endpoints: w.endpoints.clone(),
            prepared: Arc::new(delivery::PreparedWebhooks::default()),
            publisher: deliver_publisher.clone(),
            names: w.names.clone(),
            metrics: w.metrics.clone(),
            schedule: s.retry_schedule.clone(),
            max_age: s.max_event_age,
            lifecycle: w.lifecycle.clone(),
            history: w.history.clone(),
            sequences: w.sequences.clone(),
            heads: Default::default(),
            ordering_stall: s.max_event_age + ORDERING_STALL_MARGIN,
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
    // Close our channels before the connection: a channel dropped while the
    // connection closes races with it.
    // At shutdown, operational events still queued get a moment to go out
    // on this session; after a lost session they wait for the next one.
    if token.is_cancelled() {
        w.operational.flush(OPERATIONAL_FLUSH).await;
    }
    w.operational.attach(None);
    ingest_publisher.close().await;
    deliver_publisher.close().await;
    operational_publisher.close().await;
    broker::close_connection(&conn, "bye").await;
    result.map(|_| ()).map_err(Into::into)
}

/// How much longer than `WF_MAX_EVENT_AGE` the head of an ordering key may
/// stand still before the events behind it give up on it as lost.
const ORDERING_STALL_MARGIN: Duration = Duration::from_secs(3600);

/// Fans out while the session lasts: routes `{ns}.ingest` to the
/// partitions whenever this process holds it (one process at a time), and
/// fans out this process's share of the partitions (see
/// `ingest/partition.rs`).
async fn fan_out(
    w: &Arc<Wiring>,
    conn: &lapin::Connection,
    publisher: &ConfirmedPublisher,
    router: &Arc<backlog::Router>,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let s = &w.settings;
    let partitions = s.ingest_partitions;
    let shortcut = Arc::new(ingest::Shortcut::new(partitions));
    // A context per partition (and per routing session, for the events the
    // router fans out itself): its sequencer numbers the events of ordered
    // webhooks in that partition's order.
    let context = {
        let (w, publisher, router) = (w.clone(), publisher.clone(), router.clone());
        move |barriers: Option<(usize, Arc<ingest::Shortcut>)>| {
            Arc::new(IngestContext {
                catalogue: w.catalogue.clone(),
                cache: w.cache.clone(),
                markers: w.markers.clone(),
                publisher: publisher.clone(),
                names: w.names.clone(),
                metrics: w.metrics.clone(),
                sequencer: ingest::Sequencer::start(w.sequences.clone()),
                router: router.clone(),
                barriers,
            })
        }
    };
    let direct = ingest::Direct {
        shortcut: shortcut.clone(),
        context: Box::new({
            let context = context.clone();
            move || context(None)
        }),
        window: s.ingest_concurrency,
        drain: s.shutdown_timeout,
    };
    let routing = ingest::keep_routing(conn, &w.names, partitions, &w.metrics, &direct, token);
    let fan_out: ingest::FanOut = {
        let drain = s.shutdown_timeout;
        Box::new(move |p, consuming, stop| {
            let ctx = context(Some((p, shortcut.clone())));
            tracing::info!(partition = p, "fanning out an ingest partition");
            shortcut.held(p);
            // Before another process may take the partition, the router's
            // own fan-outs of it are done.
            let leave = {
                let shortcut = shortcut.clone();
                Box::pin(async move {
                    let deadline = tokio::time::Instant::now() + drain;
                    if !shortcut.leave(p, deadline).await {
                        tracing::warn!(
                            partition = p,
                            "direct fan-outs of the partition not finished in time"
                        );
                    }
                })
            };
            let consuming = consuming.before_release(leave);
            Box::pin(async move {
                consuming
                    .run(&stop, drain, move |d, received_us| {
                        ingest::handle_event(ctx.clone(), d, received_us)
                    })
                    .await
            })
        })
    };
    let holding = ingest::hold(
        conn,
        &w.names,
        partitions,
        s.ingest_concurrency,
        &w.metrics,
        fan_out,
        token,
    );
    tokio::try_join!(routing, holding).map(|_| ())
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
