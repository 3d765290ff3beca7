//! The notary's driver: feeds every ledger message to [`Notary`], persists its state with the
//! stream sequence, and signs and appends the checkpoints it asks for to `PLEDGER_CHECKPOINTS`.

use std::time::Duration;

use pledger_core::note;
use pledger_core::verify::key_id;
use pledger_core::workers::notary::{Notary, NotaryConfig, NotaryState};
use tracing::{info, info_span, warn, Instrument};

use super::{sequence_of, stopping, Batches, Shutdown, WorkerContext, WorkerError};
use crate::ledger::{now, LEDGER_STREAM, LEDGER_SUBJECTS};

const SOURCE: &str = LEDGER_STREAM;
/// The store key of [`NotaryState`].
const STATE_KEY: &str = "notary-state";
/// How often the notary looks whether a checkpoint is due while nothing arrives.
const TICK: Duration = Duration::from_secs(1);

pub async fn run(ctx: WorkerContext, shutdown: Shutdown) -> Result<(), WorkerError> {
    run_with(ctx, shutdown, NotaryConfig::default()).await
}

pub async fn run_with(
    ctx: WorkerContext,
    mut shutdown: Shutdown,
    config: NotaryConfig,
) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "notary", replica = %ctx.replica);
    async move {
        let Some(signing_key) = ctx.signer.note_key() else {
            return Err(WorkerError::Config(
                "the notary needs its own Ed25519 key file (a key held by ssh-agent cannot sign checkpoint notes)".into(),
            ));
        };
        let name = ctx.actor.to_string();
        let applied = ctx.store.applied_sequence(SOURCE)?;
        let state: NotaryState = if applied == 0 {
            NotaryState::default()
        } else {
            ctx.store.get(STATE_KEY)?.unwrap_or_default()
        };
        let mut notary = Notary::new(config, state, &key_id(ctx.signer.public_key()));
        // The roster up to where the notary resumes (it follows the rest in stream order).
        for r in ctx
            .ledger
            .read_raw(&[pledger_core::names::ROSTER_SUBJECT], 0)
            .await?
            .into_iter()
            .filter(|r| r.sequence <= applied)
        {
            notary.roster_message(r.sequence, &r.payload);
        }
        let consumer = ctx.consumer(LEDGER_STREAM, LEDGER_SUBJECTS).await?;
        let mut batches = Batches::new(&consumer).await?;
        let mut tick = tokio::time::interval(TICK);
        let mut told: Option<String> = None;
        info!(size = notary.state.tree.size, "notary running");
        while !stopping(&shutdown) {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                b = batches.next(Duration::from_millis(250)) => {
                    let batch = b?;
                    if batch.is_empty() {
                        continue;
                    }
                    let applied = ctx.store.applied_sequence(SOURCE)?;
                    let mut last = applied;
                    for m in &batch {
                        let seq = sequence_of(m)?;
                        if seq <= applied {
                            continue;
                        }
                        notary.observe(seq, &m.subject, &m.payload);
                        last = seq;
                    }
                    let state = notary.state.clone();
                    ctx.store.apply(SOURCE, last, |tx| tx.put(STATE_KEY, &state))?;
                    ctx.ack(&batch).await?;
                }
                _ = tick.tick() => {}
            }
            let at = now();
            match notary.due(at) {
                Some(checkpoint) => {
                    let body = checkpoint.body();
                    let text = note::sign(&body, &name, &signing_key)
                        .map_err(|e| WorkerError::Config(format!("signing a checkpoint: {e}")))?;
                    let root = pledger_core::merkle::hash_to_base64(&checkpoint.root);
                    let sequence = ctx
                        .ledger
                        .publish_checkpoint(checkpoint.size, &root, &text)
                        .await?;
                    notary.written(checkpoint.size, at);
                    ctx.store.put(STATE_KEY, &notary.state)?;
                    info!(size = checkpoint.size, root = %root, sequence, "checkpoint written");
                    told = None;
                }
                None => {
                    let grown = notary.state.tree.size > notary.state.last_size;
                    let why = if grown { notary.cannot_sign() } else { None };
                    if why.is_some() && why != told {
                        warn!("no checkpoint can be signed yet: {}", why.as_deref().unwrap_or_default());
                        told = why;
                    }
                }
            }
        }
        info!("notary stopped");
        Ok(())
    }
    .instrument(span)
    .await
}
