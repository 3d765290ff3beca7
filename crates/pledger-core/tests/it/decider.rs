//! The release decider: every rule's rejection, the lifecycle, idempotent repeats.

use pledger_core::decide::{resolve_version, Command};
use pledger_core::event::{ReviewLayer, ReviewVerdict};
use pledger_core::gate::GatePolicy;
use pledger_core::identity::Role;
use pledger_core::state::ReleaseStatus;
use pledger_core::{evolve, Envelope, Event, PromptState, ReleaseId, Rule};

use crate::support::*;

use ReviewLayer::{Product, Technical};

/// Every variant of [`Rule`]. The match below stops compiling when a variant is added, so
/// the list (and the table of `every_rule_has_a_rejection`) cannot silently fall behind.
const ALL_RULES: [Rule; 39] = [
    Rule::UnknownPrompt,
    Rule::PromptAlreadyRegistered,
    Rule::UnknownVersion,
    Rule::UnknownRelease,
    Rule::ReasonRequired,
    Rule::AuthorCannotReview,
    Rule::ReviewersMustDiffer,
    Rule::ReleaseNotOpen,
    Rule::CandidateUnchanged,
    Rule::BundleVersionsMismatch,
    Rule::TradeoffNeedsEvalBundle,
    Rule::AuthorCannotAcceptTradeoff,
    Rule::GateNeedsApprovals,
    Rule::ChangesRequested,
    Rule::GateNeedsEvalBundle,
    Rule::GateUnchangedEvidence,
    Rule::RollbackCriteriaRequired,
    Rule::PlanLocked,
    Rule::RolloutNeedsPassedGate,
    Rule::RolloutNeedsPlan,
    Rule::NoStableVersion,
    Rule::BaselineMoved,
    Rule::OneActiveRollout,
    Rule::NotRollingOut,
    Rule::RolloutPaused,
    Rule::NoNextStage,
    Rule::NotAtLastStage,
    Rule::StageMoved,
    Rule::NothingToRollBack,
    Rule::InvalidInput,
    Rule::StageNotReady,
    Rule::UnknownRegressionCase,
    Rule::OutsideReleaseWindow,
    Rule::NotPermitted,
    Rule::UnknownIdentity,
    Rule::IdentityExists,
    Rule::KeyInUse,
    Rule::LastAdmin,
    Rule::Inadmissible,
];

/// Rules of the roster and of admission, not of a command on a prompt: their cases are in
/// `identity.rs` and `verify.rs`.
const NOT_PROMPT_COMMAND_RULES: [Rule; 5] = [
    Rule::UnknownIdentity,
    Rule::IdentityExists,
    Rule::KeyInUse,
    Rule::LastAdmin,
    Rule::Inadmissible,
];

#[allow(dead_code)]
fn every_variant_is_listed(rule: Rule) {
    match rule {
        Rule::UnknownPrompt
        | Rule::PromptAlreadyRegistered
        | Rule::UnknownVersion
        | Rule::UnknownRelease
        | Rule::ReasonRequired
        | Rule::AuthorCannotReview
        | Rule::ReviewersMustDiffer
        | Rule::ReleaseNotOpen
        | Rule::CandidateUnchanged
        | Rule::BundleVersionsMismatch
        | Rule::TradeoffNeedsEvalBundle
        | Rule::AuthorCannotAcceptTradeoff
        | Rule::GateNeedsApprovals
        | Rule::ChangesRequested
        | Rule::GateNeedsEvalBundle
        | Rule::GateUnchangedEvidence
        | Rule::RollbackCriteriaRequired
        | Rule::PlanLocked
        | Rule::RolloutNeedsPassedGate
        | Rule::RolloutNeedsPlan
        | Rule::NoStableVersion
        | Rule::BaselineMoved
        | Rule::OneActiveRollout
        | Rule::NotRollingOut
        | Rule::RolloutPaused
        | Rule::NoNextStage
        | Rule::NotAtLastStage
        | Rule::StageMoved
        | Rule::NothingToRollBack
        | Rule::InvalidInput
        | Rule::StageNotReady
        | Rule::UnknownRegressionCase
        | Rule::OutsideReleaseWindow
        | Rule::NotPermitted
        | Rule::UnknownIdentity
        | Rule::IdentityExists
        | Rule::KeyInUse
        | Rule::LastAdmin
        | Rule::Inadmissible => {}
    }
}

/// One rejection case: a world, who asks, what, the rule, its code and what the message names.
struct Case {
    world: World,
    who: &'static str,
    command: Command,
    rule: Rule,
    code: &'static str,
    mentions: Vec<String>,
}

fn case(
    world: World,
    who: &'static str,
    command: Command,
    rule: Rule,
    code: &'static str,
    mentions: &[&str],
) -> Case {
    Case {
        world,
        who,
        command,
        rule,
        code,
        mentions: mentions.iter().map(|s| s.to_string()).collect(),
    }
}

fn short(n: u32) -> String {
    vid(n).short().to_string()
}

fn full(n: u32) -> String {
    vid(n).to_string()
}

const R1: &str = "support-triage-r1";

/// A world where the gate of r1 failed on a cost rise of 20%.
fn gate_failed_on_cost() -> World {
    approved()
        .with(
            CI,
            attach(
                1,
                BundleBuilder::new(&vid(2), &vid(1))
                    .cost(0.012, 0.010)
                    .build(),
            ),
        )
        .with(CI, gate(1))
}

/// A world where r1 (v2) is fully ready to start but v3 was adopted meanwhile.
fn baseline_moved() -> World {
    planned().with(OWNER, adopt(3))
}

/// A world where r1 was proposed with no stable version and is otherwise ready to start.
fn ready_without_stable() -> World {
    published(2)
        .with(AUTHOR, propose(2))
        .with(PRODUCT, approve(1, Product))
        .with(TECH, approve(1, Technical))
        .with(CI, attach(1, bundle(&vid(2), &vid(1))))
        .with(CI, gate(1))
        .with(OPS, plan_rollout(1, standard_plan()))
}

#[rustfmt::skip]
fn rejection_cases() -> Vec<Case> {
    let (s1, s3) = (short(1), short(3));
    let (v1, v2, v3, v9) = (full(1), full(2), full(3), full(9));
    let mut duplicate_stage_plan = standard_plan();
    duplicate_stage_plan.stages.insert(1, duplicate_stage_plan.stages[0].clone());
    let mut partial_last_stage_plan = standard_plan();
    partial_last_stage_plan.stages.pop();
    let mut blank_criteria = standard_plan();
    blank_criteria.rollback.as_mut().unwrap().criteria = "   ".into();
    vec![
        // prompt
        case(World::new(), AUTHOR, publish(1), Rule::UnknownPrompt, "unknown-prompt", &[PROMPT, "not registered"]),
        case(World::new(), OWNER, adopt(1), Rule::UnknownPrompt, "unknown-prompt", &[PROMPT]),
        case(registered(), OWNER, Command::RegisterPrompt { owner: "other-team".into() }, Rule::PromptAlreadyRegistered, "prompt-already-registered", &[PROMPT, OWNER]),
        case(World::new(), OWNER, Command::RegisterPrompt { owner: "  ".into() }, Rule::ReasonRequired, "reason-required", &["owner"]),
        // versions
        case(adopted(), OWNER, adopt(9), Rule::UnknownVersion, "unknown-version", &[PROMPT, &v9]),
        case(adopted(), AUTHOR, propose(9), Rule::UnknownVersion, "unknown-version", &[&v9]),
        case(proposed(), AUTHOR, revise(1, 9), Rule::UnknownVersion, "unknown-version", &[&v9]),
        case(adopted(), OWNER, Command::AdoptVersion { version: vid(2), reason: " ".into() }, Rule::ReasonRequired, "reason-required", &["adopting"]),
        case(rolling(), OWNER, adopt(3), Rule::OneActiveRollout, "one-active-rollout", &[R1]),
        // proposals and reviews
        case(adopted(), AUTHOR, Command::ProposeChange { candidate: vid(2), rationale: "".into(), expected_changes: vec![] }, Rule::ReasonRequired, "reason-required", &["rationale"]),
        case(adopted(), PRODUCT, approve(9, Product), Rule::UnknownRelease, "unknown-release", &["support-triage-r9"]),
        case(adopted(), PRODUCT, Command::SubmitReview { release: ReleaseId::parse("other-prompt-r1").unwrap(), layer: Product, verdict: ReviewVerdict::Approve, note: None }, Rule::UnknownRelease, "unknown-release", &["other-prompt-r1"]),
        case(proposed(), AUTHOR, approve(1, Product), Rule::AuthorCannotReview, "author-cannot-review", &[AUTHOR, R1]),
        case(proposed(), AUTHOR, request_changes(1, Technical), Rule::AuthorCannotReview, "author-cannot-review", &[AUTHOR, R1]),
        case(proposed().with(PRODUCT, approve(1, Product)), PRODUCT, approve(1, Technical), Rule::ReviewersMustDiffer, "reviewers-must-differ", &[PRODUCT, "product", "technical", R1]),
        case(proposed().with(TECH, request_changes(1, Technical)), TECH, approve(1, Product), Rule::ReviewersMustDiffer, "reviewers-must-differ", &[TECH, "technical", "product"]),
        case(proposed().with(AUTHOR, withdraw(1)), PRODUCT, approve(1, Product), Rule::ReleaseNotOpen, "release-not-open", &[R1, "withdrawn"]),
        case(rolling(), AUTHOR, revise(1, 3), Rule::ReleaseNotOpen, "release-not-open", &[R1, "rolling_out"]),
        case(completed(), CI, attach(1, bundle(&vid(2), &vid(1))), Rule::ReleaseNotOpen, "release-not-open", &[R1, "completed"]),
        case(rolling(), AUTHOR, withdraw(1), Rule::ReleaseNotOpen, "release-not-open", &[R1]),
        case(proposed(), AUTHOR, revise(1, 2), Rule::CandidateUnchanged, "candidate-unchanged", &[&v2, R1]),
        // evidence
        case(proposed(), CI, attach(1, bundle(&vid(3), &vid(1))), Rule::BundleVersionsMismatch, "bundle-versions-mismatch", &[&v3, &v2, R1]),
        case(proposed(), CI, attach(1, bundle(&vid(2), &vid(3))), Rule::BundleVersionsMismatch, "bundle-versions-mismatch", &[&v3, &v1, "baseline"]),
        case(approved(), LEAD, accept_tradeoff(1), Rule::TradeoffNeedsEvalBundle, "tradeoff-needs-eval-bundle", &[R1, "eval bundle"]),
        case(evaluated(), AUTHOR, accept_tradeoff(1), Rule::AuthorCannotAcceptTradeoff, "author-cannot-accept-tradeoff", &[AUTHOR, R1]),
        case(evaluated(), LEAD, Command::AcceptTradeoff { release: rid(1), reason: "\t".into() }, Rule::ReasonRequired, "reason-required", &["trade-off"]),
        // gate
        case(proposed().with(CI, attach(1, bundle(&vid(2), &vid(1)))), CI, gate(1), Rule::GateNeedsApprovals, "gate-needs-approvals", &[R1, "product", &short(2)]),
        case(proposed().with(PRODUCT, approve(1, Product)), CI, gate(1), Rule::GateNeedsApprovals, "gate-needs-approvals", &[R1, "technical"]),
        case(evaluated().with(TECH, request_changes(1, Technical)), CI, gate(1), Rule::ChangesRequested, "changes-requested", &[TECH, "technical", R1]),
        case(evaluated().with(LEAD, request_changes(1, Product)), CI, gate(1), Rule::ChangesRequested, "changes-requested", &[LEAD, "product"]),
        case(approved(), CI, gate(1), Rule::GateNeedsEvalBundle, "gate-needs-eval-bundle", &[R1, "attach-eval"]),
        case(gate_passed(), CI, gate(1), Rule::GateUnchangedEvidence, "gate-unchanged-evidence", &[R1, "passed"]),
        case(gate_failed_on_cost(), CI, gate(1), Rule::GateUnchangedEvidence, "gate-unchanged-evidence", &[R1, "failed"]),
        // plan
        case(gate_passed(), OPS, plan_rollout(1, plan_without_rollback()), Rule::RollbackCriteriaRequired, "rollback-criteria-required", &["[rollback] criteria"]),
        case(gate_passed(), OPS, plan_rollout(1, blank_criteria), Rule::RollbackCriteriaRequired, "rollback-criteria-required", &["rollback"]),
        case(rolling(), OPS, plan_rollout(1, standard_plan()), Rule::PlanLocked, "plan-locked", &[R1, "rolling_out"]),
        case(proposed().with(AUTHOR, withdraw(1)), OPS, plan_rollout(1, standard_plan()), Rule::PlanLocked, "plan-locked", &[R1, "withdrawn"]),
        case(adopted(), OPS, plan_rollout(4, standard_plan()), Rule::UnknownRelease, "unknown-release", &["support-triage-r4"]),
        // start
        case(evaluated().with(OPS, plan_rollout(1, standard_plan())), OPS, start(1), Rule::RolloutNeedsPassedGate, "rollout-needs-passed-gate", &[R1, "passed gate"]),
        case(gate_failed_on_cost().with(OPS, plan_rollout(1, standard_plan())), OPS, start(1), Rule::RolloutNeedsPassedGate, "rollout-needs-passed-gate", &[R1]),
        case(planned().with(CI, attach(1, BundleBuilder::new(&vid(2), &vid(1)).suite("nightly").build())), OPS, start(1), Rule::RolloutNeedsPassedGate, "rollout-needs-passed-gate", &[R1]),
        case(planned().with(TECH, request_changes(1, Technical)), OPS, start(1), Rule::ChangesRequested, "changes-requested", &[R1, "technical"]),
        case(gate_passed(), OPS, start(1), Rule::RolloutNeedsPlan, "rollout-needs-plan", &[R1, "rollout plan"]),
        case(ready_without_stable(), OPS, start(1), Rule::NoStableVersion, "no-stable-version", &[PROMPT, "stable", "adopt"]),
        case(baseline_moved(), OPS, start(1), Rule::BaselineMoved, "baseline-moved", &[R1, &s1, &s3]),
        case(rolling(), OPS, start(1), Rule::OneActiveRollout, "one-active-rollout", &[R1, "rolling_out"]),
        case(completed(), OPS, start(1), Rule::ReleaseNotOpen, "release-not-open", &[R1, "completed"]),
        // rolling out
        case(gate_passed(), OPS, advance(1, "internal"), Rule::NotRollingOut, "not-rolling-out", &[R1, "proposed"]),
        case(rolling().with(OPS, freeze(1)), OPS, complete(1), Rule::NotRollingOut, "not-rolling-out", &[R1, "frozen"]),
        case(rolling().with(OPS, freeze(1)), OPS, pause(1), Rule::NotRollingOut, "not-rolling-out", &[R1, "frozen"]),
        case(gate_passed(), OPS, resume(1), Rule::NotRollingOut, "not-rolling-out", &[R1, "proposed"]),
        case(rolling().with(OPS, pause(1)), OPS, advance(1, "internal"), Rule::RolloutPaused, "rollout-paused", &[R1, "paused", "resume"]),
        case(at_last_stage().with(OPS, pause(1)), OPS, complete(1), Rule::RolloutPaused, "rollout-paused", &[R1, "paused"]),
        case(at_last_stage(), OPS, advance(1, "all"), Rule::NoNextStage, "no-next-stage", &["`all`", R1, "rollout complete"]),
        case(rolling(), OPS, complete(1), Rule::NotAtLastStage, "not-at-last-stage", &[R1, "`internal`", "`all`"]),
        case(baking(), OPS, advance(1, "internal"), Rule::StageNotReady, "stage-not-ready", &[R1, "`internal`", "baked", "--force"]),
        case(baking().with_tick(3_600_000), OPS, advance(1, "internal"), Rule::StageNotReady, "stage-not-ready", &["no canary judgement", "200 samples"]),
        case(baking().with_tick(3_600_000), OPS, advance_with(1, "internal", 250, 150, false), Rule::StageNotReady, "stage-not-ready", &["250 candidate", "150 control", "200"]),
        case(baking().with_tick(3_600_000), OPS, advance_with(1, "internal", 900, 900, true), Rule::StageNotReady, "stage-not-ready", &["breach"]),
        case(adopted(), OPS, Command::CloseRegressionCase { case_id: "support-triage-rc-000000000000".into(), reason: "fixed".into() }, Rule::UnknownRegressionCase, "unknown-regression-case", &["support-triage-rc-000000000000"]),
        case(planned().with_fleet_windows(SATURDAYS), OPS, start(1), Rule::OutsideReleaseWindow, "outside-release-window", &["start a rollout", "global windows", "2026-11-28T00:00:00.000Z", "in 3d14h", "--force --reason"]),
        case(rolling(), OPS, advance(1, "canary"), Rule::StageMoved, "stage-moved", &[R1, "`internal`", "`canary`"]),
        case(rolling(), OPS, Command::AdvanceStage { release: rid(1), from_stage: "internal".into(), force_reason: Some(" ".into()), readiness: None }, Rule::ReasonRequired, "reason-required", &["forced advance"]),
        case(rolling(), OPS, Command::PauseRollout { release: rid(1), reason: "".into() }, Rule::ReasonRequired, "reason-required", &["pausing"]),
        case(rolling(), OPS, Command::FreezeRollout { release: rid(1), reason: "".into(), evidence: None }, Rule::ReasonRequired, "reason-required", &["freezing"]),
        // rollback and withdrawal
        case(adopted(), OPS, rollback(), Rule::NothingToRollBack, "nothing-to-roll-back", &[PROMPT]),
        case(proposed(), OPS, rollback(), Rule::NothingToRollBack, "nothing-to-roll-back", &[PROMPT]),
        case(rolling().with(OPS, rollback()), OPS, rollback(), Rule::NothingToRollBack, "nothing-to-roll-back", &[PROMPT]),
        case(rolling(), OPS, Command::Rollback { release: None, reason: "  ".into() }, Rule::ReasonRequired, "reason-required", &["rollback"]),
        case(proposed(), OPS, rollback_of(1), Rule::NothingToRollBack, "nothing-to-roll-back", &[R1, "proposed"]),
        case(adopted(), OPS, rollback_of(7), Rule::UnknownRelease, "unknown-release", &["support-triage-r7"]),
        // proposals of the stable version, approvals missing at start, invalid inputs
        case(adopted(), AUTHOR, propose(1), Rule::CandidateUnchanged, "candidate-unchanged", &[&v1, "stable"]),
        case(gate_passed().with(AUTHOR, revise(1, 3)).with(AUTHOR, revise(1, 2)).with(OPS, plan_rollout(1, standard_plan())), OPS, start(1), Rule::GateNeedsApprovals, "gate-needs-approvals", &[R1, "product"]),
        case(gate_passed(), OPS, plan_rollout(1, duplicate_stage_plan), Rule::InvalidInput, "invalid-input", &["rollout plan", "appears twice"]),
        case(gate_passed(), OPS, plan_rollout(1, partial_last_stage_plan), Rule::InvalidInput, "invalid-input", &["last stage", "all traffic"]),
        case(proposed(), AUTHOR, Command::WithdrawProposal { release: rid(1), reason: "".into() }, Rule::ReasonRequired, "reason-required", &["withdrawing"]),
        // roles
        case(proposed().with_roles("viewer", &[Role::Auditor]), "viewer", approve(1, Product), Rule::NotPermitted, "not-permitted", &["viewer", "may not review", "reviewer", "auditor"]),
        case(proposed().with_roles(PRODUCT, &[Role::Reviewer]), PRODUCT, gate(1), Rule::NotPermitted, "not-permitted", &[PRODUCT, "ci or worker"]),
        case(rolling().with_roles(OPS, &[Role::Oncall]), OPS, advance(1, "internal"), Rule::NotPermitted, "not-permitted", &["release-manager or worker"]),
        case(World::new().with_roles(AUTHOR, &[Role::Reviewer]), AUTHOR, Command::RegisterPrompt { owner: "team".into() }, Rule::NotPermitted, "not-permitted", &["author or admin"]),
    ]
}

#[test]
fn every_rule_has_a_rejection() {
    let cases = rejection_cases();
    for c in &cases {
        let mentions: Vec<&str> = c.mentions.iter().map(String::as_str).collect();
        assert_rejected(
            &c.world,
            c.who,
            c.command.clone(),
            c.rule,
            c.code,
            &mentions,
        );
    }
    let covered: Vec<Rule> = cases.iter().map(|c| c.rule).collect();
    let missing: Vec<&str> = ALL_RULES
        .iter()
        .filter(|r| !covered.contains(r) && !NOT_PROMPT_COMMAND_RULES.contains(r))
        .map(|r| r.code())
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a rejection case: {missing:?}"
    );
}

#[test]
fn rule_codes_are_unique_kebab_case() {
    let mut codes: Vec<&str> = ALL_RULES.iter().map(|r| r.code()).collect();
    for code in &codes {
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{code}"
        );
    }
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), ALL_RULES.len());
}

#[test]
fn only_stage_moved_is_a_conflict() {
    for rule in ALL_RULES {
        assert_eq!(rule.is_conflict(), rule == Rule::StageMoved, "{rule}");
    }
    let r = assert_rejected(
        &rolling(),
        OPS,
        advance(1, "half"),
        Rule::StageMoved,
        "stage-moved",
        &["internal", "half"],
    );
    assert!(r.rule.is_conflict());
}

#[test]
fn decide_never_changes_the_state() {
    // `decide` takes `&PromptState`; this checks the accepted path too: deciding without
    // evolving leaves an equal state behind.
    let w = evaluated();
    let before = w.state.clone();
    let events = w.decide(CI, &gate(1)).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(w.state, before);
}

// ---------------------------------------------------------------------------------------------
// Reviews
// ---------------------------------------------------------------------------------------------

#[test]
fn author_cannot_review_either_layer() {
    for layer in [Product, Technical] {
        for verdict in [ReviewVerdict::Approve, ReviewVerdict::RequestChanges] {
            assert_rejected(
                &proposed(),
                AUTHOR,
                review(1, layer, verdict),
                Rule::AuthorCannotReview,
                "author-cannot-review",
                &[AUTHOR],
            );
        }
    }
}

#[test]
fn the_two_layers_need_two_different_reviewers() {
    let w = proposed().with(PRODUCT, approve(1, Product));
    assert_rejected(
        &w,
        PRODUCT,
        approve(1, Technical),
        Rule::ReviewersMustDiffer,
        "reviewers-must-differ",
        &[PRODUCT],
    );
    let w = w.with(TECH, approve(1, Technical));
    let r = w.release(1);
    assert_eq!(r.reviews[&Product].reviewer.as_str(), PRODUCT);
    assert_eq!(r.reviews[&Technical].reviewer.as_str(), TECH);
    // The product reviewer may change the product verdict (same layer), not take the other.
    let w = w.with(PRODUCT, request_changes(1, Product));
    assert_eq!(
        w.release(1).reviews[&Product].verdict,
        ReviewVerdict::RequestChanges
    );
}

#[test]
fn request_changes_blocks_the_gate_until_a_new_approval_of_that_layer() {
    let blocked = evaluated().with(TECH, request_changes(1, Technical));
    assert_rejected(
        &blocked,
        CI,
        gate(1),
        Rule::ChangesRequested,
        "changes-requested",
        &[TECH, "technical"],
    );
    // A product approval does not lift a technical objection.
    let w = blocked.clone().with(LEAD, approve(1, Product));
    assert_rejected(
        &w,
        CI,
        gate(1),
        Rule::ChangesRequested,
        "changes-requested",
        &["technical"],
    );
    // The same reviewer approving again lifts it…
    let mut w = blocked.clone().with(TECH, approve(1, Technical));
    assert_eq!(w.run(CI, gate(1)).len(), 1);
    // …as does another technical reviewer's approval.
    let mut w = blocked.with(LEAD, approve(1, Technical));
    let events = w.run(CI, gate(1));
    assert!(matches!(&events[..], [Event::GateDecided(g)] if g.passed));
}

#[test]
fn review_records_the_candidate_it_reviewed() {
    let mut w = proposed();
    let events = w.run(
        PRODUCT,
        Command::SubmitReview {
            release: rid(1),
            layer: Product,
            verdict: ReviewVerdict::Approve,
            note: Some("tone is right".into()),
        },
    );
    let [Event::ReviewSubmitted(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(e.candidate, vid(2));
    assert_eq!(e.reviewer.as_str(), PRODUCT);
    assert_eq!(
        w.release(1).reviews[&Product].note.as_deref(),
        Some("tone is right")
    );
    assert_eq!(
        w.release(1).reviews[&Product].at,
        w.log.last().unwrap().occurred_at
    );
}

#[test]
fn a_new_candidate_resets_both_reviews() {
    let mut w = approved();
    assert_eq!(w.release(1).reviews.len(), 2);
    let events = w.run(AUTHOR, revise(1, 3));
    let [Event::CandidateRevised(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (e.previous_candidate.clone(), e.candidate.clone()),
        (vid(2), vid(3))
    );
    assert_eq!(w.release(1).candidate, vid(3));
    assert!(w.release(1).reviews.is_empty());
    w.run(CI, attach(1, bundle(&vid(3), &vid(1))));
    assert_rejected(
        &w,
        CI,
        gate(1),
        Rule::GateNeedsApprovals,
        "gate-needs-approvals",
        &["product", &short(3)],
    );
    // The author of the revision is still the author.
    assert_rejected(
        &w,
        AUTHOR,
        approve(1, Product),
        Rule::AuthorCannotReview,
        "author-cannot-review",
        &[AUTHOR],
    );
}

#[test]
fn a_bundle_of_the_previous_candidate_cannot_pass_the_gate_of_a_new_one() {
    // After a revision the attached bundle evaluated the old candidate: the gate must not
    // decide on it.
    let w = gate_passed()
        .with(AUTHOR, revise(1, 3))
        .with(PRODUCT, approve(1, Product))
        .with(TECH, approve(1, Technical));
    assert_rejected(
        &w,
        CI,
        gate(1),
        Rule::GateNeedsEvalBundle,
        "gate-needs-eval-bundle",
        &[R1, &short(3)],
    );
    let w = w.with(OPS, plan_rollout(1, standard_plan()));
    assert_rejected(
        &w,
        OPS,
        start(1),
        Rule::RolloutNeedsPassedGate,
        "rollout-needs-passed-gate",
        &[R1],
    );
    // With a bundle of the new candidate the gate decides again (new evidence).
    let mut w = w.with(CI, attach(1, bundle(&vid(3), &vid(1))));
    let events = w.run(CI, gate(1));
    let [Event::GateDecided(g)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(g.passed);
    assert_eq!(g.evidence.candidate, vid(3));
    w.run(OPS, start(1));
    assert_eq!(w.status(1), "rolling_out");
}

// ---------------------------------------------------------------------------------------------
// Gate
// ---------------------------------------------------------------------------------------------

#[test]
fn gate_needs_both_approvals_and_an_eval_bundle() {
    // Table: (setup, rule). Each world lacks exactly one ingredient.
    #[rustfmt::skip]
    let table: Vec<(World, Rule)> = vec![
        (proposed().with(CI, attach(1, bundle(&vid(2), &vid(1)))), Rule::GateNeedsApprovals),
        (proposed().with(PRODUCT, approve(1, Product)).with(CI, attach(1, bundle(&vid(2), &vid(1)))), Rule::GateNeedsApprovals),
        (proposed().with(TECH, approve(1, Technical)).with(CI, attach(1, bundle(&vid(2), &vid(1)))), Rule::GateNeedsApprovals),
        (approved(), Rule::GateNeedsEvalBundle),
    ];
    for (w, rule) in table {
        assert_rejected(&w, CI, gate(1), rule, rule.code(), &[R1]);
    }
    let mut w = evaluated();
    let events = w.run(CI, gate(1));
    assert!(matches!(&events[..], [Event::GateDecided(g)] if g.passed));
}

#[test]
fn gate_decision_records_evidence_policy_checks_and_regressions() {
    let mut b = bundle(&vid(2), &vid(1));
    b.regressions.push(pledger_core::bundle::Regression {
        case: "T-17".into(),
        segment: "general".into(),
        detail: "routed to sales".into(),
    });
    let mut w = approved().with(CI, attach(1, b.clone()));
    let events = w.run(CI, gate(1));
    let [Event::GateDecided(g)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(g.evidence.candidate, vid(2));
    assert_eq!(
        g.evidence.bundle_digest,
        pledger_core::artifact::json_digest(&b)
    );
    assert!(!g.evidence.tradeoff_accepted);
    assert_eq!(
        g.evidence.policy_digest,
        pledger_core::artifact::json_digest(&GatePolicy::default())
    );
    assert_eq!(g.policy, GatePolicy::default());
    assert_eq!(g.regressions, b.regressions);
    assert_eq!(g.checks.len(), 1 + 8 + 3);
    assert!(w.release(1).current_gate(&w.state.policy_digest).is_some());
}

#[test]
fn failed_gate_reruns_only_on_new_evidence() {
    let failed = gate_failed_on_cost();
    let g = failed.release(1).gate.clone().unwrap();
    assert!(!g.passed);
    let cost = g
        .checks
        .iter()
        .find(|c| c.name == "cost_per_request_usd")
        .unwrap();
    assert!(!cost.passed);
    // Unchanged evidence: refused.
    assert_rejected(
        &failed,
        CI,
        gate(1),
        Rule::GateUnchangedEvidence,
        "gate-unchanged-evidence",
        &["failed"],
    );
    // Re-attaching the identical bundle is a no-op and does not make new evidence.
    let w = failed.clone().with(
        CI,
        attach(
            1,
            BundleBuilder::new(&vid(2), &vid(1))
                .cost(0.012, 0.010)
                .build(),
        ),
    );
    assert_rejected(
        &w,
        CI,
        gate(1),
        Rule::GateUnchangedEvidence,
        "gate-unchanged-evidence",
        &[],
    );

    // Each kind of new evidence allows a new decision: (what changed, expected pass).
    let table: Vec<(&str, World, bool)> = vec![
        (
            "new bundle",
            failed.clone().with(CI, attach(1, bundle(&vid(2), &vid(1)))),
            true,
        ),
        (
            "new bundle still over",
            failed.clone().with(
                CI,
                attach(
                    1,
                    BundleBuilder::new(&vid(2), &vid(1))
                        .cost(0.013, 0.010)
                        .build(),
                ),
            ),
            false,
        ),
        (
            "trade-off accepted",
            failed.clone().with(LEAD, accept_tradeoff(1)),
            true,
        ),
        (
            "new candidate",
            failed
                .clone()
                .with(AUTHOR, revise(1, 3))
                .with(PRODUCT, approve(1, Product))
                .with(TECH, approve(1, Technical))
                .with(CI, attach(1, bundle(&vid(3), &vid(1)))),
            true,
        ),
        (
            "new policy",
            failed.clone().with(
                OWNER,
                Command::SetGatePolicy {
                    policy: GatePolicy {
                        max_cost_increase: 0.25,
                        ..GatePolicy::default()
                    },
                },
            ),
            true,
        ),
    ];
    for (what, mut w, passes) in table {
        let events = w
            .try_run(CI, gate(1))
            .unwrap_or_else(|r| panic!("{what}: gate refused: {r}"));
        let [Event::GateDecided(g)] = &events[..] else {
            panic!("{what}: {events:?}")
        };
        assert_eq!(g.passed, passes, "{what}");
        // …and once decided, that evidence is used up.
        assert_rejected(
            &w,
            CI,
            gate(1),
            Rule::GateUnchangedEvidence,
            "gate-unchanged-evidence",
            &[],
        );
    }
}

#[test]
fn a_new_bundle_or_policy_invalidates_a_passed_gate() {
    #[rustfmt::skip]
    let table: Vec<(&str, Command)> = vec![
        ("new bundle", attach(1, BundleBuilder::new(&vid(2), &vid(1)).suite("nightly").build())),
        ("new policy", Command::SetGatePolicy { policy: GatePolicy { max_pass_rate_drop: 0.01, ..GatePolicy::default() } }),
    ];
    for (what, command) in table {
        let w = planned().with(OWNER, command);
        assert!(
            w.release(1).current_gate(&w.state.policy_digest).is_none(),
            "{what}"
        );
        assert_rejected(
            &w,
            OPS,
            start(1),
            Rule::RolloutNeedsPassedGate,
            "rollout-needs-passed-gate",
            &[R1],
        );
    }
}

#[test]
fn tradeoff_is_tied_to_its_bundle() {
    let w = gate_failed_on_cost().with(LEAD, accept_tradeoff(1));
    let t = w.release(1).tradeoff.clone().unwrap();
    assert_eq!(t.accepted_by.as_str(), LEAD);
    assert_eq!(
        t.bundle_digest,
        w.release(1).bundle.as_ref().unwrap().digest
    );
    // Accepting again for the same bundle is a no-op, even by someone else.
    assert_noop(&w, PRODUCT, accept_tradeoff(1));
    // A new bundle over the limit is not covered by the old acceptance.
    let mut w = w.with(
        CI,
        attach(
            1,
            BundleBuilder::new(&vid(2), &vid(1))
                .cost(0.013, 0.010)
                .build(),
        ),
    );
    let events = w.run(CI, gate(1));
    let [Event::GateDecided(g)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(!g.passed);
    assert!(!g.evidence.tradeoff_accepted);
}

#[test]
fn tradeoff_never_waives_quality() {
    let mut w = approved()
        .with(
            CI,
            attach(
                1,
                BundleBuilder::new(&vid(2), &vid(1))
                    .segment("general", 200, 0.80, 0.90)
                    .cost(0.02, 0.01)
                    .build(),
            ),
        )
        .with(LEAD, accept_tradeoff(1));
    let events = w.run(CI, gate(1));
    let [Event::GateDecided(g)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(!g.passed);
    let by_name = |n: &str| g.checks.iter().find(|c| c.name == n).unwrap().clone();
    assert!(!by_name("segment.general").passed);
    assert!(by_name("cost_per_request_usd").waived_by_tradeoff);
}

// ---------------------------------------------------------------------------------------------
// Plans and rollouts
// ---------------------------------------------------------------------------------------------

#[test]
fn rollout_needs_passed_gate_and_plan_with_rollback_criteria() {
    assert_rejected(
        &gate_passed(),
        OPS,
        plan_rollout(1, plan_without_rollback()),
        Rule::RollbackCriteriaRequired,
        "rollback-criteria-required",
        &["[rollback] criteria"],
    );
    assert_rejected(
        &gate_passed(),
        OPS,
        start(1),
        Rule::RolloutNeedsPlan,
        "rollout-needs-plan",
        &[R1],
    );
    // A plan may be attached before the gate, and changed while the release is open.
    let w = evaluated().with(OPS, plan_rollout(1, plan_with(vec![stage("all", 100.0)])));
    assert_rejected(
        &w,
        OPS,
        start(1),
        Rule::RolloutNeedsPassedGate,
        "rollout-needs-passed-gate",
        &[R1],
    );
    let mut w = w
        .with(OPS, plan_rollout(1, standard_plan()))
        .with(CI, gate(1));
    assert_eq!(w.release(1).plan.as_ref().unwrap(), &standard_plan());
    let events = w.run(OPS, start(1));
    let [Event::RolloutStarted(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(e.candidate, vid(2));
    assert_eq!(e.baseline, vid(1));
    assert_eq!(e.stage, "internal");
    assert_eq!(e.bucketing_salt, SALT);
    assert_eq!(w.release(1).bucketing_salt.as_deref(), Some(SALT));
    assert!(matches!(
        w.release(1).status,
        ReleaseStatus::RollingOut {
            stage: 0,
            paused: false,
            ..
        }
    ));
}

#[test]
fn a_plan_without_stages_is_refused_by_the_decider_too() {
    // The edges validate plan files; the decider checks again, so a plan that skipped
    // validation can never be recorded (and a start can never index an empty plan).
    assert_rejected(
        &gate_passed(),
        OPS,
        plan_rollout(1, plan_with(vec![])),
        Rule::InvalidInput,
        "invalid-input",
        &["rollout plan", "at least one"],
    );
}

#[test]
fn stable_version_is_set_by_adopt() {
    let mut w = published(3);
    assert_eq!(w.state.stable, None);
    let events = w.run(OWNER, adopt(1));
    let [Event::VersionAdopted(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(e.previous_stable, None);
    assert_eq!(w.state.stable, Some(vid(1)));
    assert_noop(&w, OWNER, adopt(1));
    let events = w.run(OWNER, adopt(3));
    let [Event::VersionAdopted(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(e.previous_stable, Some(vid(1)));
    assert_eq!(w.state.stable, Some(vid(3)));
}

#[test]
fn stable_version_is_set_by_completing_a_release() {
    let w = at_last_stage();
    assert_eq!(
        w.state.stable,
        Some(vid(1)),
        "stable does not move while rolling out"
    );
    let mut w = w;
    let events = w.run(OPS, complete(1));
    let [Event::ReleaseCompleted(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (e.version.clone(), e.previous_stable.clone()),
        (vid(2), vid(1))
    );
    assert_eq!(w.state.stable, Some(vid(2)));
    assert_eq!(w.status(1), "completed");
    assert!(w.state.active_rollout().is_none());
}

#[test]
fn baseline_is_the_stable_version_at_proposal() {
    #[rustfmt::skip]
    let table: Vec<(World, Option<u32>)> = vec![
        (published(3).with(AUTHOR, propose(2)), None),
        (adopted().with(AUTHOR, propose(2)), Some(1)),
        (published(3).with(OWNER, adopt(3)).with(AUTHOR, propose(2)), Some(3)),
    ];
    for (w, baseline) in table {
        assert_eq!(w.release(1).baseline, baseline.map(vid));
        let Event::ChangeProposed(e) = &w.log.last().unwrap().event else {
            panic!()
        };
        assert_eq!(e.baseline, baseline.map(vid));
        assert_eq!(e.author.as_str(), AUTHOR);
    }
    // A later adopt does not move an open release's baseline…
    let w = proposed().with(OWNER, adopt(3));
    assert_eq!(w.release(1).baseline, Some(vid(1)));
    // …and the bundle must compare against the release's baseline, not the new stable.
    assert_rejected(
        &w,
        CI,
        attach(1, bundle(&vid(2), &vid(3))),
        Rule::BundleVersionsMismatch,
        "bundle-versions-mismatch",
        &[],
    );
}

#[test]
fn no_stable_version_cannot_start_a_rollout() {
    let w = ready_without_stable();
    assert_eq!(w.state.stable, None);
    assert!(
        w.release(1)
            .current_gate(&w.state.policy_digest)
            .unwrap()
            .passed
    );
    assert_rejected(
        &w,
        OPS,
        start(1),
        Rule::NoStableVersion,
        "no-stable-version",
        &[PROMPT],
    );
    // Adopting a stable version later does not help: the release had no baseline.
    let w = w.with(OWNER, adopt(1));
    assert_rejected(
        &w,
        OPS,
        start(1),
        Rule::BaselineMoved,
        "baseline-moved",
        &["none", &short(1)],
    );
}

#[test]
fn baseline_moved_refuses_the_start() {
    assert_rejected(
        &baseline_moved(),
        OPS,
        start(1),
        Rule::BaselineMoved,
        "baseline-moved",
        &[R1, &short(1), &short(3)],
    );
    // Moving back to the original baseline allows it again.
    let mut w = baseline_moved().with(OWNER, adopt(1));
    w.run(OPS, start(1));
    assert_eq!(w.status(1), "rolling_out");
}

#[test]
fn one_active_rollout_per_prompt() {
    // r2 is fully ready while r1 is rolling out, paused or frozen.
    let ready_r2 = |w: World| {
        w.with(AUTHOR, propose(3))
            .with(PRODUCT, approve(2, Product))
            .with(TECH, approve(2, Technical))
            .with(CI, attach(2, bundle(&vid(3), &vid(1))))
            .with(CI, gate(2))
            .with(OPS, plan_rollout(2, standard_plan()))
    };
    for (what, w) in [
        ("rolling out", rolling()),
        ("paused", rolling().with(OPS, pause(1))),
        ("frozen", rolling().with(OPS, freeze(1))),
    ] {
        let w = ready_r2(w);
        let r = assert_rejected(
            &w,
            OPS,
            start(2),
            Rule::OneActiveRollout,
            "one-active-rollout",
            &[R1],
        );
        assert!(r.message.contains("support-triage-r1"), "{what}: {r}");
        assert_rejected(
            &w,
            OWNER,
            adopt(3),
            Rule::OneActiveRollout,
            "one-active-rollout",
            &[R1],
        );
        // Once r1 is rolled back, r2 may start.
        let mut w = w.with(OPS, rollback());
        w.run(OPS, start(2));
        assert_eq!(w.status(2), "rolling_out", "{what}");
    }
}

#[test]
fn advancing_walks_the_stages_in_order() {
    let mut w = rolling();
    for (i, pair) in STAGES.windows(2).enumerate() {
        w.tick(3_600_000);
        let events = w.run(OPS, advance(1, pair[0]));
        let [Event::StageAdvanced(e)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (e.from_stage.as_str(), e.to_stage.as_str()),
            (pair[0], pair[1])
        );
        assert!(!e.forced);
        let ReleaseStatus::RollingOut {
            stage,
            stage_entered_at,
            paused,
        } = w.release(1).status.clone()
        else {
            panic!()
        };
        assert_eq!(stage, i + 1);
        assert_eq!(stage_entered_at, w.log.last().unwrap().occurred_at);
        assert!(!paused);
    }
    assert_rejected(
        &w,
        OPS,
        advance(1, "all"),
        Rule::NoNextStage,
        "no-next-stage",
        &["all"],
    );
    assert_rejected(
        &w,
        OPS,
        advance(1, "half"),
        Rule::StageMoved,
        "stage-moved",
        &["`all`", "`half`"],
    );
}

#[test]
fn forced_advance_records_its_reason() {
    let mut w = rolling();
    let events = w.run(
        OPS,
        Command::AdvanceStage {
            release: rid(1),
            from_stage: "internal".into(),
            force_reason: Some("  guardrail noise from one tenant ".into()),
            readiness: None,
        },
    );
    let [Event::StageAdvanced(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(e.forced);
    assert_eq!(e.reason.as_deref(), Some("guardrail noise from one tenant"));
}

#[test]
fn pause_keeps_the_stage_clock_and_freeze_resume_restarts_it() {
    let mut w = rolling();
    let entered = w.release(1).status.clone();
    let ReleaseStatus::RollingOut {
        stage_entered_at: t_start,
        ..
    } = entered
    else {
        panic!()
    };
    w.run(OPS, pause(1));
    assert_eq!(w.status(1), "paused");
    assert_noop(&w, OPS, pause(1));
    w.run(OPS, resume(1));
    assert!(
        matches!(w.release(1).status, ReleaseStatus::RollingOut { stage_entered_at, paused: false, .. } if stage_entered_at == t_start)
    );

    w.run(OPS, freeze(1));
    assert_eq!(w.status(1), "frozen");
    assert_noop(&w, OPS, freeze(1));
    assert!(
        w.state.active_rollout().is_some(),
        "a frozen rollout holds the slot"
    );
    w.tick(86_400_000);
    w.run(OPS, resume(1));
    let resumed_at = w.log.last().unwrap().occurred_at;
    assert!(resumed_at > t_start);
    assert!(
        matches!(w.release(1).status, ReleaseStatus::RollingOut { stage: 0, stage_entered_at, paused: false } if stage_entered_at == resumed_at)
    );
}

#[test]
fn a_paused_rollout_can_be_frozen() {
    let w = rolling().with(OPS, pause(1)).with(OPS, freeze(1));
    assert_eq!(w.status(1), "frozen");
}

#[test]
fn rollback_from_rolling_out_frozen_paused_and_completed_returns_to_previous_stable() {
    // (state before rollback, stable before rollback)
    let table: Vec<(&str, World, u32)> = vec![
        ("rolling out", rolling(), 1),
        (
            "rolling out at a later stage",
            rolling().with(OPS, advance(1, "internal")),
            1,
        ),
        ("paused", rolling().with(OPS, pause(1)), 1),
        ("frozen", rolling().with(OPS, freeze(1)), 1),
        ("completed", completed(), 2),
    ];
    for (what, mut w, stable_before) in table {
        assert_eq!(w.state.stable, Some(vid(stable_before)), "{what}");
        let events = w.run(OPS, rollback());
        let [Event::RolledBack(e)] = &events[..] else {
            panic!("{what}: {events:?}")
        };
        assert_eq!(e.release, rid(1), "{what}");
        assert_eq!(e.from_version, vid(2), "{what}");
        assert_eq!(e.to_version, vid(1), "{what}");
        assert_eq!(e.reason, "escalations up");
        assert_eq!(w.state.stable, Some(vid(1)), "{what}");
        assert_eq!(w.status(1), "rolled_back", "{what}");
        assert!(w.state.active_rollout().is_none(), "{what}");
        assert_rejected(
            &w,
            OPS,
            rollback(),
            Rule::NothingToRollBack,
            "nothing-to-roll-back",
            &[PROMPT],
        );
    }
}

#[test]
fn rollback_of_a_completed_release_is_refused_once_stable_moved_on() {
    let w = completed().with(OWNER, adopt(3));
    assert_rejected(
        &w,
        OPS,
        rollback(),
        Rule::NothingToRollBack,
        "nothing-to-roll-back",
        &[PROMPT],
    );
}

#[test]
fn rollback_targets_the_active_rollout_before_the_last_completed_release() {
    // r1 completed (v1 -> v2); r2 rolls out v3 against v2.
    let w = completed()
        .with(AUTHOR, propose(3))
        .with(PRODUCT, approve(2, Product))
        .with(TECH, approve(2, Technical))
        .with(CI, attach(2, bundle(&vid(3), &vid(2))))
        .with(CI, gate(2))
        .with(OPS, plan_rollout(2, standard_plan()))
        .with(OPS, start(2));
    assert_eq!(w.release(2).baseline, Some(vid(2)));
    let mut w = w;
    let events = w.run(OPS, rollback());
    let [Event::RolledBack(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!((e.release.clone(), e.to_version.clone()), (rid(2), vid(2)));
    assert_eq!(w.state.stable, Some(vid(2)));
    assert_eq!(w.status(1), "completed");
}

#[test]
fn withdrawn_proposals_keep_their_number() {
    let mut w = proposed().with(AUTHOR, withdraw(1));
    assert_eq!(w.status(1), "withdrawn");
    assert_noop(&w, AUTHOR, withdraw(1));
    let events = w.run(AUTHOR, propose(3));
    let [Event::ChangeProposed(e)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(e.release.to_string(), "support-triage-r2");
}

// ---------------------------------------------------------------------------------------------
// Idempotent repeats
// ---------------------------------------------------------------------------------------------

#[test]
fn idempotent_repeats_record_nothing() {
    let mut cosmetic = version(1);
    cosmetic.model.temperature = 0.2; // same value, rebuilt
    #[rustfmt::skip]
    let table: Vec<(&str, World, &str, Command)> = vec![
        ("register with the same owner", registered(), OWNER, register()),
        ("register with the same owner, padded", registered(), OWNER, Command::RegisterPrompt { owner: format!("  {OWNER} ") }),
        ("publish an identical artifact", published(1), AUTHOR, Command::PublishVersion { artifact: cosmetic }),
        ("publish again by someone else", published(1), PRODUCT, publish(1)),
        ("same adopt", adopted(), OWNER, adopt(1)),
        ("same policy", adopted(), OWNER, Command::SetGatePolicy { policy: GatePolicy::default() }),
        ("same product review", approved(), PRODUCT, approve(1, Product)),
        ("same technical review", approved(), TECH, approve(1, Technical)),
        ("same request-changes", proposed().with(TECH, request_changes(1, Technical)), TECH, request_changes(1, Technical)),
        ("identical bundle", evaluated(), CI, attach(1, bundle(&vid(2), &vid(1)))),
        ("same trade-off", evaluated().with(LEAD, accept_tradeoff(1)), LEAD, accept_tradeoff(1)),
        ("same plan", planned(), OPS, plan_rollout(1, standard_plan())),
        ("pause a paused rollout", rolling().with(OPS, pause(1)), OPS, pause(1)),
        ("freeze a frozen rollout", rolling().with(OPS, freeze(1)), OPS, freeze(1)),
        ("withdraw a withdrawn proposal", proposed().with(AUTHOR, withdraw(1)), AUTHOR, withdraw(1)),
        ("resume a rollout someone already resumed", rolling().with(OPS, pause(1)).with(OPS, resume(1)), OPS, resume(1)),
        ("roll back a release someone already rolled back", rolling().with(OPS, rollback_of(1)), OPS, rollback_of(1)),
    ];
    for (what, w, who, command) in table {
        let before = w.log.len();
        assert_noop(&w, who, command);
        assert_eq!(w.log.len(), before, "{what}");
    }
}

#[test]
fn a_changed_verdict_is_not_a_repeat() {
    let mut w = approved();
    let events = w.run(TECH, request_changes(1, Technical));
    assert_eq!(events.len(), 1);
    assert_eq!(
        w.release(1).reviews[&Technical].verdict,
        ReviewVerdict::RequestChanges
    );
}

// ---------------------------------------------------------------------------------------------
// Versions and the ledger
// ---------------------------------------------------------------------------------------------

#[test]
fn publishing_keeps_order_and_first_publisher() {
    let w = published(3).with(PRODUCT, publish(2));
    assert_eq!(w.state.version_order.to_vec(), [vid(1), vid(2), vid(3)]);
    let v2 = &w.state.versions[&vid(2)];
    assert_eq!(v2.published_by.as_str(), AUTHOR);
    assert_eq!(v2.artifact, version(2));
    assert_eq!(
        w.log
            .iter()
            .filter(|e| e.kind() == "prompt.version_published")
            .count(),
        3
    );
}

#[test]
fn versions_resolve_by_full_id_or_unique_prefix() {
    let w = published(3);
    let v2 = vid(2);
    let hex = &v2.as_str()["sha256:".len()..];
    let prefixed = format!("sha256:{}", &hex[..8]);
    for reference in [v2.as_str(), hex, &hex[..12], &hex[..4], prefixed.as_str()] {
        assert_eq!(
            resolve_version(&w.state, reference).unwrap(),
            v2,
            "{reference}"
        );
    }
    let r = resolve_version(&w.state, "ffffffffffff").unwrap_err();
    assert_eq!(r.rule, Rule::UnknownVersion);
    assert!(r.message.contains("ffffffffffff"));
    assert_eq!(
        resolve_version(&w.state, "").unwrap_err().rule,
        Rule::UnknownVersion
    );
    assert_eq!(
        resolve_version(&w.state, "sha256:").unwrap_err().rule,
        Rule::UnknownVersion
    );
    // 40 versions over 16 hex digits: some one-digit prefix is shared, hence ambiguous.
    let many = published(40);
    let hexes: Vec<String> = (1..=40)
        .map(|i| vid(i).as_str()["sha256:".len()..].to_string())
        .collect();
    let (prefix, n) = "0123456789abcdef"
        .chars()
        .map(|c| {
            (
                c.to_string(),
                hexes.iter().filter(|h| h.starts_with(c)).count(),
            )
        })
        .max_by_key(|(_, n)| *n)
        .unwrap();
    assert!(n > 1);
    let r = resolve_version(&many.state, &prefix).unwrap_err();
    assert_eq!(r.rule, Rule::UnknownVersion);
    assert!(r.message.contains(&format!("matches {n} versions")), "{r}");
}

#[test]
fn the_state_replays_from_the_wire() {
    let w = completed().with(OPS, rollback());
    let mut replayed = PromptState::new(prompt());
    for envelope in &w.log {
        let json = serde_json::to_string(envelope).unwrap();
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, envelope);
        evolve(&mut replayed, &back);
    }
    assert_eq!(replayed, w.state);
    assert_eq!(replayed.event_count, w.log.len() as u64);
}

#[test]
fn evolve_counts_but_ignores_events_that_do_not_fit() {
    let mut w = rolling();
    let before = w.state.clone();
    let stray = Event::StageAdvanced(pledger_core::event::StageAdvanced {
        release: rid(1),
        from_stage: "internal".into(),
        to_stage: "no-such-stage".into(),
        forced: false,
        reason: None,
    });
    let unknown_release = Event::RolloutPaused(pledger_core::event::RolloutPaused {
        release: rid(7),
        stage: "x".into(),
        reason: "x".into(),
    });
    for (i, event) in [stray, unknown_release].into_iter().enumerate() {
        let meta = pledger_core::EventMeta {
            event_id: format!("stray-{i}"),
            occurred_at: w.now,
            actor: actor(OPS),
            causation_id: None,
            correlation_id: "stray".into(),
        };
        evolve(&mut w.state, &Envelope::new(event, meta));
    }
    assert_eq!(w.state.event_count, before.event_count + 2);
    let mut expected = before;
    expected.event_count += 2;
    assert_eq!(w.state, expected);
}

#[test]
fn unregistered_prompt_refuses_everything_but_registration() {
    let w = World::new();
    let commands = vec![
        publish(1),
        adopt(1),
        propose(1),
        gate(1),
        start(1),
        rollback(),
        Command::SetGatePolicy {
            policy: GatePolicy::default(),
        },
    ];
    for command in commands {
        assert_rejected(
            &w,
            OWNER,
            command,
            Rule::UnknownPrompt,
            "unknown-prompt",
            &[PROMPT],
        );
    }
    let mut w = w;
    let events = w.run(
        OWNER,
        Command::RegisterPrompt {
            owner: "  support-team ".into(),
        },
    );
    assert!(matches!(&events[..], [Event::PromptRegistered(e)] if e.owner == OWNER));
    assert_eq!(w.state.owner.as_deref(), Some(OWNER));
}

// ---------------------------------------------------------------------------------------------
// The whole lifecycle
// ---------------------------------------------------------------------------------------------

#[test]
fn happy_path_lifecycle() {
    let mut w = World::new();
    w.run(OWNER, register());
    w.run(AUTHOR, publish(1));
    w.run(AUTHOR, publish(2));
    w.run(OWNER, adopt(1));
    assert_eq!(w.state.stable, Some(vid(1)));

    w.run(AUTHOR, propose(2));
    let r1 = rid(1);
    assert_eq!(w.release(1).id, r1);
    assert_eq!(w.release(1).baseline, Some(vid(1)));
    w.run(PRODUCT, approve(1, Product));
    w.run(TECH, approve(1, Technical));

    // Cost up 15%: the gate fails on cost alone.
    let pricier = BundleBuilder::new(&vid(2), &vid(1))
        .cost(0.0115, 0.0100)
        .build();
    w.run(CI, attach(1, pricier));
    let events = w.run(CI, gate(1));
    let [Event::GateDecided(g)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(!g.passed);
    let failed: Vec<&str> = g
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["cost_per_request_usd"]);
    assert_rejected(
        &w,
        OPS,
        start(1),
        Rule::RolloutNeedsPlan,
        "rollout-needs-plan",
        &[],
    );

    // The author may not accept the trade-off; the lead may.
    assert_rejected(
        &w,
        AUTHOR,
        accept_tradeoff(1),
        Rule::AuthorCannotAcceptTradeoff,
        "author-cannot-accept-tradeoff",
        &[AUTHOR],
    );
    w.run(LEAD, accept_tradeoff(1));
    let events = w.run(CI, gate(1));
    let [Event::GateDecided(g)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(g.passed);
    assert!(g.evidence.tradeoff_accepted);
    let cost = g
        .checks
        .iter()
        .find(|c| c.name == "cost_per_request_usd")
        .unwrap();
    assert!(cost.passed && cost.waived_by_tradeoff);

    w.run(OPS, plan_rollout(1, standard_plan()));
    w.run(OPS, start(1));
    assert_eq!(w.status(1), "rolling_out");
    for pair in STAGES.windows(2) {
        assert_rejected(
            &w,
            OPS,
            complete(1),
            Rule::NotAtLastStage,
            "not-at-last-stage",
            &[pair[0]],
        );
        w.tick(3_600_000);
        w.run(OPS, advance(1, pair[0]));
    }
    assert_eq!(w.release(1).status.stage(), Some(STAGES.len() - 1));
    assert_eq!(w.state.stable, Some(vid(1)));
    w.run(OPS, complete(1));
    assert_eq!(w.state.stable, Some(vid(2)));
    assert_eq!(w.status(1), "completed");

    w.run(OPS, rollback());
    assert_eq!(w.state.stable, Some(vid(1)));
    assert_eq!(w.status(1), "rolled_back");

    assert_eq!(
        w.kinds(),
        [
            "prompt.registered",
            "prompt.version_published",
            "prompt.version_published",
            "prompt.version_adopted",
            "release.change_proposed",
            "release.review_submitted",
            "release.review_submitted",
            "release.eval_bundle_attached",
            "release.gate_decided",
            "release.tradeoff_accepted",
            "release.gate_decided",
            "release.rollout_planned",
            "release.rollout_started",
            "release.stage_advanced",
            "release.stage_advanced",
            "release.stage_advanced",
            "release.completed",
            "release.rolled_back",
        ]
    );
    // Every envelope carries its aggregate, its time and a unique id.
    let mut ids: Vec<&str> = w.log.iter().map(|e| e.event_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), w.log.len());
    assert!(w
        .log
        .windows(2)
        .all(|p| p[0].occurred_at <= p[1].occurred_at));
    assert_eq!(w.log[0].aggregate_id, "prompt:support-triage");
    assert_eq!(
        w.log.last().unwrap().aggregate_id,
        "release:support-triage-r1"
    );
    assert_eq!(w.state.event_count, w.log.len() as u64);
}

/// r1 rolling out under a plan whose first stage needs 30 minutes and 200 samples per arm.
/// Global windows open only on Saturdays (UTC).
pub const SATURDAYS: &str =
    "timezone = \"UTC\"\n[[open]]\ncron = \"0 0 0 * * Sat\"\nduration = \"1d\"\n";

fn baking() -> World {
    let mut plan = standard_plan();
    plan.stages[0].min_bake = pledger_core::DurationSpec::parse("30m").unwrap();
    plan.stages[0].min_samples = 200;
    gate_passed()
        .with(OPS, plan_rollout(1, plan))
        .with(OPS, start(1))
}

fn advance_with(release: u32, from: &str, candidate: u64, control: u64, breached: bool) -> Command {
    Command::AdvanceStage {
        release: rid(release),
        from_stage: from.into(),
        force_reason: None,
        readiness: Some(pledger_core::decide::StageReadiness {
            stage: from.into(),
            candidate_samples: candidate,
            control_samples: control,
            breached,
            words: if breached {
                "breached: escalation_rate".into()
            } else {
                "healthy".into()
            },
        }),
    }
}

#[test]
fn a_ready_stage_advances_and_force_overrides_readiness() {
    let mut ready = baking().with_tick(3_600_000);
    let events = ready.run(OPS, advance_with(1, "internal", 200, 200, false));
    assert!(
        matches!(&events[..], [Event::StageAdvanced(e)] if !e.forced),
        "{events:?}"
    );
    // Readiness about another stage does not count for this one.
    let w = baking().with_tick(3_600_000);
    let mut other = advance_with(1, "internal", 900, 900, false);
    if let Command::AdvanceStage {
        readiness: Some(r), ..
    } = &mut other
    {
        r.stage = "canary".into();
    }
    assert_rejected(
        &w,
        OPS,
        other,
        Rule::StageNotReady,
        "stage-not-ready",
        &["no canary judgement"],
    );
    // Forced: no bake time, no samples, recorded as forced.
    let mut forced = baking();
    let events = forced.run(
        OPS,
        Command::AdvanceStage {
            release: rid(1),
            from_stage: "internal".into(),
            force_reason: Some("incident drill".into()),
            readiness: None,
        },
    );
    assert!(
        matches!(&events[..], [Event::StageAdvanced(e)] if e.forced),
        "{events:?}"
    );
}

fn new_case(fingerprint: &str, count: u64, through: u64) -> Command {
    Command::CollectRegressionCase(pledger_core::decide::NewRegressionCase {
        fingerprint: fingerprint.into(),
        tag: pledger_core::outcome::FeedbackTag::UnexpectedRefusal,
        example: "refused to reset a password".into(),
        version: Some(vid(1)),
        release: None,
        source: pledger_core::event::CaseSource::Production,
        count,
        through_sequence: through,
    })
}

#[test]
fn regression_cases_are_collected_once_and_counted() {
    let mut w = adopted();
    let fp = "ab".repeat(32);
    let events = w.run(CI, new_case(&fp, 3, 10));
    let [Event::RegressionCaseCollected(e)] = &events[..] else {
        panic!("{events:?}")
    };
    let case_id = e.case_id.clone();
    assert_eq!(case_id, format!("support-triage-rc-{}", &fp[..12]));
    assert_eq!(
        pledger_core::decide::prompt_of_case(&case_id)
            .unwrap()
            .as_str(),
        PROMPT
    );
    // The same failure again raises the count; a replay of reports already counted adds nothing.
    let events = w.run(CI, new_case(&fp, 2, 15));
    assert!(
        matches!(&events[..], [Event::RegressionCaseRecurred(r)] if r.additional == 2),
        "{events:?}"
    );
    assert_noop(&w, CI, new_case(&fp, 2, 15));
    assert_noop(&w, CI, new_case(&fp, 9, 12));
    assert_eq!(w.state.regression_cases[&case_id].count, 5);
    // Closing is idempotent and needs a reason.
    let close = |reason: &str| Command::CloseRegressionCase {
        case_id: case_id.clone(),
        reason: reason.into(),
    };
    assert_rejected(
        &w,
        OWNER,
        close(" "),
        Rule::ReasonRequired,
        "reason-required",
        &["regression case"],
    );
    w.run(OWNER, close("covered by suite v7"));
    assert_noop(&w, OWNER, close("again"));
    assert!(w.state.regression_cases[&case_id].closed.is_some());
}

#[test]
fn the_gate_requires_cases_collected_since_the_last_release() {
    let fp = "cd".repeat(32);
    let w = approved().with(CI, new_case(&fp, 1, 1));
    let case_id = format!("support-triage-rc-{}", &fp[..12]);
    // A bundle that does not list the case fails the gate, naming it.
    let mut w1 = w.clone().with(CI, attach(1, bundle(&vid(2), &vid(1))));
    let events = w1.run(CI, gate(1));
    let [Event::GateDecided(g)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(!g.passed);
    let check = g
        .checks
        .iter()
        .find(|c| c.name == "regressions.coverage")
        .unwrap();
    assert!(
        !check.passed && check.detail.contains(&case_id),
        "{check:?}"
    );
    // One that covers it passes.
    let mut covering = bundle(&vid(2), &vid(1));
    covering.covers_regressions = vec![case_id.clone()];
    let mut w2 = w.clone().with(CI, attach(1, covering));
    let events = w2.run(CI, gate(1));
    assert!(
        matches!(&events[..], [Event::GateDecided(g)] if g.passed),
        "{events:?}"
    );
    // A closed case is not required.
    let mut w3 = w
        .with(
            OWNER,
            Command::CloseRegressionCase {
                case_id,
                reason: "not a regression".into(),
            },
        )
        .with(CI, attach(1, bundle(&vid(2), &vid(1))));
    let events = w3.run(CI, gate(1));
    assert!(
        matches!(&events[..], [Event::GateDecided(g)] if g.passed && !g.checks.iter().any(|c| c.name == "regressions.coverage")),
        "{events:?}"
    );
}
