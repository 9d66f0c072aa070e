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
use sms_verification::tasks::{Gateway, ccp_send_sms_code};

#[derive(Debug, Parser)]
#[command(about = "SMS verification codes: a web service and a celeriac worker")]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Which SMS gateway the worker uses.
    #[arg(long, value_enum, default_value = "console", global = true)]
    gateway: GatewayKind,
    /// For `--gateway flaky`: probability that a send fails.
    #[arg(long, default_value_t = 0.5, global = true)]
    failure_rate: f64,
    /// For `--gateway flaky`: latency of each send, in milliseconds.
    #[arg(long, default_value_t = 500, global = true)]
    latency_ms: u64,
    /// For `--gateway http`: the provider's webhook URL.
    #[arg(long, global = true)]
    gateway_url: Option<String>,
    /// Also append every SMS the console gateway sends to this file.
    #[arg(long, global = true)]
    sms_log: Option<PathBuf>,
    /// Keep codes and send flags in this Redis instead of memory.
    #[arg(long, global = true)]
    redis: Option<String>,
    /// Where the web server listens.
    #[arg(long, default_value = "127.0.0.1:8000", global = true)]
    listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Only the web server, sending tasks to `--broker`.
    Web {
        /// `redis://…` or `amqp://…`.
        #[arg(long)]
        broker: String,
    },
    /// Only a worker, running tasks from `--broker`.
    Worker {
        /// `redis://…` or `amqp://…`.
        #[arg(long)]
        broker: String,
        /// Tasks run at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GatewayKind {
    Console,
    Flaky,
    Http,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,celeriac=info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sms-verification: {error}");
            ExitCode::FAILURE
        }
    }
}

fn gateway(cli: &Cli) -> Result<Arc<dyn SmsGateway>, Box<dyn std::error::Error>> {
    let console = match &cli.sms_log {
        Some(path) => ConsoleGateway::with_log_file(path),
        None => ConsoleGateway::default(),
    };
    Ok(match cli.gateway {
        GatewayKind::Console => Arc::new(console),
        GatewayKind::Flaky => Arc::new(FlakyGateway::new(
            console,
            cli.failure_rate,
            Duration::from_millis(cli.latency_ms),
        )),
        GatewayKind::Http => {
            let url = cli
                .gateway_url
                .clone()
                .ok_or("--gateway http needs --gateway-url")?;
            Arc::new(HttpGateway::new(url, Duration::from_secs(10))?)
        }
    })
}

async fn app(cli: &Cli, broker: &str) -> Result<celeriac::App, Box<dyn std::error::Error>> {
    let broker = sms_verification::broker_from_url(broker).await?;
    Ok(celeriac::App::builder()
        .shared_broker(broker)
        .state(Gateway(gateway(cli)?))
        .enqueue_timeout(Duration::from_secs(3))
        .register::<ccp_send_sms_code>()
        .build()?)
}

async fn serve(cli: &Cli, app: celeriac::App) -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn CodeStore> = match &cli.redis {
        Some(url) => Arc::new(RedisStore::connect(url).await?),
        None => Arc::new(MemoryStore::default()),
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    celeriac::metrics::describe();
    let state = AppState {
        app,
        store,
        limits: Limits::default(),
        metrics: Some(metrics),
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let address = listener.local_addr()?;
    println!("SMS verification demo: open http://{address}/");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(celeriac::worker::shutdown_signal())
        .await?;
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match &cli.mode {
        None => {
            let app = app(&cli, "memory").await?;
            let worker = app.worker().concurrency(16).build()?;
            let working = tokio::spawn(worker.run());
            serve(&cli, app).await?;
            working.await??;
        }
        Some(Mode::Web { broker }) => {
            let app = app(&cli, broker).await?;
            serve(&cli, app).await?;
        }
        Some(Mode::Worker {
            broker,
            concurrency,
        }) => {
            let app = app(&cli, broker).await?;
            let _metrics =
                metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
            app.worker()
                .concurrency(*concurrency)
                .build()?
                .run()
                .await?;
        }
    }
    Ok(())
}
