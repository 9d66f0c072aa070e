//! The broker contract suite and helpers shared by celeriac's integration tests.
//!
//! [`contract`] holds one `pub async fn` per rule of the at-least-once delivery contract documented on
//! [`celeriac::broker`]. [`broker_contract_tests!`] turns them into one `#[tokio::test]` each for a
//! broker factory, so the in-memory, Redis and RabbitMQ brokers all run the very same suite:
//!
//! ```
//! async fn memory() -> Option<std::sync::Arc<dyn celeriac::Broker>> {
//!     Some(std::sync::Arc::new(celeriac::MemoryBroker::new()))
//! }
//! celeriac_tests::broker_contract_tests!(memory);
//! # fn main() {}
//! ```

pub mod contract;
pub mod harness;
pub mod hostile;
pub mod raw_amqp;
pub mod scenarios;
pub mod tls;

/// Generates one test per contract case, each on a fresh broker from `$factory` (an async fn returning
/// `Option<Arc<dyn Broker>>`; `None` means the broker was explicitly skipped) and a uniquely named queue.
/// `broker_contract_tests!(factory, without_order)` leaves out FIFO order (for sharded queues).
#[macro_export]
macro_rules! broker_contract_tests {
    ($factory:path) => {
        $crate::broker_contract_tests!($factory, without_order);
        $crate::broker_contract_tests!(@cases $factory; order_is_fifo_within_a_queue);
    };
    // Every case but FIFO order, for brokers that spread a queue over shards.
    ($factory:path, without_order) => {
        $crate::broker_contract_tests!(@cases $factory;
            publish_then_consume_then_ack,
            largest_default_message_arrives_intact,
            publish_batch_delivers_every_message,
            one_consumer_serves_several_queues,
            delayed_message_waits_for_its_time,
            len_counts_ready_and_delayed_not_unacked,
            requeue_delivers_again_marked_redelivered,
            dropped_delivery_is_delivered_again,
            dropped_stream_and_delivery_go_to_the_next_consumer,
            delivery_settles_after_its_stream_is_dropped,
            settling_out_of_order_settles_each_delivery_once,
            dead_letter_keeps_the_message_and_reason,
            purge_removes_waiting_messages,
            prefetch_bounds_unsettled_deliveries,
            competing_consumers_each_message_once,
            empty_queue_names_are_refused
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(broker) = $factory().await else { return };
                let queue = $crate::harness::unique_queue(stringify!($case));
                $crate::contract::$case(broker, &queue).await;
            }
        )*
    };
}

/// The user guide (`docs/guide.md`), included so its examples are compiled and run as doc tests.
#[doc = include_str!("../../docs/guide.md")]
pub mod guide {}
