//! RabbitMQ: the connection, the topology (every exchange and queue, declared
//! in one place), and the confirmed publisher every hop goes through.

pub mod depth;
mod publisher;
mod topology;

pub use publisher::{ConfirmedPublisher, Outgoing, PublishError};
pub use topology::{JOB_ROUTING_KEY, Names, TopologySpec, declare, delete};

use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};

/// How long a connect or close may take before it counts as failed.
pub(crate) const BROKER_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a publisher waits for its confirms before it gives up its
/// channel: a quorum queue led from a lost node can leave them unanswered
/// on a live channel (RabbitMQ 3.10), and the session then starts over.
pub(crate) const CONFIRMS_WITHIN: Duration = Duration::from_secs(30);

/// The largest AMQP frame this process proposes, unless the URL sets
/// `frame_max`: lapin keeps a send and a receive buffer of 32 frames per
/// connection, zero-filled, so the broker's usual 128 KiB costs 8 MiB of
/// resident memory per connection; 32 KiB costs 2 MiB. A message larger than
/// a frame travels as several body frames, as AMQP provides.
const FRAME_MAX: u32 = 32 * 1024;

/// Opens an AMQP connection named after this process and role to the first
/// of `urls` (one URL, or several separated by commas: the nodes of a
/// cluster) that answers, trying them in order; a node that accepts TCP but
/// never completes the handshake counts as not answering after 5 s.
pub async fn connect(urls: &str, name: &str) -> lapin::Result<Connection> {
    let mut failure = None;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let uri = match amqp_uri(url) {
            Ok(uri) => uri,
            Err(e) => {
                failure = Some(io_error(std::io::ErrorKind::InvalidInput, e));
                continue;
            }
        };
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(BROKER_RPC_TIMEOUT, Connection::connect_uri(uri, props)).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => {
                tracing::debug!(error = %crate::logging::Chain(&e), "a RabbitMQ node did not answer; trying the next");
                failure = Some(e);
            }
            Err(_) => {
                tracing::debug!("a RabbitMQ node did not answer in time; trying the next");
                let timed_out = "AMQP handshake timed out";
                failure = Some(io_error(std::io::ErrorKind::TimedOut, timed_out));
            }
        }
    }
    Err(failure.unwrap_or_else(|| io_error(std::io::ErrorKind::InvalidInput, "no AMQP URL")))
}

/// `op` bounded by `limit`: a broker that stops answering on a live
/// connection (a cluster that just lost a node can leave an RPC or a
/// confirm unanswered) must fail the operation, not stall its task for
/// good. `what` names it in the error.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    op: impl std::future::Future<Output = lapin::Result<T>>,
) -> lapin::Result<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => Err(io_error(
            std::io::ErrorKind::TimedOut,
            format!("{what}: no answer from RabbitMQ in {limit:?}"),
        )),
    }
}

/// A connection failure that is not lapin's own, as a lapin error.
fn io_error(
    kind: std::io::ErrorKind,
    why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> lapin::Error {
    lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::new(kind, why))).into()
}

/// `url` parsed, with [`FRAME_MAX`] proposed unless it sets `frame_max`.
fn amqp_uri(url: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url.parse()?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// Closes a channel, bounded: an unanswered close must not stall shutdown.
pub(crate) async fn close_channel(channel: &Channel, why: &str) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(BROKER_RPC_TIMEOUT, channel.close(200, why.into())).await;
    }
}

/// Closes a connection, bounded like `close_channel`.
pub async fn close_connection(conn: &Connection, why: &str) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(BROKER_RPC_TIMEOUT, conn.close(200, why.into())).await;
    }
}

/// Whether `e` is the broker's PRECONDITION_FAILED (a queue declared with
/// other arguments, or deleted `if_empty` while it holds messages); the
/// channel it came on is closed.
pub(crate) fn is_precondition_failed(e: &lapin::Error) -> bool {
    is_soft(e, lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)
}

/// Whether `e` is the broker's NOT_FOUND (no such queue); the channel it
/// came on is closed.
pub(crate) fn is_not_found(e: &lapin::Error) -> bool {
    is_soft(e, lapin::protocol::AMQPSoftError::NOTFOUND)
}

fn is_soft(e: &lapin::Error, soft: lapin::protocol::AMQPSoftError) -> bool {
    use lapin::protocol::AMQPErrorKind;
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if *amqp.kind() == AMQPErrorKind::Soft(soft))
}

/// How many messages wait (ready, not unacked) in `queue`: a passive
/// declare, which creates nothing; a missing queue is NOT_FOUND.
pub(crate) async fn queue_depth(ch: &Channel, queue: &str) -> lapin::Result<u32> {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await?;
    Ok(q.message_count())
}

/// How many consumers `queue` has (a passive declare, see [`queue_depth`]).
pub(crate) async fn consumer_count(ch: &Channel, queue: &str) -> lapin::Result<u32> {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    let declare = ch.queue_declare(queue.into(), passive, lapin::types::FieldTable::default());
    let q = within(BROKER_RPC_TIMEOUT, "counting consumers", declare).await?;
    Ok(q.consumer_count())
}

/// Succeeds when `queue` exists (see [`queue_depth`]).
pub(crate) async fn queue_exists(ch: &Channel, queue: &str) -> lapin::Result<()> {
    queue_depth(ch, queue).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_are_proposed_unless_the_url_chooses() {
        let plain = amqp_uri("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(plain.query.frame_max, Some(FRAME_MAX));
        let chosen = amqp_uri("amqp://127.0.0.1:5672/%2f?frame_max=131072&heartbeat=5").unwrap();
        assert_eq!(chosen.query.frame_max, Some(131072));
        assert_eq!(chosen.query.heartbeat, Some(5));
        assert!(amqp_uri("amqp://127.0.0.1:notaport").is_err());
    }
}
