//! The raw `lapin` ceiling for RabbitMQ: confirmed publishes and manual-ack consumes with no
//! framework, in a configurable shape (channels, queues, prefetch, persistence, queue version) so
//! `amqp-raw` can show what the broker itself allows on a machine.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::time::Instant;

use crate::ceiling::Ceiling;

/// How the raw loop uses RabbitMQ.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct RawShape {
    /// Messages to publish and drain.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) tasks: u64,
    /// Publishing channels, each pipelining 1 000 confirmed publishes at a time.
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Queues the messages are spread over (one consumer each, on one channel).
    #[arg(long, default_value_t = 1)]
    pub(crate) queues: usize,
    /// Prefetch of the consuming channel, shared out among the queues.
    #[arg(long, default_value_t = 256)]
    pub(crate) prefetch: usize,
    /// Transient messages instead of persistent ones (not what celeriac sends: for comparison).
    #[arg(long)]
    pub(crate) transient: bool,
    /// Classic queue version (`x-queue-version`, RabbitMQ 3.10+), or the server's default.
    #[arg(long)]
    pub(crate) queue_version: Option<i64>,
}

impl RawShape {
    /// The ceiling for celeriac with `shards` RabbitMQ queues per queue: one publishing channel and
    /// one queue unsharded (the minimal raw loop), else as many queues and four channels (what the
    /// sharded broker uses); persistent messages.
    pub(crate) fn ceiling(tasks: u64, prefetch: usize, shards: usize) -> Self {
        Self {
            tasks,
            channels: if shards > 1 { 4 } else { 1 },
            queues: shards.max(1),
            prefetch,
            transient: false,
            queue_version: None,
        }
    }
}

/// One connection and the queues of one measurement.
struct Raw<'a> {
    shape: &'a RawShape,
    connection: Connection,
    queues: Vec<String>,
}

type BoxError = Box<dyn std::error::Error>;

impl<'a> Raw<'a> {
    async fn open(url: &str, shape: &'a RawShape) -> Result<Self, BoxError> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let base = format!("celeriac-bench-ceiling.{}", uuid::Uuid::new_v4().simple());
        let queues: Vec<String> = (0..shape.queues.max(1))
            .map(|i| format!("{base}.{i}"))
            .collect();
        let channel = connection.create_channel().await?;
        for queue in &queues {
            let mut arguments = FieldTable::default();
            if let Some(version) = shape.queue_version {
                arguments.insert(
                    ShortString::from("x-queue-version"),
                    AMQPValue::LongLongInt(version),
                );
            }
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::durable(),
                    arguments,
                )
                .await?;
        }
        Ok(Self {
            shape,
            connection,
            queues,
        })
    }

    /// Publishes `tasks` envelope-sized messages over the channels and queues; returns messages/s.
    async fn publish(&self) -> Result<f64, BoxError> {
        let channels = self.shape.channels.max(1);
        let per_channel = self.shape.tasks.div_ceil(channels as u64);
        let mode = if self.shape.transient { 1 } else { 2 };
        let started = Instant::now();
        let mut publishers = tokio::task::JoinSet::new();
        for lane in 0..channels {
            let channel = self.connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let queues = self.queues.clone();
            let first = lane as u64 * per_channel;
            let end = (first + per_channel).min(self.shape.tasks);
            publishers.spawn(async move {
                let payload = [7u8; 110];
                let mut next = first;
                while next < end {
                    let batch_end = (next + 1_000).min(end);
                    let mut confirms = Vec::with_capacity(1_000);
                    for n in next..batch_end {
                        let queue = &queues[(n % queues.len() as u64) as usize];
                        let confirm = channel
                            .basic_publish(
                                "".into(),
                                queue.as_str().into(),
                                BasicPublishOptions::default(),
                                &payload,
                                BasicProperties::default().with_delivery_mode(mode),
                            )
                            .await?;
                        confirms.push(confirm);
                    }
                    for confirm in confirms {
                        confirm.await?;
                    }
                    next = batch_end;
                }
                Ok::<_, lapin::Error>(())
            });
        }
        while let Some(published) = publishers.join_next().await {
            published??;
        }
        Ok(self.shape.tasks as f64 / started.elapsed().as_secs_f64())
    }

    /// Consumes every message with manual acks, each on its own or in batches (`multiple`, every
    /// 64 messages, fewer when each consumer's window is small); returns messages/s.
    async fn drain(&self, batch_acks: bool) -> Result<f64, BoxError> {
        let channel = self.connection.create_channel().await?;
        let per_queue = self.shape.prefetch.div_ceil(self.queues.len());
        channel
            .basic_qos(
                u16::try_from(per_queue).unwrap_or(u16::MAX),
                BasicQosOptions::default(),
            )
            .await?;
        let mut consumers = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            consumers.push(
                channel
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?,
            );
        }
        // Ack at most every half consumer window: when only one queue still has messages, its
        // consumer alone must be able to bring the next batch.
        let ack_every = (per_queue as u64 / 2).clamp(1, 64);
        let mut deliveries = futures::stream::select_all(consumers);
        let started = Instant::now();
        let (mut drained, mut highest, mut acked) = (0u64, 0u64, 0u64);
        while drained < self.shape.tasks {
            let Some(delivery) = deliveries.next().await else {
                break;
            };
            let delivery = delivery?;
            drained += 1;
            if !batch_acks {
                delivery.ack(BasicAckOptions::default()).await?;
                continue;
            }
            // Several consumers interleave their tags: ack up to the highest one seen, which
            // RabbitMQ only accepts while that tag itself is still pending.
            highest = highest.max(delivery.delivery_tag);
            if (drained.is_multiple_of(ack_every) || drained == self.shape.tasks) && highest > acked
            {
                channel
                    .basic_ack(highest, BasicAckOptions { multiple: true })
                    .await?;
                acked = highest;
            }
        }
        let rate = drained as f64 / started.elapsed().as_secs_f64();
        channel.close(200, "done".into()).await?;
        Ok(rate)
    }

    async fn delete(self) -> Result<(), BoxError> {
        let channel = self.connection.create_channel().await?;
        for queue in &self.queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        self.connection.close(200, "done".into()).await?;
        Ok(())
    }
}

/// The ceiling for the main benchmark: publish, drain acking each message, publish again, drain
/// acking in batches.
pub(crate) async fn ceiling(url: &str, shape: &RawShape) -> Result<Ceiling, BoxError> {
    let raw = Raw::open(url, shape).await?;
    let publish_per_sec = raw.publish().await?;
    let drain_per_sec = raw.drain(false).await?;
    raw.publish().await?;
    let drain_batch_ack_per_sec = raw.drain(true).await?;
    raw.delete().await?;
    Ok(Ceiling {
        publish_per_sec,
        drain_per_sec,
        drain_batch_ack_per_sec: Some(drain_batch_ack_per_sec),
    })
}

/// One `amqp-raw` measurement: confirmed publish and batch-acked drain in `shape`.
pub(crate) async fn publish_and_drain(url: &str, shape: &RawShape) -> Result<(f64, f64), BoxError> {
    let raw = Raw::open(url, shape).await?;
    let result = async { Ok::<_, BoxError>((raw.publish().await?, raw.drain(true).await?)) }.await;
    raw.delete().await?;
    result
}
