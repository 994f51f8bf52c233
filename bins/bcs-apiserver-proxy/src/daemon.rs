//! Process plumbing around the manager's loop: logging, signals, reloads.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result};
use apiserver_proxy_manager::config::{Config, LogFormat};
use apiserver_proxy_manager::daemon::{self, Stop};
use apiserver_proxy_manager::http::Status;
use apiserver_proxy_manager::metrics::Metrics;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::{self, RunArgs};

/// The log filter of `--log-level` (or `APISERVER_PROXY_LOG`); a bad one
/// stops the start with the reason, rather than logging at a level nobody
/// asked for.
fn log_filter(level: Option<&str>) -> Result<tracing_subscriber::EnvFilter> {
    let level = level.unwrap_or("info");
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .with_context(|| {
            format!(
                "--log-level (or APISERVER_PROXY_LOG) {level:?} is not a log level or filter: \
                 give error, warn, info, debug or trace, or a filter such as \
                 info,apiserver_proxy_health=debug"
            )
        })
}

fn init_logging(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn run(config: Config, warnings: Vec<String>, args: RunArgs) -> Result<()> {
    init_logging(config.log_format, log_filter(args.log_level.as_deref())?);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(config, args))
}

async fn serve(mut config: Config, args: RunArgs) -> Result<()> {
    tracing::info!(
        version = apiserver_proxy_manager::build::VERSION,
        revision = apiserver_proxy_manager::build::GIT_REVISION,
        rustc = apiserver_proxy_manager::build::RUSTC_VERSION,
        "bcs-apiserver-proxy starting"
    );
    let metrics = Metrics::new();
    let status = Arc::new(Status::new(config.resync_interval));
    let _http = daemon::serve_http(&config, metrics.clone(), status.clone()).await?;

    let (tx, rx) = mpsc::channel(4);
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            let what = tokio::select! {
                _ = term.recv() => Stop::Shutdown,
                _ = int.recv() => Stop::Shutdown,
                _ = hup.recv() => Stop::Reload,
            };
            if tx.send(what).await.is_err() {
                return;
            }
        }
    });
    let mut rx = rx;
    // Subscribed before the first pass, so that nothing undone in between
    // goes unseen.
    let mut host_events = daemon::host_notifications();
    loop {
        let stop = daemon::run(
            config.clone(),
            metrics.clone(),
            status.clone(),
            &mut rx,
            host_events.as_mut(),
        )
        .await?;
        match stop {
            Stop::Shutdown => return Ok(()),
            Stop::Reload => match cli::effective_config(&args) {
                Ok((c, warnings)) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    tracing::info!("configuration reloaded (SIGHUP)");
                    config = c;
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: the new configuration is invalid; keeping the old one");
                }
            },
        }
    }
}
