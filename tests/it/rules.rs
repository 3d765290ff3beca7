//! Every rule of the release lifecycle, through the binary: the rejection names the rule,
//! exits 3, and the ledger does not change.

use pledger_e2e::*;

use crate::fixture::*;

/// Runs a command that must be rejected by `rule`, and checks the ledger did not change.
#[track_caller]
fn refused(w: &World, prompt: &str, actor: &str, args: &[&str], rule: &str) -> Run {
    let before = w.event_count(prompt);
    let run = w.run(actor, args).rejected(rule);
    assert_eq!(
        w.event_count(prompt),
        before,
        "the ledger changed after a rejection by {rule}"
    );
    run
}

#[test]
fn the_author_cannot_review_and_the_layers_need_two_reviewers() {
    let w = World::new();
    let p = proposed(&w, "triage");
    let run = refused(
        &w,
        "triage",
        "maria",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "product",
            "--approve",
        ],
        "author-cannot-review",
    );
    assert!(
        run.stderr.contains("maria authored triage-r1"),
        "{}",
        run.stderr
    );
    approve(&w, "priya", &p.release, "product");
    refused(
        &w,
        "triage",
        "priya",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "technical",
            "--approve",
        ],
        "reviewers-must-differ",
    );
}

#[test]
fn a_request_for_changes_blocks_the_gate_until_that_layer_approves() {
    let w = World::new();
    let p = reviewed(&w, "triage");
    attach_bundle(&w, &p, 0.0);
    w.run(
        "tomas",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "technical",
            "--request-changes",
            "--note",
            "timeouts?",
        ],
    )
    .ok();
    let run = refused(
        &w,
        "triage",
        "ci",
        &["release", "gate", &p.release],
        "changes-requested",
    );
    assert!(run.stderr.contains("tomas"), "{}", run.stderr);
    approve(&w, "tomas", &p.release, "technical");
    w.run("ci", &["release", "gate", &p.release]).ok();
}

#[test]
fn a_new_candidate_resets_both_reviews() {
    let w = World::new();
    let p = reviewed(&w, "triage");
    let f3 = w.file(
        "v3.toml",
        &artifact_toml("Classify; ask once when unsure.", 0.3),
    );
    let v3 = w.json("maria", &["prompt", "publish", "triage", &f3])["version"]
        .as_str()
        .unwrap()
        .to_string();
    w.run("maria", &["release", "revise", &p.release, &v3]).ok();
    let b = w.file("b3.json", &bundle_json(&v3, &p.v1, 0.0));
    w.run("ci", &["release", "attach-eval", &p.release, &b])
        .ok();
    refused(
        &w,
        "triage",
        "ci",
        &["release", "gate", &p.release],
        "gate-needs-approvals",
    );
    let shown = w.json("maria", &["release", "show", &p.release]);
    assert_eq!(shown["release"]["reviews"], serde_json::json!({}));
}

#[test]
fn the_gate_needs_approvals_and_an_eval_bundle() {
    let w = World::new();
    let p = proposed(&w, "triage");
    refused(
        &w,
        "triage",
        "ci",
        &["release", "gate", &p.release],
        "gate-needs-approvals",
    );
    approve(&w, "priya", &p.release, "product");
    approve(&w, "tomas", &p.release, "technical");
    refused(
        &w,
        "triage",
        "ci",
        &["release", "gate", &p.release],
        "gate-needs-eval-bundle",
    );
}

#[test]
fn a_bundle_for_other_versions_is_refused() {
    let w = World::new();
    let p = reviewed(&w, "triage");
    let b = w.file("wrong.json", &bundle_json(&p.v1, &p.v1, 0.0));
    refused(
        &w,
        "triage",
        "ci",
        &["release", "attach-eval", &p.release, &b],
        "bundle-versions-mismatch",
    );
}

#[test]
fn a_gate_on_unchanged_evidence_is_not_re_decided_but_new_evidence_reopens_it() {
    let w = World::new();
    let p = reviewed(&w, "triage");
    attach_bundle(&w, &p, 0.5);
    assert_eq!(w.run("ci", &["release", "gate", &p.release]).code, 6);
    refused(
        &w,
        "triage",
        "ci",
        &["release", "gate", &p.release],
        "gate-unchanged-evidence",
    );
    // A new bundle is new evidence.
    attach_bundle(&w, &p, 0.0);
    w.run("ci", &["release", "gate", &p.release]).ok();
    refused(
        &w,
        "triage",
        "ci",
        &["release", "gate", &p.release],
        "gate-unchanged-evidence",
    );
}

#[test]
fn a_rollout_needs_a_passed_gate_and_a_plan_with_rollback_criteria() {
    let w = World::new();
    let p = reviewed(&w, "triage");
    refused(
        &w,
        "triage",
        "maria",
        &["rollout", "start", &p.release],
        "rollout-needs-plan",
    );
    let no_criteria = w.file("nocrit.toml", "[[stages]]\nname = \"all\"\npercent = 100\n[guardrails]\nfallback_rate = { max_rate = 0.1 }\n");
    let run = refused(
        &w,
        "triage",
        "maria",
        &["rollout", "plan", &p.release, &no_criteria],
        "rollback-criteria-required",
    );
    assert!(run.stderr.contains("[rollback] criteria"), "{}", run.stderr);
    let plan = w.file("plan.toml", PLAN);
    w.run("maria", &["rollout", "plan", &p.release, &plan]).ok();
    refused(
        &w,
        "triage",
        "maria",
        &["rollout", "start", &p.release],
        "rollout-needs-passed-gate",
    );
    attach_bundle(&w, &p, 0.5);
    assert_eq!(w.run("ci", &["release", "gate", &p.release]).code, 6);
    refused(
        &w,
        "triage",
        "maria",
        &["rollout", "start", &p.release],
        "rollout-needs-passed-gate",
    );
}

#[test]
fn a_prompt_without_a_stable_version_cannot_start_a_rollout() {
    let w = World::new();
    let (v1, v2) = two_versions(&w, "fresh", false);
    let release = ready_to_start(&w, "fresh", &v2, &v1);
    let run = refused(
        &w,
        "fresh",
        "maria",
        &["rollout", "start", &release],
        "no-stable-version",
    );
    assert!(
        run.stderr.contains("pledger prompt adopt"),
        "{}",
        run.stderr
    );
    // Adopting now does not change the release's baseline (none at proposal time).
    w.run(
        "maria",
        &["prompt", "adopt", "fresh", &v1, "--reason", "already live"],
    )
    .ok();
    refused(
        &w,
        "fresh",
        "maria",
        &["rollout", "start", &release],
        "baseline-moved",
    );
}
#[test]
fn one_active_rollout_per_prompt() {
    let w = World::new();
    let p = started(&w, "triage");
    let v3 = publish(&w, "triage", "Another idea.");
    let second = ready_to_start(&w, "triage", &v3, &p.v1);
    let run = refused(
        &w,
        "triage",
        "maria",
        &["rollout", "start", &second],
        "one-active-rollout",
    );
    assert!(run.stderr.contains(&p.release), "{}", run.stderr);
    refused(
        &w,
        "triage",
        "maria",
        &["prompt", "adopt", "triage", &v3, "--reason", "shortcut"],
        "one-active-rollout",
    );
}

#[test]
fn rollback_needs_something_to_roll_back() {
    let w = World::new();
    proposed(&w, "triage");
    refused(
        &w,
        "triage",
        "oncall",
        &["rollback", "triage", "--reason", "panic"],
        "nothing-to-roll-back",
    );
}

#[test]
fn events_out_of_order_are_rejected() {
    let w = World::new();
    let p = started(&w, "triage");
    let run = refused(
        &w,
        "triage",
        "priya",
        &[
            "release",
            "review",
            "triage-r99",
            "--layer",
            "product",
            "--approve",
        ],
        "unknown-release",
    );
    assert!(run.stderr.contains("triage-r99"), "{}", run.stderr);
    refused(
        &w,
        "triage",
        "priya",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "product",
            "--approve",
        ],
        "release-not-open",
    );
    w.run("maria", &["rollout", "advance", &p.release]).ok();
    w.run("maria", &["rollout", "advance", &p.release]).ok();
    let run = refused(
        &w,
        "triage",
        "maria",
        &["rollout", "advance", &p.release],
        "no-next-stage",
    );
    assert!(run.stderr.contains("rollout complete"), "{}", run.stderr);
}

#[test]
fn advancing_from_a_stage_the_release_left_is_a_conflict_with_exit_4() {
    let w = World::new();
    let p = started(&w, "triage");
    w.run(
        "maria",
        &["rollout", "advance", &p.release, "--from", "internal"],
    )
    .ok();
    let before = w.event_count("triage");
    let run = w.run(
        "tomas",
        &["rollout", "advance", &p.release, "--from", "internal"],
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("moved meanwhile"), "{}", run.stderr);
    assert_eq!(w.event_count("triage"), before);
}
