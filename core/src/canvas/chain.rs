//! Chains: tasks run one after the other, each output feeding the next.

use std::fmt;
use std::marker::PhantomData;

use super::signature::{Follows, Pending};
use crate::codec::CodecError;
use crate::envelope::{ChainLink, Step, Workflow};
use crate::{App, AsyncResult, EnqueueError, Envelope, clock};

/// Tasks run one after the other, each partial signature getting the previous output as its first
/// argument; `T` is the last task's output. Built with [`Signature::then`](super::Signature::then);
/// every link is type-checked when it is added.
///
/// A link that fails for good stops the chain: the chain's [`AsyncResult`] then reports that link's
/// failure (its name and id), and later links never run.
///
/// ```compile_fail
/// #[celeriac::task]
/// async fn add(a: i64, b: i64) -> Result<i64, std::io::Error> { Ok(a + b) }
///
/// #[celeriac::task]
/// async fn shout(text: String) -> Result<String, std::io::Error> { Ok(text.to_uppercase()) }
///
/// // `shout` takes a `String`, `add` returns an `i64`: this does not build.
/// let chain = add::s(2, 3).then(shout::partial());
/// ```
#[must_use = "a chain does nothing until it is sent"]
pub struct Chain<T> {
    links: Vec<Pending>,
    output: PhantomData<fn() -> T>,
}

impl<T> Chain<T> {
    pub(super) fn new(links: Vec<Pending>) -> Self {
        Self {
            links,
            output: PhantomData,
        }
    }

    /// The chain, then `next` with its output.
    pub fn then<N: Follows<T>>(mut self, next: N) -> Chain<N::Output> {
        self.links.push(next.into_pending());
        Chain::new(self.links)
    }

    /// How many tasks it has.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether it has no task (never: a chain starts with one).
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Sends the chain's first task, which carries the rest. Its result is the last task's, which
    /// is stored whatever that task's `ignore_result` says.
    pub async fn delay(self, app: &App) -> Result<AsyncResult<T>, EnqueueError> {
        let id = send_chain(app, self.links, true).await?;
        Ok(AsyncResult::new(app.clone(), id, None))
    }
}

impl<T> fmt::Debug for Chain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tasks: Vec<_> = self.links.iter().map(Pending::name).collect();
        f.debug_struct("Chain").field("tasks", &tasks).finish()
    }
}

/// Sends the first of `links` carrying the others, and returns the last one's id. The last stores
/// its result when `store_last`.
pub(super) async fn send_chain(
    app: &App,
    mut links: Vec<Pending>,
    store_last: bool,
) -> Result<crate::TaskId, EnqueueError> {
    let Some(last) = links.last_mut() else {
        return Err(EnqueueError::InvalidOptions {
            task: "(chain)".to_owned(),
            reason: "a chain needs at least one task".into(),
        });
    };
    let last_id = last.id();
    if store_last {
        last.store_result = true;
    }
    let mut links = links
        .into_iter()
        .map(|link| link.into_chain_link(app))
        .collect::<Result<Vec<_>, _>>()?;
    let first = links.remove(0);
    let rest = Workflow {
        chain: links,
        ..Workflow::default()
    };
    app.publish(first_message(first, rest)).await?;
    Ok(last_id)
}

/// The message of a workflow's first task (it has no previous output): `link`'s task with its
/// callbacks, and `rest` of the workflow (a chain's later links, a chord's place).
pub(super) fn first_message(link: ChainLink, rest: Workflow) -> Envelope {
    let ChainLink {
        mut step,
        link,
        link_error,
    } = link;
    let args = std::mem::take(&mut step.args);
    let mut envelope = step.into_envelope(clock::now(), args);
    envelope.workflow = workflow(Workflow {
        link,
        link_error,
        ..rest
    });
    envelope
}

/// `workflow`, unless there is nothing in it.
pub(crate) fn workflow(workflow: Workflow) -> Option<Box<Workflow>> {
    (!workflow.is_empty()).then(|| Box::new(workflow))
}

/// The message of `step`, sent after the task of `parent` (if any) whose output is `previous`
/// (encoded with `app`'s codec): a partial step gets it as its first argument.
pub(crate) fn next_message(
    app: &App,
    mut step: Step,
    parent: Option<&Envelope>,
    previous: &[u8],
) -> Result<Envelope, CodecError> {
    let mut args = std::mem::take(&mut step.args);
    #[cfg(feature = "celery")]
    if step.takes_previous && step.content_type == crate::celery::ARGS_CONTENT_TYPE {
        // A step of a Celery workflow: the output goes first in Celery's `args`.
        args =
            crate::celery::prepend_result(previous, &args).map_err(|error| CodecError::Encode {
                content_type: "Celery arguments",
                source: Box::new(error),
            })?;
        step.takes_previous = false;
    }
    if step.takes_previous {
        let codec = app.codec();
        if step.content_type != codec.content_type() {
            return Err(CodecError::UnsupportedContentType(format!(
                "{} (the step's arguments are in it, the previous output in {})",
                step.content_type,
                codec.content_type()
            )));
        }
        args = codec.prepend_arg(previous, &args)?;
    }
    let mut envelope = step.into_envelope(clock::now(), args);
    if let Some(parent) = parent {
        envelope.parent_id = Some(parent.id);
        envelope.root_id = Some(parent.root_id.unwrap_or(parent.id));
    }
    Ok(envelope)
}

/// The messages of `chain`'s next link after `parent`: `None` when the chain is over.
pub(crate) fn next_in_chain(
    app: &App,
    chain: &[ChainLink],
    parent: &Envelope,
    previous: &[u8],
) -> Option<Result<Envelope, CodecError>> {
    let (next, rest) = chain.split_first()?;
    Some(
        next_message(app, next.step.clone(), Some(parent), previous).map(|mut envelope| {
            envelope.workflow = workflow(Workflow {
                chain: rest.to_vec(),
                link: next.link.clone(),
                link_error: next.link_error.clone(),
                ..Workflow::default()
            });
            envelope
        }),
    )
}
