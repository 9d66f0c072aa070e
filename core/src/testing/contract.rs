//! The broker contract, one case per function. Each takes a broker and a queue name no other test
//! uses (see [`unique_queue`](super::unique_queue)). Timing bounds are generous: real brokers run
//! these over the network.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;

use super::{eventually, within};
use crate::broker::{
    Broker, BrokerError, ConsumeOptions, Delivery, DeliveryStream, Outgoing, QueueStats,
};

/// How long a delivery that should arrive may take.
pub const ARRIVAL: Duration = Duration::from_secs(10);
/// How long an unsettled delivery may take to be delivered again (visibility timeouts included).
pub const REDELIVERY: Duration = Duration::from_secs(30);
/// How long we watch for a delivery that must not arrive.
pub const QUIET: Duration = Duration::from_millis(300);

fn queues(queue: &str) -> Vec<String> {
    vec![queue.to_owned()]
}

async fn consume(broker: &Arc<dyn Broker>, queue: &str, prefetch: usize) -> DeliveryStream {
    broker
        .consume(&queues(queue), ConsumeOptions::default().prefetch(prefetch))
        .await
        .expect("consume")
}

async fn next(stream: &mut DeliveryStream) -> Delivery {
    within(ARRIVAL, "a delivery", stream.next())
        .await
        .expect("the stream ended")
        .expect("a delivery, not an error")
}

async fn nothing_arrives(stream: &mut DeliveryStream) {
    if let Ok(Some(delivery)) = tokio::time::timeout(QUIET, stream.next()).await {
        panic!("expected no delivery, got {delivery:?}");
    }
}

async fn publish(broker: &Arc<dyn Broker>, queue: &str, payload: &str) {
    broker
        .publish(Outgoing::new(queue, Bytes::from(payload.to_owned())))
        .await
        .expect("publish");
}

/// The queue's statistics, when the broker claims them (`None` otherwise).
async fn stats(broker: &Arc<dyn Broker>, queue: &str) -> Option<QueueStats> {
    if broker.capabilities().stats {
        Some(broker.stats(queue).await.expect("stats"))
    } else {
        None
    }
}

fn assert_unsupported<T: std::fmt::Debug>(result: Result<T, BrokerError>, what: &str) {
    match result {
        Err(BrokerError::Unsupported { .. }) => {}
        other => panic!(
            "the broker does not claim {what} in its capabilities, so asking for it must be \
             BrokerError::Unsupported, not {other:?}"
        ),
    }
}

/// Messages `1` and `2`, ready, and `3`, delayed by ten minutes if the broker delays (else
/// ready too); returns how many are delayed.
async fn publish_two_ready_one_delayed(broker: &Arc<dyn Broker>, queue: &str) -> u64 {
    publish(broker, queue, "1").await;
    publish(broker, queue, "2").await;
    if !broker.capabilities().delays {
        publish(broker, queue, "3").await;
        return 0;
    }
    broker
        .publish(
            Outgoing::new(queue, Bytes::from_static(b"3"))
                .not_before(SystemTime::now() + Duration::from_secs(600)),
        )
        .await
        .expect("publish");
    1
}

fn text(delivery: &Delivery) -> String {
    String::from_utf8_lossy(delivery.payload()).into_owned()
}

/// A published message reaches a consumer intact; after ack it is gone.
pub async fn publish_then_consume_then_ack(broker: Arc<dyn Broker>, queue: &str) {
    publish(&broker, queue, "hello").await;
    let mut stream = consume(&broker, queue, 4).await;
    let delivery = next(&mut stream).await;
    assert_eq!(text(&delivery), "hello");
    assert_eq!(delivery.queue(), queue);
    assert!(!delivery.redelivered());
    delivery.ack().await.expect("ack");
    if let Some(stats) = stats(&broker, queue).await {
        assert_eq!((stats.ready, stats.delayed, stats.unacked), (0, 0, 0));
    }
    nothing_arrives(&mut stream).await;
}

/// A message as large as the decoder accepts by default (1 MiB, every byte value) arrives byte for
/// byte: brokers that cut messages into frames or chunks put them back together.
pub async fn largest_default_message_arrives_intact(broker: Arc<dyn Broker>, queue: &str) {
    let size = crate::broker::DEFAULT_MAX_MESSAGE_BYTES;
    let payload: Bytes = (0..size).map(|i| (i % 251) as u8).collect();
    broker
        .publish(Outgoing::new(queue, payload.clone()))
        .await
        .expect("publish");
    let mut stream = consume(&broker, queue, 1).await;
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.payload().len(), size);
    assert!(
        delivery.payload() == &payload[..],
        "the payload changed in transit"
    );
    delivery.ack().await.expect("ack");
}

/// Messages of one queue and priority arrive in publish order, if the broker claims FIFO order; all
/// of them arrive in any case.
pub async fn order_is_fifo_within_a_queue(broker: Arc<dyn Broker>, queue: &str) {
    let fifo = broker.capabilities().fifo;
    for i in 0..20 {
        publish(&broker, queue, &i.to_string()).await;
    }
    let mut stream = consume(&broker, queue, 1).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        let delivery = next(&mut stream).await;
        got.push(text(&delivery).parse::<u32>().expect("a number"));
        delivery.ack().await.expect("ack");
    }
    if fifo {
        assert_eq!(got, (0..20).collect::<Vec<_>>(), "out of order");
    } else {
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<_>>(), "lost or duplicated");
    }
}

/// A batch publish delivers every message once.
pub async fn publish_batch_delivers_every_message(broker: Arc<dyn Broker>, queue: &str) {
    let batch: Vec<_> = (0..100)
        .map(|i| Outgoing::new(queue, Bytes::from(i.to_string())))
        .collect();
    broker.publish_batch(batch).await.expect("publish_batch");
    if broker.capabilities().stats {
        assert_eq!(broker.len(queue).await.expect("len"), 100);
    }
    let mut stream = consume(&broker, queue, 32).await;
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let delivery = next(&mut stream).await;
        assert!(seen.insert(text(&delivery)), "duplicate delivery");
        delivery.ack().await.expect("ack");
    }
    assert_eq!(seen.len(), 100);
}

/// One stream serves every queue it was given.
pub async fn one_consumer_serves_several_queues(broker: Arc<dyn Broker>, queue: &str) {
    let first = format!("{queue}.a");
    let second = format!("{queue}.b");
    publish(&broker, &first, "a").await;
    publish(&broker, &second, "b").await;
    let mut stream = broker
        .consume(&[first.clone(), second.clone()], ConsumeOptions::default())
        .await
        .expect("consume");
    let mut got = HashSet::new();
    for _ in 0..2 {
        let delivery = next(&mut stream).await;
        got.insert((delivery.queue().to_owned(), text(&delivery)));
        delivery.ack().await.expect("ack");
    }
    assert_eq!(
        got,
        HashSet::from([(first, "a".to_owned()), (second, "b".to_owned())])
    );
}

/// A message with a not-before time is held until then, and counted as delayed meanwhile.
pub async fn delayed_message_waits_for_its_time(broker: Arc<dyn Broker>, queue: &str) {
    let delay = Duration::from_millis(1500);
    if !broker.capabilities().supports_delay(delay) {
        let delayed = Outgoing::new(queue, Bytes::from_static(b"later"))
            .not_before(SystemTime::now() + delay);
        assert_unsupported(broker.publish(delayed).await, "delays");
        return;
    }
    let sent = tokio::time::Instant::now();
    broker
        .publish(
            Outgoing::new(queue, Bytes::from_static(b"later"))
                .not_before(SystemTime::now() + delay),
        )
        .await
        .expect("publish");
    publish(&broker, queue, "now").await;
    if let Some(stats) = stats(&broker, queue).await {
        assert_eq!((stats.ready, stats.delayed), (1, 1));
    }
    let mut stream = consume(&broker, queue, 4).await;
    let now = next(&mut stream).await;
    assert_eq!(text(&now), "now");
    now.ack().await.expect("ack");
    let later = next(&mut stream).await;
    assert_eq!(text(&later), "later");
    let waited = sent.elapsed();
    assert!(
        waited >= delay - Duration::from_millis(50),
        "delivered after {waited:?}, before its time"
    );
    later.ack().await.expect("ack");
}

/// Priorities: a broker that claims them delivers a higher-priority message first; one that does
/// not refuses a message with a priority.
pub async fn priorities_are_honoured_or_refused(broker: Arc<dyn Broker>, queue: &str) {
    let capabilities = broker.capabilities();
    let Some(max) = capabilities.max_priority else {
        let urgent = Outgoing::new(queue, Bytes::from_static(b"urgent")).priority(9);
        assert_unsupported(broker.publish(urgent).await, "priorities");
        return;
    };
    publish(&broker, queue, "low").await;
    broker
        .publish(Outgoing::new(queue, Bytes::from_static(b"high")).priority(max))
        .await
        .expect("publish with a priority");
    let mut stream = consume(&broker, queue, 1).await;
    let first = next(&mut stream).await;
    let first_text = text(&first);
    first.ack().await.expect("ack");
    let second = next(&mut stream).await;
    let second_text = text(&second);
    second.ack().await.expect("ack");
    if capabilities.fifo {
        assert_eq!((first_text.as_str(), second_text.as_str()), ("high", "low"));
    } else {
        let mut got = [first_text, second_text];
        got.sort();
        assert_eq!(got, ["high".to_owned(), "low".to_owned()]);
    }
}

/// `len` counts ready and delayed messages, not deliveries in flight.
pub async fn len_counts_ready_and_delayed_not_unacked(broker: Arc<dyn Broker>, queue: &str) {
    if !broker.capabilities().stats {
        assert_unsupported(broker.stats(queue).await, "statistics");
        return;
    }
    let delayed = publish_two_ready_one_delayed(&broker, queue).await;
    assert_eq!(broker.len(queue).await.expect("len"), 3);
    let mut stream = consume(&broker, queue, 1).await;
    let delivery = next(&mut stream).await;
    let stats = broker.stats(queue).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.delayed, stats.unacked),
        (2 - delayed, delayed, 1)
    );
    assert_eq!(broker.len(queue).await.expect("len"), 2);
    delivery.ack().await.expect("ack");
}

/// A requeued message comes back, marked as redelivered.
pub async fn requeue_delivers_again_marked_redelivered(broker: Arc<dyn Broker>, queue: &str) {
    publish(&broker, queue, "again").await;
    let mut stream = consume(&broker, queue, 1).await;
    let first = next(&mut stream).await;
    first.requeue().await.expect("requeue");
    let second = within(REDELIVERY, "the requeued message", stream.next())
        .await
        .expect("stream ended")
        .expect("delivery");
    assert_eq!(text(&second), "again");
    assert!(second.redelivered());
    second.ack().await.expect("ack");
}

/// A delivery dropped unsettled is delivered again (at least once).
pub async fn dropped_delivery_is_delivered_again(broker: Arc<dyn Broker>, queue: &str) {
    publish(&broker, queue, "precious").await;
    let mut stream = consume(&broker, queue, 1).await;
    drop(next(&mut stream).await);
    let again = within(REDELIVERY, "the dropped message", stream.next())
        .await
        .expect("stream ended")
        .expect("delivery");
    assert_eq!(text(&again), "precious");
    assert!(again.redelivered());
    again.ack().await.expect("ack");
}

/// When a consumer goes away with a delivery unsettled (a crashed worker), another consumer gets it.
pub async fn dropped_stream_and_delivery_go_to_the_next_consumer(
    broker: Arc<dyn Broker>,
    queue: &str,
) {
    publish(&broker, queue, "survivor").await;
    let mut crashed = consume(&broker, queue, 1).await;
    let held = next(&mut crashed).await;
    drop(crashed);
    drop(held);
    let mut next_worker = consume(&broker, queue, 1).await;
    let delivery = within(
        REDELIVERY,
        "redelivery to the next consumer",
        next_worker.next(),
    )
    .await
    .expect("stream ended")
    .expect("delivery");
    assert_eq!(text(&delivery), "survivor");
    delivery.ack().await.expect("ack");
}

/// A worker shutting down stops consuming first and settles its running tasks after: a delivery
/// acked after its stream was dropped is gone for good, not redelivered.
pub async fn delivery_settles_after_its_stream_is_dropped(broker: Arc<dyn Broker>, queue: &str) {
    publish(&broker, queue, "finishing").await;
    let mut stopping = consume(&broker, queue, 1).await;
    let running = next(&mut stopping).await;
    drop(stopping);
    tokio::time::sleep(QUIET).await;
    running
        .ack()
        .await
        .expect("ack after the stream was dropped");
    let mut next_worker = consume(&broker, queue, 1).await;
    nothing_arrives(&mut next_worker).await;
    if broker.capabilities().stats {
        eventually(REDELIVERY, "the queue to be empty", || async {
            broker
                .stats(queue)
                .await
                .is_ok_and(|stats| stats.ready == 0 && stats.unacked == 0)
        })
        .await;
    }
}

/// Deliveries settled in any order — many acked while an earlier one still runs, one requeued in
/// between — are each settled once: the consumer keeps working, only the requeued message comes
/// back, and nothing else does.
pub async fn settling_out_of_order_settles_each_delivery_once(
    broker: Arc<dyn Broker>,
    queue: &str,
) {
    let batch: Vec<_> = (0..50)
        .map(|i| Outgoing::new(queue, Bytes::from(i.to_string())))
        .collect();
    broker.publish_batch(batch).await.expect("publish_batch");
    let mut stream = consume(&broker, queue, 64).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(next(&mut stream).await);
    }
    let first = held.remove(0);
    let requeued = held.remove(10);
    let requeued_text = text(&requeued);
    for delivery in held.into_iter().rev() {
        delivery.ack().await.expect("ack behind a running delivery");
    }
    requeued.requeue().await.expect("requeue");
    first.ack().await.expect("ack of the oldest delivery, last");
    publish(&broker, queue, "after").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let delivery = within(
            REDELIVERY,
            "the requeued and the new message",
            stream.next(),
        )
        .await
        .expect("the stream ended: the consumer broke")
        .expect("a delivery, not an error");
        seen.push((text(&delivery), delivery.redelivered()));
        delivery.ack().await.expect("ack");
    }
    seen.sort();
    let mut expected = vec![(requeued_text, true), ("after".to_owned(), false)];
    expected.sort();
    assert_eq!(seen, expected);
    nothing_arrives(&mut stream).await;
}

/// A dead-lettered message leaves the queue and is kept with its reason (or, on a broker without
/// dead-letter queues, reading them is refused).
pub async fn dead_letter_keeps_the_message_and_reason(broker: Arc<dyn Broker>, queue: &str) {
    publish(&broker, queue, "poison").await;
    let mut stream = consume(&broker, queue, 1).await;
    next(&mut stream)
        .await
        .dead_letter("cannot parse")
        .await
        .expect("dead_letter");
    nothing_arrives(&mut stream).await;
    if !broker.capabilities().dead_letters {
        assert_unsupported(broker.dead_letters(queue, 10).await, "dead letters");
        return;
    }
    if let Some(stats) = stats(&broker, queue).await {
        assert_eq!((stats.ready, stats.unacked, stats.dead_lettered), (0, 0, 1));
    }
    let dead = broker.dead_letters(queue, 10).await.expect("dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].payload[..], b"poison");
    assert_eq!(dead[0].reason, "cannot parse");
    assert_eq!(dead[0].queue, queue);
}

/// `requeue_dead_letters` moves the oldest dead letters back to their queue, each once and no more
/// than asked; they arrive intact and leave the dead-letter queue.
pub async fn requeue_dead_letters_replays_each_once(broker: Arc<dyn Broker>, queue: &str) {
    if !broker.capabilities().dead_letters {
        assert_unsupported(broker.requeue_dead_letters(queue, 10).await, "dead letters");
        return;
    }
    for i in 0..3 {
        publish(&broker, queue, &format!("dead {i}")).await;
    }
    let mut stream = consume(&broker, queue, 4).await;
    for _ in 0..3 {
        next(&mut stream)
            .await
            .dead_letter("failed")
            .await
            .expect("dead_letter");
    }
    nothing_arrives(&mut stream).await;
    eventually(ARRIVAL, "three dead letters", || async {
        broker
            .dead_letters(queue, 10)
            .await
            .is_ok_and(|dead| dead.len() == 3)
    })
    .await;
    let oldest: HashSet<String> = broker
        .dead_letters(queue, 2)
        .await
        .expect("dead_letters")
        .iter()
        .map(|dead| String::from_utf8_lossy(&dead.payload).into_owned())
        .collect();
    assert_eq!(
        broker
            .requeue_dead_letters(queue, 2)
            .await
            .expect("requeue"),
        2
    );
    let mut replayed = HashSet::new();
    for _ in 0..2 {
        let delivery = next(&mut stream).await;
        assert!(
            replayed.insert(text(&delivery)),
            "a dead letter came back twice"
        );
        delivery.ack().await.expect("ack");
    }
    assert_eq!(replayed, oldest, "not the oldest dead letters");
    nothing_arrives(&mut stream).await;
    assert_eq!(
        broker
            .dead_letters(queue, 10)
            .await
            .expect("dead_letters")
            .len(),
        1
    );
    assert_eq!(
        broker
            .requeue_dead_letters(queue, 10)
            .await
            .expect("requeue"),
        1
    );
    assert_eq!(text(&next(&mut stream).await), "dead 2");
    assert_eq!(
        broker
            .requeue_dead_letters(queue, 10)
            .await
            .expect("requeue"),
        0
    );
    assert!(
        broker
            .dead_letters(queue, 10)
            .await
            .expect("dead_letters")
            .is_empty()
    );
}

/// Purge removes ready and delayed messages and says how many.
pub async fn purge_removes_waiting_messages(broker: Arc<dyn Broker>, queue: &str) {
    if !broker.capabilities().stats {
        assert_unsupported(broker.purge(queue).await, "purge");
        return;
    }
    let _ = publish_two_ready_one_delayed(&broker, queue).await;
    assert_eq!(broker.purge(queue).await.expect("purge"), 3);
    assert_eq!(broker.len(queue).await.expect("len"), 0);
    let mut stream = consume(&broker, queue, 1).await;
    nothing_arrives(&mut stream).await;
}

/// Purge removes only waiting messages: a delivery in flight stays with its consumer and can
/// still be requeued.
pub async fn purge_leaves_deliveries_in_flight(broker: Arc<dyn Broker>, queue: &str) {
    if !broker.capabilities().stats {
        assert_unsupported(broker.purge(queue).await, "purge");
        return;
    }
    for i in 0..3 {
        publish(&broker, queue, &format!("m{i}")).await;
    }
    let mut stream = consume(&broker, queue, 1).await;
    let in_flight = next(&mut stream).await;
    assert_eq!(broker.purge(queue).await.expect("purge"), 2);
    let first = text(&in_flight);
    in_flight.requeue().await.expect("requeue");
    let again = next(&mut stream).await;
    assert_eq!(text(&again), first, "the delivery in flight was purged");
    again.ack().await.expect("ack");
    nothing_arrives(&mut stream).await;
}

/// `purge_dead_letters` empties a queue's dead letters and says how many; the queue itself is
/// untouched.
pub async fn purge_dead_letters_empties_them(broker: Arc<dyn Broker>, queue: &str) {
    if !broker.capabilities().dead_letters {
        assert_unsupported(broker.purge_dead_letters(queue).await, "dead letters");
        return;
    }
    for i in 0..2 {
        publish(&broker, queue, &format!("dead {i}")).await;
    }
    let mut stream = consume(&broker, queue, 2).await;
    for _ in 0..2 {
        next(&mut stream)
            .await
            .dead_letter("failed")
            .await
            .expect("dead_letter");
    }
    eventually(ARRIVAL, "two dead letters", || async {
        broker
            .dead_letters(queue, 10)
            .await
            .is_ok_and(|dead| dead.len() == 2)
    })
    .await;
    publish(&broker, queue, "alive").await;
    assert_eq!(
        broker
            .purge_dead_letters(queue)
            .await
            .expect("purge dead letters"),
        2
    );
    assert!(
        broker
            .dead_letters(queue, 10)
            .await
            .expect("dead_letters")
            .is_empty()
    );
    let alive = next(&mut stream).await;
    assert_eq!(text(&alive), "alive");
    alive.ack().await.expect("ack");
}

/// A consumer holds at most `prefetch` unsettled deliveries.
pub async fn prefetch_bounds_unsettled_deliveries(broker: Arc<dyn Broker>, queue: &str) {
    for i in 0..5 {
        publish(&broker, queue, &i.to_string()).await;
    }
    let mut stream = consume(&broker, queue, 2).await;
    let first = next(&mut stream).await;
    let second = next(&mut stream).await;
    nothing_arrives(&mut stream).await;
    first.ack().await.expect("ack");
    let third = next(&mut stream).await;
    nothing_arrives(&mut stream).await;
    second.ack().await.expect("ack");
    third.ack().await.expect("ack");
}

/// Two consumers of one queue share the messages; each message goes to exactly one of them.
pub async fn competing_consumers_each_message_once(broker: Arc<dyn Broker>, queue: &str) {
    const N: usize = 200;
    let batch: Vec<_> = (0..N)
        .map(|i| Outgoing::new(queue, Bytes::from(i.to_string())))
        .collect();
    broker.publish_batch(batch).await.expect("publish_batch");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut stream = consume(&broker, queue, 8).await;
        let seen = seen.clone();
        workers.push(tokio::spawn(async move {
            while let Ok(Some(Ok(delivery))) =
                tokio::time::timeout(Duration::from_secs(2), stream.next()).await
            {
                seen.lock().expect("lock").push(text(&delivery));
                delivery.ack().await.expect("ack");
            }
        }));
    }
    eventually(ARRIVAL, "every message consumed", || {
        let seen = seen.clone();
        async move { seen.lock().expect("lock").len() >= N }
    })
    .await;
    for worker in workers {
        worker.abort();
    }
    let seen = seen.lock().expect("lock").clone();
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), N, "some message was delivered twice");
    assert_eq!(unique.len(), N);
}
