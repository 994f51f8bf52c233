//! The CLI's probes: the `--health-*` flags turned into the daemon's probe
//! configuration, run by the manager, and printed.

use std::path::{Path, PathBuf};

use apiserver_proxy_manager::config::HealthMode;
pub use apiserver_proxy_manager::probe::Probed;
use apiserver_proxy_manager::probe::{self, HealthConfig};
use apiserver_proxy_types::Endpoint;

use crate::cli::{DEFAULT_CA_FILE, HealthArgs};
use crate::fail::Failure;

/// How backends are probed, and how to say it.
#[derive(Debug, Clone)]
pub struct Prober {
    config: HealthConfig,
    /// "https GET /readyz, CA /etc/kubernetes/pki/ca.crt".
    pub summary: String,
}

impl Prober {
    /// Builds the probe configuration. Without a CA file given and without
    /// the default one, https probes cannot verify certificates: they run
    /// unverified and the summary says so (a node before `kubeadm join` has
    /// no CA yet, and the Go tool did not verify either).
    pub fn new(h: &HealthArgs) -> Prober {
        let mut config = HealthConfig {
            mode: h.health_scheme,
            path: h.health_path.clone(),
            timeout: h.health_timeout,
            ..HealthConfig::default()
        };
        // One probe, no schedule: the interval only has to stay above the
        // timeout, as the health checker requires.
        config.interval = config
            .interval
            .max(h.health_timeout + std::time::Duration::from_secs(1));
        config.tls.server_name = h.health_server_name.clone();
        config.tls.insecure_skip_verify = h.health_insecure_skip_verify;
        let mut summary = match config.mode {
            HealthMode::Tcp => "tcp connect".to_string(),
            m => format!("{m} GET {}", config.path),
        };
        if config.mode == HealthMode::Https {
            let ca: Option<PathBuf> = match &h.health_ca_file {
                Some(f) => Some(f.clone()),
                None if Path::new(DEFAULT_CA_FILE).exists() => Some(DEFAULT_CA_FILE.into()),
                None => None,
            };
            if config.tls.insecure_skip_verify {
                summary.push_str(", certificates not verified");
            } else if let Some(ca) = ca {
                summary.push_str(&format!(", CA {}", ca.display()));
                config.tls.ca_file = Some(ca);
            } else {
                config.tls.insecure_skip_verify = true;
                summary.push_str(&format!(
                    ", certificates NOT verified: no CA at {DEFAULT_CA_FILE} (give --health-ca-file)"
                ));
            }
        }
        Prober { config, summary }
    }

    /// Probes every backend at once. A configuration the health checker
    /// refuses (an unreadable CA file) is an error.
    pub fn probe_all(&self, backends: &[Endpoint]) -> Result<Vec<Probed>, Failure> {
        Ok(probe::probe_all(&self.config, backends)?)
    }
}

/// Prints probe results, one backend a line.
pub fn show(results: &[Probed]) {
    let width = results
        .iter()
        .map(|r| r.backend.to_string().len())
        .max()
        .unwrap_or(0);
    for r in results {
        let verdict = if r.passed { "ok  " } else { "FAIL" };
        outln!(
            "  {:width$}  {verdict}  {}",
            r.backend.to_string(),
            r.detail
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn health(args: &[&str]) -> HealthArgs {
        let mut all = vec!["t", "status"];
        all.extend_from_slice(args);
        crate::cli::Cli::parse_from(all).common.health
    }

    #[test]
    fn summary_says_what_is_verified() {
        let p = Prober::new(&health(&["--health-ca-file", "/x/ca.pem"]));
        assert!(
            p.summary.contains("https GET /readyz, CA /x/ca.pem"),
            "{}",
            p.summary
        );
        let p = Prober::new(&health(&["--health-scheme", "tcp"]));
        assert_eq!(p.summary, "tcp connect");
        let p = Prober::new(&health(&["--health-insecure-skip-verify"]));
        assert!(p.summary.contains("not verified"), "{}", p.summary);
    }

    #[test]
    fn an_unreadable_ca_is_one_error_not_a_dead_backend() {
        let p = Prober::new(&health(&["--health-ca-file", "/nonexistent/ca.pem"]));
        let err = p
            .probe_all(&["127.0.0.1:1".parse().expect("ep")])
            .expect_err("no CA")
            .to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("--no-probe"),
            "{err}"
        );
    }

    #[test]
    fn a_refused_backend_fails_its_probe() {
        // Port 1 on loopback: nothing listens, the kernel refuses at once.
        let p = Prober::new(&health(&["--health-scheme", "tcp"]));
        let r = p
            .probe_all(&["127.0.0.1:1".parse().expect("ep")])
            .expect("probe");
        assert!(!r[0].passed, "{r:?}");
        assert!(r[0].detail.contains("dead"), "{r:?}");
    }
}
