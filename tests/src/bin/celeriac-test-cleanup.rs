//! Removes what earlier test and benchmark runs left on the shared servers, so they do not pile up:
//! Redis keys of the tests (`celeriac-test…`) and of the benchmarks (`celeriac-bench:…`), and
//! RabbitMQ queues named `celeriac-test.…`, `celeriac.election.celeriac-test.…` or `bench-…`. AMQP cannot list queues, so their names come
//! on standard input, one per line (`rabbitmqctl list_queues name --quiet --no-table-headers`);
//! other names are left alone.
//!
//! Usage: `celeriac-test-cleanup redis` or `… | celeriac-test-cleanup amqp`. Prints what it removed.

use std::io::BufRead;
use std::process::ExitCode;

use celeriac_tests::harness::{amqp_url, redis_url};
use futures::future::join_all;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use redis::AsyncCommands;

type Error = Box<dyn std::error::Error>;

/// Whether a RabbitMQ queue was made by the tests or the benchmarks.
fn ours(queue: &str) -> bool {
    queue.starts_with("celeriac-test.")
        || queue.starts_with("celeriac.election.celeriac-test.")
        || queue.starts_with("bench-")
}

async fn clean_redis() -> Result<usize, Error> {
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut removed = 0;
    // The beat tests' elections keep their records in the default coordination prefix.
    for pattern in [
        "celeriac-test*",
        "celeriac-bench:*",
        "celeriac:election:{celeriac-test.*",
        // Dead letters of the Celery interop tests (kombu's layout, no prefix).
        "_celeriac.dead.celeriac-test.*",
    ] {
        let keys: Vec<String> = {
            let mut scan: redis::AsyncIter<'_, String> = conn.scan_match(pattern).await?;
            let mut keys = Vec::new();
            while let Some(key) = futures::StreamExt::next(&mut scan).await {
                keys.push(key?);
            }
            keys
        };
        for chunk in keys.chunks(500) {
            removed += redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<usize>(&mut conn)
                .await?;
        }
    }
    Ok(removed)
}

async fn clean_amqp(names: Vec<String>) -> Result<usize, Error> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut removed = 0;
    for chunk in names.chunks(200) {
        let deletions = chunk
            .iter()
            .map(|name| channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()));
        for deleted in join_all(deletions).await {
            deleted?;
            removed += 1;
        }
        // Python Celery declares a direct exchange of the queue's name beside each queue
        // (deleting one that does not exist is not an error).
        let exchanges = chunk.iter().map(|name| {
            channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
        });
        for deleted in join_all(exchanges).await {
            deleted?;
        }
    }
    connection.close(200, "done".into()).await?;
    Ok(removed)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let broker = std::env::args().nth(1).unwrap_or_default();
    let cleaned = match broker.as_str() {
        "redis" => clean_redis().await.map(|n| format!("{n} Redis keys")),
        "amqp" => {
            let names: Vec<String> = std::io::stdin()
                .lock()
                .lines()
                .map_while(Result::ok)
                .map(|line| line.trim().to_owned())
                .filter(|name| ours(name))
                .collect();
            clean_amqp(names)
                .await
                .map(|n| format!("{n} RabbitMQ queues"))
        }
        _ => {
            eprintln!("usage: celeriac-test-cleanup redis | amqp (queue names on stdin)");
            return ExitCode::from(2);
        }
    };
    match cleaned {
        Ok(what) => {
            println!("removed {what} left by earlier runs");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cleanup of {broker} failed: {error}");
            ExitCode::FAILURE
        }
    }
}
