//! Brokers: where tasks wait between [`App::delay`](crate::App::delay) and a worker.
//!
//! The [`Broker`] trait and its types come from the `celeriac-core` crate, re-exported here; its
//! documentation states the at-least-once delivery contract every broker keeps. [`MemoryBroker`] is
//! the embedded broker; with the features `redis` and `amqp`, `celeriac::redis` and
//! `celeriac::amqp` hold the others, and [`AppBuilder::broker_url`](crate::AppBuilder::broker_url)
//! picks one by URL.
//!
//! Writing a broker? Implement [`Broker`] and [`Acknowledger`], and run the contract kit of
//! `celeriac::testing` (feature `test-util`) against it.

#[cfg(any(feature = "cli", feature = "dashboard"))]
pub(crate) mod letter;
mod memory;

#[doc(inline)]
pub use celeriac_core::{
    Acknowledger, Broker, BrokerError, Capabilities, ConsumeOptions, DEFAULT_MAX_MESSAGE_BYTES,
    DeadLetter, Delivery, DeliveryStream, Outgoing, PrefetchSlot, PrefetchWindow, QueueStats,
    RedactedUrl, validate_queue, validate_queues,
};

pub use self::memory::MemoryBroker;
