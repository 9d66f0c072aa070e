//! Beat scenarios: the task every test beat sends, recording each tick it runs for, and the
//! failover test's driver — beat processes killed and paused while a worker records the ticks.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use celeriac::TaskContext;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::redis_connection;

/// The Redis list where the ticks `run` ran for are recorded.
pub fn ticks_key(run: &str) -> String {
    format!("celeriac-test-beat:{run}")
}

/// Records the tick it was sent for (ms since the epoch) in the Redis list [`ticks_key`]`(run)`.
#[celeriac::task(name = "beat_tick")]
pub async fn beat_tick(ctx: TaskContext, run: String) -> Result<(), redis::RedisError> {
    let Some((_, tick)) = celeriac::beat::tick_of(ctx.envelope()) else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "not sent by a beat",
        )));
    };
    let millis = tick
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    // A connection of its own: one kept in a static would be driven by the runtime of the test
    // that made it, and break for every other test once that one ends (both failover tests run
    // in one process).
    let mut conn = redis_connection().await;
    redis::cmd("RPUSH")
        .arg(ticks_key(&run))
        .arg(millis.to_string())
        .query_async(&mut conn)
        .await
}

/// The ticks recorded for `run`, with how many times each ran.
pub async fn recorded_ticks(run: &str) -> BTreeMap<u64, u32> {
    let mut conn = redis_connection().await;
    let ticks: Vec<u64> = redis::cmd("LRANGE")
        .arg(ticks_key(run))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("LRANGE");
    let mut counted = BTreeMap::new();
    for tick in ticks {
        *counted.entry(tick).or_insert(0) += 1;
    }
    counted
}

/// A beat process (`celeriac-test-beat`), and whether it says it leads.
#[derive(Debug)]
pub struct BeatProcess {
    pub child: Child,
    pub pid: i32,
    /// Since when it leads, if it says it does.
    leading: Arc<Mutex<Option<Instant>>>,
}

impl BeatProcess {
    /// Starts `bin` with `args`, watching its log for when it starts and stops leading.
    pub fn start(bin: &str, args: &[String]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start celeriac-test-beat");
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .expect("a pid");
        let leading = Arc::new(Mutex::new(None));
        // Set to a log filter, it is the beat processes' filter, and their whole log is shown.
        let verbose = std::env::var_os("CELERIAC_TEST_BEAT_LOG").is_some();
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn({
            let leading = leading.clone();
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("no longer leading the beat") {
                        *leading.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    } else if line.contains("leading the beat") {
                        *leading.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    }
                    if verbose || line.contains("ERROR") || line.contains("panicked") {
                        eprintln!("beat {pid}: {line}");
                    }
                }
            }
        });
        Self {
            child,
            pid,
            leading,
        }
    }

    /// Since when it leads, if it last said it does.
    pub fn leads_since(&self) -> Option<Instant> {
        *self.leading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `signal` (`-KILL`, `-STOP`, `-CONT`, `-TERM`).
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.pid);
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(0))
}

/// Waits until one of `beats` other than `except` says it leads; answers which (the latest to
/// say so: one paused and resumed may not have noticed yet that it no longer leads). Panics after
/// `within`.
pub async fn leader(beats: &[BeatProcess], except: Option<usize>, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let latest = beats
            .iter()
            .enumerate()
            .filter(|(index, _)| Some(*index) != except)
            .filter_map(|(index, beat)| Some((beat.leads_since()?, index)))
            .max();
        if let Some((_, index)) = latest {
            return index;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no beat led within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
