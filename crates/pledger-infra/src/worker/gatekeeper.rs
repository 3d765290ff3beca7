//! The gatekeeper: runs the release gate as soon as a release has both approvals and an eval
//! bundle (and, where the only failing checks are ones a trade-off may waive, a trade-off
//! acceptance), and records exactly one decision per (release, candidate, bundle).

use std::time::Duration;

use pledger_core::decide::Rule;
use pledger_core::event::{ReviewLayer, ReviewVerdict};
use pledger_core::gate::evaluate_gate_with_cases;
use pledger_core::state::{PromptState, ReleaseState, ReleaseStatus};
use pledger_core::{Command, PromptName};
use tracing::{info, info_span, warn, Instrument};

use super::{ack_batch, stopping, touched_prompts, Batches, Shutdown, WorkerContext, WorkerError};
use crate::ledger::{ExecuteError, LEDGER_STREAM, LEDGER_SUBJECTS};

const SOURCE: &str = LEDGER_STREAM;

/// What the gatekeeper would do with a release now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateAction {
    /// Run the gate.
    Decide,
    /// Not ready, or already decided: nothing to do.
    Nothing,
    /// Ready but the only failures are ones a trade-off may waive: wait for an acceptance.
    AwaitTradeoff,
}

/// The gatekeeper's rule for one release (pure).
pub fn gate_action(state: &PromptState, r: &ReleaseState) -> GateAction {
    if r.status != ReleaseStatus::Proposed {
        return GateAction::Nothing;
    }
    let approved = |layer| {
        r.reviews
            .get(&layer)
            .is_some_and(|x| x.verdict == ReviewVerdict::Approve)
    };
    if !approved(ReviewLayer::Product) || !approved(ReviewLayer::Technical) {
        return GateAction::Nothing;
    }
    let (Some(bundle), Some(evidence)) = (&r.bundle, r.current_evidence(&state.policy)) else {
        return GateAction::Nothing;
    };
    if bundle.bundle.candidate != r.candidate {
        return GateAction::Nothing;
    }
    // One decision per (release, candidate, bundle): a decision on this pair exists already.
    if let Some(g) = &r.gate {
        if g.evidence.candidate == evidence.candidate
            && g.evidence.bundle_digest == evidence.bundle_digest
            && (g.passed || g.evidence.tradeoff_accepted == evidence.tradeoff_accepted)
        {
            return GateAction::Nothing;
        }
    }
    let required: Vec<String> = state
        .cases_to_cover()
        .into_iter()
        .map(|c| c.case_id.clone())
        .collect();
    let outcome = evaluate_gate_with_cases(
        &bundle.bundle,
        &state.policy,
        evidence.tradeoff_accepted,
        &required,
    );
    if !outcome.passed
        && !evidence.tradeoff_accepted
        && outcome.failed_checks().all(|c| c.kind.waivable())
    {
        return GateAction::AwaitTradeoff;
    }
    GateAction::Decide
}

pub async fn run(ctx: WorkerContext, mut shutdown: Shutdown) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "gatekeeper", replica = %ctx.replica);
    async move {
        let consumer = ctx.consumer(LEDGER_STREAM, LEDGER_SUBJECTS).await?;
        let mut batches = Batches::new(&consumer).await?;
        info!("gatekeeper running");
        while !stopping(&shutdown) {
            let batch = tokio::select! {
                b = batches.next(Duration::from_millis(250)) => b?,
                _ = shutdown.changed() => break,
            };
            if batch.is_empty() {
                continue;
            }
            let applied = ctx.store.applied_sequence(SOURCE)?;
            let (prompts, last) = touched_prompts(&batch, applied, |e| {
                e.aggregate_id.starts_with("release:") || e.kind() == "prompt.gate_policy_set"
            })?;
            for prompt in prompts {
                gate_prompt(&ctx, &prompt).await?;
            }
            ctx.store.apply(SOURCE, last, |_| Ok(()))?;
            ack_batch(&batch).await?;
        }
        info!("gatekeeper stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Decides every release of `prompt` that is ready for its gate.
pub async fn gate_prompt(ctx: &WorkerContext, prompt: &PromptName) -> Result<(), WorkerError> {
    let family = ctx.load(prompt).await?;
    for r in family.state.releases.values() {
        match gate_action(&family.state, r) {
            GateAction::Nothing => {}
            GateAction::AwaitTradeoff => {
                info!(release = %r.id, "gate held: only waivable checks fail; waiting for a trade-off acceptance")
            }
            GateAction::Decide => {
                let release = r.id.clone();
                let result = ctx
                    .ledger
                    .execute(
                        prompt,
                        &*ctx.signer,
                        &format!("gatekeeper-{release}"),
                        |s| {
                            // Re-check on the state this attempt sees: another replica may have decided.
                            match s.release(&release).map(|r| gate_action(s, r)) {
                                Some(GateAction::Decide) => Ok(Command::DecideGate {
                                    release: release.clone(),
                                }),
                                _ => Err(pledger_core::Rejection {
                                    rule: Rule::GateUnchangedEvidence,
                                    message: format!("{release} needs no gate now"),
                                }),
                            }
                        },
                    )
                    .await;
                match result {
                    Ok(done) if !done.recorded.is_empty() => {
                        info!(release = %release, "gate decided")
                    }
                    Ok(_) => {}
                    Err(ExecuteError::Rejected(r)) => {
                        info!(release = %release, rule = %r.rule, "gate not decided: {}", r.message)
                    }
                    Err(ExecuteError::Conflict { .. }) => {
                        warn!(release = %release, "gate: the ledger kept changing; will retry on the next event")
                    }
                    Err(ExecuteError::Infra(e)) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}
