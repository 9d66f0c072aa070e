//! The RabbitMQ broker against a real server (127.0.0.1:5672 guest/guest or `CELERIAC_AMQP_URL`): the
//! shared contract suite and connection handling. Crash, poison-message and outage tests are in
//! `amqp_failures.rs`.

use std::sync::Arc;
use std::time::Duration;

use celeriac::broker::{ConsumeOptions, Outgoing};
use celeriac::{App, Broker};
use celeriac_amqp::AmqpBroker;
use celeriac_tests::harness::{require_amqp, unique_queue};
use celeriac_tests::scenarios;
use futures::StreamExt;

async fn amqp() -> Option<Arc<dyn Broker>> {
    Some(Arc::new(require_amqp(|builder| builder).await?))
}

celeriac::broker_contract_tests!(amqp);

async fn amqp_sharded() -> Option<Arc<dyn Broker>> {
    Some(Arc::new(require_amqp(|builder| builder.shards(3)).await?))
}

/// The contract on a broker spreading each queue over three RabbitMQ queues. It does not claim FIFO
/// order (which holds only within a shard), so the kit checks only that every message arrives.
mod sharded {
    use super::*;

    celeriac::broker_contract_tests!(amqp_sharded);

    /// Messages go to every shard in turn, and one worker drains them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_spread_over_every_shard_and_a_worker_drains_them() {
        let Some(sharded) = require_amqp(|builder| builder.shards(3)).await else {
            return;
        };
        let Some(plain) = require_amqp(|builder| builder).await else {
            return;
        };
        let queue = unique_queue("shards");
        let batch: Vec<_> = (0..30)
            .map(|i| Outgoing::new(&queue, i.to_string().into_bytes()))
            .collect();
        sharded.publish_batch(batch).await.unwrap();
        assert_eq!(sharded.len(&queue).await.unwrap(), 30);
        for shard in [
            queue.clone(),
            format!("{queue}.shard.1"),
            format!("{queue}.shard.2"),
        ] {
            assert_eq!(plain.len(&shard).await.unwrap(), 10, "{shard}");
        }
        assert_eq!(sharded.purge(&queue).await.unwrap(), 30);
        scenarios::worker_drains_sent_tasks(App::builder().broker(sharded), &queue).await;
    }
}

/// With the smallest frames AMQP allows, a 1 MiB message travels in 256 frames and arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_crosses_in_many_small_frames() {
    let Some(broker) = require_amqp(|builder| builder.frame_max(4096)).await else {
        return;
    };
    let queue = unique_queue("small-frames");
    celeriac::testing::contract::largest_default_message_arrives_intact(Arc::new(broker), &queue)
        .await;
}

/// A URL lapin cannot parse is a connect error that keeps the password hidden (the parser's own
/// message would quote the URL whole).
#[tokio::test]
async fn an_unparseable_url_is_a_connect_error_without_the_password() {
    for url in [
        "amqp://guest:hunter2@127.0.0.1:5672/%2f?frame_max=lots",
        "amqp:guest:hunter2@127.0.0.1:5672/%2f",
    ] {
        let error = AmqpBroker::connect(url).await.unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(
            matches!(error, celeriac::BrokerError::Connect { .. }),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[tokio::test]
async fn unreachable_rabbitmq_is_a_connect_error_without_the_password() {
    let error = AmqpBroker::builder("amqp://guest:hunter2@127.0.0.1:1/%2f")
        .operation_timeout(Duration::from_secs(3))
        .connect()
        .await
        .unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(error.is_transient(), "{text}");
    assert!(text.contains("amqp://guest:***@127.0.0.1:1/%2f"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn wrong_credentials_are_an_error_without_the_password() {
    let url = celeriac_tests::harness::amqp_url().replace("guest:guest", "guest:hunter2");
    let error = AmqpBroker::connect(&url).await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_apply_when_configured() {
    let Some(broker) = require_amqp(|b| b.max_priority(9)).await else {
        return;
    };
    let queue = unique_queue("priority");
    for (payload, priority) in [("low", 0u8), ("high", 9), ("mid", 5)] {
        broker
            .publish(Outgoing::new(&queue, payload.as_bytes().to_vec()).priority(priority))
            .await
            .unwrap();
    }
    let mut stream = broker
        .consume(
            std::slice::from_ref(&queue),
            ConsumeOptions::default().prefetch(1),
        )
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let delivery = stream.next().await.unwrap().unwrap();
        order.push(String::from_utf8(delivery.payload().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(order, ["high", "mid", "low"]);
}

/// The whole path through RabbitMQ: batch publish, a countdown, a worker draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_drains_tasks_sent_through_rabbitmq() {
    let Some(broker) = require_amqp(|b| b).await else {
        return;
    };
    let queue = unique_queue("drain");
    scenarios::worker_drains_sent_tasks(App::builder().broker(broker), &queue).await;
}

/// RabbitMQ refuses a queue TTL over 10 years, so a task due in 1 000 years used to fail at `delay`
/// (its wait queue could not be declared) and, arriving early at a worker, was dead-lettered as
/// "poison" after five tries. It now waits in the longest wait queue and is sent on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_due_in_a_thousand_years_waits_instead_of_failing() {
    let Some(broker) = require_amqp(|builder| builder).await else {
        return;
    };
    scenarios::far_future_eta_waits(App::builder().broker(broker), &unique_queue("far-eta")).await;
}
