//! Queue names and declarations: each celeriac queue `q` is a durable queue `q` (with shards, also
//! `q.shard.1` … `q.shard.<n-1>`), a dead-letter queue `q.dead`, and wait queues `q.delay.<ms>` for
//! delayed messages. A wait queue holds messages for
//! exactly `<ms>` (its message TTL) and then dead-letters them into `q`; it deletes itself after ten
//! idle minutes. No broker plugin is needed.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::QueueType;

/// The dead-letter queue of `queue`.
pub(crate) fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// The RabbitMQ queues a celeriac queue spreads over: `queue` itself, then `queue.shard.<i>`.
pub(crate) fn shards(queue: &str, count: usize) -> impl Iterator<Item = String> + '_ {
    (0..count.max(1)).map(move |index| shard(queue, index))
}

/// Shard `index` of `queue`; shard 0 is the queue itself.
pub(crate) fn shard(queue: &str, index: usize) -> String {
    if index == 0 {
        queue.to_owned()
    } else {
        format!("{queue}.shard.{index}")
    }
}

/// The wait queue for messages of `queue` delayed by `millis`.
pub(crate) fn wait_queue(queue: &str, millis: u64) -> String {
    format!("{queue}.delay.{millis}")
}

/// The longest a message waits in one wait queue. RabbitMQ refuses a queue TTL over 10 years
/// (315 360 000 000 ms: declaring the wait queue would fail), so a message due later waits this long,
/// comes back to its queue early and is sent on to wait again (a worker puts back any message that
/// arrives more than a second before its ETA). 30 days also keeps every far-off message in one wait
/// queue instead of one per distinct delay.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Rounds a delay to the wait queue it goes to (at most [`MAX_WAIT`]), bounding how many wait queues exist: 10 ms steps below
/// 1 s, 100 ms below 10 s, 1 s below 100 s, then three significant digits (at most 0.5 % off).
pub(crate) fn quantize(delay: Duration) -> u64 {
    let millis = u64::try_from(delay.min(MAX_WAIT).as_millis()).unwrap_or(u64::MAX);
    let step = match millis {
        0..1_000 => 10,
        1_000..10_000 => 100,
        10_000..100_000 => 1_000,
        _ => 10u64.pow(millis.ilog10() - 2),
    };
    ((millis + step / 2) / step * step).max(step)
}

/// Arguments of a main queue: `x-max-priority` when priorities are on, `x-queue-type: quorum`
/// for quorum queues (which take no `x-max-priority`).
pub(crate) fn main_arguments(settings: &crate::config::Settings) -> FieldTable {
    let mut arguments = queue_type_arguments(settings);
    if settings.queue_type == QueueType::Quorum {
        return arguments;
    }
    if let Some(max) = settings.max_priority {
        arguments.insert(
            ShortString::from("x-max-priority"),
            AMQPValue::ShortShortUInt(max),
        );
    }
    arguments
}

/// Arguments of a dead-letter queue: a quorum queue beside quorum main queues, so that dead letters
/// survive the loss of a node as the tasks do (and the queue can be declared again while a node
/// is down, which a classic queue homed on that node cannot).
pub(crate) fn dead_arguments(settings: &crate::config::Settings) -> FieldTable {
    queue_type_arguments(settings)
}

/// `x-queue-type` for any queue type but the default (classic, which older servers know unnamed).
fn queue_type_arguments(settings: &crate::config::Settings) -> FieldTable {
    let mut arguments = FieldTable::default();
    if settings.queue_type != QueueType::Classic {
        arguments.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from(settings.queue_type.as_str())),
        );
    }
    arguments
}

/// Arguments of a wait queue: TTL, dead-letter back into `queue`, expire when idle.
pub(crate) fn wait_arguments(queue: &str, millis: u64) -> FieldTable {
    let mut arguments = FieldTable::default();
    let ttl = i64::try_from(millis).unwrap_or(i64::MAX);
    arguments.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(ttl),
    );
    arguments.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    arguments.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(queue)),
    );
    arguments.insert(
        ShortString::from("x-expires"),
        AMQPValue::LongLongInt(ttl.saturating_add(600_000)),
    );
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_zero_is_the_queue_itself() {
        let names: Vec<String> = shards("sms", 3).collect();
        assert_eq!(names, ["sms", "sms.shard.1", "sms.shard.2"]);
        assert_eq!(shards("sms", 0).collect::<Vec<_>>(), ["sms"]);
    }

    #[test]
    fn delays_round_to_bounded_steps() {
        let ms = Duration::from_millis;
        assert_eq!(quantize(ms(1)), 10);
        assert_eq!(quantize(ms(304)), 300);
        assert_eq!(quantize(ms(1_500)), 1_500);
        assert_eq!(quantize(ms(3_049)), 3_000);
        assert_eq!(quantize(ms(12_345)), 12_000);
        assert_eq!(quantize(ms(123_456)), 123_000);
        assert_eq!(quantize(ms(600_000)), 600_000);
        let longest = quantize(MAX_WAIT);
        assert!(longest <= MAX_WAIT.as_millis() as u64 && longest > 2_500_000_000);
        assert_eq!(
            quantize(Duration::from_secs(1_000 * 365 * 24 * 3600)),
            longest
        );
        assert_eq!(quantize(Duration::MAX), longest);
        for millis in [20u64, 999, 5_000, 77_777, 1_234_567] {
            let got = quantize(ms(millis)) as f64;
            let error = (got - millis as f64).abs();
            assert!(
                error <= 5.0 || error / millis as f64 <= 0.05,
                "{millis} -> {got}"
            );
        }
    }
}
