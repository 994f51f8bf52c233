//! Leader election through a `coordination.k8s.io/v1` Lease, for the one
//! control-plane node that holds the outside VIP.
//!
//! In layers, as the rest of the workspace: [`Timings`] and the rule that
//! makes two holders impossible; [`Tracker`], the pure decisions (what was
//! read and when in, what to write and until when we lead out); [`Elector`],
//! the loop that reads and writes through a [`LeaseStore`] and publishes
//! [`Leadership`]; [`KubeLeases`], the store on the Kubernetes API with
//! `resourceVersion` compare-and-swap, over several apiservers.
//!
//! This crate knows nothing of the VIP: whoever holds it follows
//! [`Leadership`] through a [`Holder`], which lets go at
//! [`Leadership::Leader`]'s `until` by its own timer, even when the election
//! is stuck in a request.

mod elector;
mod holder;
mod kube_store;
mod timings;
mod tracker;

pub use elector::{Elector, InvalidElection, Leadership, LeaseStore, StoreError, now};
pub use holder::{Holder, Step};
pub use kube_store::{KubeLeases, KubeLeasesError, LEASE_DURATION_MS_ANNOTATION};
pub use timings::{MIN_SAFETY_MARGIN, Timings};
pub use tracker::{LeaseRecord, MAX_RESPECTED_LEASE, Next, Tracker};
