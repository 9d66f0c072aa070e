//! Where a consumer's blocking reads go: one [`BoundedConnection`] to a lone server, or, on a Redis
//! Cluster, one per queue to the master owning the queue's slot (`XREADGROUP` cannot span slots).
//!
//! On a cluster a reader starts at the URL's nodes and follows `MOVED` to the slot's master; after
//! a failover its connection breaks, and the next read starts over and finds the promoted replica.
//! A consumer of several queues there polls them in turn without blocking, then blocks briefly
//! ([`CLUSTER_POLL`]) on one of them, so a message on any queue waits at most that long.

use std::time::Duration;

use celeriac_core::BrokerError;
use redis::{ConnectionAddr, ConnectionInfo};

use crate::bounded::{BoundedConnection, Reply};
use crate::server::Server;

/// The longest a consumer of several queues on a cluster blocks on one of them.
pub(crate) const CLUSTER_POLL: Duration = Duration::from_millis(50);
/// `MOVED` redirections followed for one read before it counts as failed.
const MAX_REDIRECTS: usize = 3;

/// What one read is: which consumer of which group, how many entries at most, how large.
pub(crate) struct ReadGroup<'a> {
    pub(crate) group: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) streams: &'a [&'a str],
    pub(crate) max_entry_bytes: usize,
    /// Bounds connecting and each answer beyond the block.
    pub(crate) timeout: Duration,
    pub(crate) tls_roots_pem: Option<&'a str>,
}

/// A consumer's read connections, opened on first use and again after an error.
pub(crate) struct Readers {
    /// One per queue on a cluster; a single one (index 0) for every queue otherwise.
    conns: Vec<Option<BoundedConnection>>,
    /// Where each queue's master is, once a `MOVED` said so (cluster only).
    masters: Vec<Option<ConnectionInfo>>,
    /// The queue a multi-queue cluster consumer blocks on next (turns rotate, for fairness).
    turn: usize,
}

impl Readers {
    pub(crate) fn new(queues: usize) -> Self {
        Self {
            conns: (0..queues).map(|_| None).collect(),
            masters: vec![None; queues],
            turn: 0,
        }
    }

    /// Reads up to `count` new entries, waiting up to `block` for some.
    pub(crate) async fn read(
        &mut self,
        server: &Server,
        read: &ReadGroup<'_>,
        count: usize,
        block: Duration,
    ) -> Result<Reply, BrokerError> {
        let seeds = match server {
            Server::Cluster { seeds, .. } => seeds,
            Server::Single(client) => {
                let info = std::slice::from_ref(client.get_connection_info());
                let count = per_stream(count, read.streams.len());
                return self
                    .read_on(0, info, read, read.streams, count, Some(block))
                    .await;
            }
            Server::Sentinel(watched) => {
                let Ok(master) = watched.master_info().await else {
                    watched.ask_again().await;
                    return Err(BrokerError::Disconnected { op: "read" });
                };
                if self.masters[0]
                    .as_ref()
                    .is_some_and(|known| known.addr().to_string() != master.addr().to_string())
                {
                    // The sentinels named another master: leave the old one.
                    self.conns[0] = None;
                }
                self.masters[0] = Some(master.clone());
                let count = per_stream(count, read.streams.len());
                let answer = self
                    .read_on(
                        0,
                        std::slice::from_ref(&master),
                        read,
                        read.streams,
                        count,
                        Some(block),
                    )
                    .await;
                if answer.is_err() {
                    watched.ask_again().await;
                }
                return answer;
            }
        };
        let queues = read.streams.len();
        if queues == 1 {
            return self
                .read_on(0, seeds, read, read.streams, count, Some(block))
                .await;
        }
        let mut found = Vec::new();
        let mut left = count;
        for step in 0..queues {
            let queue = (self.turn + step) % queues;
            let stream = &read.streams[queue..=queue];
            let reply = self.read_on(queue, seeds, read, stream, left, None).await?;
            if let Reply::Error(_) = reply {
                return Ok(reply);
            }
            left = left.saturating_sub(entry_count(&reply));
            extend(&mut found, reply);
            if left == 0 {
                break;
            }
        }
        if !found.is_empty() {
            return Ok(Reply::Array(found));
        }
        let queue = self.turn % queues;
        self.turn = self.turn.wrapping_add(1);
        let stream = &read.streams[queue..=queue];
        self.read_on(
            queue,
            seeds,
            read,
            stream,
            count,
            Some(block.min(CLUSTER_POLL)),
        )
        .await
    }

    /// One `XREADGROUP` of `streams` on connection `index`, which starts at `seeds` (in turn) and
    /// follows `MOVED`.
    async fn read_on(
        &mut self,
        index: usize,
        seeds: &[ConnectionInfo],
        read: &ReadGroup<'_>,
        streams: &[&str],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Reply, BrokerError> {
        for _ in 0..=MAX_REDIRECTS {
            let conn = match self.conns[index].as_mut() {
                Some(conn) => conn,
                None => {
                    let targets = match &self.masters[index] {
                        Some(master) => std::slice::from_ref(master),
                        None => seeds,
                    };
                    let opened = match connect(targets, read).await {
                        Ok(opened) => opened,
                        Err(error) => {
                            // A master that died: the next read starts at the seeds again.
                            self.forget(index);
                            return Err(error);
                        }
                    };
                    self.conns[index].insert(opened)
                }
            };
            let answer = conn.read_group(
                read.group,
                read.consumer,
                count,
                block,
                streams,
                read.max_entry_bytes,
            );
            let wait = block.unwrap_or_default() + read.timeout;
            let reply = match tokio::time::timeout(wait, answer).await {
                Ok(Ok(reply)) => reply,
                // The connection is in an unknown state (or its node died): start over.
                Ok(Err(_)) => {
                    self.forget(index);
                    return Err(BrokerError::Disconnected { op: "read" });
                }
                Err(_) => {
                    self.forget(index);
                    return Err(BrokerError::Timeout {
                        op: "read",
                        after: wait,
                    });
                }
            };
            if let Reply::Error(error) = &reply
                && let Some(master) = moved_to(error, seeds)
            {
                tracing::debug!(stream = streams[0], "following a MOVED redirection");
                self.conns[index] = None;
                self.masters[index] = Some(master);
                continue;
            }
            return Ok(reply);
        }
        self.forget(index);
        Err(BrokerError::Unavailable {
            op: "read",
            reason: format!("more than {MAX_REDIRECTS} MOVED redirections in a row"),
        })
    }

    fn forget(&mut self, index: usize) {
        self.conns[index] = None;
        self.masters[index] = None;
    }
}

/// A connection to the first of `targets` that answers.
async fn connect(
    targets: &[ConnectionInfo],
    read: &ReadGroup<'_>,
) -> Result<BoundedConnection, BrokerError> {
    let mut outcome = Err(BrokerError::Disconnected {
        op: "connect for reading",
    });
    for target in targets {
        let connect = BoundedConnection::connect(target, read.tls_roots_pem);
        outcome = match tokio::time::timeout(read.timeout, connect).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(_)) => Err(BrokerError::Disconnected {
                op: "connect for reading",
            }),
            Err(_) => Err(BrokerError::Timeout {
                op: "connect for reading",
                after: read.timeout,
            }),
        };
    }
    outcome
}

/// Where a `MOVED <slot> <host>:<port>` error sends the read: the first seed's settings (TLS,
/// credentials) at that address.
fn moved_to(error: &str, seeds: &[ConnectionInfo]) -> Option<ConnectionInfo> {
    let address = error.strip_prefix("MOVED ")?.split_whitespace().nth(1)?;
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let seed = seeds.first()?;
    let host = match host {
        // Redis writes an empty host for "the node you asked".
        "" => match seed.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
            _ => return None,
        },
        host => host.to_owned(),
    };
    let addr = match seed.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    Some(seed.clone().set_addr(addr))
}

/// The `COUNT` of one `XREADGROUP` over `streams` streams wanting `count` entries in all: `COUNT`
/// bounds each stream, so a read of many streams asks each for its share (one at least; the
/// consumer holds what comes beyond its free slots until they free up).
fn per_stream(count: usize, streams: usize) -> usize {
    (count / streams.max(1)).max(1)
}

/// How many entries an `XREADGROUP` reply holds.
fn entry_count(reply: &Reply) -> usize {
    let Reply::Array(streams) = reply else {
        return 0;
    };
    streams
        .iter()
        .map(|stream| match stream {
            Reply::Array(parts) => match parts.get(1) {
                Some(Reply::Array(entries)) => entries.len(),
                _ => 0,
            },
            _ => 0,
        })
        .sum()
}

/// Adds the streams of one reply to `found`.
fn extend(found: &mut Vec<Reply>, reply: Reply) {
    if let Reply::Array(streams) = reply {
        found.extend(streams);
    }
}

#[cfg(test)]
mod tests {
    use redis::{ConnectionAddr, IntoConnectionInfo};

    use super::{Reply, entry_count, moved_to, per_stream};

    #[test]
    fn a_read_of_many_streams_asks_each_for_its_share() {
        assert_eq!(per_stream(256, 1), 256);
        assert_eq!(per_stream(256, 100), 2);
        assert_eq!(per_stream(256, 1_000), 1);
        assert!(per_stream(256, 3) * 3 <= 256);
    }

    #[test]
    fn moved_keeps_the_seed_settings_at_the_new_address() {
        let seed = "redis://:pw@127.0.0.1:7000".into_connection_info().unwrap();
        let master = moved_to("MOVED 3999 127.0.0.1:7002", &[seed]).unwrap();
        assert!(matches!(master.addr(), ConnectionAddr::Tcp(host, 7002) if host == "127.0.0.1"));
        assert_eq!(master.redis_settings().password(), Some("pw"));
    }

    #[test]
    fn other_errors_are_not_redirections() {
        let seed = "redis://127.0.0.1:7000".into_connection_info().unwrap();
        for error in [
            "NOGROUP no such group",
            "MOVED",
            "MOVED 1 nowhere",
            "ASK 1 a:1x",
        ] {
            assert!(
                moved_to(error, std::slice::from_ref(&seed)).is_none(),
                "{error}"
            );
        }
    }

    #[test]
    fn entries_are_counted_across_streams() {
        let stream = |entries: usize| {
            Reply::Array(vec![
                Reply::Bulk(b"s".to_vec()),
                Reply::Array((0..entries).map(|_| Reply::Nil).collect()),
            ])
        };
        assert_eq!(entry_count(&Reply::Array(vec![stream(2), stream(3)])), 5);
        assert_eq!(entry_count(&Reply::Nil), 0);
    }
}
