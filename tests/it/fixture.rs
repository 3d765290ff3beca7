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
    w.run(
        "priya",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "product",
            "--approve",
        ],
    )
    .ok();
    w.run(
        "tomas",
        &[
            "release",
            "review",
            &p.release,
            "--layer",
            "technical",
            "--approve",
        ],
    )
    .ok();
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
