//! Helpers shared by celeriac's integration tests. The broker contract suite itself is the published
//! kit in `celeriac::testing` (feature `test-util`), which `tests/memory.rs`, `tests/redis.rs` and
//! `tests/amqp.rs` run exactly as a third-party broker author would.

pub mod beat;
pub mod browser;
pub mod cli;
pub mod harness;
pub mod hostile;
pub mod python_celery;
pub mod rabbit_cluster;
pub mod rate_limits;
pub mod raw_amqp;
pub mod redis_cluster;
pub mod redis_sentinel;
mod redis_server;
pub mod results;
pub mod scenarios;
pub mod tls;
pub mod unique;
pub mod workflows;
