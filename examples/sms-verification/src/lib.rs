//! The SMS verification-code service — celeriac's flagship example, and the Rust version of a Django +
//! Celery shop's flow: the web request stores a code and enqueues `ccp_send_sms_code`, answering at
//! once; a worker drives a slow, flaky SMS gateway with retries and back-off.
//!
//! Run with `cargo run -p sms-verification` (everything in one process on the embedded broker), or as
//! separate processes: `sms-verification web --broker redis://127.0.0.1:6379` and
//! `sms-verification worker --broker redis://127.0.0.1:6379` (or set `CELERIAC_BROKER_URL`).

pub mod gateway;
pub mod http;
pub mod mobile;
pub mod store;
pub mod tasks;
