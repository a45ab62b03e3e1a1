//! Routing jobs to their webhooks' backlogs: the queue is declared (and
//! registered) the first time this process routes a job to it and again
//! every `known_for` ([`super::Timing`]); a job whose queue was deleted meanwhile comes back
//! unroutable (every publish is `mandatory`) and is routed again after the
//! queue is declared anew, so no job is ever published into nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::{Channel, Connection};
use tokio::sync::mpsc;

use super::registry::Registry;
use crate::broker::{
    self, CONFIRMS_WITHIN, ConfirmedPublisher, Names, Outgoing, PublishError, TopologySpec,
};
use crate::subscription::StoreError;

/// Rounds of declare-and-publish before a job counts as unroutable (a queue
/// deleted between its declaration and the publish, again and again).
const ROUNDS: usize = 4;

/// How often a router looks again at a backlog being deleted.
const DELETE_POLL: Duration = Duration::from_millis(50);

/// Why jobs could not be routed; the caller hands its message back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    /// The publish failed or was not confirmed.
    #[error("cannot publish to a backlog")]
    Publish(#[from] PublishError),
    /// A backlog queue could not be declared.
    #[error("cannot declare a backlog queue")]
    Declare(#[from] lapin::Error),
    /// The registry in Redis did not answer.
    #[error("cannot register a backlog")]
    Store(#[from] StoreError),
    /// The queue kept disappearing.
    #[error("a backlog queue was deleted as often as it was declared")]
    Unroutable,
}

/// One job to route.
pub(crate) struct Routed<'a> {
    /// Its webhook.
    pub webhook_id: &'a str,
    /// The encoded job.
    pub payload: &'a [u8],
    /// Its event id (the message id).
    pub message_id: &'a str,
}

/// Routes jobs to backlog queues on one broker connection.
pub(crate) struct Router {
    conn: Arc<Connection>,
    names: Names,
    spec: TopologySpec,
    registry: Registry,
    timing: super::Timing,
    declarer: tokio::sync::Mutex<Option<Channel>>,
    /// When this process last declared each backlog (`None`: being
    /// declared for the first time, or never).
    known: Mutex<HashMap<String, Known>>,
    /// Tells this process's drainer about a backlog it declared, so its
    /// first job does not wait for the registry's next read.
    wake: Option<mpsc::UnboundedSender<String>>,
}

impl Router {
    /// A router on `conn`; `wake` reaches this process's drainer, if any.
    pub(crate) fn new(
        conn: Arc<Connection>,
        names: Names,
        spec: TopologySpec,
        registry: Registry,
        timing: super::Timing,
        wake: Option<mpsc::UnboundedSender<String>>,
    ) -> Self {
        Router {
            conn,
            names,
            spec,
            registry,
            timing,
            declarer: tokio::sync::Mutex::new(None),
            known: Mutex::new(HashMap::new()),
            wake,
        }
    }

    /// Publishes every job to its webhook's backlog, confirmed.
    pub(crate) async fn route(
        &self,
        publisher: &ConfirmedPublisher,
        jobs: &[Routed<'_>],
    ) -> Result<(), RouteError> {
        let mut pending: Vec<&Routed> = jobs.iter().collect();
        for round in 0..ROUNDS {
            let ids: Vec<&str> = pending.iter().map(|j| j.webhook_id).collect();
            self.ensure(&ids, round > 0).await?;
            let queues: Vec<String> = ids.iter().map(|id| self.names.backlog(id)).collect();
            let outgoing: Vec<Outgoing> = pending
                .iter()
                .zip(&queues)
                .map(|(job, queue)| Outgoing {
                    exchange: "",
                    routing_key: queue,
                    payload: job.payload,
                    headers: None,
                    message_id: Some(job.message_id),
                })
                .collect();
            let publish = async { Ok(publisher.publish_each(&outgoing, true).await) };
            let confirmed = broker::within(
                CONFIRMS_WITHIN,
                "confirming jobs in their backlogs",
                publish,
            );
            let returned = match confirmed.await {
                Ok(Ok(returned)) => returned,
                Ok(Err(PublishError::Nacked)) => {
                    return Err(give_up(publisher, PublishError::Nacked).await);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(timed_out) => {
                    return Err(give_up(publisher, PublishError::Broker(timed_out)).await);
                }
            };
            pending = pending
                .into_iter()
                .zip(returned)
                .filter_map(|(job, back)| back.then_some(job))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            tracing::debug!(
                jobs = pending.len(),
                "backlog queue deleted meanwhile; declaring it again"
            );
        }
        Err(RouteError::Unroutable)
    }

    /// Declares the backlogs of `ids` this process does not know (all of
    /// them with `again`) and marks them used in the registry. One caller
    /// declares a given backlog at a time; the others wait for it and find
    /// it known (a burst's first jobs do not all declare the same queue).
    async fn ensure(&self, ids: &[&str], again: bool) -> Result<(), RouteError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let entry = lock(&self.known).entry(id.to_string()).or_default().clone();
            let mut declared = entry.lock().await;
            let now = Instant::now();
            if !again && declared.is_some_and(|at| now - at <= self.timing.known_for) {
                continue;
            }
            // Registered before it is declared: no queue exists that the
            // registry does not name, whenever this process stops (an entry
            // without a queue is forgotten once idle). While a process
            // deletes the queue (it found it idle and empty), wait until it
            // is gone, then declare it anew.
            let mut waited = Duration::ZERO;
            while self.registry.touch(&[id]).await? > 0 {
                if waited >= super::registry::CLAIM_FOR {
                    return Err(RouteError::Unroutable);
                }
                tokio::time::sleep(DELETE_POLL).await;
                waited += DELETE_POLL;
            }
            self.declare(id).await?;
            if declared.replace(now).is_none()
                && let Some(wake) = &self.wake
            {
                let _ = wake.send(id.to_string());
            }
        }
        Ok(())
    }

    /// Declares one backlog queue on the router's channel (opened again
    /// after an error closed it). A queue that exists with other arguments
    /// (another `WF_QUEUE_TYPE`) is kept as it is.
    async fn declare(&self, id: &str) -> Result<(), RouteError> {
        let mut channel = self.declarer.lock().await;
        let ch = match channel.as_ref().filter(|c| c.status().connected()) {
            Some(ch) => ch.clone(),
            None => {
                let ch = self.conn.create_channel().await?;
                *channel = Some(ch.clone());
                ch
            }
        };
        // Bounded: a declaration the cluster cannot complete (a node just
        // lost) hands the job back instead of holding every route here.
        let declared = broker::within(
            broker::BROKER_RPC_TIMEOUT,
            "declaring a backlog queue",
            self.spec.declare_backlog(&ch, &self.names, id),
        )
        .await;
        match declared {
            Ok(()) => Ok(()),
            Err(e) if broker::is_precondition_failed(&e) => {
                let ch = self.conn.create_channel().await?;
                *channel = Some(ch.clone());
                Ok(broker::queue_exists(&ch, &self.names.backlog(id)).await?)
            }
            Err(e) => {
                *channel = None;
                Err(e.into())
            }
        }
    }

    /// Forgets that webhook `id`'s backlog exists (it was deleted here).
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.known).remove(id);
    }
}

/// Closes `publisher`'s channel after `e`, a nack or no confirm in time.
/// Seen after a cluster node was killed (RabbitMQ 3.10): a channel whose
/// quorum backlog changed leader nacks every later publish to it, for
/// minutes, or leaves them unconfirmed, while a new channel publishes at
/// once. Closed, the channel fails what it still holds, the session starts
/// over on a new connection, and the events come back to be fanned out again.
async fn give_up(publisher: &ConfirmedPublisher, e: PublishError) -> RouteError {
    tracing::warn!(error = %crate::logging::Chain(&e), "jobs for their backlogs not confirmed; closing the channel");
    publisher.close().await;
    e.into()
}

/// When a backlog was last declared here, held while it is declared.
type Known = Arc<tokio::sync::Mutex<Option<Instant>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
