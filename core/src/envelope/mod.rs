//! The message envelope: everything a worker needs to run a task, independent of the broker.
//!
//! The fields mirror the headers and properties of Celery's message protocol v2 that have a meaning here,
//! so a Celery-compatible wire mode is a mapping, not a redesign:
//!
//! | celeriac field       | Celery protocol v2                          |
//! |----------------------|---------------------------------------------|
//! | `id`                 | header `id`, property `correlation_id`      |
//! | `task`               | header `task`                               |
//! | `queue`              | `delivery_info.routing_key`                 |
//! | `args`               | body (`[args, kwargs, embed]` in Celery)    |
//! | `content_type`       | property `content_type`                     |
//! | `retries`            | header `retries`                            |
//! | `eta`                | header `eta` (ISO 8601 there)               |
//! | `expires`            | header `expires`                            |
//! | `priority`           | property `priority`                         |
//! | `time_limit`         | header `timelimit` (`[hard, soft]`: the lower) |
//! | `parent_id`          | header `parent_id`                          |
//! | `root_id`            | header `root_id`                            |
//! | `created_at`         | (none; celeriac's own, for queue-wait time) |
//! | `headers`            | any other application header                |
//! | `args_schema`        | (none; celeriac's own, see below)           |
//! | `store_result`       | header `ignore_result`, inverted            |
//! | `workflow`           | body's `embed` (`chain`, `callbacks`, `errbacks`, `chord`) |
//! | `reply_to`           | property `reply_to`                         |
//!
//! Every field has a meaning today, and a test. Celery's `group`, `origin` and `shadow` are not
//! carried until the features that give them a meaning land; the format version lets them return.
//! [`celeriac::celery`](crate::celery) (feature `celery`) reads and writes Celery's own format.
//!
//! On the wire an envelope is a 4-byte magic (`CLR` + format version) followed by its bincode encoding.
//! [`Envelope::from_bytes`] enforces [`DecodeLimits`] and never panics on any input. Format 3 dropped
//! the fields no feature set or read; format 4 added `store_result`; format 5 added `workflow` and `reply_to`; format 2 added `args_schema`. Messages of formats 1 and 2
//! (celeriac 0.1, and before this change) still decode: see `legacy`.
//!
//! `args_schema` is a fingerprint of the shape of the task's argument types as the sender knew them.
//! A worker whose own differs dead-letters the message instead of decoding arguments written for
//! another version of the task (a rolling deploy): see [`Envelope::args_schema`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::codec::{CodecError, DecodeLimits};

mod legacy;
mod workflow;

pub use self::workflow::{ChainLink, ChordMember, Step, Workflow};

/// A task's unique id (a random UUID v4), assigned when the task is enqueued and kept across retries.
///
/// ```
/// use celeriac::TaskId;
///
/// let id = TaskId::new();
/// let parsed: TaskId = id.to_string().parse()?;
/// assert_eq!(id, parsed);
/// # Ok::<(), uuid::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id as a UUID.
    pub const fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for TaskId {
    fn from(uuid: uuid::Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0.hyphenated())
    }
}

impl FromStr for TaskId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// One task message. See the [module documentation](self) for its mapping to Celery's protocol.
///
/// ```
/// use celeriac::codec::DecodeLimits;
/// use celeriac::envelope::Envelope;
///
/// let envelope = Envelope::new("ccp_send_sms_code", "celery", b"args".to_vec(), "application/x-bincode");
/// let bytes = envelope.to_bytes()?;
/// let back = Envelope::from_bytes(&bytes, &DecodeLimits::default())?;
/// assert_eq!(back, envelope);
/// # Ok::<(), celeriac::codec::CodecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Envelope {
    /// The task's id, kept across retries.
    pub id: TaskId,
    /// The registered task name, e.g. `ccp_send_sms_code`.
    pub task: String,
    /// The queue the message was sent to.
    pub queue: String,
    /// The encoded arguments.
    pub args: Vec<u8>,
    /// The MIME type of `args`, naming the codec that decodes them.
    pub content_type: String,
    /// How many times this task has been retried so far.
    pub retries: u32,
    /// Not to be run before this time.
    pub eta: Option<SystemTime>,
    /// Not to be run after this time; an expired task is discarded and counted.
    pub expires: Option<SystemTime>,
    /// Message priority, 0 (lowest) to 9 (highest).
    pub priority: Option<u8>,
    /// A time limit for this run, overriding the task's own: past it the run is cancelled and counts
    /// as a failure.
    pub time_limit: Option<Duration>,
    /// When the task was first enqueued.
    pub created_at: SystemTime,
    /// The task that enqueued this one, if any.
    pub parent_id: Option<TaskId>,
    /// The first task of the workflow this one belongs to.
    pub root_id: Option<TaskId>,
    /// Free-form application headers.
    pub headers: BTreeMap<String, String>,
    /// A fingerprint of the serde shape of the task's argument types in the sender's build; `None`
    /// when sent by name ([`App::send_task`](crate::App::send_task)) or for a type that cannot be
    /// traced. A worker refuses arguments whose fingerprint differs from its own.
    pub args_schema: Option<u64>,
    /// Whether the worker stores the task's outcome in the app's result backend, for
    /// [`AsyncResult`](crate::AsyncResult)s to read (Celery's `ignore_result`, inverted). The sender
    /// sets it from the task's options.
    pub store_result: bool,
    /// What follows this task in its workflow, if it is part of one: the rest of its chain, its
    /// callbacks, its chord. Travels with the message, so a workflow needs no coordinator.
    pub workflow: Option<Box<Workflow>>,
    /// Where the worker sends the task's result, for result backends that send each result to its
    /// caller (RabbitMQ's RPC backend: the caller's reply queue; Celery's `reply_to`). `None` for
    /// the others.
    pub reply_to: Option<String>,
}

const MAGIC: [u8; 4] = *b"CLR\x05";

impl Envelope {
    /// A new envelope with a fresh id, created now, with no retries, ETA, expiry or links.
    pub fn new(
        task: impl Into<String>,
        queue: impl Into<String>,
        args: Vec<u8>,
        content_type: impl Into<String>,
    ) -> Self {
        Self {
            id: TaskId::new(),
            task: task.into(),
            queue: queue.into(),
            args,
            content_type: content_type.into(),
            retries: 0,
            eta: None,
            expires: None,
            priority: None,
            time_limit: None,
            created_at: crate::clock::now(),
            parent_id: None,
            root_id: None,
            headers: BTreeMap::new(),
            args_schema: None,
            store_result: false,
            workflow: None,
            reply_to: None,
        }
    }

    /// Encodes the envelope for a broker.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let body = crate::codec::bincode::encode_typed(self)?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + body.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Decodes an envelope, enforcing `limits`. Any bytes that are not an envelope are an error.
    pub fn from_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<Self, CodecError> {
        limits.check(bytes)?;
        if let Some(body) = bytes.strip_prefix(&MAGIC) {
            return crate::codec::bincode::decode_typed(body, limits);
        }
        // Celery's task message, in kombu's JSON envelope: a JSON object.
        #[cfg(feature = "celery")]
        if bytes.first() == Some(&b'{') {
            return crate::celery::decode(bytes);
        }
        if let Some(envelope) = legacy::decode(bytes, limits) {
            return envelope;
        }
        Err(CodecError::Decode {
            content_type: "celeriac envelope",
            source: "not a celeriac envelope (bad magic bytes)".into(),
        })
    }

    /// Whether the task has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|expires| expires <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_envelope() -> Envelope {
        let mut envelope = Envelope::new("t", "q", vec![1, 2, 3], "application/json");
        envelope.retries = 2;
        envelope.eta = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        envelope.expires = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        envelope.priority = Some(7);
        envelope.time_limit = Some(Duration::from_millis(7500));
        envelope.parent_id = Some(TaskId::new());
        envelope.root_id = Some(TaskId::new());
        envelope.headers.insert("k".into(), "v".into());
        envelope.args_schema = Some(0xfeed_f00d);
        envelope.store_result = true;
        let step = Step {
            id: TaskId::new(),
            task: "next".into(),
            queue: "q2".into(),
            args: vec![4, 5],
            content_type: "application/x-bincode".into(),
            takes_previous: true,
            args_schema: Some(9),
            store_result: true,
            priority: Some(1),
            time_limit: Some(Duration::from_secs(3)),
            countdown: Some(Duration::from_millis(10)),
            eta: None,
            expires_in: Some(Duration::from_secs(60)),
            expires_at: None,
            headers: BTreeMap::from([("h".to_owned(), "v".to_owned())]),
            reply_to: Some("celeriac.reply.x".into()),
        };
        let mut link = ChainLink::new(step.clone());
        link.link_error.push(step.clone());
        envelope.workflow = Some(Box::new(Workflow {
            chain: vec![link.clone()],
            link: vec![step.clone()],
            link_error: vec![step],
            chord: Some(ChordMember {
                chord: TaskId::new(),
                index: 3,
                size: 10,
                callback: link,
                link_error: Vec::new(),
            }),
            chord_callback: false,
        }));
        envelope.reply_to = Some("celeriac.reply.y".into());
        envelope
    }

    #[test]
    fn round_trips_every_field() {
        let envelope = full_envelope();
        let bytes = envelope.to_bytes().unwrap();
        assert_eq!(
            Envelope::from_bytes(&bytes, &DecodeLimits::default()).unwrap(),
            envelope
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = full_envelope().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(Envelope::from_bytes(&bytes[..cut], &DecodeLimits::default()).is_err());
        }
    }

    #[test]
    fn oversized_is_refused() {
        let mut envelope = full_envelope();
        envelope.args = vec![0; 10_000];
        let bytes = envelope.to_bytes().unwrap();
        let limits = DecodeLimits::default().max_message_bytes(1_000);
        let err = Envelope::from_bytes(&bytes, &limits).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(42);
        let good = full_envelope().to_bytes().unwrap();
        let limits = DecodeLimits::default();
        for _ in 0..20_000 {
            let mut bytes = if rng.bool() {
                good.clone()
            } else {
                let mut b = MAGIC.to_vec();
                let len = rng.usize(0..200);
                b.extend(std::iter::repeat_with(|| rng.u8(..)).take(len));
                b
            };
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(..);
            }
            let _ = Envelope::from_bytes(&bytes, &limits);
        }
    }

    #[test]
    fn bad_magic_is_reported() {
        let err = Envelope::from_bytes(b"hello world", &DecodeLimits::default()).unwrap_err();
        let shown = crate::error::Report(&err).to_string();
        assert!(shown.contains("not a celeriac envelope"), "{shown}");
    }
}
