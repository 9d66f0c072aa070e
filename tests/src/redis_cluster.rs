//! A Redis Cluster of its own for a test: `redis-server` nodes on spare ports, each with its own
//! data directory, joined with `redis-cli --cluster create`, and killed by PID when dropped. The
//! shared server on 6379 is left alone. Nodes start as `redis_server` starts them: they
//! outlive neither their cluster's drop nor the process, even the process-wide
//! [`RedisCluster::shared`] one that nothing drops.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::free_port;
use crate::redis_server::{self, cli};

/// How long the cluster may take to form or to recover, on a loaded 2-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node goes unanswered before the others count it failed (and promote its replica).
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2_000);

/// One node of the cluster.
#[derive(Debug)]
struct Node {
    port: u16,
    server: Option<Child>,
}

/// A running cluster; its nodes are killed, and their data removed, when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    base: PathBuf,
}

/// A master of the cluster, as `CLUSTER NODES` lists it.
#[derive(Debug, Clone)]
struct Master {
    port: u16,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until the cluster serves
    /// every slot (panics, saying what is missing, when it cannot: `redis-server` and `redis-cli`
    /// must be installed, which scripts/test.sh sees to).
    pub async fn start(masters: usize, replicas: usize) -> Self {
        tokio::task::spawn_blocking(move || Self::start_blocking(masters, replicas))
            .await
            .expect("the cluster's start did not panic")
    }

    /// One cluster of three masters (no replicas) for every test of this process that does not
    /// kill nodes; its servers end with the process.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(|| Self::start_blocking(3, 0))
    }

    fn start_blocking(masters: usize, replicas: usize) -> Self {
        let mut cluster = Self {
            nodes: Vec::new(),
            base: redis_server::group_dir(),
        };
        for _ in 0..masters * (1 + replicas) {
            // The cluster bus gets a spare port of its own: the default, the client port plus
            // 10 000, may be taken or past 65 535.
            let started = redis_server::start(&cluster.base, "redis.log", |port, dir| {
                let mut arguments = redis_server::strings(&[
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &free_port().to_string(),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT.as_millis().to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                    "--logfile",
                    "redis.log",
                    "--dir",
                ]);
                arguments.push(dir.as_os_str().to_owned());
                arguments
            });
            cluster.nodes.push(Node {
                port: started.port,
                server: Some(started.process),
            });
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed for cluster tests");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.await_settled();
        cluster
    }

    /// The cluster's URL: every node, `;`-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("redis+cluster://127.0.0.1:{}", node.port))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The node serving `key` now: the master of its slot.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .ask(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let master = self
            .masters()
            .into_iter()
            .find(|master| {
                master
                    .slots
                    .iter()
                    .any(|(from, to)| (*from..=*to).contains(&slot))
            })
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.nodes
            .iter()
            .position(|node| node.port == master.port)
            .expect("the master is a node of this cluster")
    }

    /// Kills node `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut server) = self.nodes[index].server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Waits until the live nodes serve every slot again (after a kill: until a replica was
    /// promoted), and returns how long that took.
    pub async fn recovered(&self) -> Duration {
        let started = Instant::now();
        let ports: Vec<u16> = self.live().map(|node| node.port).collect();
        tokio::task::spawn_blocking(move || settle(&ports))
            .await
            .expect("waiting for the cluster did not panic");
        started.elapsed()
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|node| node.server.is_some())
    }

    /// `redis-cli` with `arguments` on a live node; its standard output.
    fn ask(&self, arguments: &[&str]) -> String {
        let node = self.live().next().expect("a live node");
        cli(node.port, arguments).unwrap_or_default()
    }

    fn masters(&self) -> Vec<Master> {
        let listing = self.ask(&["CLUSTER", "NODES"]);
        listing
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let address = fields.get(1)?.split('@').next()?;
                let port = address.rsplit_once(':')?.1.parse().ok()?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter_map(|range| match range.split_once('-') {
                        Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
                        None => range.parse().ok().map(|slot| (slot, slot)),
                    })
                    .collect();
                Some(Master { port, slots })
            })
            .collect()
    }

    fn await_settled(&self) {
        let ports: Vec<u16> = self.live().map(|node| node.port).collect();
        settle(&ports);
    }
}

/// Waits until every node of `ports` says the cluster is ok with all slots served, and every
/// replica among them is in sync with its master.
fn settle(ports: &[u16]) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for port in ports {
        loop {
            let info = cli(*port, &["CLUSTER", "INFO"]).unwrap_or_default();
            if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {SETTLE_TIMEOUT:?}: node {port} says {info}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // A replica counts once it copies its master (`WAIT` would find none before).
        loop {
            let replication = cli(*port, &["INFO", "replication"]).unwrap_or_default();
            if !replication.contains("role:slave") || replication.contains("master_link_status:up")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {port} did not sync within {SETTLE_TIMEOUT:?}: {replication}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
