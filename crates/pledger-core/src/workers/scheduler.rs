//! The scheduler's rules: which week must have its digest now, and which releases need a
//! person (a review waiting too long, a stage stuck on too little data, a baked stage waiting
//! for a manual advance). The driver reads the ledger and the monitor's status, and records
//! the digest and the notices through the decider.

use std::collections::BTreeMap;

use crate::canary::{bake_progress, enough_samples};
use crate::digest::missing_approvals;
use crate::error::FieldError;
use crate::event::Notice;
use crate::state::{PromptState, ReleaseStatus};
use crate::window::{last_completed_week, CronSchedule, Week};
use crate::workers::canary::CanaryStatus;
use crate::{DurationSpec, ReleaseId, Timestamp};

/// The limits of the periodic checks.
#[derive(Clone, Debug, PartialEq)]
pub struct NoticeLimits {
    /// A candidate waiting this long for a missing approval is reported.
    pub stale_review_after: DurationSpec,
    /// A stage this long past its bake time without its samples is reported.
    pub stuck_after: DurationSpec,
}

/// The digest the scheduler owes at `now`: the latest firing of `schedule` at or before now,
/// and the week that firing reports on. `None` when no firing is due, or when `done_for` (the
/// firing whose week is known to have its digest) is that firing. A scheduler down across
/// several firings so owes one digest, for the latest week, never one per missed firing.
pub fn digest_due(
    schedule: &CronSchedule,
    timezone: &str,
    now: Timestamp,
    done_for: Option<Timestamp>,
) -> Result<Option<(Timestamp, Week)>, FieldError> {
    let Some(fired) = schedule.last_at_or_before(now) else {
        return Ok(None);
    };
    if done_for == Some(fired) {
        return Ok(None);
    }
    Ok(Some((fired, last_completed_week(fired, timezone)?)))
}

/// The releases whose notices depend on the canary monitor's status: rolling out, not paused,
/// and past their stage's bake time. The driver reads their status before [`notices`].
pub fn needs_status<'a>(
    states: impl IntoIterator<Item = &'a PromptState>,
    now: Timestamp,
) -> Vec<ReleaseId> {
    let mut out = Vec::new();
    for state in states {
        for r in state.releases.values() {
            if let ReleaseStatus::RollingOut {
                stage,
                stage_entered_at,
                paused: false,
            } = r.status
            {
                let baked = r
                    .plan
                    .as_ref()
                    .and_then(|p| p.stages.get(stage))
                    .is_some_and(|s| bake_progress(s, stage_entered_at, now).1);
                if baked {
                    out.push(r.id.clone());
                }
            }
        }
    }
    out
}

/// The notices to raise now, each once per candidate or stage visit (a notice already on the
/// release is not raised again). `statuses` holds the monitor's status of releases
/// [`needs_status`] named, where there is one.
pub fn notices<'a>(
    states: impl IntoIterator<Item = &'a PromptState>,
    statuses: &BTreeMap<ReleaseId, CanaryStatus>,
    limits: &NoticeLimits,
    now: Timestamp,
) -> Vec<(ReleaseId, Notice)> {
    let mut out = Vec::new();
    for state in states {
        for r in state.releases.values() {
            match r.status {
                ReleaseStatus::Proposed => {
                    let waiting = now.millis_since(r.candidate_since).max(0) as u64;
                    let missing = missing_approvals(r);
                    if waiting >= limits.stale_review_after.millis() && !missing.is_empty() {
                        let notice = Notice::StaleReview {
                            candidate: r.candidate.clone(),
                            missing,
                            waiting: DurationSpec::from_millis(waiting / 60_000 * 60_000),
                        };
                        if !r.notices.contains(&notice.key(None)) {
                            out.push((r.id.clone(), notice));
                        }
                    }
                }
                ReleaseStatus::RollingOut {
                    stage,
                    stage_entered_at,
                    paused: false,
                } => {
                    let Some(plan) = &r.plan else { continue };
                    let Some(s) = plan.stages.get(stage) else {
                        continue;
                    };
                    let baked_at = stage_entered_at.plus(s.min_bake);
                    if now < baked_at {
                        continue;
                    }
                    // The status of this stage visit only.
                    let status = statuses
                        .get(&r.id)
                        .filter(|x| x.stage == s.name && x.stage_entered_at == stage_entered_at);
                    let (candidate, control) = status.map_or((0, 0), |x| {
                        (x.judgement.candidate.samples, x.judgement.control.samples)
                    });
                    let overdue = now.millis_since(baked_at).max(0) as u64;
                    let notice = if !enough_samples(s.min_samples, candidate, control)
                        && overdue >= limits.stuck_after.millis()
                    {
                        Notice::StuckOnData {
                            stage: s.name.clone(),
                            samples: candidate.min(control),
                            min_samples: s.min_samples,
                            overdue: DurationSpec::from_millis(overdue / 60_000 * 60_000),
                        }
                    } else if !plan.advance.automatic && status.is_some_and(|x| x.ready) {
                        Notice::BakeReached {
                            stage: s.name.clone(),
                        }
                    } else {
                        continue;
                    };
                    if !r.notices.contains(&notice.key(Some(stage_entered_at))) {
                        out.push((r.id.clone(), notice));
                    }
                }
                _ => {}
            }
        }
    }
    out
}
