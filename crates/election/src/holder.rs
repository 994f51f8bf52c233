//! The VIP holder's side of [`Leadership`]: when to take the address, when
//! a renewal extended it, and when to let it go, with the deadline kept by
//! its own timer.

use std::time::Instant;

use tokio::sync::watch;
use tokio::time::Instant as Clock;

use crate::{Leadership, now};

/// What the holder of the VIP is to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take the VIP: a write sent at `sent` made us lead until `until`.
    Take { sent: Instant, until: Instant },
    /// Still ours: a later write, sent at `sent`, extends it to `until`
    /// (the moment to refresh anything with a lifetime of its own).
    Renewed { sent: Instant, until: Instant },
    /// Let it go: the deadline passed with no renewal, someone else leads,
    /// or the election stopped while we held.
    LetGo,
}

/// Turns published [`Leadership`] into [`Step`]s.
#[derive(Debug)]
pub struct Holder {
    rx: watch::Receiver<Leadership>,
    /// The send time of the write behind the last Take or Renewed step;
    /// `None` when not holding.
    held: Option<Instant>,
    /// The election's sender is gone: nothing more will come.
    closed: bool,
}

impl Holder {
    pub fn new(rx: watch::Receiver<Leadership>) -> Holder {
        Holder {
            rx,
            held: None,
            closed: false,
        }
    }

    /// Whether the last step said to hold.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Waits for the next step; `None` once the election stopped and we
    /// hold nothing. The deadline is met by this timer even when the
    /// election is stuck in a request.
    pub async fn next(&mut self) -> Option<Step> {
        loop {
            let lead = if self.closed {
                Leadership::Unknown
            } else {
                self.rx.borrow_and_update().clone()
            };
            match (&lead, self.held) {
                (Leadership::Leader { sent, until }, held) if lead.leads_at(now()) => {
                    let step = match held {
                        None => Some(Step::Take {
                            sent: *sent,
                            until: *until,
                        }),
                        Some(h) if h < *sent => Some(Step::Renewed {
                            sent: *sent,
                            until: *until,
                        }),
                        Some(_) => None,
                    };
                    if let Some(step) = step {
                        self.held = Some(*sent);
                        return Some(step);
                    }
                }
                (_, Some(_)) => {
                    self.held = None;
                    return Some(Step::LetGo);
                }
                (_, None) => {}
            }
            if self.closed {
                return None;
            }
            let changed = match lead {
                Leadership::Leader { until, .. } if self.held.is_some() => {
                    tokio::select! {
                        r = self.rx.changed() => r,
                        _ = tokio::time::sleep_until(Clock::from_std(until)) => Ok(()),
                    }
                }
                _ => self.rx.changed().await,
            };
            self.closed = changed.is_err();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn steps_follow_writes_and_the_deadline_is_kept_by_the_timer() {
        let (tx, rx) = watch::channel(Leadership::Unknown);
        let mut h = Holder::new(rx);
        let t0 = now();
        tx.send_replace(Leadership::Leader {
            sent: t0,
            until: t0 + 800 * MS,
        });
        assert_eq!(
            h.next().await,
            Some(Step::Take {
                sent: t0,
                until: t0 + 800 * MS
            })
        );
        // The same write published again is no news.
        tx.send_replace(Leadership::Leader {
            sent: t0,
            until: t0 + 800 * MS,
        });
        let t1 = t0 + 200 * MS;
        tokio::time::advance(200 * MS).await;
        tx.send_replace(Leadership::Leader {
            sent: t1,
            until: t1 + 800 * MS,
        });
        assert_eq!(
            h.next().await,
            Some(Step::Renewed {
                sent: t1,
                until: t1 + 800 * MS
            })
        );
        // No more renewals: let go at the deadline, to the millisecond.
        assert_eq!(h.next().await, Some(Step::LetGo));
        assert_eq!(now(), t1 + 800 * MS);
        assert!(!h.holding());
        drop(tx);
        assert_eq!(h.next().await, None);
    }
}
