//! The RabbitMQ broker under failure, against the real server: a worker killed with SIGKILL, a message
//! that kills every worker that takes it, hostile bytes published by a foreign client, a publish
//! RabbitMQ refuses, and RabbitMQ's app stopped and started while tasks flow.
//! The outage test stops the shared server's app, so this file's tests run one at a time
//! (`--test-threads` is not needed: they serialise on a lock).

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use celeriac::App;
use celeriac_tests::harness::{
    self, BackgroundWorker, RunLog, amqp_url, eventually, require_amqp, unique_queue,
};
use celeriac_tests::hostile::{self, Hostile};
use celeriac_tests::{raw_amqp, scenarios};
use tokio::process::Child;

/// The outage stops RabbitMQ for everyone: no other test of this file runs meanwhile.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn worker_process(queue: &str, max_deliveries: u32, concurrency: usize) -> Child {
    harness::worker_process(
        env!("CARGO_BIN_EXE_celeriac-test-worker"),
        &amqp_url(),
        queue,
        1000,
        max_deliveries,
        concurrency,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_loses_no_task() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b).await else {
        return;
    };
    let queue = unique_queue("sigkill");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    scenarios::sigkill_loses_no_task(&app, &queue, false, || worker_process(&queue, 5, 8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_every_worker_is_dead_lettered_as_poison() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b).await else {
        return;
    };
    let queue = unique_queue("poison");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    scenarios::poison_message_is_dead_lettered(&app, &queue, || worker_process(&queue, 2, 1)).await;
}

/// On a quorum queue too the worker counts a message's redeliveries in a copy it republishes, and
/// dead-letters the message that killed every worker once the count reaches the limit (the worker
/// processes take `?queue_type=quorum` from their URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_every_worker_is_dead_lettered_from_a_quorum_queue() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b.queue_type(celeriac_amqp::QueueType::Quorum)).await
    else {
        return;
    };
    let queue = unique_queue("poison-quorum");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    let separator = if amqp_url().contains('?') { '&' } else { '?' };
    let quorum_url = format!("{}{separator}queue_type=quorum", amqp_url());
    scenarios::poison_message_is_dead_lettered(&app, &queue, || {
        harness::worker_process(
            env!("CARGO_BIN_EXE_celeriac-test-worker"),
            &quorum_url,
            &queue,
            1000,
            2,
            1,
        )
    })
    .await;
}

static BOUNCED: RunLog = RunLog::new();

#[celeriac::task(name = "bounced_before_it_ran")]
async fn bounced_before_it_ran(n: u32) {
    BOUNCED.record(n);
}

/// A quorum queue counts every return of a message (`x-delivery-count`), and puts it back at the
/// head of the queue. After a broker restart, consumers that connect and are cut off again before
/// they run anything return the same messages over and over: a chaos run (no worker killed, 8
/// restarts) saw 128 tasks reach the poison limit that way and dead-lettered unrun. Here a
/// message is taken and returned unrun more times than `max_deliveries` by consumers that close
/// their channel; a worker must then run it, not dead-letter it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_message_returned_unrun_many_times_still_runs() {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicQosOptions};

    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b.queue_type(celeriac_amqp::QueueType::Quorum)).await
    else {
        return;
    };
    let queue = unique_queue("bounced-quorum");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .register::<bounced_before_it_ran>()
        .build()
        .unwrap();
    bounced_before_it_ran::delay(&app, 7).await.unwrap();

    let connection =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("a raw connection");
    let mut returns_seen = 0;
    for _ in 0..7 {
        let channel = connection.create_channel().await.unwrap();
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "bouncer".into(),
                BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("the message, within 10 s")
            .expect("a delivery")
            .expect("not an error");
        returns_seen = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get("x-delivery-count").cloned())
            .and_then(|count| count.as_long_long_int())
            .unwrap_or(0);
        // Closed without an ack: RabbitMQ returns the message, counting it.
        channel.close(200, "bounced".into()).await.unwrap();
    }
    assert!(returns_seen >= 5, "RabbitMQ counted {returns_seen} returns");
    connection.close(200, "done".into()).await.unwrap();

    let running = BackgroundWorker::start(app.worker().build().unwrap());
    eventually(
        Duration::from_secs(30),
        "the bounced task to run",
        || async { BOUNCED.ids().contains(&7) },
    )
    .await;
    running.stop().await;
    assert_eq!(
        harness::dead_letter_reasons(&app, &queue).await,
        Vec::<String>::new()
    );
}

static SURVIVED: RunLog = RunLog::new();

#[celeriac::task(name = "through_the_rabbitmq_outage")]
async fn through_the_rabbitmq_outage(n: u32) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    SURVIVED.record(n);
}

fn survived() -> usize {
    SURVIVED.count()
}

fn rabbitmqctl(arguments: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(arguments)
        .stdout(Stdio::null())
        .status()
        .expect("rabbitmqctl must be installed for this test (scripts/test.sh installs it)");
    assert!(status.success(), "rabbitmqctl {arguments:?} failed");
}

/// Runs `rabbitmqctl <arguments>` when dropped, even if the test fails half-way: undoes what the
/// test did to the shared server (a stopped app, a policy) so other tests find it as it was.
struct UndoOnDrop(Vec<String>);

impl UndoOnDrop {
    fn new(arguments: &[&str]) -> Self {
        Self(
            arguments
                .iter()
                .map(|&argument| argument.to_owned())
                .collect(),
        )
    }
}

impl Drop for UndoOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(&self.0)
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_flowing_through_a_rabbitmq_restart_all_complete() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b.operation_timeout(Duration::from_secs(2))).await else {
        return;
    };
    let queue = unique_queue("outage");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .enqueue_timeout(Duration::from_secs(4))
        .register::<through_the_rabbitmq_outage>()
        .build()
        .unwrap();
    // Enough work (≈ 5 s at concurrency 2) that the outage, which `rabbitmqctl` takes a second or
    // two to start, lands while tasks are still queued.
    const BEFORE: u32 = 200;
    for n in 0..BEFORE {
        through_the_rabbitmq_outage::delay(&app, n).await.unwrap();
    }
    let worker = app
        .worker()
        .concurrency(2)
        .grace_period(Duration::from_secs(5))
        .build()
        .unwrap();
    let running = BackgroundWorker::start(worker);
    eventually(Duration::from_secs(20), "some tasks to run", || async {
        survived() >= 3
    })
    .await;

    let restart = UndoOnDrop::new(&["start_app"]);
    rabbitmqctl(&["stop_app"]);
    assert!(
        survived() < BEFORE as usize,
        "everything ran before the outage"
    );
    // During the outage `delay` fails (in bounded time) or, if it raced the stop, succeeded: never a
    // silent loss. Successful sends are expected to complete too.
    let mut expected: HashSet<u32> = (0..BEFORE).collect();
    let started = tokio::time::Instant::now();
    match through_the_rabbitmq_outage::delay(&app, 1_000).await {
        Ok(_) => {
            expected.insert(1_000);
        }
        Err(error) => eprintln!("delay during the outage: {error}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "delay hung for {:?}",
        started.elapsed()
    );
    rabbitmqctl(&["start_app"]);
    drop(restart);
    // And after it, sending works again.
    eventually(
        Duration::from_secs(60),
        "delay to work after the restart",
        || {
            let app = app.clone();
            async move {
                through_the_rabbitmq_outage::delay(&app, 2_000)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    expected.insert(2_000);

    eventually(Duration::from_secs(90), "every task sent to be run", || {
        let expected = expected.clone();
        async move { SURVIVED.ids().is_superset(&expected) }
    })
    .await;
    running.stop().await;
}

/// Makes `queue` full at one ready message, refusing publishes beyond it (a `reject-publish`
/// policy), once RabbitMQ has applied the policy; the policy is cleared when the guard drops.
async fn full_at_one_ready_message(queue: &str) -> UndoOnDrop {
    let policy = format!("{queue}-full");
    let clear = UndoOnDrop::new(&["clear_policy", &policy]);
    rabbitmqctl(&[
        "set_policy",
        &policy,
        &format!("^{queue}$"),
        r#"{"max-length":1,"overflow":"reject-publish"}"#,
        "--apply-to",
        "queues",
    ]);
    // RabbitMQ applies a policy to its queues a moment after `set_policy` returns (and to a queue
    // declared later, when it is declared).
    eventually(Duration::from_secs(10), "the policy to apply", || async {
        let listing = std::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "policy",
            ])
            .output()
            .expect("rabbitmqctl must be installed for this test");
        let listing = String::from_utf8_lossy(&listing.stdout);
        let applied = listing
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&queue));
        applied.is_none_or(|fields| fields.get(1) == Some(&policy.as_str()))
    })
    .await;
    clear
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_rabbitmq_refuses_is_an_error_for_the_caller() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b).await else {
        return;
    };
    let queue = unique_queue("refused");
    // A full queue that rejects publishes: RabbitMQ answers the publisher confirm with a nack.
    let _clear = full_at_one_ready_message(&queue).await;
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .register::<through_the_rabbitmq_outage>()
        .build()
        .unwrap();
    through_the_rabbitmq_outage::delay(&app, 1).await.unwrap();
    let error = through_the_rabbitmq_outage::delay(&app, 2)
        .await
        .expect_err("RabbitMQ nacks a publish to a full reject-publish queue");
    let shown = celeriac::error::Report(&error).to_string();
    assert!(shown.contains("nacked"), "{shown}");
    assert_eq!(app.broker().len(&queue).await.unwrap(), 1);
}

/// A redelivered message is counted by publishing a copy with one more delivery and acking the
/// original. When RabbitMQ refuses that copy (here a full reject-publish queue; after a restart,
/// a publishing channel of a quorum queue did), the original goes back to the queue to be tried
/// again — it used to stay unacked on the consumer's channel until the channel closed, holding a
/// prefetch slot and its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_whose_count_is_refused_comes_back() {
    use celeriac::Broker;
    use celeriac::broker::{ConsumeOptions, Outgoing};
    use futures::StreamExt;

    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b).await else {
        return;
    };
    let queue = unique_queue("recount-refused");
    broker
        .publish(Outgoing::new(&queue, "first"))
        .await
        .unwrap();
    // Taken by another client, held unacked while a second message arrives and a policy makes the
    // queue full at one ready message, then given back: "first" is redelivered from now on, and
    // the copy that counts it is nacked while "second" waits.
    let connection =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let taken = channel
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .expect("basic.get");
    assert!(taken.is_some(), "the message was there");
    broker
        .publish(Outgoing::new(&queue, "second"))
        .await
        .unwrap();
    let policy = full_at_one_ready_message(&queue).await;
    let _ = connection.close(200, "given back".into()).await;
    eventually(
        Duration::from_secs(10),
        "the message to be requeued",
        || async { broker.len(&queue).await.unwrap() == 2 },
    )
    .await;
    let mut stream = broker
        .consume(
            std::slice::from_ref(&queue),
            ConsumeOptions::default().prefetch(1),
        )
        .await
        .unwrap();
    let refused_for_a_while = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
    if let Ok(Some(Ok(delivery))) = &refused_for_a_while {
        panic!(
            "nothing is handed out while the count cannot be published, but {:?} was (redelivered: {})",
            delivery.payload(),
            delivery.redelivered()
        );
    }
    assert!(refused_for_a_while.is_err(), "{refused_for_a_while:?}");
    drop(policy);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("both messages come once RabbitMQ takes publishes again")
            .unwrap()
            .unwrap();
        seen.push((
            String::from_utf8_lossy(delivery.payload()).into_owned(),
            delivery.redelivered(),
        ));
        delivery.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(
        seen,
        [("first".to_owned(), true), ("second".to_owned(), false)],
        "the count of \"first\" went through in the end"
    );
}

/// `host:port` of the test RabbitMQ.
fn amqp_address() -> String {
    let url = url::Url::parse(&amqp_url()).expect("a valid AMQP URL");
    format!(
        "{}:{}",
        url.host_str().expect("a host"),
        url.port().unwrap_or(5672)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_the_worker_keeps_serving() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(broker) = require_amqp(|b| b).await else {
        return;
    };
    let queue = unique_queue("hostile");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    app.broker().stats(&queue).await.unwrap(); // declares the queue for the raw publisher
    let valid = celeriac::Envelope::new(
        "record_run",
        queue.as_str(),
        vec![1, 0],
        celeriac::codec::BincodeCodec::CONTENT_TYPE,
    );
    let mut cases = hostile::envelope_cases(&queue);
    // Headers nested 1 000 levels deep (7 KB; RabbitMQ accepts them) used to overflow the stack of
    // lapin's I/O thread and abort every worker that received the message.
    cases.push(Hostile {
        name: "headers nested 1 000 levels deep",
        payload: valid.to_bytes().unwrap(),
        reason: "deeper than 64 levels",
    });
    let address = amqp_address();
    let empty = 0u32.to_be_bytes();
    for case in &cases {
        let headers = if case.reason.contains("deeper") {
            raw_amqp::nested_table(1_000)
        } else {
            empty.to_vec()
        };
        raw_amqp::publish(&address, &queue, &headers, &case.payload).await;
    }
    hostile::hostile_input_is_dead_lettered(&app, &queue, &cases, 64.0, || {
        worker_process(&queue, 5, 2)
    })
    .await;
}
