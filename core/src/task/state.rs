//! [`State`]: a task parameter that receives a value the app was given, checked when the app is built.

use std::any::TypeId;
use std::fmt;

use super::{TaskContext, TaskError};

/// A task parameter holding a clone of the app's value of type `T` (axum's `State`): a gateway, a
/// client, a pool. A task that takes `State<T>` declares that it needs a `T`, and
/// [`AppBuilder::build`](crate::AppBuilder::build) fails with
/// [`BuildError::MissingState`](crate::BuildError::MissingState) — naming the task and the type —
/// when the app that registers the task was given none. Nothing fails later, per message.
///
/// `T` is cloned for each run: make it cheap to clone (an `Arc` inside).
///
/// ```
/// use std::sync::Arc;
/// use celeriac::{App, BuildError, MemoryBroker, State};
///
/// #[derive(Clone)]
/// struct Greeting(Arc<str>);
///
/// #[celeriac::task]
/// async fn greet(State(greeting): State<Greeting>, name: String) {
///     println!("{}, {name}", greeting.0);
/// }
///
/// let app = App::builder()
///     .broker(MemoryBroker::new())
///     .state(Greeting("hello".into()))
///     .register::<greet>()
///     .build()?;
/// # let _ = app;
///
/// let forgot = App::builder().broker(MemoryBroker::new()).register::<greet>().build();
/// assert!(matches!(forgot, Err(BuildError::MissingState { task: "greet", .. })));
/// # Ok::<(), celeriac::Error>(())
/// ```
#[derive(Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // State holds clients and secrets: its type, never its value.
        write!(f, "State<{}>", std::any::type_name::<T>())
    }
}

impl<T: Clone + Send + Sync + 'static> State<T> {
    /// Takes the app's `T` for one run. After the build-time check this cannot fail for a
    /// registered task; an app's value missing anyway is a rejection (no retry can supply it).
    pub(crate) fn from_context(ctx: &TaskContext) -> Result<Self, TaskError> {
        ctx.state::<T>().map(|value| State(value.clone()))
    }
}

/// A state type a task needs, for the build-time check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRequirement {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
}

impl StateRequirement {
    /// The requirement of a `State<T>` parameter.
    pub fn of<T: 'static>() -> Self {
        Self {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }
}
