//! Lanes: a worker's `concurrency` long-lived tasks, each running one task at a time.
//!
//! Lanes take deliveries from the fetch loop through a small channel instead of the loop spawning a
//! runtime task per delivery: no allocation, no large future moved into a new task, no semaphore per
//! run. A lane keeps the acks it sent but the broker has not confirmed yet and awaits them while it
//! runs its next tasks, so a broker round trip never holds a lane.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::process::{Stops, process, settle};
use crate::broker::Delivery;
use crate::metrics::{MetricsCache, TaskMetrics};

/// Runs deliveries from `handed` (as lane `index`) until the fetch loop closes it, then waits for its pending acks.
pub(super) async fn lane(
    shared: Arc<Shared>,
    index: usize,
    handed: async_channel::Receiver<Delivery>,
    stop_fetching: CancellationToken,
    stop_now: CancellationToken,
) {
    let mut metrics = LaneMetrics::default();
    let mut confirming = FuturesUnordered::new();
    loop {
        let delivery = tokio::select! {
            biased;
            Some(()) = confirming.next(), if !confirming.is_empty() => continue,
            received = handed.recv() => match received {
                Ok(delivery) => {
                    if let Some(control) = &shared.control {
                        control.waiting.taken(index);
                    }
                    delivery
                }
                Err(_) => break,
            },
        };
        if stop_fetching.is_cancelled() {
            // Fetched but never started when the shutdown began: back to the broker.
            let queue = delivery.shared_queue();
            settle("requeue", &queue, delivery.requeue()).await;
            continue;
        }
        // Panics in task code and in the user's layers are caught in the run path (`CatchPanic`),
        // the one place; handling a delivery runs no other user code.
        let stops = Stops {
            fetching: &stop_fetching,
            now: &stop_now,
        };
        if let Some(pending) = process(&shared, index, &mut metrics, delivery, stops).await {
            confirming.push(pending);
        }
    }
    while confirming.next().await.is_some() {}
}

/// The metric handles of the (task, queue) pairs a lane ran recently: found without a lock or a hash.
#[derive(Default)]
pub(super) struct LaneMetrics {
    recent: Vec<(&'static str, Arc<str>, Arc<TaskMetrics>)>,
}

impl LaneMetrics {
    /// Pairs remembered per lane; beyond that the shared cache answers.
    const CAPACITY: usize = 16;

    pub(super) fn get(
        &mut self,
        shared: &MetricsCache,
        task: &'static str,
        queue: &Arc<str>,
    ) -> Arc<TaskMetrics> {
        let known = self
            .recent
            .iter()
            .find(|(name, known_queue, _)| *name == task && **known_queue == **queue);
        if let Some((_, _, metrics)) = known {
            return metrics.clone();
        }
        let metrics = shared.get(task, queue);
        if self.recent.len() < Self::CAPACITY {
            self.recent.push((task, queue.clone(), metrics.clone()));
        }
        metrics
    }
}
