//! The workers' rules as sans-IO state machines. Each machine takes what its driver read
//! (ledger states, outcome messages, the monitor's published status) and the time, and returns
//! the commands to execute and the status to publish; its driver in `pledger-infra` only reads,
//! writes and executes. Time comes in as two values: `now`, the wall-clock [`Timestamp`] that
//! rules about bake times and windows compare with the ledger, and an [`std::time::Instant`]
//! for the machine's own pacing (status writes, retries, rate limits).
//!
//! [`Timestamp`]: crate::Timestamp

pub mod canary;
pub mod feedback;
pub mod gatekeeper;
pub mod notary;
pub mod scheduler;

use std::time::Duration;

/// How long a supervisor waits before starting a failed worker again: 1 s after the first
/// failure, doubling up to 30 s; a worker that ran for a minute before it failed starts the
/// count afresh. `pledger up` restarts its workers with this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(30);
    /// A run this long counts as healthy: the next failure waits [`Backoff::FIRST`] again.
    pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// Records a failure after a run of `ran_for`; returns the wait before the next start.
    pub fn after_failure(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::HEALTHY_RUN {
            self.failures = 0;
        }
        let wait = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Failures in a row (since the last healthy run).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}
