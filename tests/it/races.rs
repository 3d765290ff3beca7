//! Processes racing on one release: exactly one effect per decision.

use std::process::Child;

use pledger_e2e::*;

use crate::fixture::*;

fn spawn_all(w: &World, n: usize, actor: &str, args: &[&str]) -> Vec<Child> {
    (0..n)
        .map(|_| {
            w.command(actor, args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn codes(children: Vec<Child>) -> Vec<i32> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1))
        .collect()
}

#[test]
fn eight_people_pressing_advance_at_once_move_the_release_one_stage() {
    let w = World::new();
    let p = started(&w, "triage");
    // All eight saw the release at its first stage, so each presses advance from there.
    let codes = codes(spawn_all(
        &w,
        8,
        "maria",
        &["rollout", "advance", &p.release, "--from", "internal"],
    ));
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 4).count(),
        7,
        "the others are told it moved: {codes:?}"
    );
    assert_eq!(w.count("triage", "release.stage_advanced"), 1);
    assert_eq!(
        w.json("maria", &["release", "show", &p.release])["release"]["status"]["stage"],
        1
    );
}

#[test]
fn racing_reviews_by_one_actor_record_one_review() {
    let w = World::new();
    let p = proposed(&w, "triage");
    let codes = codes(spawn_all(
        &w,
        6,
        "priya",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "product",
            "--approve",
        ],
    ));
    assert!(
        codes.iter().all(|c| *c == 0),
        "an identical review is idempotent: {codes:?}"
    );
    assert_eq!(w.count("triage", "release.review_submitted"), 1);
}

#[test]
fn racing_reviewers_of_both_layers_by_one_actor_get_one_layer() {
    let w = World::new();
    let p = proposed(&w, "triage");
    let mut children = spawn_all(
        &w,
        3,
        "priya",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "product",
            "--approve",
        ],
    );
    children.extend(spawn_all(
        &w,
        3,
        "priya",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "technical",
            "--approve",
        ],
    ));
    let codes = codes(children);
    assert!(
        codes.contains(&3),
        "one layer is refused to the same actor: {codes:?}"
    );
    assert_eq!(w.count("triage", "release.review_submitted"), 1);
}

#[test]
fn racing_gates_on_one_bundle_decide_once() {
    let w = World::new();
    let p = reviewed(&w, "triage");
    attach_bundle(&w, &p, 0.0);
    let codes = codes(spawn_all(&w, 4, "ci", &["release", "gate", &p.release]));
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 3).count(), 3, "{codes:?}");
    assert_eq!(w.count("triage", "release.gate_decided"), 1);
}

#[test]
fn racing_starts_of_two_releases_leave_one_rollout() {
    let w = World::new();
    let p = planned(&w, "triage");
    let second = ready_to_start(&w, "triage", &p.v2, &p.v1);
    let mut children = spawn_all(&w, 2, "maria", &["rollout", "start", &p.release]);
    children.extend(spawn_all(&w, 2, "maria", &["rollout", "start", &second]));
    let codes = codes(children);
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(w.count("triage", "release.rollout_started"), 1);
}

#[test]
fn two_on_calls_rolling_back_at_once_roll_back_one_release() {
    let w = World::new();
    // r1 completed (v2 is stable), r2 (v3) is rolling out.
    let p = started(&w, "triage");
    w.run("maria", &["rollout", "advance", &p.release]).ok();
    w.run("maria", &["rollout", "advance", &p.release]).ok();
    w.run("maria", &["rollout", "complete", &p.release]).ok();
    let v3 = publish(&w, "triage", "Third idea.");
    let r2 = ready_to_start(&w, "triage", &v3, &p.v2);
    w.run("maria", &["rollout", "start", &r2]).ok();

    // Both saw r2 rolling out: each rolls back r2, and r1's completion stays.
    let children = spawn_all(
        &w,
        2,
        "oncall",
        &[
            "rollback",
            "triage",
            "--release",
            &r2,
            "--reason",
            "fallbacks up",
        ],
    );
    let codes = codes(children);
    assert_eq!(codes, [0, 0], "the second rollback finds it already done");
    assert_eq!(w.count("triage", "release.rolled_back"), 1);
    assert_eq!(
        w.json("maria", &["prompt", "show", "triage"])["state"]["stable"],
        p.v2.as_str()
    );
    // Without --release, a rollback now targets the completed r1: the caller sees that first.
    let shown = w.json(
        "oncall",
        &["rollback", "triage", "--reason", "v2 is bad too"],
    );
    assert_eq!(shown["release"], p.release.as_str());
    assert_eq!(shown["stable"], p.v1.as_str());
}
