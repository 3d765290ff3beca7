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

fn promptfoo_fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/promptfoo")
        .join(name)
        .display()
        .to_string()
}

/// Issue 12: a real promptfoo run of the baseline's and the candidate's prompt becomes the
/// release's eval bundle, with the release's versions; `eval from-promptfoo --release` builds
/// the same bundle offline-first; a file that cannot compare is refused and nothing recorded.
#[test]
fn a_promptfoo_run_becomes_the_releases_eval_bundle() {
    let w = World::new();
    let p = reviewed(&w, "triage");
    let results = promptfoo_fixture("results-v3.json");
    let mapping = ["--baseline", "baseline", "--candidate", "candidate"];

    // A one-prompt run: refused with the usage code, naming what is missing.
    let mut one = vec!["release", "attach-eval", &p.release, "--promptfoo"];
    let one_prompt = promptfoo_fixture("one-prompt.json");
    one.push(&one_prompt);
    one.extend(mapping);
    let r = w.run("ci", &one);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("one-prompt.json: results.prompts: the run has one prompt"),
        "{}",
        r.stderr
    );
    assert_eq!(w.count("triage", "release.eval_bundle_attached"), 0);

    // The same run, offline: a bundle file for the release's versions.
    let out = w.file("bundle.json", "");
    let mut args = vec![
        "eval",
        "from-promptfoo",
        &results,
        "--release",
        &p.release,
        "--out",
        &out,
    ];
    args.extend(mapping);
    w.run("ci", &args).ok();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(written["candidate"], p.v2.as_str());
    assert_eq!(written["baseline"], p.v1.as_str());

    // Attached straight from the results file.
    let mut attach = vec![
        "release",
        "attach-eval",
        &p.release,
        "--promptfoo",
        &results,
    ];
    attach.extend(mapping);
    let r = w.run("ci", &attach).ok();
    assert!(
        r.stdout.contains(
            "17 tests from a format 3 results file; 1 cached and 1 errored rows left out"
        ),
        "{}",
        r.stdout
    );
    let shown = w.json("auditor", &["release", "show", &p.release]);
    let bundle = &shown["release"]["bundle"]["bundle"];
    assert_eq!(
        bundle, &written,
        "attach-eval --promptfoo and eval from-promptfoo agree"
    );
    let segments: Vec<(String, u64)> = bundle["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["cases"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        segments,
        [
            ("consumer".to_string(), 6),
            ("enterprise".to_string(), 6),
            ("internal".to_string(), 5)
        ]
    );
    assert_eq!(bundle["regressions"].as_array().unwrap().len(), 4);
    assert_eq!(bundle["latency_ms"]["candidate_p95"], 198.0);
    assert_eq!(w.count("triage", "release.eval_bundle_attached"), 1);
}
