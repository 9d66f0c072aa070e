//! Electing one leader among processes: the beat's leader, which alone sends periodic tasks.
//!
//! A beat elects through the app's coordination store ([`StoreElection`]: Redis, or this
//! process's memory) or, for a RabbitMQ deployment without one, through a single-active-consumer
//! queue (`celeriac::amqp::AmqpElection`, feature `amqp`).

pub use celeriac_core::election::{Election, StoreElection, Term};
