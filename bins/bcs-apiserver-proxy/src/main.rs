//! bcs-apiserver-proxy: the node-local apiserver load balancer daemon.
//!
//! A thin binary: it turns flags, environment and the config file into a
//! [`apiserver_proxy_manager::config::Config`] and hands it to the manager.

#[macro_use]
extern crate apiserver_proxy_types;

mod cli;
mod daemon;

use std::process::ExitCode;

use apiserver_proxy_manager::config::{self, FileFormat, LogFormat};
use apiserver_proxy_manager::shell;
use clap::{CommandFactory as _, Parser};

use cli::{Cli, Command, ConfigCommand};

fn main() -> ExitCode {
    let args = cli::normalize_legacy_args(std::env::args());
    let cli = Cli::parse_from(args);
    match cli.command {
        Some(Command::Config(ConfigCommand::Default)) => {
            out!("{}", config::default_yaml());
            ExitCode::SUCCESS
        }
        Some(Command::Config(ConfigCommand::Check { file })) => check(&file),
        Some(Command::Completions { shell }) => {
            out!("{}", shell::completions(Cli::command(), shell));
            ExitCode::SUCCESS
        }
        Some(Command::Man) => {
            out!("{}", shell::man_page(Cli::command()));
            ExitCode::SUCCESS
        }
        Some(Command::Config(ConfigCommand::Show { run })) => match cli::effective_config(&run) {
            Ok((c, warnings)) => {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                outln!("{c:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        None => match cli::effective_config(&cli.run) {
            Ok((config, warnings)) => {
                let format = config.log_format;
                match daemon::run(config, warnings, cli.run) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fatal(format, &e),
                }
            }
            Err(e) => fatal(cli::requested_log_format(&cli.run), &e),
        },
    }
}

/// The daemon's last word, in the log format it was asked for.
fn fatal(format: LogFormat, e: &anyhow::Error) -> ExitCode {
    eprintln!("{}", daemon::fatal_line(format, &one_line(e)));
    ExitCode::FAILURE
}

fn check(file: &std::path::Path) -> ExitCode {
    let loaded = match config::load_file(file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {}: {w}", file.display());
    }
    if let Err(e) = config::validate(&loaded.config) {
        eprintln!("{}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    let format = match loaded.format {
        FileFormat::Yaml => "YAML",
        FileFormat::GoJson => "the Go version's JSON",
    };
    outln!(
        "{}: ok ({format}, {} virtual server(s))",
        file.display(),
        loaded.config.virtual_servers.len()
    );
    ExitCode::SUCCESS
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("bcs-apiserver-proxy: {}", one_line(e));
    ExitCode::FAILURE
}

/// The error and its causes on one line, each said once: our errors name
/// their cause in their own message (so a log line is complete), and
/// anyhow's `{:#}` would repeat it.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: "listen on 127.0.0.1:8004: Address already in use (os
    /// error 98): Address already in use (os error 98)".
    #[test]
    fn an_error_says_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let e = anyhow::Error::new(apiserver_proxy_manager::Error::Io {
            op: "listen on",
            path: "127.0.0.1:8004".into(),
            source: io,
        })
        .context("starting the daemon");
        assert_eq!(
            one_line(&e),
            "starting the daemon: listen on 127.0.0.1:8004: address in use"
        );
    }
}
