//! The canary monitor: aggregates outcomes of each active rollout by stage and arm against a
//! concurrent control, judges every guardrail with an always-valid sequential test after each
//! batch, freezes (and, when the plan says so, rolls back) on a breach, advances healthy
//! stages when the plan allows it, and publishes its judgement for `pledger release show`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pledger_core::canary::{judge, ArmStats, JudgeConfig, Judgement, Verdict};
use pledger_core::decide::{Rule, StageReadiness};
use pledger_core::outcome::{parse_outcome_message, Feedback, Outcome};
use pledger_core::plan::RolloutPlan;
use pledger_core::routing::{routing_table_for, stage_matches, Arm};
use pledger_core::state::{PromptState, ReleaseStatus};
use pledger_core::{Command, PromptName, ReleaseId, Timestamp, VersionId};
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn, Instrument};

use super::{
    ack_batch, sequence_of, stopping, touched_prompts, Batches, Shutdown, WorkerContext,
    WorkerError,
};
use crate::codec::CodecError;
use crate::ledger::{
    now, ExecuteError, CANARY_STATUS_BUCKET, LEDGER_STREAM, LEDGER_SUBJECTS, OUTCOMES_STREAM,
};
use crate::projection::ProjectionTx;

/// Most feedback items kept per prompt (the total is counted beyond it).
pub const FEEDBACK_KEPT: usize = 1000;
/// Least time between two status writes of one release (a change of verdict writes at once).
const STATUS_EVERY: Duration = Duration::from_millis(200);

/// What the monitor knows of a rollout, projected from the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub release: ReleaseId,
    pub candidate: VersionId,
    pub baseline: VersionId,
    pub plan: RolloutPlan,
    pub stage: usize,
    pub stage_entered_at: Timestamp,
    /// `rolling_out`, `paused` or `frozen`.
    pub state: String,
}

/// What the monitor knows of a prompt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptView {
    pub versions: BTreeSet<VersionId>,
    pub rollout: Option<RolloutView>,
}

/// Outcome counts of one stage of one release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    pub candidate: ArmStats,
    /// Baseline traffic matching the stage's segment: the concurrent control.
    pub control_in_segment: ArmStats,
    /// Baseline traffic outside the stage's segment: the control when the stage sends all of
    /// its segment to the candidate.
    pub baseline_outside_segment: ArmStats,
}

impl StageStats {
    /// The control to judge against and which one it is.
    pub fn control(&self, plan: &RolloutPlan, stage: usize) -> (&ArmStats, ControlKind) {
        if plan.stages[stage].percent >= 100.0 {
            (&self.baseline_outside_segment, ControlKind::OutsideSegment)
        } else {
            (&self.control_in_segment, ControlKind::InSegment)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// Baseline requests in the same segment as the candidate's.
    InSegment,
    /// The stage sends its whole segment to the candidate: baseline requests outside it.
    OutsideSegment,
}

/// The monitor's counters (also in its status).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub outcomes_applied: u64,
    pub dead_lettered: u64,
    pub outside_rollout: u64,
    pub other_version: u64,
}

/// Feedback seen in outcomes, kept as it came for the feedback collector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackLog {
    pub total: u64,
    pub recent: Vec<FeedbackSeen>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackSeen {
    pub version: VersionId,
    pub release: Option<ReleaseId>,
    pub request_id: String,
    pub feedback: Feedback,
}

/// The monitor's published judgement of a release's current stage (KV `pledger_canary`,
/// key `<release>`), read by `pledger release show` and `pledger rollout advance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryStatus {
    pub release: ReleaseId,
    pub stage: String,
    pub stage_index: usize,
    pub control: ControlKind,
    pub judgement: Judgement,
    pub min_samples: u64,
    pub stage_entered_at: Timestamp,
    pub min_bake_ms: u64,
    /// Samples and bake time met and no breach.
    pub ready: bool,
    /// Ready, but the release windows are closed: the refusal, naming when they next open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_window: Option<String>,
    pub updated_at: Timestamp,
    pub monitor_replica: String,
}

impl CanaryStatus {
    pub fn readiness(&self) -> StageReadiness {
        StageReadiness {
            stage: self.stage.clone(),
            candidate_samples: self.judgement.candidate.samples,
            control_samples: self.judgement.control.samples,
            breached: self.judgement.verdict == Verdict::Breached,
            words: self.judgement.words.clone(),
        }
    }
}

/// Reads the monitor's status of a release, if one was published.
pub async fn read_status(
    js: &async_nats::jetstream::Context,
    release: &ReleaseId,
) -> Result<Option<CanaryStatus>, WorkerError> {
    let kv = js
        .get_key_value(CANARY_STATUS_BUCKET)
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?;
    match kv
        .get(release.to_string())
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?
    {
        Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        None => Ok(None),
    }
}

fn prompt_key(p: &PromptName) -> String {
    format!("prompt/{p}")
}
/// Counts of one stage visit: a resumed or re-entered stage starts counting afresh, so a person
/// who resumes a frozen rollout is not frozen again by the counts that froze it.
fn stats_key(r: &RolloutView) -> String {
    format!(
        "stats/{}/{}/{}",
        r.release,
        r.stage,
        r.stage_entered_at.unix_millis()
    )
}
fn feedback_key(p: &PromptName) -> String {
    format!("feedback/{p}")
}
const COUNTERS_KEY: &str = "counters";

/// Derives the monitor's view of a prompt from its ledger state.
pub fn prompt_view(state: &PromptState) -> PromptView {
    let rollout = state.active_rollout().and_then(|r| {
        let (stage, stage_entered_at) = match r.status {
            ReleaseStatus::RollingOut {
                stage,
                stage_entered_at,
                ..
            }
            | ReleaseStatus::Frozen {
                stage,
                stage_entered_at,
                ..
            } => (stage, stage_entered_at),
            _ => return None,
        };
        Some(RolloutView {
            release: r.id.clone(),
            candidate: r.candidate.clone(),
            baseline: r.baseline.clone()?,
            plan: r.plan.clone()?,
            stage,
            stage_entered_at,
            state: r.status.name().to_string(),
        })
    });
    PromptView {
        versions: state.versions.keys().cloned().collect(),
        rollout,
    }
}

/// Where one outcome counts.
#[derive(Debug, PartialEq)]
pub enum Placement {
    Candidate,
    ControlInSegment,
    BaselineOutsideSegment,
    /// A known version outside the rollout's two arms.
    OtherVersion,
}

/// Places an outcome in the current stage of a rollout (pure).
pub fn place(view: &RolloutView, outcome: &Outcome) -> Placement {
    let arm = outcome.arm.or(if outcome.version == view.candidate {
        Some(Arm::Candidate)
    } else if outcome.version == view.baseline {
        Some(Arm::Baseline)
    } else {
        None
    });
    match arm {
        Some(Arm::Candidate) => Placement::Candidate,
        Some(Arm::Baseline)
            if stage_matches(&view.plan.stages[view.stage].matches, &outcome.attrs) =>
        {
            Placement::ControlInSegment
        }
        Some(Arm::Baseline) => Placement::BaselineOutsideSegment,
        None => Placement::OtherVersion,
    }
}

/// An outcome message of a batch, parsed.
struct ParsedMessage {
    sequence: u64,
    subject: String,
    outcomes: Vec<Result<Outcome, pledger_core::outcome::OutcomeError>>,
    payload: bytes::Bytes,
}

struct Monitor {
    ctx: WorkerContext,
    config: JudgeConfig,
    status: async_nats::jetstream::kv::Store,
    last_status: BTreeMap<ReleaseId, (Instant, Verdict)>,
    /// Releases whose ready stage waits for a release window: when the monitor last tried,
    /// and the refusal (retried every [`WINDOW_RETRY`], as the window's clock moves).
    deferred: BTreeMap<ReleaseId, (Instant, String)>,
}

/// How often a stage that waits for a release window is tried again.
const WINDOW_RETRY: Duration = Duration::from_secs(2);

pub async fn run(ctx: WorkerContext, mut shutdown: Shutdown) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "canary", replica = %ctx.replica);
    async move {
        let ledger_consumer = ctx.consumer(LEDGER_STREAM, LEDGER_SUBJECTS).await?;
        let outcome_consumer = ctx.consumer(OUTCOMES_STREAM, "pledger.outcomes.*").await?;
        let mut ledger_batches = Batches::new(&ledger_consumer).await?;
        let mut outcome_batches = Batches::new(&outcome_consumer).await?;
        let status = ctx
            .ledger
            .jetstream()
            .get_key_value(CANARY_STATUS_BUCKET)
            .await
            .map_err(|e| WorkerError::Nats(e.to_string()))?;
        let mut monitor = Monitor {
            ctx,
            config: JudgeConfig::default(),
            status,
            last_status: BTreeMap::new(),
            deferred: BTreeMap::new(),
        };
        monitor.bootstrap().await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        info!("canary monitor running");
        while !stopping(&shutdown) {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                b = ledger_batches.next(Duration::from_millis(250)) => {
                    let batch = b?;
                    if !batch.is_empty() {
                        monitor.apply_ledger(&batch).await?;
                        ack_batch(&batch).await?;
                    }
                }
                b = outcome_batches.next(Duration::from_millis(250)) => {
                    let batch = b?;
                    if !batch.is_empty() {
                        let touched = monitor.apply_outcomes(&batch).await?;
                        ack_batch(&batch).await?;
                        for release in touched {
                            monitor.judge_and_act(&release).await?;
                        }
                    }
                }
                _ = tick.tick() => monitor.judge_all().await?,
            }
        }
        info!("canary monitor stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

impl Monitor {
    /// Refreshes every prompt's view from the ledger at start, so rollouts already active are
    /// judged (and their bake times noticed) even before new events or outcomes arrive.
    async fn bootstrap(&mut self) -> Result<(), WorkerError> {
        for prompt in self.ctx.ledger.prompts().await? {
            let family = self.ctx.load(&prompt).await?;
            let view = prompt_view(&family.state);
            self.ctx.store.put(&prompt_key(&prompt), &view)?;
            if let Some(r) = view.rollout {
                self.judge_and_act(&r.release).await?;
            }
        }
        Ok(())
    }

    /// Refreshes the views of every prompt a ledger batch touched.
    async fn apply_ledger(
        &mut self,
        batch: &[async_nats::jetstream::Message],
    ) -> Result<(), WorkerError> {
        let applied = self.ctx.store.applied_sequence(LEDGER_STREAM)?;
        let (prompts, last) = touched_prompts(batch, applied, |_| true)?;
        let mut views = Vec::new();
        for p in &prompts {
            let family = self.ctx.load(p).await?;
            views.push((p.clone(), prompt_view(&family.state)));
        }
        self.ctx.store.apply(LEDGER_STREAM, last, |tx| {
            for (p, view) in &views {
                tx.put(&prompt_key(p), view)?;
            }
            Ok(())
        })?;
        for (_, view) in views {
            if let Some(r) = view.rollout {
                self.judge_and_act(&r.release).await?;
            }
        }
        Ok(())
    }

    /// Counts a batch of outcome messages into their stages, in one transaction with the
    /// batch's last sequence. Returns the releases whose counts changed.
    async fn apply_outcomes(
        &mut self,
        batch: &[async_nats::jetstream::Message],
    ) -> Result<BTreeSet<ReleaseId>, WorkerError> {
        let applied = self.ctx.store.applied_sequence(OUTCOMES_STREAM)?;
        let mut last = applied;
        let mut parsed = Vec::new();
        for m in batch {
            let seq = sequence_of(m)?;
            last = last.max(seq);
            if seq > applied {
                parsed.push(ParsedMessage {
                    sequence: seq,
                    subject: m.subject.to_string(),
                    outcomes: parse_outcome_message(&m.payload),
                    payload: m.payload.clone(),
                });
            }
        }
        if parsed.is_empty() {
            return Ok(BTreeSet::new());
        }
        // Views of every prompt named, refreshed from the ledger when an outcome names a version
        // the projection has not seen yet (its events may still be on their way to us).
        let mut views: BTreeMap<PromptName, PromptView> = BTreeMap::new();
        // A prompt is read from the ledger at most once a batch: after that read the view is
        // the ledger's latest, and outcomes naming a release that ended stay unplaced.
        let mut refreshed: BTreeSet<PromptName> = BTreeSet::new();
        for message in &parsed {
            for o in message.outcomes.iter().flatten() {
                if !views.contains_key(&o.prompt) {
                    let view: PromptView = self
                        .ctx
                        .store
                        .get(&prompt_key(&o.prompt))?
                        .unwrap_or_default();
                    views.insert(o.prompt.clone(), view);
                }
                let view = &views[&o.prompt];
                let known = view.versions.contains(&o.version);
                let other_release = o.release.is_some()
                    && view.rollout.as_ref().map(|r| &r.release) != o.release.as_ref();
                if (!known || other_release) && refreshed.insert(o.prompt.clone()) {
                    let family = self.ctx.load(&o.prompt).await?;
                    views.insert(o.prompt.clone(), prompt_view(&family.state));
                }
            }
        }
        // Sort outcomes into stage stats; collect dead letters.
        let mut stats: BTreeMap<String, (ReleaseId, StageStats)> = BTreeMap::new();
        let mut feedback: BTreeMap<PromptName, Vec<FeedbackSeen>> = BTreeMap::new();
        let mut counters_delta = Counters::default();
        let mut dead = Vec::new();
        for ParsedMessage {
            sequence: seq,
            subject,
            outcomes,
            payload,
        } in &parsed
        {
            let subject_prompt = subject.rsplit('.').next().unwrap_or_default();
            for item in outcomes {
                let o = match item {
                    Ok(o) => o,
                    Err(e) => {
                        dead.push((
                            subject.clone(),
                            *seq,
                            e.index
                                .map(|i| format!("element {i}: {}", e.reason))
                                .unwrap_or_else(|| e.reason.clone()),
                            payload.clone(),
                        ));
                        continue;
                    }
                };
                if o.prompt.as_str() != subject_prompt {
                    dead.push((
                        subject.clone(),
                        *seq,
                        format!("outcome for prompt `{}` published on {subject}", o.prompt),
                        payload.clone(),
                    ));
                    continue;
                }
                let view = &views[&o.prompt];
                if !view.versions.contains(&o.version) {
                    let why = if view.versions.is_empty() {
                        format!("unknown prompt `{}`", o.prompt)
                    } else {
                        format!("unknown version {} of `{}`", o.version, o.prompt)
                    };
                    dead.push((subject.clone(), *seq, why, payload.clone()));
                    continue;
                }
                if let Some(f) = &o.feedback {
                    feedback
                        .entry(o.prompt.clone())
                        .or_default()
                        .push(FeedbackSeen {
                            version: o.version.clone(),
                            release: o.release.clone(),
                            request_id: o.request_id.clone(),
                            feedback: f.clone(),
                        });
                }
                let Some(r) = &view.rollout else {
                    counters_delta.outside_rollout += 1;
                    continue;
                };
                if o.release.as_ref().is_some_and(|x| x != &r.release) {
                    counters_delta.outside_rollout += 1;
                    continue;
                }
                let entry = &mut stats
                    .entry(stats_key(r))
                    .or_insert_with(|| (r.release.clone(), StageStats::default()))
                    .1;
                match place(r, o) {
                    Placement::Candidate => entry.candidate.record(o),
                    Placement::ControlInSegment => entry.control_in_segment.record(o),
                    Placement::BaselineOutsideSegment => entry.baseline_outside_segment.record(o),
                    Placement::OtherVersion => {
                        counters_delta.other_version += 1;
                        continue;
                    }
                }
                counters_delta.outcomes_applied += 1;
            }
        }
        counters_delta.dead_lettered = dead.len() as u64;
        for (subject, seq, reason, payload) in &dead {
            self.ctx.dead_letter(subject, *seq, reason, payload).await?;
        }
        self.ctx.store.apply(OUTCOMES_STREAM, last, |tx| {
            for (key, (_, delta)) in &stats {
                let mut current: StageStats = tx.get(key)?.unwrap_or_default();
                current.candidate.merge(&delta.candidate);
                current.control_in_segment.merge(&delta.control_in_segment);
                current
                    .baseline_outside_segment
                    .merge(&delta.baseline_outside_segment);
                tx.put(key, &current)?;
            }
            for (prompt, seen) in &feedback {
                add_feedback(tx, prompt, seen)?;
            }
            let mut counters: Counters = tx.get(COUNTERS_KEY)?.unwrap_or_default();
            counters.outcomes_applied += counters_delta.outcomes_applied;
            counters.dead_lettered += counters_delta.dead_lettered;
            counters.outside_rollout += counters_delta.outside_rollout;
            counters.other_version += counters_delta.other_version;
            tx.put(COUNTERS_KEY, &counters)
        })?;
        Ok(stats.values().map(|(r, _)| r.clone()).collect())
    }

    async fn judge_all(&mut self) -> Result<(), WorkerError> {
        let releases: Vec<ReleaseId> = self.last_status.keys().cloned().collect();
        for r in releases {
            self.judge_and_act(&r).await?;
        }
        Ok(())
    }

    /// Judges the current stage of a release and acts: freeze (and roll back) on a breach,
    /// advance a ready stage when the plan allows, publish the status.
    async fn judge_and_act(&mut self, release: &ReleaseId) -> Result<(), WorkerError> {
        let view: PromptView = self
            .ctx
            .store
            .get(&prompt_key(release.prompt()))?
            .unwrap_or_default();
        let Some(r) = view.rollout.filter(|r| &r.release == release) else {
            self.last_status.remove(release);
            self.deferred.remove(release);
            return Ok(());
        };
        let stats: StageStats = self.ctx.store.get(&stats_key(&r))?.unwrap_or_default();
        let (control, control_kind) = stats.control(&r.plan, r.stage);
        let judgement = judge(&r.plan.guardrails, &stats.candidate, control, &self.config);
        let stage = &r.plan.stages[r.stage];
        let now = now();
        let baked = now.millis_since(r.stage_entered_at).max(0) as u64 >= stage.min_bake.millis();
        let enough = stats.candidate.samples.min(control.samples) >= stage.min_samples;
        let ready = judgement.verdict == Verdict::Healthy && baked && enough;
        let status = CanaryStatus {
            release: release.clone(),
            stage: stage.name.clone(),
            stage_index: r.stage,
            control: control_kind,
            judgement: judgement.clone(),
            min_samples: stage.min_samples,
            stage_entered_at: r.stage_entered_at,
            min_bake_ms: stage.min_bake.millis(),
            ready,
            waiting_for_window: self
                .deferred
                .get(release)
                .filter(|_| ready)
                .map(|(_, m)| m.clone()),
            updated_at: now,
            monitor_replica: self.ctx.replica.clone(),
        };
        self.publish_status(&status).await?;

        match judgement.verdict {
            Verdict::Breached if r.state != "frozen" => self.freeze(&r, &judgement).await?,
            Verdict::Healthy
                if ready
                    && r.state == "rolling_out"
                    && r.plan.advance.automatic
                    && self
                        .deferred
                        .get(release)
                        .is_none_or(|(at, _)| at.elapsed() >= WINDOW_RETRY) =>
            {
                let readiness = status.readiness();
                let last = r.stage + 1 == r.plan.stages.len();
                let rid = release.clone();
                let from = stage.name.clone();
                let result = self
                    .ctx
                    .ledger
                    .execute(
                        release.prompt(),
                        &*self.ctx.signer,
                        &format!("canary-{release}"),
                        move |_| {
                            Ok(if last {
                                Command::CompleteRelease {
                                    release: rid.clone(),
                                    force_reason: None,
                                }
                            } else {
                                Command::AdvanceStage {
                                    release: rid.clone(),
                                    from_stage: from.clone(),
                                    force_reason: None,
                                    readiness: Some(readiness.clone()),
                                }
                            })
                        },
                    )
                    .await;
                match result {
                    Err(ExecuteError::Rejected(r)) if r.rule == Rule::OutsideReleaseWindow => {
                        // The message names the time left, so it changes on every try: log
                        // the first refusal only, keep the status current.
                        let first = self
                            .deferred
                            .insert(release.clone(), (Instant::now(), r.message.clone()))
                            .is_none();
                        if first {
                            info!(release = %release, "ready, waiting for a release window: {}", r.message);
                            // Say so at once, not at the next periodic status write.
                            self.last_status.remove(release);
                        }
                        let mut status = status.clone();
                        status.waiting_for_window = Some(r.message);
                        self.publish_status(&status).await?;
                    }
                    result => {
                        self.deferred.remove(release);
                        self.after(release, result, "advance").await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn freeze(&mut self, r: &RolloutView, judgement: &Judgement) -> Result<(), WorkerError> {
        let release = r.release.clone();
        warn!(release = %release, "guardrail breach: {}", judgement.words);
        let (rid, evidence, reason) = (
            release.clone(),
            judgement.clone(),
            format!("automatic: {}", judgement.words),
        );
        let result = self
            .ctx
            .ledger
            .execute(
                release.prompt(),
                &*self.ctx.signer,
                &format!("canary-{release}"),
                move |_| {
                    Ok(Command::FreezeRollout {
                        release: rid.clone(),
                        reason: reason.clone(),
                        evidence: Some(Box::new(evidence.clone())),
                    })
                },
            )
            .await;
        self.after(&release, result, "freeze").await?;
        if r.plan.rollback.as_ref().is_some_and(|p| p.automatic) {
            let rid = release.clone();
            let reason = format!(
                "automatic rollback ({}): {}",
                r.plan.rollback_criteria().unwrap_or("plan criteria"),
                judgement.words
            );
            let result = self
                .ctx
                .ledger
                .execute(
                    release.prompt(),
                    &*self.ctx.signer,
                    &format!("canary-{release}"),
                    move |_| {
                        Ok(Command::Rollback {
                            release: Some(rid.clone()),
                            reason: reason.clone(),
                        })
                    },
                )
                .await;
            self.after(&release, result, "rollback").await?;
        }
        Ok(())
    }

    /// After a decision: switch routing at once (the router reconciles too), log refusals.
    async fn after(
        &mut self,
        release: &ReleaseId,
        result: Result<crate::ledger::Executed, ExecuteError>,
        what: &str,
    ) -> Result<(), WorkerError> {
        match result {
            Ok(done) => {
                if !done.recorded.is_empty() {
                    info!(release = %release, "{what} recorded");
                }
                self.ctx
                    .routing
                    .publish(&routing_table_for(&done.state, done.last_sequence))
                    .await?;
                // The view from the state the decision left: derived, so writing it ahead of the
                // ledger consumer is safe (that consumer rewrites it from the same ledger).
                self.ctx
                    .store
                    .put(&prompt_key(release.prompt()), &prompt_view(&done.state))?;
                Ok(())
            }
            Err(ExecuteError::Rejected(r)) if r.rule != Rule::InvalidInput => {
                info!(release = %release, rule = %r.rule, "{what} not needed: {}", r.message);
                Ok(())
            }
            Err(ExecuteError::Rejected(r)) => Err(WorkerError::Nats(r.to_string())),
            Err(ExecuteError::Conflict { .. }) => {
                warn!(release = %release, "{what}: the ledger kept changing; will judge again");
                Ok(())
            }
            Err(ExecuteError::Infra(e)) => Err(e.into()),
        }
    }

    async fn publish_status(&mut self, status: &CanaryStatus) -> Result<(), WorkerError> {
        let verdict = status.judgement.verdict;
        // Write at once when the verdict changes, otherwise at most every STATUS_EVERY.
        let last_write = self
            .last_status
            .get(&status.release)
            .filter(|(_, v)| *v == verdict)
            .map(|(at, _)| *at);
        let due = last_write.is_none_or(|at| at.elapsed() >= STATUS_EVERY);
        let at = if due {
            Instant::now()
        } else {
            last_write.expect("not due only after a write")
        };
        self.last_status
            .insert(status.release.clone(), (at, verdict));
        if due {
            let bytes = serde_json::to_vec(status).expect("status serializes");
            self.status
                .put(status.release.to_string(), bytes.into())
                .await
                .map_err(|e| WorkerError::Nats(e.to_string()))?;
        }
        Ok(())
    }
}

fn add_feedback(
    tx: &ProjectionTx<'_>,
    prompt: &PromptName,
    seen: &[FeedbackSeen],
) -> Result<(), CodecError> {
    let key = feedback_key(prompt);
    let mut log: FeedbackLog = tx.get(&key)?.unwrap_or_default();
    log.total += seen.len() as u64;
    log.recent.extend(seen.iter().cloned());
    if log.recent.len() > FEEDBACK_KEPT {
        let excess = log.recent.len() - FEEDBACK_KEPT;
        log.recent.drain(..excess);
    }
    tx.put(&key, &log)
}
