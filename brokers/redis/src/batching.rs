//! Batching of requests from many callers into few Redis round trips: a lone request goes at once;
//! under load, requests that arrive while batches are in flight form the next one. Each caller
//! still waits for its own answer, which its request carries a way to send.

use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

/// Starts a task that hands `handle` batches of up to `max_batch` requests, with up to
/// `max_in_flight` batches awaiting their replies at once (the connection pipelines them, so a
/// request never queues behind a whole round trip). It ends when every sender is gone.
pub(crate) fn start<R, F, Fut>(
    max_batch: usize,
    max_in_flight: usize,
    handle: F,
) -> mpsc::UnboundedSender<R>
where
    R: Send + 'static,
    F: Fn(Vec<R>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, mut requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut in_flight = FuturesUnordered::new();
        let mut batch = Vec::with_capacity(max_batch);
        loop {
            tokio::select! {
                received = requests.recv_many(&mut batch, max_batch), if in_flight.len() < max_in_flight => {
                    if received == 0 {
                        break;
                    }
                    in_flight.push(handle(std::mem::take(&mut batch)));
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.next().await.is_some() {}
    });
    sender
}
