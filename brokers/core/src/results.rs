//! The contract between celeriac and its result backends: where task outcomes are kept until a
//! caller's `AsyncResult::get` reads them.
//!
//! A backend stores opaque records (celeriac encodes them) under a task id, each tagged with the
//! [`ResultState`] it records. It enforces one rule itself, because tasks run at least once and two
//! runs of one task may both write: **a stored outcome is never made worse** — see
//! [`ResultState::replaces`]. A backend also wakes the callers waiting on a task when its outcome is
//! stored ([`ResultBackend::wait_ready`]), without polling.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::BrokerError;

/// A task's state as its result backend knows it (Celery's task states).
///
/// ```
/// use celeriac::ResultState;
///
/// assert!(ResultState::Success.is_ready());
/// assert!(!ResultState::Retry.is_ready());
/// // A second run's failure never replaces the first run's success:
/// assert!(!ResultState::Failure.replaces(ResultState::Success));
/// assert!(ResultState::Success.replaces(ResultState::Failure));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResultState {
    /// Nothing is known of the task: it is queued, its result expired or was forgotten, its task
    /// ignores results, or there is no such task.
    Pending,
    /// A worker started it (recorded only for tasks with `track_started`).
    Started,
    /// It failed and a retry is scheduled.
    Retry,
    /// It succeeded; its output is stored.
    Success,
    /// It failed for good (after its retries) or was dead-lettered.
    Failure,
    /// It was discarded before it ran: expired, or revoked.
    Revoked,
}

impl ResultState {
    /// Whether the task is over: success, failure or revoked.
    pub const fn is_ready(self) -> bool {
        matches!(self, Self::Success | Self::Failure | Self::Revoked)
    }

    /// The byte that stands for the state in stored records.
    pub const fn code(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Started => 1,
            Self::Retry => 2,
            Self::Success => 3,
            Self::Failure => 4,
            Self::Revoked => 5,
        }
    }

    /// The state a stored byte stands for.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Pending,
            1 => Self::Started,
            2 => Self::Retry,
            3 => Self::Success,
            4 => Self::Failure,
            5 => Self::Revoked,
            _ => return None,
        })
    }

    /// How far along a task in this state is: in progress, over without success, succeeded.
    const fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Started | Self::Retry => 1,
            Self::Failure | Self::Revoked => 2,
            Self::Success => 3,
        }
    }

    /// Whether a record in this state may replace a stored record in state `current`.
    ///
    /// A task may run twice (at-least-once delivery); the rule keeps its outcome from getting worse:
    /// nothing replaces a success (the first success wins), a failure replaces anything but a
    /// success, and progress (started, retry) replaces only progress. A later success replaces a
    /// failure: a dead letter that was replayed and then succeeded did succeed.
    pub const fn replaces(self, current: ResultState) -> bool {
        let (new, old) = (self.rank(), current.rank());
        new > old || (new == old && new < Self::Success.rank())
    }
}

impl fmt::Display for ResultState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Celery's spelling, which operators know.
        f.write_str(match self {
            Self::Pending => "PENDING",
            Self::Started => "STARTED",
            Self::Retry => "RETRY",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Revoked => "REVOKED",
        })
    }
}

/// One stored record: its state and its body (encoded by celeriac; opaque to the backend).
///
/// ```
/// use celeriac::{ResultState, StoredResult};
///
/// let stored = StoredResult::new(ResultState::Success, b"output".to_vec());
/// let bytes = stored.to_bytes();
/// assert_eq!(StoredResult::from_bytes(&bytes)?, stored);
/// # Ok::<(), celeriac::BrokerError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResult {
    /// The state the record is in.
    pub state: ResultState,
    /// The record, as celeriac encoded it.
    pub body: Bytes,
}

impl StoredResult {
    /// A record in `state`.
    pub fn new(state: ResultState, body: impl Into<Bytes>) -> Self {
        Self {
            state,
            body: body.into(),
        }
    }

    /// The record as one byte string: the state's [code](ResultState::code), then the body. Backends
    /// that keep bytes (Redis) store this, so a script can read the state from the first byte.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + self.body.len());
        bytes.push(self.state.code());
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote. Anything else is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BrokerError> {
        let invalid = || BrokerError::Invalid("a stored result that celeriac did not write".into());
        let (&code, body) = bytes.split_first().ok_or_else(invalid)?;
        let state = ResultState::from_code(code).ok_or_else(invalid)?;
        Ok(Self::new(state, Bytes::copy_from_slice(body)))
    }
}

/// Where task outcomes are kept: the memory backend in `celeriac`, Redis in `celeriac-redis`,
/// RabbitMQ's reply queues in `celeriac-amqp`, or yours.
///
/// Object safe; an app holds one as `Arc<dyn ResultBackend>`. Ids are task ids as text.
#[async_trait]
pub trait ResultBackend: Send + Sync + fmt::Debug + 'static {
    /// The backend's system, for logs: `memory`, `redis`, `rabbitmq`, ….
    fn system(&self) -> &'static str;

    /// Where the backend is, with any password replaced by `***`.
    fn redacted_url(&self) -> String;

    /// Stores `result` for task `id`, kept for `ttl`, unless the stored record's state wins
    /// ([`ResultState::replaces`]); wakes the callers waiting on `id` when the new state is ready.
    /// Returns whether it was stored. Checking and writing are one atomic step.
    async fn store(
        &self,
        id: &str,
        result: StoredResult,
        ttl: Duration,
    ) -> Result<bool, BrokerError>;

    /// The stored record of task `id`, if any.
    async fn fetch(&self, id: &str) -> Result<Option<StoredResult>, BrokerError>;

    /// Waits until task `id` has a ready record ([`ResultState::is_ready`]) and returns it. Waiting
    /// is push (pub/sub, a reply consumer, a channel), never a polling loop; dropping the future
    /// stops waiting. Callers bound the wait with a timeout.
    async fn wait_ready(&self, id: &str) -> Result<StoredResult, BrokerError>;

    /// Deletes the record of task `id`. A later run of the task may store a new one.
    async fn forget(&self, id: &str) -> Result<(), BrokerError>;

    /// Where this process's results are to be sent, for a backend that sends each result to its
    /// caller (RabbitMQ's RPC backend: the caller's reply queue). The app writes it in each message
    /// it sends (`Envelope::reply_to`) and the worker hands it back to
    /// [`store_reply`](Self::store_reply). `None` (the default) for backends that store results
    /// where anyone can read them. It never changes for a backend.
    fn reply_to(&self) -> Option<String> {
        None
    }

    /// Gets ready to receive the results of tasks about to be sent (the RPC backend declares its
    /// reply queue). Called before a send when [`reply_to`](Self::reply_to) is set; the default does
    /// nothing.
    async fn prepare(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Stores a result for a task whose message asked for replies to `reply_to`. The default ignores
    /// `reply_to` and [stores](Self::store) it.
    async fn store_reply(
        &self,
        id: &str,
        reply_to: Option<&str>,
        result: StoredResult,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let _ = reply_to;
        self.store(id, result, ttl).await
    }

    /// Keeps the ids of group `group`'s members, in order, for `ttl` (Celery's
    /// `GroupResult.save()`), so that [`restore_group`](Self::restore_group) finds them by the
    /// group's id alone. The default keeps them as a record of its own (under
    /// `celeriac-group-<group>`) through [`store`](Self::store); what was kept first under an id
    /// stays, a group's members never changing.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use celeriac_core::{MemoryResultBackend, ResultBackend};
    ///
    /// let backend = MemoryResultBackend::new();
    /// let members = ["a".to_owned(), "b".to_owned()];
    /// backend.save_group("g", &members, Duration::from_secs(60)).await?;
    /// assert_eq!(backend.restore_group("g").await?, Some(members.to_vec()));
    /// assert_eq!(backend.restore_group("unknown").await?, None);
    /// # Ok::<(), celeriac_core::BrokerError>(()) }).unwrap();
    /// ```
    async fn save_group(
        &self,
        group: &str,
        members: &[String],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let record = StoredResult::new(ResultState::Success, members.join("\n"));
        self.store(&group_record(group), record, ttl).await?;
        Ok(())
    }

    /// The ids of group `group`'s members, as [`save_group`](Self::save_group) kept them; `None`
    /// when none are kept (never saved, expired or forgotten).
    async fn restore_group(&self, group: &str) -> Result<Option<Vec<String>>, BrokerError> {
        let Some(record) = self.fetch(&group_record(group)).await? else {
            return Ok(None);
        };
        let members = std::str::from_utf8(&record.body).map_err(|_| {
            BrokerError::Invalid(format!("the members kept for group {group} are not text"))
        })?;
        Ok(Some(if members.is_empty() {
            Vec::new()
        } else {
            members.split('\n').map(str::to_owned).collect()
        }))
    }

    /// Deletes what [`save_group`](Self::save_group) kept for group `group` (Celery's
    /// `GroupResult.delete()`); the members' own results stay.
    async fn forget_group(&self, group: &str) -> Result<(), BrokerError> {
        self.forget(&group_record(group)).await
    }

    /// Whether this backend joins chords ([`join_chord`](Self::join_chord) and
    /// [`chord_fired`](Self::chord_fired)). The default is no.
    fn joins_chords(&self) -> bool {
        false
    }

    /// Keeps the size of chord `chord` for `ttl`, before its members are sent, for a backend that
    /// keeps chord sizes itself as Celery's does (its members then carry size `0`, and
    /// [`join_chord`](Self::join_chord) reads the size kept here). Returns whether it kept it; the
    /// default keeps nothing and answers `false`: the members carry their chord's size.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use celeriac_core::{ChordJoin, ChordPart, MemoryResultBackend, ResultBackend};
    ///
    /// let backend = MemoryResultBackend::new();
    /// let ttl = Duration::from_secs(60);
    /// assert!(backend.keep_chord_size("chord", 2, ttl).await?);
    /// let join = |index, id| backend.join_chord(ChordPart::new("chord", index, 0, id), "1".into(), ttl);
    /// assert_eq!(join(0, "a").await?, ChordJoin::Waiting);
    /// assert!(matches!(join(1, "b").await?, ChordJoin::Complete(outputs) if outputs.len() == 2));
    /// # Ok::<(), celeriac_core::BrokerError>(()) }).unwrap();
    /// ```
    async fn keep_chord_size(
        &self,
        chord: &str,
        size: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let _ = (chord, size, ttl);
        Ok(false)
    }

    /// Records the output of chord member `part`, kept for `ttl`, in one atomic step, and says
    /// whether the caller is to send the chord's callback.
    ///
    /// The join is idempotent: a member recorded twice (a run repeated after a crash) keeps its first
    /// output and counts once. It answers [`ChordJoin::Complete`] to the write that records the last
    /// member, and again to a repeated member's write while the chord is complete but not yet
    /// [fired](Self::chord_fired) (the first sender may have died before sending): the callback is sent
    /// exactly once in normal runs and at least once across a crash.
    async fn join_chord(
        &self,
        part: ChordPart<'_>,
        output: Bytes,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        let _ = (part, output, ttl);
        Err(BrokerError::Unsupported {
            system: self.system(),
            feature: "chords",
        })
    }

    /// Records that chord `chord`'s callback was sent: later joins answer [`ChordJoin::Waiting`].
    async fn chord_fired(&self, chord: &str, ttl: Duration) -> Result<(), BrokerError> {
        let _ = (chord, ttl);
        Err(BrokerError::Unsupported {
            system: self.system(),
            feature: "chords",
        })
    }

    /// Records that chord member `part` failed for good, with `error`. Answers
    /// [`ChordJoin::Failed`] with the chord's failure when the caller is to fail the chord now
    /// (store its failure, send its error callbacks), [`ChordJoin::Waiting`] otherwise (never
    /// `Complete`): at the chord's first failure (or the same member's again), so that happens
    /// once per chord, and again only by a repeat of the run that did it. A backend that reports a
    /// chord's failure only once every member is in, as Celery's does, answers `Failed` to the
    /// member that completes it, whether that member failed or succeeded.
    async fn fail_chord(
        &self,
        part: ChordPart<'_>,
        error: &str,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        let _ = (part, error, ttl);
        Err(BrokerError::Unsupported {
            system: self.system(),
            feature: "chords",
        })
    }
}

/// The id under which the default [`ResultBackend::save_group`] keeps a group's members: never a
/// task's id (those are UUIDs).
fn group_record(group: &str) -> String {
    format!("celeriac-group-{group}")
}

/// A chord member, as a result backend joins it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChordPart<'a> {
    /// The chord's id: its join's key.
    pub chord: &'a str,
    /// The member's place in the chord's group, from 0.
    pub index: u32,
    /// How many members the chord has; `0` when the backend keeps that itself (Celery's chords,
    /// whose sender writes their size to the result backend).
    pub size: u32,
    /// The member's task id.
    pub task_id: &'a str,
}

impl<'a> ChordPart<'a> {
    /// Member `index` (of `size`) of chord `chord`, run as task `task_id`.
    ///
    /// ```
    /// let part = celeriac_core::ChordPart::new("chord-id", 2, 5, "task-id");
    /// assert_eq!((part.index, part.size), (2, 5));
    /// ```
    pub fn new(chord: &'a str, index: u32, size: u32, task_id: &'a str) -> Self {
        Self {
            chord,
            index,
            size,
            task_id,
        }
    }
}

/// Why a backend that keeps no chord sizes refuses a member of a chord of size 0 (Celery's).
pub const UNSIZED_CHORD: &str = "a Celery chord (its size kept in the result backend) needs Celery's result backend: `celery_compat()` with a `redis://` result backend";

/// What a chord member's [`join`](ResultBackend::join_chord) found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChordJoin {
    /// Members are still missing, or the callback was sent already.
    Waiting,
    /// Every member is in: their outputs, in member order. The caller sends the callback.
    Complete(Vec<Bytes>),
    /// Every member is in, and one failed: why. The caller fails the chord (stores its failure,
    /// sends its error callbacks). Only backends that report failures once every member is in
    /// (Celery's) answer this.
    Failed(String),
}
