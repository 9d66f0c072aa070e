//! Raw-client loops doing the same broker operations as celeriac, with no framework: the ceiling.

use serde::Serialize;
use tokio::time::Instant;

/// What the raw client achieved.
#[derive(Debug, Serialize)]
pub(crate) struct Ceiling {
    pub(crate) publish_per_sec: f64,
    pub(crate) drain_per_sec: f64,
    pub(crate) drain_batch_ack_per_sec: Option<f64>,
}

/// Pipelined `XADD` of `tasks` messages the size of a celeriac envelope, then one consumer draining
/// them with `XREADGROUP COUNT 500` and batched `XACK` + `XDEL`.
pub(crate) async fn redis(url: &str, tasks: u64) -> Result<Ceiling, Box<dyn std::error::Error>> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let stream = format!("celeriac-bench-ceiling:{}", uuid::Uuid::new_v4().simple());
    let payload = [7u8; 110];

    let started = Instant::now();
    let mut sent = 0;
    while sent < tasks {
        let batch = (tasks - sent).min(1_000);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("p")
                .arg(&payload[..])
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        sent += batch;
    }
    let publish_per_sec = tasks as f64 / started.elapsed().as_secs_f64();

    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .query_async::<()>(&mut conn)
        .await?;
    let started = Instant::now();
    let mut drained = 0u64;
    while drained < tasks {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(500)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|key| key.ids)
            .map(|entry| entry.id)
            .collect();
        if ids.is_empty() {
            break;
        }
        drained += ids.len() as u64;
        redis::pipe()
            .cmd("XACK")
            .arg(&stream)
            .arg("g")
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(&ids)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
    }
    let drain_per_sec = drained as f64 / started.elapsed().as_secs_f64();
    redis::cmd("DEL")
        .arg(&stream)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(Ceiling {
        publish_per_sec,
        drain_per_sec,
        drain_batch_ack_per_sec: None,
    })
}

/// Confirmed persistent publishes of `tasks` envelope-sized messages (pipelined per 1 000), then two
/// drains with manual acks at `prefetch`: acking each message, and acking in batches (`multiple`).
pub(crate) async fn amqp(
    url: &str,
    tasks: u64,
    prefetch: usize,
) -> Result<Ceiling, Box<dyn std::error::Error>> {
    use futures::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = format!("celeriac-bench-ceiling.{}", uuid::Uuid::new_v4().simple());
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    let payload = [7u8; 110];
    let publish = |count: u64| {
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            let mut sent = 0;
            while sent < count {
                let batch = (count - sent).min(1_000);
                let mut confirms = Vec::new();
                for _ in 0..batch {
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &payload,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await?;
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    confirm.await?;
                }
                sent += batch;
            }
            Ok::<_, lapin::Error>(())
        }
    };

    let started = Instant::now();
    publish(tasks).await?;
    let publish_per_sec = tasks as f64 / started.elapsed().as_secs_f64();

    let mut rates = Vec::new();
    for batch_acks in [false, true] {
        if batch_acks {
            publish(tasks).await?;
        }
        let consumer_channel = connection.create_channel().await?;
        let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
        consumer_channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = consumer_channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let started = Instant::now();
        let mut drained = 0u64;
        while drained < tasks {
            let Some(delivery) = consumer.next().await else {
                break;
            };
            let delivery = delivery?;
            drained += 1;
            if !batch_acks {
                delivery.ack(BasicAckOptions::default()).await?;
            } else if drained.is_multiple_of(64) || drained == tasks {
                delivery.ack(BasicAckOptions { multiple: true }).await?;
            }
        }
        rates.push(drained as f64 / started.elapsed().as_secs_f64());
        consumer_channel.close(200, "done".into()).await?;
    }
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await?;
    Ok(Ceiling {
        publish_per_sec,
        drain_per_sec: rates[0],
        drain_batch_ack_per_sec: rates.get(1).copied(),
    })
}
