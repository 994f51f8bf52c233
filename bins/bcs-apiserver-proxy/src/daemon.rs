//! Process plumbing around the manager's loop: logging, signals, reloads.

use std::io::IsTerminal;

use std::sync::Arc;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    match format {
        LogFormat::Json => json_subscriber(filter, std::io::stderr).init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
}

/// JSON lines with the event's fields at the top level beside `timestamp`,
/// `level`, `target` and `message`, as log pipelines (Loki, Elasticsearch,
/// Cloud Logging) index them; nested under `fields`, every query had to
/// spell the nesting out.
fn json_subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .json()
        .flatten_event(true)
        .finish()
}

/// The fatal start-up or run error as one log line of the requested format:
/// in JSON it is the line a log pipeline must not drop, so it is JSON like
/// every other line, with the same top-level keys.
pub fn fatal_line(format: LogFormat, message: &str) -> String {
    match format {
        LogFormat::Text => format!("bcs-apiserver-proxy: {message}"),
        LogFormat::Json => serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": "ERROR",
            "message": message,
            "target": env!("CARGO_CRATE_NAME"),
        })
        .to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    /// A `MakeWriter` that keeps what was logged, for reading back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// Regression: the fields were nested under `fields`, so a pipeline's
    /// query for `backend` found nothing.
    #[test]
    fn json_logs_put_the_events_fields_at_the_top_level() {
        let out = Captured::default();
        let filter = log_filter(Some("info")).expect("filter");
        tracing::subscriber::with_default(json_subscriber(filter, out.clone()), || {
            tracing::warn!(backend = "10.0.0.1:6443", weight = 0, "backend drained");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["message"], "backend drained", "{text}");
        assert_eq!(line["backend"], "10.0.0.1:6443", "{text}");
        assert_eq!(line["weight"], 0, "{text}");
        assert_eq!(line["level"], "WARN", "{text}");
        assert!(line.get("fields").is_none(), "{text}");
    }

    #[test]
    fn the_fatal_line_has_the_keys_of_every_other_json_line() {
        let line: serde_json::Value =
            serde_json::from_str(&fatal_line(LogFormat::Json, "no \"vip\"\nhere")).expect("JSON");
        assert_eq!(line["message"], "no \"vip\"\nhere");
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["target"], "bcs_apiserver_proxy");
        let ts = line["timestamp"].as_str().expect("timestamp");
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(
            fatal_line(LogFormat::Text, "boom"),
            "bcs-apiserver-proxy: boom"
        );
    }
}
