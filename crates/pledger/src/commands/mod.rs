//! Command implementations: each reads the ledger, runs the pure decider through the
//! ledger's read-decide-append loop, updates the routing table where routing changed, and
//! returns a report (text for people, one JSON object for scripts).
//!
//! One module per command group of the CLI, each an `impl App` block that `App::run` (in
//! `app.rs`) dispatches to. `init` and `identity` are in `identity.rs`, `windows` and `digest`
//! in `schedule.rs`, `sim` in `sim.rs`.

pub(crate) mod audit;
mod eval;
mod notify;
mod prompt;
mod regressions;
mod release;
mod resolve;
mod rollback;
mod rollout;
