//! Celery's wire format (feature `celery`): task messages of Celery's protocol 2, so that Python
//! Celery and celeriac send each other tasks.
//!
//! A message travels as kombu's virtual transports (Redis among them) carry it: one JSON object
//! with the body in base64, the headers and the properties (see `message`). A worker reads such a
//! message wherever it finds one: [`Envelope::from_bytes`](crate::Envelope::from_bytes) tells it
//! from celeriac's own format by its first byte. An app built with
//! [`AppBuilder::celery_compat`](crate::AppBuilder::celery_compat) sends its tasks so, and Python
//! workers run them.
//!
//! What maps onto what (the rest of [`Envelope`]'s fields are celeriac's own):
//!
//! | Celery | celeriac |
//! |---|---|
//! | header `id` (a UUID), `task` | [`Envelope::id`], [`Envelope::task`] |
//! | body `[args, kwargs, embed]` | [`Envelope::args`]: `[args, kwargs]` as JSON, content type [`ARGS_CONTENT_TYPE`] |
//! | header `retries` | [`Envelope::retries`] |
//! | headers `eta`, `expires` (ISO 8601; without an offset, UTC) | [`Envelope::eta`], [`Envelope::expires`] |
//! | header `timelimit` (`[hard, soft]`, seconds) | [`Envelope::time_limit`]: the lower of the two |
//! | headers `parent_id`, `root_id` | [`Envelope::parent_id`], [`Envelope::root_id`] |
//! | header `ignore_result` | [`Envelope::store_result`], inverted |
//! | any other header | [`Envelope::headers`] (values that are not strings as JSON text) |
//! | properties `priority`, `reply_to` | [`Envelope::priority`], [`Envelope::reply_to`] |
//! | property `delivery_info.routing_key` | [`Envelope::queue`] |
//!
//! A task's arguments bind as Python binds a call: positional arguments first, then keyword
//! arguments by the names of the task function's parameters ([`Task::ARG_NAMES`](crate::Task::ARG_NAMES)).
//! A missing, extra or twice-given argument, or one of the wrong type, fails the task with a reason
//! that names it, and it is dead-lettered.
//!
//! Workflows: a message's `embed.chain` and `embed.callbacks` (a chain or `link` built in Python)
//! become the envelope's workflow, so a Rust worker sends the next step, with its output first in
//! the step's arguments unless the signature is immutable; and a Rust worker's next step is sent
//! with Celery's `embed`, so Python workers carry on. Error callbacks (`errbacks`, `link_error`) are
//! sent with the failed task's id first, as Celery sends those it cannot call in its own process.
//! Not honoured yet, and refused with a reason rather than dropped: chords and nested workflows as
//! steps. A task id that is not a UUID (Celery allows any string) is refused too.
//!
//! [`Envelope`]: crate::Envelope
//! [`Envelope::id`]: crate::Envelope::id
//! [`Envelope::task`]: crate::Envelope::task
//! [`Envelope::args`]: crate::Envelope::args
//! [`Envelope::retries`]: crate::Envelope::retries
//! [`Envelope::eta`]: crate::Envelope::eta
//! [`Envelope::expires`]: crate::Envelope::expires
//! [`Envelope::time_limit`]: crate::Envelope::time_limit
//! [`Envelope::parent_id`]: crate::Envelope::parent_id
//! [`Envelope::root_id`]: crate::Envelope::root_id
//! [`Envelope::store_result`]: crate::Envelope::store_result
//! [`Envelope::headers`]: crate::Envelope::headers
//! [`Envelope::priority`]: crate::Envelope::priority
//! [`Envelope::reply_to`]: crate::Envelope::reply_to
//! [`Envelope::queue`]: crate::Envelope::queue

mod arguments;
mod canvas;
mod convert;
mod incoming;
mod message;
mod outgoing;
mod results;
#[cfg(test)]
mod tests;

pub(crate) use self::arguments::{bind, name_the_argument};
pub(crate) use self::canvas::{failed_task_id, place_in_group, prepend_result};
pub(crate) use self::convert::{decode, encode};
pub(crate) use self::results::{from_meta, to_meta};

/// The content type of a Celery task's arguments inside an [`Envelope`](crate::Envelope): the
/// JSON array `[args, kwargs]`, bound to the task's parameters when it runs.
pub const ARGS_CONTENT_TYPE: &str = "application/x-celery-args+json";

/// Why a Celery message cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeleryError {
    /// The message is not kombu's JSON envelope.
    #[error("not a celeriac envelope nor a Celery message: {0}")]
    Envelope(String),
    /// A header or property is missing or wrong.
    #[error("Celery header `{name}`: {reason}")]
    Header {
        /// The header (or property).
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not Celery's `[args, kwargs, embed]`.
    #[error("Celery body: {0}")]
    Body(String),
    /// The arguments do not fit the task's parameters.
    #[error("Celery arguments: {0}")]
    Arguments(String),
    /// The message asks for something celeriac does not do in Celery's format yet.
    #[error("not supported in Celery's format yet: {0}")]
    Unsupported(String),
}

impl CeleryError {
    fn header(name: &'static str, reason: impl Into<String>) -> Self {
        Self::Header {
            name,
            reason: reason.into(),
        }
    }

    /// As a codec error, which is how decoding failures reach the worker.
    fn decoding(self) -> crate::codec::CodecError {
        crate::codec::CodecError::Decode {
            content_type: "Celery message",
            source: Box::new(self),
        }
    }

    /// As a codec error, for failures to write a message.
    fn encoding(self) -> crate::codec::CodecError {
        crate::codec::CodecError::Encode {
            content_type: "Celery message",
            source: Box::new(self),
        }
    }
}
