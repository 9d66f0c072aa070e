//! Helpers for tests: unique queue names, waiting with a deadline.

use std::future::Future;
use std::time::Duration;

/// A queue name no other test uses, so tests run in parallel against one shared server.
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
