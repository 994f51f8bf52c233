//! apiserver-proxy-tools: writes a node's first IPVS rules before kubelet
//! starts, restores them at boot, and prints a static-pod manifest for the
//! daemon. Accepts the Go tool's `-cmd add -vs ... -rs ...` syntax.
//!
//! A thin layer: the kernel work is the dataplane's, the plan and the state
//! file the manager's, the probes the health crate's.

#[macro_use]
extern crate apiserver_proxy_types;

mod boot;
mod cli;
mod commands;
mod daemon_page;
mod fail;
mod node;
mod probe;
mod saved;
mod show;
mod static_pod;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use fail::{EXIT_FAILURE, EXIT_USAGE, Failure};

fn main() -> ExitCode {
    let args = match cli::normalize_go_args(std::env::args().collect()) {
        Ok(a) => a,
        // Only the Go syntax itself can be wrong here: a usage error.
        Err(f) => {
            eprintln!("error: {f}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    match commands::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => fail(&f),
    }
}

fn fail(f: &Failure) -> ExitCode {
    eprintln!("error: {f}");
    ExitCode::from(EXIT_FAILURE)
}

/// Help and version go to stdout with 0; any other clap error becomes one
/// line (its first paragraph) and the usage exit code, 2.
fn usage(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            out!("{}", e.render());
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{}", e.render());
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            eprintln!("{}", usage_line(&e.render().to_string()));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// clap's message in one line: its first paragraph, joined.
fn usage_line(rendered: &str) -> String {
    let first: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    format!(
        "{} (see `apiserver-proxy-tools --help`)",
        fail::one_line(&first.join("\n")).replace("; ", " ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let e = cli::Cli::try_parse_from(["t", "add", "--rs", "1.2.3.4:5"]).expect_err("no --vs");
        let line = usage_line(&e.render().to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("error: ") && line.contains("--vs"),
            "{line}"
        );
    }
}
