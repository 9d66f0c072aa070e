//! Unique tasks on every coordination store: in memory, in the Redis broker's own Redis, and with
//! RabbitMQ through a Redis store given by URL (127.0.0.1, or `CELERIAC_REDIS_URL` /
//! `CELERIAC_AMQP_URL`).

use std::time::Duration;

use celeriac::{App, AppBuilder, BuildError, EnqueueError};
use celeriac_tests::harness::{amqp_url, redis_connection, redis_url, skipped, unique_queue};
use celeriac_tests::unique;

fn memory(queue: &str) -> AppBuilder {
    App::builder()
        .broker_url(format!("memory://{queue}"))
        .default_queue(queue)
}

fn redis(queue: &str) -> Option<AppBuilder> {
    (!skipped("redis")).then(|| App::builder().broker_url(redis_url()).default_queue(queue))
}

fn rabbitmq(queue: &str) -> Option<AppBuilder> {
    (!skipped("redis") && !skipped("amqp")).then(|| {
        App::builder()
            .broker_url(amqp_url())
            .coordination_url(redis_url())
            .default_queue(queue)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_one_send_per_key() {
    let queue = unique_queue("uq");
    unique::one_send_per_key(|| memory(&queue), &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_send_per_key() {
    let queue = unique_queue("uq");
    if redis(&queue).is_none() {
        return;
    }
    unique::one_send_per_key(|| redis(&queue).expect("not skipped"), &queue).await;
    purge(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_one_send_per_key() {
    let queue = unique_queue("uq");
    if rabbitmq(&queue).is_none() {
        return;
    }
    unique::one_send_per_key(|| rabbitmq(&queue).expect("not skipped"), &queue).await;
    purge(&queue).await;
}

/// Purges `queue` on whichever broker holds it (the concurrency tests leave 50 messages).
async fn purge(queue: &str) {
    for builder in [redis(queue), rabbitmq(queue)].into_iter().flatten() {
        let app = builder.build().expect("the app builds");
        let _ = app.broker().purge(queue).await;
    }
}

#[tokio::test(start_paused = true)]
async fn memory_frees_a_key_when_its_window_ends() {
    // The paused clock: the window passes without waiting.
    unique::free_after_the_window(memory(&unique_queue("uq"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frees_a_key_when_its_window_ends() {
    let Some(builder) = redis(&unique_queue("uq")) else {
        return;
    };
    unique::free_after_the_window(builder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_frees_a_key_once_the_task_ran() {
    let queue = unique_queue("uq");
    unique::free_once_run(|| memory(&queue)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frees_a_key_once_the_task_ran() {
    let queue = unique_queue("uq");
    if redis(&queue).is_none() {
        return;
    }
    unique::free_once_run(|| redis(&queue).expect("not skipped")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_frees_a_key_once_the_task_ran() {
    let queue = unique_queue("uq");
    if rabbitmq(&queue).is_none() {
        return;
    }
    unique::free_once_run(|| rabbitmq(&queue).expect("not skipped")).await;
}

#[tokio::test]
async fn a_batch_of_a_unique_task_is_refused() {
    unique::batches_are_refused(memory(&unique_queue("uq"))).await;
}

#[test]
fn rabbitmq_without_a_store_refuses_unique_tasks_at_build_time() {
    let error = App::builder()
        .broker_url("amqp://guest:secret@127.0.0.1:5672/%2f")
        .register::<unique::send>()
        .build()
        .expect_err("no coordination store");
    assert!(matches!(
        error,
        BuildError::NoCoordinationStore {
            task: "uq_send",
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains("coordination_url"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn a_bad_coordination_url_is_refused_without_its_password() {
    let error = App::builder()
        .broker_url("memory://")
        .coordination_url("amqp://guest:secret@127.0.0.1:5672/%2f")
        .build()
        .expect_err("RabbitMQ holds no claims");
    assert!(matches!(error, BuildError::CoordinationUrl { .. }));
    assert!(!error.to_string().contains("secret"), "{error}");
}

/// A claim whose holder is not a task id (written by something else) is a clear error, not a
/// panic, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_foreign_claim_is_an_error_and_nothing_is_sent() {
    let queue = unique_queue("uq");
    let Some(builder) = redis(&queue) else { return };
    let app = builder
        .register::<unique::send>()
        .build()
        .expect("the app builds");
    let run = uuid::Uuid::new_v4().to_string();
    let key = celeriac::task::ArgsKey::of(&(&run, &7u32)).expect("a key");
    let claim = format!("celeriac:unique:uq_send:{key}");
    let mut redis = redis_connection().await;
    let _: () = redis::cmd("SET")
        .arg(&claim)
        .arg("not a task id")
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await
        .expect("SET");
    let error = unique::send::delay(&app, run, 7, 0)
        .await
        .expect_err("a foreign claim");
    assert!(
        matches!(error, EnqueueError::Coordination { .. }),
        "{error}"
    );
    let report = celeriac::error::Report(&error).to_string();
    assert!(report.contains("not a task id"), "{report}");
    assert_eq!(app.broker().len(&queue).await.expect("len"), 0);
    let _: () = redis::cmd("DEL")
        .arg(&claim)
        .query_async(&mut redis)
        .await
        .expect("DEL");
}

/// Redis down: the send fails with a coordination error within the enqueue timeout; nothing is
/// sent, nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_fails_the_send_clearly() {
    let app = App::builder()
        .broker_url(format!("memory://{}", unique_queue("uq")))
        .coordination_url("redis://127.0.0.1:1/0")
        .enqueue_timeout(Duration::from_secs(2))
        .register::<unique::send>()
        .build()
        .expect("the app builds");
    let error = unique::send::delay(&app, "run".into(), 1, 1)
        .await
        .expect_err("no store");
    assert!(
        matches!(error, EnqueueError::Coordination { .. }),
        "{error}"
    );
    assert_eq!(app.broker().len(app.default_queue()).await.expect("len"), 0);
}
