//! A Redis Cluster of its own for a test: `redis-server` nodes on spare ports, each with its own
//! data directory, joined with `redis-cli --cluster create`, and killed by PID when dropped. The
//! shared server on 6379 is left alone.
//!
//! Every node is started by one launcher thread that lives as long as the test process, with a
//! parent-death signal: a node outlives neither its cluster's drop nor the process, even the
//! process-wide [`RedisCluster::shared`] one that nothing drops.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// How long the cluster may take to form or to recover, on a loaded 2-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node goes unanswered before the others count it failed (and promote its replica).
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2_000);

/// How the data directories of clusters begin: `<prefix><pid>-<uuid>`.
const DIR_PREFIX: &str = "celeriac-redis-cluster-";

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
        remove_leftovers();
        let base = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut cluster = Self {
            nodes: Vec::new(),
            base,
        };
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            let dir = cluster.base.join(port.to_string());
            std::fs::create_dir_all(&dir).expect("a directory for the node");
            let arguments: Vec<OsString> = [
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
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
            ]
            .iter()
            .map(OsString::from)
            .chain([dir.into_os_string()])
            .collect();
            let server = launch(arguments)
                .expect("redis-server and setpriv must be installed for cluster tests");
            cluster.nodes.push(Node {
                port,
                server: Some(server),
            });
        }
        for index in 0..cluster.nodes.len() {
            cluster.await_answer(index);
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

    fn await_answer(&self, index: usize) {
        let port = self.nodes[index].port;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while cli(port, &["PING"]).as_deref().map(str::trim) != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer within {SETTLE_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn await_settled(&self) {
        let ports: Vec<u16> = self.live().map(|node| node.port).collect();
        settle(&ports);
    }
}

/// Removes the data directories of clusters whose test process is gone (the shared cluster's is
/// never dropped; a killed test drops none).
pub(crate) fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|name| name.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
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

/// `redis-cli -p port arguments…`'s output, if it ran.
pub(crate) fn cli(port: u16, arguments: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(arguments)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts `redis-server` with `arguments` from the launcher thread, through util-linux's
/// `setpriv --pdeathsig KILL` (Debian always has it): the server gets SIGKILL when its parent
/// thread ends, hence a thread that never does.
pub(crate) fn launch(arguments: Vec<OsString>) -> io::Result<Child> {
    type Request = (Vec<OsString>, mpsc::Sender<io::Result<Child>>);
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (arguments, answer) in incoming {
                let spawned = Command::new("setpriv")
                    .args(["--pdeathsig", "KILL", "redis-server"])
                    .args(arguments)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                let _ = answer.send(spawned);
            }
        });
        Mutex::new(requests)
    });
    let (answer, spawned) = mpsc::channel();
    launcher
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((arguments, answer))
        .map_err(|_| io::Error::other("the launcher thread is gone"))?;
    spawned
        .recv()
        .map_err(|_| io::Error::other("the launcher thread is gone"))?
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
