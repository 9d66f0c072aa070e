//! A Redis master with replicas, watched by Redis Sentinels, of its own for a test: every server on
//! a spare port with its own data directory, started as `redis_server` starts servers and
//! killed by PID when dropped.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::redis_server::{self, cli, strings};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "mymaster";
/// How long a wait for the group may take on a loaded 2-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Server {
    port: u16,
    process: Option<Child>,
}

/// A master, its replicas and their sentinels; all killed, their data removed, when dropped.
#[derive(Debug)]
pub struct RedisSentinels {
    /// The master first, then the replicas.
    data: Vec<Server>,
    sentinels: Vec<Server>,
    base: PathBuf,
}

impl RedisSentinels {
    /// Starts a master, `replicas` replicas of it and `sentinels` sentinels (quorum: a majority),
    /// and waits until the replicas are in sync and every sentinel sees them.
    pub async fn start(replicas: usize, sentinels: usize) -> Self {
        tokio::task::spawn_blocking(move || Self::start_blocking(replicas, sentinels))
            .await
            .expect("the sentinel group's start did not panic")
    }

    fn start_blocking(replicas: usize, sentinels: usize) -> Self {
        let mut group = Self {
            data: Vec::new(),
            sentinels: Vec::new(),
            base: redis_server::group_dir(),
        };
        let mut master: Option<u16> = None;
        for _ in 0..=replicas {
            let started = redis_server::start(&group.base, "redis.log", |port, dir| {
                let mut arguments = strings(&[
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--logfile",
                    "redis.log",
                ]);
                if let Some(master) = master {
                    arguments.extend(strings(&["--replicaof", "127.0.0.1", &master.to_string()]));
                }
                arguments.extend([OsString::from("--dir"), dir.as_os_str().to_owned()]);
                arguments
            });
            master.get_or_insert(started.port);
            group.data.push(Server {
                port: started.port,
                process: Some(started.process),
            });
        }
        let master = master.expect("the master was started first");
        let quorum = sentinels / 2 + 1;
        for _ in 0..sentinels {
            let started = redis_server::start(&group.base, "sentinel.log", |port, dir| {
                let config = dir.join("sentinel.conf");
                std::fs::write(
                    &config,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\nlogfile sentinel.log\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master} {quorum}\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 10000\n",
                        dir.display()
                    ),
                )
                .expect("a sentinel's configuration");
                vec![config.into_os_string(), OsString::from("--sentinel")]
            });
            group.sentinels.push(Server {
                port: started.port,
                process: Some(started.process),
            });
        }
        group.await_settled(replicas);
        group
    }

    /// The group's URL: every sentinel, `;`-separated, the first naming the master.
    pub fn url(&self) -> String {
        self.sentinels
            .iter()
            .enumerate()
            .map(|(index, sentinel)| {
                let name = if index == 0 { MASTER_NAME } else { "" };
                format!("redis+sentinel://127.0.0.1:{}/{name}", sentinel.port)
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        let sentinel = self.sentinels.iter().find(|s| s.process.is_some())?;
        let answer = cli(
            sentinel.port,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        )?;
        answer.lines().nth(1)?.trim().parse().ok()
    }

    /// Kills the master with SIGKILL, as a crash would; answers its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("the sentinels name a master");
        let server = self
            .data
            .iter_mut()
            .find(|server| server.port == port)
            .expect("the master is a server of this group");
        if let Some(mut process) = server.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
        port
    }

    /// Waits until the sentinels name a master other than `dead` and it says it is one; answers
    /// how long that took.
    pub async fn recovered(&self, dead: u16) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(port) = self.master_port().filter(|port| *port != dead) {
                let role = cli(port, &["ROLE"]).unwrap_or_default();
                if role.starts_with("master") {
                    return started.elapsed();
                }
            }
            assert!(
                started.elapsed() < SETTLE_TIMEOUT,
                "no replica was promoted within {SETTLE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn await_settled(&self, replicas: usize) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for replica in &self.data[1..] {
            while !cli(replica.port, &["INFO", "replication"])
                .unwrap_or_default()
                .contains("master_link_status:up")
            {
                assert!(
                    Instant::now() < deadline,
                    "replica {} did not sync",
                    replica.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for sentinel in &self.sentinels {
            loop {
                let master =
                    cli(sentinel.port, &["SENTINEL", "master", MASTER_NAME]).unwrap_or_default();
                let seen = master
                    .lines()
                    .skip_while(|line| line.trim() != "num-slaves")
                    .nth(1)
                    .and_then(|count| count.trim().parse::<usize>().ok());
                let others = master
                    .lines()
                    .skip_while(|line| line.trim() != "num-other-sentinels")
                    .nth(1)
                    .and_then(|count| count.trim().parse::<usize>().ok());
                if seen == Some(replicas) && others == Some(self.sentinels.len() - 1) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sentinel {} did not see the group: {master}",
                    sentinel.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for server in self.data.iter_mut().chain(self.sentinels.iter_mut()) {
            if let Some(mut process) = server.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
