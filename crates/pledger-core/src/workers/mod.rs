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
pub mod scheduler;
