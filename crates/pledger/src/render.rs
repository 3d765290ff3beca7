//! Text rendering for people: one line per event, release summaries, gate tables.

use pledger_core::event::{Event, ReviewVerdict};
use pledger_core::gate::GateCheck;
use pledger_core::state::{PromptState, ReleaseState};
use pledger_infra::Recorded;

fn short(v: &pledger_core::VersionId) -> &str {
    v.short()
}

/// ` (forced outside a release window: <reason>)`, or nothing.
fn forced_note(forced: bool, reason: &Option<String>) -> String {
    if forced {
        format!(
            " (forced outside a release window: {})",
            reason.as_deref().unwrap_or_default()
        )
    } else {
        String::new()
    }
}

/// A one-line summary of an event's payload.
pub fn summarize(event: &Event) -> String {
    match event {
        Event::PromptRegistered(e) => format!("registered, owned by {}", e.owner),
        Event::VersionPublished(e) => format!("published version {}", short(&e.version)),
        Event::VersionAdopted(e) => {
            format!("adopted {} as stable: {}", short(&e.version), e.reason)
        }
        Event::GatePolicySet(_) => "gate policy set".to_string(),
        Event::ChangeProposed(e) => format!(
            "{} proposed {} against baseline {}: {}",
            e.release,
            short(&e.candidate),
            e.baseline
                .as_ref()
                .map(|b| b.short().to_string())
                .unwrap_or_else(|| "none".into()),
            e.rationale
        ),
        Event::CandidateRevised(e) => format!(
            "{} candidate revised {} -> {}",
            e.release,
            short(&e.previous_candidate),
            short(&e.candidate)
        ),
        Event::ReviewSubmitted(e) => format!(
            "{} {} review by {}: {}{}",
            e.release,
            e.layer,
            e.reviewer,
            match e.verdict {
                ReviewVerdict::Approve => "approve",
                ReviewVerdict::RequestChanges => "request changes",
            },
            e.note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        Event::EvalBundleAttached(e) => format!(
            "{} eval bundle `{}` attached ({})",
            e.release,
            e.bundle.suite,
            &e.bundle_digest[..12]
        ),
        Event::TradeoffAccepted(e) => format!(
            "{} trade-off accepted by {}: {}",
            e.release, e.accepted_by, e.reason
        ),
        Event::GateDecided(e) => format!(
            "{} gate {} ({} of {} checks passed)",
            e.release,
            if e.passed { "PASSED" } else { "FAILED" },
            e.checks.iter().filter(|c| c.passed).count(),
            e.checks.len()
        ),
        Event::RolloutPlanned(e) => format!(
            "{} plan: {}",
            e.release,
            e.plan
                .stages
                .iter()
                .map(|s| format!("{} {}%", s.name, s.percent))
                .collect::<Vec<_>>()
                .join(" -> ")
        ),
        Event::RolloutStarted(e) => format!(
            "{} rollout started at stage `{}`{}",
            e.release,
            e.stage,
            forced_note(e.forced, &e.reason)
        ),
        Event::StageAdvanced(e) => format!(
            "{} advanced `{}` -> `{}`{}",
            e.release,
            e.from_stage,
            e.to_stage,
            if e.forced {
                format!(" (FORCED: {})", e.reason.as_deref().unwrap_or_default())
            } else {
                String::new()
            }
        ),
        Event::RolloutPaused(e) => format!("{} paused at `{}`: {}", e.release, e.stage, e.reason),
        Event::RolloutResumed(e) => format!("{} resumed at `{}`", e.release, e.stage),
        Event::RolloutFrozen(e) => format!("{} FROZEN at `{}`: {}", e.release, e.stage, e.reason),
        Event::RolledBack(e) => format!(
            "{} ROLLED BACK {} -> {}: {}",
            e.release,
            short(&e.from_version),
            short(&e.to_version),
            e.reason
        ),
        Event::ReleaseCompleted(e) => {
            format!(
                "{} completed: {} is stable{}",
                e.release,
                short(&e.version),
                forced_note(e.forced, &e.reason)
            )
        }
        Event::ProposalWithdrawn(e) => format!("{} withdrawn: {}", e.release, e.reason),
        Event::RegressionCaseCollected(e) => format!(
            "regression case {} collected ({:?}, {} report{}): {}",
            e.case_id,
            e.tag,
            e.count,
            if e.count == 1 { "" } else { "s" },
            e.example
        ),
        Event::RegressionCaseRecurred(e) => format!(
            "regression case {} seen {} more time{}",
            e.case_id,
            e.additional,
            if e.additional == 1 { "" } else { "s" }
        ),
        Event::RegressionCaseClosed(e) => {
            format!("regression case {} closed: {}", e.case_id, e.reason)
        }
        Event::ReleaseWindowsSet(e) => match &e.windows {
            Some(w) => format!(
                "release windows set: {} open, {} closed, in {}",
                w.open.len(),
                w.closed.len(),
                w.timezone
            ),
            None => "own release windows cleared (the global ones apply)".to_string(),
        },
        Event::FleetWindowsSet(e) => match &e.windows {
            Some(w) => format!(
                "global release windows set: {} open, {} closed, in {}",
                w.open.len(),
                w.closed.len(),
                w.timezone
            ),
            None => "global release windows cleared".to_string(),
        },
        Event::NotificationsSet(e) => match e.webhooks.as_slice() {
            [] => "webhooks cleared: nobody is notified".to_string(),
            hooks => format!(
                "webhooks set: {}",
                hooks
                    .iter()
                    .map(|w| w.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        Event::NoticeRaised(e) => format!("{} needs a person: {}", e.release, e.notice.describe()),
        Event::DigestRecorded(e) => format!(
            "digest of {} recorded: {} shipped, {} frozen, {} rolled back",
            e.week,
            e.digest.shipped.len(),
            e.digest.frozen.len(),
            e.digest.rolled_back.len()
        ),
        Event::IdentityEnrolled(e) => format!(
            "enrolled {} as {} with key {}",
            e.identity,
            roles(&e.roles),
            e.keys
                .iter()
                .map(|k| k.fingerprint())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::IdentityKeyRotated(e) => format!(
            "rotated {}'s key to {} (retired {})",
            e.identity,
            e.key.fingerprint(),
            e.retired.join(", ")
        ),
        Event::IdentityRolesSet(e) => format!("{} now has roles {}", e.identity, roles(&e.roles)),
        Event::IdentityRevoked(e) => format!("revoked {}: {}", e.identity, e.reason),
    }
}

/// `author, reviewer`.
pub fn roles(roles: &[pledger_core::identity::Role]) -> String {
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn history_lines(events: &[Recorded]) -> String {
    let mut out = String::new();
    for r in events {
        out.push_str(&format!(
            "{:>5}  {}  {:<12} {:<30} {}\n",
            r.sequence,
            r.envelope.occurred_at,
            r.envelope.actor.as_str(),
            r.envelope.kind(),
            summarize(&r.envelope.event)
        ));
    }
    out
}

/// `prompt diff`'s text: each changed field, then the instructions line by line.
pub fn artifact_diff(from: &str, to: &str, diff: &pledger_core::diff::ArtifactDiff) -> String {
    let mut text = format!("--- {from}\n+++ {to}\n");
    if diff.is_empty() {
        text.push_str("(identical)\n");
    }
    for f in &diff.fields {
        text.push_str(&format!(
            "~ {}: {} -> {}\n",
            f.field,
            f.from.as_deref().unwrap_or("(absent)"),
            f.to.as_deref().unwrap_or("(absent)")
        ));
    }
    if diff.instructions_changed {
        text.push_str("~ instructions:\n");
        for line in &diff.instructions {
            text.push_str(&format!("  {}{}\n", line.tag, line.text));
        }
    }
    text
}

/// Every line of `text` with `prefix` before it.
pub fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

pub fn gate_table(checks: &[GateCheck]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = if c.waived_by_tradeoff {
            "WAIVED"
        } else if c.passed {
            "pass"
        } else {
            "FAIL"
        };
        out.push_str(&format!("  {mark:<6} {:<46} {}\n", c.name, c.detail));
    }
    out
}

pub fn release_summary(state: &PromptState, r: &ReleaseState) -> String {
    let mut out =
        format!(
        "release {}  [{}]\n  author     {}\n  candidate  {}\n  baseline   {}\n  rationale  {}\n",
        r.id,
        r.status.name(),
        r.author,
        r.candidate,
        r.baseline.as_ref().map(|b| b.to_string()).unwrap_or_else(|| "none".into()),
        r.rationale
    );
    for change in &r.expected_changes {
        out.push_str(&format!("  expects    {change}\n"));
    }
    for (layer, review) in &r.reviews {
        let verdict = match review.verdict {
            ReviewVerdict::Approve => "approved",
            ReviewVerdict::RequestChanges => "changes requested",
        };
        out.push_str(&format!(
            "  {:<10} {verdict} by {}\n",
            layer.to_string(),
            review.reviewer
        ));
    }
    match &r.bundle {
        Some(b) => out.push_str(&format!(
            "  eval       `{}` ({} segments, {} regressions)\n",
            b.bundle.suite,
            b.bundle.segments.len(),
            b.bundle.regressions.len()
        )),
        None => out.push_str("  eval       none attached\n"),
    }
    if let Some(t) = &r.tradeoff {
        out.push_str(&format!(
            "  trade-off  accepted by {}: {}\n",
            t.accepted_by, t.reason
        ));
    }
    match (&r.gate, r.current_gate(&state.policy_digest)) {
        (_, Some(g)) => out.push_str(&format!(
            "  gate       {}\n",
            if g.passed { "passed" } else { "failed" }
        )),
        (Some(_), None) => {
            out.push_str("  gate       stale (evidence changed since the last decision)\n")
        }
        (None, None) => out.push_str("  gate       not decided\n"),
    }
    if let Some(plan) = &r.plan {
        let current = r.status.stage();
        let stages: Vec<String> = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if Some(i) == current {
                    format!("[{} {}%]", s.name, s.percent)
                } else {
                    format!("{} {}%", s.name, s.percent)
                }
            })
            .collect();
        out.push_str(&format!("  stages     {}\n", stages.join(" -> ")));
    }
    out
}

/// The canary monitor's judgement of the current stage, in words and numbers.
pub fn canary_status(s: &pledger_infra::worker::canary::CanaryStatus) -> String {
    let j = &s.judgement;
    let control = match s.control {
        pledger_infra::worker::canary::ControlKind::InSegment => "baseline traffic in the same segment",
        pledger_infra::worker::canary::ControlKind::OutsideSegment => "baseline traffic outside the stage's segment (the stage sends all of its segment to the candidate)",
    };
    let mut out = format!(
        "  canary     stage `{}`: {}\n             candidate {} samples, control {} samples ({control}); stage needs {} per arm and {} of bake; {}\n",
        s.stage,
        j.words,
        j.candidate.samples,
        j.control.samples,
        s.min_samples,
        pledger_core::DurationSpec::from_millis(s.min_bake_ms),
        if s.ready { "ready to advance" } else { "not ready to advance" }
    );
    if let Some(w) = &s.waiting_for_window {
        out.push_str(&format!("             waiting for a release window: {w}\n"));
    }
    if let Some(w) = &s.advance_refused {
        out.push_str(&format!("             automatic advance refused: {w}\n"));
    }
    for e in &s.earlier_stages {
        out.push_str(&format!(
            "             earlier: stage `{}` entered {}: candidate {} samples, control {} samples\n",
            e.stage,
            e.stage_entered_at,
            e.candidate_samples,
            e.control_samples
        ));
    }
    for g in &j.guardrails {
        out.push_str(&format!(
            "             {:<7} {:<24} {:<12} candidate {:.4} vs control {:.4}, limit {:.4}; statistic {:.2} of {:.2}\n",
            if g.breached { "BREACH" } else { "ok" },
            g.guardrail,
            g.bound.name(),
            g.candidate_value,
            g.control_value,
            g.limit,
            g.statistic,
            g.threshold
        ));
    }
    out
}
