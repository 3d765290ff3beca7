//! The feedback collector: turns the feedback services attach to outcomes into regression
//! cases on the prompt's ledger subject, redacted before anything is stored, de-duplicated by
//! fingerprint (the thousandth report of one failure raises a count), and rate-limited per
//! prompt so that a flood cannot fill the ledger.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pledger_core::decide::NewRegressionCase;
use pledger_core::event::CaseSource;
use pledger_core::outcome::{parse_outcome_message, FeedbackTag};
use pledger_core::redact::{fingerprint, RedactionPolicy, Redactor};
use pledger_core::{Command, PromptName, ReleaseId, VersionId};
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn, Instrument};

use super::{ack_batch, sequence_of, stopping, Batches, Shutdown, WorkerContext, WorkerError};
use crate::ledger::{ExecuteError, CANARY_STATUS_BUCKET, OUTCOMES_STREAM};

/// New cases a prompt may add per minute; more are counted, not recorded.
pub const NEW_CASES_PER_MINUTE: u32 = 20;
/// Least time between two recurrence events of one case (reports accumulate meanwhile).
pub const RECURRENCE_EVERY: Duration = Duration::from_secs(10);

/// Reports of one failure not yet on the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCase {
    pub prompt: PromptName,
    pub fingerprint: String,
    pub tag: FeedbackTag,
    pub example: String,
    pub version: VersionId,
    pub release: Option<ReleaseId>,
    pub count: u64,
    pub through_sequence: u64,
}

/// Per-prompt counters, published for `pledger regressions list`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackCounters {
    pub reports: u64,
    pub cases_recorded: u64,
    /// New cases refused by the rate limit.
    pub rate_limited: u64,
    /// Replacements made by redaction, by pattern name.
    pub redacted: BTreeMap<String, u64>,
}

fn pending_key(fingerprint: &str) -> String {
    format!("pending/{fingerprint}")
}
fn known_key(fingerprint: &str) -> String {
    format!("known/{fingerprint}")
}
fn counters_key(prompt: &PromptName) -> String {
    format!("counters/{prompt}")
}

/// The status-bucket key of a prompt's feedback counters.
pub fn status_key(prompt: &PromptName) -> String {
    format!("feedback-{prompt}")
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
        let consumer = ctx.consumer(OUTCOMES_STREAM, "pledger.outcomes.*").await?;
        let mut batches = Batches::new(&consumer).await?;
        let status = ctx
            .ledger
            .jetstream()
            .get_key_value(CANARY_STATUS_BUCKET)
            .await
            .map_err(|e| WorkerError::Nats(e.to_string()))?;
        let mut budget: BTreeMap<PromptName, (Instant, u32)> = BTreeMap::new();
        let mut last_flush: BTreeMap<String, Instant> = BTreeMap::new();
        info!("feedback collector running");
        while !stopping(&shutdown) {
            let batch = tokio::select! {
                b = batches.next(Duration::from_millis(500)) => b?,
                _ = shutdown.changed() => break,
            };
            if !batch.is_empty() {
                collect(&ctx, &redactor, &batch).await?;
                ack_batch(&batch).await?;
            }
            flush(&ctx, &status, &mut budget, &mut last_flush).await?;
        }
        info!("feedback collector stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Folds a batch's feedback into pending cases, committed with the batch's sequence.
async fn collect(
    ctx: &WorkerContext,
    redactor: &Redactor,
    batch: &[async_nats::jetstream::Message],
) -> Result<(), WorkerError> {
    let applied = ctx.store.applied_sequence(OUTCOMES_STREAM)?;
    let mut last = applied;
    let mut pending: BTreeMap<String, PendingCase> = BTreeMap::new();
    let mut counters: BTreeMap<PromptName, FeedbackCounters> = BTreeMap::new();
    for m in batch {
        let seq = sequence_of(m)?;
        last = last.max(seq);
        if seq <= applied {
            continue;
        }
        // Malformed outcomes are the canary monitor's to dead-letter; here they carry nothing.
        for o in parse_outcome_message(&m.payload).into_iter().flatten() {
            let Some(f) = &o.feedback else { continue };
            let redacted = redactor.redact(&f.example);
            let c = counters.entry(o.prompt.clone()).or_default();
            c.reports += 1;
            for (pattern, n) in &redacted.replaced {
                *c.redacted.entry(pattern.clone()).or_default() += u64::from(*n);
            }
            let fp = fingerprint(&o.prompt, f.tag, &redacted.text);
            let entry = pending.entry(fp.clone()).or_insert_with(|| PendingCase {
                prompt: o.prompt.clone(),
                fingerprint: fp,
                tag: f.tag,
                example: redacted.text.clone(),
                version: o.version.clone(),
                release: o.release.clone(),
                count: 0,
                through_sequence: 0,
            });
            entry.count += 1;
            entry.through_sequence = seq;
        }
    }
    ctx.store.apply(OUTCOMES_STREAM, last, |tx| {
        for (fp, new) in &pending {
            let key = pending_key(fp);
            let merged = match tx.get::<PendingCase>(&key)? {
                Some(mut old) => {
                    old.count += new.count;
                    old.through_sequence = new.through_sequence;
                    old
                }
                None => new.clone(),
            };
            tx.put(&key, &merged)?;
        }
        for (prompt, delta) in &counters {
            let key = counters_key(prompt);
            let mut c: FeedbackCounters = tx.get(&key)?.unwrap_or_default();
            c.reports += delta.reports;
            for (k, v) in &delta.redacted {
                *c.redacted.entry(k.clone()).or_default() += v;
            }
            tx.put(&key, &c)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Records pending cases on the ledger: new ones within the prompt's rate limit, repeats at
/// most every [`RECURRENCE_EVERY`]. A recorded case leaves the pending set; a crash before
/// that re-submits it, which the ledger recognises by its `through_sequence`.
async fn flush(
    ctx: &WorkerContext,
    status: &async_nats::jetstream::kv::Store,
    budget: &mut BTreeMap<PromptName, (Instant, u32)>,
    last_flush: &mut BTreeMap<String, Instant>,
) -> Result<(), WorkerError> {
    let pending: Vec<PendingCase> = ctx.store.scan_prefix("pending/")?;
    let mut touched = BTreeMap::new();
    for case in pending {
        let known = ctx
            .store
            .get::<bool>(&known_key(&case.fingerprint))?
            .unwrap_or(false);
        if known
            && last_flush
                .get(&case.fingerprint)
                .is_some_and(|t| t.elapsed() < RECURRENCE_EVERY)
        {
            continue;
        }
        let mut counters: FeedbackCounters = ctx
            .store
            .get(&counters_key(&case.prompt))?
            .unwrap_or_default();
        if !known {
            let (since, used) = budget
                .entry(case.prompt.clone())
                .or_insert((Instant::now(), 0));
            if since.elapsed() >= Duration::from_secs(60) {
                *since = Instant::now();
                *used = 0;
            }
            if *used >= NEW_CASES_PER_MINUTE {
                counters.rate_limited += case.count;
                warn!(prompt = %case.prompt, "rate limit: {} new cases this minute; dropping a new case", used);
                ctx.store.remove(&pending_key(&case.fingerprint))?;
                ctx.store.put(&counters_key(&case.prompt), &counters)?;
                touched.insert(case.prompt.clone(), counters);
                continue;
            }
            *used += 1;
        }
        let command = Command::CollectRegressionCase(NewRegressionCase {
            fingerprint: case.fingerprint.clone(),
            tag: case.tag,
            example: case.example.clone(),
            version: Some(case.version.clone()),
            release: case.release.clone(),
            source: CaseSource::Production,
            count: case.count,
            through_sequence: case.through_sequence,
        });
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
        ctx.store.remove(&pending_key(&case.fingerprint))?;
        ctx.store.put(&counters_key(&case.prompt), &counters)?;
        last_flush.insert(case.fingerprint.clone(), Instant::now());
        touched.insert(case.prompt.clone(), counters);
    }
    for (prompt, counters) in touched {
        let bytes = serde_json::to_vec(&counters).expect("counters serialize");
        status
            .put(status_key(&prompt), bytes.into())
            .await
            .map_err(|e| WorkerError::Nats(e.to_string()))?;
    }
    Ok(())
}
