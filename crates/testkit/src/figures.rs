//! Figures of the lifecycle suite: measured and reported, never asserted.
//!
//! Each lifecycle test keeps a [`Report`] of its phases. Every added row
//! rewrites `LIFECYCLE_OUT/TEST.json` at once, so that the rows measured
//! before a failing assertion still reach the report. `cargo xtask test`
//! (and `cargo xtask lifecycle`) set [`OUT_ENV`] to a folder of the VM's
//! results share and write `docs/lifecycle.md` from it on the host.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::traffic::{IdleFigure, Window};

/// The folder the reports are written to; unset: printed only.
pub const OUT_ENV: &str = "APISERVER_PROXY_LIFECYCLE_OUT";

/// One phase of a lifecycle event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub phase: String,
    /// Requests the prober made in the phase, and how many failed.
    pub requests: u64,
    pub failed: u64,
    /// Whether the product promises no failed request in this phase (the
    /// test asserts it then); false where the phase removes every path.
    pub zero_failures_promised: bool,
    pub longest_outage_s: f64,
    /// The idle connection: kept, or cut and served again after how long.
    pub idle: String,
    /// What was repaired and how fast, where the phase tampers.
    pub repair: String,
}

impl Row {
    /// A row from what the prober and the idle watch saw.
    pub fn new(phase: &str, w: Window, promised: bool, idle: Option<IdleFigure>) -> Row {
        Row {
            phase: phase.to_string(),
            requests: w.requests,
            failed: w.failed,
            zero_failures_promised: promised,
            longest_outage_s: secs(w.longest_outage),
            idle: idle.map_or_else(|| "-".into(), |i| i.describe()),
            repair: String::new(),
        }
    }

    pub fn repair(mut self, what: impl Into<String>) -> Row {
        self.repair = what.into();
        self
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A lifecycle event's figures, as written for the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The event's number in the list of lifecycle events (1 to 8).
    pub event: u32,
    pub title: String,
    /// The test function, whose verdict the report shows beside it.
    pub test: String,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(event: u32, title: &str, test: &str) -> Report {
        Report {
            event,
            title: title.to_string(),
            test: test.to_string(),
            rows: Vec::new(),
        }
    }

    /// Adds a row, prints it, and rewrites the report file.
    pub fn add(&mut self, row: Row) {
        println!(
            "lifecycle figures: {} | {} | {} of {} failed | outage {:.3} s | idle: {} | {}",
            self.test,
            row.phase,
            row.failed,
            row.requests,
            row.longest_outage_s,
            row.idle,
            row.repair
        );
        self.rows.push(row);
        self.write();
    }

    fn write(&self) {
        let Some(dir) = std::env::var_os(OUT_ENV).map(PathBuf::from) else {
            return;
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
            let tmp = dir.join(format!(".{}.json.tmp", self.test));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, dir.join(format!("{}.json", self.test)))
        };
        if let Err(e) = write() {
            // The figures are a report: losing them must be seen, but it is
            // not the test's verdict.
            eprintln!(
                "lifecycle figures: cannot write {}: {e}",
                dir.join(&self.test).display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_the_window_and_round_trips() {
        let w = Window {
            requests: 40,
            failed: 3,
            longest_outage: Duration::from_millis(312),
        };
        let row = Row::new("tamper", w, false, None).repair("IPVS in 0.120 s");
        assert_eq!(row.longest_outage_s, 0.312);
        assert_eq!(row.idle, "-");
        let mut r = Report::new(6, "kube-proxy's cleanup", "t");
        r.rows.push(row);
        let back: Report =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(back, r);
    }
}
