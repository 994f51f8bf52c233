//! The pure heart of the manager: from what we want and what the kernel
//! holds, the smallest list of IPVS operations. No sockets, no clocks read
//! here (the caller passes `now`), so every rule below is unit tested.
//!
//! Rules, per virtual server we own:
//! - a backend that is alive (ready, or readiness unknown because the
//!   apiserver refused our anonymous probe): weight 1;
//! - not yet probed: a new one joins the table at weight 0 while another
//!   backend passes its probe (a new address from the cluster carries no
//!   traffic before a probe vouched for it); one the kernel already has in
//!   rotation keeps its weight until its probe answers (a daemon's start
//!   changes nothing that is right); weight 1 while none has passed a probe
//!   yet (a daemon that just started, the CLI before kubelet);
//! - not ready (`/readyz` failing): weight 0 at once, so established
//!   connections finish; deleted once it has no active connection, or when
//!   the drain deadline passes;
//! - dead (refused, reset, silent): deleted at once;
//! - no longer in the desired set: drained like a not-ready one;
//! - fail-open: when that would leave no backend with weight > 0, every
//!   desired backend that is not known dead stays at weight 1, and if all are
//!   dead, all of them stay. An empty virtual server helps nobody; a maybe
//!   helps some.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use apiserver_proxy_types::Endpoint;

/// What the manager knows of one backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No probe result yet (just discovered, or the daemon just started).
    Unprobed,
    /// Alive and `/readyz` succeeds.
    Ready,
    /// Alive, but readiness cannot be known (401/403 to anonymous probes).
    AliveUnknown,
    /// Alive, `/readyz` fails: drain.
    NotReady,
    /// Refused, reset or silent: remove.
    Dead,
}

impl Condition {
    /// Whether a backend in this condition takes new connections (weight 1)
    /// whatever the others' conditions: it passed its probe. One not yet
    /// probed takes them only while no backend has passed one (see `plan`).
    pub fn in_service(self) -> bool {
        matches!(self, Condition::Ready | Condition::AliveUnknown)
    }
}

/// One virtual server as we want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVs {
    pub vip: Endpoint,
    pub scheduler: String,
    pub backends: BTreeMap<Endpoint, Condition>,
    /// Leave destinations the kernel holds but `backends` does not list
    /// alone instead of draining them. True until the cluster has answered:
    /// seeds or a cache are a floor, not the whole truth, and a restarted
    /// daemon must not remove what the CLI or its predecessor put there.
    pub keep_unlisted: bool,
}

/// One destination as the kernel holds it (with what metrics export).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActualDest {
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    /// Connections, packets and bytes since the destination was added.
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// One of our virtual servers as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualVs {
    pub vip: Endpoint,
    pub scheduler: String,
    pub dests: BTreeMap<Endpoint, ActualDest>,
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateService {
        vip: Endpoint,
        scheduler: String,
    },
    SetScheduler {
        vip: Endpoint,
        scheduler: String,
    },
    AddDest {
        vip: Endpoint,
        backend: Endpoint,
        weight: u32,
    },
    SetWeight {
        vip: Endpoint,
        backend: Endpoint,
        weight: u32,
    },
    DelDest {
        vip: Endpoint,
        backend: Endpoint,
        why: DeleteReason,
    },
}

impl Op {
    /// The virtual server it changes.
    pub fn vip(&self) -> Endpoint {
        match self {
            Op::CreateService { vip, .. }
            | Op::SetScheduler { vip, .. }
            | Op::AddDest { vip, .. }
            | Op::SetWeight { vip, .. }
            | Op::DelDest { vip, .. } => *vip,
        }
    }

    /// The backend it changes, if it changes one.
    pub fn backend(&self) -> Option<Endpoint> {
        match self {
            Op::CreateService { .. } | Op::SetScheduler { .. } => None,
            Op::AddDest { backend, .. }
            | Op::SetWeight { backend, .. }
            | Op::DelDest { backend, .. } => Some(*backend),
        }
    }

    /// A stable name, for metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateService { .. } => "create_service",
            Op::SetScheduler { .. } => "set_scheduler",
            Op::AddDest { .. } => "add_dest",
            Op::SetWeight { .. } => "set_weight",
            Op::DelDest { .. } => "del_dest",
        }
    }
}

/// One kernel change, as a person would say it (the CLI prints it, the
/// daemon logs it).
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateService { vip, scheduler } => {
                write!(f, "created virtual server {vip} (scheduler {scheduler})")
            }
            Op::SetScheduler { vip, scheduler } => {
                write!(f, "changed the scheduler of {vip} to {scheduler}")
            }
            Op::AddDest {
                vip,
                backend,
                weight,
            } => write!(f, "added backend {backend} to {vip} (weight {weight})"),
            Op::SetWeight {
                vip,
                backend,
                weight,
            } => write!(f, "set backend {backend} of {vip} to weight {weight}"),
            Op::DelDest { vip, backend, why } => {
                let why = match why {
                    DeleteReason::Dead => "dead",
                    DeleteReason::Drained => "drained",
                    DeleteReason::DrainTimeout => "drain timed out",
                };
                write!(f, "removed backend {backend} from {vip} ({why})")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// The backend is dead: delete at once (and cut the node's own sockets).
    Dead,
    /// Drained: weight 0 and no active connection left.
    Drained,
    /// Weight 0 for longer than the drain timeout.
    DrainTimeout,
}

/// Per virtual server: what the plan decided beyond the operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VsVerdict {
    /// Every desired backend failed its checks; they were kept in rotation.
    pub fail_open: bool,
}

/// Drain bookkeeping the manager keeps between passes: when each backend's
/// weight went to 0.
#[derive(Debug, Default, Clone)]
pub struct Drains {
    since: BTreeMap<(Endpoint, Endpoint), Instant>,
}

impl Drains {
    pub fn is_draining(&self, vip: Endpoint, backend: Endpoint) -> bool {
        self.since.contains_key(&(vip, backend))
    }
}

/// The plan of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub verdicts: BTreeMap<Endpoint, VsVerdict>,
}

/// Where each backend should be: in rotation, draining, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Weight(u32),
    Drain,
    Gone(DeleteReason),
}

fn wants(vs: &DesiredVs) -> (BTreeMap<Endpoint, Want>, bool) {
    let mut out: BTreeMap<Endpoint, Want> = vs
        .backends
        .iter()
        .map(|(b, c)| {
            let w = match c {
                c if c.in_service() => Want::Weight(1),
                // In the table but out of rotation until its first probe
                // passes: whoever can write EndpointSlices must not steer
                // the node's traffic to an address no probe vouched for.
                Condition::Unprobed => Want::Weight(0),
                Condition::Dead => Want::Gone(DeleteReason::Dead),
                _ => Want::Drain,
            };
            (*b, w)
        })
        .collect();
    let serving = out.values().any(|w| matches!(w, Want::Weight(n) if *n > 0));
    if serving || out.is_empty() {
        return (out, false);
    }
    let unprobed = vs.backends.values().any(|c| *c == Condition::Unprobed);
    // Nothing passes. Prefer those that may still pass (not yet probed),
    // and the alive ones (not ready); if every one is dead, keep them all:
    // our checks may be what is broken. Only the last two are fail-open:
    // a start-up with nothing probed yet is not.
    let maybe: Vec<Endpoint> = out
        .iter()
        .filter(|(_, w)| matches!(w, Want::Drain | Want::Weight(0)))
        .map(|(b, _)| *b)
        .collect();
    if maybe.is_empty() {
        for w in out.values_mut() {
            *w = Want::Weight(1);
        }
    } else {
        for b in maybe {
            out.insert(b, Want::Weight(1));
        }
    }
    (out, !unprobed)
}

/// The kernel as it stands after `applied` (the operations of a plan that
/// succeeded) changed `actual`: what the status page and the metrics show
/// once a pass is done, rather than what the pass found before it acted.
pub fn projected(actual: &[ActualVs], applied: &[&Op]) -> Vec<ActualVs> {
    let mut out = actual.to_vec();
    for op in applied {
        let vip = op.vip();
        let at = match out.iter().position(|a| a.vip == vip) {
            Some(i) => i,
            None => {
                out.push(ActualVs {
                    vip,
                    scheduler: String::new(),
                    dests: BTreeMap::new(),
                });
                out.len() - 1
            }
        };
        let vs = &mut out[at];
        match op {
            Op::CreateService { scheduler, .. } | Op::SetScheduler { scheduler, .. } => {
                vs.scheduler = scheduler.clone();
            }
            Op::AddDest {
                backend, weight, ..
            }
            | Op::SetWeight {
                backend, weight, ..
            } => vs.dests.entry(*backend).or_default().weight = *weight,
            Op::DelDest { backend, .. } => {
                vs.dests.remove(backend);
            }
        }
    }
    out
}

/// Computes the operations that bring `actual` to `desired`.
///
/// `actual` holds only services we own (the caller filters the kernel's dump
/// by the configured VIPs); anything else is never looked at, so never
/// touched. `drains` is updated: entries start when a backend is first set
/// to weight 0 and end when it is deleted or back in rotation.
pub fn plan(
    desired: &[DesiredVs],
    actual: &[ActualVs],
    drains: &mut Drains,
    now: Instant,
    drain_timeout: Duration,
) -> Plan {
    let mut plan = Plan::default();
    let actual_by_vip: BTreeMap<Endpoint, &ActualVs> = actual.iter().map(|a| (a.vip, a)).collect();
    let mut still_draining = BTreeSet::new();

    for vs in desired {
        let (wants, fail_open) = wants(vs);
        plan.verdicts.insert(vs.vip, VsVerdict { fail_open });
        let empty = BTreeMap::new();
        let current = match actual_by_vip.get(&vs.vip) {
            Some(a) => {
                if a.scheduler != vs.scheduler {
                    plan.ops.push(Op::SetScheduler {
                        vip: vs.vip,
                        scheduler: vs.scheduler.clone(),
                    });
                }
                &a.dests
            }
            None => {
                plan.ops.push(Op::CreateService {
                    vip: vs.vip,
                    scheduler: vs.scheduler.clone(),
                });
                &empty
            }
        };

        for (backend, want) in &wants {
            let have = current.get(backend);
            match (want, have) {
                (Want::Weight(w), None) => plan.ops.push(Op::AddDest {
                    vip: vs.vip,
                    backend: *backend,
                    weight: *w,
                }),
                // Not yet probed, and already serving (the CLI, a previous
                // daemon put it there): left as it is until its probe
                // answers, so that a daemon's start changes no rule that
                // is right. Only a new address joins out of rotation.
                (Want::Weight(0), Some(d))
                    if d.weight > 0 && vs.backends.get(backend) == Some(&Condition::Unprobed) => {}
                (Want::Weight(w), Some(d)) if d.weight != *w => plan.ops.push(Op::SetWeight {
                    vip: vs.vip,
                    backend: *backend,
                    weight: *w,
                }),
                (Want::Weight(_), Some(_)) => {}
                // Not in the kernel and not ready: nothing to drain.
                (Want::Drain, None) | (Want::Gone(_), None) => {}
                (Want::Drain, Some(d)) => drain_step(
                    &mut plan,
                    drains,
                    &mut still_draining,
                    vs.vip,
                    *backend,
                    d,
                    now,
                    drain_timeout,
                ),
                (Want::Gone(why), Some(_)) => plan.ops.push(Op::DelDest {
                    vip: vs.vip,
                    backend: *backend,
                    why: *why,
                }),
            }
        }
        // In the kernel but no longer wanted at all: drain, then delete.
        for (backend, d) in current {
            if !wants.contains_key(backend) && !vs.keep_unlisted {
                drain_step(
                    &mut plan,
                    drains,
                    &mut still_draining,
                    vs.vip,
                    *backend,
                    d,
                    now,
                    drain_timeout,
                );
            }
        }
    }
    drains.since.retain(|k, _| still_draining.contains(k));
    plan
}

#[allow(clippy::too_many_arguments, reason = "one private step of plan()")]
fn drain_step(
    plan: &mut Plan,
    drains: &mut Drains,
    still_draining: &mut BTreeSet<(Endpoint, Endpoint)>,
    vip: Endpoint,
    backend: Endpoint,
    have: &ActualDest,
    now: Instant,
    drain_timeout: Duration,
) {
    let key = (vip, backend);
    if have.weight != 0 {
        plan.ops.push(Op::SetWeight {
            vip,
            backend,
            weight: 0,
        });
        drains.since.insert(key, now);
        still_draining.insert(key);
        return;
    }
    let since = *drains.since.entry(key).or_insert(now);
    if have.active_conns == 0 {
        plan.ops.push(Op::DelDest {
            vip,
            backend,
            why: DeleteReason::Drained,
        });
    } else if now.saturating_duration_since(since) >= drain_timeout {
        plan.ops.push(Op::DelDest {
            vip,
            backend,
            why: DeleteReason::DrainTimeout,
        });
    } else {
        still_draining.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const VIP: &str = "10.103.97.2:6443";
    const A: &str = "192.168.1.10:6443";
    const B: &str = "192.168.1.11:6443";
    const C: &str = "192.168.1.12:6443";

    fn desired(backends: &[(&str, Condition)]) -> DesiredVs {
        DesiredVs {
            vip: ep(VIP),
            scheduler: "rr".into(),
            backends: backends.iter().map(|(b, c)| (ep(b), *c)).collect(),
            keep_unlisted: false,
        }
    }

    /// The view after a pass is the kernel after its operations: a plan
    /// that brings a backend back shows it at its new weight, a deleted one
    /// gone, and a new service created; a refused operation is not shown.
    #[test]
    fn the_projected_view_is_the_kernel_after_the_pass() {
        let before = [actual(&[(A, 0, 0), (B, 1, 0)])];
        let set = Op::SetWeight {
            vip: ep(VIP),
            backend: ep(A),
            weight: 1,
        };
        let del = Op::DelDest {
            vip: ep(VIP),
            backend: ep(B),
            why: DeleteReason::Dead,
        };
        let other = Op::CreateService {
            vip: ep("[fd00::2]:6443"),
            scheduler: "rr".into(),
        };
        let after = projected(&before, &[&set, &del, &other]);
        assert_eq!(after[0].dests.len(), 1);
        assert_eq!(after[0].dests[&ep(A)].weight, 1);
        assert_eq!(after[1].vip, ep("[fd00::2]:6443"));
        assert!(after[1].dests.is_empty());
        // Nothing applied: the view is what was read.
        assert_eq!(projected(&before, &[]), before);
    }

    fn actual(dests: &[(&str, u32, u32)]) -> ActualVs {
        ActualVs {
            vip: ep(VIP),
            scheduler: "rr".into(),
            dests: dests
                .iter()
                .map(|(b, w, a)| {
                    (
                        ep(b),
                        ActualDest {
                            weight: *w,
                            active_conns: *a,
                            ..ActualDest::default()
                        },
                    )
                })
                .collect(),
        }
    }

    fn run(d: &[DesiredVs], a: &[ActualVs], drains: &mut Drains, now: Instant) -> Plan {
        plan(d, a, drains, now, Duration::from_secs(30))
    }

    use Condition::*;

    #[test]
    fn an_empty_kernel_gets_the_service_and_only_probed_backends_in_rotation() {
        let p = run(
            &[desired(&[(A, Ready), (B, Unprobed), (C, AliveUnknown)])],
            &[],
            &mut Drains::default(),
            Instant::now(),
        );
        assert_eq!(
            p.ops,
            vec![
                Op::CreateService {
                    vip: ep(VIP),
                    scheduler: "rr".into()
                },
                Op::AddDest {
                    vip: ep(VIP),
                    backend: ep(A),
                    weight: 1
                },
                Op::AddDest {
                    vip: ep(VIP),
                    backend: ep(B),
                    weight: 0
                },
                Op::AddDest {
                    vip: ep(VIP),
                    backend: ep(C),
                    weight: 1
                },
            ]
        );
        assert!(!p.verdicts[&ep(VIP)].fail_open);
    }

    #[test]
    fn a_kernel_that_matches_needs_nothing() {
        let p = run(
            &[desired(&[(A, Ready), (B, Ready)])],
            &[actual(&[(A, 1, 5), (B, 1, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert!(p.ops.is_empty(), "{:?}", p.ops);
    }

    #[test]
    fn a_dead_backend_is_deleted_at_once_even_with_connections() {
        let p = run(
            &[desired(&[(A, Ready), (B, Dead)])],
            &[actual(&[(A, 1, 0), (B, 1, 7)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert_eq!(
            p.ops,
            vec![Op::DelDest {
                vip: ep(VIP),
                backend: ep(B),
                why: DeleteReason::Dead
            }]
        );
    }

    #[test]
    fn a_not_ready_backend_drains_then_goes_when_idle() {
        let mut drains = Drains::default();
        let t0 = Instant::now();
        let d = [desired(&[(A, Ready), (B, NotReady)])];
        // Pass 1: weight 0 at once.
        let p = run(&d, &[actual(&[(A, 1, 0), (B, 1, 3)])], &mut drains, t0);
        assert_eq!(
            p.ops,
            vec![Op::SetWeight {
                vip: ep(VIP),
                backend: ep(B),
                weight: 0
            }]
        );
        assert!(drains.is_draining(ep(VIP), ep(B)));
        // Pass 2: still has connections, within the deadline: wait.
        let p = run(
            &d,
            &[actual(&[(A, 1, 0), (B, 0, 3)])],
            &mut drains,
            t0 + Duration::from_secs(5),
        );
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        // Pass 3: idle: delete.
        let p = run(
            &d,
            &[actual(&[(A, 1, 0), (B, 0, 0)])],
            &mut drains,
            t0 + Duration::from_secs(6),
        );
        assert_eq!(
            p.ops,
            vec![Op::DelDest {
                vip: ep(VIP),
                backend: ep(B),
                why: DeleteReason::Drained
            }]
        );
        // Pass 4: gone from the kernel: nothing to do, bookkeeping cleared.
        let p = run(
            &d,
            &[actual(&[(A, 1, 0)])],
            &mut drains,
            t0 + Duration::from_secs(7),
        );
        assert!(p.ops.is_empty());
        assert!(!drains.is_draining(ep(VIP), ep(B)));
    }

    #[test]
    fn a_drain_ends_at_the_deadline_even_with_connections() {
        let mut drains = Drains::default();
        let t0 = Instant::now();
        let d = [desired(&[(A, Ready), (B, NotReady)])];
        run(&d, &[actual(&[(A, 1, 0), (B, 1, 3)])], &mut drains, t0);
        let p = run(
            &d,
            &[actual(&[(A, 1, 0), (B, 0, 3)])],
            &mut drains,
            t0 + Duration::from_secs(31),
        );
        assert_eq!(
            p.ops,
            vec![Op::DelDest {
                vip: ep(VIP),
                backend: ep(B),
                why: DeleteReason::DrainTimeout
            }]
        );
    }

    #[test]
    fn a_backend_that_recovers_mid_drain_goes_back_to_weight_1() {
        let mut drains = Drains::default();
        let t0 = Instant::now();
        run(
            &[desired(&[(A, Ready), (B, NotReady)])],
            &[actual(&[(A, 1, 0), (B, 1, 3)])],
            &mut drains,
            t0,
        );
        let p = run(
            &[desired(&[(A, Ready), (B, Ready)])],
            &[actual(&[(A, 1, 0), (B, 0, 3)])],
            &mut drains,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            p.ops,
            vec![Op::SetWeight {
                vip: ep(VIP),
                backend: ep(B),
                weight: 1
            }]
        );
        assert!(!drains.is_draining(ep(VIP), ep(B)));
    }

    #[test]
    fn a_backend_removed_by_discovery_is_drained_not_cut() {
        let mut drains = Drains::default();
        let t0 = Instant::now();
        let d = [desired(&[(A, Ready)])];
        let p = run(&d, &[actual(&[(A, 1, 0), (C, 1, 2)])], &mut drains, t0);
        assert_eq!(
            p.ops,
            vec![Op::SetWeight {
                vip: ep(VIP),
                backend: ep(C),
                weight: 0
            }]
        );
        let p = run(
            &d,
            &[actual(&[(A, 1, 0), (C, 0, 0)])],
            &mut drains,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            p.ops,
            vec![Op::DelDest {
                vip: ep(VIP),
                backend: ep(C),
                why: DeleteReason::Drained
            }]
        );
    }

    #[test]
    fn a_new_backend_carries_no_traffic_until_its_probe_passes() {
        // The cluster (or whoever can write its EndpointSlices) adds C.
        let mut drains = Drains::default();
        let p = run(
            &[desired(&[(A, Ready), (B, Ready), (C, Unprobed)])],
            &[actual(&[(A, 1, 0), (B, 1, 0)])],
            &mut drains,
            Instant::now(),
        );
        assert_eq!(
            p.ops,
            vec![Op::AddDest {
                vip: ep(VIP),
                backend: ep(C),
                weight: 0
            }]
        );
        assert!(!p.verdicts[&ep(VIP)].fail_open);
        // Its probe passes: in rotation.
        let p = run(
            &[desired(&[(A, Ready), (B, Ready), (C, Ready)])],
            &[actual(&[(A, 1, 0), (B, 1, 0), (C, 0, 0)])],
            &mut drains,
            Instant::now(),
        );
        assert_eq!(
            p.ops,
            vec![Op::SetWeight {
                vip: ep(VIP),
                backend: ep(C),
                weight: 1
            }]
        );
    }

    #[test]
    fn a_serving_backend_not_yet_probed_keeps_its_weight() {
        // A daemon starts on a node the CLI set up: A's probe answered
        // first, B's has not yet. B keeps serving.
        let p = run(
            &[desired(&[(A, Ready), (B, Unprobed)])],
            &[actual(&[(A, 1, 0), (B, 1, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert!(p.ops.is_empty(), "{:?}", p.ops);
    }

    #[test]
    fn with_nothing_probed_yet_every_backend_serves_and_it_is_not_fail_open() {
        let p = run(
            &[desired(&[(A, Unprobed), (B, Unprobed)])],
            &[actual(&[(A, 1, 0), (B, 1, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        assert!(!p.verdicts[&ep(VIP)].fail_open);
        // Every probed one failed: the unprobed one is the best hope, with
        // the not-ready one.
        let p = run(
            &[desired(&[(A, Unprobed), (B, NotReady), (C, Dead)])],
            &[actual(&[(A, 1, 0), (B, 1, 0), (C, 1, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert_eq!(
            p.ops,
            vec![Op::DelDest {
                vip: ep(VIP),
                backend: ep(C),
                why: DeleteReason::Dead
            }]
        );
    }

    #[test]
    fn before_the_cluster_answers_unlisted_backends_are_kept() {
        // A restarted daemon knows only its seed; the kernel holds three.
        let mut d = desired(&[(A, Unprobed)]);
        d.keep_unlisted = true;
        let p = run(
            &[d],
            &[actual(&[(A, 1, 0), (B, 1, 4), (C, 1, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert!(p.ops.is_empty(), "{:?}", p.ops);
    }

    #[test]
    fn tampering_is_repaired_with_the_smallest_change() {
        // Someone deleted B and changed A's weight; the scheduler was changed.
        let mut a = actual(&[(A, 5, 0)]);
        a.scheduler = "wlc".into();
        let p = run(
            &[desired(&[(A, Ready), (B, Ready)])],
            &[a],
            &mut Drains::default(),
            Instant::now(),
        );
        assert_eq!(
            p.ops,
            vec![
                Op::SetScheduler {
                    vip: ep(VIP),
                    scheduler: "rr".into()
                },
                Op::SetWeight {
                    vip: ep(VIP),
                    backend: ep(A),
                    weight: 1
                },
                Op::AddDest {
                    vip: ep(VIP),
                    backend: ep(B),
                    weight: 1
                },
            ]
        );
    }

    #[test]
    fn fail_open_keeps_alive_backends_when_none_is_ready() {
        let p = run(
            &[desired(&[(A, NotReady), (B, Dead), (C, NotReady)])],
            &[actual(&[(A, 1, 0), (B, 1, 0), (C, 1, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert!(p.verdicts[&ep(VIP)].fail_open);
        assert_eq!(
            p.ops,
            vec![Op::DelDest {
                vip: ep(VIP),
                backend: ep(B),
                why: DeleteReason::Dead
            }]
        );
    }

    #[test]
    fn fail_open_keeps_everything_when_all_look_dead() {
        let p = run(
            &[desired(&[(A, Dead), (B, Dead)])],
            &[actual(&[(A, 1, 0), (B, 0, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        assert!(p.verdicts[&ep(VIP)].fail_open);
        assert_eq!(
            p.ops,
            vec![Op::SetWeight {
                vip: ep(VIP),
                backend: ep(B),
                weight: 1
            }]
        );
    }

    #[test]
    fn services_we_do_not_own_are_never_in_the_plan() {
        // The caller passes only our services; a second desired VS is
        // planned independently and no op names any other VIP.
        let other = DesiredVs {
            vip: ep("[fd00::2]:6443"),
            scheduler: "rr".into(),
            backends: [(ep("[fd00::10]:6443"), Ready)].into_iter().collect(),
            keep_unlisted: false,
        };
        let p = run(
            &[desired(&[(A, Ready)]), other],
            &[actual(&[(A, 1, 0)])],
            &mut Drains::default(),
            Instant::now(),
        );
        let vips: BTreeSet<Endpoint> = p
            .ops
            .iter()
            .map(|op| match op {
                Op::CreateService { vip, .. }
                | Op::SetScheduler { vip, .. }
                | Op::AddDest { vip, .. }
                | Op::SetWeight { vip, .. }
                | Op::DelDest { vip, .. } => *vip,
            })
            .collect();
        assert_eq!(vips, BTreeSet::from([ep("[fd00::2]:6443")]));
        assert_eq!(p.ops.len(), 2);
    }
}
