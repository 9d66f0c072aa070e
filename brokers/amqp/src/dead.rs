//! Reading a queue's dead letters, for `Broker::dead_letters` and `Broker::requeue_dead_letters`.

use std::time::{Duration, UNIX_EPOCH};

use celeriac_core::{BrokerError, DeadLetter};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::BasicGetOptions;

use crate::error::bounded;
use crate::link::{DEAD_AT_HEADER, REASON_HEADER, Shared, int_header, text_header};
use crate::topology::dead_queue;

/// A channel of its own that takes a queue's dead letters one at a time, oldest first. Whatever it
/// took and did not ack goes back to the dead-letter queue, in order, when it is closed.
pub(crate) struct DeadLetterReader {
    channel: Channel,
    dead: String,
    timeout: Duration,
}

impl DeadLetterReader {
    pub(crate) async fn open(shared: &Shared, queue: &str) -> Result<Self, BrokerError> {
        let link = shared.link().await?;
        let timeout = shared.timeout();
        let channel = bounded("open channel", timeout, link.connection.create_channel()).await?;
        let reader = Self {
            channel,
            dead: dead_queue(queue),
            timeout,
        };
        if let Err(error) = shared.declare(&link, &reader.channel, queue).await {
            reader.close().await;
            return Err(error);
        }
        Ok(reader)
    }

    /// The next dead letter, unacked; `None` when there is none left.
    pub(crate) async fn next(&self) -> Result<Option<Delivery>, BrokerError> {
        let got = bounded(
            "read dead letters",
            self.timeout,
            self.channel
                .basic_get(self.dead.as_str().into(), BasicGetOptions { no_ack: false }),
        )
        .await?;
        Ok(got.map(|message| message.delivery))
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Closes the channel: every dead letter taken and not acked is back in its queue.
    pub(crate) async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
    }
}

/// The record of a dead letter read from `queue`'s dead-letter queue.
pub(crate) fn record(queue: &str, delivery: Delivery) -> DeadLetter {
    let headers = delivery.properties.headers().as_ref();
    let at = int_header(headers, DEAD_AT_HEADER)
        .and_then(|ms| u64::try_from(ms).ok())
        .unwrap_or(0);
    let reason = text_header(headers, REASON_HEADER).unwrap_or_default();
    DeadLetter::new(
        queue,
        delivery.data.into(),
        reason,
        UNIX_EPOCH + Duration::from_millis(at),
    )
}
