//! The per-backend state machine, free of I/O so that it can be tested on
//! its own. See the crate documentation for the rules in prose.

use crate::reason::{Reason, State};

/// One classified result, as the prober feeds it to the [`Tracker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Readiness succeeded (or, in `tcp` mode, the connection stood when a
    /// probe was due).
    Ready(Reason),
    /// Readiness answered 401/403: alive, readiness unknown.
    Unknown(Reason),
    /// Readiness failed while the backend is alive: a failing status, or a
    /// request that timed out although a fresh connection succeeded.
    NotReady(Reason),
    /// Liveness failed: decisive at once, no threshold.
    Dead(Reason),
}

/// Tracks one backend: its reported state and the run of consecutive
/// results that thresholds count.
#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    state: Option<State>,
    good: u32,
    bad: u32,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32) -> Tracker {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            state: None,
            good: 0,
            bad: 0,
        }
    }

    /// The state last reported, `None` before the first observation.
    pub fn state(&self) -> Option<State> {
        self.state
    }

    /// Feeds one result; returns the new state and its reason when the
    /// state changes (the first observation always "changes" it).
    pub fn observe(&mut self, obs: Observation) -> Option<(State, Reason)> {
        let (target, reason) = match obs {
            Observation::Dead(r) => {
                self.good = 0;
                self.bad = self.bad.saturating_add(1);
                return self.set(State::Dead, r);
            }
            Observation::NotReady(r) => {
                self.good = 0;
                self.bad = self.bad.saturating_add(1);
                // A readiness answer that says "not ready" is evidence; a
                // request that merely timed out (while a fresh connection
                // worked) is weak evidence: one slow answer must not drain a
                // healthy apiserver, nor a backend the daemon has just started
                // watching. It takes two in a row (or `fall`, if larger).
                let weak = matches!(r, Reason::Timeout(_));
                let needed = if weak { self.fall.max(2) } else { self.fall };
                let change = match self.state {
                    None => !weak || self.bad >= needed,
                    Some(State::Dead) => true,
                    Some(State::Ready | State::Unknown) => self.bad >= needed,
                    Some(State::NotReady) => false,
                };
                return if change {
                    self.set(State::NotReady, r)
                } else {
                    None
                };
            }
            Observation::Ready(r) => (State::Ready, r),
            Observation::Unknown(r) => (State::Unknown, r),
        };
        self.bad = 0;
        self.good = self.good.saturating_add(1);
        let change = match self.state {
            None => true,
            // Both in service: switching between them needs no threshold.
            Some(s @ (State::Ready | State::Unknown)) => s != target,
            Some(State::NotReady | State::Dead) => self.good >= self.rise,
        };
        if change {
            self.set(target, reason)
        } else {
            None
        }
    }

    fn set(&mut self, state: State, reason: Reason) -> Option<(State, Reason)> {
        if self.state == Some(state) {
            return None;
        }
        self.state = Some(state);
        Some((state, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Observation {
        Observation::Ready(Reason::Status(200))
    }
    fn failing() -> Observation {
        Observation::NotReady(Reason::Status(500))
    }
    fn dead() -> Observation {
        Observation::Dead(Reason::Refused)
    }
    fn unknown() -> Observation {
        Observation::Unknown(Reason::Status(401))
    }
    fn slow() -> Observation {
        Observation::NotReady(Reason::Timeout(crate::reason::Phase::Request))
    }
    #[test]
    fn one_timeout_alone_never_drains() {
        let mut t = Tracker::new(2, 1);
        // The first result a timeout: no state yet (still in rotation).
        assert_eq!(states(&mut t, vec![slow()]), vec![None]);
        assert_eq!(t.state(), None);
        assert_eq!(states(&mut t, vec![ready()]), vec![Some(State::Ready)]);
        // Ready, then one timeout: stays ready; two in a row: not ready.
        assert_eq!(
            states(&mut t, vec![slow(), ready(), slow(), slow()]),
            vec![None, None, None, Some(State::NotReady)]
        );
        // A failing status still acts at `fall` (1).
        let mut t = Tracker::new(2, 1);
        assert_eq!(
            states(&mut t, vec![ready(), failing()]),
            vec![Some(State::Ready), Some(State::NotReady)]
        );
    }
    fn states(t: &mut Tracker, obs: Vec<Observation>) -> Vec<Option<State>> {
        obs.into_iter()
            .map(|o| t.observe(o).map(|(s, _)| s))
            .collect()
    }

    #[test]
    fn first_observation_is_reported_at_once() {
        assert_eq!(
            Tracker::new(3, 3).observe(ready()).map(|x| x.0),
            Some(State::Ready)
        );
        assert_eq!(
            Tracker::new(3, 3).observe(failing()).map(|x| x.0),
            Some(State::NotReady)
        );
        assert_eq!(
            Tracker::new(3, 3).observe(dead()).map(|x| x.0),
            Some(State::Dead)
        );
        assert_eq!(
            Tracker::new(3, 3).observe(unknown()).map(|x| x.0),
            Some(State::Unknown)
        );
    }

    #[test]
    fn fall_counts_consecutive_readiness_failures_only() {
        let mut t = Tracker::new(2, 3);
        let got = states(
            &mut t,
            vec![
                ready(),
                failing(),
                failing(),
                ready(),
                failing(),
                failing(),
                failing(),
            ],
        );
        use State::*;
        assert_eq!(
            got,
            vec![Some(Ready), None, None, None, None, None, Some(NotReady)]
        );
    }

    #[test]
    fn liveness_failure_is_decisive_whatever_fall_says() {
        let mut t = Tracker::new(2, 5);
        let got = states(&mut t, vec![ready(), dead(), dead()]);
        assert_eq!(got, vec![Some(State::Ready), Some(State::Dead), None]);
    }

    #[test]
    fn rise_counts_consecutive_good_results_and_restarts_on_failure() {
        let mut t = Tracker::new(3, 1);
        use State::*;
        let got = states(
            &mut t,
            vec![
                ready(),
                dead(),
                ready(),
                ready(),
                failing(),
                ready(),
                ready(),
                ready(),
            ],
        );
        assert_eq!(
            got,
            vec![
                Some(Ready),
                Some(Dead),
                None,
                None,
                Some(NotReady),
                None,
                None,
                Some(Ready)
            ]
        );
    }

    #[test]
    fn unknown_is_in_service_and_swaps_with_ready_without_threshold() {
        let mut t = Tracker::new(2, 2);
        use State::*;
        let got = states(
            &mut t,
            vec![unknown(), ready(), unknown(), failing(), failing()],
        );
        assert_eq!(
            got,
            vec![
                Some(Unknown),
                Some(Ready),
                Some(Unknown),
                None,
                Some(NotReady)
            ]
        );
        assert!(Unknown.in_service() && Ready.in_service());
        assert!(!NotReady.in_service() && !Dead.in_service());
    }

    #[test]
    fn a_dead_backend_that_answers_a_failing_status_is_not_ready_at_once() {
        let mut t = Tracker::new(2, 2);
        let got = states(&mut t, vec![dead(), failing()]);
        assert_eq!(got, vec![Some(State::Dead), Some(State::NotReady)]);
    }
}
