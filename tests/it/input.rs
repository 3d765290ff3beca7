//! Bad input: wrong fields, unknown names, oversized files, a server that is down.

use pledger_e2e::*;

#[test]
fn an_artifact_with_a_wrong_field_is_refused_naming_the_field() {
    let w = World::new();
    w.run(
        "maria",
        &["prompt", "register", "triage", "--owner", "support"],
    )
    .ok();
    let bad = w.file("bad.toml", "instructions = \"x\"\nknown_limitations = []\n[model]\nfamily = \"gpt-4o\"\ntemprature = 0.2\n[tools]\nschema_version = \"none\"\n");
    let run = w.run("maria", &["prompt", "publish", "triage", &bad]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("temprature") && run.stderr.contains("bad.toml"),
        "{}",
        run.stderr
    );
    let hot = w.file("hot.json", r#"{"instructions": "x", "known_limitations": [], "model": {"family": "f", "temperature": 2.5}, "tools": {"schema_version": "none"}}"#);
    let run = w.run("maria", &["prompt", "publish", "triage", &hot]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("model.temperature"), "{}", run.stderr);
    let missing = w.file("missing.toml", "instructions = \"x\"\n[model]\nfamily = \"f\"\ntemperature = 0.1\n[tools]\nschema_version = \"none\"\n");
    let run = w.run("maria", &["prompt", "publish", "triage", &missing]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("known_limitations"), "{}", run.stderr);
    assert_eq!(w.event_count("triage"), 1, "nothing was recorded");
}

#[test]
fn bundles_and_plans_with_wrong_fields_name_them() {
    let w = World::new();
    let bundle = w.file("b.json", r#"{"candidate": "sha256:00", "baseline": "x"}"#);
    let run = w.run("ci", &["release", "attach-eval", "triage-r1", &bundle]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("b.json"), "{}", run.stderr);
    let plan = w.file(
        "p.toml",
        "[[stages]]\nname = \"a\"\npercent = 100\nmin_bake = \"soon\"\n",
    );
    let run = w.run("maria", &["rollout", "plan", "triage-r1", &plan]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("soon") && run.stderr.contains("line"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_oversized_artifact_is_refused_before_anything_is_recorded() {
    let w = World::new();
    w.run(
        "maria",
        &["prompt", "register", "triage", "--owner", "support"],
    )
    .ok();
    let huge = w.file("huge.toml", &artifact_toml(&"x".repeat(300 * 1024), 0.1));
    let run = w.run("maria", &["prompt", "publish", "triage", &huge]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("over the limit"), "{}", run.stderr);
    assert_eq!(w.event_count("triage"), 1);
}

#[test]
fn unknown_prompts_and_releases_are_named() {
    let w = World::new();
    let run = w
        .run("maria", &["prompt", "show", "ghost"])
        .rejected("unknown-prompt");
    assert!(run.stderr.contains("`ghost`"), "{}", run.stderr);
    let run = w
        .run("maria", &["release", "show", "ghost-r3"])
        .rejected("unknown-prompt");
    assert!(run.stderr.contains("ghost"), "{}", run.stderr);
    w.run(
        "maria",
        &["prompt", "register", "triage", "--owner", "support"],
    )
    .ok();
    let run = w
        .run("maria", &["release", "show", "triage-r3"])
        .rejected("unknown-release");
    assert!(run.stderr.contains("triage-r3"), "{}", run.stderr);
    let run = w
        .run(
            "maria",
            &["release", "propose", "triage", "abc123", "--rationale", "x"],
        )
        .rejected("unknown-version");
    assert!(run.stderr.contains("abc123"), "{}", run.stderr);
    let run = w.run("maria", &["release", "show", "not a release"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn a_server_that_is_down_gets_exit_5_and_says_how_to_start_one() {
    let mut w = World::new();
    w.server.stop();
    let run = w.run("maria", &["prompt", "show", "triage"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("pledger up"), "{}", run.stderr);
    let json = w
        .run("maria", &["--json", "prompt", "show", "triage"])
        .json();
    assert_eq!(json["error"]["exit_code"], 5);
}

#[test]
fn bad_input_files_are_refused_before_the_ledger_is_contacted() {
    let mut w = World::new();
    let plan = w.file("p.toml", "[[stages]]\nname = \"a\"\npercent = \"all\"\n");
    let bundle = w.file("b.json", "{\"candidate\": 1}");
    let artifact = w.file("a.toml", "instructions = 3\n");
    let results = w.file("results.json", "{\"results\": {\"version\": 3}}");
    // With the server down, a bad file is still exit 2 naming the file, not exit 5.
    w.server.stop();
    for (actor, args) in [
        ("maria", vec!["rollout", "plan", "triage-r1", plan.as_str()]),
        (
            "ci",
            vec!["release", "attach-eval", "triage-r1", bundle.as_str()],
        ),
        (
            "maria",
            vec!["prompt", "publish", "triage", artifact.as_str()],
        ),
        (
            "ci",
            vec![
                "release",
                "attach-eval",
                "triage-r1",
                "--baseline",
                "a",
                "--candidate",
                "b",
                "--promptfoo",
                results.as_str(),
            ],
        ),
        (
            "ci",
            vec![
                "eval",
                "from-promptfoo",
                "--release",
                "triage-r1",
                "--baseline",
                "a",
                "--candidate",
                "b",
                results.as_str(),
            ],
        ),
    ] {
        let run = w.run(actor, &args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        let file = args.last().unwrap().rsplit('/').next().unwrap();
        assert!(run.stderr.contains(file), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn usage_errors_exit_2() {
    let w = World::new();
    let run = w.run(
        "maria",
        &["release", "review", "triage-r1", "--layer", "product"],
    );
    assert_eq!(
        run.code, 2,
        "one of --approve / --request-changes is required: {run:?}"
    );
    let run = w.run("maria", &["rollout", "advance", "triage-r1", "--force"]);
    assert_eq!(run.code, 2, "--force needs --reason: {run:?}");
    let run = w.run("svc", &["resolve", "triage", "--attr", "novalue"]);
    assert_eq!(run.code, 2, "{run:?}");
}
