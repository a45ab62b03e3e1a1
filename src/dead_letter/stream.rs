//! Reading and resolving dead letters: a scan of the `{ns}.dead` stream from an
//! offset (nothing is consumed away), filtered, minus the ids resolved (replayed or discarded) in Redis.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use tokio::sync::Mutex;

use super::error::DeadLetterError;
use super::pacer::{DEFAULT_REPLAY_RATE, Pacer};
use super::reader::Reader;
use super::record::{DeadLetter, Filter, id_of, offset_of};
use super::resolved::Resolved;
use crate::broker::{self, ConfirmedPublisher, JOB_ROUTING_KEY, Names, Outgoing};
use crate::clock;
use crate::job::{DeliveryJob, JobOrder};
use crate::metrics::Metrics;
use crate::ordering::Numbering;
use crate::subscription::{Ordering, Store};

/// Stream credit: how many dead letters the broker sends ahead of our acks.
const READ_AHEAD: u16 = 2000;
/// Reading the last chunk: how long an empty stream takes to say nothing.
const FIRST_IDLE: Duration = Duration::from_millis(300);
/// Within the last chunk, this much silence means it was all delivered.
const TAIL_IDLE: Duration = Duration::from_millis(30);
/// Before the known end, a silence this long means the broker stalled.
const BODY_IDLE: Duration = Duration::from_millis(1500);

/// One page of a listing.
pub struct Page {
    /// (id, dead letter), oldest first.
    pub items: Vec<(String, DeadLetter)>,
    /// Where the next page starts, if there may be more.
    pub next_cursor: Option<String>,
}

/// The result of replaying every match of a filter.
pub struct ReplayAll {
    /// Jobs published again.
    pub replayed: usize,
    /// Left alone because their webhook was deleted.
    pub skipped_webhook_deleted: usize,
}

/// Operator access to the dead letters of one namespace.
pub struct DeadLetters {
    amqp_url: String,
    names: Names,
    store: Store,
    /// The ids replayed or discarded, hidden from listings.
    resolved: Resolved,
    retention: Duration,
    metrics: Option<Arc<Metrics>>,
    pacer: Pacer,
    /// Numbers the replays of `per_key` webhooks in their keys' order.
    numbering: Numbering,
    // One lazily opened connection, reopened after a failure.
    conn: Mutex<Option<(Arc<Connection>, ConfirmedPublisher)>>,
}

impl DeadLetters {
    /// Dead letters of `names`' namespace, kept `retention`.
    pub fn new(amqp_url: &str, names: Names, store: Store, retention: Duration) -> Self {
        DeadLetters {
            amqp_url: amqp_url.to_string(),
            names,
            numbering: Numbering::new(store.clone()),
            resolved: Resolved::new(store.clone()),
            store,
            retention,
            metrics: None,
            pacer: Pacer::new(DEFAULT_REPLAY_RATE),
            conn: Mutex::new(None),
        }
    }

    /// Paces bulk replays and catch-ups at `rate` per second
    /// (`WF_REPLAY_RATE`).
    pub fn with_replay_rate(mut self, rate: u32) -> Self {
        self.pacer = Pacer::new(rate);
        self
    }

    /// Counts unreadable dead letters moved aside in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn connection(&self) -> Result<(Arc<Connection>, ConfirmedPublisher), DeadLetterError> {
        let mut slot = self.conn.lock().await;
        // A channel error closes the publisher's channel but not the
        // connection: both must be open to be reused.
        if let Some((conn, publisher)) = slot.as_ref()
            && conn.status().connected()
            && publisher.is_open()
        {
            return Ok((conn.clone(), publisher.clone()));
        }
        if let Some((conn, _)) = slot.take() {
            broker::close_connection(&conn, "reopening").await;
        }
        let conn = Arc::new(broker::connect(&self.amqp_url, "webhook-fanout dead-letters").await?);
        let publisher = ConfirmedPublisher::open(&conn).await?;
        *slot = Some((conn.clone(), publisher.clone()));
        Ok((conn, publisher))
    }

    /// Up to `limit` unresolved dead letters matching `filter`, from `cursor` on.
    pub async fn page(
        &self,
        filter: &Filter,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<Page, DeadLetterError> {
        let resolved = self.resolved.all().await?;
        let mut items = Vec::new();
        let mut next_cursor = None;
        // Unfiltered pages need few messages: ask for little more than a page.
        let credit = match filter == &Filter::default() {
            true => (limit as u16).saturating_add(10).min(READ_AHEAD),
            false => READ_AHEAD,
        };
        self.scan(cursor, credit, |offset, letter| {
            let id = id_of(offset);
            if resolved.contains(&id) || !letter.matches(filter) {
                return ControlFlow::Continue(());
            }
            if items.len() == limit {
                next_cursor = Some(offset.to_string());
                return ControlFlow::Break(());
            }
            items.push((id, letter));
            ControlFlow::Continue(())
        })
        .await?;
        Ok(Page { items, next_cursor })
    }

    /// About how many dead letters wait (neither replayed nor discarded): the
    /// stream's end minus its first offset minus the resolved ids. Resolved ids
    /// are kept a day past retention, so this undercounts a little then.
    pub async fn backlog(&self) -> Result<u64, DeadLetterError> {
        let Some(last) = self.last_offset().await? else {
            return Ok(0);
        };
        let end = last + 1;
        let mut first = None;
        self.scan(None, 1, |offset, _| {
            first = Some(offset);
            ControlFlow::Break(())
        })
        .await?;
        let Some(first) = first else { return Ok(0) };
        let resolved = self.resolved.count().await?;
        Ok(end.saturating_sub(first).saturating_sub(resolved))
    }

    /// One unresolved dead letter.
    pub async fn get(&self, id: &str) -> Result<DeadLetter, DeadLetterError> {
        let offset = offset_of(id).ok_or(DeadLetterError::NotFound)?;
        if self.resolved.contains(id).await? {
            return Err(DeadLetterError::NotFound);
        }
        let mut found = None;
        self.scan(Some(offset), 10, |at, letter| {
            if at == offset {
                found = Some(letter);
            }
            ControlFlow::Break(())
        })
        .await?;
        found.ok_or(DeadLetterError::NotFound)
    }

    /// Replays one dead letter: a new job with a fresh max-age window and the
    /// same `Webhook-Id`; the dead letter is then resolved.
    pub async fn replay(&self, id: &str) -> Result<(), DeadLetterError> {
        let letter = self.get(id).await?;
        self.replay_letter(id, &letter, &mut HashMap::new()).await
    }

    /// Replays `letter` (dead letter `id`) unless its webhook was deleted;
    /// `webhooks` remembers each webhook's ordering (none: deleted) during
    /// a bulk replay.
    async fn replay_letter(
        &self,
        id: &str,
        letter: &DeadLetter,
        webhooks: &mut HashMap<(String, String), Option<Ordering>>,
    ) -> Result<(), DeadLetterError> {
        let key = (letter.application_id.clone(), letter.webhook_id.clone());
        let ordering = match webhooks.get(&key) {
            Some(&ordering) => ordering,
            None => {
                let hook = self.store.get(&key.0, &key.1).await?;
                let ordering = hook.map(|h| h.ordering);
                webhooks.insert(key, ordering);
                ordering
            }
        };
        let Some(ordering) = ordering else {
            return Err(DeadLetterError::WebhookDeleted);
        };
        let mut job = letter.replay_job(clock::unix_millis());
        if let (Some(order), Ordering::PerKey) = (&letter.order, ordering) {
            // The next number of its key: a replay is delivered in order
            // after the key's events already numbered (the same number if
            // this replay is tried again).
            let again = format!("replay-{id}");
            let (app, webhook) = (&letter.application_id, &letter.webhook_id);
            let seq = self
                .numbering
                .number_replay(app, webhook, &order.key, &again)
                .await?;
            job.order = seq.map(|seq| JobOrder {
                key: order.key.clone(),
                seq,
            });
        }
        self.publish_replay(&job).await?;
        if let Some(m) = &self.metrics {
            m.dead_letter_replayed();
        }
        self.resolve(id).await
    }

    /// Hides `id` from listings from now on. The record outlives the stream's
    /// retention by a day, then is trimmed.
    async fn resolve(&self, id: &str) -> Result<(), DeadLetterError> {
        let keep = self.retention + Duration::from_secs(86_400);
        self.resolved.record(id, clock::unix_millis(), keep).await?;
        Ok(())
    }

    /// Every unresolved dead letter matching `filter`, in the order their
    /// events were first received (ties: the order they were dead-lettered).
    /// Held in memory: a catch-up of 100,000 ~1 KiB events takes ~100 MiB
    /// while it runs.
    pub async fn matching(
        &self,
        filter: &Filter,
    ) -> Result<Vec<(String, DeadLetter)>, DeadLetterError> {
        let resolved = self.resolved.all().await?;
        let mut found = Vec::new();
        self.scan(None, READ_AHEAD, |offset, letter| {
            let id = id_of(offset);
            if !resolved.contains(&id) && letter.matches(filter) {
                found.push((offset, id, letter));
            }
            ControlFlow::Continue(())
        })
        .await?;
        found.sort_by_key(|(offset, _, letter)| {
            (letter.received_at_ms, letter.received_at_us, *offset)
        });
        Ok(found
            .into_iter()
            .map(|(_, id, letter)| (id, letter))
            .collect())
    }

    /// Replays `letters` in their order, paced at `WF_REPLAY_RATE` (shared
    /// with every other replay of this process), calling `progress` with
    /// the count done after each; those whose webhook was deleted are
    /// skipped and counted.
    pub async fn replay_paced(
        &self,
        letters: &[(String, DeadLetter)],
        mut progress: impl FnMut(usize),
    ) -> Result<ReplayAll, DeadLetterError> {
        let mut result = ReplayAll {
            replayed: 0,
            skipped_webhook_deleted: 0,
        };
        let mut webhooks = HashMap::new();
        for (done, (id, letter)) in letters.iter().enumerate() {
            self.pacer.take().await;
            match self.replay_letter(id, letter, &mut webhooks).await {
                Ok(()) => result.replayed += 1,
                Err(DeadLetterError::WebhookDeleted) => result.skipped_webhook_deleted += 1,
                Err(e) => return Err(e),
            }
            progress(done + 1);
        }
        Ok(result)
    }

    /// Replays every unresolved dead letter matching `filter`, in the order
    /// their events were first received, paced.
    pub async fn replay_matching(&self, filter: &Filter) -> Result<ReplayAll, DeadLetterError> {
        let letters = self.matching(filter).await?;
        let pending = letters.len() as i64;
        if let Some(m) = &self.metrics {
            m.replay_pending(pending);
        }
        let mut counted = 0;
        let result = self
            .replay_paced(&letters, |done| {
                if let Some(m) = &self.metrics {
                    m.replay_pending(-1);
                }
                counted = done;
            })
            .await;
        if let Some(m) = &self.metrics {
            m.replay_pending(-(pending - counted as i64));
        }
        result
    }

    /// Discards one dead letter (it disappears from listings).
    pub async fn discard(&self, id: &str) -> Result<(), DeadLetterError> {
        self.get(id).await?;
        self.resolve(id).await
    }

    async fn publish_replay(&self, job: &DeliveryJob) -> Result<(), DeadLetterError> {
        let (_, publisher) = self.connection().await?;
        let payload = job.encode();
        let exchange = self.names.deliveries();
        publisher
            .publish(Outgoing {
                exchange: &exchange,
                routing_key: JOB_ROUTING_KEY,
                payload: &payload,
                headers: None,
                message_id: Some(&job.event_id),
            })
            .await?;
        Ok(())
    }

    /// Reads the stream from `from` (or its first offset), calling `visit`
    /// for each dead letter until it breaks or the stream's end (as RabbitMQ
    /// reports it when the scan starts) is reached. `credit` bounds how many
    /// messages the broker sends ahead.
    async fn scan(
        &self,
        from: Option<u64>,
        credit: u16,
        mut visit: impl FnMut(u64, DeadLetter) -> ControlFlow<()>,
    ) -> Result<(), DeadLetterError> {
        let Some(end) = self.last_offset().await? else {
            return Ok(()); // nothing was ever dead-lettered here
        };
        if from.is_some_and(|f| f > end) {
            return Ok(());
        }
        let start = match from {
            Some(offset) => AMQPValue::LongLongInt(offset as i64),
            None => AMQPValue::LongString(LongString::from("first")),
        };
        let mut reader = self.read(start, credit).await?;
        // Before the end a silence is a stalled broker, not the end.
        while let Some((offset, data)) = reader.next(BODY_IDLE).await? {
            // Reads start at a chunk boundary: skip what precedes `from`.
            if from.is_some_and(|f| offset < f) {
                continue;
            }
            if let Some(letter) = self.decode(offset, &data).await
                && visit(offset, letter).is_break()
            {
                break;
            }
            if offset >= end {
                break;
            }
        }
        reader.close().await;
        Ok(())
    }

    /// The offset of the stream's last dead letter, read from RabbitMQ
    /// itself (the last chunk), so nothing Redis loses can hide dead
    /// letters; `None` when the stream is empty.
    async fn last_offset(&self) -> Result<Option<u64>, DeadLetterError> {
        let start = AMQPValue::LongString(LongString::from("last"));
        let mut reader = self.read(start, READ_AHEAD).await?;
        let mut last = None;
        let mut idle = FIRST_IDLE;
        while let Some((offset, _)) = reader.next(idle).await? {
            last = last.max(Some(offset));
            // The last chunk arrives in one burst.
            idle = TAIL_IDLE;
        }
        reader.close().await;
        Ok(last)
    }

    /// A dead letter this release cannot read (malformed, or written by a
    /// release with another wire version) is copied aside to `{ns}.rejected`
    /// with its reason and resolved, once: never destroyed (the stream keeps
    /// it too), never shown as something it is not.
    async fn decode(&self, offset: u64, data: &[u8]) -> Option<DeadLetter> {
        let error = match DeadLetter::decode(data) {
            Ok(letter) => return Some(letter),
            Err(e) => e,
        };
        let id = id_of(offset);
        if matches!(self.resolved.contains(&id).await, Ok(true)) {
            return None;
        }
        let rejected = async {
            let (_, publisher) = self.connection().await?;
            let queue = self.names.rejected();
            publisher
                .reject(&queue, data, None, &error.reason(), None)
                .await?;
            self.resolve(&id).await
        };
        match rejected.await {
            Ok(()) => {
                if let Some(m) = &self.metrics {
                    m.job_rejected(error.code());
                }
                tracing::error!(dead_letter_id = %id, reason = %error.reason(), "unreadable dead letter moved to the rejected queue");
            }
            Err(e) => {
                tracing::warn!(dead_letter_id = %id, error = %crate::logging::Chain(&e), "unreadable dead letter not moved aside yet")
            }
        }
        None
    }

    /// A consumer of the stream from `start`.
    async fn read(&self, start: AMQPValue, credit: u16) -> Result<Reader, DeadLetterError> {
        let (conn, _) = self.connection().await?;
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(credit, BasicQosOptions::default())
            .await?;
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-stream-offset"), start);
        let consumer = channel
            .basic_consume(
                self.names.dead().into(),
                "".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        Ok(Reader {
            channel,
            consumer,
            ack_every: (credit / 4).max(1),
            unacked: 0,
        })
    }
}
