//! A schedule entry: a stable name, when its ticks fall, and the task each tick sends.

use std::fmt;
use std::time::Duration;

use super::ledger::jitter;
use super::schedule::{Millis, Schedule};
use crate::canvas::{Pending, Signature};
use crate::envelope::Step;
use crate::{App, BuildError, Task};

/// What a leader sends of the ticks it finds missed (its predecessor died, or no beat ran for a
/// while). Whatever the policy, a leader sends at most the beat's
/// [`max_catch_up`](super::BeatBuilder::max_catch_up) ticks of an entry at once, the latest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatchUp {
    /// Every missed tick, oldest first (the default: a leader's death loses no tick).
    #[default]
    All,
    /// Only the latest missed tick: for work where one run covers the ones missed (a report of
    /// the last hour, a purge).
    Latest,
    /// No tick found more than a second late: for work whose time has passed once missed.
    Skip,
}

/// One entry of a beat's schedule: a stable name, when its ticks fall, the task each tick sends.
///
/// The name identifies the entry across restarts and leaders: the beat's ledger keeps, per name,
/// the latest tick dealt with. Rename an entry and it starts afresh; change its schedule and it
/// continues from its last tick.
///
/// ```
/// use std::time::Duration;
/// use celeriac::beat::{CatchUp, Entry};
///
/// #[celeriac::task]
/// async fn purge_expired_codes() {}
///
/// #[celeriac::task]
/// async fn report_gateway_stats(window_minutes: u32) {
///     let _ = window_minutes;
/// }
///
/// let purge = Entry::every("purge-codes", Duration::from_secs(60), purge_expired_codes::s())
///     .jitter(Duration::from_secs(5))
///     .catch_up(CatchUp::Latest);
/// // At 08:30 every weekday, Shanghai time.
/// let report = Entry::cron("morning-report", "0 30 8 * * Mon-Fri", report_gateway_stats::s(60))
///     .time_zone("Asia/Shanghai");
/// # let _ = (purge, report);
/// ```
#[must_use = "an entry does nothing until it is added to a beat"]
pub struct Entry {
    pub(super) name: String,
    spec: Spec,
    signature: Pending,
    jitter: Duration,
    catch_up: CatchUp,
}

/// When the ticks fall, as given (parsed when the beat is built).
#[derive(Debug)]
enum Spec {
    Every(Duration),
    Cron { expression: String, zone: String },
}

impl Entry {
    /// An entry named `name` that sends `signature` every `interval`. Its ticks fall on the
    /// multiples of `interval` since the Unix epoch: every minute is on the minute, in every
    /// process alike.
    pub fn every<T: Task>(
        name: impl Into<String>,
        interval: Duration,
        signature: Signature<T>,
    ) -> Self {
        Self::new(name.into(), Spec::Every(interval), signature)
    }

    /// An entry named `name` that sends `signature` at each match of the cron `expression`, in
    /// UTC unless [`time_zone`](Self::time_zone) says otherwise. Expressions have six fields,
    /// seconds first (`0 */5 * * * *`: every five minutes), or seven with a year last; names of
    /// months and days (`Mon-Fri`) are accepted.
    pub fn cron<T: Task>(
        name: impl Into<String>,
        expression: impl Into<String>,
        signature: Signature<T>,
    ) -> Self {
        let spec = Spec::Cron {
            expression: expression.into(),
            zone: "UTC".to_owned(),
        };
        Self::new(name.into(), spec, signature)
    }

    fn new<T: Task>(name: String, spec: Spec, signature: Signature<T>) -> Self {
        Self::of(name, spec, signature.pending())
    }

    fn of(name: String, spec: Spec, signature: Pending) -> Self {
        Self {
            name,
            spec,
            signature,
            jitter: Duration::ZERO,
            catch_up: CatchUp::default(),
        }
    }

    /// An interval entry of a task named in a schedule file.
    pub(super) fn from_pending(name: String, interval: Duration, signature: Pending) -> Self {
        Self::of(name, Spec::Every(interval), signature)
    }

    /// A cron entry of a task named in a schedule file.
    pub(super) fn cron_from_pending(
        name: String,
        expression: String,
        zone: String,
        signature: Pending,
    ) -> Self {
        Self::of(name, Spec::Cron { expression, zone }, signature)
    }

    /// The IANA time zone a cron entry's expression is read in (`Asia/Shanghai`, `Europe/Paris`):
    /// `0 0 9 * * *` is 09:00 there, summer and winter. Ignored by an interval entry.
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        if let Spec::Cron { zone: current, .. } = &mut self.spec {
            *current = zone.into();
        }
        self
    }

    /// Sends each tick up to `up_to` late, by an amount every process derives alike from the
    /// entry's name and the tick, so that entries due at the same time do not all start at once.
    pub fn jitter(mut self, up_to: Duration) -> Self {
        self.jitter = up_to;
        self
    }

    /// What a leader sends of the ticks it finds missed ([`CatchUp::All`] unless told).
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// Checks the entry and encodes its task with `app`'s codec.
    pub(super) fn plan(self, app: &App) -> Result<(EntryTiming, Step), BuildError> {
        let invalid = |reason: String| BuildError::BeatEntry {
            entry: self.name.clone(),
            reason,
        };
        if self.name.is_empty() {
            return Err(invalid("an entry's name must not be empty".to_owned()));
        }
        let schedule = match &self.spec {
            Spec::Every(interval) => {
                let schedule = Schedule::every(*interval).map_err(invalid)?;
                if self.jitter >= *interval {
                    return Err(invalid(format!(
                        "its jitter ({:?}) must be shorter than its interval ({interval:?})",
                        self.jitter
                    )));
                }
                schedule
            }
            Spec::Cron { expression, zone } => Schedule::cron(expression, zone).map_err(invalid)?,
        };
        let step = self
            .signature
            .into_step(app)
            .map_err(|error| invalid(crate::error::Report(&error).to_string()))?;
        let timing = EntryTiming {
            name: self.name,
            schedule,
            catch_up: self.catch_up,
            jitter: self.jitter,
        };
        Ok((timing, step))
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("schedule", &self.spec)
            .field("task", &self.signature.name())
            .field("jitter", &self.jitter)
            .field("catch_up", &self.catch_up)
            .finish()
    }
}

/// An entry's name and when its ticks fall: what the ledger plans with.
#[derive(Debug)]
pub(crate) struct EntryTiming {
    pub(crate) name: String,
    pub(crate) schedule: Schedule,
    pub(crate) catch_up: CatchUp,
    pub(crate) jitter: Duration,
}

impl EntryTiming {
    /// How late `tick` is sent (see [`Entry::jitter`]).
    pub(crate) fn jitter_of(&self, tick: Millis) -> Millis {
        jitter(&self.name, tick, self.jitter)
    }
}
