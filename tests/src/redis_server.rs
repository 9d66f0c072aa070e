//! One `redis-server` (data node or sentinel) of a test's own, on a spare port with its own data
//! directory, for the cluster and sentinel groups.
//!
//! A spare port is only spare when it is chosen: another test's server, or a cluster bus, may bind
//! it before this server does, and the server then exits at once. So a server counts as started
//! only once it answers `PING`; one that exits first is started again on other ports.
//!
//! Every server is started by one launcher thread that lives as long as the test process, with a
//! parent-death signal: a server outlives neither its group's drop nor the process, even a
//! process-wide group that nothing drops.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// How long a server may take to answer on a loaded 2-core machine.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a server is started on fresh ports before its start counts as failed.
const ATTEMPTS: usize = 5;
/// How the data directories of groups begin: `<prefix><pid>-<uuid>`.
const DIR_PREFIX: &str = "celeriac-redis-cluster-";

/// A server that answers.
#[derive(Debug)]
pub(crate) struct Started {
    /// The port it serves clients on.
    pub port: u16,
    /// Its process (killed by PID when the group drops it).
    pub process: Child,
}

/// A fresh base directory for one group's servers, after removing those of test processes that
/// are gone.
pub(crate) fn group_dir() -> PathBuf {
    remove_leftovers();
    std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Starts a server in `<base>/<port>` with the arguments `arguments(port, dir)` names, and waits
/// until it answers `PING`. The server writes its log to `dir/<log>`, which a failure quotes.
///
/// # Panics
///
/// When `redis-server` or `setpriv` is missing, or when the server never answered in
/// [`ATTEMPTS`] starts.
pub(crate) fn start(
    base: &Path,
    log: &str,
    arguments: impl Fn(u16, &Path) -> Vec<OsString>,
) -> Started {
    let mut exits = Vec::new();
    for _ in 0..ATTEMPTS {
        let port = free_port();
        let dir = base.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("a directory for the server");
        let mut process = launch(arguments(port, &dir))
            .expect("redis-server and setpriv must be installed for these tests");
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Ok(Some(status)) = process.try_wait() {
                let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
                exits.push(format!("port {port}: {status}: {}", last_lines(&log)));
                let _ = std::fs::remove_dir_all(&dir);
                break;
            }
            if cli(port, &["PING"]).as_deref().map(str::trim) == Some("PONG") {
                return Started { port, process };
            }
            if Instant::now() > deadline {
                let _ = process.kill();
                let _ = process.wait();
                let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
                panic!(
                    "redis-server on port {port} did not answer within {ANSWER_TIMEOUT:?}: {}",
                    last_lines(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "redis-server exited before answering in {ATTEMPTS} starts: {}",
        exits.join("; ")
    );
}

fn last_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Removes the data directories of groups whose test process is gone (a process-wide group's is
/// never dropped; a killed test drops none).
fn remove_leftovers() {
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
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
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

/// `arguments` as the `OsString`s a command takes.
pub(crate) fn strings(arguments: &[&str]) -> Vec<OsString> {
    arguments.iter().map(OsString::from).collect()
}

/// Starts `redis-server` with `arguments` from the launcher thread, through util-linux's
/// `setpriv --pdeathsig KILL` (Debian always has it): the server gets SIGKILL when its parent
/// thread ends, hence a thread that never does.
fn launch(arguments: Vec<OsString>) -> io::Result<Child> {
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_server_whose_port_was_taken_starts_again_on_another() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let taken_port = taken.local_addr().expect("its address").port();
        let base = group_dir();
        let attempts = Cell::new(0);
        let mut started = start(&base, "redis.log", |port, dir| {
            attempts.set(attempts.get() + 1);
            // The first start finds its port taken, as when another test bound it first.
            let port = if attempts.get() == 1 {
                taken_port
            } else {
                port
            };
            let mut arguments = strings(&[
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--logfile",
                "redis.log",
                "--dir",
            ]);
            arguments.push(dir.as_os_str().to_owned());
            arguments
        });
        let _ = started.process.kill();
        let _ = started.process.wait();
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(attempts.get(), 2, "the first start failed and was retried");
        assert_ne!(started.port, taken_port);
        drop(taken);
    }
}
