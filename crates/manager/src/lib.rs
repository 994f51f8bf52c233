//! The manager: composes discovery, health and the dataplane into the
//! daemon's reconcile loop.
//!
//! So far it holds the configuration schema both binaries share
//! ([`config`]); the reconcile loop arrives with its issue.

pub mod config;
pub mod daemon;
mod error;
pub mod http;
pub mod kernel;
pub mod lock;
pub mod metrics;
pub mod plan;
pub mod state;

pub use error::{Error, Result};
