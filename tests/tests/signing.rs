//! Signed messages, end to end: a worker with keys runs only what a key it accepts signed, as it
//! was signed; everything else is dead-lettered with "signature mismatch" and never runs. Keys
//! rotate without stopping the queue, and a retried task is signed again. On the embedded broker
//! and on real Redis (the same bytes travel through the server).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use celeriac::broker::{Broker, Outgoing};
use celeriac::signing::SigningKey;
use celeriac::{App, MemoryBroker, State, TaskContext, TaskError};
use celeriac_tests::harness::{redis_url, skipped, unique_queue};

/// How many times `signed_add` ran.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicU64>);

#[celeriac::task(name = "signed_add", max_retries = 2)]
async fn signed_add(ctx: TaskContext, runs: State<Runs>, x: u64, y: u64) -> Result<u64, TaskError> {
    runs.0.0.fetch_add(1, Ordering::SeqCst);
    // Asks for one retry when x is odd: the retry is published, and signed, again.
    if x % 2 == 1 && ctx.retries() == 0 {
        return Err(TaskError::retry_after(Duration::from_millis(10)));
    }
    Ok(x + y)
}

fn key(id: &str, byte: u8) -> SigningKey {
    SigningKey::new(id, [byte; 32]).expect("a valid key")
}

/// An app on `broker` and `queue`, shaped by `keys`.
fn app<B: Broker + Clone>(
    (broker, results): (&B, Option<&str>),
    queue: &str,
    runs: &Runs,
    keys: impl FnOnce(celeriac::AppBuilder) -> celeriac::AppBuilder,
) -> App {
    let builder = App::builder().broker(broker.clone());
    let builder = match results {
        Some(url) => builder.result_backend_url(url),
        None => builder,
    };
    keys(
        builder
            .default_queue(queue)
            .state(runs.clone())
            .register::<signed_add>(),
    )
    .build()
    .expect("the app builds")
}

async fn scenario<B: Broker + Clone>(broker: B, results: Option<&str>, queue: &str) {
    let runs = Runs::default();
    let old = |b: celeriac::AppBuilder| b.sign_with(key("old", 1));
    let new = |b: celeriac::AppBuilder| b.sign_with(key("new", 2));
    let rotating = |b: celeriac::AppBuilder| {
        b.sign_with(key("new", 2))
            .accept_signatures_of(key("old", 1))
    };
    let unsigned = |b: celeriac::AppBuilder| b;
    let producer_old = app((&broker, results), queue, &runs, old);
    let producer_new = app((&broker, results), queue, &runs, new);
    let producer_unsigned = app((&broker, results), queue, &runs, unsigned);
    let impostor = app((&broker, results), queue, &runs, |b| {
        b.sign_with(key("new", 9))
    });

    // Signed by the old key, the new one, by no key, and by an impostor using the new key's name.
    let by_old = signed_add::delay(&producer_old, 1, 1).await.expect("sent");
    let by_new = signed_add::delay(&producer_new, 2, 2).await.expect("sent");
    signed_add::delay(&producer_unsigned, 100, 0)
        .await
        .expect("sent");
    signed_add::delay(&impostor, 200, 0).await.expect("sent");
    let stranger = app((&broker, results), queue, &runs, |b| {
        b.sign_with(key("stranger", 2))
    });
    signed_add::delay(&stranger, 300, 0).await.expect("sent");
    // A signed message changed on its way: the arguments' last byte.
    let tampered = {
        let probe = app((&broker, results), &format!("{queue}-probe"), &runs, new);
        signed_add::delay(&probe, 4, 4).await.expect("sent");
        let mut deliveries = broker
            .consume(&[format!("{queue}-probe")], Default::default())
            .await
            .expect("consume");
        let delivery = futures::StreamExt::next(&mut deliveries)
            .await
            .expect("a delivery")
            .expect("ok");
        let mut bytes = delivery.payload().to_vec();
        delivery.ack().await.expect("acked");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        bytes
    };
    broker
        .publish(Outgoing::new(queue, tampered))
        .await
        .expect("published");

    // A worker rotating keys runs what the old and the new key signed, and nothing else.
    let worker = app((&broker, results), queue, &runs, rotating);
    let report = celeriac::testing::run_until_idle(&worker)
        .await
        .expect("the worker runs");
    assert_eq!(
        (report.succeeded, report.retried, report.dead_lettered),
        (2, 1, 4)
    );
    // Three runs: the old key's task twice (it retried, re-signed by the worker's key), the new
    // key's once; the refused ones never ran.
    assert_eq!(runs.0.load(Ordering::SeqCst), 3);
    assert_eq!(by_old.get().await.expect("a result"), 2);
    assert_eq!(by_new.get().await.expect("a result"), 4);
    let letters = broker.dead_letters(queue, 10).await.expect("dead letters");
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter.reason.as_str())
        .collect();
    let count = |expected: &str| {
        reasons
            .iter()
            .filter(|reason| reason.contains(&format!("signature mismatch: {expected}")))
            .count()
    };
    // The impostor's (the new key's name, another secret) and the tampered one; the unsigned
    // one; the stranger's.
    assert_eq!(
        count("the message was changed after it was signed"),
        2,
        "{reasons:?}"
    );
    assert_eq!(count("the message is not signed"), 1, "{reasons:?}");
    assert_eq!(
        count("signed by key `stranger`, which this worker does not accept"),
        1,
        "{reasons:?}"
    );
    let _ = broker.purge_dead_letters(queue).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_with_keys_runs_only_what_they_signed_on_the_embedded_broker() {
    scenario(MemoryBroker::new(), None, "signed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_keys_runs_only_what_they_signed_on_redis() {
    if skipped("redis") {
        return;
    }
    let broker = celeriac::redis::RedisBroker::connect(&redis_url())
        .await
        .expect("Redis");
    let results = redis_url();
    scenario(broker, Some(&results), &unique_queue("signed")).await;
}

#[test]
fn an_app_in_celery_s_format_cannot_sign() {
    let built = App::builder()
        .broker_url("memory://")
        .celery_compat()
        .sign_with(key("k", 1))
        .build();
    let error = built
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(error.contains("cannot sign"), "{error}");
}
