//! The feedback collector: turns the feedback services attach to outcomes into regression
//! cases on the prompt's ledger subject, redacted before anything is stored, de-duplicated by
//! fingerprint (the thousandth report of one failure raises a count), rate-limited per prompt
//! so that a flood cannot fill the ledger, and recorded again at most once an hour per case
//! (the reports in between are counted live in the status bucket).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pledger_core::outcome::parse_outcome_message;
use pledger_core::redact::{RedactionPolicy, Redactor};
use pledger_core::workers::feedback::{collect, unrecorded, Collector, Known, Submission};
use pledger_core::{PromptName, Timestamp};
use tracing::{info, info_span, warn, Instrument};

pub use pledger_core::workers::feedback::{
    FeedbackCounters, PendingCase, NEW_CASES_PER_MINUTE, RECURRENCE_SLOT_MILLIS,
};

use super::{sequence_of, stopping, Batches, Shutdown, WorkerContext, WorkerError};
use crate::ledger::{ExecuteError, CANARY_STATUS_BUCKET, OUTCOMES_STREAM};

fn pending_key(fingerprint: &str) -> String {
    format!("pending/{fingerprint}")
}
fn known_key(fingerprint: &str) -> String {
    format!("known/{fingerprint}")
}
fn counters_key(prompt: &PromptName) -> String {
    format!("counters/{prompt}")
}
/// When a case was last recorded (the ledger's clock), so a restart keeps its pacing.
fn recorded_key(fingerprint: &str) -> String {
    format!("recorded/{fingerprint}")
}

/// The status-bucket key of a prompt's feedback counters.
pub fn status_key(prompt: &PromptName) -> String {
    pledger_core::names::feedback_status_key(prompt)
}

/// Reads the redaction policy from `$PLEDGER_REDACTION_POLICY` (a TOML or JSON file, which
/// replaces the default patterns), else the default.
pub fn redaction_policy() -> Result<RedactionPolicy, WorkerError> {
    match std::env::var_os("PLEDGER_REDACTION_POLICY") {
        None => Ok(RedactionPolicy::default()),
        Some(path) => {
            let name = path.to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| WorkerError::Nats(format!("{name}: {e}")))?;
            RedactionPolicy::from_text(&text, pledger_core::FileFormat::from_path(&name))
                .map_err(|e| WorkerError::Nats(format!("{name}: {e}")))
        }
    }
}

pub async fn run(ctx: WorkerContext, mut shutdown: Shutdown) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "feedback", replica = %ctx.replica);
    async move {
        let redactor = Redactor::new(&redaction_policy()?)
            .map_err(|e| WorkerError::Nats(format!("redaction policy: {e}")))?;
        let consumer = ctx
            .consumer(OUTCOMES_STREAM, pledger_core::names::OUTCOMES_FILTER)
            .await?;
        let mut batches = Batches::new(&consumer).await?;
        let status = ctx
            .ledger
            .jetstream()
            .get_key_value(CANARY_STATUS_BUCKET)
            .await
            .map_err(|e| WorkerError::Nats(e.to_string()))?;
        let mut collector = Collector::new();
        let mut published = BTreeMap::new();
        info!("feedback collector running");
        while !stopping(&shutdown) {
            let batch = tokio::select! {
                b = batches.next(Duration::from_millis(500)) => b?,
                _ = shutdown.changed() => break,
            };
            if !batch.is_empty() {
                store_batch(&ctx, &redactor, &batch)?;
                ctx.ack(&batch).await?;
            }
            submit(&ctx, &status, &mut collector, &mut published).await?;
        }
        info!("feedback collector stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Folds a batch's feedback into pending cases, committed with the batch's sequence.
fn store_batch(
    ctx: &WorkerContext,
    redactor: &Redactor,
    batch: &[async_nats::jetstream::Message],
) -> Result<(), WorkerError> {
    let applied = ctx.store.applied_sequence(OUTCOMES_STREAM)?;
    let mut last = applied;
    let mut outcomes = Vec::new();
    for m in batch {
        let sequence = sequence_of(m)?;
        last = last.max(sequence);
        if sequence > applied {
            // Malformed outcomes are the canary monitor's to dead-letter; here they carry
            // nothing.
            outcomes.extend(
                parse_outcome_message(&m.payload)
                    .into_iter()
                    .flatten()
                    .map(|o| (sequence, o)),
            );
        }
    }
    let added = collect(redactor, outcomes.iter().map(|(s, o)| (*s, o)));
    ctx.store.apply(OUTCOMES_STREAM, last, |tx| {
        for (fp, new) in &added.pending {
            let key = pending_key(fp);
            let merged = match tx.get::<PendingCase>(&key)? {
                Some(mut old) => {
                    old.merge(new);
                    old
                }
                None => new.clone(),
            };
            tx.put(&key, &merged)?;
        }
        for (prompt, delta) in &added.counters {
            let key = counters_key(prompt);
            let mut c: FeedbackCounters = tx.get(&key)?.unwrap_or_default();
            c.add(delta);
            tx.put(&key, &c)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Records pending cases on the ledger as the collector's pacing allows. A recorded case
/// leaves the pending set; a crash before that re-submits it, which the ledger recognises by
/// its `through_sequence`. A refused case is reported for its prompt and dropped. Then
/// publishes each prompt's counters, with the reports not yet recorded, when they changed.
async fn submit(
    ctx: &WorkerContext,
    status: &async_nats::jetstream::kv::Store,
    collector: &mut Collector,
    published: &mut BTreeMap<PromptName, FeedbackCounters>,
) -> Result<(), WorkerError> {
    let pending: Vec<PendingCase> = ctx.store.scan_prefix("pending/")?;
    let mut touched: BTreeMap<PromptName, FeedbackCounters> = BTreeMap::new();
    for case in &pending {
        let known = match ctx.store.get::<bool>(&known_key(&case.fingerprint))? {
            Some(true) => Known::Recorded {
                last: ctx
                    .store
                    .get::<Timestamp>(&recorded_key(&case.fingerprint))?,
            },
            _ => Known::New,
        };
        let mut counters: FeedbackCounters = ctx
            .store
            .get(&counters_key(&case.prompt))?
            .unwrap_or_default();
        let now = crate::ledger::now();
        match collector.next_submission(case, known, Instant::now(), now) {
            Submission::Later => {
                touched.entry(case.prompt.clone()).or_insert(counters);
                continue;
            }
            Submission::RateLimited => {
                counters.rate_limited += case.count;
                warn!(prompt = %case.prompt, "rate limit: {NEW_CASES_PER_MINUTE} new cases this minute; dropping a new case");
                ctx.store.remove(&pending_key(&case.fingerprint))?;
                ctx.store.put(&counters_key(&case.prompt), &counters)?;
                touched.insert(case.prompt.clone(), counters);
                continue;
            }
            Submission::Submit => {}
        }
        let command = case.command();
        match ctx
            .ledger
            .execute(
                &case.prompt,
                &*ctx.signer,
                "feedback-collector",
                move |_| Ok(command.clone()),
            )
            .await
        {
            Ok(done) => {
                let collected = done.recorded.iter().any(|r| {
                    matches!(
                        r.envelope.event,
                        pledger_core::Event::RegressionCaseCollected(_)
                    )
                });
                if collected {
                    counters.cases_recorded += 1;
                }
            }
            Err(ExecuteError::Rejected(r)) => {
                warn!(prompt = %case.prompt, rule = %r.rule, "case not recorded: {}", r.message)
            }
            Err(ExecuteError::Conflict { .. }) => continue,
            Err(ExecuteError::Infra(e)) => return Err(e.into()),
        }
        ctx.store.put(&known_key(&case.fingerprint), &true)?;
        ctx.store.put(&recorded_key(&case.fingerprint), &now)?;
        ctx.store.remove(&pending_key(&case.fingerprint))?;
        ctx.store.put(&counters_key(&case.prompt), &counters)?;
        touched.insert(case.prompt.clone(), counters);
    }
    ctx.store.flush().await?;
    let still: Vec<PendingCase> = ctx.store.scan_prefix("pending/")?;
    for (prompt, mut counters) in touched {
        counters.unrecorded = unrecorded(&prompt, &still);
        if published.get(&prompt) == Some(&counters) {
            continue;
        }
        let bytes = serde_json::to_vec(&counters).map_err(|e| WorkerError::Nats(e.to_string()))?;
        status
            .put(status_key(&prompt), bytes.into())
            .await
            .map_err(|e| WorkerError::Nats(e.to_string()))?;
        published.insert(prompt, counters);
    }
    Ok(())
}
