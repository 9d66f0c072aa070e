//! Unique-task scenarios every coordination store must pass, run against each by `tests/unique.rs`:
//! in memory, Redis (the broker's own), and RabbitMQ with a Redis store given by URL.

use std::collections::HashMap;
use std::time::Duration;

use celeriac::{AppBuilder, EnqueueError, TaskId};

use crate::harness::{BackgroundWorker, eventually};

/// Unique per (`run`, `key`) for a minute. `run` keeps test runs apart: claims outlive a run.
#[celeriac::task(name = "uq_send", unique_for = "60s", unique_key = ["run", "key"])]
pub async fn send(run: String, key: u32, attempt: u32) {
    let _ = (run, key, attempt);
}

/// Unique for a short window, keyed by all its arguments.
#[celeriac::task(name = "uq_short", unique_for = "300ms")]
pub async fn short(run: String, key: u32) {
    let _ = (run, key);
}

/// Unique until it has run; fails for good (no retries) when `fail` is set.
#[celeriac::task(
    name = "uq_until_run",
    unique_for = "60s",
    unique_key = "run",
    unique_until = "executed",
    max_retries = 0
)]
pub async fn until_run(run: String, fail: bool) -> Result<(), String> {
    let _ = run;
    if fail {
        return Err("failing on purpose".to_owned());
    }
    Ok(())
}

/// Producers sending at once, each through an app of its own.
pub const PRODUCERS: u32 = 16;
/// Sends per producer.
pub const ATTEMPTS: u32 = 1_000;
/// Distinct keys the sends spread over.
pub const KEYS: u32 = 50;

/// `PRODUCERS` apps built by `make`, each sending `ATTEMPTS` tasks over `KEYS` keys at once:
/// exactly one send per key goes through, every other one is a `Duplicate` naming it, and the
/// queue holds one message per key.
pub async fn one_send_per_key(make: impl Fn() -> AppBuilder, queue: &str) {
    let run = uuid::Uuid::new_v4().to_string();
    let producers = (0..PRODUCERS).map(|producer| {
        let app = make().register::<send>().build().expect("the app builds");
        let run = run.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut duplicates = Vec::new();
            for attempt in 0..ATTEMPTS {
                let key = (attempt + producer * 7) % KEYS;
                match send::delay(&app, run.clone(), key, attempt).await {
                    Ok(result) => sent.push((key, result.id())),
                    Err(EnqueueError::Duplicate(duplicate)) => {
                        assert!(duplicate.retry_after <= Duration::from_secs(60));
                        duplicates.push((key, duplicate.existing));
                    }
                    Err(other) => panic!("send {attempt} of producer {producer} failed: {other}"),
                }
            }
            (sent, duplicates)
        })
    });
    let mut owners: HashMap<u32, TaskId> = HashMap::new();
    let mut all_duplicates = Vec::new();
    for outcome in futures::future::join_all(producers).await {
        let (sent, duplicates) = outcome.expect("a producer panicked");
        for (key, id) in sent {
            assert!(
                owners.insert(key, id).is_none(),
                "key {key} was sent twice within its window"
            );
        }
        all_duplicates.extend(duplicates);
    }
    assert_eq!(owners.len(), KEYS as usize, "one send per key went through");
    assert_eq!(
        all_duplicates.len(),
        (PRODUCERS * ATTEMPTS - KEYS) as usize,
        "every other send was a duplicate"
    );
    for (key, existing) in all_duplicates {
        assert_eq!(
            Some(&existing),
            owners.get(&key),
            "a duplicate of key {key} names the task that holds it"
        );
    }
    let app = make().build().expect("the app builds");
    assert_eq!(
        app.broker().len(queue).await.expect("the queue's length"),
        u64::from(KEYS),
        "the queue holds one message per key"
    );
}

/// A key is free again once its window has passed (a real wait: the store's clock is its own).
pub async fn free_after_the_window(builder: AppBuilder) {
    let app = builder.register::<short>().build().expect("the app builds");
    let run = uuid::Uuid::new_v4().to_string();
    let first = short::delay(&app, run.clone(), 1)
        .await
        .expect("the first send");
    let retry_after = match short::delay(&app, run.clone(), 1).await {
        Err(EnqueueError::Duplicate(duplicate)) => {
            assert_eq!(duplicate.existing, first.id());
            assert!(duplicate.retry_after <= Duration::from_millis(300));
            duplicate.retry_after
        }
        other => panic!("expected a duplicate, got {other:?}"),
    };
    // Other arguments are another key.
    short::delay(&app, run.clone(), 2)
        .await
        .expect("another key is free");
    tokio::time::sleep(retry_after + Duration::from_millis(100)).await;
    short::delay(&app, run, 1)
        .await
        .expect("the key is free once its window passed");
}

/// A key held until the task has run is held while it waits in the queue, and free once a worker
/// ran it — whether it succeeded or failed for good.
pub async fn free_once_run(builder: impl Fn() -> AppBuilder) {
    for fail in [false, true] {
        let app = builder()
            .register::<until_run>()
            .build()
            .expect("the app builds");
        let run = uuid::Uuid::new_v4().to_string();
        until_run::delay(&app, run.clone(), fail)
            .await
            .expect("the first send");
        assert!(
            matches!(
                until_run::delay(&app, run.clone(), fail).await,
                Err(EnqueueError::Duplicate(_))
            ),
            "held while the task waits"
        );
        let worker = BackgroundWorker::start(app.worker().build().expect("the worker builds"));
        let what = format!("the key to be free once the task ran (failing: {fail})");
        eventually(Duration::from_secs(20), &what, || {
            let (app, run) = (app.clone(), run.clone());
            async move { until_run::delay(&app, run, fail).await.is_ok() }
        })
        .await;
        worker.stop().await;
    }
}

/// Unique tasks cannot be sent in a batch: each send must learn whether it was a duplicate.
pub async fn batches_are_refused(builder: AppBuilder) {
    let app = builder.register::<send>().build().expect("the app builds");
    let refused = app
        .delay_batch::<send>([("run".to_owned(), 1, 1)])
        .await
        .expect_err("a batch of a unique task is refused");
    assert!(matches!(refused, EnqueueError::InvalidOptions { .. }));
}
