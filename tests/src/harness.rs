//! Helpers for tests: unique queue names, waiting with a deadline.

use std::time::Duration;

pub use celeriac::testing::{eventually, unique_queue, within};

/// The Redis server the adapter tests use: `CELERIAC_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("CELERIAC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// Whether the user explicitly asked to skip the tests of `broker` (`CELERIAC_SKIP_BROKERS=redis,amqp`).
/// Refused under CI: there, a broker test never passes without its broker.
pub fn skipped(broker: &str) -> bool {
    let asked = std::env::var("CELERIAC_SKIP_BROKERS")
        .unwrap_or_default()
        .split(',')
        .any(|name| name.trim() == broker);
    if asked {
        assert!(
            std::env::var_os("CI").is_none(),
            "CELERIAC_SKIP_BROKERS={broker} is refused when CI is set: broker tests must run in CI"
        );
        eprintln!("SKIPPED: {broker} broker test (CELERIAC_SKIP_BROKERS)");
    }
    asked
}

/// A Redis broker for a test, with short timeouts so redelivery tests stay quick. Panics with an
/// actionable message when Redis is unreachable; returns `None` only when explicitly skipped.
pub async fn require_redis(
    configure: impl FnOnce(celeriac_redis::RedisBrokerBuilder) -> celeriac_redis::RedisBrokerBuilder,
) -> Option<celeriac_redis::RedisBroker> {
    if skipped("redis") {
        return None;
    }
    let url = redis_url();
    let builder = celeriac_redis::RedisBroker::builder(&url)
        .key_prefix("celeriac-test")
        .visibility_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5));
    match configure(builder).connect().await {
        Ok(broker) => Some(broker),
        Err(error) => panic!(
            "Redis is required by this test and is unreachable: {error}. Run `scripts/test.sh`, which \
             starts it, or set CELERIAC_REDIS_URL (CELERIAC_SKIP_BROKERS=redis skips, outside CI)."
        ),
    }
}

/// A broker on kombu's Redis layout (Python Celery's) for a test, under `global_keyprefix` (so
/// tests do not share `unacked`), with a short visibility timeout and restore interval. Panics when
/// Redis is unreachable; returns `None` only when explicitly skipped.
pub async fn require_kombu(
    global_keyprefix: &str,
    configure: impl FnOnce(celeriac_redis::KombuBrokerBuilder) -> celeriac_redis::KombuBrokerBuilder,
) -> Option<celeriac_redis::KombuBroker> {
    if skipped("redis") {
        return None;
    }
    let builder = celeriac_redis::KombuBroker::builder(&redis_url())
        .global_keyprefix(global_keyprefix)
        .visibility_timeout(Duration::from_secs(2))
        .restore_interval(Duration::from_millis(200))
        .operation_timeout(Duration::from_secs(5));
    match configure(builder).connect().await {
        Ok(broker) => Some(broker),
        Err(error) => panic!(
            "Redis is required by this test and is unreachable: {error}. Run `scripts/test.sh`, which \
             starts it, or set CELERIAC_REDIS_URL (CELERIAC_SKIP_BROKERS=redis skips, outside CI)."
        ),
    }
}

/// The Python interpreter of a virtualenv with Celery (`CELERIAC_PYTHON`, else the one
/// `scripts/test.sh` makes at `target/celery-interop-venv`). Panics under CI when there is none; outside
/// CI, says the test is skipped and returns `None`.
pub fn require_python_celery() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("CELERIAC_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/celery-interop-venv/bin/python")
        });
    let works = std::process::Command::new(&python)
        .args(["-c", "import celery, redis"])
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Python Celery is required under CI and {} cannot import it: run `scripts/test.sh`, which \
         makes the virtualenv, or set CELERIAC_PYTHON",
        python.display()
    );
    eprintln!(
        "SKIPPED: Python Celery interop test ({} cannot import celery; `scripts/test.sh` installs it)",
        python.display()
    );
    None
}

/// The folder of the interop tests' Python modules.
pub fn python_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The RabbitMQ server the adapter tests use: `CELERIAC_AMQP_URL`, or the local default.
pub fn amqp_url() -> String {
    std::env::var("CELERIAC_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// An app on the tests' RabbitMQ with the RPC result backend (results sent to the caller's reply
/// queue, kept five minutes), sending to `queue`; `None` only when RabbitMQ tests are skipped.
pub fn rpc_app(queue: &str) -> Option<celeriac::AppBuilder> {
    (!skipped("amqp")).then(|| {
        celeriac::App::builder()
            .broker_url(amqp_url())
            .result_backend_url("rpc://")
            .result_expires(Duration::from_secs(300))
            .default_queue(queue)
    })
}

/// A RabbitMQ broker for a test. Panics with an actionable message when RabbitMQ is unreachable;
/// returns `None` only when explicitly skipped.
pub async fn require_amqp(
    configure: impl FnOnce(celeriac_amqp::AmqpBrokerBuilder) -> celeriac_amqp::AmqpBrokerBuilder,
) -> Option<celeriac_amqp::AmqpBroker> {
    if skipped("amqp") {
        return None;
    }
    let builder =
        celeriac_amqp::AmqpBroker::builder(&amqp_url()).operation_timeout(Duration::from_secs(10));
    match configure(builder).connect().await {
        Ok(broker) => Some(broker),
        Err(error) => panic!(
            "RabbitMQ is required by this test and is unreachable: {error}. Run `scripts/test.sh`, which \
             starts it, or set CELERIAC_AMQP_URL (CELERIAC_SKIP_BROKERS=amqp skips, outside CI)."
        ),
    }
}

/// Starts the `celeriac-test-worker` helper binary (`bin`, from `env!("CARGO_BIN_EXE_…")`) on
/// `broker_url` and `queue`; it records each `record_run` task in Redis (see [`done_count`]).
pub fn worker_process(
    bin: &str,
    broker_url: &str,
    queue: &str,
    visibility_ms: u64,
    max_deliveries: u32,
    concurrency: usize,
) -> tokio::process::Child {
    tokio::process::Command::new(bin)
        .args([
            broker_url.to_owned(),
            queue.to_owned(),
            visibility_ms.to_string(),
            max_deliveries.to_string(),
            concurrency.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start celeriac-test-worker")
}

/// A plain connection to the tests' Redis, for looking at or writing keys directly.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the tests' Redis")
}

/// How many distinct `record_run` tasks of `queue` completed (a Redis set the helper worker fills).
pub async fn done_count(queue: &str) -> u64 {
    let mut conn = redis_connection().await;
    redis::cmd("SCARD")
        .arg(format!("celeriac-test-done:{queue}"))
        .query_async(&mut conn)
        .await
        .expect("SCARD")
}

/// How many runs of `record_run` tasks of `queue` completed, counting a task that completed twice
/// twice (a Redis counter the helper worker increments).
pub async fn completed_runs(queue: &str) -> u64 {
    let mut conn = redis_connection().await;
    redis::cmd("GET")
        .arg(format!("celeriac-test-runs:{queue}"))
        .query_async::<Option<u64>>(&mut conn)
        .await
        .expect("GET")
        .unwrap_or(0)
}

/// Stops a worker process gracefully (SIGTERM) and waits for it.
pub async fn stop_gracefully(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("a running process").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    within(Duration::from_secs(30), "the worker to stop", child.wait())
        .await
        .expect("wait for the worker")
}

/// A worker running in the background until [`stop`](Self::stop) — the pattern every worker test needs.
#[derive(Debug)]
pub struct BackgroundWorker {
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<celeriac::WorkerReport, celeriac::WorkerError>>,
}

impl BackgroundWorker {
    /// Starts `worker` on the current runtime.
    pub fn start(worker: celeriac::Worker) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(worker.run_until(async {
            let _ = stopped.await;
        }));
        Self { stop, running }
    }

    /// Waits for the worker to stop by itself (a remote-control shutdown, an error), without
    /// sending it the stop signal.
    pub async fn join(self) -> Result<celeriac::WorkerReport, celeriac::WorkerError> {
        let Self { stop, running } = self;
        let stopped = running.await.expect("the worker task panicked");
        drop(stop);
        stopped
    }

    /// Shuts the worker down gracefully and returns its report (failing the test after 30 s).
    pub async fn stop(self) -> celeriac::WorkerReport {
        let _ = self.stop.send(());
        within(Duration::from_secs(30), "the worker to stop", self.running)
            .await
            .expect("the worker task panicked")
            .expect("the worker failed")
    }
}

/// The reasons of up to 100 dead letters of `queue` on `app`'s broker, oldest first.
pub async fn dead_letter_reasons(app: &celeriac::App, queue: &str) -> Vec<String> {
    app.broker()
        .dead_letters(queue, 100)
        .await
        .expect("dead letters")
        .into_iter()
        .map(|dead| dead.reason)
        .collect()
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free local port")
}

/// The ids a test's task runs recorded, for tests that check no task was lost. Duplicate runs
/// count once.
///
/// ```
/// use celeriac_tests::harness::RunLog;
///
/// static RUNS: RunLog = RunLog::new();
/// RUNS.record(7);
/// RUNS.record(7);
/// assert_eq!(RUNS.count(), 1);
/// assert!(RUNS.ids().contains(&7));
/// ```
#[derive(Debug, Default)]
pub struct RunLog(std::sync::Mutex<Option<std::collections::HashSet<u32>>>);

impl RunLog {
    /// An empty log, usable in a `static`.
    pub const fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    fn ids_mut(&self) -> std::sync::MutexGuard<'_, Option<std::collections::HashSet<u32>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a run of task `id`.
    pub fn record(&self, id: u32) {
        self.ids_mut()
            .get_or_insert_with(Default::default)
            .insert(id);
    }

    /// How many distinct ids ran.
    pub fn count(&self) -> usize {
        self.ids_mut()
            .as_ref()
            .map_or(0, std::collections::HashSet::len)
    }

    /// The distinct ids that ran.
    pub fn ids(&self) -> std::collections::HashSet<u32> {
        self.ids_mut().clone().unwrap_or_default()
    }
}

/// Runs one task on `app`: sends it with `send` (a task recording `id` in `log`), runs a worker until
/// `log` holds `id` (30 s at most), and checks the worker counted exactly one success. What the
/// URL-configured app tests of each broker topology share.
pub async fn runs_one_task<F, Fut, T, E>(app: &celeriac::App, log: &RunLog, id: u32, send: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::IntoFuture<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    if let Err(error) = send().await {
        panic!("task {id} not sent: {error}");
    }
    let running = BackgroundWorker::start(app.worker().build().expect("a worker"));
    eventually(
        std::time::Duration::from_secs(30),
        "the task to run",
        || async { log.ids().contains(&id) },
    )
    .await;
    assert_eq!(running.stop().await.succeeded, 1);
}

/// A producer for failover tests: sends each id of `ids` with `send`, one at a time, sending an id
/// again (a new task, the same id) after a failure, so every id is confirmed once at least.
/// [`sending`](Self::sending) tells which id is being sent; [`finish`](Self::finish) waits for
/// the last and answers how many sends failed. Panics after `max_in_a_row` failures of one id.
#[derive(Debug)]
pub struct Producer {
    sending: std::sync::Arc<std::sync::atomic::AtomicU32>,
    task: tokio::task::JoinHandle<u32>,
}

impl Producer {
    /// Starts sending, pausing `pause` after each failed send.
    pub fn start<F, Fut, T, E>(
        ids: std::ops::Range<u32>,
        max_in_a_row: u32,
        pause: Duration,
        send: F,
    ) -> Self
    where
        F: Fn(u32) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, E>> + Send,
        T: Send,
        E: std::error::Error + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let sending = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(ids.start));
        let task = tokio::spawn({
            let sending = sending.clone();
            async move {
                let mut failed = 0_u32;
                for id in ids {
                    sending.store(id, Ordering::SeqCst);
                    let mut in_a_row = 0;
                    while let Err(error) = send(id).await {
                        failed += 1;
                        in_a_row += 1;
                        assert!(
                            in_a_row < max_in_a_row,
                            "sends keep failing: {}",
                            celeriac::error::Report(&error)
                        );
                        tokio::time::sleep(pause).await;
                    }
                }
                failed
            }
        });
        Self { sending, task }
    }

    /// The id being sent now (the last one once all are sent).
    pub fn sending(&self) -> u32 {
        self.sending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every id was sent; answers how many sends failed (and were sent again).
    pub async fn finish(self) -> u32 {
        self.task.await.expect("the producer did not panic")
    }
}
