//! Groups (signatures run at once) and chords (a group, then a callback with all its outputs).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::TaskFailure;
use super::chain::{first_message, next_message};
use super::signature::{Follows, Pending, Signature};
use crate::envelope::{ChordMember, Workflow};
use crate::result::ResultBackend;
use crate::{App, AsyncResult, EnqueueError, ResultError, Task, TaskId};

/// Signatures of one output type, sent at once; `T` is that type. Built with [`group`] or
/// [`Group::new`] and [`Group::push`].
#[must_use = "a group does nothing until it is sent"]
pub struct Group<T> {
    members: Vec<Pending>,
    output: PhantomData<fn() -> T>,
}

/// A group of signatures of task `T`.
///
/// ```
/// use std::time::Duration;
/// use celeriac::App;
/// use celeriac::canvas::group;
///
/// #[celeriac::task]
/// async fn square(n: u64) -> Result<u64, std::io::Error> {
///     Ok(n * n)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder().broker_url("memory://group-doc").register::<square>().build()?;
/// tokio::spawn(app.worker().build()?.run_until(std::future::pending()));
///
/// let squares = group((1..=4).map(square::s)).delay(&app).await?;
/// assert_eq!(squares.get_timeout(Duration::from_secs(5)).await?, [1, 4, 9, 16]);
/// # Ok(()) }
/// ```
pub fn group<T: Task>(members: impl IntoIterator<Item = Signature<T>>) -> Group<T::Output> {
    Group {
        members: members.into_iter().map(Signature::pending).collect(),
        output: PhantomData,
    }
}

impl<T> Group<T> {
    /// An empty group.
    pub fn new() -> Self {
        Self {
            members: Vec::new(),
            output: PhantomData,
        }
    }

    /// Adds a member: a signature of any task returning `T`.
    pub fn push<M: Task<Output = T>>(mut self, member: Signature<M>) -> Self {
        self.members.push(member.pending());
        self
    }

    /// How many members it has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Sends every member in one batch. Each stores its result, whatever its task's
    /// `ignore_result` says: the [`GroupResult`] reads them.
    ///
    /// In Celery's format ([`AppBuilder::celery_compat`](crate::AppBuilder::celery_compat)) each
    /// member carries the group's id and its place in it (the `group` and `group_index` headers),
    /// as Celery's do.
    pub async fn delay(self, app: &App) -> Result<GroupResult<T>, EnqueueError> {
        let group = TaskId::new();
        let mut ids = Vec::with_capacity(self.members.len());
        let mut messages = Vec::with_capacity(self.members.len());
        for (index, mut member) in self.members.into_iter().enumerate() {
            ids.push(member.id());
            member.store_result = true;
            let link = member.into_chain_link(app)?;
            let mut message = first_message(link, Workflow::default());
            app.place_in_group(&mut message, group, index);
            messages.push(message);
        }
        app.publish_all(messages).await?;
        Ok(GroupResult::new(app, group, ids))
    }
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Group<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("members", &self.members.len())
            .finish()
    }
}

/// The results of a sent [`Group`], in the order its members were added, under the group's id.
///
/// [`save`](Self::save) keeps the members' ids in the result backend, so that another process
/// [`restore`](Self::restore)s the group by its id alone (Celery's `GroupResult.save()` and
/// `GroupResult.restore(id)`; in Celery's format, on Redis, either language restores what the
/// other saved).
///
/// ```
/// use std::time::Duration;
/// use celeriac::App;
/// use celeriac::canvas::{GroupResult, group};
///
/// #[celeriac::task]
/// async fn square(n: u64) -> Result<u64, std::io::Error> {
///     Ok(n * n)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder().broker_url("memory://group-result-doc").register::<square>().build()?;
/// tokio::spawn(app.worker().build()?.run_until(std::future::pending()));
///
/// let sent = group((1..=3).map(square::s)).delay(&app).await?;
/// sent.save().await?;
/// // Later, wherever only the id travelled (a web handler's next request, say):
/// let restored = GroupResult::<u64>::restore(&app, sent.id()).await?.expect("saved");
/// assert_eq!(restored.ids().collect::<Vec<_>>(), sent.ids().collect::<Vec<_>>());
/// assert_eq!(restored.get_timeout(Duration::from_secs(5)).await?, [1, 4, 9]);
/// restored.delete().await?;
/// assert!(GroupResult::<u64>::restore(&app, sent.id()).await?.is_none());
/// # Ok(()) }
/// ```
pub struct GroupResult<T> {
    id: TaskId,
    app: App,
    results: Vec<AsyncResult<T>>,
}

impl<T> GroupResult<T> {
    fn new(app: &App, id: TaskId, members: Vec<TaskId>) -> Self {
        let results = members
            .into_iter()
            .map(|member| AsyncResult::new(app.clone(), member, None))
            .collect();
        Self {
            id,
            app: app.clone(),
            results,
        }
    }

    /// The group's id, which [`save`](Self::save) and [`restore`](Self::restore) name it by.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The members' results.
    pub fn results(&self) -> &[AsyncResult<T>] {
        &self.results
    }

    /// The members' ids.
    pub fn ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.results.iter().map(AsyncResult::id)
    }

    /// How many members the group has.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether the group has no member.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// Keeps the members' ids in the app's result backend, for its `result_expires`, under the
    /// group's [`id`](Self::id) (Celery's `GroupResult.save()`). Saving again keeps the same.
    pub async fn save(&self) -> Result<(), ResultError> {
        let members: Vec<String> = self.ids().map(|id| id.to_string()).collect();
        let ttl = self.app.result_expires();
        self.backend()?
            .save_group(&self.id.to_string(), &members, ttl)
            .await
            .map_err(|source| self.backend_error(source))
    }

    /// Deletes what [`save`](Self::save) kept (Celery's `GroupResult.delete()`); the members' own
    /// results stay.
    pub async fn delete(&self) -> Result<(), ResultError> {
        self.backend()?
            .forget_group(&self.id.to_string())
            .await
            .map_err(|source| self.backend_error(source))
    }

    /// The group saved under `id` (by [`save`](Self::save), or by Python's `GroupResult.save()`
    /// in Celery's format); `None` when nothing is kept under it (never saved, expired or
    /// deleted). `T` is the members' output type, as for [`AsyncResult::from_id`].
    pub async fn restore(app: &App, id: TaskId) -> Result<Option<Self>, ResultError> {
        let backend = app.result_backend().ok_or(ResultError::NoBackend { id })?;
        let backend_error = |source| ResultError::Backend { id, source };
        let Some(members) = backend
            .restore_group(&id.to_string())
            .await
            .map_err(backend_error)?
        else {
            return Ok(None);
        };
        let members = members
            .iter()
            .map(|member| {
                member.parse().map_err(|_| {
                    backend_error(crate::BrokerError::Invalid(format!(
                        "group {id} lists a member whose id is not a UUID: `{member}`"
                    )))
                })
            })
            .collect::<Result<Vec<TaskId>, _>>()?;
        Ok(Some(Self::new(app, id, members)))
    }

    fn backend(&self) -> Result<&std::sync::Arc<dyn ResultBackend>, ResultError> {
        self.app
            .result_backend()
            .ok_or(ResultError::NoBackend { id: self.id })
    }

    fn backend_error(&self, source: crate::BrokerError) -> ResultError {
        ResultError::Backend {
            id: self.id,
            source,
        }
    }
}

impl<T: DeserializeOwned> GroupResult<T> {
    /// Every member's output, in order, once all are ready; the first member error otherwise.
    pub async fn get(&self) -> Result<Vec<T>, ResultError> {
        futures::future::try_join_all(self.results.iter().map(AsyncResult::get)).await
    }

    /// [`get`](Self::get), giving up after `timeout` with [`ResultError::Timeout`] naming a member
    /// still pending.
    pub async fn get_timeout(&self, timeout: Duration) -> Result<Vec<T>, ResultError> {
        let each = self
            .results
            .iter()
            .map(|result| result.get_timeout(timeout));
        futures::future::try_join_all(each).await
    }
}

impl<T> fmt::Debug for GroupResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupResult")
            .field("id", &self.id)
            .field("members", &self.results.len())
            .finish()
    }
}

/// A group, then a callback that gets every member's output (as a `Vec`, in member order) once
/// all have succeeded; `T` is the callback's output. Built with [`chord`].
///
/// Its only shared state is its join in the result backend (memory and Redis join chords), which
/// records members by index: a member run twice counts once, and the callback is sent once (at
/// least once across a crash at the worst moment; a copy of it is then dropped, its id being
/// fixed by the chord). A member that fails for good fails the chord: the callback never runs, the
/// [`link_error`](Self::link_error) callbacks run once, and the chord's result reports the member.
#[must_use = "a chord does nothing until it is sent"]
pub struct Chord<T> {
    members: Vec<Pending>,
    callback: Pending,
    link_error: Vec<Pending>,
    output: PhantomData<fn() -> T>,
}

/// A chord of `members` and `callback`: Celery's `chord(header)(callback)`. The callback's first
/// argument must be a `Vec` of the members' output.
///
/// ```
/// use std::time::Duration;
/// use celeriac::App;
/// use celeriac::canvas::{chord, group};
///
/// #[celeriac::task]
/// async fn count_words(text: String) -> Result<usize, std::io::Error> {
///     Ok(text.split_whitespace().count())
/// }
///
/// #[celeriac::task]
/// async fn report(counts: Vec<usize>, title: String) -> Result<String, std::io::Error> {
///     Ok(format!("{title}: {} words", counts.iter().sum::<usize>()))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder().broker_url("memory://chord-doc")
///     .register::<count_words>()
///     .register::<report>()
///     .build()?;
/// tokio::spawn(app.worker().build()?.run_until(std::future::pending()));
///
/// let pages = ["a b c", "d e", "f"].map(|page| count_words::s(page.to_owned()));
/// let summary = chord(group(pages), report::partial("book".to_owned()));
/// let summary = summary.delay(&app).await?;
/// assert_eq!(summary.get_timeout(Duration::from_secs(5)).await?, "book: 6 words");
/// # Ok(()) }
/// ```
pub fn chord<M, C: Follows<Vec<M>>>(members: Group<M>, callback: C) -> Chord<C::Output> {
    Chord {
        members: members.members,
        callback: callback.into_pending(),
        link_error: Vec::new(),
        output: PhantomData,
    }
}

impl<T> Chord<T> {
    /// Sends `errback` once, with the [`TaskFailure`] of the first member that fails for good.
    pub fn link_error<N: Follows<TaskFailure>>(mut self, errback: N) -> Self {
        self.link_error.push(errback.into_pending());
        self
    }

    /// Sends every member in one batch; the last to succeed sends the callback. The chord's result
    /// is the callback's, stored whatever its task's `ignore_result` says.
    ///
    /// Refused when the app's result backend cannot join chords (or it has none).
    pub async fn delay(mut self, app: &App) -> Result<AsyncResult<T>, EnqueueError> {
        let refuse = |reason: String| EnqueueError::InvalidOptions {
            task: self.callback.name().to_owned(),
            reason,
        };
        match app.result_backend() {
            Some(backend) if backend.joins_chords() => {}
            Some(backend) => {
                return Err(refuse(format!(
                    "a chord needs a result backend that joins chords (memory or Redis); the app's is {}",
                    ResultBackend::system(&**backend)
                )));
            }
            None => return Err(refuse("a chord needs a result backend".into())),
        }
        let size = u32::try_from(self.members.len())
            .map_err(|_| refuse("a chord has at most 2^32 - 1 members".into()))?;
        // The chord's id is its callback's, so the callback's result is the chord's.
        let id = self.callback.id();
        self.callback.store_result = true;
        let callback = self.callback.into_chain_link(app)?;
        let link_error = Pending::steps(self.link_error, app)?;
        let result = AsyncResult::new(app.clone(), id, None);
        if size == 0 {
            // Nothing to wait for: the callback runs at once, with no outputs.
            let task = callback.step.task.clone();
            let message = app
                .codec()
                .join_seq(&[])
                .and_then(|empty| next_message(app, callback.step, None, &empty))
                .map_err(|source| EnqueueError::Encode { task, source })?;
            app.publish(message).await?;
            return Ok(result);
        }
        let (chord, member_size) = joined_as(app, &callback.step.task, id, size).await?;
        let mut messages = Vec::with_capacity(self.members.len());
        for (index, mut member) in (0..size).zip(self.members) {
            member.id();
            let link = member.into_chain_link(app)?;
            let rest = Workflow {
                chord: Some(ChordMember {
                    chord,
                    index,
                    size: member_size,
                    callback: callback.clone(),
                    link_error: link_error.clone(),
                }),
                ..Workflow::default()
            };
            messages.push(first_message(link, rest));
        }
        app.publish_all(messages).await?;
        Ok(result)
    }
}

/// The id a chord of `size` members whose callback is `callback` is joined under, and the size its
/// members carry. celeriac's messages carry the size, and the chord is joined under its callback's
/// id. Celery's messages cannot: as Celery's producer does, the result backend is given the size
/// first, under a new group id that the members carry as their `group` header, and they carry
/// size 0.
async fn joined_as(
    app: &App,
    task: &str,
    callback: TaskId,
    size: u32,
) -> Result<(TaskId, u32), EnqueueError> {
    let Some(backend) = app.result_backend().filter(|_| app.celery_wire()) else {
        return Ok((callback, size));
    };
    let group = TaskId::new();
    let kept = backend
        .keep_chord_size(&group.to_string(), size, app.result_expires())
        .await
        .map_err(|source| EnqueueError::Broker {
            task: task.to_owned(),
            source,
        })?;
    if !kept {
        return Err(EnqueueError::InvalidOptions {
            task: task.to_owned(),
            reason: format!(
                "a chord in Celery's format needs a result backend that keeps chord sizes as Celery's does (`redis://` or `memory://`); the app's is {}",
                ResultBackend::system(&**backend)
            ),
        });
    }
    Ok((group, 0))
}

impl<T> fmt::Debug for Chord<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chord")
            .field("members", &self.members.len())
            .field("callback", &self.callback.name())
            .finish()
    }
}
