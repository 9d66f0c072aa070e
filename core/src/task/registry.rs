use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;

use futures::future::BoxFuture;

use super::{Task, TaskContext, TaskError, TaskOptions};
use crate::BuildError;
use crate::codec::CodecExt;
use crate::service::TaskOutput;

/// Runs one task type's code: decodes the arguments, runs, encodes the output. Time limits and
/// panics are the run path's layers (see `layers`).
pub(crate) type Handler = fn(TaskContext) -> BoxFuture<'static, Result<TaskOutput, TaskError>>;

fn handle<T: Task>(ctx: TaskContext) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
    Box::pin(async move {
        let app = ctx.app().clone();
        let args = app.decode_args::<T>(ctx.envelope())?;
        let output = T::run(ctx, args).await?;
        let bytes = app
            .codec()
            .encode(&output)
            .map_err(|error| TaskError::failed(Box::new(error)))?;
        Ok(TaskOutput::new(bytes))
    })
}

/// The key of a run's rate-limit budget, from its arguments (see `Task::rate_limit_key`).
pub(crate) type RateKey = fn(&crate::App, &crate::Envelope) -> Result<super::ArgsKey, TaskError>;

fn rate_key<T: Task>(
    app: &crate::App,
    envelope: &crate::Envelope,
) -> Result<super::ArgsKey, TaskError> {
    let args = app.decode_args::<T>(envelope)?;
    T::rate_limit_key(&args).map_err(|error| TaskError::failed(Box::new(error)))
}

/// A signature of a task from its arguments as TOML values, with send options (a beat's schedule
/// file names tasks and gives their arguments so).
pub(crate) type FromToml =
    fn(Vec<toml::Value>, crate::SendOptions) -> Result<crate::canvas::Pending, String>;

fn from_toml<T: Task>(
    values: Vec<toml::Value>,
    options: crate::SendOptions,
) -> Result<crate::canvas::Pending, String> {
    let args = <T::Args as super::TaskArgs>::from_toml(values)?;
    Ok(crate::canvas::Signature::<T>::new(args)
        .options(options)
        .pending())
}

/// One registered task type.
#[derive(Clone)]
pub(crate) struct RegisteredTask {
    type_id: TypeId,
    /// The task's name, as registered (`T::NAME`).
    pub(crate) name: &'static str,
    pub(crate) options: TaskOptions,
    pub(crate) handler: Handler,
    pub(crate) rate_key: RateKey,
    pub(crate) from_toml: FromToml,
    /// The fingerprint of the argument types' shape (see [`schema`](super::schema)).
    pub(crate) args_schema: Option<u64>,
    /// The argument types, as Rust names them, for messages about them.
    pub(crate) args_type: &'static str,
    /// The task type, as Rust names it (the function's path), for messages about it.
    pub(crate) type_name: &'static str,
    /// The state types its `State<T>` parameters need.
    pub(crate) required_state: Vec<super::StateRequirement>,
    /// Whether its outcome is stored (see `TaskOptions::ignore_result`).
    pub(crate) store_result: bool,
}

impl RegisteredTask {
    /// Why a message whose arguments were encoded for the shape `sent` cannot run here, if it
    /// cannot: both sides have a fingerprint and they differ.
    pub(crate) fn schema_mismatch(&self, sent: Option<u64>) -> Option<String> {
        let (sent, ours) = (sent?, self.args_schema?);
        (sent != ours).then(|| {
            format!(
                "task `{}`: its arguments were encoded for another version of the argument types \
                 (sender's schema {sent:016x}, this worker's {ours:016x} for `{}`); the sender and \
                 this worker run different builds of the task",
                self.name, self.args_type
            )
        })
    }
}

/// The tasks an app can run, by name.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    tasks: HashMap<&'static str, RegisteredTask>,
}

impl Registry {
    /// Adds `T`. Registering the same type twice is harmless; two types with one name are an error.
    pub(crate) fn insert<T: Task>(&mut self) -> Result<(), BuildError> {
        let type_id = TypeId::of::<T>();
        if let Some(existing) = self.tasks.get(T::NAME) {
            if existing.type_id == type_id {
                return Ok(());
            }
            return Err(BuildError::DuplicateTaskName {
                name: T::NAME,
                first: existing.type_name,
                second: std::any::type_name::<T>(),
            });
        }
        if T::NAME.is_empty() {
            return Err(BuildError::InvalidTaskName {
                name: T::NAME,
                reason: "a task name must not be empty",
            });
        }
        let options = T::options();
        self.tasks.insert(
            T::NAME,
            RegisteredTask {
                type_id,
                name: T::NAME,
                store_result: crate::app::stores_result::<T>(&options),
                options,
                handler: handle::<T>,
                rate_key: rate_key::<T>,
                from_toml: from_toml::<T>,
                args_schema: <T::Args as super::TaskArgs>::schema_fingerprint(),
                args_type: std::any::type_name::<T::Args>(),
                type_name: std::any::type_name::<T>(),
                required_state: T::required_state(),
            },
        );
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RegisteredTask> {
        self.tasks.get(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.keys().copied()
    }

    pub(crate) fn tasks(&self) -> impl Iterator<Item = (&'static str, &RegisteredTask)> + '_ {
        self.tasks.iter().map(|(name, task)| (*name, task))
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.tasks.keys()).finish()
    }
}

/// A task registered for autodiscovery. The `#[task]` macro submits one per task; see
/// [`AppBuilder::autodiscover`](crate::AppBuilder::autodiscover).
pub struct TaskRegistration {
    insert: fn(&mut Registry) -> Result<(), BuildError>,
}

impl TaskRegistration {
    /// The registration of `T`.
    pub const fn new<T: Task>() -> Self {
        Self {
            insert: Registry::insert::<T>,
        }
    }

    pub(crate) fn insert_into(&self, registry: &mut Registry) -> Result<(), BuildError> {
        (self.insert)(registry)
    }
}

impl fmt::Debug for TaskRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRegistration").finish_non_exhaustive()
    }
}

inventory::collect!(TaskRegistration);

/// Every task registration linked into the binary.
pub(crate) fn linked_registrations() -> impl Iterator<Item = &'static TaskRegistration> {
    inventory::iter::<TaskRegistration>.into_iter()
}
