//! `pledger demo`: the whole seed story, narrated, on a private throwaway nats-server. Every
//! step is a real `pledger` command line run through the same code as the CLI.

use clap::Parser;
use pledger_infra::server::EphemeralServer;
use pledger_infra::worker::WorkerKind;

use crate::app::App;
use crate::cli::Cli;
use crate::failure::{Exit, Failure};

const ARTIFACT_V1: &str = r#"# support-triage v1: the version serving production today
instructions = """
You are the support triage assistant for Acme.
Classify the customer's message into one of: billing, outage, account, other.
Reply with the category and one sentence of reasoning."""
known_limitations = ["Misclassifies mixed billing/outage messages"]

[model]
family = "gpt-4o"
temperature = 0.2

[tools]
schema_version = "none"
"#;

const ARTIFACT_V2_JSON: &str = r#"{
  "notes": "Ask one clarifying question on ambiguous messages; use the ticket lookup tool.",
  "known_limitations": ["Clarifying question adds one turn on ambiguous messages"],
  "tools": { "schema_version": "ticket-lookup/2" },
  "model": { "temperature": 0.1, "family": "gpt-4o", "max_output_tokens": 300 },
  "retrieval": { "source": "kb-articles", "top_k": 4 },
  "instructions": "You are the support triage assistant for Acme.\nClassify the customer's message into one of: billing, outage, account, other.\nIf the message is ambiguous, ask exactly one clarifying question instead of guessing.\nUse the ticket lookup tool when the customer cites a ticket number.\nReply with the category and one sentence of reasoning."
}"#;

const PLAN: &str = r#"# Rollout by traffic segment: internal users, one geography, then everyone.
[[stages]]
name = "internal"
match = { user_kind = "internal" }
percent = 100
min_samples = 200

[[stages]]
name = "eu-quarter"
match = { geo = "eu" }
percent = 25
min_samples = 3000
min_bake = "2h"

[[stages]]
name = "everyone"
percent = 100
min_samples = 5000
min_bake = "4h"

[guardrails]
fallback_rate = { max_rate = 0.05, max_increase = 0.02 }
escalation_rate = { max_increase = 0.01 }
manual_correction_rate = { max_rate = 0.10 }

[rollback]
criteria = "Any guardrail breach against the concurrent control, or a P1 incident tied to triage."
automatic = true

[advance]
automatic = true
"#;

fn bundle(candidate: &str, baseline: &str) -> String {
    serde_json::json!({
        "candidate": candidate,
        "baseline": baseline,
        "suite": "triage-regression-2026-11",
        "segments": [
            { "name": "billing", "cases": 420, "candidate_pass_rate": 0.962, "baseline_pass_rate": 0.951 },
            { "name": "outage", "cases": 310, "candidate_pass_rate": 0.948, "baseline_pass_rate": 0.944 },
            { "name": "account", "cases": 280, "candidate_pass_rate": 0.971, "baseline_pass_rate": 0.975 }
        ],
        "hard_negatives": {
            "ambiguous": { "cases": 90, "candidate_pass_rate": 0.91, "baseline_pass_rate": 0.72 },
            "adversarial": { "cases": 60, "candidate_pass_rate": 0.95, "baseline_pass_rate": 0.95 },
            "long_context": { "cases": 40, "candidate_pass_rate": 0.90, "baseline_pass_rate": 0.89 },
            "partial_tool_failure": { "cases": 35, "candidate_pass_rate": 0.88, "baseline_pass_rate": 0.0 }
        },
        "regressions": [
            { "case": "acct-0193", "segment": "account", "detail": "asks a clarifying question on a clear password-reset request" }
        ],
        "latency_ms": { "candidate_p50": 610, "baseline_p50": 580, "candidate_p95": 1240, "baseline_p95": 1190 },
        "tokens_per_request": { "candidate": 512, "baseline": 455 },
        "cost_per_request_usd": { "candidate": 0.0026, "baseline": 0.0022 },
        "expected_changes": ["Ambiguous messages get one clarifying question instead of a guess"]
    })
    .to_string()
}

const ARTIFACT_V3: &str = r#"# support-triage v3: v2's clarifying question, without refusing account recovery
instructions = """
You are the support triage assistant for Acme.
Classify the customer's message into one of: billing, outage, account, other.
If the message is ambiguous, ask exactly one clarifying question instead of guessing.
Password resets and account recovery are routine: never refuse them; classify them as account.
Look a ticket up before citing it, and cite only tickets the lookup returned.
Reply with the category and one sentence of reasoning."""
known_limitations = ["Clarifying question adds one turn on ambiguous messages"]

[model]
family = "gpt-4o"
temperature = 0.1

[tools]
schema_version = "ticket-lookup/2"
"#;

/// v3's bundle: flat cost, and `covers` as the regression cases it tested.
fn bundle_v3(candidate: &str, baseline: &str, covers: &[String]) -> String {
    let mut b: serde_json::Value =
        serde_json::from_str(&bundle(candidate, baseline)).expect("json");
    b["suite"] = "triage-regression-2026-11b".into();
    b["tokens_per_request"] = serde_json::json!({ "candidate": 470, "baseline": 455 });
    b["cost_per_request_usd"] = serde_json::json!({ "candidate": 0.00225, "baseline": 0.0022 });
    b["covers_regressions"] = serde_json::json!(covers);
    b.to_string()
}

struct Demo {
    app_url: String,
    dir: tempfile::TempDir,
}

/// The demo's people and their roles (each gets a throwaway key in the demo's keyring).
const PEOPLE: [(&str, &[&str]); 5] = [
    ("priya", &["reviewer"]),
    ("tomas", &["reviewer"]),
    ("ci-bot", &["ci"]),
    ("oncall-sam", &["oncall"]),
    ("ana", &["author"]),
];

impl Demo {
    fn say(&self, text: &str) {
        println!("\n{text}");
    }

    fn act(&self, title: &str) {
        println!("\n== {title} ==");
    }

    /// The demo's config dir: its keyring holds the cast's throwaway keys.
    fn config_dir(&self) -> String {
        self.dir.path().join("config").display().to_string()
    }

    fn file(&self, name: &str, text: &str) -> Result<String, Failure> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)
            .map_err(|e| Failure::other(format!("demo: cannot write {}: {e}", path.display())))?;
        Ok(path.display().to_string())
    }

    /// Waits (up to 60 s) until the release's current stage index is `stage`.
    async fn wait_for_stage(&self, release: &str, stage: u64) -> Result<(), Failure> {
        self.wait_for(release, |v| v["release"]["status"]["stage"] == stage)
            .await
    }

    async fn wait_for_state(&self, release: &str, state: &str) -> Result<(), Failure> {
        self.wait_for(release, |v| v["state"] == state).await
    }

    /// Polls `release show` (the ledger) until `done` holds: the workers act on their own.
    async fn wait_for(
        &self,
        release: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<(), Failure> {
        let show = || {
            Cli::try_parse_from([
                "pledger",
                "--nats",
                &self.app_url,
                "--config-dir",
                &self.config_dir(),
                "--json",
                "release",
                "show",
                release,
            ])
            .expect("parses")
        };
        let app = App::from_cli(&show());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(report) = app.run(show().command).await {
                if done(&report.json) {
                    return Ok(());
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(Failure::other(format!(
                    "demo: the workers did not act on {release} within 60 s"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The command line of a step: the demo's server and keyring, signing as `actor`.
    fn cli(&self, actor: &str, args: &[&str]) -> Result<Cli, clap::Error> {
        let config = self.config_dir();
        let mut argv = vec![
            "pledger",
            "--nats",
            &self.app_url,
            "--config-dir",
            &config,
            "--as",
            actor,
        ];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
    }

    /// Runs a command quietly with `--json` and returns its object (for values the story
    /// needs, such as case ids).
    async fn json(&self, actor: &str, args: &[&str]) -> Result<serde_json::Value, Failure> {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let cli = self
            .cli(actor, &with_json)
            .map_err(|e| Failure::other(format!("demo step does not parse: {e}")))?;
        Ok(App::from_cli(&cli).run(cli.command).await?.json)
    }

    /// Polls `check` (every 100 ms, up to 60 s) until it holds: the workers act on their own.
    async fn until(
        &self,
        what: &str,
        actor: &str,
        args: &[&str],
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<(), Failure> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(v) = self.json(actor, args).await {
                if check(&v) {
                    return Ok(());
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(Failure::other(format!(
                    "demo: {what} did not happen within 60 s"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Runs one pledger command line as `actor`; returns its text output. A step whose exit
    /// code differs from `expect` stops the demo.
    async fn run(&self, actor: &str, args: &[&str], expect: Exit) -> Result<String, Failure> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') || a.is_empty() {
                    format!("{a:?}")
                } else {
                    a.to_string()
                }
            })
            .map(|a| a.replace(&self.dir.path().display().to_string(), "."))
            .collect();
        println!("\n$ pledger --as {actor} {}", shown.join(" "));
        let cli = self
            .cli(actor, args)
            .map_err(|e| Failure::other(format!("demo step does not parse: {e}")))?;
        let app = App::from_cli(&cli);
        let (text, exit) = match app.run(cli.command).await {
            Ok(report) => (report.text, report.exit),
            Err(f) => (format!("error: {}", f.message), f.exit),
        };
        for line in text.trim_end().lines() {
            println!("  {line}");
        }
        if exit != Exit::Success {
            println!("  (exit code {})", exit as i32);
        }
        if exit != expect {
            return Err(Failure::other(format!(
                "demo step `{}` exited {} where {} was expected",
                shown.join(" "),
                exit as i32,
                expect as i32
            )));
        }
        Ok(text.trim().to_string())
    }
}

/// Publishes, with a plain NATS client, a copy of the release's product review turned into a
/// technical approval by "carol": what anyone who can reach NATS could try.
async fn forge_review(demo: &Demo, release: &str) -> Result<(), Failure> {
    let log = demo
        .json("auditor", &["audit", "log", "support-triage"])
        .await?;
    let review = log["events"]
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|e| e["event"]["kind"] == "release.review_submitted")
        })
        .cloned()
        .ok_or_else(|| Failure::other("demo: no review to copy"))?;
    let mut forged = review["event"].clone();
    forged["event_id"] = serde_json::json!(uuid::Uuid::now_v7().to_string());
    forged["actor"] = serde_json::json!("carol");
    forged["payload"]["reviewer"] = serde_json::json!("carol");
    forged["payload"]["layer"] = serde_json::json!("technical");
    forged["payload"]["verdict"] = serde_json::json!("approve");
    let subject = review["subject"].as_str().unwrap_or_default().to_string();
    let client = pledger_infra::connect(&demo.app_url).await?;
    async_nats::jetstream::new(client)
        .publish(subject.clone(), forged.to_string().into())
        .await
        .map_err(|e| Failure::other(format!("demo: {e}")))?
        .await
        .map_err(|e| Failure::other(format!("demo: {e}")))?;
    println!("  (published on {subject}: {release}, technical, approve, actor carol)");
    Ok(())
}

pub async fn run() -> Result<(), Failure> {
    println!("Prompt Ledger demo: a prompt change taken from artifact to rollback, on a private throwaway nats-server.");
    let server = tokio::task::spawn_blocking(EphemeralServer::start)
        .await
        .map_err(|e| Failure::other(e.to_string()))?
        .map_err(|e| Failure::other(format!("demo: {e}")))?;
    let demo = Demo {
        app_url: server.url(),
        dir: tempfile::tempdir().map_err(|e| Failure::other(format!("demo: {e}")))?,
    };
    println!(
        "nats-server running at {} with its store in a temporary directory.",
        server.url()
    );
    use Exit::{Conflict, GateFailed, Rejected, Success};

    demo.act("1. The ledger, who may do what, and a prompt that already serves production");
    // Maria already has a key (the one she signs git commits with); here, a throwaway one.
    crate::keys::Keyring::in_config_dir(std::path::Path::new(&demo.config_dir()))
        .generate("maria")?;
    demo.say("Maria creates the ledger and enrols herself as its first admin (trust on first use: auditors pin this event):");
    demo.run("maria", &["init", "--admin", "maria"], Success)
        .await?;
    demo.run(
        "maria",
        &[
            "identity",
            "roles",
            "maria",
            "--role",
            "admin",
            "--role",
            "author",
            "--role",
            "reviewer",
            "--role",
            "release-manager",
            "--role",
            "oncall",
        ],
        Success,
    )
    .await?;
    demo.say(
        "She enrols the others; each gets a key in the local keyring, and `--as NAME` picks it:",
    );
    for (name, roles) in PEOPLE {
        let mut args = vec!["identity", "add", name, "--generate"];
        for r in roles {
            args.extend(["--role", r]);
        }
        if name == "priya" {
            demo.run("maria", &args, Success).await?;
        } else {
            demo.json("maria", &args).await?;
        }
    }
    // The workers' keys live under their data dir; each is enrolled with the worker role.
    let worker_keys = crate::workers::worker_keyring(&demo.dir.path().join("workers"));
    for kind in WorkerKind::ALL {
        let name = pledger_infra::worker::WorkerContext::identity_name(kind);
        worker_keys.generate(name)?;
        let public = worker_keys.path(name).with_extension("pub");
        let public = public.display().to_string();
        demo.json(
            "maria",
            &[
                "identity",
                "add",
                name,
                "--public-key",
                &public,
                "--role",
                kind.role().name(),
            ],
        )
        .await?;
    }
    demo.run("auditor", &["identity", "list"], Success).await?;
    demo.say(
        "Every event from here on is signed by the key of the person (or worker) who caused it.",
    );
    demo.run(
        "maria",
        &[
            "prompt",
            "register",
            "support-triage",
            "--owner",
            "support-platform",
        ],
        Success,
    )
    .await?;
    let v1_file = demo.file("triage-v1.toml", ARTIFACT_V1)?;
    let v1 = demo
        .run(
            "maria",
            &["prompt", "publish", "support-triage", &v1_file],
            Success,
        )
        .await?;
    demo.say("Publishing identical content again is idempotent: same content, same id.");
    demo.run(
        "maria",
        &["prompt", "publish", "support-triage", &v1_file],
        Success,
    )
    .await?;
    demo.run(
        "maria",
        &[
            "prompt",
            "adopt",
            "support-triage",
            &v1[7..19],
            "--reason",
            "serving production since March",
        ],
        Success,
    )
    .await?;

    demo.act("2. A new version, as JSON this time, and what actually changed");
    let v2_file = demo.file("triage-v2.json", ARTIFACT_V2_JSON)?;
    let v2 = demo
        .run(
            "maria",
            &["prompt", "publish", "support-triage", &v2_file],
            Success,
        )
        .await?;
    demo.run(
        "maria",
        &["prompt", "diff", "support-triage", &v1[7..19], &v2[7..19]],
        Success,
    )
    .await?;

    demo.act("3. A proposal and its two-layer review");
    let release = demo
        .run(
            "maria",
            &[
                "release",
                "propose",
                "support-triage",
                &v2[7..19],
                "--rationale",
                "Stop guessing on ambiguous messages",
                "--expected-change",
                "Ambiguous messages get one clarifying question",
            ],
            Success,
        )
        .await?;
    demo.say("The author cannot review her own change:");
    demo.run(
        "maria",
        &[
            "release",
            "review",
            &release,
            "--layer",
            "product",
            "--approve",
        ],
        Rejected,
    )
    .await?;
    demo.run(
        "priya",
        &[
            "release",
            "review",
            &release,
            "--layer",
            "product",
            "--approve",
            "--note",
            "tone and policy fine; tried 12 ambiguous asks",
        ],
        Success,
    )
    .await?;
    demo.say("Priya gave the product review, so the technical one must come from someone else:");
    demo.run(
        "priya",
        &[
            "release",
            "review",
            &release,
            "--layer",
            "technical",
            "--approve",
        ],
        Rejected,
    )
    .await?;
    demo.run(
        "tomas",
        &[
            "release",
            "review",
            &release,
            "--layer",
            "technical",
            "--request-changes",
            "--note",
            "what happens when ticket lookup times out?",
        ],
        Success,
    )
    .await?;
    demo.say("A request for changes blocks the gate until that layer approves again:");
    demo.run("ci-bot", &["release", "gate", &release], Rejected)
        .await?;
    demo.say("Someone with raw NATS access forges a technical approval by \"carol\", copied from Priya's review:");
    forge_review(&demo, &release).await?;
    demo.say("Readers verify every event: the forgery is not counted, and is named:");
    demo.run("maria", &["release", "show", &release], Success)
        .await?;
    demo.run(
        "tomas",
        &[
            "release",
            "review",
            &release,
            "--layer",
            "technical",
            "--approve",
            "--note",
            "partial tool failure covered by 35 cases",
        ],
        Success,
    )
    .await?;

    demo.act("4. The eval bundle and the release gate");
    let bundle_file = demo.file("bundle.json", &bundle(&v2, &v1))?;
    demo.run(
        "ci-bot",
        &["release", "attach-eval", &release, &bundle_file],
        Success,
    )
    .await?;
    demo.say("Quality is up, but tokens and cost per request rose more than 10%: the gate fails (exit 6).");
    demo.run("ci-bot", &["release", "gate", &release], GateFailed)
        .await?;
    demo.say("The same evidence is not re-decided:");
    demo.run("ci-bot", &["release", "gate", &release], Rejected)
        .await?;
    demo.say("A named person other than the author accepts the trade-off, with a reason; that is new evidence:");
    demo.run(
        "priya",
        &[
            "release",
            "accept-tradeoff",
            &release,
            "--reason",
            "one extra turn beats a wrong triage; +18% cost is within budget",
        ],
        Success,
    )
    .await?;
    demo.run("ci-bot", &["release", "gate", &release], Success)
        .await?;

    demo.act("5. Workers take over: the router, the gatekeeper and the canary monitor");
    let (stop_workers, workers_rx) = tokio::sync::watch::channel(false);
    let mut workers = crate::workers::spawn(
        &WorkerKind::ALL,
        &demo.app_url,
        &demo.dir.path().join("workers"),
        None,
        "demo",
        workers_rx,
    )
    .await?;
    println!("(workers running in this process, each with its own sled store)");
    let plan_file = demo.file("plan.toml", PLAN)?;
    demo.run("maria", &["rollout", "plan", &release, &plan_file], Success)
        .await?;
    demo.run("maria", &["rollout", "start", &release], Success)
        .await?;
    demo.say(
        "The runtime config layer sends internal users to the candidate, everyone else to stable:",
    );
    demo.run(
        "checkout-svc",
        &[
            "resolve",
            "support-triage",
            "--unit",
            "user-17",
            "--attr",
            "user_kind=internal",
        ],
        Success,
    )
    .await?;
    demo.run(
        "checkout-svc",
        &[
            "resolve",
            "support-triage",
            "--unit",
            "user-42",
            "--attr",
            "user_kind=customer",
            "--attr",
            "geo=us",
        ],
        Success,
    )
    .await?;
    demo.say("Services report outcomes; here a simulator plays 3,000 requests, a fifth of them from internal users:");
    let segments = [
        "--segment",
        "user_kind=internal:1",
        "--segment",
        "user_kind=customer,geo=eu:2",
        "--segment",
        "user_kind=customer,geo=us:2",
    ];
    let mut healthy = vec![
        "sim",
        "support-triage",
        "--requests",
        "3000",
        "--seed",
        "11",
    ];
    healthy.extend_from_slice(&segments);
    demo.run("checkout-svc", &healthy, Success).await?;
    demo.say("The internal stage has its 200 samples per arm and no breach, and the plan allows automatic advancement:");
    demo.wait_for_stage(&release, 1).await?;
    demo.run("maria", &["release", "show", &release], Success)
        .await?;
    demo.say("A person's advance is refused while the stage lacks its samples and bake time (unless --force --reason):");
    demo.run("maria", &["rollout", "advance", &release], Rejected)
        .await?;
    demo.say("Someone pressing advance from a stage the release already left is told it moved meanwhile (exit 4):");
    demo.run(
        "maria",
        &["rollout", "advance", &release, "--from", "internal"],
        Conflict,
    )
    .await?;

    demo.act("6. A regression in production: automatic freeze and rollback");
    demo.say("From now on the candidate escalates 12% of conversations (the baseline about 2%):");
    let mut regressed = vec![
        "sim",
        "support-triage",
        "--requests",
        "6000",
        "--seed",
        "12",
        "--regression-after",
        "0",
        "--regression-rate",
        "0.12",
    ];
    regressed.extend_from_slice(&segments);
    demo.run("checkout-svc", &regressed, Success).await?;
    demo.wait_for_state(&release, "rolled_back").await?;
    demo.say("The canary monitor froze the rollout with its evidence and, as the plan says, rolled it back:");
    demo.run("oncall-sam", &["release", "show", &release], Success)
        .await?;
    demo.run(
        "checkout-svc",
        &[
            "resolve",
            "support-triage",
            "--unit",
            "user-42",
            "--attr",
            "geo=eu",
        ],
        Success,
    )
    .await?;
    demo.act("7. The learning loop: production feedback becomes regression cases");
    demo.say("Agents flag what went wrong while the candidate served traffic; the feedback names real people:");
    let examples = [
        (
            "unexpected_refusal",
            "Refused to reset the password for jane.doe@example.com, call +1 415 555 0100",
        ),
        (
            "unexpected_refusal",
            "refused to reset the password for  omar@example.org, call (415) 555-0199",
        ),
        (
            "unexpected_refusal",
            "Refused to reset the password for li.wei@example.net, call +44 20 7946 0958",
        ),
        (
            "wrong_tool_sequence",
            "Cited ticket 88231 before calling ticket lookup",
        ),
        (
            "wrong_tool_sequence",
            "cited ticket 90412 before calling ticket lookup",
        ),
    ];
    let feedback: Vec<serde_json::Value> = examples
        .iter()
        .enumerate()
        .map(|(i, (tag, example))| {
            println!("  {tag}: {example}");
            serde_json::json!({
                "prompt": "support-triage", "version": v2, "release": release,
                "request_id": format!("fb-{i}"), "fallback": false, "escalated": true,
                "manually_corrected": true, "refusal": *tag == "unexpected_refusal",
                "latency_ms": 900.0, "tokens_in": 420, "tokens_out": 90,
                "feedback": { "tag": tag, "example": example }
            })
        })
        .collect();
    let client = pledger_infra::connect(&demo.app_url).await?;
    async_nats::jetstream::new(client)
        .publish(
            pledger_core::names::outcome_subject(
                &pledger_core::PromptName::parse("support-triage").expect("a valid name"),
            ),
            serde_json::to_vec(&feedback).expect("json").into(),
        )
        .await
        .map_err(|e| Failure::other(format!("demo: {e}")))?
        .await
        .map_err(|e| Failure::other(format!("demo: {e}")))?;
    demo.until(
        "the feedback collector",
        "reviewer",
        &["regressions", "list", "support-triage"],
        |v| {
            v["cases"].as_array().is_some_and(|c| {
                c.len() == 2 && c.iter().filter_map(|c| c["count"].as_u64()).sum::<u64>() == 5
            })
        },
    )
    .await?;
    demo.say("The feedback collector redacted them, folded repeats of one failure into one case, and counted them:");
    demo.run("priya", &["regressions", "list", "support-triage"], Success)
        .await?;
    demo.say("Exported as JSONL, ready to add to the eval suite:");
    demo.run(
        "priya",
        &["regressions", "export", "support-triage"],
        Success,
    )
    .await?;
    let _ = stop_workers.send(true);
    while workers.join_next().await.is_some() {}
    let cases: Vec<String> = demo
        .json("priya", &["regressions", "list", "support-triage"])
        .await?["cases"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["case_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();

    demo.act("8. A new candidate must cover the cases before its gate passes");
    let v3_file = demo.file("triage-v3.toml", ARTIFACT_V3)?;
    let v3 = demo
        .json("ana", &["prompt", "publish", "support-triage", &v3_file])
        .await?["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let release2 = demo
        .json(
            "ana",
            &[
                "release",
                "propose",
                "support-triage",
                &v3,
                "--rationale",
                "Keep the clarifying question; never refuse account recovery; look tickets up first",
            ],
        )
        .await?["release"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("\n(ana proposed {release2}: candidate {})", &v3[7..19]);
    for (who, layer) in [("priya", "product"), ("tomas", "technical")] {
        demo.run(
            who,
            &[
                "release",
                "review",
                &release2,
                "--layer",
                layer,
                "--approve",
                "--note",
                "replayed both regression cases",
            ],
            Success,
        )
        .await?;
    }
    let v1_full = v1.clone();
    demo.say("Its first bundle lists only one of the two cases; the gate names the one it misses (exit 6):");
    let partial = demo.file(
        "bundle-v3-partial.json",
        &bundle_v3(&v3, &v1_full, &cases[..cases.len().min(1)]),
    )?;
    demo.run(
        "ci-bot",
        &["release", "attach-eval", &release2, &partial],
        Success,
    )
    .await?;
    demo.run("ci-bot", &["release", "gate", &release2], GateFailed)
        .await?;
    demo.say("The suite now replays both cases, and the gate passes:");
    let full = demo.file("bundle-v3.json", &bundle_v3(&v3, &v1_full, &cases))?;
    demo.run(
        "ci-bot",
        &["release", "attach-eval", &release2, &full],
        Success,
    )
    .await?;
    demo.run("ci-bot", &["release", "gate", &release2], Success)
        .await?;

    demo.act("9. The weekly digest");
    demo.say("Every Monday the scheduler records last week's digest on the ledger, once; this week's is a preview:");
    demo.run(
        "maria",
        &[
            "digest",
            "--week",
            &pledger_infra::ledger::now().to_rfc3339()[..10],
        ],
        Success,
    )
    .await?;

    demo.act(
        "10. The audit log: every proposal, review, eval, gate, rollout step, freeze, rollback and case",
    );
    demo.run("auditor", &["audit", "log", "support-triage"], Success)
        .await?;

    demo.act("11. An auditor who trusts neither us nor the server");
    demo.say("The notary worker signs a checkpoint of the ledger's Merkle tree after every gate, freeze, rollback and completion. The auditor keeps the latest outside NATS:");
    demo.until(
        "a checkpoint of the ledger",
        "auditor",
        &["audit", "checkpoint"],
        |v| v["size"].as_u64().is_some_and(|n| n > 0),
    )
    .await?;
    let kept = demo.dir.path().join("kept-checkpoint.txt");
    let kept = kept.display().to_string();
    demo.run("auditor", &["audit", "checkpoint", "--out", &kept], Success)
        .await?;
    demo.say("Then verifies the whole ledger against it: every signature, key, chain link, role and rule, the stream's settings, every checkpoint. The review forged in act 3 is named; it is why the exit code is 7 (integrity):");
    demo.run(
        "auditor",
        &["audit", "verify", "--trusted-checkpoint", &kept],
        Exit::Integrity,
    )
    .await?;

    println!("\nDemo complete. The throwaway server and its store are removed now.");
    drop(server);
    Ok(())
}
