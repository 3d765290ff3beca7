//! The weekly digest: what shipped, froze and rolled back in a week, which gates failed and
//! why, which trade-offs were accepted and by whom, and what is still waiting (open regression
//! cases, stale reviews) when the week ended.
//!
//! A digest is a pure function of the ledger up to the end of its week: [`DigestBuilder`]
//! ignores every event that occurred at or after the end, so two schedulers (or a scheduler and
//! `pledger digest`) composing the same week from the same ledger compose the same digest,
//! whenever they run.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::canary::Judgement;
use crate::event::{Envelope, Event, ReviewLayer, ReviewVerdict};
use crate::ids::{Actor, DurationSpec, PromptName, ReleaseId, Timestamp, VersionId};
use crate::state::{evolve, PromptState, ReleaseStatus};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Digest {
    /// ISO week, e.g. `2026-W48`.
    pub week: String,
    /// The week's first instant (Monday 00:00 in `timezone`).
    pub start: Timestamp,
    /// The instant the week ends (next Monday 00:00 in `timezone`), excluded.
    pub end: Timestamp,
    pub timezone: String,
    /// Reviews waiting longer than this at the end of the week are listed as stale.
    pub stale_review_after: DurationSpec,
    pub shipped: Vec<Shipped>,
    pub frozen: Vec<Frozen>,
    pub rolled_back: Vec<RolledBackEntry>,
    pub gates_failed: Vec<GateFailed>,
    pub tradeoffs: Vec<TradeoffEntry>,
    /// Steps taken outside a release window or over a readiness objection (`--force`).
    pub forced: Vec<ForcedStep>,
    /// Open regression cases per prompt at the end of the week.
    pub open_cases: Vec<OpenCases>,
    pub stale_reviews: Vec<StaleReview>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Shipped {
    pub release: ReleaseId,
    pub version: VersionId,
    pub at: Timestamp,
    pub by: Actor,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Frozen {
    pub release: ReleaseId,
    pub stage: String,
    pub at: Timestamp,
    pub by: Actor,
    pub reason: String,
    /// The canary monitor's judgement when the freeze was automatic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<Judgement>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolledBackEntry {
    pub release: ReleaseId,
    pub at: Timestamp,
    pub by: Actor,
    pub reason: String,
    pub from_version: VersionId,
    pub to_version: VersionId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateFailed {
    pub release: ReleaseId,
    pub at: Timestamp,
    /// `name: detail` of every failed check.
    pub failed_checks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TradeoffEntry {
    pub release: ReleaseId,
    pub accepted_by: Actor,
    pub at: Timestamp,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForcedStep {
    pub release: ReleaseId,
    /// `start`, `advance <from> → <to>` or `complete`.
    pub step: String,
    pub at: Timestamp,
    pub by: Actor,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpenCases {
    pub prompt: PromptName,
    pub count: usize,
    pub case_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StaleReview {
    pub release: ReleaseId,
    pub candidate: VersionId,
    /// When the current candidate started waiting (proposal or last revision).
    pub waiting_since: Timestamp,
    pub missing: Vec<ReviewLayer>,
}

/// Composes the digest of one week from the ledger's events, given in ledger order.
pub struct DigestBuilder {
    start: Timestamp,
    end: Timestamp,
    stale_after: DurationSpec,
    prompts: BTreeMap<PromptName, PromptState>,
    digest: Digest,
}

impl DigestBuilder {
    pub fn new(
        week: &str,
        start: Timestamp,
        end: Timestamp,
        timezone: &str,
        stale_after: DurationSpec,
    ) -> DigestBuilder {
        DigestBuilder {
            start,
            end,
            stale_after,
            prompts: BTreeMap::new(),
            digest: Digest {
                week: week.to_string(),
                start,
                end,
                timezone: timezone.to_string(),
                stale_review_after: stale_after,
                shipped: vec![],
                frozen: vec![],
                rolled_back: vec![],
                gates_failed: vec![],
                tradeoffs: vec![],
                forced: vec![],
                open_cases: vec![],
                stale_reviews: vec![],
            },
        }
    }

    /// Folds one event. Events at or after the week's end are ignored: the digest is the
    /// ledger as it stood when the week ended.
    pub fn observe(&mut self, envelope: &Envelope) {
        let at = envelope.occurred_at;
        if at >= self.end {
            return;
        }
        let Some(prompt) = envelope.event.aggregate().prompt().cloned() else {
            return;
        };
        let state = self
            .prompts
            .entry(prompt.clone())
            .or_insert_with(|| PromptState::new(prompt));
        evolve(state, envelope);
        if at < self.start {
            return;
        }
        let by = envelope.actor.clone();
        let d = &mut self.digest;
        match &envelope.event {
            Event::ReleaseCompleted(e) => {
                d.shipped.push(Shipped {
                    release: e.release.clone(),
                    version: e.version.clone(),
                    at,
                    by: by.clone(),
                });
                if e.forced {
                    d.forced
                        .push(forced(&e.release, "complete", at, by, &e.reason));
                }
            }
            Event::RolloutFrozen(e) => d.frozen.push(Frozen {
                release: e.release.clone(),
                stage: e.stage.clone(),
                at,
                by,
                reason: e.reason.clone(),
                evidence: e.evidence.clone(),
            }),
            Event::RolledBack(e) => d.rolled_back.push(RolledBackEntry {
                release: e.release.clone(),
                at,
                by,
                reason: e.reason.clone(),
                from_version: e.from_version.clone(),
                to_version: e.to_version.clone(),
            }),
            Event::GateDecided(e) if !e.passed => d.gates_failed.push(GateFailed {
                release: e.release.clone(),
                at,
                failed_checks: e
                    .checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect(),
            }),
            Event::TradeoffAccepted(e) => d.tradeoffs.push(TradeoffEntry {
                release: e.release.clone(),
                accepted_by: e.accepted_by.clone(),
                at,
                reason: e.reason.clone(),
            }),
            Event::RolloutStarted(e) if e.forced => d
                .forced
                .push(forced(&e.release, "start", at, by, &e.reason)),
            Event::StageAdvanced(e) if e.forced => {
                let step = format!("advance {} → {}", e.from_stage, e.to_stage);
                d.forced.push(forced(&e.release, &step, at, by, &e.reason))
            }
            _ => {}
        }
    }

    /// The digest, with what was still open when the week ended.
    pub fn finish(mut self) -> Digest {
        for (prompt, state) in &self.prompts {
            let open: Vec<String> = state
                .regression_cases
                .values()
                .filter(|c| c.closed.is_none())
                .map(|c| c.case_id.clone())
                .collect();
            if !open.is_empty() {
                self.digest.open_cases.push(OpenCases {
                    prompt: prompt.clone(),
                    count: open.len(),
                    case_ids: open,
                });
            }
            for r in state.releases.values() {
                if r.status != ReleaseStatus::Proposed {
                    continue;
                }
                let since = r.candidate_since;
                if (self.end.millis_since(since).max(0) as u64) < self.stale_after.millis() {
                    continue;
                }
                let missing = missing_approvals(r);
                if !missing.is_empty() {
                    self.digest.stale_reviews.push(StaleReview {
                        release: r.id.clone(),
                        candidate: r.candidate.clone(),
                        waiting_since: since,
                        missing,
                    });
                }
            }
        }
        self.digest
    }
}

/// Review layers without a current approval.
pub fn missing_approvals(r: &crate::state::ReleaseState) -> Vec<ReviewLayer> {
    [ReviewLayer::Product, ReviewLayer::Technical]
        .into_iter()
        .filter(|l| r.reviews.get(l).map(|v| v.verdict) != Some(ReviewVerdict::Approve))
        .collect()
}

fn forced(
    release: &ReleaseId,
    step: &str,
    at: Timestamp,
    by: Actor,
    reason: &Option<String>,
) -> ForcedStep {
    ForcedStep {
        release: release.clone(),
        step: step.to_string(),
        at,
        by,
        reason: reason.clone().unwrap_or_default(),
    }
}

impl Digest {
    /// Nothing happened and nothing is waiting.
    pub fn is_quiet(&self) -> bool {
        self.shipped.is_empty()
            && self.frozen.is_empty()
            && self.rolled_back.is_empty()
            && self.gates_failed.is_empty()
            && self.tradeoffs.is_empty()
            && self.forced.is_empty()
            && self.open_cases.is_empty()
            && self.stale_reviews.is_empty()
    }
}
