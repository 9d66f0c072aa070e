//! celeriac on Redis behind Sentinel, started for the test (a master, two replicas, three
//! sentinels on spare ports, stopped by PID): the master is killed with SIGKILL while a worker
//! drains and a producer sends; the sentinels promote a replica, the broker follows it, and no task
//! whose publish a replica confirmed (`min_replicas`) is lost.

use std::time::Duration;

use celeriac::App;
use celeriac_redis::RedisBroker;
use celeriac_tests::harness::{
    BackgroundWorker, Producer, RunLog, eventually, runs_one_task, skipped, unique_queue,
};
use celeriac_tests::redis_sentinel::RedisSentinels;

static RAN: RunLog = RunLog::new();

#[celeriac::task(name = "behind_sentinels")]
async fn behind_sentinels(n: u32) {
    RAN.record(n);
}

const BEFORE: u32 = 2_000;
const DURING: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_behind_sentinels_loses_no_confirmed_task() {
    if skipped("redis") {
        return;
    }
    let mut group = RedisSentinels::start(2, 3).await;
    let queue = unique_queue("sentinel");
    let broker = RedisBroker::builder(&group.url())
        .key_prefix("celeriac-test")
        .visibility_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
        .min_replicas(1, Duration::from_secs(1))
        .connect()
        .await
        .expect("a broker behind the sentinels");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .enqueue_timeout(Duration::from_secs(10))
        .register::<behind_sentinels>()
        .build()
        .expect("an app");
    app.delay_batch::<behind_sentinels>((0..BEFORE).map(|n| (n,)))
        .await
        .expect("sent before any fault");
    let worker = app
        .worker()
        .concurrency(8)
        .grace_period(Duration::from_secs(5))
        .build()
        .expect("a worker");
    let running = BackgroundWorker::start(worker);
    let producer = Producer::start(BEFORE..BEFORE + DURING, 150, Duration::from_millis(100), {
        let app = app.clone();
        move |n| {
            let app = app.clone();
            async move { behind_sentinels::delay(&app, n).await }
        }
    });
    eventually(
        Duration::from_secs(60),
        "a third of the tasks to run",
        || async { RAN.count() >= ((BEFORE + DURING) / 3) as usize },
    )
    .await;
    let dead = group.kill_master();
    let recovery = group.recovered(dead).await;
    let failed_sends = producer.finish().await;
    eventually(Duration::from_secs(120), "every task to run", || async {
        let ran = RAN.ids();
        (0..BEFORE + DURING).all(|n| ran.contains(&n))
    })
    .await;
    let report = running.stop().await;
    eprintln!(
        "sentinel failover: master {dead} killed; a replica was promoted after {recovery:?}; \
         {failed_sends} sends failed and were sent again; worker report: {report:?}"
    );
    let ran = RAN.ids();
    assert_eq!((0..BEFORE + DURING).filter(|n| !ran.contains(n)).count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_given_a_sentinel_url_runs_tasks() {
    if skipped("redis") {
        return;
    }
    let group = RedisSentinels::start(1, 1).await;
    let app = App::builder()
        .broker_url(group.url())
        .default_queue(unique_queue("sentinel_url"))
        .register::<behind_sentinels>()
        .build()
        .expect("an app on a redis+sentinel:// URL");
    runs_one_task(&app, &RAN, 1_000_000, || {
        behind_sentinels::delay(&app, 1_000_000)
    })
    .await;
}
