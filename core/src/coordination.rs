//! Coordination stores: claims shared by every producer and worker, for unique tasks.
//!
//! An app finds its store as it finds its result backend: the embedded broker's own
//! [`MemoryCoordination`], Redis at the broker's URL when the broker is Redis, or the one given to
//! [`AppBuilder::coordination_url`](crate::AppBuilder::coordination_url) — the way a RabbitMQ
//! deployment gets one, since RabbitMQ holds no claims.

pub use celeriac_core::coordination::{
    Claim, CoordinationStore, MAX_SET_MEMBERS, MemoryCoordination, Record,
};
