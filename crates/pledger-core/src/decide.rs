//! The release lifecycle as a pure decider: `decide(state, command, ctx)` returns the events
//! to record or the rule the command breaks. It never changes the state; `evolve` does.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::artifact::{json_digest, Artifact};
use crate::bundle::EvalBundle;
use crate::event::*;
use crate::gate::{evaluate_gate_with_cases, GatePolicy};
use crate::identity::{check_permitted, Role};
use crate::ids::{Actor, ReleaseId, Timestamp, VersionId};
use crate::plan::RolloutPlan;
use crate::state::{PromptState, ReleaseState, ReleaseStatus, VersionLookupError};

/// Who asks, with which roles, and when. `now` comes from the caller: the core has no clock.
/// The actor is a verified identity: the owner, on the roster, of the key that signs.
#[derive(Clone, Debug)]
pub struct Context {
    pub actor: Actor,
    /// The actor's roles on the roster ([`crate::identity::PERMISSIONS`] says what each allows).
    pub roles: BTreeSet<Role>,
    pub now: Timestamp,
    /// The global release windows (from `pledger.ledger._fleet.windows`), read by the edge.
    /// A prompt's own windows, when it has them, replace these.
    pub fleet_windows: Option<crate::window::ReleaseWindows>,
    /// Admission of a recorded event ([`crate::verify::admit`]) rather than a new command:
    /// what the signer attested from outside the ledger (the release windows at its clock,
    /// the canary monitor's sample counts) is taken as recorded; every rule that follows
    /// from the ledger is checked.
    pub attested: bool,
}

impl Context {
    pub fn new(actor: Actor, roles: BTreeSet<Role>, now: Timestamp) -> Context {
        Context {
            actor,
            roles,
            now,
            fleet_windows: None,
            attested: false,
        }
    }
}

/// What a person or worker asks of a prompt. Versions are full ids here; the edge resolves
/// prefixes with [`PromptState::find_version`].
#[derive(Clone, Debug)]
pub enum Command {
    RegisterPrompt {
        owner: String,
    },
    PublishVersion {
        artifact: Artifact,
    },
    AdoptVersion {
        version: VersionId,
        reason: String,
    },
    SetGatePolicy {
        policy: GatePolicy,
    },
    ProposeChange {
        candidate: VersionId,
        rationale: String,
        expected_changes: Vec<String>,
    },
    ReviseCandidate {
        release: ReleaseId,
        candidate: VersionId,
    },
    SubmitReview {
        release: ReleaseId,
        layer: ReviewLayer,
        verdict: ReviewVerdict,
        note: Option<String>,
    },
    AttachEvalBundle {
        release: ReleaseId,
        bundle: EvalBundle,
    },
    AcceptTradeoff {
        release: ReleaseId,
        reason: String,
    },
    DecideGate {
        release: ReleaseId,
    },
    PlanRollout {
        release: ReleaseId,
        plan: RolloutPlan,
    },
    StartRollout {
        release: ReleaseId,
        bucketing_salt: String,
        /// Start outside a release window (a person's `--force --reason`).
        force_reason: Option<String>,
    },
    /// Advance from `from_stage` (the stage the caller saw) to the next one.
    AdvanceStage {
        release: ReleaseId,
        from_stage: String,
        force_reason: Option<String>,
        /// The canary monitor's view of the current stage, if it has one.
        readiness: Option<StageReadiness>,
    },
    PauseRollout {
        release: ReleaseId,
        reason: String,
    },
    ResumeRollout {
        release: ReleaseId,
    },
    FreezeRollout {
        release: ReleaseId,
        reason: String,
        /// The canary monitor's judgement that breached, for an automatic freeze.
        evidence: Option<Box<crate::canary::Judgement>>,
    },
    CompleteRelease {
        release: ReleaseId,
        /// Complete outside a release window (a person's `--force --reason`).
        force_reason: Option<String>,
    },
    /// Set (or clear, `None`) the prompt's own release windows.
    SetReleaseWindows {
        windows: Option<crate::window::ReleaseWindows>,
    },
    /// Record a scheduler notice, once per stage visit (stage notices) or candidate (reviews).
    RaiseNotice {
        release: ReleaseId,
        notice: Notice,
    },
    /// Roll back a release: the one named, or (`None`) the prompt's active rollout, else its
    /// last completed release. Callers pin the release they saw, so that two people rolling
    /// back at once roll back one release, not two.
    Rollback {
        release: Option<ReleaseId>,
        reason: String,
    },
    WithdrawProposal {
        release: ReleaseId,
        reason: String,
    },
    /// Record a regression case, or more reports of one already recorded (same fingerprint).
    CollectRegressionCase(NewRegressionCase),
    CloseRegressionCase {
        case_id: String,
        reason: String,
    },
}

impl Command {
    /// The command's name in the permission table ([`crate::identity::PERMISSIONS`]).
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterPrompt { .. } => "register",
            Command::PublishVersion { .. } => "publish",
            Command::AdoptVersion { .. } => "adopt",
            Command::SetGatePolicy { .. } => "set-gate-policy",
            Command::ProposeChange { .. } => "propose",
            Command::ReviseCandidate { .. } => "revise",
            Command::SubmitReview { .. } => "review",
            Command::AttachEvalBundle { .. } => "attach-eval",
            Command::AcceptTradeoff { .. } => "accept-tradeoff",
            Command::DecideGate { .. } => "gate",
            Command::PlanRollout { .. } => "plan",
            Command::StartRollout { .. } => "start",
            Command::AdvanceStage { .. } => "advance",
            Command::PauseRollout { .. } => "pause",
            Command::ResumeRollout { .. } => "resume",
            Command::FreezeRollout { .. } => "freeze",
            Command::CompleteRelease { .. } => "complete",
            Command::SetReleaseWindows { .. } => "set-release-windows",
            Command::RaiseNotice { .. } => "raise-notice",
            Command::Rollback { .. } => "rollback",
            Command::WithdrawProposal { .. } => "withdraw",
            Command::CollectRegressionCase(_) => "collect-regression-case",
            Command::CloseRegressionCase { .. } => "close-regression-case",
        }
    }
}

/// A regression case as a collector or a reviewer submits it (the example already redacted).
#[derive(Clone, Debug, PartialEq)]
pub struct NewRegressionCase {
    pub fingerprint: String,
    pub tag: crate::outcome::FeedbackTag,
    pub example: String,
    pub version: Option<VersionId>,
    pub release: Option<ReleaseId>,
    pub source: CaseSource,
    /// Reports this submission stands for (at least 1).
    pub count: u64,
    /// The outcome stream sequence these reports run up to (0 for manual cases).
    pub through_sequence: u64,
}

/// The id of the case with this fingerprint: `<prompt>-rc-<first 12 hex digits>`.
pub fn case_id(prompt: &crate::ids::PromptName, fingerprint: &str) -> String {
    format!("{prompt}-rc-{}", &fingerprint[..fingerprint.len().min(12)])
}

/// The prompt of a case id (`support-triage-rc-0a1b2c3d4e5f` → `support-triage`).
pub fn prompt_of_case(case_id: &str) -> Result<crate::ids::PromptName, crate::error::FieldError> {
    let bad = || {
        crate::error::FieldError::new(
            "case",
            format!("`{case_id}` is not a regression case id (`<prompt>-rc-<hex>`)"),
        )
    };
    let (prompt, hex) = case_id.rsplit_once("-rc-").ok_or_else(bad)?;
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    crate::ids::PromptName::parse(prompt).map_err(|_| bad())
}

/// Every rule a command can break. `code()` is the name users see and docs list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    UnknownPrompt,
    PromptAlreadyRegistered,
    UnknownVersion,
    UnknownRelease,
    ReasonRequired,
    AuthorCannotReview,
    ReviewersMustDiffer,
    ReleaseNotOpen,
    CandidateUnchanged,
    BundleVersionsMismatch,
    TradeoffNeedsEvalBundle,
    AuthorCannotAcceptTradeoff,
    GateNeedsApprovals,
    ChangesRequested,
    GateNeedsEvalBundle,
    GateUnchangedEvidence,
    RollbackCriteriaRequired,
    PlanLocked,
    RolloutNeedsPassedGate,
    RolloutNeedsPlan,
    NoStableVersion,
    BaselineMoved,
    OneActiveRollout,
    NotRollingOut,
    RolloutPaused,
    NoNextStage,
    NotAtLastStage,
    StageMoved,
    NothingToRollBack,
    InvalidInput,
    StageNotReady,
    UnknownRegressionCase,
    OutsideReleaseWindow,
    NotPermitted,
    UnknownIdentity,
    IdentityExists,
    KeyInUse,
    LastAdmin,
    Inadmissible,
}

impl Rule {
    pub fn code(self) -> &'static str {
        match self {
            Rule::UnknownPrompt => "unknown-prompt",
            Rule::PromptAlreadyRegistered => "prompt-already-registered",
            Rule::UnknownVersion => "unknown-version",
            Rule::UnknownRelease => "unknown-release",
            Rule::ReasonRequired => "reason-required",
            Rule::AuthorCannotReview => "author-cannot-review",
            Rule::ReviewersMustDiffer => "reviewers-must-differ",
            Rule::ReleaseNotOpen => "release-not-open",
            Rule::CandidateUnchanged => "candidate-unchanged",
            Rule::BundleVersionsMismatch => "bundle-versions-mismatch",
            Rule::TradeoffNeedsEvalBundle => "tradeoff-needs-eval-bundle",
            Rule::AuthorCannotAcceptTradeoff => "author-cannot-accept-tradeoff",
            Rule::GateNeedsApprovals => "gate-needs-approvals",
            Rule::ChangesRequested => "changes-requested",
            Rule::GateNeedsEvalBundle => "gate-needs-eval-bundle",
            Rule::GateUnchangedEvidence => "gate-unchanged-evidence",
            Rule::RollbackCriteriaRequired => "rollback-criteria-required",
            Rule::PlanLocked => "plan-locked",
            Rule::RolloutNeedsPassedGate => "rollout-needs-passed-gate",
            Rule::RolloutNeedsPlan => "rollout-needs-plan",
            Rule::NoStableVersion => "no-stable-version",
            Rule::BaselineMoved => "baseline-moved",
            Rule::OneActiveRollout => "one-active-rollout",
            Rule::NotRollingOut => "not-rolling-out",
            Rule::RolloutPaused => "rollout-paused",
            Rule::NoNextStage => "no-next-stage",
            Rule::NotAtLastStage => "not-at-last-stage",
            Rule::StageMoved => "stage-moved",
            Rule::NothingToRollBack => "nothing-to-roll-back",
            Rule::InvalidInput => "invalid-input",
            Rule::StageNotReady => "stage-not-ready",
            Rule::UnknownRegressionCase => "unknown-regression-case",
            Rule::OutsideReleaseWindow => "outside-release-window",
            Rule::NotPermitted => "not-permitted",
            Rule::UnknownIdentity => "unknown-identity",
            Rule::IdentityExists => "identity-exists",
            Rule::KeyInUse => "key-in-use",
            Rule::LastAdmin => "last-admin",
            Rule::Inadmissible => "inadmissible",
        }
    }

    /// Rules that mean "someone else changed the state since you looked" rather than
    /// "this is not allowed": the CLI reports them as a conflict (exit 4).
    pub fn is_conflict(self) -> bool {
        matches!(self, Rule::StageMoved)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A command refused by a rule. Nothing is recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("rejected by rule `{rule}`: {message}")]
pub struct Rejection {
    pub rule: Rule,
    pub message: String,
}

fn reject<T>(rule: Rule, message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        rule,
        message: message.into(),
    })
}

/// Decides a command against the state. `Ok(vec![])` means the command's effect is already
/// recorded (an idempotent repeat).
pub fn decide(
    state: &PromptState,
    command: &Command,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    let prompt = &state.name;
    check_permitted(&ctx.actor, &ctx.roles, command.name())?;
    if !state.is_registered() {
        if let Command::RegisterPrompt { owner } = command {
            if owner.trim().is_empty() {
                return reject(
                    Rule::ReasonRequired,
                    "a prompt needs an owning team (--owner)",
                );
            }
            return Ok(vec![Event::PromptRegistered(PromptRegistered {
                prompt: prompt.clone(),
                owner: owner.trim().to_string(),
            })]);
        }
        return reject(Rule::UnknownPrompt, format!("prompt `{prompt}` is not registered (run `pledger prompt register {prompt} --owner <TEAM>`)"));
    }
    match command {
        Command::RegisterPrompt { owner } => {
            let current = state.owner.as_deref().unwrap_or_default();
            if owner.trim() == current {
                Ok(vec![])
            } else {
                reject(
                    Rule::PromptAlreadyRegistered,
                    format!("prompt `{prompt}` is already registered, owned by `{current}`"),
                )
            }
        }
        Command::PublishVersion { artifact } => {
            valid(artifact.validate(), "artifact")?;
            let version = artifact.version_id();
            if state.has_version(&version) {
                return Ok(vec![]);
            }
            Ok(vec![Event::VersionPublished(VersionPublished {
                prompt: prompt.clone(),
                version,
                artifact: artifact.clone(),
            })])
        }
        Command::AdoptVersion { version, reason } => {
            require_reason(reason, "adopting a version")?;
            known_version(state, version)?;
            if let Some(active) = state.active_rollout() {
                return reject(
                    Rule::OneActiveRollout,
                    format!("release {} is rolling out; roll it back or complete it before adopting another version", active.id),
                );
            }
            if state.stable.as_ref() == Some(version) {
                return Ok(vec![]);
            }
            Ok(vec![Event::VersionAdopted(VersionAdopted {
                prompt: prompt.clone(),
                version: version.clone(),
                previous_stable: state.stable.clone(),
                reason: reason.trim().to_string(),
            })])
        }
        Command::SetGatePolicy { policy } => {
            valid(policy.validate(), "gate policy")?;
            if &state.policy == policy {
                return Ok(vec![]);
            }
            Ok(vec![Event::GatePolicySet(GatePolicySet {
                prompt: prompt.clone(),
                policy: policy.clone(),
            })])
        }
        Command::ProposeChange {
            candidate,
            rationale,
            expected_changes,
        } => {
            require_reason(rationale, "a proposal's rationale")?;
            known_version(state, candidate)?;
            if state.stable.as_ref() == Some(candidate) {
                return reject(
                    Rule::CandidateUnchanged,
                    format!("{candidate} is already the stable version of `{prompt}`"),
                );
            }
            let number = state.last_release_number() + 1;
            Ok(vec![Event::ChangeProposed(ChangeProposed {
                release: ReleaseId::new(prompt.clone(), number),
                author: ctx.actor.clone(),
                candidate: candidate.clone(),
                baseline: state.stable.clone(),
                rationale: rationale.trim().to_string(),
                expected_changes: expected_changes.clone(),
            })])
        }
        Command::ReviseCandidate { release, candidate } => {
            let r = open_release(state, release)?;
            known_version(state, candidate)?;
            if &r.candidate == candidate {
                return reject(
                    Rule::CandidateUnchanged,
                    format!("{candidate} is already the candidate of {release}"),
                );
            }
            Ok(vec![Event::CandidateRevised(CandidateRevised {
                release: release.clone(),
                candidate: candidate.clone(),
                previous_candidate: r.candidate.clone(),
            })])
        }
        Command::SubmitReview {
            release,
            layer,
            verdict,
            note,
        } => {
            let r = open_release(state, release)?;
            if r.author == ctx.actor {
                return reject(
                    Rule::AuthorCannotReview,
                    format!("{} authored {release} and cannot review it", ctx.actor),
                );
            }
            let other = match layer {
                ReviewLayer::Product => ReviewLayer::Technical,
                ReviewLayer::Technical => ReviewLayer::Product,
            };
            if let Some(o) = r.reviews.get(&other) {
                if o.reviewer == ctx.actor {
                    return reject(
                        Rule::ReviewersMustDiffer,
                        format!("{} already gave the {other} review of {release}; the {layer} review must come from someone else", ctx.actor),
                    );
                }
            }
            if let Some(current) = r.reviews.get(layer) {
                if current.reviewer == ctx.actor && current.verdict == *verdict {
                    return Ok(vec![]);
                }
            }
            Ok(vec![Event::ReviewSubmitted(ReviewSubmitted {
                release: release.clone(),
                reviewer: ctx.actor.clone(),
                layer: *layer,
                verdict: *verdict,
                candidate: r.candidate.clone(),
                note: note.clone(),
            })])
        }
        Command::AttachEvalBundle { release, bundle } => {
            let r = open_release(state, release)?;
            valid(bundle.validate(), "eval bundle")?;
            if bundle.candidate != r.candidate {
                return reject(
                    Rule::BundleVersionsMismatch,
                    format!(
                        "the bundle evaluates candidate {} but {release}'s candidate is {}",
                        bundle.candidate, r.candidate
                    ),
                );
            }
            if let Some(baseline) = &r.baseline {
                if &bundle.baseline != baseline {
                    return reject(
                        Rule::BundleVersionsMismatch,
                        format!("the bundle compares against baseline {} but {release}'s baseline is {baseline}", bundle.baseline),
                    );
                }
            }
            let digest = json_digest(bundle);
            if r.bundle.as_ref().is_some_and(|b| b.digest == digest) {
                return Ok(vec![]);
            }
            Ok(vec![Event::EvalBundleAttached(EvalBundleAttached {
                release: release.clone(),
                bundle_digest: digest,
                bundle: bundle.clone(),
            })])
        }
        Command::AcceptTradeoff { release, reason } => {
            let r = open_release(state, release)?;
            require_reason(reason, "accepting a trade-off")?;
            let Some(bundle) = &r.bundle else {
                return reject(
                    Rule::TradeoffNeedsEvalBundle,
                    format!("{release} has no eval bundle whose trade-off could be accepted"),
                );
            };
            if r.author == ctx.actor {
                return reject(
                    Rule::AuthorCannotAcceptTradeoff,
                    format!(
                        "{} authored {release}; a trade-off must be accepted by someone else",
                        ctx.actor
                    ),
                );
            }
            if r.tradeoff
                .as_ref()
                .is_some_and(|t| t.bundle_digest == bundle.digest)
            {
                return Ok(vec![]);
            }
            Ok(vec![Event::TradeoffAccepted(TradeoffAccepted {
                release: release.clone(),
                accepted_by: ctx.actor.clone(),
                bundle_digest: bundle.digest.clone(),
                reason: reason.trim().to_string(),
            })])
        }
        Command::DecideGate { release } => {
            let r = open_release(state, release)?;
            for layer in [ReviewLayer::Product, ReviewLayer::Technical] {
                match r.reviews.get(&layer) {
                    None => {
                        return reject(Rule::GateNeedsApprovals, format!("{release} has no {layer} approval of candidate {}", r.candidate.short()))
                    }
                    Some(review) if review.verdict == ReviewVerdict::RequestChanges => {
                        return reject(
                            Rule::ChangesRequested,
                            format!("{} requested changes in the {layer} review of {release}; a new {layer} approval is needed", review.reviewer),
                        )
                    }
                    Some(_) => {}
                }
            }
            let (Some(bundle), Some(evidence)) =
                (&r.bundle, r.current_evidence(&state.policy_digest))
            else {
                return reject(Rule::GateNeedsEvalBundle, format!("{release} has no eval bundle (run `pledger release attach-eval {release} <BUNDLE_FILE>`)"));
            };
            if bundle.bundle.candidate != r.candidate {
                return reject(
                    Rule::GateNeedsEvalBundle,
                    format!(
                        "{release}'s eval bundle evaluates {}, not its current candidate {}; attach a bundle of the current candidate",
                        bundle.bundle.candidate.short(),
                        r.candidate.short()
                    ),
                );
            }
            if let Some(previous) = &r.gate {
                if previous.evidence == evidence {
                    let verdict = if previous.passed { "passed" } else { "failed" };
                    return reject(
                        Rule::GateUnchangedEvidence,
                        format!("the gate of {release} already {verdict} on this evidence; attach a new bundle, accept a trade-off or revise the candidate first"),
                    );
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
            Ok(vec![Event::GateDecided(GateDecided {
                release: release.clone(),
                passed: outcome.passed,
                evidence,
                policy: state.policy.clone(),
                checks: outcome.checks,
                regressions: bundle.bundle.regressions.clone(),
            })])
        }
        Command::PlanRollout { release, plan } => {
            let r = known_release(state, release)?;
            valid(plan.validate(), "rollout plan")?;
            if r.status != ReleaseStatus::Proposed {
                return reject(
                    Rule::PlanLocked,
                    format!(
                        "{release} is {}; its plan can no longer change",
                        r.status.name()
                    ),
                );
            }
            if plan.rollback_criteria().is_none() {
                return reject(
                    Rule::RollbackCriteriaRequired,
                    "the plan must declare its rollback criteria in advance ([rollback] criteria = \"...\")",
                );
            }
            if r.plan.as_ref() == Some(plan) {
                return Ok(vec![]);
            }
            Ok(vec![Event::RolloutPlanned(RolloutPlanned {
                release: release.clone(),
                plan: plan.clone(),
            })])
        }
        Command::StartRollout {
            release,
            bucketing_salt,
            force_reason,
        } => {
            let r = known_release(state, release)?;
            if let Some(active) = state.active_rollout() {
                if &active.id == release {
                    return reject(
                        Rule::OneActiveRollout,
                        format!("{release} is already {}", active.status.name()),
                    );
                }
                return reject(
                    Rule::OneActiveRollout,
                    format!("{} is already rolling out for prompt `{prompt}`", active.id),
                );
            }
            open_release(state, release)?;
            let Some(plan) = &r.plan else {
                return reject(Rule::RolloutNeedsPlan, format!("{release} has no rollout plan (run `pledger rollout plan {release} <PLAN_FILE>`)"));
            };
            let Some(first_stage) = plan.stages.first() else {
                return reject(
                    Rule::RolloutNeedsPlan,
                    format!("the rollout plan of {release} has no stages"),
                );
            };
            if r.current_gate(&state.policy_digest).map(|g| g.passed) != Some(true) {
                return reject(
                    Rule::RolloutNeedsPassedGate,
                    format!("{release} has no passed gate on its current evidence"),
                );
            }
            for layer in [ReviewLayer::Product, ReviewLayer::Technical] {
                match r.reviews.get(&layer) {
                    Some(review) if review.verdict == ReviewVerdict::Approve => {}
                    Some(review) => {
                        return reject(
                            Rule::ChangesRequested,
                            format!(
                                "{} requested changes in the {layer} review of {release}",
                                review.reviewer
                            ),
                        )
                    }
                    None => {
                        return reject(
                            Rule::GateNeedsApprovals,
                            format!(
                                "{release} lacks a current {layer} approval of candidate {}",
                                r.candidate.short()
                            ),
                        )
                    }
                }
            }
            let Some(stable) = &state.stable else {
                return reject(
                    Rule::NoStableVersion,
                    format!("prompt `{prompt}` has no stable version to fall back to (adopt the version serving production with `pledger prompt adopt`)"),
                );
            };
            if r.baseline.as_ref() != Some(stable) {
                return reject(
                    Rule::BaselineMoved,
                    format!(
                        "{release} was proposed against baseline {} but the stable version is now {}; propose again against the new baseline",
                        r.baseline.as_ref().map(|b| b.short().to_string()).unwrap_or_else(|| "none".into()),
                        stable.short()
                    ),
                );
            }
            let forced = window_or_force(state, ctx, force_reason.as_deref(), "start a rollout")?;
            Ok(vec![Event::RolloutStarted(RolloutStarted {
                release: release.clone(),
                candidate: r.candidate.clone(),
                baseline: stable.clone(),
                stage: first_stage.name.clone(),
                bucketing_salt: bucketing_salt.clone(),
                forced: forced.is_some(),
                reason: forced,
            })])
        }
        Command::AdvanceStage {
            release,
            from_stage,
            force_reason,
            readiness,
        } => {
            let r = known_release(state, release)?;
            let (stage, paused) = rolling(&r)?;
            if paused {
                return reject(
                    Rule::RolloutPaused,
                    format!("{release} is paused; resume it before advancing"),
                );
            }
            let (plan, current) = started_plan(&r, stage)?;
            let current = &current.name;
            if current != from_stage {
                return reject(
                    Rule::StageMoved,
                    format!(
                        "{release} moved meanwhile: it is at stage `{current}`, not `{from_stage}`"
                    ),
                );
            }
            let Some(next) = plan.stages.get(stage + 1) else {
                return reject(
                    Rule::NoNextStage,
                    format!("`{current}` is the last stage of {release}; run `pledger rollout complete {release}` to make it stable"),
                );
            };
            match force_reason {
                Some(reason) => require_reason(reason, "a forced advance")?,
                None => {
                    stage_ready(&r, stage, readiness.as_ref(), ctx)?;
                    window_or_force(state, ctx, None, "advance a stage")?;
                }
            }
            Ok(vec![Event::StageAdvanced(StageAdvanced {
                release: release.clone(),
                from_stage: current.clone(),
                to_stage: next.name.clone(),
                forced: force_reason.is_some(),
                reason: force_reason.as_ref().map(|s| s.trim().to_string()),
            })])
        }
        Command::PauseRollout { release, reason } => {
            let r = known_release(state, release)?;
            let (stage, paused) = rolling(&r)?;
            require_reason(reason, "pausing a rollout")?;
            if paused {
                return Ok(vec![]);
            }
            Ok(vec![Event::RolloutPaused(RolloutPaused {
                release: release.clone(),
                stage: r.stage_name(stage).unwrap_or_default().to_string(),
                reason: reason.trim().to_string(),
            })])
        }
        Command::ResumeRollout { release } => {
            let r = known_release(state, release)?;
            match r.status {
                ReleaseStatus::RollingOut {
                    paused: true,
                    stage,
                    ..
                }
                | ReleaseStatus::Frozen { stage, .. } => {
                    Ok(vec![Event::RolloutResumed(RolloutResumed {
                        release: release.clone(),
                        stage: r.stage_name(stage).unwrap_or_default().to_string(),
                    })])
                }
                // Already rolling: someone resumed first; the effect is the same.
                ReleaseStatus::RollingOut { paused: false, .. } => Ok(vec![]),
                _ => reject(
                    Rule::NotRollingOut,
                    format!("{release} is {}, not rolling out", r.status.name()),
                ),
            }
        }
        Command::FreezeRollout {
            release,
            reason,
            evidence,
        } => {
            let r = known_release(state, release)?;
            require_reason(reason, "freezing a rollout")?;
            if let ReleaseStatus::Frozen { .. } = r.status {
                return Ok(vec![]);
            }
            let (stage, _) = rolling(&r)?;
            Ok(vec![Event::RolloutFrozen(RolloutFrozen {
                release: release.clone(),
                stage: r.stage_name(stage).unwrap_or_default().to_string(),
                reason: reason.trim().to_string(),
                evidence: evidence.clone(),
            })])
        }
        Command::CompleteRelease {
            release,
            force_reason,
        } => {
            let r = known_release(state, release)?;
            let (stage, paused) = rolling(&r)?;
            if paused {
                return reject(
                    Rule::RolloutPaused,
                    format!("{release} is paused; resume it before completing"),
                );
            }
            let (plan, current) = started_plan(&r, stage)?;
            if stage + 1 != plan.stages.len() {
                return reject(
                    Rule::NotAtLastStage,
                    format!(
                        "{release} is at stage `{}`; it completes from its last stage `{}`",
                        current.name,
                        plan.stages.last().map_or("", |s| s.name.as_str())
                    ),
                );
            }
            let Some(previous_stable) = r.baseline.clone() else {
                return reject(
                    Rule::NotRollingOut,
                    format!("{release} has no baseline recorded; it cannot complete"),
                );
            };
            let forced =
                window_or_force(state, ctx, force_reason.as_deref(), "complete a release")?;
            Ok(vec![Event::ReleaseCompleted(ReleaseCompleted {
                release: release.clone(),
                version: r.candidate.clone(),
                previous_stable,
                forced: forced.is_some(),
                reason: forced,
            })])
        }
        Command::Rollback { release, reason } => {
            require_reason(reason, "a rollback")?;
            let target = match release {
                Some(id) => {
                    let r = known_release(state, id)?;
                    if let ReleaseStatus::RolledBack { .. } = r.status {
                        return Ok(vec![]);
                    }
                    let serving = matches!(r.status, ReleaseStatus::Completed { .. })
                        && state.stable.as_ref() == Some(&r.candidate);
                    if !r.status.is_active_rollout() && !serving {
                        return reject(
                            Rule::NothingToRollBack,
                            format!("{id} is {}: neither rolling out nor the completed release serving `{prompt}`", r.status.name()),
                        );
                    }
                    r
                }
                None => match state
                    .active_rollout()
                    .map(Cow::Borrowed)
                    .or_else(|| state.last_completed_serving())
                {
                    Some(r) => r,
                    None => {
                        return reject(
                            Rule::NothingToRollBack,
                            format!("prompt `{prompt}` has no rollout in progress, frozen or completed to roll back"),
                        )
                    }
                },
            };
            let Some(baseline) = target.baseline.clone() else {
                return reject(
                    Rule::NothingToRollBack,
                    format!("{} has no previous stable version", target.id),
                );
            };
            Ok(vec![Event::RolledBack(RolledBack {
                release: target.id.clone(),
                from_version: target.candidate.clone(),
                to_version: baseline,
                reason: reason.trim().to_string(),
            })])
        }
        Command::CollectRegressionCase(case) => {
            if case.fingerprint.len() < 12 || case.count == 0 {
                return reject(
                    Rule::InvalidInput,
                    "a regression case needs a fingerprint and at least one report",
                );
            }
            if case.example.trim().is_empty() {
                return reject(Rule::InvalidInput, "a regression case needs an example");
            }
            if let Some(existing) = state.case_by_fingerprint(&case.fingerprint) {
                // More reports of a known failure raise its count; a replay adds nothing.
                if case.source == CaseSource::Manual
                    || case.through_sequence <= existing.through_sequence
                {
                    return Ok(vec![]);
                }
                return Ok(vec![Event::RegressionCaseRecurred(
                    RegressionCaseRecurred {
                        prompt: prompt.clone(),
                        case_id: existing.case_id.clone(),
                        additional: case.count,
                        through_sequence: case.through_sequence,
                    },
                )]);
            }
            Ok(vec![Event::RegressionCaseCollected(
                RegressionCaseCollected {
                    prompt: prompt.clone(),
                    case_id: case_id(prompt, &case.fingerprint),
                    fingerprint: case.fingerprint.clone(),
                    tag: case.tag,
                    example: case.example.clone(),
                    version: case.version.clone(),
                    release: case.release.clone(),
                    source: case.source,
                    count: case.count,
                    through_sequence: case.through_sequence,
                },
            )])
        }
        Command::CloseRegressionCase { case_id, reason } => {
            require_reason(reason, "closing a regression case")?;
            let Some(case) = state.regression_cases.get(case_id) else {
                return reject(
                    Rule::UnknownRegressionCase,
                    format!("prompt `{prompt}` has no regression case {case_id}"),
                );
            };
            if case.closed.is_some() {
                return Ok(vec![]);
            }
            Ok(vec![Event::RegressionCaseClosed(RegressionCaseClosed {
                prompt: prompt.clone(),
                case_id: case_id.clone(),
                reason: reason.trim().to_string(),
            })])
        }
        Command::SetReleaseWindows { windows } => {
            if let Some(w) = windows {
                if let Err(e) = w.compile() {
                    return reject(
                        Rule::InvalidInput,
                        format!("release windows: {}: {}", e.field, e.message),
                    );
                }
            }
            if &state.windows == windows {
                return Ok(vec![]);
            }
            Ok(vec![Event::ReleaseWindowsSet(ReleaseWindowsSet {
                prompt: prompt.clone(),
                windows: windows.clone(),
            })])
        }
        Command::RaiseNotice { release, notice } => {
            let r = known_release(state, release)?;
            let key = match (notice, &r.status) {
                (Notice::StaleReview { candidate, .. }, ReleaseStatus::Proposed) => {
                    if candidate != &r.candidate {
                        return reject(
                            Rule::CandidateUnchanged,
                            format!("{release}'s candidate is now {}", r.candidate.short()),
                        );
                    }
                    notice.key(None)
                }
                (Notice::StaleReview { .. }, _) => {
                    return reject(
                        Rule::ReleaseNotOpen,
                        format!("{release} is {}, not waiting for reviews", r.status.name()),
                    )
                }
                (
                    Notice::BakeReached { stage } | Notice::StuckOnData { stage, .. },
                    ReleaseStatus::RollingOut {
                        stage: index,
                        stage_entered_at,
                        ..
                    },
                ) => {
                    if r.stage_name(*index) != Some(stage.as_str()) {
                        return reject(
                            Rule::StageMoved,
                            format!("{release} is no longer at stage `{stage}`"),
                        );
                    }
                    notice.key(Some(*stage_entered_at))
                }
                _ => {
                    return reject(
                        Rule::NotRollingOut,
                        format!("{release} is {}, not rolling out", r.status.name()),
                    )
                }
            };
            if r.notices.contains(&key) {
                return Ok(vec![]);
            }
            Ok(vec![Event::NoticeRaised(NoticeRaised {
                release: release.clone(),
                key,
                notice: notice.clone(),
            })])
        }
        Command::WithdrawProposal { release, reason } => {
            let r = known_release(state, release)?;
            require_reason(reason, "withdrawing a proposal")?;
            if let ReleaseStatus::Withdrawn { .. } = r.status {
                return Ok(vec![]);
            }
            open_release(state, release)?;
            Ok(vec![Event::ProposalWithdrawn(ProposalWithdrawn {
                release: release.clone(),
                reason: reason.trim().to_string(),
            })])
        }
    }
}

/// The canary monitor's view of a rollout's current stage, as an input to `advance`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct StageReadiness {
    /// The stage this view is about.
    pub stage: String,
    pub candidate_samples: u64,
    pub control_samples: u64,
    /// A guardrail is breached.
    pub breached: bool,
    /// The judgement in words.
    pub words: String,
}

/// An unforced advance needs the stage's bake time, and, when the stage asks for samples,
/// a judgement of the canary monitor with enough samples in both arms and no breach.
/// Checks the release windows that apply to the prompt (its own, else the global ones) at
/// `ctx.now`. Returns the trimmed override reason when a person forces past a closed window,
/// `None` when the window is open or there are no windows (a `--force` then overrides
/// nothing and is not recorded as one).
fn window_or_force(
    state: &PromptState,
    ctx: &Context,
    force_reason: Option<&str>,
    what: &str,
) -> Result<Option<String>, Rejection> {
    if let Some(reason) = force_reason {
        require_reason(reason, "overriding a release window")?;
    }
    if ctx.attested {
        // A recorded start or completion: the window was judged at the signer's clock.
        return Ok(force_reason.map(|r| r.trim().to_string()));
    }
    let (windows, scope) = match (&state.windows, &ctx.fleet_windows) {
        (Some(w), _) => (w, format!("prompt `{}`", state.name)),
        (None, Some(w)) => (w, "the global windows".to_string()),
        (None, None) => return Ok(None),
    };
    let compiled = windows.compile().map_err(|e| Rejection {
        rule: Rule::InvalidInput,
        message: format!(
            "the release windows of {scope} do not compile: {}: {}",
            e.field, e.message
        ),
    })?;
    match compiled.state(ctx.now) {
        // Open: nothing was overridden, so nothing is recorded as forced.
        crate::window::WindowState::Open { .. } => Ok(None),
        crate::window::WindowState::Closed { opens_at, blackout } => {
            if let Some(reason) = force_reason {
                return Ok(Some(reason.trim().to_string()));
            }
            let why = match blackout {
                Some(b) => format!("inside the closed window `{b}`"),
                None => "outside every open window".to_string(),
            };
            let next = match opens_at {
                Some(t) => format!(
                    "the next window opens at {} ({}, in {})",
                    t.to_rfc3339(),
                    compiled.local(t),
                    crate::ids::DurationSpec::from_millis(t.millis_since(ctx.now).max(0) as u64)
                ),
                None => "no window opens within 400 days".to_string(),
            };
            reject(
                Rule::OutsideReleaseWindow,
                format!(
                    "cannot {what} now: {} is {why} of {scope}; {next} (use --force --reason to override)",
                    compiled.local(ctx.now)
                ),
            )
        }
    }
}

fn stage_ready(
    r: &ReleaseState,
    stage: usize,
    readiness: Option<&StageReadiness>,
    ctx: &Context,
) -> Result<(), Rejection> {
    let id = &r.id;
    let (_, s) = started_plan(r, stage)?;
    if let ReleaseStatus::RollingOut {
        stage_entered_at, ..
    } = r.status
    {
        let (baked, done) = crate::canary::bake_progress(s, stage_entered_at, ctx.now);
        if !done {
            return reject(
                Rule::StageNotReady,
                format!(
                    "stage `{}` of {id} has baked {} of its {} (use --force --reason to advance anyway)",
                    s.name,
                    crate::ids::DurationSpec::from_millis(baked),
                    s.min_bake
                ),
            );
        }
    }
    if ctx.attested {
        // A recorded advance: the canary monitor's counts were judged by the signer.
        return Ok(());
    }
    let readiness = readiness.filter(|x| x.stage == s.name);
    if let Some(x) = readiness.filter(|x| x.breached) {
        return reject(
            Rule::StageNotReady,
            format!(
                "stage `{}` of {id} has a guardrail breach: {}",
                s.name, x.words
            ),
        );
    }
    if s.min_samples > 0 {
        let Some(x) = readiness else {
            return reject(
                Rule::StageNotReady,
                format!("stage `{}` of {id} needs {} samples per arm and has no canary judgement yet (is the canary monitor running?)", s.name, s.min_samples),
            );
        };
        if !crate::canary::enough_samples(s.min_samples, x.candidate_samples, x.control_samples) {
            return reject(
                Rule::StageNotReady,
                format!(
                    "stage `{}` of {id} has {} candidate and {} control samples of the {} it needs per arm",
                    s.name, x.candidate_samples, x.control_samples, s.min_samples
                ),
            );
        }
    }
    Ok(())
}

/// Inputs are validated at the edge when files are read; the decider checks again so that no
/// caller (a worker, a test, a future API) can record an invalid value.
fn valid(result: Result<(), crate::error::FieldError>, what: &str) -> Result<(), Rejection> {
    result.map_err(|e| Rejection {
        rule: Rule::InvalidInput,
        message: format!("the {what} is invalid: {e}"),
    })
}

fn require_reason(reason: &str, what: &str) -> Result<(), Rejection> {
    if reason.trim().is_empty() {
        reject(
            Rule::ReasonRequired,
            format!("{what} needs a non-empty reason"),
        )
    } else {
        Ok(())
    }
}

fn known_version(state: &PromptState, version: &VersionId) -> Result<(), Rejection> {
    if state.has_version(version) {
        Ok(())
    } else {
        reject(
            Rule::UnknownVersion,
            format!("prompt `{}` has no version {version}", state.name),
        )
    }
}

fn known_release<'a>(
    state: &'a PromptState,
    release: &ReleaseId,
) -> Result<Cow<'a, ReleaseState>, Rejection> {
    match state.release(release) {
        Some(r) => Ok(r),
        None => reject(
            Rule::UnknownRelease,
            format!("there is no release {release}"),
        ),
    }
}

/// A release still open for reviews, evidence and revisions (proposed, not yet rolling out).
fn open_release<'a>(
    state: &'a PromptState,
    release: &ReleaseId,
) -> Result<Cow<'a, ReleaseState>, Rejection> {
    let r = known_release(state, release)?;
    if r.status != ReleaseStatus::Proposed {
        return reject(
            Rule::ReleaseNotOpen,
            format!("{release} is {}, no longer open for this", r.status.name()),
        );
    }
    Ok(r)
}

/// The plan of a started release and its stage `stage`. Both follow from recorded events, so
/// a state without them (which no admitted history produces) is refused, never a panic.
fn started_plan(
    r: &ReleaseState,
    stage: usize,
) -> Result<(&crate::plan::RolloutPlan, &crate::plan::Stage), Rejection> {
    match r
        .plan
        .as_ref()
        .and_then(|p| Some((p, p.stages.get(stage)?)))
    {
        Some(found) => Ok(found),
        None => reject(
            Rule::NotRollingOut,
            format!("{} has no stage {stage} in a recorded plan", r.id),
        ),
    }
}

/// The stage index and pause flag of a rolling-out (not frozen) release.
fn rolling(r: &ReleaseState) -> Result<(usize, bool), Rejection> {
    match r.status {
        ReleaseStatus::RollingOut { stage, paused, .. } => Ok((stage, paused)),
        _ => reject(
            Rule::NotRollingOut,
            format!("{} is {}, not rolling out", r.id, r.status.name()),
        ),
    }
}

/// Resolves a user's version reference (full id or unique prefix) against the prompt.
pub fn resolve_version(state: &PromptState, reference: &str) -> Result<VersionId, Rejection> {
    match state.find_version(reference) {
        Ok(v) => Ok(v),
        Err(VersionLookupError::Unknown) => reject(
            Rule::UnknownVersion,
            format!("prompt `{}` has no version `{reference}`", state.name),
        ),
        Err(VersionLookupError::Ambiguous(n)) => reject(
            Rule::UnknownVersion,
            format!(
                "`{reference}` matches {n} versions of `{}`; give more digits",
                state.name
            ),
        ),
    }
}
