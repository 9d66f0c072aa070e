//! The broker contract suite on the in-memory broker, plus what only it promises (priorities).

use std::sync::Arc;

use bytes::Bytes;
use celeriac::MemoryBroker;
use celeriac::broker::{Broker, ConsumeOptions, Outgoing};
use futures::StreamExt;

async fn memory() -> Option<Arc<dyn Broker>> {
    Some(Arc::new(MemoryBroker::new()))
}

celeriac::broker_contract_tests!(memory);

#[tokio::test]
async fn higher_priority_is_delivered_first() {
    let broker = MemoryBroker::new();
    for (payload, priority) in [("low", 0), ("high", 9), ("mid", 5)] {
        broker
            .publish(Outgoing::new("q", Bytes::from_static(payload.as_bytes())).priority(priority))
            .await
            .unwrap();
    }
    let mut stream = broker
        .consume(&["q".to_owned()], ConsumeOptions::default())
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let delivery = stream.next().await.unwrap().unwrap();
        order.push(String::from_utf8(delivery.payload().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(order, ["high", "mid", "low"]);
}

#[tokio::test(start_paused = true)]
async fn delays_follow_the_paused_clock_exactly() {
    let broker = MemoryBroker::new();
    let start = tokio::time::Instant::now();
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    broker
        .publish(Outgoing::new("q", Bytes::from_static(b"x")).not_before(at))
        .await
        .unwrap();
    let mut stream = broker
        .consume(&["q".to_owned()], ConsumeOptions::default())
        .await
        .unwrap();
    let delivery = stream.next().await.unwrap().unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(3599)
            && waited <= std::time::Duration::from_secs(3601),
        "{waited:?}"
    );
    delivery.ack().await.unwrap();
}
