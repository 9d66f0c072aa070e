//! Celery's native delayed delivery on RabbitMQ (Celery ≥ 5.5 with quorum queues; kombu's
//! `native_delayed_delivery`), which celeriac uses for Celery's format on quorum queues.
//!
//! A delay is a whole number of seconds written in 28 bits. Level `n` (27 … 0) is a topic
//! exchange and a queue `celery_delayed_<n>`: a message whose bit `n` is 1 waits in the queue
//! for 2ⁿ seconds (its message TTL) and is dead-lettered into the next level's exchange; one
//! whose bit is 0 passes straight to the next level through an exchange-to-exchange binding.
//! After level 0 it reaches the topic exchange `celery_delayed_delivery`, where each queue is
//! bound by its name. The routing key carries the bits, one word each, then the queue's name:
//! `0.0.….1.0.1.sms` waits 5 s and lands in `sms`.
//!
//! The level queues are quorum queues dead-lettering at least once, so a delayed message survives
//! the loss of a node as the tasks do. Python workers declare the same objects with the same
//! arguments, so either language may declare them first.

use std::time::Duration;

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use celeriac_core::BrokerError;

use crate::error::bounded;

/// The bits of a delay in seconds: the longest is 2²⁸ − 1 s, about 8.5 years.
const BITS: u32 = 28;

/// The exchange a delayed message is published to: the highest level.
pub(crate) const FIRST_EXCHANGE: &str = "celery_delayed_27";

/// The exchange a message reaches when its wait is over, bound to each queue by its name.
pub(crate) const DELIVERY_EXCHANGE: &str = "celery_delayed_delivery";

/// The exchange and queue of level `level`.
fn level_name(level: u32) -> String {
    format!("celery_delayed_{level}")
}

/// Where level `level` passes a message on: the next level's exchange, or after level 0 the
/// delivery exchange.
fn next_exchange(level: u32) -> String {
    match level {
        0 => DELIVERY_EXCHANGE.to_owned(),
        _ => level_name(level - 1),
    }
}

/// `count` topic wildcards for one word each, each followed by a dot.
fn any_words(count: u32) -> String {
    "*.".repeat(count as usize)
}

/// The routing key that delays a message for `queue` by `delay`, rounded up to whole seconds (so
/// it never arrives early; Celery rounds down and its workers wait out the rest). A delay past
/// the longest is cut to the longest: the worker sends a message that comes early back to wait
/// again. `None` for a delay under a millisecond, or a queue name too long for a routing key
/// (255 bytes with the 56 of the bits).
pub(crate) fn routing_key(delay: Duration, queue: &str) -> Option<String> {
    let seconds = delay
        .as_secs()
        .saturating_add(u64::from(delay.subsec_nanos() > 0));
    let longest = (1u64 << BITS) - 1;
    let seconds = seconds.min(longest);
    if delay < Duration::from_millis(1) || 2 * BITS as usize + queue.len() > 255 {
        return None;
    }
    let mut key = String::with_capacity(2 * BITS as usize + queue.len());
    for bit in (0..BITS).rev() {
        key.push(if seconds >> bit & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(queue);
    Some(key)
}

/// The key `queue` is bound to [`DELIVERY_EXCHANGE`] with: any 28 bits, then its name. (Celery
/// binds `#.<routing key>`, which also takes a queue whose name ends in `.<name>`.)
pub(crate) fn delivery_binding(queue: &str) -> String {
    any_words(BITS) + queue
}

/// The arguments of level `level`'s queue, as kombu declares them (Python's integers are sent as
/// 32-bit when they fit, else 64-bit, by py-amqp).
fn level_arguments(level: u32) -> FieldTable {
    let next = next_exchange(level);
    let ttl = (1i64 << level) * 1000;
    let ttl = i32::try_from(ttl).map_or(AMQPValue::LongLongInt(ttl), AMQPValue::LongInt);
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    let mut arguments = FieldTable::default();
    arguments.insert(ShortString::from("x-queue-type"), text("quorum"));
    arguments.insert(ShortString::from("x-overflow"), text("reject-publish"));
    arguments.insert(ShortString::from("x-message-ttl"), ttl);
    arguments.insert(ShortString::from("x-dead-letter-exchange"), text(&next));
    arguments.insert(
        ShortString::from("x-dead-letter-strategy"),
        text("at-least-once"),
    );
    arguments
}

/// The key level `level`'s queue is bound to its exchange with: its bit is 1.
fn wait_binding(level: u32) -> String {
    any_words(BITS - 1 - level) + "1.#"
}

/// The key level `level`'s exchange passes messages on to the next with: its bit is 0.
fn skip_binding(level: u32) -> String {
    any_words(BITS - 1 - level) + "0.#"
}

/// Declares every level and the delivery exchange on `channel`, as kombu does.
pub(crate) async fn declare_levels(
    channel: &Channel,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let declare_exchange = |name: String| {
        channel.exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
    };
    for level in (0..BITS).rev() {
        let name = level_name(level);
        bounded(
            "declare a delayed-delivery exchange",
            timeout,
            declare_exchange(name.clone()),
        )
        .await?;
        bounded(
            "declare a delayed-delivery queue",
            timeout,
            channel.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::durable(),
                level_arguments(level),
            ),
        )
        .await?;
        bounded(
            "bind a delayed-delivery queue",
            timeout,
            channel.queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                wait_binding(level).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    bounded(
        "declare the delayed-delivery exchange",
        timeout,
        declare_exchange(DELIVERY_EXCHANGE.to_owned()),
    )
    .await?;
    for level in (0..BITS).rev() {
        let next = next_exchange(level);
        bounded(
            "bind delayed-delivery exchanges",
            timeout,
            channel.exchange_bind(
                next.as_str().into(),
                level_name(level).as_str().into(),
                skip_binding(level).into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    Ok(())
}

/// Binds `queue` to [`DELIVERY_EXCHANGE`], so that its delayed messages come back to it.
pub(crate) async fn bind_queue(
    channel: &Channel,
    queue: &str,
    timeout: Duration,
) -> Result<(), BrokerError> {
    bounded(
        "bind a queue to the delayed-delivery exchange",
        timeout,
        channel.queue_bind(
            queue.into(),
            DELIVERY_EXCHANGE.into(),
            delivery_binding(queue).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic binding key against a routing key, word by word (`*` one word, `#` any number).
    fn matches(binding: &str, key: &str) -> bool {
        fn words(binding: &[&str], key: &[&str]) -> bool {
            match binding.split_first() {
                None => key.is_empty(),
                Some((&"#", rest)) => (0..=key.len()).any(|skip| words(rest, &key[skip..])),
                Some((word, rest)) => key.split_first().is_some_and(|(first, tail)| {
                    (*word == "*" || word == first) && words(rest, tail)
                }),
            }
        }
        let binding: Vec<&str> = binding.split('.').collect();
        let key: Vec<&str> = key.split('.').collect();
        words(&binding, &key)
    }

    #[test]
    fn routing_keys_are_celerys_bits_then_the_queue() {
        // Celery's own examples (kombu's `calculate_routing_key`).
        assert_eq!(
            routing_key(Duration::from_secs(5), "celery").as_deref(),
            Some("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.1.celery")
        );
        assert_eq!(
            routing_key(Duration::from_secs(3600), "tasks.default").as_deref(),
            Some("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1.1.0.0.0.0.1.0.0.0.0.tasks.default")
        );
        // Rounded up, never early; cut to the longest; nothing for no delay or a huge name.
        assert_eq!(
            routing_key(Duration::from_millis(4_200), "q"),
            routing_key(Duration::from_secs(5), "q")
        );
        assert_eq!(
            routing_key(Duration::from_millis(1), "q"),
            routing_key(Duration::from_secs(1), "q")
        );
        assert_eq!(
            routing_key(Duration::MAX, "q").as_deref(),
            Some(&*("1.".repeat(28) + "q"))
        );
        assert_eq!(routing_key(Duration::ZERO, "q"), None);
        assert_eq!(routing_key(Duration::from_secs(1), &"q".repeat(200)), None);
        assert!(routing_key(Duration::from_secs(1), &"q".repeat(199)).is_some());
    }

    /// Follows a routing key through the levels as RabbitMQ would: the seconds it waits.
    fn waited(key: &str) -> Option<u64> {
        let mut seconds = 0;
        for level in (0..BITS).rev() {
            let waits = matches(&wait_binding(level), key);
            let skips = matches(&skip_binding(level), key);
            assert!(waits != skips, "level {level}: exactly one path for {key}");
            if waits {
                seconds += 1u64 << level;
            }
        }
        Some(seconds)
    }

    #[test]
    fn a_key_waits_its_seconds_and_lands_in_its_queue_only() {
        for seconds in [1u64, 2, 5, 59, 3600, 86_400 * 30, (1 << 28) - 1] {
            let key = routing_key(Duration::from_secs(seconds), "sms.high").unwrap();
            assert_eq!(waited(&key), Some(seconds), "{key}");
            assert!(matches(&delivery_binding("sms.high"), &key));
            assert!(!matches(&delivery_binding("high"), &key));
            assert!(!matches(&delivery_binding("sms"), &key));
        }
    }

    #[test]
    fn level_queues_are_declared_as_kombu_declares_them() {
        let arguments = level_arguments(3);
        let get = |name: &str| arguments.inner().get(name).cloned();
        let text = |value: &str| Some(AMQPValue::LongString(LongString::from(value)));
        assert_eq!(get("x-queue-type"), text("quorum"));
        assert_eq!(get("x-overflow"), text("reject-publish"));
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongInt(8_000)));
        assert_eq!(get("x-dead-letter-exchange"), text("celery_delayed_2"));
        assert_eq!(get("x-dead-letter-strategy"), text("at-least-once"));
        assert_eq!(
            level_arguments(0)
                .inner()
                .get("x-dead-letter-exchange")
                .cloned(),
            text(DELIVERY_EXCHANGE)
        );
        assert_eq!(
            level_arguments(27).inner().get("x-message-ttl").cloned(),
            Some(AMQPValue::LongLongInt(134_217_728_000))
        );
        assert_eq!(wait_binding(27), "1.#");
        assert_eq!(skip_binding(26), "*.0.#");
        assert_eq!(skip_binding(0), any_words(27) + "0.#");
    }
}
