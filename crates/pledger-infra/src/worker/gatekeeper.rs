//! The gatekeeper: runs the release gate as soon as a release has both approvals and an eval
//! bundle (and, where the only failing checks are ones a trade-off may waive, a trade-off
//! acceptance), and records exactly one decision per (release, candidate, bundle).

use std::time::Duration;

use pledger_core::decide::Rule;
use pledger_core::{Command, PromptName};

pub use pledger_core::workers::gatekeeper::{gate_action, GateAction};
use tracing::{info, info_span, warn, Instrument};

use super::{stopping, touched_prompts, Batches, Shutdown, WorkerContext, WorkerError};
use crate::ledger::{ExecuteError, LEDGER_STREAM, LEDGER_SUBJECTS};

const SOURCE: &str = LEDGER_STREAM;

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
            ctx.ack(&batch).await?;
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
    let decider = family.context(&*ctx.signer, crate::ledger::now())?;
    for r in family.state.releases.values() {
        match gate_action(&family.state, r, &decider) {
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
                            match s.release(&release).map(|r| gate_action(s, &r, &decider)) {
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
