//! The canary monitor's rules: where an outcome counts, which control a stage is judged
//! against, when a stage is ready, and what a judgement makes the monitor do (freeze, roll
//! back, advance, complete), paced and remembered across calls. The driver
//! (`pledger_infra::worker::canary`) reads outcomes and ledger states, persists the counts and
//! executes what this machine returns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::canary::{bake_progress, judge, stage_ready, ArmStats, JudgeConfig, Judgement, Verdict};
use crate::decide::{Rejection, Rule, StageReadiness};
use crate::outcome::{Feedback, Outcome, OutcomeError};
use crate::plan::RolloutPlan;
use crate::routing::{stage_matches, Arm, StageVisit};
use crate::state::{PromptState, ReleaseStatus};
use crate::{Command, PromptName, ReleaseId, Timestamp, VersionId};

/// Most feedback items kept per prompt (the total is counted beyond it).
pub const FEEDBACK_KEPT: usize = 1000;
/// Least time between two status writes of one release (a change of verdict writes at once).
pub const STATUS_EVERY: Duration = Duration::from_millis(200);
/// Least time between two judgement history points of one release (stream
/// `PLEDGER_JUDGEMENTS`, what the release page charts): a new verdict or a new stage records
/// one at once.
pub const HISTORY_EVERY: Duration = Duration::from_secs(5);
/// How often an advance that was refused (a closed release window, windows that no longer
/// compile, a ledger that disagrees) is tried again.
pub const ADVANCE_RETRY: Duration = Duration::from_secs(2);

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
    /// How many versions the prompt has published (0: no prompt of that name). Which ones is
    /// not part of the view: a view is read for every outcome batch and written for every
    /// ledger event of its prompt, so it stays the size of open work; the driver answers
    /// "does the prompt have this version" ([`tally`]'s `has_version`) from its own table.
    pub versions: u32,
    pub rollout: Option<RolloutView>,
}

/// Derives the monitor's view of a prompt from its ledger state. A rollout whose recorded
/// plan has no such stage (no admitted history produces one) is not monitored.
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
        let plan = r.plan.clone().filter(|p| stage < p.stages.len())?;
        Some(RolloutView {
            release: r.id.clone(),
            candidate: r.candidate.clone(),
            baseline: r.baseline.clone()?,
            plan,
            stage,
            stage_entered_at,
            state: r.status.name().to_string(),
        })
    });
    PromptView {
        versions: u32::try_from(state.version_order.len()).unwrap_or(u32::MAX),
        rollout,
    }
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
    /// The control to judge a stage against, and which one it is: the baseline requests in the
    /// candidate's segment, unless the stage sends its whole segment to the candidate.
    pub fn control(&self, plan: &RolloutPlan, stage: usize) -> (&ArmStats, ControlKind) {
        let whole_segment = plan.stages.get(stage).is_some_and(|s| s.percent >= 100.0);
        if whole_segment {
            (&self.baseline_outside_segment, ControlKind::OutsideSegment)
        } else {
            (&self.control_in_segment, ControlKind::InSegment)
        }
    }

    pub fn merge(&mut self, other: &StageStats) {
        self.candidate.merge(&other.candidate);
        self.control_in_segment.merge(&other.control_in_segment);
        self.baseline_outside_segment
            .merge(&other.baseline_outside_segment);
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
    /// Outcomes naming a stage visit of the active rollout that the monitor never saw (not
    /// the current one, nor one it counted or recorded before): not placed anywhere.
    #[serde(default)]
    pub unknown_stage_visit: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.outcomes_applied += other.outcomes_applied;
        self.dead_lettered += other.dead_lettered;
        self.outside_rollout += other.outside_rollout;
        self.other_version += other.other_version;
        self.unknown_stage_visit += other.unknown_stage_visit;
    }
}

/// Feedback seen in outcomes, kept as it came for the feedback collector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackLog {
    pub total: u64,
    pub recent: Vec<FeedbackSeen>,
}

impl FeedbackLog {
    /// Adds feedback seen, keeping the latest [`FEEDBACK_KEPT`] and counting all.
    pub fn extend(&mut self, seen: &[FeedbackSeen]) {
        self.total += seen.len() as u64;
        self.recent.extend(seen.iter().cloned());
        if self.recent.len() > FEEDBACK_KEPT {
            let excess = self.recent.len() - FEEDBACK_KEPT;
            self.recent.drain(..excess);
        }
    }
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
    /// Ready, but the ledger refused the automatic advance for another reason (for example
    /// release windows that no longer compile): the refusal, tried again every
    /// [`ADVANCE_RETRY`]. Guardrails are still judged and a breach still freezes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance_refused: Option<String>,
    pub updated_at: Timestamp,
    pub monitor_replica: String,
    /// The counts of this rollout's earlier stage visits, oldest first: an outcome served in a
    /// stage and processed after the rollout moved on still counts there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_stages: Vec<EarlierStage>,
}

/// One point of a release's judgement history: what the monitor judged of its current stage
/// at one moment, kept small (about 1 KiB) because a rollout records one every
/// [`HISTORY_EVERY`]. Published by the canary monitor on `pledger.judgements.<release>`;
/// not signed (like the status), so the release page says so, and a point that does not
/// decode is skipped and counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgementPoint {
    pub release: ReleaseId,
    pub at: Timestamp,
    pub stage: String,
    pub stage_index: usize,
    pub stage_entered_at: Timestamp,
    pub verdict: Verdict,
    pub candidate_samples: u64,
    pub control_samples: u64,
    /// The monitor replica that judged (replicas judge side by side; a chart keeps one).
    pub replica: String,
    pub guardrails: Vec<GuardrailPoint>,
}

/// One guardrail's test in a [`JudgementPoint`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardrailPoint {
    pub guardrail: String,
    pub bound: crate::canary::Bound,
    pub limit: f64,
    pub candidate_value: f64,
    pub control_value: f64,
    /// The tested difference (positive: over the bound).
    pub excess: f64,
    /// The excess at which the test would breach with the information it had
    /// ([`crate::canary::GuardrailJudgement::breach_excess`]); `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breach_excess: Option<f64>,
    pub statistic: f64,
    pub threshold: f64,
    pub breached: bool,
}

impl JudgementPoint {
    pub fn of(status: &CanaryStatus) -> JudgementPoint {
        let j = &status.judgement;
        JudgementPoint {
            release: status.release.clone(),
            at: status.updated_at,
            stage: status.stage.clone(),
            stage_index: status.stage_index,
            stage_entered_at: status.stage_entered_at,
            verdict: j.verdict,
            candidate_samples: j.candidate.samples,
            control_samples: j.control.samples,
            replica: status.monitor_replica.clone(),
            guardrails: j
                .guardrails
                .iter()
                .map(|g| GuardrailPoint {
                    guardrail: g.guardrail.clone(),
                    bound: g.bound,
                    limit: g.limit,
                    candidate_value: g.candidate_value,
                    control_value: g.control_value,
                    excess: g.excess,
                    breach_excess: g.breach_excess(),
                    statistic: g.statistic,
                    threshold: g.threshold,
                    breached: g.breached,
                })
                .collect(),
        }
    }
}

/// The counts of one earlier visit of a rollout to a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlierStage {
    pub stage: String,
    pub stage_index: usize,
    pub stage_entered_at: Timestamp,
    pub candidate_samples: u64,
    /// The control the stage was judged against ([`StageStats::control`]).
    pub control_samples: u64,
}

/// The earlier visits of rollout `r` among `visits` (stage visit, counts), oldest first; the
/// current visit and other releases' visits are left out.
pub fn earlier_stages(r: &RolloutView, visits: &[(String, StageStats)]) -> Vec<EarlierStage> {
    let current = stage_visit(r);
    let mut out: Vec<EarlierStage> = visits
        .iter()
        .filter(|(v, _)| *v != current)
        .filter_map(|(v, stats)| {
            let visit = StageVisit::parse(v).filter(|x| x.release == r.release)?;
            let stage = r.plan.stages.get(visit.stage)?;
            Some(EarlierStage {
                stage: stage.name.clone(),
                stage_index: visit.stage,
                stage_entered_at: Timestamp::from_unix_millis(visit.entered_at_ms),
                candidate_samples: stats.candidate.samples,
                control_samples: stats.control(&r.plan, visit.stage).0.samples,
            })
        })
        .collect();
    out.sort_by_key(|e| (e.stage_entered_at, e.stage_index));
    out
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

/// Where one outcome counts.
#[derive(Debug, PartialEq)]
pub enum Placement {
    Candidate,
    ControlInSegment,
    BaselineOutsideSegment,
    /// A known version outside the rollout's two arms.
    OtherVersion,
}

/// Places an outcome in stage `stage` of a rollout (the stage of the visit it counts in).
pub fn place(view: &RolloutView, stage: usize, outcome: &Outcome) -> Placement {
    let arm = outcome.arm.or(if outcome.version == view.candidate {
        Some(Arm::Candidate)
    } else if outcome.version == view.baseline {
        Some(Arm::Baseline)
    } else {
        None
    });
    let in_segment = || {
        view.plan
            .stages
            .get(stage)
            .is_some_and(|s| stage_matches(&s.matches, &outcome.attrs))
    };
    match arm {
        Some(Arm::Candidate) => Placement::Candidate,
        Some(Arm::Baseline) if in_segment() => Placement::ControlInSegment,
        Some(Arm::Baseline) => Placement::BaselineOutsideSegment,
        None => Placement::OtherVersion,
    }
}

/// The counts of one stage visit are kept apart: a resumed or re-entered stage starts counting
/// afresh, so a person who resumes a frozen rollout is not frozen again by the counts that
/// froze it. This names a visit.
pub fn stage_visit(r: &RolloutView) -> String {
    StageVisit::new(&r.release, r.stage, r.stage_entered_at).to_string()
}

/// The stage visits (named by [`stage_visit`]) whose counts a worker drops: those of releases
/// that are no prompt's rollout in `views` any more (completed, rolled back or withdrawn), so
/// the store does not grow with releases that ended. Outcomes that still name such a release
/// stay unplaced, so nothing counts into it again; the monitor forgets it at its next
/// judgement ([`Monitor::judge`]).
pub fn ended_visits<'a>(
    visits: impl IntoIterator<Item = &'a str>,
    views: impl IntoIterator<Item = &'a PromptView>,
) -> Vec<String> {
    let active: BTreeSet<String> = views
        .into_iter()
        .filter_map(|v| v.rollout.as_ref().map(|r| r.release.to_string()))
        .collect();
    visits
        .into_iter()
        .filter(|visit| {
            let release = visit.split('/').next().unwrap_or_default();
            !active.contains(release)
        })
        .map(str::to_string)
        .collect()
}

/// One outcome message as read from the outcome stream.
#[derive(Clone, Debug)]
pub struct OutcomeMessage {
    pub sequence: u64,
    pub subject: String,
    pub outcomes: Vec<Result<Outcome, OutcomeError>>,
}

/// Whether the view of an outcome's prompt may be behind the ledger: it names a version the
/// prompt is not known to have (`has_version` false), a release other than the view's
/// rollout, or a stage visit not in `known` (the visits the monitor has seen, its current one
/// included). The driver then reads the prompt from the ledger (at most once per batch)
/// before [`tally`].
pub fn view_may_be_stale(
    view: &PromptView,
    outcome: &Outcome,
    known: &BTreeSet<String>,
    has_version: bool,
) -> bool {
    let unknown = !has_version;
    let other_release = outcome.release.is_some()
        && view.rollout.as_ref().map(|r| &r.release) != outcome.release.as_ref();
    let unseen_visit = outcome
        .stage_visit
        .as_ref()
        .is_some_and(|v| !known.contains(v));
    unknown || other_release || unseen_visit
}

/// Where an outcome of the active rollout `r` counts: the stage visit it names when that is
/// the current one or one in `known` (a visit the monitor has seen, so the count goes to the
/// stage the request was served in, however late the outcome is processed); the current visit
/// when it names none (a client that does not send it). `None` for a visit of another release
/// or one the monitor never saw: such an outcome is not placed.
pub fn visit_of<'a>(
    r: &RolloutView,
    current: &'a str,
    outcome: &'a Outcome,
    known: &BTreeSet<String>,
) -> Option<(&'a str, usize)> {
    let Some(named) = outcome.stage_visit.as_deref() else {
        return Some((current, r.stage));
    };
    if named == current {
        return Some((current, r.stage));
    }
    let visit = StageVisit::parse(named)?;
    (visit.release == r.release && visit.stage < r.plan.stages.len() && known.contains(named))
        .then_some((named, visit.stage))
}

/// An outcome that cannot count, with the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub subject: String,
    pub sequence: u64,
    pub reason: String,
}

/// What a batch of outcome messages adds.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Per stage visit ([`stage_visit`]): the release and the counts to add.
    pub stats: BTreeMap<String, (ReleaseId, StageStats)>,
    pub feedback: BTreeMap<PromptName, Vec<FeedbackSeen>>,
    pub counters: Counters,
    pub dead: Vec<DeadLetter>,
}

impl Tally {
    /// The releases whose counts changed: each is judged again.
    pub fn releases(&self) -> BTreeSet<ReleaseId> {
        self.stats.values().map(|(r, _)| r.clone()).collect()
    }
}

/// Sorts a batch's outcomes into stage counts, feedback and dead letters. `views` holds the
/// view of every prompt the outcomes name (a prompt missing from it is unknown); `known`, the
/// stage visits of their rollouts the monitor has seen ([`visit_of`]); `has_version`, whether
/// a prompt has published a version.
pub fn tally(
    messages: &[OutcomeMessage],
    views: &BTreeMap<PromptName, PromptView>,
    known: &BTreeSet<String>,
    has_version: impl Fn(&PromptName, &VersionId) -> bool,
) -> Tally {
    let mut t = Tally::default();
    let unknown = PromptView::default();
    // Each prompt's current stage visit, named once per call rather than once per outcome.
    let mut visits: BTreeMap<&PromptName, String> = BTreeMap::new();
    for m in messages {
        let subject_prompt = m.subject.rsplit('.').next().unwrap_or_default();
        let dead = |reason: String| DeadLetter {
            subject: m.subject.clone(),
            sequence: m.sequence,
            reason,
        };
        for item in &m.outcomes {
            let o = match item {
                Ok(o) => o,
                Err(e) => {
                    t.dead.push(dead(
                        e.index
                            .map(|i| format!("element {i}: {}", e.reason))
                            .unwrap_or_else(|| e.reason.clone()),
                    ));
                    continue;
                }
            };
            if o.prompt.as_str() != subject_prompt {
                t.dead.push(dead(format!(
                    "outcome for prompt `{}` published on {}",
                    o.prompt, m.subject
                )));
                continue;
            }
            let view = views.get(&o.prompt).unwrap_or(&unknown);
            if !has_version(&o.prompt, &o.version) {
                t.dead.push(dead(if view.versions == 0 {
                    format!("unknown prompt `{}`", o.prompt)
                } else {
                    format!("unknown version {} of `{}`", o.version, o.prompt)
                }));
                continue;
            }
            if let Some(f) = &o.feedback {
                t.feedback
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
                t.counters.outside_rollout += 1;
                continue;
            };
            if o.release.as_ref().is_some_and(|x| x != &r.release) {
                t.counters.outside_rollout += 1;
                continue;
            }
            let current = visits.entry(&o.prompt).or_insert_with(|| stage_visit(r));
            let Some((visit, stage)) = visit_of(r, current, o, known) else {
                t.counters.unknown_stage_visit += 1;
                continue;
            };
            if !t.stats.contains_key(visit) {
                t.stats.insert(
                    visit.to_string(),
                    (r.release.clone(), StageStats::default()),
                );
            }
            let entry = &mut t.stats.get_mut(visit).expect("inserted above").1;
            match place(r, stage, o) {
                Placement::Candidate => entry.candidate.record(o),
                Placement::ControlInSegment => entry.control_in_segment.record(o),
                Placement::BaselineOutsideSegment => entry.baseline_outside_segment.record(o),
                Placement::OtherVersion => {
                    t.counters.other_version += 1;
                    continue;
                }
            }
            t.counters.outcomes_applied += 1;
        }
    }
    t.counters.dead_lettered = t.dead.len() as u64;
    t
}

/// What one judgement asks of the driver.
#[derive(Clone, Debug)]
pub struct Judged {
    pub status: CanaryStatus,
    /// Write the status now (a new verdict, or [`STATUS_EVERY`] since the last write).
    pub publish: bool,
    /// Record a point of the judgement history now ([`JudgementPoint::of`] the status): a new
    /// verdict, a new stage visit, or [`HISTORY_EVERY`] since the last point.
    pub record: bool,
    /// Commands to execute in order, each signed as the monitor.
    pub commands: Vec<Command>,
}

/// What the driver reports back for a command it executed.
#[derive(Clone, Debug, PartialEq)]
pub enum Executed {
    Recorded,
    Refused(Rejection),
    /// The ledger kept changing under the command; it is judged again later.
    Conflict,
}

/// What the driver should say about an execution.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Recorded,
    /// Nothing to do any more (another replica or a person got there first).
    NotNeeded(Rejection),
    /// The first refusal of an automatic advance: log it (later tries are quiet), and publish
    /// the status that says so.
    AdvanceDeferred {
        rejection: Rejection,
        status: Option<Box<CanaryStatus>>,
    },
    /// A later refusal of an advance already reported.
    StillDeferred,
    /// A refusal that should not happen (a rule the monitor's own commands should meet):
    /// reported for this release, never fatal.
    Refused(Rejection),
    Conflict,
}

#[derive(Clone, Debug, Default)]
struct Memory {
    /// When the status was last written and with which verdict.
    written: Option<(Instant, Verdict)>,
    /// When the last history point was recorded, with its verdict and stage visit.
    recorded: Option<(Instant, Verdict, usize, Timestamp)>,
    /// The refused advance: when it was last tried, and the refusal.
    deferred: Option<(Instant, Rejection)>,
    last_status: Option<CanaryStatus>,
}

/// The canary monitor's state machine: one per monitor replica.
#[derive(Debug)]
pub struct Monitor {
    config: JudgeConfig,
    replica: String,
    memory: BTreeMap<ReleaseId, Memory>,
}

impl Monitor {
    pub fn new(config: JudgeConfig, replica: impl Into<String>) -> Monitor {
        Monitor {
            config,
            replica: replica.into(),
            memory: BTreeMap::new(),
        }
    }

    /// The releases judged so far and still active: the driver judges them on every tick, so
    /// bake times are noticed without new outcomes.
    pub fn tracked(&self) -> Vec<ReleaseId> {
        self.memory.keys().cloned().collect()
    }

    /// Judges the current stage of `release` on `view` (its prompt's) and `stats` (its stage
    /// visit's counts). `None` when the release is no longer an active rollout (it is
    /// forgotten).
    ///
    /// A breach freezes a rollout that is not frozen yet and, when the plan rolls back
    /// automatically, rolls it back (a frozen one too: a freeze whose rollback was lost to a
    /// crash, or a person's freeze, is still rolled back while the breach stands). A ready
    /// stage of a rolling-out (not paused) rollout whose plan advances automatically is
    /// advanced, or the release completed from its last stage; a refused advance waits
    /// [`ADVANCE_RETRY`] before it is tried again. Nothing here reads release windows: a
    /// freeze and a rollback never depend on them.
    pub fn judge(
        &mut self,
        release: &ReleaseId,
        view: &PromptView,
        stats: &StageStats,
        now: Timestamp,
        at: Instant,
    ) -> Option<Judged> {
        let Some(r) = view.rollout.as_ref().filter(|r| &r.release == release) else {
            self.memory.remove(release);
            return None;
        };
        let Some(stage) = r.plan.stages.get(r.stage) else {
            self.memory.remove(release);
            return None;
        };
        let (control, control_kind) = stats.control(&r.plan, r.stage);
        let judgement = judge(&r.plan.guardrails, &stats.candidate, control, &self.config);
        let (_, baked) = bake_progress(stage, r.stage_entered_at, now);
        let data = stage_ready(&judgement, stage.min_samples, &stats.candidate, control);
        let ready = data.ready && baked;
        let memory = self.memory.entry(release.clone()).or_default();
        let deferred = memory.deferred.as_ref().filter(|_| ready);
        let (waiting_for_window, advance_refused) = match deferred {
            Some((_, x)) if x.rule == Rule::OutsideReleaseWindow => (Some(x.message.clone()), None),
            Some((_, x)) => (None, Some(format!("{}: {}", x.rule, x.message))),
            None => (None, None),
        };
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
            waiting_for_window,
            advance_refused,
            updated_at: now,
            monitor_replica: self.replica.clone(),
            earlier_stages: Vec::new(),
        };
        let verdict = judgement.verdict;
        let publish = memory.written.is_none_or(|(when, v)| {
            v != verdict || at.saturating_duration_since(when) >= STATUS_EVERY
        });
        if publish {
            memory.written = Some((at, verdict));
        }
        let visit = (r.stage, r.stage_entered_at);
        let record = memory.recorded.is_none_or(|(when, v, stage, entered)| {
            v != verdict
                || (stage, entered) != visit
                || at.saturating_duration_since(when) >= HISTORY_EVERY
        });
        if record {
            memory.recorded = Some((at, verdict, visit.0, visit.1));
        }
        memory.last_status = Some(status.clone());

        let mut commands = Vec::new();
        match verdict {
            Verdict::Breached => {
                if r.state != "frozen" {
                    commands.push(Command::FreezeRollout {
                        release: release.clone(),
                        reason: format!("automatic: {}", judgement.words),
                        evidence: Some(Box::new(judgement.clone())),
                    });
                }
                if r.plan.rollback.as_ref().is_some_and(|p| p.automatic) {
                    commands.push(Command::Rollback {
                        release: Some(release.clone()),
                        reason: format!(
                            "automatic rollback ({}): {}",
                            r.plan.rollback_criteria().unwrap_or("plan criteria"),
                            judgement.words
                        ),
                    });
                }
            }
            Verdict::Healthy
                if ready
                    && r.state == "rolling_out"
                    && r.plan.advance.automatic
                    && memory.deferred.as_ref().is_none_or(|(when, _)| {
                        at.saturating_duration_since(*when) >= ADVANCE_RETRY
                    }) =>
            {
                let last = r.stage + 1 == r.plan.stages.len();
                commands.push(if last {
                    Command::CompleteRelease {
                        release: release.clone(),
                        force_reason: None,
                    }
                } else {
                    Command::AdvanceStage {
                        release: release.clone(),
                        from_stage: stage.name.clone(),
                        force_reason: None,
                        readiness: Some(status.readiness()),
                    }
                });
            }
            _ => {}
        }
        Some(Judged {
            status,
            publish,
            record,
            commands,
        })
    }

    /// Takes the result of executing `command` for `release` at `at`.
    pub fn executed(
        &mut self,
        release: &ReleaseId,
        command: &Command,
        result: Executed,
        at: Instant,
    ) -> Report {
        let advancing = matches!(
            command,
            Command::AdvanceStage { .. } | Command::CompleteRelease { .. }
        );
        let memory = self.memory.entry(release.clone()).or_default();
        match result {
            Executed::Recorded => {
                if advancing {
                    memory.deferred = None;
                }
                Report::Recorded
            }
            Executed::Conflict => Report::Conflict,
            Executed::Refused(rejection) if advancing && refusal_defers(&rejection) => {
                let first = memory
                    .deferred
                    .as_ref()
                    .is_none_or(|(_, x)| x.rule != rejection.rule);
                memory.deferred = Some((at, rejection.clone()));
                if !first {
                    return Report::StillDeferred;
                }
                // Say so at once: the status changes, written now whatever the pacing.
                let status = memory.last_status.clone().map(|mut s| {
                    if rejection.rule == Rule::OutsideReleaseWindow {
                        s.waiting_for_window = Some(rejection.message.clone());
                    } else {
                        s.advance_refused =
                            Some(format!("{}: {}", rejection.rule, rejection.message));
                    }
                    s
                });
                if status.is_some() {
                    memory.written = Some((
                        at,
                        status
                            .as_ref()
                            .map_or(Verdict::Healthy, |s| s.judgement.verdict),
                    ));
                }
                Report::AdvanceDeferred {
                    rejection,
                    status: status.map(Box::new),
                }
            }
            Executed::Refused(rejection) if rejection.rule == Rule::InvalidInput => {
                Report::Refused(rejection)
            }
            Executed::Refused(rejection) => Report::NotNeeded(rejection),
        }
    }
}

/// Whether a refused automatic advance waits and is tried again (rather than being a sign
/// that the release moved on). A closed window opens; windows that no longer compile are
/// fixed by a person; a bake or sample count the ledger's clock disagrees with catches up.
fn refusal_defers(r: &Rejection) -> bool {
    matches!(
        r.rule,
        Rule::OutsideReleaseWindow | Rule::InvalidInput | Rule::StageNotReady
    )
}
