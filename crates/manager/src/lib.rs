//! The manager: composes discovery, health and the dataplane into the
//! daemon's reconcile loop.
//!
//! So far it holds the configuration schema both binaries share
//! ([`config`]); the reconcile loop arrives with its issue.

pub mod config;
pub mod plan;
