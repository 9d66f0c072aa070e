//! A RabbitMQ cluster of its own for a test: nodes started on spare ports with their own names, data
//! directories and Erlang cookie, joined with `rabbitmqctl join_cluster`, and stopped by PID when
//! dropped. The shared server on 5672 is left alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// Where Debian keeps the scripts that run as the calling user (`/usr/sbin`'s wrappers switch to
/// the `rabbitmq` user, whose Erlang cookie is not ours).
const DEBIAN_BIN: &str = "/usr/lib/rabbitmq/bin";

/// How long a node may take to boot, on a loaded 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times a node is started before a boot failure is the test's failure.
const BOOT_ATTEMPTS: u32 = 3;

/// One node of the cluster.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    /// The Erlang VM's PID, from the node's PID file.
    pid: Option<u32>,
    /// The script started for it (it may have handed over to the VM).
    script: std::process::Child,
    alive: bool,
}

/// A running cluster; its nodes are killed, and their data removed, when it is dropped.
#[derive(Debug)]
pub struct RabbitCluster {
    nodes: Vec<Node>,
    base: PathBuf,
}

/// The path of RabbitMQ's `program` (`rabbitmq-server`, `rabbitmqctl`) to run as this user.
fn program(program: &str) -> PathBuf {
    let debian = Path::new(DEBIAN_BIN).join(program);
    if debian.exists() {
        debian
    } else {
        PathBuf::from(program)
    }
}

impl RabbitCluster {
    /// Starts `size` nodes and joins them into one cluster (panics, saying what is missing, when it
    /// cannot: RabbitMQ must be installed, which scripts/test.sh sees to).
    pub async fn start(size: usize) -> Self {
        tokio::task::spawn_blocking(move || Self::start_blocking(size))
            .await
            .expect("the cluster's start did not panic")
    }

    fn start_blocking(size: usize) -> Self {
        let base = std::env::temp_dir().join(format!(
            "celeriac-rabbit-cluster-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(base.join("home")).expect("a directory for the cluster");
        let cookie = base.join("home/.erlang.cookie");
        std::fs::write(&cookie, uuid::Uuid::new_v4().simple().to_string())
            .expect("the cluster's Erlang cookie");
        set_owner_only(&cookie);
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut cluster = Self {
            nodes: Vec::new(),
            base,
        };
        for index in 0..size {
            let node = cluster.spawn_node(&format!("celeriac-{tag}-{index}@localhost"));
            cluster.nodes.push(node);
        }
        for index in 0..size {
            cluster.await_boot(index);
        }
        let first = cluster.nodes[0].name.clone();
        for index in 1..size {
            for step in [
                vec!["stop_app"],
                vec!["reset"],
                vec!["join_cluster", first.as_str()],
                vec!["start_app"],
            ] {
                cluster.ctl(index, &step);
            }
        }
        cluster
    }

    fn spawn_node(&self, name: &str) -> Node {
        let port = free_port();
        let short = name.split('@').next().unwrap_or(name);
        let dir = self.base.join(short);
        std::fs::create_dir_all(&dir).expect("a directory for the node");
        std::fs::write(dir.join("enabled_plugins"), "[].").expect("the node's plugin list");
        let log = std::fs::File::create(dir.join("out.log")).expect("the node's log file");
        let script = Command::new(program("rabbitmq-server"))
            .env("HOME", self.base.join("home"))
            .env("RABBITMQ_NODENAME", name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the node's log file"))
            .stderr(log)
            .spawn()
            .expect(
                "rabbitmq-server must be installed for the cluster tests (scripts/test.sh installs it)",
            );
        Node {
            name: name.to_owned(),
            port,
            pid: None,
            script,
            alive: true,
        }
    }

    /// Waits until node `index` has booted, and reads its PID.
    fn await_boot(&mut self, index: usize) {
        let mut started = Instant::now();
        let short = self.nodes[index]
            .name
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        let pid_file = self.base.join(&short).join("pid");
        let mut restarts = 0;
        loop {
            let booted = self
                .ctl_status(index, &["await_startup", "--timeout", "5"])
                .success();
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            if booted && pid.is_some() {
                self.nodes[index].pid = pid;
                return;
            }
            if let Ok(Some(status)) = self.nodes[index].script.try_wait() {
                // A spare port can be taken between choosing it and the node binding it: the
                // node exits, and starts again on other ports.
                assert!(
                    restarts < BOOT_ATTEMPTS - 1,
                    "RabbitMQ node {} exited while booting ({status}), {BOOT_ATTEMPTS} times; its \
                     output is in {}",
                    self.nodes[index].name,
                    self.base.join(&short).join("out.log").display()
                );
                restarts += 1;
                let name = self.nodes[index].name.clone();
                self.nodes[index] = self.spawn_node(&name);
                started = Instant::now();
                continue;
            }
            assert!(
                started.elapsed() < BOOT_TIMEOUT,
                "RabbitMQ node {} did not boot within {BOOT_TIMEOUT:?}",
                self.nodes[index].name
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn ctl_status(&self, index: usize, arguments: &[&str]) -> std::process::ExitStatus {
        Command::new(program("rabbitmqctl"))
            .env("HOME", self.base.join("home"))
            .arg("-n")
            .arg(&self.nodes[index].name)
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmqctl must be installed for the cluster tests")
    }

    fn ctl(&self, index: usize, arguments: &[&str]) {
        let status = self.ctl_status(index, arguments);
        assert!(
            status.success(),
            "rabbitmqctl -n {} {arguments:?} failed ({status})",
            self.nodes[index].name
        );
    }

    /// The cluster's URL: every node, `;`-separated, the first with `?queue_type=quorum`.
    pub fn quorum_url(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let query = if index == 0 { "?queue_type=quorum" } else { "" };
                format!("amqp://guest:guest@127.0.0.1:{}/%2f{query}", node.port)
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Which node leads the quorum queue `queue`, and how many nodes hold a replica of it, as a
    /// node still running says.
    pub fn leader_of(&self, queue: &str) -> (usize, usize) {
        let asked = self
            .nodes
            .iter()
            .position(|node| node.alive)
            .expect("a running node");
        let output = Command::new(program("rabbitmqctl"))
            .env("HOME", self.base.join("home"))
            .arg("-n")
            .arg(&self.nodes[asked].name)
            .args([
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "leader",
                "members",
            ])
            .output()
            .expect("rabbitmqctl must be installed for the cluster tests");
        let listing = String::from_utf8_lossy(&output.stdout);
        let (leader, members) = listing
            .lines()
            .map(|line| line.split('\t').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&queue))
            .and_then(|fields| Some((fields.get(1)?.trim().to_owned(), fields.get(2)?.to_string())))
            .unwrap_or_else(|| panic!("queue {queue} is not in {listing}"));
        let replicas = self
            .nodes
            .iter()
            .filter(|node| members.contains(&node.name))
            .count();
        let leader = self
            .nodes
            .iter()
            .position(|node| node.name == leader)
            .unwrap_or_else(|| panic!("the leader {leader} is not a node of this cluster"));
        (leader, replicas)
    }

    /// Kills node `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(pid) = node.pid {
            kill_pid(pid);
        }
        let _ = node.script.kill();
        let _ = node.script.wait();
        node.alive = false;
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].alive {
                self.kill(index);
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Erlang refuses a cookie file others can read.
fn set_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))
        .expect("the cookie's permissions");
}
