//! The router: projects the ledger into the `pledger_routing` KV bucket, and reconciles the
//! bucket with the ledger (the ledger wins) at start and periodically.

use std::time::{Duration, Instant};

use pledger_core::routing::{check_table, routing_table_for, TableCheck};
use pledger_core::PromptName;
use tracing::{debug, info, info_span, warn, Instrument};

use super::{stopping, touched_prompts, Batches, Shutdown, WorkerContext, WorkerError};
use crate::ledger::{LEDGER_STREAM, LEDGER_SUBJECTS};

const SOURCE: &str = LEDGER_STREAM;
/// How often the router compares every prompt's table with the ledger.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

pub async fn run(ctx: WorkerContext, mut shutdown: Shutdown) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "router", replica = %ctx.replica);
    async move {
        let consumer = ctx.consumer(LEDGER_STREAM, LEDGER_SUBJECTS).await?;
        let mut batches = Batches::new(&consumer).await?;
        reconcile_all(&ctx).await?;
        let mut last_reconcile = Instant::now();
        info!("router running");
        while !stopping(&shutdown) {
            let batch = tokio::select! {
                b = batches.next(Duration::from_millis(250)) => b?,
                _ = shutdown.changed() => break,
            };
            if last_reconcile.elapsed() >= RECONCILE_EVERY {
                reconcile_all(&ctx).await?;
                last_reconcile = Instant::now();
            }
            if batch.is_empty() {
                continue;
            }
            let applied = ctx.store.applied_sequence(SOURCE)?;
            let (prompts, last) = touched_prompts(&batch, applied, |_| true)?;
            for prompt in prompts {
                project(&ctx, &prompt).await?;
            }
            ctx.store.apply(SOURCE, last, |_| Ok(()))?;
            ctx.ack(&batch).await?;
        }
        info!("router stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Writes the prompt's table derived from its current ledger state (never over a newer one).
pub async fn project(ctx: &WorkerContext, prompt: &PromptName) -> Result<(), WorkerError> {
    let family = ctx.load(prompt).await?;
    if family.state.is_registered() {
        ctx.routing
            .publish(&routing_table_for(&family.state, family.last_sequence))
            .await?;
    }
    Ok(())
}

/// Makes every prompt's table agree with the ledger, even over a table that claims a later
/// sequence than the ledger has (the ledger wins).
pub async fn reconcile_all(ctx: &WorkerContext) -> Result<(), WorkerError> {
    let applied = ctx.store.applied_sequence(SOURCE)?;
    for prompt in ctx.ledger.prompts().await? {
        let stored = ctx.routing.get(&prompt).await?;
        let family = ctx.load(&prompt).await?;
        if !family.state.is_registered() {
            continue;
        }
        let derived = routing_table_for(&family.state, family.last_sequence);
        match stored {
            Some((table, revision)) => match check_table(&table, &derived, applied) {
                TableCheck::Agrees => {}
                TableCheck::Behind => {
                    debug!(prompt = %prompt, stored_sequence = table.ledger_sequence, ledger_sequence = derived.ledger_sequence, applied, "routing table behind the ledger; bringing it up to date");
                    ctx.routing.replace(&derived, revision).await?;
                }
                TableCheck::Disagrees => {
                    warn!(prompt = %prompt, stored_sequence = table.ledger_sequence, ledger_sequence = derived.ledger_sequence, applied, "routing table disagrees with the ledger; rewriting it");
                    // A writer that got in between wins this round; the next reconcile looks again.
                    ctx.routing.replace(&derived, revision).await?;
                }
            },
            None => {
                ctx.routing.publish(&derived).await?;
            }
        }
    }
    Ok(())
}
