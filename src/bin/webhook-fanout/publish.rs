//! `webhook-fanout publish`: one event, as a producer would publish it.

use anyhow::Context;
use clap::Args;
use webhook_fanout::Settings;
use webhook_fanout::broker::{self, ConfirmedPublisher, Names, Outgoing, PublishError};

/// `webhook-fanout publish`: publish one event, as a producer would.
#[derive(Args)]
pub struct PublishArgs {
    /// Application id.
    #[arg(long)]
    app: String,
    /// Event type, e.g. item.refreshed.
    #[arg(long = "type")]
    event_type: String,
    /// The `content` object, as JSON.
    #[arg(long, default_value = "{}")]
    content: String,
    /// Event id (default: a new UUID).
    #[arg(long)]
    id: Option<String>,
}

/// Publishes the envelope with confirms and prints its id.
pub async fn publish(settings: &Settings, args: PublishArgs) -> anyhow::Result<()> {
    let content: serde_json::Value =
        serde_json::from_str(&args.content).context("--content is not valid JSON")?;
    let id = args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let envelope = serde_json::json!({
        "id": id,
        "application_id": args.app,
        "type": args.event_type,
        "timestamp": webhook_fanout::clock::unix_secs(),
        "content": content,
    });
    let conn = broker::connect(&settings.amqp_url.0, "webhook-fanout publish")
        .await
        .context("cannot connect to RabbitMQ (WF_AMQP_URL)")?;
    let publisher = ConfirmedPublisher::open(&conn).await?;
    let exchange = Names::new(&settings.namespace).events();
    let payload = envelope.to_string();
    let published = publisher
        .publish(Outgoing {
            exchange: &exchange,
            routing_key: &args.event_type,
            payload: payload.as_bytes(),
            headers: None,
            message_id: Some(&id),
        })
        .await;
    publisher.close().await;
    broker::close_connection(&conn, "published").await;
    match published {
        Ok(()) => {
            println!("published event {id} to {exchange}");
            Ok(())
        }
        Err(PublishError::Returned) => {
            anyhow::bail!("{exchange} routed the event nowhere: start the service first")
        }
        Err(PublishError::Nacked) => anyhow::bail!("RabbitMQ refused the event"),
        Err(e @ PublishError::Broker(_)) => Err(anyhow::Error::new(e)).with_context(|| {
            format!("cannot publish to {exchange} (is the service started once to declare it?)")
        }),
    }
}
