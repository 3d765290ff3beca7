//! The gatekeeper's rule: when to run a release's gate. The gate itself is the decider's
//! (`Command::DecideGate`): this machine asks the decider what the gate would record, on the
//! state and context the gatekeeper would record it with, and never predicts it another way.

use crate::decide::{decide, Command, Context};
use crate::event::Event;
use crate::state::{PromptState, ReleaseState, ReleaseStatus};

/// What the gatekeeper would do with a release now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateAction {
    /// Run the gate.
    Decide,
    /// Not ready, or already decided: nothing to do.
    Nothing,
    /// Ready, but the only failures are ones a trade-off may waive: wait for an acceptance.
    AwaitTradeoff,
}

/// The gatekeeper's rule for one release. The decider refuses a gate without both approvals,
/// without a bundle of the current candidate, or on evidence already decided; the gatekeeper
/// adds two choices of its own: a gate that passed is not run again automatically (a person
/// may), and a gate that would fail only on checks a trade-off may waive waits for one.
pub fn gate_action(state: &PromptState, r: &ReleaseState, ctx: &Context) -> GateAction {
    if r.status != ReleaseStatus::Proposed {
        return GateAction::Nothing;
    }
    if let (Some(g), Some(bundle)) = (&r.gate, &r.bundle) {
        if g.passed
            && g.evidence.candidate == r.candidate
            && bundle.bundle.candidate == r.candidate
            && r.current_evidence(&state.policy_digest)
                .is_some_and(|e| e.bundle_digest == g.evidence.bundle_digest)
        {
            return GateAction::Nothing;
        }
    }
    let command = Command::DecideGate {
        release: r.id.clone(),
    };
    match decide(state, &command, ctx).as_deref() {
        Ok([Event::GateDecided(d)])
            if !d.passed
                && !d.evidence.tradeoff_accepted
                && d.checks
                    .iter()
                    .filter(|c| !c.passed)
                    .all(|c| c.kind.waivable()) =>
        {
            GateAction::AwaitTradeoff
        }
        Ok([Event::GateDecided(_)]) => GateAction::Decide,
        _ => GateAction::Nothing,
    }
}
