//! The whole lifecycle, from artifact to rollback, through the binary.

use pledger_e2e::*;

use crate::fixture::*;

#[test]
fn a_prompt_change_goes_from_artifact_to_rollback() {
    let w = World::new();
    let p = reviewed(&w, "triage");

    // A bundle whose cost rose 25% fails the gate with exit 6 and lists every check.
    attach_bundle(&w, &p, 0.25);
    let gate = w.run("ci", &["--json", "release", "gate", &p.release]);
    assert_eq!(gate.code, 6, "{gate:?}");
    let decision = gate.json();
    assert_eq!(decision["passed"], false);
    let failed: Vec<&str> = decision["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["cost_per_request_usd"]);
    assert!(decision["checks"].as_array().unwrap().len() >= 10);

    // A named non-author accepts the trade-off: new evidence, the gate passes.
    w.run(
        "priya",
        &[
            "release",
            "accept-tradeoff",
            &p.release,
            "--reason",
            "worth it",
        ],
    )
    .ok();
    let decision = w.json("ci", &["release", "gate", &p.release]);
    assert_eq!(decision["passed"], true);
    assert!(decision["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["waived_by_tradeoff"] == true));

    let plan = w.file("plan.toml", PLAN);
    w.run("maria", &["rollout", "plan", &p.release, &plan]).ok();
    w.run("maria", &["rollout", "start", &p.release]).ok();

    let resolve = |args: &[&str]| {
        let mut all = vec!["resolve", "triage"];
        all.extend_from_slice(args);
        w.json("svc", &all)
    };
    let internal = resolve(&["--unit", "u1", "--attr", "user_kind=internal"]);
    assert_eq!(internal["arm"], "candidate");
    assert_eq!(internal["version"], p.v2.as_str());
    assert_eq!(internal["release"], p.release.as_str());
    let customer = resolve(&["--unit", "u1", "--attr", "user_kind=customer"]);
    assert_eq!(customer["arm"], "baseline");
    assert_eq!(customer["version"], p.v1.as_str());

    // Stage `eu` at 50%: sticky by unit, some EU units get the candidate and some do not.
    let advanced = w.json("maria", &["rollout", "advance", &p.release]);
    assert_eq!(advanced["stage"], "eu");
    let arms: Vec<String> = (0..40)
        .map(|i| {
            resolve(&["--unit", &format!("user-{i}"), "--attr", "geo=eu"])["arm"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        arms.iter().any(|a| a == "candidate") && arms.iter().any(|a| a == "baseline"),
        "{arms:?}"
    );
    let again: Vec<String> = (0..40)
        .map(|i| {
            resolve(&["--unit", &format!("user-{i}"), "--attr", "geo=eu"])["arm"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(arms, again, "bucketing is sticky");

    w.run("maria", &["rollout", "advance", &p.release]).ok();
    w.run("maria", &["rollout", "complete", &p.release]).ok();
    assert_eq!(resolve(&["--unit", "u9"])["version"], p.v2.as_str());
    let shown = w.json("maria", &["prompt", "show", "triage"]);
    assert_eq!(shown["state"]["stable"], p.v2.as_str());
    let history = w.json("maria", &["prompt", "history", "triage"]);
    let history = history["events"].as_array().unwrap();
    assert_eq!(
        history.last().unwrap()["event"]["kind"],
        "release.completed"
    );
    assert!(history
        .windows(2)
        .all(|w| w[0]["sequence"].as_u64() < w[1]["sequence"].as_u64()));

    // Rollback from completed returns to the previous stable version, in the config layer too.
    let rolled = w.json(
        "oncall",
        &["rollback", "triage", "--reason", "escalations doubled"],
    );
    assert_eq!(rolled["stable"], p.v1.as_str());
    assert_eq!(resolve(&["--unit", "u9"])["version"], p.v1.as_str());
    let release = w.json("maria", &["release", "show", &p.release]);
    assert_eq!(release["state"], "rolled_back");

    let kinds = w.kinds("triage");
    for kind in [
        "prompt.registered",
        "prompt.version_published",
        "prompt.version_adopted",
        "release.change_proposed",
        "release.review_submitted",
        "release.eval_bundle_attached",
        "release.tradeoff_accepted",
        "release.gate_decided",
        "release.rollout_planned",
        "release.rollout_started",
        "release.stage_advanced",
        "release.completed",
        "release.rolled_back",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "missing {kind} in {kinds:?}"
        );
    }
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "release.gate_decided")
            .count(),
        2
    );
    w.assert_audit_clean();
}

#[test]
fn rollback_during_a_rollout_routes_everything_back_and_frees_the_slot() {
    let w = World::new();
    let p = started(&w, "triage");
    w.run(
        "oncall",
        &["rollback", "triage", "--reason", "fallbacks up"],
    )
    .ok();
    let r = w.json(
        "svc",
        &[
            "resolve",
            "triage",
            "--unit",
            "u1",
            "--attr",
            "user_kind=internal",
        ],
    );
    assert_eq!(r["arm"], serde_json::Value::Null, "no rollout, no arm");
    assert_eq!(r["version"], p.v1.as_str());
    // The slot is free: a new proposal can roll out after its own gate.
    let again = w.json(
        "maria",
        &[
            "release",
            "propose",
            "triage",
            &p.v2,
            "--rationale",
            "second try",
        ],
    )["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(again, "triage-r2");
}

#[test]
fn freeze_routes_back_to_stable_and_resume_restores_the_stage() {
    let w = World::new();
    let p = started(&w, "triage");
    let internal = [
        "resolve",
        "triage",
        "--unit",
        "u1",
        "--attr",
        "user_kind=internal",
    ];
    assert_eq!(w.json("svc", &internal)["arm"], "candidate");
    w.run(
        "oncall",
        &["rollout", "freeze", &p.release, "--reason", "investigating"],
    )
    .ok();
    assert_eq!(w.json("svc", &internal)["arm"], "baseline");
    w.run("maria", &["rollout", "advance", &p.release])
        .rejected("not-rolling-out");
    w.run("maria", &["rollout", "resume", &p.release]).ok();
    assert_eq!(w.json("svc", &internal)["arm"], "candidate");
    w.run("maria", &["rollout", "pause", &p.release]).ok();
    w.run("maria", &["rollout", "advance", &p.release])
        .rejected("rollout-paused");
    assert_eq!(
        w.json("svc", &internal)["arm"],
        "candidate",
        "a pause does not move traffic"
    );
}

#[test]
fn the_same_artifact_in_toml_and_json_is_one_version_and_diff_shows_changes() {
    let w = World::new();
    w.run(
        "maria",
        &["prompt", "register", "triage", "--owner", "support"],
    )
    .ok();
    let toml = w.file("a.toml", "known_limitations = []\ninstructions = \"Be brief.\\nBe kind.\"\n[tools]\nschema_version = \"none\"\n[model]\ntemperature = 1\nfamily = \"gpt-4o\"\n");
    let json = w.file(
        "a.json",
        r#"{"model": {"family": "gpt-4o", "temperature": 1.0}, "tools": {"schema_version": "none"}, "instructions": "Be brief.\nBe kind.", "known_limitations": []}"#,
    );
    let first = w.json("maria", &["prompt", "publish", "triage", &toml]);
    let second = w.json("maria", &["prompt", "publish", "triage", &json]);
    assert_eq!(first["version"], second["version"]);
    assert_eq!(first["new"], true);
    assert_eq!(
        second["new"], false,
        "publishing identical content is idempotent"
    );
    assert_eq!(w.count("triage", "prompt.version_published"), 1);

    let changed = w.file("b.toml", "known_limitations = []\ninstructions = \"Be brief.\\nBe very kind.\"\n[tools]\nschema_version = \"v2\"\n[model]\ntemperature = 1\nfamily = \"gpt-4o\"\n");
    let third = w.json("maria", &["prompt", "publish", "triage", &changed]);
    assert_ne!(third["version"], first["version"]);
    let diff = w.json(
        "maria",
        &[
            "prompt",
            "diff",
            "triage",
            first["version"].as_str().unwrap(),
            third["version"].as_str().unwrap(),
        ],
    );
    assert_eq!(diff["diff"]["fields"][0]["field"], "tools.schema_version");
    assert_eq!(diff["diff"]["instructions_changed"], true);
    let lines: Vec<String> = diff["diff"]["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{}{}",
                l["tag"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(lines, [" Be brief.", "-Be kind.", "+Be very kind."]);
}
