//! Celery's command line, for your app's own binary and for the standalone `celeriac` tool
//! (feature `cli`).
//!
//! [`run`] parses the command line and does what it says. Give it your tasks and your app's own
//! binary answers Celery's verbs with them compiled in — `myapp worker -c 8 -Q sms,email
//! --prefetch 32`, `myapp beat --schedule beat.toml` — besides every verb that needs no task code,
//! which the `celeriac` binary (`cargo install celeriac-cli`) answers too:
//!
//! | verb | what it does | Celery / Flower |
//! |---|---|---|
//! | `worker` | runs a worker (`-c`, `-Q`, `--prefetch`, `--hostname`, `-E`) | `celery worker` |
//! | `beat` | runs the periodic-task scheduler of a TOML schedule | `celery beat` |
//! | `status` | the workers that answer, with their figures | `celery status` |
//! | `queues [QUEUE…]` | ready / delayed / unacked / dead-lettered per queue | `rabbitmqctl list_queues`, Flower's broker page |
//! | `inspect ping\|stats\|active\|registered\|active-queues` | asks workers | `celery inspect …` |
//! | `control shutdown\|rate-limit TASK RATE` | tells workers | `celery control …` |
//! | `revoke ID… [--terminate]` | revokes tasks | `celery control revoke` |
//! | `purge QUEUE` | removes a queue's waiting tasks | `celery purge -Q` |
//! | `dlq list\|show\|requeue\|purge QUEUE` | dead letters | — |
//! | `events` | a live tail of worker events | `celery events` |
//! | `dashboard` | the live web dashboard ([`crate::dashboard`]) | Flower |
//!
//! Global options: `--broker URL` (or `CELERIAC_BROKER_URL`), `--result-backend URL`,
//! `--coordination URL`, `--timeout SECONDS` for replies, `--json` for scripts. Output for people
//! is aligned tables, coloured on a terminal (unless `NO_COLOR` is set).
//!
//! Exit codes: `0` done; `1` the broker (or a store) failed; `2` the command line or the app's
//! configuration is wrong; `3` nothing answered or nothing matched (no worker replied, no such
//! dead letter); `130` interrupted.
//!
//! ```no_run
//! #[celeriac::task]
//! async fn send_sms(mobile: String, code: String) -> Result<(), std::io::Error> {
//!     # let _ = (mobile, code);
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     // `myapp --broker redis://127.0.0.1/0 worker -c 8 -Q sms`, `myapp status`, …
//!     celeriac::cli::run(|app| app.register::<send_sms>()).await
//! }
//! ```

mod dead;
mod inspect;
mod output;
mod run;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use self::output::Output;
use crate::{App, AppBuilder, TaskId};

/// Parses this process's command line and runs it with the app `configure` makes: register your
/// tasks there, and set what you like; `--broker`, `--result-backend` and `--coordination`, when
/// given, override it. Returns the exit code.
pub async fn run(configure: impl FnOnce(AppBuilder) -> AppBuilder) -> ExitCode {
    run_from(std::env::args_os(), configure).await
}

/// [`run`] with the command line `args` (the first is the program's name).
pub async fn run_from<I, T>(args: I, configure: impl FnOnce(AppBuilder) -> AppBuilder) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` are not errors.
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let out = Output::new(cli.global.json);
    let app = match cli.global.app(configure) {
        Ok(app) => app,
        Err(error) => return out.fail(Failure::Usage(error)),
    };
    match cli.verb.run(&app, &cli.global, &out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => out.fail(failure),
    }
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The broker or a store failed: 1.
    Broker(String),
    /// The command line or the configuration is wrong: 2.
    Usage(String),
    /// Nothing answered or matched: 3.
    Nothing(String),
    /// Interrupted: 130.
    Interrupted(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Self::Broker(_) => 1,
            Self::Usage(_) => 2,
            Self::Nothing(_) => 3,
            Self::Interrupted(_) => 130,
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Broker(message)
            | Self::Usage(message)
            | Self::Nothing(message)
            | Self::Interrupted(message) => message,
        }
    }
}

impl<E: std::error::Error + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::Broker(crate::error::Report(&error).to_string())
    }
}

#[derive(Parser)]
#[command(
    name = "celeriac",
    version,
    about = "Run, watch and operate celeriac workers",
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Args)]
struct Global {
    /// The broker: memory://, redis://…, rediss://…, amqp://…, amqps://…
    #[arg(
        long,
        short = 'b',
        env = "CELERIAC_BROKER_URL",
        hide_env_values = true,
        global = true
    )]
    broker: Option<String>,
    /// Where results are kept: redis://…, rpc://
    #[arg(
        long,
        env = "CELERIAC_RESULT_BACKEND",
        hide_env_values = true,
        global = true
    )]
    result_backend: Option<String>,
    /// The coordination store (unique tasks, rate limits, beat, revokes): redis://…
    #[arg(
        long,
        env = "CELERIAC_COORDINATION_URL",
        hide_env_values = true,
        global = true
    )]
    coordination: Option<String>,
    /// Seconds to wait for workers' replies
    #[arg(long, default_value = "1", value_parser = parse_seconds, global = true)]
    timeout: Duration,
    /// Output JSON, for scripts
    #[arg(long, global = true)]
    json: bool,
}

impl Global {
    fn app(&self, configure: impl FnOnce(AppBuilder) -> AppBuilder) -> Result<App, String> {
        let mut builder = configure(App::builder());
        if let Some(url) = &self.broker {
            builder = builder.broker_url(url);
        }
        if let Some(url) = &self.result_backend {
            builder = builder.result_backend_url(url);
        }
        if let Some(url) = &self.coordination {
            builder = builder.coordination_url(url);
        }
        builder.build().map_err(|error| match error {
            crate::BuildError::NoBroker => {
                "no broker: pass --broker URL or set CELERIAC_BROKER_URL".to_owned()
            }
            error => crate::error::Report(&error).to_string(),
        })
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is not a duration"))
}

#[derive(Subcommand)]
enum Verb {
    /// Run a worker of this binary's tasks
    Worker(run::WorkerArgs),
    /// Run the periodic-task scheduler of a TOML schedule
    Beat(run::BeatArgs),
    /// The workers that answer, with their figures
    Status,
    /// Messages per queue: ready, delayed, unacked, dead-lettered (default: the queues workers consume)
    Queues {
        /// The queues
        queues: Vec<String>,
    },
    /// Ask workers
    Inspect {
        #[command(subcommand)]
        what: inspect::Inspect,
        /// Only these workers (by hostname); repeat for several
        #[arg(long, short = 'd', global = true)]
        destination: Vec<String>,
    },
    /// Tell workers
    Control {
        #[command(subcommand)]
        what: inspect::ControlVerb,
        /// Only these workers (by hostname); repeat for several
        #[arg(long, short = 'd', global = true)]
        destination: Vec<String>,
    },
    /// Revoke tasks: dropped when they arrive; with --terminate, stopped if running
    Revoke {
        /// Task ids
        #[arg(required = true)]
        ids: Vec<TaskId>,
        /// Stop runs already started
        #[arg(long)]
        terminate: bool,
    },
    /// Remove a queue's waiting tasks (tasks being run are left alone)
    Purge {
        /// The queue
        queue: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Dead letters: list, show, requeue, purge
    Dlq {
        #[command(subcommand)]
        what: dead::Dlq,
    },
    /// Print worker events as they come, until interrupted
    Events,
    /// Serve the live web dashboard
    Dashboard(run::DashboardArgs),
}

impl Verb {
    async fn run(self, app: &App, global: &Global, out: &Output) -> Result<(), Failure> {
        let control = |destination: Vec<String>| {
            let control = app.control().timeout(global.timeout);
            if destination.is_empty() {
                control
            } else {
                control.destination(destination)
            }
        };
        match self {
            Self::Worker(args) => run::worker(app, args).await,
            Self::Beat(args) => run::beat(app, args).await,
            Self::Status => inspect::status(&control(Vec::new()), out).await,
            Self::Queues { queues } => {
                inspect::queues(app, &control(Vec::new()), queues, out).await
            }
            Self::Inspect { what, destination } => {
                inspect::inspect(&control(destination), what, out).await
            }
            Self::Control { what, destination } => {
                inspect::control(&control(destination), what, out).await
            }
            Self::Revoke { ids, terminate } => {
                inspect::revoke(&control(Vec::new()), ids, terminate, out).await
            }
            Self::Purge { queue, force } => dead::purge(app, &queue, force, out).await,
            Self::Dlq { what } => dead::dlq(app, what, out).await,
            Self::Events => inspect::events(app, out).await,
            Self::Dashboard(args) => run::dashboard(app, args).await,
        }
    }
}
