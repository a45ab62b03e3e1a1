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
use crate::broker::{self, Names, TopologySpec};
use crate::config::Settings;
use crate::dead_letter::DeadLetters;
use crate::delivery::{BreakerConfig, DeliveryClient, Endpoints, Lifecycle, TargetPolicy};
use crate::event::Catalogue;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::operational::Operational;
use crate::ordering::Numbering;
use crate::subscription::{EventMarkers, History, Store, SubscriptionCache};

mod fan_out;
mod session;

use session::broker_loop;

/// The components shared by every task of one process.
struct Wiring {
    settings: Settings,
    catalogue: Arc<Catalogue>,
    metrics: Arc<Metrics>,
    store: Store,
    cache: Arc<SubscriptionCache>,
    markers: EventMarkers,
    numbering: Numbering,
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

/// The event catalogue (`WF_EVENT_CATALOGUE` or the embedded one) and the
/// metrics, whose labels it and the retry schedule bound.
fn catalogue_and_metrics(settings: &Settings) -> anyhow::Result<(Catalogue, Arc<Metrics>)> {
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
    Ok((catalogue, metrics))
}

fn wire(settings: Settings) -> anyhow::Result<Wiring> {
    let (catalogue, metrics) = catalogue_and_metrics(&settings)?;
    let roots = crate::delivery::roots(&settings.extra_roots);
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
        numbering: Numbering::new(store.clone()),
        client: DeliveryClient::new(
            settings.delivery_timeout,
            target_policy(&settings),
            roots,
            proxy(&settings).as_ref(),
        ),
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

/// `WF_HTTP_PROXY` and `WF_NO_PROXY`, if a proxy is set.
fn proxy(s: &Settings) -> Option<crate::delivery::ProxySettings> {
    let url = s.http_proxy.as_ref()?;
    Some(crate::delivery::ProxySettings {
        url: url.0.clone(),
        no_proxy: s.no_proxy.clone(),
    })
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
        let now = crate::clock::unix_secs();
        w.metrics
            .set_certificates_expiring(w.client.certificates_expiring(now));
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
