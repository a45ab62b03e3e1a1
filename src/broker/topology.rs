//! Every exchange and queue of the service, named from the namespace here and
//! declared idempotently at start. Each flag says why it is set.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::time::Duration;

use lapin::{Channel, Connection, ExchangeKind};

use crate::config::{MAX_INGEST_PARTITIONS, QueueType};
use crate::retry::RetrySchedule;

/// Routing key of delivery jobs on `{ns}.deliveries`.
pub const JOB_ROUTING_KEY: &str = "deliver";

/// The names of the namespace's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Names {
    ns: String,
}

impl Names {
    /// Names of namespace `ns`.
    pub fn new(ns: &str) -> Self {
        Names { ns: ns.to_string() }
    }
    /// Topic exchange producers publish events to (routing key = event type).
    pub fn events(&self) -> String {
        format!("{}.events", self.ns)
    }
    /// Queue of events waiting to be fanned out.
    pub fn ingest(&self) -> String {
        format!("{}.ingest", self.ns)
    }
    /// Ingest partition `p`: the events of the applications that hash to it,
    /// in `{ns}.ingest`'s order, fanned out by one process at a time.
    pub fn ingest_partition(&self, p: usize) -> String {
        format!("{}.ingest.{p}", self.ns)
    }
    /// The queue every ingest process consumes (it never holds a message):
    /// its consumer count is how many share the partitions.
    pub fn ingest_members(&self) -> String {
        format!("{}.ingest.members", self.ns)
    }
    /// Direct exchange delivery jobs are published to.
    pub fn deliveries(&self) -> String {
        format!("{}.deliveries", self.ns)
    }
    /// Queue of delivery jobs ready to be attempted.
    pub fn deliver(&self) -> String {
        format!("{}.deliver", self.ns)
    }
    /// Queue of refused envelopes.
    pub fn rejected(&self) -> String {
        format!("{}.rejected", self.ns)
    }
    /// Stream of dead letters.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.ns)
    }
    /// Topic exchange of operational events (routing key = their type);
    /// upstream services bind their own queues to it.
    pub fn operational(&self) -> String {
        format!("{}.operational", self.ns)
    }
    /// Delay tier queue for `label` (e.g. `30s`).
    pub fn retry(&self, label: &str) -> String {
        format!("{}.retry.{label}", self.ns)
    }
    /// The backlog of webhook `id`: the queue its jobs wait in, in order,
    /// until it takes them (declared on demand, deleted once idle and empty).
    pub fn backlog(&self, id: &str) -> String {
        format!("{}.backlog.{id}", self.ns)
    }
    /// The webhook id of backlog queue `queue`, if it is one of this namespace's.
    pub fn backlog_webhook<'a>(&self, queue: &'a str) -> Option<&'a str> {
        queue
            .strip_prefix(self.ns.as_str())?
            .strip_prefix(".backlog.")
    }
}

fn durable_queue() -> QueueDeclareOptions {
    // Durable: queues must survive a broker restart (nothing lost).
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(k), v);
    }
    t
}

fn text(s: String) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// What the declared topology depends on besides the names.
#[derive(Debug, Clone)]
pub struct TopologySpec {
    /// Retry tiers to declare.
    pub schedule: RetrySchedule,
    /// Max age of the dead-letter stream, applied when it is created.
    pub dead_letter_retention: Duration,
    /// Queue type of ingest, deliver, rejected and the delay tiers.
    pub queue_type: QueueType,
    /// How many ingest partitions to declare.
    pub ingest_partitions: usize,
}

impl TopologySpec {
    fn queue_args(&self, mut pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
        if self.queue_type == QueueType::Quorum {
            // Replicated across the cluster: a node loss loses no message.
            pairs.push(("x-queue-type", text("quorum".into())));
        }
        table(pairs)
    }

    /// The arguments of the ingest partitions (new in this release):
    /// quorum leaders placed where the fewest are, so adding nodes adds
    /// capacity. Queues of earlier releases keep theirs (a changed argument
    /// would fail their declaration).
    fn spread_args(&self) -> FieldTable {
        let mut pairs = Vec::new();
        if self.queue_type == QueueType::Quorum {
            pairs.push(("x-queue-leader-locator", text("balanced".into())));
        }
        self.queue_args(pairs)
    }

    fn all_tiers(&self) -> Vec<crate::retry::Tier> {
        let mut tiers = self.schedule.distinct_tiers();
        tiers.push(crate::retry::hold_tier());
        tiers
    }

    fn tier_args(&self, names: &Names, delay: Duration) -> FieldTable {
        let mut pairs = vec![
            // Queue-level TTL: every job in a tier waits the same time, so expiry is FIFO.
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(delay.as_millis() as i64),
            ),
            // Expired jobs go back to the deliveries exchange, hence `{ns}.deliver`.
            ("x-dead-letter-exchange", text(names.deliveries())),
            (
                "x-dead-letter-routing-key",
                text(JOB_ROUTING_KEY.to_string()),
            ),
        ];
        if self.queue_type == QueueType::Quorum {
            // Quorum queues dead-letter at-most-once by default; at-least-once
            // keeps an expired job until `{ns}.deliver` has confirmed it, and
            // requires reject-publish overflow.
            pairs.push(("x-dead-letter-strategy", text("at-least-once".into())));
            pairs.push(("x-overflow", text("reject-publish".into())));
        }
        self.queue_args(pairs)
    }
}

impl TopologySpec {
    /// Declares the backlog queue of webhook `id` on `ch`; safe to repeat.
    /// Durable, and without `x-expires`: RabbitMQ would delete an expired
    /// queue with its messages, so a backlog is deleted only by the service,
    /// and only when empty (`delete_backlog`).
    pub async fn declare_backlog(
        &self,
        ch: &Channel,
        names: &Names,
        id: &str,
    ) -> lapin::Result<()> {
        // Led from the node this process is connected to (RabbitMQ's
        // default), which is up: a backlog is often declared just after a
        // node loss, when a leader placed elsewhere may not start.
        let args = self.queue_args(Vec::new());
        ch.queue_declare(names.backlog(id).as_str().into(), durable_queue(), args)
            .await
            .map(|_| ())
    }
}

impl TopologySpec {
    /// Deletes backlog queue `queue`, which the caller found empty while
    /// holding its claim in the registry (no router publishes to it then).
    /// A classic queue is also deleted only if it holds no message ready
    /// (`if_empty`, checked by the broker in the same step; a non-empty one
    /// fails with PRECONDITION_FAILED, which closes `ch`). Quorum queues do
    /// not implement `if_empty` (RabbitMQ closes the whole connection), so
    /// for them the claim and the check before are the guard.
    pub async fn delete_backlog(&self, ch: &Channel, queue: &str) -> lapin::Result<()> {
        let options = QueueDeleteOptions {
            if_empty: self.queue_type == QueueType::Classic,
            ..QueueDeleteOptions::default()
        };
        ch.queue_delete(queue.into(), options).await.map(|_| ())
    }
}

/// Declares the whole topology; safe to repeat (same arguments every time).
pub async fn declare(conn: &Connection, names: &Names, spec: &TopologySpec) -> lapin::Result<()> {
    let ch = &conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    // Topic: routing key is the event type, so consumers may bind by pattern.
    ch.exchange_declare(
        names.events().into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    // Topic: operational events (webhook disabled, failing, ...) for
    // upstream services, routing key = event type.
    declare_operational(ch, names).await?;
    // Direct: jobs and expired retries route to `{ns}.deliver` by one fixed key.
    ch.exchange_declare(
        names.deliveries().into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await?;
    declare_queues(ch, names, spec).await?;
    super::close_channel(ch, "declared").await;
    declare_dead_letter_stream(conn, names, spec.dead_letter_retention).await
}

/// The work queues, the ingest partitions and the delay tiers, and the
/// bindings of `{ns}.ingest` and `{ns}.deliver`.
async fn declare_queues(ch: &Channel, names: &Names, spec: &TopologySpec) -> lapin::Result<()> {
    for q in [names.ingest(), names.deliver(), names.rejected()] {
        ch.queue_declare(q.into(), durable_queue(), spec.queue_args(Vec::new()))
            .await?;
    }
    for p in 0..spec.ingest_partitions {
        let q = names.ingest_partition(p);
        ch.queue_declare(q.as_str().into(), durable_queue(), spec.spread_args())
            .await?;
    }
    // `#`: every event type is fanned out; unknown ones are rejected with a reason.
    ch.queue_bind(
        names.ingest().into(),
        names.events().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        names.deliver().into(),
        names.deliveries().into(),
        JOB_ROUTING_KEY.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    // The tiers, and the hold tier where jobs of per_key webhooks wait for
    // an earlier event of their key.
    for tier in spec.all_tiers() {
        let args = spec.tier_args(names, tier.delay);
        ch.queue_declare(names.retry(&tier.label).into(), durable_queue(), args)
            .await?;
    }
    Ok(())
}

/// Declares the operational events' exchange.
async fn declare_operational(ch: &Channel, names: &Names) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        names.operational().into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await
}

/// The dead letters are a stream: consumers read from any offset without
/// removing anything, and RabbitMQ drops segments older than `retention`.
/// An existing stream is left as it is (a changed retention would otherwise
/// fail the declaration); change it with a policy (`max-age`), see docs/design.md, "Retries and dead letters".
async fn declare_dead_letter_stream(
    conn: &Connection,
    names: &Names,
    retention: Duration,
) -> lapin::Result<()> {
    let ch = conn.create_channel().await?;
    let args = table(vec![
        ("x-queue-type", text("stream".into())),
        (
            "x-max-age",
            text(format!("{}s", retention.as_secs().max(1))),
        ),
    ]);
    let declared = ch
        .queue_declare(names.dead().into(), durable_queue(), args)
        .await;
    super::close_channel(&ch, "declared").await;
    if declared.is_ok() {
        return Ok(());
    }
    // PRECONDITION_FAILED: the stream exists with another retention. Keep it
    // (a policy changes retention) as long as it exists at all.
    tracing::warn!(
        queue = %names.dead(),
        "dead letter stream exists with other arguments; WF_DEAD_LETTER_RETENTION applies only at creation"
    );
    let probe = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    probe
        .queue_declare(names.dead().into(), passive, FieldTable::default())
        .await?;
    super::close_channel(&probe, "exists").await;
    Ok(())
}

/// Deletes the namespace's exchanges and queues, including retry tiers of
/// `schedule` and every ingest partition (tests clean up their namespace
/// with this).
pub async fn delete(ch: &Channel, names: &Names, schedule: &RetrySchedule) -> lapin::Result<()> {
    let mut queues: Vec<String> = (0..MAX_INGEST_PARTITIONS)
        .map(|p| names.ingest_partition(p))
        .collect();
    queues.push(names.ingest_members());
    queues.extend([
        names.ingest(),
        names.deliver(),
        names.rejected(),
        names.dead(),
    ]);
    queues.extend(
        schedule
            .distinct_tiers()
            .iter()
            .chain([&crate::retry::hold_tier()])
            .map(|t| names.retry(&t.label)),
    );
    for q in queues {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await?;
    }
    for e in [names.events(), names.deliveries(), names.operational()] {
        ch.exchange_delete(e.into(), ExchangeDeleteOptions::default())
            .await?;
    }
    Ok(())
}
