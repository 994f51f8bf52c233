//! What the host and the real-kernel tests share: one finished run of the
//! CLI, and how a refusal must look.

#![allow(dead_code, reason = "each test file uses its own part")]

use std::ffi::OsStr;
use std::process::{Command, Output};

/// The CLI under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_apiserver-proxy-tools");

/// A command line written as one string (no argument has a space).
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs `program` with `line`'s words, then `extra`, with `env` set.
pub fn run_cli(program: &OsStr, line: &str, extra: &[&OsStr], env: &[(&str, &OsStr)]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(words(line)).args(extra);
    cmd.env_remove("APISERVER_PROXY_STATE_DIR")
        .env_remove("APISERVER_PROXY_INTERFACE")
        .env_remove("APISERVER_PROXY_TOOLS_ROOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run {
        out: cmd.output().expect("run apiserver-proxy-tools"),
    }
}

pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Exit code 0; the run, for its output.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code(),
            0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Exit code 1 and exactly one line on stderr, `error: ...`, holding
    /// each of `want`.
    /// The command ran and failed (exit 1), in one line naming `want`.
    pub fn refused(self, want: &[&str]) -> Run {
        self.one_line_error(1, want)
    }

    /// The command line could not be parsed (exit 2), in one line naming
    /// `want`.
    pub fn usage(self, want: &[&str]) -> Run {
        self.one_line_error(2, want)
    }

    fn one_line_error(self, code: i32, want: &[&str]) -> Run {
        let err = self.stderr();
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{err}",
            self.stdout()
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        for w in want {
            assert!(err.contains(w), "{w:?} missing from: {err}");
        }
        self
    }
}
