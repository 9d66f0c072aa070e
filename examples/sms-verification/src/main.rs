//! The SMS verification-code service. Run with `cargo run -p sms-verification`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sms_verification::gateway::{ConsoleGateway, FlakyGateway, HttpGateway, SmsGateway};
use sms_verification::http::{AppState, Limits, router};
use sms_verification::store::{CodeStore, MemoryStore, RedisStore};
use sms_verification::tasks::{Codes, Gateway, ccp_send_sms_code, purge_expired_codes};

/// SMS verification codes: a web service that enqueues `ccp_send_sms_code`, and a celeriac worker
/// that sends the SMS.
///
/// With no subcommand, the web server and a worker run in one process on the embedded broker
/// (`memory://`). `web` and `worker` run them as separate processes sharing a Redis or RabbitMQ broker.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    work: WorkArgs,
    /// In the all-in-one mode, how often the beat sends `purge_expired_codes`.
    #[arg(long, env = "PURGE_EVERY", default_value = "60s", value_parser = humantime::parse_duration)]
    purge_every: Duration,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Only the web server, sending tasks to the broker.
    Web {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Only a worker, running tasks from the broker.
    Worker {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        work: WorkArgs,
    },
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// The broker: `redis://host:6379/0`, `amqp://user:password@host:5672/%2f`, or `memory://`.
    #[arg(long, env = "CELERIAC_BROKER_URL", hide_env_values = true)]
    broker: String,
    /// Where task results are kept, for the page's delivery status: `redis://…`, or `rpc://` with a
    /// RabbitMQ broker (then only the web process that sent a code reads its status). Defaults to
    /// the broker's URL for a Redis broker and to memory for `memory://`; a RabbitMQ broker keeps
    /// none unless given one.
    #[arg(long, env = "CELERIAC_RESULT_BACKEND", hide_env_values = true)]
    result_backend: Option<String>,
    /// Where the one-SMS-per-number-per-minute claims are kept, shared by every process:
    /// `redis://…`. Defaults to the broker for a Redis broker; a RabbitMQ broker needs one.
    #[arg(long, env = "CELERIAC_COORDINATION_URL", hide_env_values = true)]
    coordination: Option<String>,
    /// Speak Python Celery's wire format (kombu's layout on Redis, Celery's result meta), so that
    /// the shop's Django code (`ccp_send_sms_code.delay(mobile, sms_code)`) and Python workers
    /// share the queues with this process.
    #[arg(long, env = "CELERIAC_CELERY")]
    celery: bool,
    /// The queue tasks are sent to and taken from (Celery's `task_default_queue`).
    #[arg(long, env = "CELERIAC_QUEUE", default_value = celeriac::DEFAULT_QUEUE)]
    queue: String,
}

impl BrokerArgs {
    /// The result backend: as given, or the Redis broker itself.
    fn result_backend(&self) -> Option<&str> {
        self.result_backend.as_deref().or_else(|| {
            self.broker
                .starts_with("redis")
                .then_some(self.broker.as_str())
        })
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where the web server listens.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Keep codes in this Redis instead of memory.
    #[arg(long, env = "CODE_STORE_URL", hide_env_values = true)]
    redis: Option<String>,
}

#[derive(Debug, clap::Args)]
struct WorkArgs {
    /// Tasks run at once.
    #[arg(long, env = "CELERIAC_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Which SMS gateway the worker uses.
    #[arg(long, env = "SMS_GATEWAY", value_enum, default_value = "console")]
    gateway: GatewayKind,
    /// For `--gateway flaky`: probability that a send fails.
    #[arg(long, env = "SMS_FAILURE_RATE", default_value_t = 0.5)]
    failure_rate: f64,
    /// For `--gateway flaky`: latency of each send, in milliseconds.
    #[arg(long, env = "SMS_LATENCY_MS", default_value_t = 500)]
    latency_ms: u64,
    /// For `--gateway http`: the provider's webhook URL.
    #[arg(long, env = "SMS_GATEWAY_URL", hide_env_values = true)]
    gateway_url: Option<String>,
    /// Also append every SMS the console gateway sends to this file.
    #[arg(long, env = "SMS_LOG")]
    sms_log: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GatewayKind {
    Console,
    Flaky,
    Http,
}

#[tokio::main]
async fn main() -> ExitCode {
    use std::io::IsTerminal;
    // Colour only on a terminal (and never with NO_COLOR), so redirected logs stay plain text.
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,celeriac=info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sms-verification: {}", celeriac::error::Report(&*error));
            ExitCode::FAILURE
        }
    }
}

fn gateway(work: &WorkArgs) -> Result<Arc<dyn SmsGateway>, Box<dyn std::error::Error>> {
    let console = match &work.sms_log {
        Some(path) => ConsoleGateway::with_log_file(path),
        None => ConsoleGateway::default(),
    };
    Ok(match work.gateway {
        GatewayKind::Console => Arc::new(console),
        GatewayKind::Flaky => Arc::new(FlakyGateway::new(
            console,
            work.failure_rate,
            Duration::from_millis(work.latency_ms),
        )),
        GatewayKind::Http => {
            let url = work
                .gateway_url
                .clone()
                .ok_or("--gateway http needs --gateway-url")?;
            Arc::new(HttpGateway::new(url, Duration::from_secs(10))?)
        }
    })
}

/// The app for `broker`. A process that runs tasks registers them, with the gateway they need; a
/// web process only sends them.
fn app(
    broker: &BrokerArgs,
    gateway: Option<Arc<dyn SmsGateway>>,
    codes: Option<Codes>,
) -> Result<celeriac::App, Box<dyn std::error::Error>> {
    let (result_backend, coordination) = (broker.result_backend(), broker.coordination.as_deref());
    let mut builder = celeriac::App::builder()
        .broker_url(&broker.broker)
        .default_queue(&broker.queue)
        .enqueue_timeout(Duration::from_secs(3));
    if broker.celery {
        builder = builder.celery_compat();
    }
    let broker = broker.broker.as_str();
    if let Some(url) = result_backend {
        builder = builder.result_backend_url(url);
    }
    match coordination {
        Some(url) => builder = builder.coordination_url(url),
        // The web process sends the task without registering it, so `build` cannot tell.
        None if broker.starts_with("amqp") => {
            return Err(
                "a RabbitMQ broker holds no claims: give --coordination redis://… so \
                        that every process agrees on one SMS per number per minute"
                    .into(),
            );
        }
        None => {}
    }
    if let Some(gateway) = gateway {
        builder = builder
            .state(Gateway(gateway))
            .register::<ccp_send_sms_code>();
    }
    if let Some(codes) = codes {
        builder = builder.state(codes).register::<purge_expired_codes>();
    }
    Ok(builder.build()?)
}

/// The code store: Redis if given, else memory.
async fn code_store(serve: &ServeArgs) -> Result<Arc<dyn CodeStore>, Box<dyn std::error::Error>> {
    Ok(match &serve.redis {
        Some(url) => Arc::new(RedisStore::connect(url).await?),
        None => Arc::new(MemoryStore::default()),
    })
}

/// Serves the web app; `metrics` is the Prometheus recorder, installed before anything that
/// records (a worker's first queue-depth sample comes at its start).
async fn serve(
    serve: &ServeArgs,
    app: celeriac::App,
    store: Arc<dyn CodeStore>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<(), Box<dyn std::error::Error>> {
    celeriac::metrics::describe();
    let state = AppState {
        app,
        store,
        limits: Limits::default(),
        metrics: Some(metrics),
    };
    let listener = tokio::net::TcpListener::bind(serve.listen).await?;
    let address = listener.local_addr()?;
    println!("SMS verification demo: open http://{address}/");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(celeriac::worker::shutdown_signal())
        .await?;
    Ok(())
}

/// The Prometheus exporter, with celeriac's buckets for run and wait times (histograms, not
/// summaries).
fn prometheus() -> Result<metrics_exporter_prometheus::PrometheusBuilder, Box<dyn std::error::Error>>
{
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    Ok(PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Suffix("_seconds".into()),
        celeriac::metrics::SECONDS_BUCKETS,
    )?)
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.mode {
        None => {
            // Everything in one process: the web server, a worker, and the beat that purges
            // expired codes every minute.
            let metrics = prometheus()?.install_recorder()?;
            let store = code_store(&cli.serve).await?;
            let embedded = BrokerArgs {
                broker: "memory://".to_owned(),
                result_backend: None,
                coordination: None,
                celery: false,
                queue: celeriac::DEFAULT_QUEUE.to_owned(),
            };
            let app = app(
                &embedded,
                Some(gateway(&cli.work)?),
                Some(Codes(store.clone())),
            )?;
            let worker = app.worker().concurrency(cli.work.concurrency).build()?;
            let beat = app
                .beat()
                .every(cli.purge_every, purge_expired_codes::s())
                .build()?;
            let working = tokio::spawn(worker.run());
            let beating = tokio::spawn(beat.run());
            serve(&cli.serve, app, store, metrics).await?;
            working.await??;
            beating.await?;
        }
        Some(Mode::Web {
            broker,
            serve: args,
        }) => {
            let app = app(&broker, None, None)?;
            let metrics = prometheus()?.install_recorder()?;
            let store = code_store(&args).await?;
            serve(&args, app, store, metrics).await?;
        }
        Some(Mode::Worker { broker, work }) => {
            let app = app(&broker, Some(gateway(&work)?), None)?;
            let _metrics = prometheus()?.install_recorder()?;
            app.worker()
                .concurrency(work.concurrency)
                .build()?
                .run()
                .await?;
        }
    }
    Ok(())
}
