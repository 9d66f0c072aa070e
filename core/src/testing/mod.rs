//! Testing tools (feature `test-util`): a harness that runs an app's tasks to completion, and the
//! broker contract kit.
//!
//! # Testing tasks
//!
//! [`run_until_idle`] runs a worker until every queue is empty, retries included, and returns its
//! report: with the in-memory broker and tokio's paused clock, a test sends tasks with `delay` and
//! asserts what the worker decided (succeeded, retried, dead-lettered) in no real time.
//!
//! # The broker contract kit
//!
//! [`contract`] holds one `pub async fn` per rule of the at-least-once delivery contract documented on
//! [`Broker`], and [`broker_contract_tests!`](crate::broker_contract_tests) turns them
//! into one `#[test]` each for a broker factory. celeriac's own brokers — in memory, Redis and RabbitMQ —
//! run the very same suite through this kit, as a third-party broker does:
//!
//! ```
//! # #![allow(dead_code)] // The generated `#[test]`s are not built in a doctest.
//! use std::sync::Arc;
//! use celeriac::{Broker, MemoryBroker};
//!
//! // An async fn returning `Arc<dyn Broker>` (or `Option<Arc<dyn Broker>>`, where `None` skips).
//! async fn my_broker() -> Arc<dyn Broker> {
//!     Arc::new(MemoryBroker::new())
//! }
//!
//! celeriac::broker_contract_tests!(my_broker);
//! # fn main() {}
//! ```
//!
//! Cases read [`Broker::capabilities`]: where a broker does not claim a
//! capability (FIFO order, priorities, delays, statistics, dead letters), the case checks that asking
//! for it is refused with [`BrokerError::Unsupported`](crate::BrokerError::Unsupported) instead of
//! being silently ignored — so every case asserts something on every broker.
//!
//! Add `celeriac = { version = "…", features = ["test-util"] }` under `[dev-dependencies]`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed expectation is a failed test.

pub mod contract;
mod idle;

pub use self::idle::run_until_idle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::Broker;

/// A queue name no other test uses, so tests run in parallel against one shared server.
///
/// ```
/// let queue = celeriac::testing::unique_queue("my-case");
/// assert!(queue.starts_with("celeriac-test.my-case."));
/// assert_ne!(queue, celeriac::testing::unique_queue("my-case"));
/// ```
pub fn unique_queue(case: &str) -> String {
    format!("celeriac-test.{case}.{}", uuid::Uuid::new_v4().simple())
}

/// Waits for `future`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` every 10 ms until it returns true, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(limit, what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// What a contract-test factory may return: `Arc<dyn Broker>`, or `Option<Arc<dyn Broker>>` where
/// `None` skips (say why on stderr).
pub trait IntoTestBroker {
    /// The broker to test, or `None` to skip.
    fn into_test_broker(self) -> Option<Arc<dyn Broker>>;
}

impl IntoTestBroker for Arc<dyn Broker> {
    fn into_test_broker(self) -> Option<Arc<dyn Broker>> {
        Some(self)
    }
}

impl IntoTestBroker for Option<Arc<dyn Broker>> {
    fn into_test_broker(self) -> Option<Arc<dyn Broker>> {
        self
    }
}

/// Runs one contract case on a fresh multi-threaded runtime (so the generated tests need no tokio
/// dependency of their own): the broker from `factory`, a [`unique_queue`] named after `name`.
/// [`broker_contract_tests!`](crate::broker_contract_tests) calls it once per case; call it yourself
/// to run a single case in a harness of your own.
///
/// ```
/// use std::sync::Arc;
/// use celeriac::{Broker, MemoryBroker};
/// use celeriac::testing::{contract, run_case};
///
/// async fn memory() -> Arc<dyn Broker> {
///     Arc::new(MemoryBroker::new())
/// }
///
/// run_case(memory, "ack", |broker, queue| async move {
///     contract::publish_then_consume_then_ack(broker, &queue).await
/// });
/// ```
pub fn run_case<F, Fut, B, C, CFut>(factory: F, name: &str, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = B>,
    B: IntoTestBroker,
    C: FnOnce(Arc<dyn Broker>, String) -> CFut,
    CFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the contract case");
    runtime.block_on(async {
        let Some(broker) = factory().await.into_test_broker() else {
            eprintln!("SKIPPED: contract case {name} (the factory returned no broker)");
            return;
        };
        case(broker, unique_queue(name)).await;
    });
}

/// Generates one `#[test]` per case of the broker contract, each on a fresh broker from `$factory`
/// (an async fn returning `Arc<dyn Broker>` or `Option<Arc<dyn Broker>>`; `None` skips) and a uniquely named queue. See [`testing`](crate::testing).
#[macro_export]
macro_rules! broker_contract_tests {
    ($factory:path) => {
        $crate::broker_contract_tests!(@cases $factory;
            publish_then_consume_then_ack,
            largest_default_message_arrives_intact,
            order_is_fifo_within_a_queue,
            publish_batch_delivers_every_message,
            one_consumer_serves_several_queues,
            delayed_message_waits_for_its_time,
            priorities_are_honoured_or_refused,
            len_counts_ready_and_delayed_not_unacked,
            requeue_delivers_again_marked_redelivered,
            dropped_delivery_is_delivered_again,
            dropped_stream_and_delivery_go_to_the_next_consumer,
            delivery_settles_after_its_stream_is_dropped,
            settling_out_of_order_settles_each_delivery_once,
            dead_letter_keeps_the_message_and_reason,
            requeue_dead_letters_replays_each_once,
            purge_removes_waiting_messages,
            purge_leaves_deliveries_in_flight,
            purge_dead_letters_empties_them,
            prefetch_bounds_unsettled_deliveries,
            competing_consumers_each_message_once,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::run_case($factory, stringify!($case), |broker, queue| async move {
                    $crate::testing::contract::$case(broker, &queue).await
                });
            }
        )*
    };
}
