//! The VIP holder's side of [`Leadership`]: when to take the address and
//! when to let it go, with the deadline kept by its own timer.

use tokio::sync::watch;
use tokio::time::Instant as Clock;

use crate::{Leadership, now};

/// Turns published [`Leadership`] into take and let-go steps.
#[derive(Debug)]
pub struct Holder {
    rx: watch::Receiver<Leadership>,
    holding: bool,
    /// The election's sender is gone: nothing more will come.
    closed: bool,
}

impl Holder {
    pub fn new(rx: watch::Receiver<Leadership>) -> Holder {
        Holder {
            rx,
            holding: false,
            closed: false,
        }
    }

    /// Whether the last step said to hold.
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// Waits for the next step: `Some(true)` take the VIP, `Some(false)`
    /// let it go (the deadline passed with no renewal, someone else leads,
    /// or the election stopped while we held), `None` the election stopped
    /// and we hold nothing. The deadline is met by this timer even when
    /// the election is stuck in a request.
    pub async fn next(&mut self) -> Option<bool> {
        loop {
            let lead = if self.closed {
                Leadership::Unknown
            } else {
                self.rx.borrow_and_update().clone()
            };
            let want = lead.leads_at(now());
            if want != self.holding {
                self.holding = want;
                return Some(want);
            }
            if self.closed {
                return None;
            }
            let changed = match lead {
                Leadership::Leader { until } if self.holding => {
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
