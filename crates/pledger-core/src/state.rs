//! State of a prompt and its releases, folded from the ledger by [`evolve`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artifact::{json_digest, Artifact};
use crate::bundle::EvalBundle;
use crate::event::{Envelope, Event, GateDecided, GateEvidence, ReviewLayer, ReviewVerdict};
use crate::gate::GatePolicy;
use crate::ids::{Actor, PromptName, ReleaseId, Timestamp, VersionId};
use crate::plan::RolloutPlan;

/// A prompt, its versions and its releases: the consistency boundary of the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptState {
    pub name: PromptName,
    /// `None` until the prompt is registered.
    pub owner: Option<String>,
    pub versions: BTreeMap<VersionId, PublishedVersion>,
    /// Version ids in publication order.
    pub version_order: Vec<VersionId>,
    /// The version serving production outside any rollout.
    pub stable: Option<VersionId>,
    pub policy: GatePolicy,
    /// [`json_digest`] of `policy` (what a gate's evidence names), kept with it.
    pub policy_digest: String,
    /// Releases by number (`<prompt>-r<number>`).
    pub releases: BTreeMap<u32, ReleaseState>,
    /// Regression cases by id.
    pub regression_cases: BTreeMap<String, RegressionCase>,
    /// `event_count` when the last release completed: cases collected after it are the ones
    /// the next release's bundle must cover.
    pub last_completed_at_event: u64,
    /// The prompt's own release windows (`None`: the global ones apply, if any).
    pub windows: Option<crate::window::ReleaseWindows>,
    /// Events folded so far.
    pub event_count: u64,
}

/// A regression case: a production failure (or a reviewer's example) the next eval bundle
/// must cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionCase {
    pub case_id: String,
    pub fingerprint: String,
    pub tag: crate::outcome::FeedbackTag,
    pub example: String,
    pub version: Option<VersionId>,
    pub release: Option<ReleaseId>,
    pub source: crate::event::CaseSource,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    pub through_sequence: u64,
    /// `event_count` at collection (orders cases against releases).
    pub collected_at_event: u64,
    pub closed: Option<String>,
}

impl PromptState {
    /// Open cases collected since the last completed release: what a gate requires covered.
    pub fn cases_to_cover(&self) -> Vec<&RegressionCase> {
        self.regression_cases
            .values()
            .filter(|c| c.closed.is_none() && c.collected_at_event > self.last_completed_at_event)
            .collect()
    }

    /// The case with this fingerprint, if any.
    pub fn case_by_fingerprint(&self, fingerprint: &str) -> Option<&RegressionCase> {
        self.regression_cases
            .values()
            .find(|c| c.fingerprint == fingerprint)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedVersion {
    pub artifact: Artifact,
    pub published_at: Timestamp,
    pub published_by: Actor,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseState {
    pub id: ReleaseId,
    pub author: Actor,
    pub candidate: VersionId,
    pub baseline: Option<VersionId>,
    pub rationale: String,
    pub expected_changes: Vec<String>,
    pub proposed_at: Timestamp,
    /// When the current candidate started waiting for reviews (proposal or last revision).
    pub candidate_since: Timestamp,
    /// Keys of the notices raised about this release ([`crate::event::Notice::key`]).
    pub notices: std::collections::BTreeSet<String>,
    /// The latest review of each layer for the current candidate.
    pub reviews: BTreeMap<ReviewLayer, Review>,
    pub bundle: Option<AttachedBundle>,
    pub tradeoff: Option<Tradeoff>,
    pub gate: Option<GateDecided>,
    pub plan: Option<RolloutPlan>,
    /// Salt of the sticky bucketing, set when the rollout starts.
    pub bucketing_salt: Option<String>,
    pub status: ReleaseStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: Actor,
    pub verdict: ReviewVerdict,
    pub note: Option<String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttachedBundle {
    pub digest: String,
    pub bundle: EvalBundle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tradeoff {
    pub bundle_digest: String,
    pub accepted_by: Actor,
    pub reason: String,
}

/// Where a release is in its lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Open for reviews, evals, gate and plan.
    Proposed,
    /// Serving its current stage; `paused` stops advancing without moving traffic.
    RollingOut {
        stage: usize,
        stage_entered_at: Timestamp,
        paused: bool,
    },
    /// Traffic routed back to the baseline; waiting for a person (resume or roll back).
    Frozen {
        stage: usize,
        stage_entered_at: Timestamp,
        reason: String,
    },
    /// The candidate became the stable version.
    Completed {
        at: Timestamp,
    },
    RolledBack {
        at: Timestamp,
        reason: String,
    },
    Withdrawn {
        reason: String,
    },
}

impl ReleaseStatus {
    pub fn name(&self) -> &'static str {
        match self {
            ReleaseStatus::Proposed => "proposed",
            ReleaseStatus::RollingOut { paused: false, .. } => "rolling_out",
            ReleaseStatus::RollingOut { paused: true, .. } => "paused",
            ReleaseStatus::Frozen { .. } => "frozen",
            ReleaseStatus::Completed { .. } => "completed",
            ReleaseStatus::RolledBack { .. } => "rolled_back",
            ReleaseStatus::Withdrawn { .. } => "withdrawn",
        }
    }
    /// Rolling out, paused or frozen: the release holds the prompt's one rollout slot.
    pub fn is_active_rollout(&self) -> bool {
        matches!(
            self,
            ReleaseStatus::RollingOut { .. } | ReleaseStatus::Frozen { .. }
        )
    }
    pub fn stage(&self) -> Option<usize> {
        match self {
            ReleaseStatus::RollingOut { stage, .. } | ReleaseStatus::Frozen { stage, .. } => {
                Some(*stage)
            }
            _ => None,
        }
    }
}

impl ReleaseState {
    /// The evidence a gate decided now would be based on (`None` without a bundle).
    pub fn current_evidence(&self, policy_digest: &str) -> Option<GateEvidence> {
        let bundle = self.bundle.as_ref()?;
        Some(GateEvidence {
            candidate: self.candidate.clone(),
            bundle_digest: bundle.digest.clone(),
            tradeoff_accepted: self
                .tradeoff
                .as_ref()
                .is_some_and(|t| t.bundle_digest == bundle.digest),
            policy_digest: policy_digest.to_string(),
        })
    }

    /// The gate decision on the current evidence, if one was made.
    pub fn current_gate(&self, policy_digest: &str) -> Option<&GateDecided> {
        let evidence = self.current_evidence(policy_digest)?;
        self.gate.as_ref().filter(|g| g.evidence == evidence)
    }

    pub fn stage_name(&self, index: usize) -> Option<&str> {
        self.plan
            .as_ref()
            .and_then(|p| p.stages.get(index))
            .map(|s| s.name.as_str())
    }
}

impl PromptState {
    pub fn new(name: PromptName) -> PromptState {
        PromptState {
            name,
            owner: None,
            versions: BTreeMap::new(),
            version_order: Vec::new(),
            stable: None,
            policy: GatePolicy::default(),
            policy_digest: json_digest(&GatePolicy::default()),
            releases: BTreeMap::new(),
            regression_cases: BTreeMap::new(),
            last_completed_at_event: 0,
            windows: None,
            event_count: 0,
        }
    }

    pub fn is_registered(&self) -> bool {
        self.owner.is_some()
    }

    pub fn release(&self, id: &ReleaseId) -> Option<&ReleaseState> {
        if id.prompt() != &self.name {
            return None;
        }
        self.releases.get(&id.number())
    }

    /// The release holding the rollout slot (rolling out, paused or frozen), if any.
    pub fn active_rollout(&self) -> Option<&ReleaseState> {
        self.releases
            .values()
            .find(|r| r.status.is_active_rollout())
    }

    /// The most recently completed release whose candidate is still the stable version.
    pub fn last_completed_serving(&self) -> Option<&ReleaseState> {
        self.releases.values().rev().find(|r| {
            matches!(r.status, ReleaseStatus::Completed { .. })
                && Some(&r.candidate) == self.stable.as_ref()
        })
    }

    /// Finds a version by full id or unique prefix (`sha256:ab12…` or `ab12…`).
    pub fn find_version(&self, reference: &str) -> Result<&VersionId, VersionLookupError> {
        let found: Vec<&VersionId> = self
            .version_order
            .iter()
            .filter(|v| v.matches_prefix(reference))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(VersionLookupError::Unknown),
            _ => Err(VersionLookupError::Ambiguous(found.len())),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionLookupError {
    Unknown,
    Ambiguous(usize),
}

/// Folds one recorded event into the state. Events are facts: `evolve` never refuses one.
/// An event that does not fit the state (which `decide` never produces, and which readers do
/// not admit) changes nothing but `event_count`, so a replay of any ledger terminates with a
/// state. There is no separate count of such events: readers report inadmissible events
/// before they reach `evolve` (see `verify::admit`).
pub fn evolve(state: &mut PromptState, envelope: &Envelope) {
    state.event_count += 1;
    let at = envelope.occurred_at;
    match &envelope.event {
        Event::PromptRegistered(e) => state.owner = Some(e.owner.clone()),
        Event::VersionPublished(e) => {
            if !state.versions.contains_key(&e.version) {
                state.version_order.push(e.version.clone());
                state.versions.insert(
                    e.version.clone(),
                    PublishedVersion {
                        artifact: e.artifact.clone(),
                        published_at: at,
                        published_by: envelope.actor.clone(),
                    },
                );
            }
        }
        Event::VersionAdopted(e) => state.stable = Some(e.version.clone()),
        Event::GatePolicySet(e) => {
            state.policy = e.policy.clone();
            state.policy_digest = json_digest(&state.policy);
        }
        Event::ChangeProposed(e) => {
            state.releases.insert(
                e.release.number(),
                ReleaseState {
                    id: e.release.clone(),
                    author: e.author.clone(),
                    candidate: e.candidate.clone(),
                    baseline: e.baseline.clone(),
                    rationale: e.rationale.clone(),
                    expected_changes: e.expected_changes.clone(),
                    proposed_at: at,
                    candidate_since: at,
                    notices: Default::default(),
                    reviews: BTreeMap::new(),
                    bundle: None,
                    tradeoff: None,
                    gate: None,
                    plan: None,
                    bucketing_salt: None,
                    status: ReleaseStatus::Proposed,
                },
            );
        }
        Event::CandidateRevised(e) => with_release(state, &e.release, |r| {
            r.candidate = e.candidate.clone();
            r.candidate_since = at;
            r.reviews.clear();
        }),
        Event::ReviewSubmitted(e) => with_release(state, &e.release, |r| {
            r.reviews.insert(
                e.layer,
                Review {
                    reviewer: e.reviewer.clone(),
                    verdict: e.verdict,
                    note: e.note.clone(),
                    at,
                },
            );
        }),
        Event::EvalBundleAttached(e) => with_release(state, &e.release, |r| {
            r.bundle = Some(AttachedBundle {
                digest: e.bundle_digest.clone(),
                bundle: e.bundle.clone(),
            });
        }),
        Event::TradeoffAccepted(e) => with_release(state, &e.release, |r| {
            r.tradeoff = Some(Tradeoff {
                bundle_digest: e.bundle_digest.clone(),
                accepted_by: e.accepted_by.clone(),
                reason: e.reason.clone(),
            });
        }),
        Event::GateDecided(e) => with_release(state, &e.release, |r| r.gate = Some(e.clone())),
        Event::RolloutPlanned(e) => {
            with_release(state, &e.release, |r| r.plan = Some(e.plan.clone()))
        }
        Event::RolloutStarted(e) => with_release(state, &e.release, |r| {
            r.bucketing_salt = Some(e.bucketing_salt.clone());
            r.status = ReleaseStatus::RollingOut {
                stage: 0,
                stage_entered_at: at,
                paused: false,
            };
        }),
        Event::StageAdvanced(e) => with_release(state, &e.release, |r| {
            let Some(next) = r.plan.as_ref().and_then(|p| p.stage_index(&e.to_stage)) else {
                return;
            };
            if let ReleaseStatus::RollingOut { paused, .. } = r.status {
                r.status = ReleaseStatus::RollingOut {
                    stage: next,
                    stage_entered_at: at,
                    paused,
                };
            }
        }),
        Event::RolloutPaused(e) => with_release(state, &e.release, |r| set_paused(r, true)),
        Event::RolloutResumed(e) => with_release(state, &e.release, |r| match r.status {
            ReleaseStatus::RollingOut { .. } => set_paused(r, false),
            // Resuming a frozen rollout starts its stage's bake time again.
            ReleaseStatus::Frozen { stage, .. } => {
                r.status = ReleaseStatus::RollingOut {
                    stage,
                    stage_entered_at: at,
                    paused: false,
                };
            }
            _ => {}
        }),
        Event::RolloutFrozen(e) => with_release(state, &e.release, |r| {
            if let ReleaseStatus::RollingOut {
                stage,
                stage_entered_at,
                ..
            } = r.status
            {
                r.status = ReleaseStatus::Frozen {
                    stage,
                    stage_entered_at,
                    reason: e.reason.clone(),
                };
            }
        }),
        Event::RolledBack(e) => {
            with_release(state, &e.release, |r| {
                r.status = ReleaseStatus::RolledBack {
                    at,
                    reason: e.reason.clone(),
                };
            });
            state.stable = Some(e.to_version.clone());
        }
        Event::ReleaseCompleted(e) => {
            state.last_completed_at_event = state.event_count;
            with_release(state, &e.release, |r| {
                r.status = ReleaseStatus::Completed { at }
            });
            state.stable = Some(e.version.clone());
        }
        Event::RegressionCaseCollected(e) => {
            let collected_at_event = state.event_count;
            state
                .regression_cases
                .entry(e.case_id.clone())
                .or_insert_with(|| RegressionCase {
                    case_id: e.case_id.clone(),
                    fingerprint: e.fingerprint.clone(),
                    tag: e.tag,
                    example: e.example.clone(),
                    version: e.version.clone(),
                    release: e.release.clone(),
                    source: e.source,
                    first_seen: at,
                    last_seen: at,
                    count: e.count,
                    through_sequence: e.through_sequence,
                    collected_at_event,
                    closed: None,
                });
        }
        Event::RegressionCaseRecurred(e) => {
            if let Some(c) = state.regression_cases.get_mut(&e.case_id) {
                c.count += e.additional;
                c.last_seen = at;
                c.through_sequence = c.through_sequence.max(e.through_sequence);
            }
        }
        Event::RegressionCaseClosed(e) => {
            if let Some(c) = state.regression_cases.get_mut(&e.case_id) {
                c.closed = Some(e.reason.clone());
            }
        }
        Event::ReleaseWindowsSet(e) => {
            if e.prompt == state.name {
                state.windows = e.windows.clone();
            }
        }
        Event::NoticeRaised(e) => with_release(state, &e.release, |r| {
            r.notices.insert(e.key.clone());
        }),
        // Fleet-wide: not part of any prompt's family.
        Event::DigestRecorded(_)
        | Event::FleetWindowsSet(_)
        | Event::IdentityEnrolled(_)
        | Event::IdentityKeyRotated(_)
        | Event::IdentityRolesSet(_)
        | Event::IdentityRevoked(_) => {}
        Event::ProposalWithdrawn(e) => with_release(state, &e.release, |r| {
            r.status = ReleaseStatus::Withdrawn {
                reason: e.reason.clone(),
            };
        }),
    }
}

fn set_paused(r: &mut ReleaseState, paused: bool) {
    if let ReleaseStatus::RollingOut {
        stage,
        stage_entered_at,
        ..
    } = r.status
    {
        r.status = ReleaseStatus::RollingOut {
            stage,
            stage_entered_at,
            paused,
        };
    }
}

fn with_release(state: &mut PromptState, id: &ReleaseId, f: impl FnOnce(&mut ReleaseState)) {
    if id.prompt() == &state.name {
        if let Some(r) = state.releases.get_mut(&id.number()) {
            f(r);
        }
    }
}
