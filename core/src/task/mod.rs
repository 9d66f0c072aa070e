//! Tasks: the [`Task`] trait, its [`TaskOptions`], the [`TaskContext`] a run receives, and
//! [`TaskError`].
//!
//! Most tasks are written with the [`#[task]`](macro@crate::task) attribute on a function. Implementing
//! [`Task`] by hand is the same thing, spelled out:
//!
//! ```
//! use celeriac::{App, MemoryBroker, Task, TaskContext, TaskError};
//!
//! struct Add;
//!
//! impl Task for Add {
//!     const NAME: &'static str = "add";
//!     type Args = (i64, i64);
//!     type Output = i64;
//!
//!     async fn run(_ctx: TaskContext, (a, b): (i64, i64)) -> Result<i64, TaskError> {
//!         Ok(a + b)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
//! let app = App::builder().broker(MemoryBroker::new()).register::<Add>().build()?;
//! let id = app.delay::<Add>((2, 3)).await?;
//! # let _ = id; Ok(()) }
//! ```

mod args_key;
mod context;
mod error;
mod options;
pub(crate) mod registry;
pub(crate) mod schema;
mod state;
mod unique;

use std::future::Future;

use serde::{Deserialize, Serialize};

pub use self::args_key::ArgsKey;
pub use self::context::TaskContext;
pub(crate) use self::error::panic_message;
pub use self::error::{BoxError, TaskError};
pub use self::options::{
    DEFAULT_QUEUE, ParseRateLimitError, RateLimit, RateLimitScope, TaskOptions,
};
pub use self::state::{State, StateRequirement};
pub(crate) use self::unique::claim_key;
pub use self::unique::{Duplicate, Unique, UniqueUntil};

/// A kind of task: a stable name, argument and output types, options, and the code that runs.
///
/// The name is what travels in messages; keep it stable across releases, or queued tasks of the old
/// name become "unknown task" dead letters.
pub trait Task: Send + Sync + 'static {
    /// The task's name in messages, e.g. `ccp_send_sms_code`.
    const NAME: &'static str;
    /// The arguments, encoded by the app's codec.
    type Args: TaskArgs;
    /// What a successful run returns.
    type Output: Serialize + Send + 'static;
    /// The names of the task's arguments, in order: how keyword arguments sent by Python Celery
    /// bind to them (see [`celeriac::celery`](crate::celery)). `#[task]` fills it in from the
    /// function's parameters; the default, none, takes arguments by position only.
    ///
    /// ```
    /// use celeriac::Task;
    ///
    /// #[celeriac::task]
    /// async fn send_code(mobile: String, code: String) -> Result<String, std::io::Error> {
    ///     Ok(format!("{code} to {mobile}"))
    /// }
    ///
    /// assert_eq!(send_code::ARG_NAMES, ["mobile", "code"]);
    /// ```
    const ARG_NAMES: &'static [&'static str] = &[];

    /// The task's options; defaults to [`TaskOptions::default`].
    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    /// The state types the task takes as [`State`] parameters; [`AppBuilder::build`](crate::AppBuilder::build)
    /// checks the app has each. `#[task]` fills it in; the default is none.
    fn required_state() -> Vec<StateRequirement> {
        Vec::new()
    }

    /// What makes two sends of this task the same, if its options make it
    /// [unique](TaskOptions::unique): by default all its arguments. `#[task(unique_key = "mobile")]`
    /// narrows it to the named ones.
    fn unique_key(args: &Self::Args) -> Result<ArgsKey, crate::codec::CodecError> {
        ArgsKey::of(args.as_serialize())
    }

    /// Which budget a run draws on when the task's rate limit is
    /// [per key](RateLimitScope::ClusterPerKey): by default all its arguments.
    /// `#[task(rate_limit_key = "mobile")]` narrows it to the named ones.
    fn rate_limit_key(args: &Self::Args) -> Result<ArgsKey, crate::codec::CodecError> {
        ArgsKey::of(args.as_serialize())
    }

    /// Runs the task once.
    fn run(
        ctx: TaskContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}

/// A task's argument tuple: `()`, `(A,)`, `(A, B)`, … up to 16 arguments, each
/// `Serialize + DeserializeOwned + Send + 'static`. A task with one struct argument takes
/// `(MyStruct,)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task's arguments",
    label = "task arguments are a tuple of owned, serializable values",
    note = "write `type Args = (A, B, …);` with each type `Serialize + DeserializeOwned + Send + 'static`"
)]
///
/// Its only supertraits are `Send + 'static`, and its impls ask each element for one bound: so an
/// argument type that cannot travel through the broker is one compile error naming it, not one per
/// missing serde trait. Encoding and decoding go through its (hidden) methods.
pub trait TaskArgs: Send + 'static {
    #[doc(hidden)]
    fn as_serialize(&self) -> &dyn erased_serde::Serialize;

    #[doc(hidden)]
    fn decode_from(
        codec: &dyn crate::Codec,
        bytes: &[u8],
        limits: &crate::codec::DecodeLimits,
    ) -> Result<Self, crate::codec::CodecError>
    where
        Self: Sized;

    #[doc(hidden)]
    fn schema_fingerprint() -> Option<u64>
    where
        Self: Sized;

    /// The arguments from TOML values, one per argument (a beat's schedule file).
    #[doc(hidden)]
    fn from_toml(values: Vec<toml::Value>) -> Result<Self, String>
    where
        Self: Sized;
}

macro_rules! task_args_tuples {
    ($($name:ident)*) => {
        impl<$($name: crate::__private::TaskArgument),*> TaskArgs for ($($name,)*) {
            fn as_serialize(&self) -> &dyn erased_serde::Serialize {
                self
            }

            fn decode_from(
                codec: &dyn crate::Codec,
                bytes: &[u8],
                limits: &crate::codec::DecodeLimits,
            ) -> Result<Self, crate::codec::CodecError> {
                crate::CodecExt::decode(codec, bytes, limits)
            }

            fn schema_fingerprint() -> Option<u64> {
                schema::fingerprint::<Self>()
            }

            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn from_toml(values: Vec<toml::Value>) -> Result<Self, String> {
                const COUNT: usize = <[&str]>::len(&[$(stringify!($name)),*]);
                if values.len() != COUNT {
                    return Err(format!(
                        "the task takes {COUNT} argument(s), and {} were given",
                        values.len()
                    ));
                }
                let mut values = values.into_iter().enumerate();
                Ok(($({
                    let (index, value) = values.next().ok_or("too few arguments")?;
                    <$name as Deserialize>::deserialize(value).map_err(|error| {
                        format!("argument {}: {}", index + 1, error.message())
                    })?
                },)*))
            }
        }

        task_args_tuples!(@first_arg $($name)*);
    };
    // A tuple with a first argument can follow a task returning it (see `canvas::FirstArg`).
    (@first_arg) => {};
    (@first_arg $first:ident $($rest:ident)*) => {
        #[diagnostic::do_not_recommend]
        impl<$first: crate::__private::TaskArgument, $($rest: crate::__private::TaskArgument),*>
            crate::canvas::FirstArg<$first> for ($first, $($rest,)*)
        {
            type Rest = ($($rest,)*);
        }
    };
}
task_args_tuples!();
task_args_tuples!(A);
task_args_tuples!(A B);
task_args_tuples!(A B C);
task_args_tuples!(A B C D);
task_args_tuples!(A B C D E);
task_args_tuples!(A B C D E F);
task_args_tuples!(A B C D E F G);
task_args_tuples!(A B C D E F G H);
task_args_tuples!(A B C D E F G H I);
task_args_tuples!(A B C D E F G H I J);
task_args_tuples!(A B C D E F G H I J K);
task_args_tuples!(A B C D E F G H I J K L);
task_args_tuples!(A B C D E F G H I J K L M);
task_args_tuples!(A B C D E F G H I J K L M N);
task_args_tuples!(A B C D E F G H I J K L M N O);
task_args_tuples!(A B C D E F G H I J K L M N O P);

/// What a `#[task]` function may return: `Result<T, E>` with a serializable `T` and any error `E`,
/// or `()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a celeriac task",
    label = "a task must return `Result<T, E>` or `()`",
    note = "`T` must implement `serde::Serialize`; `E` may be your own error type, `celeriac::BoxError` or `celeriac::TaskError`"
)]
pub trait IntoTaskResult: Send + 'static {
    /// The task's output type.
    type Output: Serialize + Send + 'static;

    /// Converts a task function's return value.
    fn into_task_result(self) -> Result<Self::Output, TaskError>;
}

impl<T, E> IntoTaskResult for Result<T, E>
where
    T: Serialize + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    type Output = T;

    fn into_task_result(self) -> Result<T, TaskError> {
        self.map_err(|error| TaskError::from(error.into()))
    }
}

impl IntoTaskResult for () {
    type Output = ();

    fn into_task_result(self) -> Result<(), TaskError> {
        Ok(())
    }
}
