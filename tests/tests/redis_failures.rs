//! The Redis broker under failure, against real servers: a worker killed with SIGKILL, a message that
//! kills every worker that takes it, hostile entries written by a foreign client, and Redis restarts
//! (with tasks in flight, and while it reloads a large dataset).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use celeriac::App;
use celeriac_redis::RedisBroker;
use celeriac_tests::harness::{
    self, BackgroundWorker, RunLog, eventually, redis_url, require_redis, skipped, unique_queue,
};
use celeriac_tests::hostile::{self, Hostile};
use celeriac_tests::scenarios;
use tokio::process::Child;

fn worker_process(
    queue: &str,
    visibility_ms: u64,
    max_deliveries: u32,
    concurrency: usize,
) -> Child {
    harness::worker_process(
        env!("CARGO_BIN_EXE_celeriac-test-worker"),
        &redis_url(),
        queue,
        visibility_ms,
        max_deliveries,
        concurrency,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_loses_no_task() {
    let Some(broker) = require_redis(|b| b.visibility_timeout(Duration::from_secs(1))).await else {
        return;
    };
    let queue = unique_queue("sigkill");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    scenarios::sigkill_loses_no_task(&app, &queue, true, || worker_process(&queue, 1000, 5, 8))
        .await;
}

/// The long-task soak: tasks of ten visibility timeouts (1 s each) on three worker processes, one
/// killed mid-run; none completes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_ten_visibility_timeouts_long_run_once_under_a_kill() {
    let Some(broker) = require_redis(|b| b.visibility_timeout(Duration::from_secs(1))).await else {
        return;
    };
    let queue = unique_queue("long_tasks");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    let concurrency = (scenarios::LONG_TASKS / 2) as usize;
    scenarios::long_tasks_run_once_under_kills(&app, &queue, 1000, || {
        worker_process(&queue, 1000, 5, concurrency)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_every_worker_is_dead_lettered_as_poison() {
    let Some(broker) = require_redis(|b| b).await else {
        return;
    };
    let queue = unique_queue("poison");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    scenarios::poison_message_is_dead_lettered(&app, &queue, || worker_process(&queue, 500, 2, 1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_the_worker_keeps_serving() {
    let Some(broker) = require_redis(|b| b).await else {
        return;
    };
    let queue = unique_queue("hostile");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .build()
        .unwrap();
    let mut cases = hostile::envelope_cases(&queue);
    // An entry with other field names than celeriac's: handed over as empty bytes.
    cases.push(Hostile {
        name: "wrong field names",
        payload: Vec::new(),
        reason: "not a celeriac envelope",
    });
    // Entries of 50 MiB (Redis takes up to 512 MB) took a worker from 8 to 320 MiB, read whole before
    // their size was checked; they are now dead-lettered inside Redis, never read by the worker.
    for _ in 0..2 {
        cases.push(Hostile {
            name: "an entry of 50 MiB",
            payload: vec![b'x'; 50 * 1024 * 1024],
            reason: "unread by the worker",
        });
    }
    let mut conn = harness::redis_connection().await;
    let stream = format!("celeriac-test:{{{queue}}}:ready");
    for case in &cases {
        let field = if case.name == "wrong field names" {
            "payload"
        } else {
            "p"
        };
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(field)
            .arg(&case.payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    hostile::hostile_input_is_dead_lettered(&app, &queue, &cases, 64.0, || {
        worker_process(&queue, 1000, 5, 2)
    })
    .await;
}

// ===== a private redis-server, stopped and restarted while tasks are in flight =====

struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    child: Option<std::process::Child>,
}

/// How the private server keeps its data across a restart.
#[derive(Clone, Copy)]
enum Persistence {
    /// Every write fsynced to the append-only file.
    Aof,
    /// Only a snapshot, written by `SHUTDOWN SAVE` (quick to fill with `DEBUG POPULATE`).
    Snapshot,
}

impl PrivateRedis {
    fn start(dir: &Path, port: u16, persistence: Persistence) -> std::process::Child {
        let mut command = std::process::Command::new("redis-server");
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match persistence {
            Persistence::Aof => command.args(["--appendonly", "yes", "--appendfsync", "always"]),
            Persistence::Snapshot => {
                command.args(["--appendonly", "no", "--enable-debug-command", "local"])
            }
        };
        command
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed for the outage test (scripts/test.sh installs it)",
            )
    }

    async fn new(persistence: Persistence) -> Self {
        let port = harness::free_port();
        let dir = std::env::temp_dir().join(unique_queue("redis-outage"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            child: Some(Self::start(&dir, port, persistence)),
            dir,
            persistence,
        };
        server.wait_until_up().await;
        server
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(120)));
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("a connection to the private redis-server")
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn wait_until_up(&mut self) {
        let url = self.url();
        eventually(
            Duration::from_secs(20),
            "the private redis-server to accept connections",
            || {
                let url = url.clone();
                async move {
                    let Ok(client) = redis::Client::open(url) else {
                        return false;
                    };
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                }
            },
        )
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the server again on its port and data, without waiting for it to serve.
    fn start_again(&mut self) {
        self.child = Some(Self::start(&self.dir, self.port, self.persistence));
    }

    async fn restart(&mut self) {
        self.start_again();
        self.wait_until_up().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SURVIVED: RunLog = RunLog::new();

#[celeriac::task(name = "through_the_outage")]
async fn through_the_outage(n: u32) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    SURVIVED.record(n);
}

fn survived() -> usize {
    SURVIVED.count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_enqueued_before_a_redis_restart_all_complete_after_it() {
    if skipped("redis") {
        return;
    }
    const TASKS: u32 = 30;
    let mut server = PrivateRedis::new(Persistence::Aof).await;
    let broker = RedisBroker::builder(&server.url())
        .visibility_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let app = App::builder()
        .broker(broker)
        .enqueue_timeout(Duration::from_secs(3))
        .register::<through_the_outage>()
        .build()
        .unwrap();
    for n in 0..TASKS {
        through_the_outage::delay(&app, n).await.unwrap();
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

    server.stop();
    assert!(
        survived() < TASKS as usize,
        "everything ran before the outage"
    );
    let started = tokio::time::Instant::now();
    let error = through_the_outage::delay(&app, 1_000).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "delay hung for {:?}",
        started.elapsed()
    );
    eprintln!("delay during the outage: {error}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await;

    eventually(
        Duration::from_secs(90),
        "every task enqueued before the outage",
        || async { survived() == TASKS as usize },
    )
    .await;
    running.stop().await;
    let seen = SURVIVED.ids();
    assert_eq!(seen, (0..TASKS).collect::<HashSet<_>>());
}

static RELOADED: RunLog = RunLog::new();

#[celeriac::task(name = "through_the_reload")]
async fn through_the_reload(n: u32) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    RELOADED.record(n);
}

/// Redis answers `LOADING` for seconds while it reads a large dataset back after a restart. Workers
/// used to exit for good on it ("cannot consume queues: … BusyLoading"); they must ride it out like
/// any outage, and `delay` must fail transiently, not permanently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_producers_ride_out_a_redis_reloading_its_data() {
    if skipped("redis") {
        return;
    }
    let mut server = PrivateRedis::new(Persistence::Snapshot).await;
    // Enough data that loading it takes a few seconds.
    let mut conn = server.connection().await;
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(3_000_000)
        .arg("filler")
        .arg(64)
        .query_async::<()>(&mut conn)
        .await
        .expect("DEBUG POPULATE");
    let broker = RedisBroker::builder(&server.url())
        .visibility_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let app = App::builder()
        .broker(broker)
        .enqueue_timeout(Duration::from_secs(2))
        .register::<through_the_reload>()
        .build()
        .unwrap();
    let mut expected: HashSet<u32> = HashSet::new();
    for n in 0..100 {
        through_the_reload::delay(&app, n).await.unwrap();
        expected.insert(n);
    }
    let worker = app
        .worker()
        .concurrency(2)
        .grace_period(Duration::from_secs(5))
        .build()
        .unwrap();
    let running = BackgroundWorker::start(worker);
    eventually(Duration::from_secs(20), "some tasks to run", || async {
        RELOADED.count() >= 3
    })
    .await;

    // Stop with a snapshot (the queue in it), start again: the server loads for seconds.
    let _ = redis::cmd("SHUTDOWN")
        .arg("SAVE")
        .query_async::<()>(&mut conn)
        .await;
    if let Some(mut child) = server.child.take() {
        let _ = child.wait();
    }
    server.start_again();
    // A producer keeps sending through the restart; what it could not send it sends again.
    let mut saw_loading = false;
    let mut transient_errors = 0;
    for n in 1_000..1_060 {
        loop {
            match through_the_reload::delay(&app, n).await {
                Ok(_) => break,
                Err(celeriac::EnqueueError::Broker { source, .. }) => {
                    assert!(source.is_transient(), "a permanent error: {source}");
                    saw_loading |= celeriac::error::Report(&source)
                        .to_string()
                        .contains("LOADING");
                    transient_errors += 1;
                }
                Err(error) => eprintln!("delay during the reload: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        expected.insert(n);
    }
    eprintln!("delay failed transiently {transient_errors} times during the restart");
    assert!(
        saw_loading,
        "the server never answered LOADING: the test did not exercise a reload"
    );
    eventually(Duration::from_secs(90), "every task sent to run", || {
        let expected = expected.clone();
        async move { RELOADED.ids().is_superset(&expected) }
    })
    .await;
    // The worker never gave up: it stops now, gracefully, with a report rather than an error.
    let report = running.stop().await;
    assert!(report.succeeded >= expected.len() as u64, "{report:?}");
}
