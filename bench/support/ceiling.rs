//! The ceiling: the same hops with no service logic. Producer -> queue ->
//! consumer publishing one job per receiver with confirms, then acking ->
//! queue -> consumer that signs (HMAC-SHA256) and POSTs, acking on 2xx.
//! tokio, lapin and hyper only; no Redis, no validation, no retries.
//!
//! Built like `full` of the shared ceiling probe (`bench-limit`), so it is
//! at least as strong: each stage on a connection of its own (its own lapin
//! I/O thread) and a prefetch of 200 on both consumers.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use super::{AMQP, Figures, Publisher, Receivers, bridge, burst};

/// Runs `n` events through the bare pipeline to `receivers`.
pub async fn run(receivers: &Receivers, n: usize) -> anyhow::Result<Figures> {
    let ns = format!("ceil-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (input, jobs) = (format!("{ns}.in"), format!("{ns}.jobs"));
    let conn = Arc::new(Connection::connect(AMQP, ConnectionProperties::default()).await?);
    let setup = conn.create_channel().await?;
    for q in [&input, &jobs] {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        setup
            .queue_declare(q.as_str().into(), durable, FieldTable::default())
            .await?;
    }
    let stages = [
        Arc::new(Connection::connect(AMQP, ConnectionProperties::default()).await?),
        Arc::new(Connection::connect(AMQP, ConnectionProperties::default()).await?),
    ];
    let fan_out = tokio::spawn(fan_out(
        stages[0].clone(),
        input.clone(),
        jobs.clone(),
        receivers.urls.len(),
    ));
    let deliver = tokio::spawn(deliver(stages[1].clone(), jobs.clone(), receivers.clone()));
    let publisher = Publisher::new("", Some(&input)).await?;
    let figures = burst(&publisher, receivers, n).await;
    publisher.close().await;
    fan_out.abort();
    deliver.abort();
    for q in [&input, &jobs] {
        let _ = setup
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for c in stages.iter().chain([&conn]) {
        let _ = c.close(200, "done".into()).await;
    }
    figures
}

/// Prefetch of both consumers, as in the shared probe.
const PREFETCH: u16 = 200;

async fn fan_out(
    conn: Arc<Connection>,
    input: String,
    jobs: String,
    k: usize,
) -> anyhow::Result<()> {
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = consume
        .basic_consume(
            input.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(Ok(d)) = consumer.next().await {
        let (publish, jobs) = (publish.clone(), jobs.clone());
        tokio::spawn(async move {
            let id = serde_json::from_slice::<serde_json::Value>(&d.data)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string))
                .unwrap_or_default();
            let mut confirms = Vec::with_capacity(k);
            for target in 0..k {
                let mut job = vec![target as u8];
                job.extend_from_slice(&d.data);
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into());
                if let Ok(c) = publish
                    .basic_publish(
                        "".into(),
                        jobs.as_str().into(),
                        BasicPublishOptions::default(),
                        &job,
                        props,
                    )
                    .await
                {
                    confirms.push(c);
                }
            }
            futures_util::future::join_all(confirms).await;
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        });
    }
    Ok(())
}

async fn deliver(conn: Arc<Connection>, jobs: String, receivers: Receivers) -> anyhow::Result<()> {
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consume
        .basic_consume(
            jobs.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    while let Some(Ok(d)) = consumer.next().await {
        let (client, receivers) = (client.clone(), receivers.clone());
        tokio::spawn(async move {
            let target = d.data[0] as usize;
            let body = Bytes::copy_from_slice(&d.data[1..]);
            let secret = receivers.secret(target);
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let request = hyper::Request::post(receivers.urls[target].as_str())
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("bridgeapi-signature", bridge(&secret, &body))
                .body(Full::new(body))
                .expect("request");
            if let Ok(r) = client.request(request).await
                && r.status().is_success()
            {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
        });
    }
    Ok(())
}
