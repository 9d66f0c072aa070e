//! Raw-client loops doing the same broker operations as celeriac, with no framework: the ceiling.
//! The RabbitMQ one is in [`crate::raw_amqp`].

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
