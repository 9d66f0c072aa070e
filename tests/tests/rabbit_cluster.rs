//! celeriac on a RabbitMQ cluster of three nodes started for the test (spare ports, own data
//! directories, stopped by PID at the end): a quorum queue whose leader node is killed with SIGKILL
//! while tasks drain and while a producer sends. Every task whose send was confirmed runs; the app
//! and its worker fail over to the surviving nodes by themselves, from the URL's node list.

use std::time::Duration;

use celeriac::App;
use celeriac_tests::harness::{
    BackgroundWorker, Producer, RunLog, eventually, skipped, unique_queue,
};
use celeriac_tests::rabbit_cluster::RabbitCluster;

static RAN: RunLog = RunLog::new();

#[celeriac::task(name = "through_the_failover")]
async fn through_the_failover(n: u32) {
    RAN.record(n);
}

/// Tasks sent before the worker starts, then while it runs (the second half across the kill).
const BEFORE: u32 = 10_000;
const DURING: u32 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_loses_no_task_when_its_leader_node_dies() {
    if skipped("rabbitmq") {
        return;
    }
    let mut cluster = RabbitCluster::start(3).await;
    let queue = unique_queue("cluster");
    let app = App::builder()
        .broker_url(cluster.quorum_url())
        .default_queue(queue.clone())
        .enqueue_timeout(Duration::from_secs(10))
        .register::<through_the_failover>()
        .build()
        .expect("an app on the cluster's URL");
    app.delay_batch::<through_the_failover>((0..BEFORE).map(|n| (n,)))
        .await
        .expect("sent before any fault");
    let worker = app
        .worker()
        .concurrency(16)
        .grace_period(Duration::from_secs(5))
        .build()
        .expect("a worker");
    let running = BackgroundWorker::start(worker);

    // A producer that keeps sending across the kill: a send that fails is sent again (a new
    // task, the same number); a send that succeeded must run.
    let producer = Producer::start(
        BEFORE..BEFORE + DURING,
        1_000,
        Duration::from_millis(100),
        {
            let app = app.clone();
            move |n| {
                let app = app.clone();
                async move { through_the_failover::delay(&app, n).await }
            }
        },
    );

    eventually(
        Duration::from_secs(60),
        "a quarter of the tasks to run",
        || async { RAN.count() >= (BEFORE / 4) as usize },
    )
    .await;
    let (leader, replicas) = cluster.leader_of(&queue);
    assert_eq!(replicas, 3, "the quorum queue has a replica on every node");
    cluster.kill(leader);
    let ran_at_kill = RAN.count();

    let failed_sends = producer.finish().await;
    eventually(Duration::from_secs(180), "every task to run", || async {
        RAN.count() == (BEFORE + DURING) as usize
    })
    .await;
    let report = running.stop().await;
    let ran = RAN.ids();
    let missing = (0..BEFORE + DURING).filter(|n| !ran.contains(n)).count();
    assert_eq!(missing, 0, "tasks lost");
    eprintln!(
        "cluster failover: node {leader} (the queue's leader) killed after {ran_at_kill} runs; \
         {failed_sends} sends failed and were sent again; worker report: {report:?}"
    );
}
