//! Cluster-wide rate-limit scenarios, run against each coordination store by `tests/rate_limits.rs`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use celeriac::AppBuilder;

use crate::harness::{BackgroundWorker, eventually};

/// When each labelled run happened, by label (a test run's id, plus a key).
fn runs() -> &'static Mutex<HashMap<String, Vec<Instant>>> {
    static RUNS: OnceLock<Mutex<HashMap<String, Vec<Instant>>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn record(label: String) {
    runs()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(label)
        .or_default()
        .push(Instant::now());
}

/// The times of the runs labelled `label`, in order.
pub fn runs_of(label: &str) -> Vec<Instant> {
    let mut times = runs()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(label)
        .cloned()
        .unwrap_or_default();
    times.sort();
    times
}

/// 50 runs a second, across every worker.
#[celeriac::task(name = "rl_cluster", rate_limit = "50/s", rate_limit_scope = "cluster")]
pub async fn cluster_limited(run: String) {
    record(run);
}

/// Five runs an hour per mobile number, across every worker.
#[celeriac::task(name = "rl_keyed", rate_limit = "5/h", rate_limit_key = "mobile")]
pub async fn per_mobile(run: String, mobile: String, attempt: u32) {
    let _ = attempt;
    record(format!("{run}:{mobile}"));
}

/// One run a minute, across every worker.
#[celeriac::task(name = "rl_slow", rate_limit = "1/m", rate_limit_scope = "cluster")]
pub async fn slow(run: String) {
    record(format!("{run}:slow"));
}

/// No limit.
#[celeriac::task(name = "rl_free")]
pub async fn free(run: String) {
    record(format!("{run}:free"));
}

/// Runs sent at once.
pub const TASKS: u32 = 300;

/// `workers` workers, each of its own app built by `make`, drain `TASKS` tasks limited to 50/s
/// across all of them: the runs are spread over `TASKS / 50` seconds, never faster.
pub async fn workers_share_one_budget(make: impl Fn() -> AppBuilder, workers: usize) {
    let run = uuid::Uuid::new_v4().to_string();
    let apps: Vec<_> = (0..workers)
        .map(|_| {
            make()
                .register::<cluster_limited>()
                .build()
                .expect("the app builds")
        })
        .collect();
    for _ in 0..TASKS {
        cluster_limited::delay(&apps[0], run.clone())
            .await
            .expect("sent");
    }
    let running: Vec<_> = apps
        .iter()
        .map(|app| {
            BackgroundWorker::start(app.worker().concurrency(8).build().expect("the worker"))
        })
        .collect();
    eventually(Duration::from_secs(30), "every limited task to run", || {
        let run = run.clone();
        async move { runs_of(&run).len() >= TASKS as usize }
    })
    .await;
    for worker in running {
        worker.stop().await;
    }
    let times = runs_of(&run);
    assert_eq!(times.len(), TASKS as usize, "each task ran once");
    let spread = times[times.len() - 1] - times[0];
    // 300 runs at 50/s: 299 intervals of 20 ms, 5.98 s. A little less when the first slots are
    // taken before the clock of this process sees them; never much less.
    let least = Duration::from_millis(20) * (TASKS - 1) * 9 / 10;
    assert!(
        spread >= least,
        "{TASKS} runs took {spread:?}: faster than 50/s (at least {least:?})"
    );
    assert!(
        spread <= Duration::from_secs(20),
        "{TASKS} runs took {spread:?}: the limit held them far longer than 50/s"
    );
    // No second holds many more than its 50 runs.
    for (index, start) in times.iter().enumerate() {
        let within = times[index..]
            .iter()
            .take_while(|time| **time - *start < Duration::from_secs(1))
            .count();
        assert!(
            within <= 60,
            "{within} runs within one second from run {index}"
        );
    }
}

/// A keyed limit holds per key and never slows another key: with five runs an hour per number,
/// three tasks for each of two numbers run one each at once and wait for the others' slots.
pub async fn keys_have_their_own_budgets(builder: AppBuilder, queue: &str) {
    let app = builder
        .register::<per_mobile>()
        .build()
        .expect("the app builds");
    let run = uuid::Uuid::new_v4().to_string();
    for mobile in ["13800138000", "13900139000"] {
        for attempt in 0..3 {
            per_mobile::delay(&app, run.clone(), mobile.into(), attempt)
                .await
                .expect("sent");
        }
    }
    let worker = BackgroundWorker::start(app.worker().build().expect("the worker"));
    eventually(
        Duration::from_secs(10),
        "one run per number and the rest deferred",
        || {
            let (app, run) = (app.clone(), run.clone());
            async move {
                let stats = app.broker().stats(queue).await.expect("stats");
                runs_of(&format!("{run}:13800138000")).len() == 1
                    && runs_of(&format!("{run}:13900139000")).len() == 1
                    && stats.delayed == 4
            }
        },
    )
    .await;
    worker.stop().await;
    let _ = app.broker().purge(queue).await;
}

/// A task waiting for its slot holds no lane: a worker with one lane runs unlimited tasks at full
/// speed while limited ones wait in the broker.
pub async fn limited_tasks_never_hold_a_lane(builder: AppBuilder, queue: &str) {
    let app = builder
        .register::<slow>()
        .register::<free>()
        .build()
        .expect("the app builds");
    let run = uuid::Uuid::new_v4().to_string();
    for _ in 0..10 {
        slow::delay(&app, run.clone()).await.expect("sent");
    }
    for _ in 0..50 {
        free::delay(&app, run.clone()).await.expect("sent");
    }
    let worker = BackgroundWorker::start(app.worker().concurrency(1).build().expect("the worker"));
    eventually(
        Duration::from_secs(10),
        "every unlimited task to run beside the limited ones",
        || {
            let run = run.clone();
            async move { runs_of(&format!("{run}:free")).len() == 50 }
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the limited tasks to wait in the broker",
        || {
            let app = app.clone();
            async move { app.broker().stats(queue).await.expect("stats").delayed == 9 }
        },
    )
    .await;
    assert_eq!(runs_of(&format!("{run}:slow")).len(), 1, "one run a minute");
    worker.stop().await;
    let _ = app.broker().purge(queue).await;
}
