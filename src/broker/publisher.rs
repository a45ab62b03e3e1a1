//! The confirmed publisher: a channel in confirm mode; every publish is
//! `mandatory` and persistent, and succeeds only on a broker ack with no return.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// Why a publish is not known to be durable.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed.
    #[error("broker error")]
    Broker(#[from] lapin::Error),
    /// The broker refused to take responsibility for the message.
    #[error("broker nacked the message")]
    Nacked,
    /// No queue was bound for the routing key.
    #[error("message was unroutable and returned")]
    Returned,
}

/// Publishes with confirms on a channel of its own.
#[derive(Clone)]
pub struct ConfirmedPublisher {
    channel: Channel,
}

/// One message to publish.
pub struct Outgoing<'a> {
    /// Exchange name (empty = default exchange, routing key = queue name).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Body bytes.
    pub payload: &'a [u8],
    /// Extra headers, if any.
    pub headers: Option<FieldTable>,
    /// Message id property, if any.
    pub message_id: Option<&'a str>,
}

impl ConfirmedPublisher {
    /// Opens a channel on `conn` and puts it in confirm mode.
    pub async fn open(conn: &Connection) -> lapin::Result<Self> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(ConfirmedPublisher { channel })
    }

    /// Publishes every message, then awaits all confirms together: one round
    /// trip for the batch, not one per message.
    pub(crate) async fn publish_all(&self, messages: &[Outgoing<'_>]) -> Result<(), PublishError> {
        self.publish_routed(messages, true).await
    }

    /// Publishes every message, confirmed, to an exchange whose bindings are
    /// up to others (a message no queue is bound for is not an error): the
    /// operational events.
    pub(crate) async fn broadcast(&self, messages: &[Outgoing<'_>]) -> Result<(), PublishError> {
        self.publish_routed(messages, false).await
    }

    async fn publish_routed(
        &self,
        messages: &[Outgoing<'_>],
        mandatory: bool,
    ) -> Result<(), PublishError> {
        match self.publish_each(messages, mandatory).await? {
            returned if returned.contains(&true) => Err(PublishError::Returned),
            _ => Ok(()),
        }
    }

    /// Publishes every message (`mandatory`), then awaits all confirms
    /// together; for each message, whether it came back unroutable (its
    /// queue does not exist). A nack or a channel error fails the batch.
    pub(crate) async fn publish_each(
        &self,
        messages: &[Outgoing<'_>],
        mandatory: bool,
    ) -> Result<Vec<bool>, PublishError> {
        let messages = messages.iter().map(|m| {
            let mut props = BasicProperties::default()
                .with_delivery_mode(2) // persistent: survives a broker restart
                .with_content_type("application/json".into());
            if let Some(h) = &m.headers {
                props = props.with_headers(h.clone());
            }
            if let Some(id) = m.message_id {
                props = props.with_message_id(id.into());
            }
            (m.exchange, m.routing_key, m.payload, props)
        });
        self.publish_with(messages, mandatory).await
    }

    /// Moves messages as they are (body and properties, made persistent)
    /// to the queues named, `mandatory`. Returns once the frames are
    /// written, in order, with what awaits their confirms (for each,
    /// whether it came back unroutable): the ingest router keeps several
    /// batches in flight.
    pub(crate) async fn forward(
        &self,
        messages: &[(&str, &[u8], BasicProperties)],
    ) -> Result<impl Future<Output = Result<Vec<bool>, PublishError>> + use<>, PublishError> {
        let mut publishes = Vec::with_capacity(messages.len());
        for (queue, body, props) in messages {
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            publishes.push(self.channel.basic_publish(
                "".into(),
                (*queue).into(),
                options,
                body,
                props.clone().with_delivery_mode(2),
            ));
        }
        let confirms = futures_util::future::try_join_all(publishes).await?;
        Ok(async move {
            let mut returned = Vec::with_capacity(confirms.len());
            for result in futures_util::future::join_all(confirms).await {
                match result? {
                    Confirmation::Ack(None) => returned.push(false),
                    Confirmation::Ack(Some(_)) => returned.push(true),
                    Confirmation::Nack(_) | Confirmation::NotRequested => {
                        return Err(PublishError::Nacked);
                    }
                }
            }
            Ok(returned)
        })
    }

    async fn publish_with<'a>(
        &self,
        messages: impl Iterator<Item = (&'a str, &'a str, &'a [u8], BasicProperties)>,
        mandatory: bool,
    ) -> Result<Vec<bool>, PublishError> {
        let mut publishes = Vec::with_capacity(messages.size_hint().0);
        for (exchange, routing_key, payload, props) in messages {
            // Mandatory: an unroutable message comes back instead of vanishing.
            let options = BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            };
            publishes.push(self.channel.basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                payload,
                props,
            ));
        }
        // Awaited together: each publish resolves once lapin's I/O thread
        // has written it, so awaiting them one by one would cost a round
        // trip to that thread per message. Their first poll queues the
        // frames, in order.
        let confirms = futures_util::future::try_join_all(publishes).await?;
        let mut returned = Vec::with_capacity(confirms.len());
        for result in futures_util::future::join_all(confirms).await {
            match result? {
                Confirmation::Ack(None) => returned.push(false),
                Confirmation::Ack(Some(_)) => returned.push(true),
                Confirmation::Nack(_) | Confirmation::NotRequested => {
                    return Err(PublishError::Nacked);
                }
            }
        }
        Ok(returned)
    }

    /// Moves a message this process cannot use aside to `queue` (the
    /// namespace's `{ns}.rejected`), keeping its `headers` and adding
    /// `x-reject-reason: reason`, with a confirm: nothing is ever dropped.
    pub async fn reject(
        &self,
        queue: &str,
        payload: &[u8],
        headers: Option<FieldTable>,
        reason: &str,
        message_id: Option<&str>,
    ) -> Result<(), PublishError> {
        let mut headers = headers.unwrap_or_default();
        headers.insert(
            "x-reject-reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        self.publish(Outgoing {
            exchange: "",
            routing_key: queue,
            payload,
            headers: Some(headers),
            message_id,
        })
        .await
    }

    /// Whether the channel is still open: a channel-level error (a publish to
    /// a deleted exchange, say) closes it for good, and the broker session
    /// must then start over.
    pub(crate) fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the channel (bounded).
    pub async fn close(&self) {
        super::close_channel(&self.channel, "closing").await;
    }

    /// Publishes one message and awaits its confirm.
    pub async fn publish(&self, message: Outgoing<'_>) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(&message)).await
    }
}
