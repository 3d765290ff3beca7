//! Builds releases up to a given point of their lifecycle, through the CLI.

use pledger_e2e::*;

pub struct Prepared {
    pub v1: String,
    pub v2: String,
    pub release: String,
}

/// Registered, v1 published and adopted as stable, v2 published.
pub fn two_versions(w: &World, prompt: &str, adopt: bool) -> (String, String) {
    w.run(
        "maria",
        &["prompt", "register", prompt, "--owner", "support"],
    )
    .ok();
    let f1 = w.file(
        &format!("{prompt}-v1.toml"),
        &artifact_toml("Classify the message.", 0.2),
    );
    let f2 = w.file(
        &format!("{prompt}-v2.toml"),
        &artifact_toml("Classify the message; ask when unsure.", 0.2),
    );
    let v1 = w.json("maria", &["prompt", "publish", prompt, &f1])["version"]
        .as_str()
        .unwrap()
        .to_string();
    let v2 = w.json("maria", &["prompt", "publish", prompt, &f2])["version"]
        .as_str()
        .unwrap()
        .to_string();
    if adopt {
        w.run(
            "maria",
            &[
                "prompt",
                "adopt",
                prompt,
                &v1,
                "--reason",
                "serving production",
            ],
        )
        .ok();
    }
    (v1, v2)
}

pub fn proposed(w: &World, prompt: &str) -> Prepared {
    let (v1, v2) = two_versions(w, prompt, true);
    let release = w.json(
        "maria",
        &[
            "release",
            "propose",
            prompt,
            &v2,
            "--rationale",
            "ask when unsure",
        ],
    )["release"]
        .as_str()
        .unwrap()
        .to_string();
    Prepared { v1, v2, release }
}

pub fn reviewed(w: &World, prompt: &str) -> Prepared {
    let p = proposed(w, prompt);
    approve(w, "priya", &p.release, "product");
    approve(w, "tomas", &p.release, "technical");
    p
}

pub fn attach_bundle(w: &World, p: &Prepared, cost_increase: f64) {
    let b = w.file(
        &format!("{}-bundle-{cost_increase}.json", p.release),
        &bundle_json(&p.v2, &p.v1, cost_increase),
    );
    w.run("ci", &["release", "attach-eval", &p.release, &b])
        .ok();
}

pub fn gated(w: &World, prompt: &str) -> Prepared {
    let p = reviewed(w, prompt);
    attach_bundle(w, &p, 0.0);
    w.run("ci", &["release", "gate", &p.release]).ok();
    p
}

pub fn planned(w: &World, prompt: &str) -> Prepared {
    let p = gated(w, prompt);
    let plan = w.file("plan.toml", PLAN);
    w.run("maria", &["rollout", "plan", &p.release, &plan]).ok();
    p
}

pub fn started(w: &World, prompt: &str) -> Prepared {
    let p = planned(w, prompt);
    w.run("maria", &["rollout", "start", &p.release]).ok();
    p
}

/// Publishes a new version of `prompt` with these instructions; returns its id.
pub fn publish(w: &World, prompt: &str, instructions: &str) -> String {
    let file = w.file(
        &format!("{prompt}-{}.toml", instructions.len()),
        &artifact_toml(instructions, 0.4),
    );
    w.json("maria", &["prompt", "publish", prompt, &file])["version"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Proposes `version` against `baseline` and takes it through reviews, eval, gate and plan;
/// returns the release id, ready for `rollout start`.
pub fn ready_to_start(w: &World, prompt: &str, version: &str, baseline: &str) -> String {
    let release = w.json(
        "maria",
        &[
            "release",
            "propose",
            prompt,
            version,
            "--rationale",
            "another",
        ],
    )["release"]
        .as_str()
        .unwrap()
        .to_string();
    approve(w, "priya", &release, "product");
    approve(w, "tomas", &release, "technical");
    let bundle = w.file(
        &format!("{release}-bundle.json"),
        &bundle_json(version, baseline, 0.0),
    );
    w.run("ci", &["release", "attach-eval", &release, &bundle])
        .ok();
    w.run("ci", &["release", "gate", &release]).ok();
    let plan = w.file(&format!("{release}-plan.toml"), PLAN);
    w.run("maria", &["rollout", "plan", &release, &plan]).ok();
    release
}

/// `actor` approves `release` in the `layer` review.
pub fn approve(w: &World, actor: &str, release: &str, layer: &str) {
    w.run(
        actor,
        &["release", "review", release, "--layer", layer, "--approve"],
    )
    .ok();
}
