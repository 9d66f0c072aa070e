//! Periodic tasks (Celery's beat): a schedule of entries, each sending a task at every tick, run by
//! any number of processes of which exactly one — the elected leader — sends.
//!
//! ```
//! use std::time::Duration;
//! use celeriac::App;
//! use celeriac::beat::Entry;
//!
//! #[celeriac::task]
//! async fn purge_expired_codes() {
//!     println!("purging");
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
//! let app = App::builder().broker_url("memory://beat-doc").register::<purge_expired_codes>().build()?;
//! let beat = app
//!     .beat()
//!     // An entry named after its task…
//!     .every(Duration::from_millis(100), purge_expired_codes::s())
//!     // …and one named by hand, every five minutes in Shanghai.
//!     .entry(
//!         Entry::cron("purge-5-minutes", "0 */5 * * * *", purge_expired_codes::s())
//!             .time_zone("Asia/Shanghai"),
//!     )
//!     .build()?;
//! let worker = app.worker().build()?;
//! let (beat, worker) = tokio::join!(
//!     beat.run_until(tokio::time::sleep(Duration::from_millis(350))),
//!     worker.run_until(tokio::time::sleep(Duration::from_millis(500))),
//! );
//! assert!(beat.sent >= 2, "sent {}", beat.sent);
//! assert_eq!(worker?.succeeded, beat.sent);
//! # Ok(()) }
//! ```
//!
//! How it keeps each tick to one send, and what happens when a leader dies or pauses, is in the
//! guide's [periodic tasks](crate::guide::periodic) page.

mod entry;
mod file;
mod ledger;
mod metrics;
mod run;
mod schedule;
mod tick;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use self::entry::{CatchUp, Entry};
use self::run::{Counts, Leader};
pub(crate) use self::tick::{SEND_HEADER, is_second_copy, ran};
pub use self::tick::{tick_id, tick_of};
use crate::canvas::Signature;
use crate::election::{Election, StoreElection};
use crate::{App, BuildError, Task};

/// The default name of a beat's election.
const DEFAULT_NAME: &str = "beat";

/// Configures a [`Beat`]: made by [`App::beat`].
#[must_use = "a beat builder does nothing until built and run"]
pub struct BeatBuilder {
    app: App,
    entries: Vec<Entry>,
    name: String,
    lease: Duration,
    max_catch_up: usize,
    election: Option<Arc<dyn Election>>,
}

impl BeatBuilder {
    pub(crate) fn new(app: App) -> Self {
        Self {
            app,
            entries: Vec::new(),
            name: DEFAULT_NAME.to_owned(),
            lease: Duration::from_secs(10),
            max_catch_up: 100,
            election: None,
        }
    }

    /// Adds an entry named after `T` that sends `signature` every `interval` (see
    /// [`Entry::every`]).
    pub fn every<T: Task>(self, interval: Duration, signature: Signature<T>) -> Self {
        self.entry(Entry::every(T::NAME, interval, signature))
    }

    /// Adds an entry named after `T` that sends `signature` at each match of the cron
    /// `expression`, in UTC (see [`Entry::cron`]).
    pub fn cron<T: Task>(self, expression: &str, signature: Signature<T>) -> Self {
        self.entry(Entry::cron(T::NAME, expression, signature))
    }

    /// Adds `entry`.
    pub fn entry(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// Adds the entries of a TOML schedule (see below), whose tasks are registered with the app:
    /// what an operator edits without a rebuild.
    ///
    /// ```
    /// use celeriac::{App, BuildError};
    ///
    /// #[celeriac::task]
    /// async fn report_gateway_stats(window_minutes: u32, channel: String) {
    ///     let _ = (window_minutes, channel);
    /// }
    ///
    /// # fn main() -> Result<(), celeriac::Error> {
    /// let app = App::builder().broker_url("memory://beat-toml-doc").register::<report_gateway_stats>().build()?;
    /// let schedule = r#"
    ///     [[entry]]
    ///     name = "gateway-stats"
    ///     task = "report_gateway_stats"
    ///     cron = "0 */5 * * * *"
    ///     time_zone = "Asia/Shanghai"
    ///     args = [5, "ops"]
    ///     jitter = "10s"
    ///     catch_up = "latest"
    /// "#;
    /// let beat = app.beat().entries_from_toml(schedule)?.build()?;
    /// # let _ = beat;
    ///
    /// // A wrong argument is an error naming the entry.
    /// let wrong = schedule.replace(r#"[5, "ops"]"#, r#"["five", "ops"]"#);
    /// let error = app.beat().entries_from_toml(&wrong).err().expect("refused");
    /// assert!(matches!(error, BuildError::BeatEntry { ref entry, .. } if entry == "gateway-stats"));
    /// assert!(error.to_string().contains("argument 1"), "{error}");
    /// # Ok(()) }
    /// ```
    ///
    /// Each `[[entry]]` has a `name`, a `task`, and `every = "60s"` or `cron = "…"` (with an
    /// optional `time_zone`); optionally `args` (one value per argument), `jitter`, `catch_up`
    /// (`"all"`, `"latest"`, `"skip"`), `queue` and `expires`. Unknown keys are errors.
    pub fn entries_from_toml(mut self, text: &str) -> Result<Self, BuildError> {
        let entries = file::entries(&self.app, text, "TOML text")?;
        self.entries.extend(entries);
        Ok(self)
    }

    /// Adds the entries of the TOML schedule file at `path` (see
    /// [`entries_from_toml`](Self::entries_from_toml)).
    pub fn entries_from_file(
        mut self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, BuildError> {
        let entries = file::entries_from_file(&self.app, path.as_ref())?;
        self.entries.extend(entries);
        Ok(self)
    }

    /// Names the beat (`beat` unless told): beats of one name elect one leader and share one
    /// ledger. Give two independent schedules on one store two names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long a leader's term lasts without renewal (10 s unless told): a dead leader's
    /// successor starts sending within about this long. Renewed every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The most ticks of one entry a leader sends at once when it finds them missed (100 unless
    /// told): the latest ones; older ones are skipped, with a warning. Bounds the flood after a
    /// long stop or a clock jump.
    pub fn max_catch_up(mut self, ticks: usize) -> Self {
        self.max_catch_up = ticks;
        self
    }

    /// Elects the leader through `election` instead of the app's coordination store.
    pub fn election(mut self, election: impl Election) -> Self {
        self.election = Some(Arc::new(election));
        self
    }

    /// Checks every entry (schedule, time zone, name) and finds where to elect the leader: the
    /// given election, else the app's coordination store (Redis, or the embedded broker's memory),
    /// else the broker's own (RabbitMQ's single-active-consumer queue).
    pub fn build(self) -> Result<Beat, BuildError> {
        let invalid = |reason: &str| BuildError::InvalidSetting {
            setting: "beat",
            reason: reason.to_owned(),
        };
        if self.name.is_empty() {
            return Err(invalid("the beat's name must not be empty"));
        }
        if self.lease < Duration::from_millis(30) {
            return Err(invalid("the lease must be at least 30 ms"));
        }
        if self.max_catch_up == 0 {
            return Err(invalid("max_catch_up must be at least 1"));
        }
        let mut timings = Vec::new();
        let mut messages = Vec::new();
        for entry in self.entries {
            if timings
                .iter()
                .any(|timing: &entry::EntryTiming| timing.name == entry.name)
            {
                return Err(BuildError::BeatEntry {
                    entry: entry.name,
                    reason: "two entries have this name; name them apart with `Entry::every` or \
                             `Entry::cron`"
                        .to_owned(),
                });
            }
            let (timing, message) = entry.plan(&self.app)?;
            timings.push(timing);
            messages.push(message);
        }
        let election = match self.election {
            Some(election) => election,
            None => match self.app.coordination() {
                Some(store) => {
                    let candidate = crate::TaskId::new().to_string();
                    Arc::new(StoreElection::new(
                        store.clone(),
                        &self.name,
                        candidate,
                        self.lease,
                    ))
                }
                None => self
                    .app
                    .broker()
                    .election(&self.name, self.lease)
                    .ok_or_else(|| BuildError::NoElection {
                        broker: self.app.broker().redacted_url(),
                    })?,
            },
        };
        Ok(Beat {
            leader: Arc::new(Leader {
                app: self.app,
                name: self.name,
                timings,
                messages,
                election,
                max_catch_up: self.max_catch_up,
                counts: Counts::default(),
            }),
        })
    }
}

impl std::fmt::Debug for BeatBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeatBuilder")
            .field("name", &self.name)
            .field("entries", &self.entries)
            .field("lease", &self.lease)
            .field("max_catch_up", &self.max_catch_up)
            .field("election", &self.election)
            .finish_non_exhaustive()
    }
}

/// A beat: campaigns to lead and, while it leads, sends each entry's ticks. Run as many as you
/// like; one leads at a time.
pub struct Beat {
    leader: Arc<Leader>,
}

impl Beat {
    /// Runs until SIGINT or SIGTERM, then resigns if it leads (the next leader takes over at once).
    pub async fn run(self) -> BeatReport {
        self.run_until(crate::worker::shutdown_signal()).await
    }

    /// Runs until `shutdown` completes, then resigns if it leads.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> BeatReport {
        let stop = CancellationToken::new();
        let running = self.leader.run(stop.clone());
        let mut running = std::pin::pin!(running);
        tokio::select! {
            () = shutdown => {
                stop.cancel();
                running.await;
            }
            () = &mut running => {}
        }
        self.leader.counts.report()
    }
}

impl std::fmt::Debug for Beat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beat")
            .field("name", &self.leader.name)
            .field("entries", &self.leader.timings)
            .field("election", &self.leader.election)
            .finish_non_exhaustive()
    }
}

/// What a beat did while it ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BeatReport {
    /// How many times it became the leader.
    pub terms: u64,
    /// Ticks it sent.
    pub sent: u64,
    /// Ticks a predecessor had written down and may not have sent, sent again by this one.
    pub resent: u64,
    /// Missed ticks it skipped (by an entry's catch-up policy, or past `max_catch_up`).
    pub skipped: u64,
    /// Sends that failed (each was tried again).
    pub failed_sends: u64,
}

impl App {
    /// Starts configuring a beat: the periodic-task scheduler of this app (see [`beat`](crate::beat)).
    pub fn beat(&self) -> BeatBuilder {
        BeatBuilder::new(self.clone())
    }
}
