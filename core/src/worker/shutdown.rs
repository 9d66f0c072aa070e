use std::future::pending;

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM — what [`Worker::run`](super::Worker::run)
/// waits for. A signal that cannot be listened to is logged and ignored.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn f(app: celeriac::App) -> Result<(), celeriac::Error> {
/// let worker = app.worker().build()?;
/// worker.run_until(celeriac::worker::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
