//! What discovery did, as plain counters. The manager maps them to metrics;
//! this crate knows nothing of Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared with the running discovery task.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) desired_sets_emitted: AtomicU64,
    pub(crate) empty_answers_ignored: AtomicU64,
    pub(crate) oversized_answers_ignored: AtomicU64,
    pub(crate) foreign_objects_ignored: AtomicU64,
    pub(crate) watch_errors: AtomicU64,
    pub(crate) relists: AtomicU64,
    pub(crate) gone_relists: AtomicU64,
    pub(crate) stale_relists: AtomicU64,
    pub(crate) endpoint_switches: AtomicU64,
    pub(crate) endpoints_fallbacks: AtomicU64,
    pub(crate) cache_writes: AtomicU64,
    pub(crate) cache_write_errors: AtomicU64,
    pub(crate) cache_load_failures: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Desired sets sent on the output channel (all sources).
    pub desired_sets_emitted: u64,
    /// Cluster answers with no usable backend that were not applied because
    /// the current set is non-empty (fail-static), counted per virtual server.
    pub empty_answers_ignored: u64,
    /// Cluster answers with more backends than `max_backends`, not applied
    /// (the current set stays), counted per virtual server.
    pub oversized_answers_ignored: u64,
    /// EndpointSlices or Endpoints not named as the service (only the
    /// apiserver's own object is read), counted per answer.
    pub foreign_objects_ignored: u64,
    /// Errors from the watch (list failures, broken streams, error events).
    pub watch_errors: u64,
    /// Full lists completed (initial, after 410 Gone, after a stale watch,
    /// after switching apiserver).
    pub relists: u64,
    /// Watches expired with 410 Gone (each followed by a relist).
    pub gone_relists: u64,
    /// Watches restarted because nothing arrived for `stale_after`.
    pub stale_relists: u64,
    /// Times discovery moved on to another apiserver after failures.
    pub endpoint_switches: u64,
    /// Times the EndpointSlice API was not served and core/v1 Endpoints was
    /// used instead.
    pub endpoints_fallbacks: u64,
    pub cache_writes: u64,
    pub cache_write_errors: u64,
    /// Cache files that were unreadable, corrupt or foreign at start.
    pub cache_load_failures: u64,
}

macro_rules! incs {
    ($($name:ident),*) => {
        impl Counters {
            pub(crate) fn bump(&self, field: fn(&Counters) -> &AtomicU64) {
                field(self).fetch_add(1, Ordering::Relaxed);
            }

            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

incs!(
    desired_sets_emitted,
    empty_answers_ignored,
    oversized_answers_ignored,
    foreign_objects_ignored,
    watch_errors,
    relists,
    gone_relists,
    stale_relists,
    endpoint_switches,
    endpoints_fallbacks,
    cache_writes,
    cache_write_errors,
    cache_load_failures
);
