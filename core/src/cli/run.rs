//! The verbs that run something until SIGINT or SIGTERM: `worker` and `beat`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{Failure, parse_seconds};
use crate::App;

#[derive(Args)]
pub(super) struct WorkerArgs {
    /// Tasks run at once (default: the number of CPUs)
    #[arg(long, short = 'c')]
    concurrency: Option<usize>,
    /// Queues to consume, comma-separated (default: the app's default queue and its tasks' queues)
    #[arg(long, short = 'Q', value_delimiter = ',')]
    queues: Vec<String>,
    /// Deliveries held unsettled at once (default: 4 × concurrency)
    #[arg(long)]
    prefetch: Option<usize>,
    /// The name events and remote-control replies carry (default celeriac@<host>:<pid>)
    #[arg(long, short = 'n')]
    hostname: Option<String>,
    /// Send worker events (as Celery's -E)
    #[arg(long, short = 'E')]
    events: bool,
    /// Do not listen for remote-control commands
    #[arg(long)]
    without_remote_control: bool,
    /// Seconds running tasks get to finish at shutdown before they are requeued
    #[arg(long, value_parser = parse_seconds)]
    grace_period: Option<Duration>,
}

#[derive(Args)]
pub(super) struct BeatArgs {
    /// The TOML schedule (see the guide's "Periodic tasks")
    #[arg(long, short = 's')]
    schedule: PathBuf,
    /// The beat's name: beats of one name elect one leader
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
pub(super) struct DashboardArgs {
    /// Where to listen; beyond loopback, --token or --basic-auth is required
    #[arg(long, default_value = "127.0.0.1:5555")]
    bind: std::net::SocketAddr,
    /// A bearer token of at least 16 characters (open /?token=… once in a browser)
    #[arg(
        long,
        env = "CELERIAC_DASHBOARD_TOKEN",
        hide_env_values = true,
        conflicts_with = "basic_auth"
    )]
    token: Option<String>,
    /// Basic auth, user:password (a password of at least 16 characters)
    #[arg(long, env = "CELERIAC_DASHBOARD_BASIC_AUTH", hide_env_values = true)]
    basic_auth: Option<String>,
    /// A queue to show besides those the workers consume; repeat for several
    #[arg(long = "queue", short = 'Q')]
    queues: Vec<String>,
}

/// This binary has no tasks: `worker` and `beat` would do nothing useful.
fn needs_tasks(app: &App, verb: &str) -> Result<(), Failure> {
    if app.task_names().next().is_none() {
        return Err(Failure::Usage(format!(
            "`{verb}` needs tasks, and this binary has none compiled in: run it from your app's \
             own binary (`celeriac::cli::run(|app| app.register::<my_task>())`)"
        )));
    }
    Ok(())
}

pub(super) async fn worker(app: &App, args: WorkerArgs) -> Result<(), Failure> {
    needs_tasks(app, "worker")?;
    let mut builder = app
        .worker()
        .events(args.events)
        .remote_control(!args.without_remote_control);
    if let Some(concurrency) = args.concurrency {
        builder = builder.concurrency(concurrency);
    }
    if !args.queues.is_empty() {
        builder = builder.queues(args.queues);
    }
    if let Some(prefetch) = args.prefetch {
        builder = builder.prefetch(prefetch);
    }
    if let Some(hostname) = args.hostname {
        builder = builder.hostname(hostname);
    }
    if let Some(grace_period) = args.grace_period {
        builder = builder.grace_period(grace_period);
    }
    let worker = builder
        .build()
        .map_err(|error| Failure::Usage(crate::error::Report(&error).to_string()))?;
    let report = worker.run().await?;
    tracing::info!(?report, "worker stopped");
    Ok(())
}

pub(super) async fn dashboard(app: &App, args: DashboardArgs) -> Result<(), Failure> {
    use crate::dashboard::{Auth, Dashboard};
    let usage = |error: crate::dashboard::DashboardError| {
        Failure::Usage(crate::error::Report(&error).to_string())
    };
    let mut builder = Dashboard::builder(app.clone())
        .bind(args.bind)
        .queues(args.queues);
    if let Some(token) = args.token {
        builder = builder.auth(Auth::token(token).map_err(usage)?);
    }
    if let Some(pair) = args.basic_auth {
        builder = builder.auth(Auth::parse_basic(&pair).map_err(usage)?);
    }
    let dashboard = builder.build().map_err(usage)?;
    eprintln!("dashboard on http://{}/ (Ctrl-C stops it)", args.bind);
    dashboard.serve().await.map_err(|error| match error {
        crate::dashboard::DashboardError::Bind { .. } => usage(error),
        error => Failure::Broker(crate::error::Report(&error).to_string()),
    })
}

pub(super) async fn beat(app: &App, args: BeatArgs) -> Result<(), Failure> {
    needs_tasks(app, "beat")?;
    let usage = |error: crate::BuildError| Failure::Usage(crate::error::Report(&error).to_string());
    let mut builder = app
        .beat()
        .entries_from_file(&args.schedule)
        .map_err(usage)?;
    if let Some(name) = args.name {
        builder = builder.name(name);
    }
    let report = builder.build().map_err(usage)?.run().await;
    tracing::info!(?report, "beat stopped");
    Ok(())
}
