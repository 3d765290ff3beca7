//! `pledger bench`: measures pledger against its performance targets, each figure beside a
//! baseline measured in the same run, on one private throwaway nats-server (free port,
//! temporary store, `sync_interval: always`) started in this process.
//!
//! Sections:
//! 1. outcome ingest into the canary monitor, against a bare durable consumer of the same
//!    pre-filled stream;
//! 2. breach to reroute: from the outcome message that makes a breach decidable to a
//!    `Resolver` returning the stable version, against a bare routing-KV write;
//! 3. manual rollback (the CLI's path, in-process) to 100 resolvers, against a bare routing-KV
//!    write to the same resolvers;
//! 4. `Resolver::resolve` cost, against `pledger_core::routing::resolve`;
//! 5. judgement quality (pure core), against the fixed-threshold baseline on the same traffic;
//! 6. resident memory of `pledger up` (a child process with its own server) with 100 active
//!    rollouts under outcome load, against the same process idle;
//! 7. `release propose` through `Ledger::execute`, signed, against the same proposal without
//!    signing or verification (rebuilt from the public pieces), with the seal and the
//!    verification of the read timed alone in-process;
//! 8. verification throughput on read: `LedgerVerifier::observe` over a generated signed
//!    ledger, against decoding alone;
//! 9. `release propose` on prompts with 100, 1,000 and 5,000 events of history, signed and
//!    unsigned;
//! 10. sections 2 and 3 and the proposal of section 7 again on a throwaway three-node cluster
//!     with every stream and bucket at three replicas (R3), each figure beside the single
//!     node's from sections 2, 3 and 7 of the same run;
//! 11. the auditor on its own throwaway server and a signed ledger of 100,000 events with a
//!     notary checkpoint: `audit verify` (in process, as the CLI runs it), on every core and on
//!     one thread, and its verification alone, against a raw ordered read of the same stream;
//!     `audit replay --at` (a time, a sequence) as a child process of this binary, against
//!     `prompt show` run the same way.
//!
//! Sections 7 to 9 run on the same server right after section 3 and are reported in order;
//! section 10 runs once that server has stopped, then section 11 on its own server, before
//! sections 4 to 6.
//!
//! `--quick` shrinks every workload; `--write PATH` also writes the report as Markdown.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use futures::StreamExt;
use pledger_client::{RequestContext, Resolver, ResolverOptions};
use pledger_core::audit::{AuditReport, Auditor, FoundCheckpoint, StreamFacts};
use pledger_core::canary::{judge, ArmStats, JudgeConfig, Verdict};
use pledger_core::event::{ReviewLayer, ReviewVerdict};
use pledger_core::identity::Role;
use pledger_core::names::LEDGER_SUBJECTS;
use pledger_core::outcome::{outcome_subject, parse_outcome_message, Outcome};
use pledger_core::plan::{GuardrailLimit, Guardrails};
use pledger_core::routing::{routing_table_for, Arm, RoutingTable};
use pledger_core::sim::{
    aa_false_freeze_rate, samples_to_detect, AaSetup, ArmProfile, DetectionSetup, RateMetric,
};
use pledger_core::verify::{seal, EventSigner, LedgerVerifier, Sealed};
use pledger_core::{
    Actor, Artifact, Command, Context, Envelope, EvalBundle, Event, FileFormat, PromptName,
    PromptState, ReleaseId, RolloutPlan, Rule, VersionId,
};
use pledger_infra::cast::Cast;
use pledger_infra::ledger::{
    envelope_for, family_filter, identify, subject_for, RawRecord, FLEET_WINDOWS_SUBJECT,
    LEDGER_STREAM, OUTCOMES_STREAM, ROSTER_SUBJECT,
};
use pledger_infra::server::{free_port, EphemeralCluster, EphemeralServer};
use pledger_infra::worker::{ack_batch, canary, Batches, WorkerContext, WorkerKind};
use pledger_infra::{ExecuteError, Executed, Ledger, RoutingStore};
use tokio::sync::watch;

use crate::app::App;
use crate::cli::{BenchArgs, Cli};
use crate::failure::Failure;

/// How to reproduce the figures of record.
pub const REPRODUCE: &str = "cargo run --release -p pledger -- bench";

// ---------------------------------------------------------------------------------------------
// Workload sizes
// ---------------------------------------------------------------------------------------------

struct Sizes {
    /// Section 1: messages pre-filled, outcomes per message.
    ingest_messages: usize,
    ingest_batch: usize,
    /// Alternating timed drains of the baseline and the monitor (the median is reported).
    ingest_reps: usize,
    /// Section 2: trials (a new prompt each).
    reroute_trials: usize,
    /// Section 3: resolvers and trials.
    fanout_resolvers: usize,
    fanout_trials: usize,
    /// Trials of the bare routing-KV write (baseline of sections 2 and 3).
    floor_trials: usize,
    /// Section 4: calls per timed run, and runs (the best is kept).
    resolve_calls: usize,
    resolve_runs: usize,
    /// Section 5.
    aa_canaries: usize,
    detect_runs: usize,
    /// Section 6: prompts with an active rollout, and how long outcomes are published.
    memory_prompts: usize,
    memory_load: Duration,
    /// Section 14: ledger changes timed to the open release page.
    page_trials: usize,
    /// Section 13: prompts releasing at once, and the completed releases at which resident
    /// memory is read (the first is the baseline: by then each prompt has more ended releases
    /// than its live state keeps, `state::RECENT`).
    churn_prompts: usize,
    churn_marks: Vec<usize>,
    /// Section 7: signed and unsigned proposals (a fresh pair of prompts each), and calls per
    /// in-process piece (the median is reported).
    sign_trials: usize,
    piece_reps: usize,
    /// Section 8: events in the generated family, and timed passes over it (the best is kept).
    verify_events: usize,
    verify_runs: usize,
    /// Section 9: history lengths, and signed and unsigned proposals at each.
    history_sizes: Vec<usize>,
    history_trials: usize,
    /// Section 12: history lengths read from a snapshot (the first is the baseline), timed
    /// proposals and `prompt show` runs at each.
    snapshot_sizes: Vec<usize>,
    snapshot_trials: usize,
    /// Section 10, on the R3 cluster: breach-to-reroute trials, rollback trials (to
    /// `fanout_resolvers` resolvers), trials of each bare routing-KV write, signed and unsigned
    /// proposals.
    cluster_reroute_trials: usize,
    cluster_fanout_trials: usize,
    cluster_floor_trials: usize,
    cluster_sign_trials: usize,
    /// Section 11, on its own server: events on the generated ledger (besides the roster),
    /// the prompts they are spread over, timed runs of each `audit verify` measure and of its
    /// baseline (alternating; the median is reported), and runs of each child command.
    audit_events: usize,
    audit_prompts: usize,
    audit_reps: usize,
    replay_runs: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            ingest_messages: 5_000,
            ingest_batch: 100,
            ingest_reps: 3,
            reroute_trials: 100,
            fanout_resolvers: 100,
            fanout_trials: 50,
            floor_trials: 100,
            resolve_calls: 2_000_000,
            resolve_runs: 5,
            aa_canaries: 1_000,
            detect_runs: 201,
            memory_prompts: 100,
            memory_load: Duration::from_secs(5),
            page_trials: 40,
            churn_prompts: 5,
            churn_marks: vec![100, 1_000, 5_000, 10_000],
            sign_trials: 100,
            piece_reps: 1_000,
            verify_events: 5_000,
            verify_runs: 5,
            history_sizes: vec![100, 1_000, 5_000],
            snapshot_sizes: vec![100, 10_000, 100_000],
            snapshot_trials: 15,
            history_trials: 20,
            cluster_reroute_trials: 30,
            cluster_fanout_trials: 20,
            cluster_floor_trials: 50,
            cluster_sign_trials: 50,
            audit_events: 100_000,
            audit_prompts: 20,
            audit_reps: 3,
            replay_runs: 5,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            ingest_messages: 200,
            ingest_batch: 100,
            ingest_reps: 1,
            reroute_trials: 4,
            fanout_resolvers: 20,
            fanout_trials: 3,
            floor_trials: 5,
            resolve_calls: 100_000,
            resolve_runs: 2,
            aa_canaries: 100,
            detect_runs: 21,
            memory_prompts: 10,
            memory_load: Duration::from_secs(1),
            page_trials: 6,
            churn_prompts: 2,
            churn_marks: vec![40, 200],
            sign_trials: 10,
            piece_reps: 50,
            verify_events: 500,
            verify_runs: 2,
            history_sizes: vec![100, 500],
            snapshot_sizes: vec![100, 1_000],
            snapshot_trials: 3,
            history_trials: 3,
            cluster_reroute_trials: 4,
            cluster_fanout_trials: 3,
            cluster_floor_trials: 5,
            cluster_sign_trials: 10,
            audit_events: 5_000,
            audit_prompts: 5,
            audit_reps: 1,
            replay_runs: 2,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Pass,
    Miss,
    /// A figure without a target of its own.
    Info,
}

impl Mark {
    fn of(pass: bool) -> Mark {
        if pass {
            Mark::Pass
        } else {
            Mark::Miss
        }
    }
    fn word(self) -> &'static str {
        match self {
            Mark::Pass => "PASS",
            Mark::Miss => "MISS",
            Mark::Info => "",
        }
    }
}

struct Row {
    measure: String,
    value: String,
    baseline: String,
    target: String,
    mark: Mark,
}

fn row(
    measure: impl Into<String>,
    value: impl Into<String>,
    baseline: impl Into<String>,
    target: impl Into<String>,
    mark: Mark,
) -> Row {
    Row {
        measure: measure.into(),
        value: value.into(),
        baseline: baseline.into(),
        target: target.into(),
        mark,
    }
}

struct Section {
    number: u8,
    title: &'static str,
    /// What the baseline column is.
    baseline: String,
    method: String,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// The headings of the figure and baseline columns in the section's own table.
    heads: [&'static str; 2],
}

impl Section {
    fn new(number: u8, title: &'static str) -> Section {
        Section {
            number,
            title,
            baseline: String::new(),
            method: String::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            heads: [HEAD[1], HEAD[2]],
        }
    }

    /// The section's column headings: [`HEAD`] with the figure and baseline columns renamed.
    fn head(&self) -> [&'static str; 5] {
        [HEAD[0], self.heads[0], self.heads[1], HEAD[3], HEAD[4]]
    }

    fn verdict(&self) -> Mark {
        if self.rows.iter().any(|r| r.mark == Mark::Miss) {
            Mark::Miss
        } else if self.rows.iter().any(|r| r.mark == Mark::Pass) {
            Mark::Pass
        } else {
            Mark::Info
        }
    }
}

struct Report {
    quick: bool,
    facts: Vec<(&'static str, String)>,
    sections: Vec<Section>,
    elapsed: Duration,
}

const HEAD: [&str; 5] = ["measure", "pledger", "baseline", "target", "result"];

fn cells(r: &Row) -> [&str; 5] {
    [&r.measure, &r.value, &r.baseline, &r.target, r.mark.word()]
}

impl Report {
    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pledger bench{}: {} sections in {:.0} s on a throwaway nats-server and a throwaway three-node cluster (sync_interval: always)",
            if self.quick { " --quick (shrunk workloads: a smoke test, not figures of record)" } else { "" },
            self.sections.len(),
            self.elapsed.as_secs_f64()
        );
        for (k, v) in &self.facts {
            let _ = writeln!(out, "  {k:<14} {v}");
        }
        for s in &self.sections {
            let _ = writeln!(
                out,
                "\n{}. {}  [{}]",
                s.number,
                s.title,
                match s.verdict() {
                    Mark::Info => "INFO",
                    m => m.word(),
                }
            );
            let head = s.head();
            let mut widths = head.map(str::len);
            for r in &s.rows {
                for (w, c) in widths.iter_mut().zip(cells(r)) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |c: [&str; 5]| {
                let mut l = String::from("   ");
                for (i, (cell, w)) in c.iter().zip(widths).enumerate() {
                    let pad = w.saturating_sub(cell.chars().count());
                    l.push_str(cell);
                    if i < 4 {
                        l.push_str(&" ".repeat(pad + 2));
                    }
                }
                l.trim_end().to_string()
            };
            let _ = writeln!(out, "{}", line(head));
            for r in &s.rows {
                let _ = writeln!(out, "{}", line(cells(r)));
            }
            let _ = writeln!(out, "   baseline: {}", s.baseline);
            let _ = writeln!(out, "   method: {}", s.method);
            for n in &s.notes {
                let _ = writeln!(out, "   - {n}");
            }
        }
        let _ = writeln!(out, "\nsummary (every figure with a target):");
        for (s, r) in self.targets() {
            let _ = writeln!(
                out,
                "  {}  {}. {}: {} = {} (baseline {}; target {})",
                r.mark.word(),
                s.number,
                s.title,
                r.measure,
                r.value,
                r.baseline,
                r.target
            );
        }
        let _ = writeln!(out, "\nreproduce: {REPRODUCE}");
        out
    }

    /// Every row with a target, with its section.
    fn targets(&self) -> Vec<(&Section, &Row)> {
        self.sections
            .iter()
            .flat_map(|s| s.rows.iter().map(move |r| (s, r)))
            .filter(|(_, r)| r.mark != Mark::Info)
            .collect()
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Performance\n");
        let _ = writeln!(
            out,
            "Generated by `pledger bench{}` (do not edit by hand; rerun it). Reproduce with:\n\n```sh\n{REPRODUCE}\n# and to rewrite this file:\ncargo build --release -p pledger && ./target/release/pledger bench --write docs/PERFORMANCE.md\n```\n",
            if self.quick { " --quick" } else { "" }
        );
        if self.quick {
            let _ = writeln!(out, "**These are `--quick` figures (shrunk workloads): a smoke test, not figures of record.**\n");
        }
        let _ = writeln!(
            out,
            "Every figure stands beside a baseline measured in the same run, on the same machine, against the same \
             throwaway nats-server (free port, temporary store, `sync_interval: always`: an fsync before every \
             acknowledgement), started by the bench in its own process. Section 10 repeats the measures of \
             sections 2, 3 and 7 on a throwaway three-node cluster on this machine (the same config per node, \
             every stream and bucket at three replicas), beside the single node's figures; section 11 \
             runs on a throwaway server of its own (the same config) with a ledger of its own. Latency percentiles \
             are nearest-rank over sorted samples; timing is `std::time::Instant`. The whole run took {:.0} s.\n",
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(out, "## Machine\n\n| fact | value |\n| --- | --- |");
        for (k, v) in &self.facts {
            let _ = writeln!(out, "| {k} | {} |", md_cell(v));
        }
        let _ = writeln!(
            out,
            "\n## Summary\n\n| section | measure | pledger | baseline | target | result |\n| --- | --- | ---: | ---: | --- | --- |"
        );
        for (s, r) in self.targets() {
            let c = cells(r);
            let _ = writeln!(
                out,
                "| {}. {} | {} | {} | {} | {} | **{}** |",
                s.number,
                md_cell(s.title),
                md_cell(c[0]),
                md_cell(c[1]),
                md_cell(c[2]),
                md_cell(c[3]),
                c[4]
            );
        }
        for s in &self.sections {
            let _ = writeln!(out, "\n## {}. {}\n", s.number, s.title);
            let _ = writeln!(out, "**Method:** {}\n", s.method);
            let _ = writeln!(out, "**Baseline:** {}.\n", s.baseline);
            let _ = writeln!(out, "| {} |", s.head().join(" | "));
            let _ = writeln!(out, "| --- | ---: | ---: | --- | --- |");
            for r in &s.rows {
                let c = cells(r);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    md_cell(c[0]),
                    md_cell(c[1]),
                    md_cell(c[2]),
                    md_cell(c[3]),
                    match r.mark {
                        Mark::Pass => "**PASS**",
                        Mark::Miss => "**MISS**",
                        Mark::Info => "",
                    }
                );
            }
            if !s.notes.is_empty() {
                let _ = writeln!(out);
                for n in &s.notes {
                    let _ = writeln!(out, "- {n}");
                }
            }
        }
        out
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let head = digits.len() % 3;
    let mut groups: Vec<&str> = Vec::new();
    if head > 0 {
        groups.push(&digits[..head]);
    }
    let mut rest = &digits[head..];
    while !rest.is_empty() {
        groups.push(&rest[..3]);
        rest = &rest[3..];
    }
    groups.join(",")
}

fn per_sec(count: u64, d: Duration) -> u64 {
    (count as f64 / d.as_secs_f64().max(1e-9)).round() as u64
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn fail(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::other(format!("bench: {what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Fixtures: real rollouts through the ledger
// ---------------------------------------------------------------------------------------------

/// Stage 1 sends half of all traffic to the candidate; the escalation guardrail never breaches
/// on identical arms; the huge `min_samples` keeps the stage from ever being ready.
const HEALTHY_PLAN: &str = r#"
[[stages]]
name = "half"
percent = 50
min_samples = 1000000000

[[stages]]
name = "everyone"
percent = 100

[guardrails]
escalation_rate = { max_increase = 0.01 }

[rollback]
criteria = "escalation rate more than one point above the control"
automatic = false
"#;

/// As the healthy plan, with an automatic rollback and the default `min_samples`.
const BREACH_PLAN: &str = r#"
[[stages]]
name = "half"
percent = 50

[[stages]]
name = "everyone"
percent = 100

[guardrails]
escalation_rate = { max_increase = 0.01 }

[rollback]
criteria = "escalation rate more than one point above the control"
automatic = true
"#;

/// One stage: every request gets the candidate until the rollback.
const ALL_TRAFFIC_PLAN: &str = r#"
[[stages]]
name = "everyone"
percent = 100

[guardrails]
escalation_rate = { max_increase = 0.01 }

[rollback]
criteria = "on-call judgement"
automatic = false
"#;

fn plan(text: &str) -> RolloutPlan {
    RolloutPlan::from_text(text, FileFormat::Toml).expect("the bench's plans are valid")
}

fn artifact(n: u32) -> Artifact {
    Artifact::from_text(
        &format!(
            "instructions = \"Classify the customer's message (bench version {n}).\"\nknown_limitations = [\"none known\"]\n\n[model]\nfamily = \"gpt-4o\"\ntemperature = 0.2\n\n[tools]\nschema_version = \"none\"\n"
        ),
        FileFormat::Toml,
    )
    .expect("the bench's artifacts are valid")
}

fn bundle(candidate: &VersionId, baseline: &VersionId) -> EvalBundle {
    let json = serde_json::json!({
        "candidate": candidate,
        "baseline": baseline,
        "suite": "bench",
        "segments": [
            { "name": "billing", "cases": 100, "candidate_pass_rate": 0.95, "baseline_pass_rate": 0.94 }
        ],
        "hard_negatives": {
            "ambiguous": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "adversarial": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "long_context": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "partial_tool_failure": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 }
        },
        "regressions": [],
        "latency_ms": { "candidate_p50": 100, "baseline_p50": 100, "candidate_p95": 200, "baseline_p95": 200 },
        "cost_per_request_usd": { "candidate": 0.001, "baseline": 0.001 },
        "expected_changes": []
    });
    EvalBundle::from_text(&json.to_string(), FileFormat::Json).expect("the bench's bundle is valid")
}

/// A prompt with a release rolling out: what outcomes and resolutions name.
#[derive(Clone)]
struct Rollout {
    prompt: PromptName,
    release: ReleaseId,
    stable: VersionId,
    candidate: VersionId,
    /// Stream sequence of the `rollout_started` event.
    started_at_sequence: u64,
    /// The first stage's visit, as a service's SDK puts it on outcomes.
    stage_visit: Option<String>,
}

/// The bench's people and its canary monitor, with keys held in memory (one set per run,
/// enrolled on every ledger the bench uses).
fn cast() -> &'static Cast {
    static CAST: std::sync::OnceLock<Cast> = std::sync::OnceLock::new();
    CAST.get_or_init(|| {
        Cast::generate(&[
            ("bench-admin", &[Role::Admin]),
            ("maria", &[Role::Author, Role::ReleaseManager, Role::Oncall]),
            ("priya", &[Role::Reviewer]),
            ("tomas", &[Role::Reviewer]),
            ("ci", &[Role::Ci]),
            ("oncall-sam", &[Role::Oncall]),
            ("canary-monitor", &[Role::Worker]),
        ])
    })
}

async fn exec(
    ledger: &Ledger,
    prompt: &PromptName,
    actor: &str,
    command: Command,
) -> Result<Executed, ExecuteError> {
    let key = cast().key(actor);
    ledger
        .execute(prompt, &*key, "bench", move |_| Ok(command.clone()))
        .await
}

/// Proposes `candidate` against `stable` and takes the release to a started rollout on `plan`,
/// with the commands the CLI runs (two reviews by others, an eval bundle, the gate, the plan,
/// the start). Where a gatekeeper runs (`pledger up`) it may decide the gate first.
async fn propose_to_start(
    ledger: &Ledger,
    prompt: &PromptName,
    candidate: &VersionId,
    stable: &VersionId,
    plan: &RolloutPlan,
) -> Result<(ReleaseId, Executed), Failure> {
    let proposed = exec(
        ledger,
        prompt,
        "maria",
        Command::ProposeChange {
            candidate: candidate.clone(),
            rationale: "bench".into(),
            expected_changes: vec![],
        },
    )
    .await?;
    let release = proposed
        .recorded
        .iter()
        .find_map(|r| match &r.envelope.event {
            Event::ChangeProposed(p) => Some(p.release.clone()),
            _ => None,
        })
        .ok_or_else(|| Failure::other("bench: the proposal recorded no release"))?;
    for (actor, layer) in [
        ("priya", ReviewLayer::Product),
        ("tomas", ReviewLayer::Technical),
    ] {
        exec(
            ledger,
            prompt,
            actor,
            Command::SubmitReview {
                release: release.clone(),
                layer,
                verdict: ReviewVerdict::Approve,
                note: None,
            },
        )
        .await?;
    }
    exec(
        ledger,
        prompt,
        "ci",
        Command::AttachEvalBundle {
            release: release.clone(),
            bundle: bundle(candidate, stable),
        },
    )
    .await?;
    // Where a gatekeeper runs (`pledger up`), it may have decided the gate already.
    match exec(
        ledger,
        prompt,
        "ci",
        Command::DecideGate {
            release: release.clone(),
        },
    )
    .await
    {
        Ok(_) => {}
        Err(ExecuteError::Rejected(r)) if r.rule == Rule::GateUnchangedEvidence => {}
        Err(e) => return Err(e.into()),
    }
    exec(
        ledger,
        prompt,
        "maria",
        Command::PlanRollout {
            release: release.clone(),
            plan: plan.clone(),
        },
    )
    .await?;
    let started = exec(
        ledger,
        prompt,
        "maria",
        Command::StartRollout {
            release: release.clone(),
            bucketing_salt: uuid::Uuid::new_v4().simple().to_string(),
            force_reason: None,
        },
    )
    .await?;
    Ok((release, started))
}

/// Takes a new prompt through the whole release story up to a started rollout, with the
/// commands the CLI runs (register, publish twice, adopt, propose, two reviews by others, an
/// eval bundle, the gate, the plan, start), writing the routing table where the CLI does.
async fn start_rollout(
    ledger: &Ledger,
    routing: &RoutingStore,
    prompt: &PromptName,
    plan: &RolloutPlan,
) -> Result<Rollout, Failure> {
    let (v1, v2) = (artifact(1), artifact(2));
    let (stable, candidate) = (v1.version_id(), v2.version_id());
    exec(
        ledger,
        prompt,
        "maria",
        Command::RegisterPrompt {
            owner: "bench".into(),
        },
    )
    .await?;
    for artifact in [v1, v2] {
        exec(
            ledger,
            prompt,
            "maria",
            Command::PublishVersion { artifact },
        )
        .await?;
    }
    let adopted = exec(
        ledger,
        prompt,
        "maria",
        Command::AdoptVersion {
            version: stable.clone(),
            reason: "serving production".into(),
        },
    )
    .await?;
    routing
        .publish(&routing_table_for(&adopted.state, adopted.last_sequence))
        .await?;
    let (release, started) = propose_to_start(ledger, prompt, &candidate, &stable, plan).await?;
    if started.state.active_rollout().is_none() {
        return Err(Failure::other(format!(
            "bench: the rollout of {release} did not start"
        )));
    }
    let table = routing_table_for(&started.state, started.last_sequence);
    routing.publish(&table).await?;
    Ok(Rollout {
        prompt: prompt.clone(),
        release,
        stable,
        candidate,
        started_at_sequence: started.last_sequence,
        stage_visit: table.rollout.and_then(|r| r.stage_visit),
    })
}

/// One outcome of `rollout`, on `arm`, numbered `i`.
fn outcome(r: &Rollout, arm: Arm, i: u64, escalated: bool) -> Outcome {
    Outcome {
        prompt: r.prompt.clone(),
        version: match arm {
            Arm::Candidate => r.candidate.clone(),
            Arm::Baseline => r.stable.clone(),
        },
        release: Some(r.release.clone()),
        arm: Some(arm),
        stage_visit: r.stage_visit.clone(),
        unit: Some(format!("user-{}", i % 10_000)),
        attrs: [
            ("geo".to_string(), "eu".to_string()),
            ("user_kind".to_string(), "external".to_string()),
        ]
        .into(),
        request_id: format!("req-{i}"),
        fallback: false,
        escalated,
        manually_corrected: false,
        refusal: false,
        latency_ms: 400.0 + (i % 97) as f64 * 7.0,
        tokens_in: 300 + i % 50,
        tokens_out: 200 + i % 30,
        cost_usd: Some(0.002),
        feedback: None,
    }
}

/// A healthy batch: arms alternate, and both escalate on the same schedule (2%), so the
/// candidate is never worse than its control.
fn healthy_batch(r: &Rollout, first: u64, n: usize) -> Vec<Outcome> {
    (0..n as u64)
        .map(|j| {
            let i = first + j;
            let arm = if j % 2 == 0 {
                Arm::Candidate
            } else {
                Arm::Baseline
            };
            outcome(r, arm, i, (j / 2) % 50 == 0)
        })
        .collect()
}

/// Waits until a durable consumer has acknowledged every stream sequence up to `sequence`.
async fn wait_acked(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
    sequence: u64,
    poll: Duration,
    limit: Duration,
) -> Result<(), Failure> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| fail("stream")(e.to_string()))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(info) = s.consumer_info(consumer).await {
            if info.ack_floor.stream_sequence >= sequence {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::other(format!(
                "bench: consumer {consumer} did not reach sequence {sequence} within {} s",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

async fn publish(js: &jetstream::Context, subject: &str, payload: Vec<u8>) -> Result<u64, Failure> {
    let ack = js
        .publish(subject.to_string(), payload.into())
        .await
        .map_err(|e| fail("publishing outcomes")(e.to_string()))?
        .await
        .map_err(|e| fail("outcomes not stored")(e.to_string()))?;
    Ok(ack.sequence)
}

/// Starts a canary monitor in this process on a temporary sled store.
async fn spawn_monitor(
    url: &str,
    replica: &str,
    dir: &Path,
) -> Result<
    (
        WorkerContext,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), pledger_infra::worker::WorkerError>>,
    ),
    Failure,
> {
    let client = pledger_infra::connect(url).await?;
    let ctx = WorkerContext::open(
        WorkerKind::Canary,
        replica,
        client,
        dir,
        cast().key("canary-monitor"),
    )
    .await
    .map_err(|e| fail("canary monitor")(e.to_string()))?;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(canary::run(ctx.clone(), rx));
    Ok((ctx, stop, task))
}

/// A canary monitor kept running as `pledger up` keeps it: when it stops (an error, or on its
/// own) it is started again after 1 s on the same store. Returns its consumers' durable names
/// (ledger, outcomes), the stop switch and the supervisor, which returns why the monitor
/// stopped each time it did.
async fn spawn_supervised_monitor(
    url: &str,
    replica: &str,
    dir: &Path,
) -> Result<
    (
        (String, String),
        watch::Sender<bool>,
        tokio::task::JoinHandle<Vec<String>>,
    ),
    Failure,
> {
    let (ctx, mut stop, mut task) = spawn_monitor(url, replica, dir).await?;
    let names = (
        ctx.durable_name(LEDGER_STREAM),
        ctx.durable_name(OUTCOMES_STREAM),
    );
    drop(ctx);
    let (quit, mut quitting) = watch::channel(false);
    let (url, replica, dir) = (url.to_string(), replica.to_string(), dir.to_path_buf());
    let supervisor = tokio::spawn(async move {
        let mut stopped = Vec::new();
        let why = |r: Result<
            Result<(), pledger_infra::worker::WorkerError>,
            tokio::task::JoinError,
        >| match r {
            Ok(Ok(())) => "it stopped on its own".to_string(),
            Ok(Err(e)) => format!("{e}"),
            Err(e) => format!("its task failed: {e}"),
        };
        loop {
            tokio::select! {
                _ = quitting.changed() => {
                    let _ = stop.send(true);
                    if let r @ (Ok(Err(_)) | Err(_)) = task.await {
                        stopped.push(why(r));
                    }
                    return stopped;
                }
                r = &mut task => {
                    let reason = why(r);
                    progress(&format!("  the canary monitor stopped ({reason}); starting it again in 1 s"));
                    stopped.push(reason);
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if *quitting.borrow() {
                            return stopped;
                        }
                        match spawn_monitor(&url, &replica, &dir).await {
                            Ok((_, s, t)) => {
                                (stop, task) = (s, t);
                                break;
                            }
                            Err(e) => stopped.push(format!("restarting it failed: {}", e.message)),
                        }
                    }
                }
            }
        }
    });
    Ok((names, quit, supervisor))
}

async fn stop_monitor(
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), pledger_infra::worker::WorkerError>>,
) -> Result<(), Failure> {
    let _ = stop.send(true);
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(fail("canary monitor")(e.to_string())),
        Err(e) => Err(fail("canary monitor")(e.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat at USER_HZ = 100.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Children of `ppid` named `comm`.
fn children_named(ppid: u32, comm: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let parent = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if name == comm && parent == Some(ppid) {
            found.push(pid);
        }
    }
    found
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    status_kib(pid, ["VmRSS:", "VmHWM:"]).map(|[rss, hwm]| (rss, hwm))
}

/// A process's resident memory split into anonymous (heap, stacks) and file-backed (the
/// binary's pages) KiB: where growth is, when there is some.
fn rss_split_kib(pid: u32) -> Option<(u64, u64)> {
    status_kib(pid, ["RssAnon:", "RssFile:"]).map(|[anon, file]| (anon, file))
}

/// Fields of `/proc/<pid>/status` counted in KiB.
fn status_kib<const N: usize>(pid: u32, names: [&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut out = [0; N];
    for (value, name) in out.iter_mut().zip(names) {
        *value = field(name)?;
    }
    Some(out)
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine_facts(server_version: &str) -> Vec<(&'static str, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let commit = match command_output("git", &["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} (with uncommitted changes)")
            } else {
                c
            }
        }
        None => "not available".into(),
    };
    vec![
        (
            "nproc",
            std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "unknown".into()),
        ),
        ("CPU", cpu),
        ("memory", memory),
        ("kernel", kernel),
        ("date", pledger_infra::ledger::now().to_rfc3339()),
        ("nats-server", server_version.to_string()),
        ("git commit", commit),
        (
            "build",
            if cfg!(debug_assertions) {
                "debug (figures are not representative; use --release)".into()
            } else {
                "release".into()
            },
        ),
        (
            "runtime",
            "tokio multi-thread, 2 worker threads (as every pledger command)".into(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

/// A throwaway server and the handles every section shares.
struct Env {
    url: String,
    ledger: Ledger,
    routing: RoutingStore,
    dir: tempfile::TempDir,
}

impl Env {
    fn js(&self) -> &jetstream::Context {
        self.ledger.jetstream()
    }

    /// The config dir whose keyring holds the cast's keys (for in-process command lines).
    fn config_dir(&self) -> String {
        self.dir.path().join("config").display().to_string()
    }
}

/// A progress line on stderr, with the time since the first one.
fn progress(text: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let since = START.get_or_init(Instant::now).elapsed();
    eprintln!("pledger bench [{:>4.0} s]: {text}", since.as_secs_f64());
}

pub async fn run(args: &BenchArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if cfg!(debug_assertions) && !args.quick {
        progress("this is a debug build: the figures will not be representative (use --release)");
    }
    progress("starting a throwaway nats-server");
    let server = tokio::task::spawn_blocking(EphemeralServer::start)
        .await
        .map_err(|e| fail("server")(e.to_string()))?
        .map_err(|e| fail("server")(e.to_string()))?;
    let url = server.url();
    let client = pledger_infra::connect(&url).await?;
    let server_version = client.server_info().version;
    let ledger = Ledger::new(client);
    ledger.ensure().await?;
    cast().enroll(&ledger).await?;
    let routing = RoutingStore::open(ledger.jetstream()).await?;
    let env = Env {
        url,
        ledger,
        routing,
        dir: tempfile::tempdir().map_err(|e| fail("temp dir")(e.to_string()))?,
    };
    let keyring = crate::keys::Keyring::in_config_dir(std::path::Path::new(&env.config_dir()));
    for name in cast().names() {
        keyring.store(name, &cast().key(name))?;
    }

    let mut sections = Vec::new();
    let want = |n: u8| {
        args.section.is_empty()
            || args.section.contains(&n)
            || (args.section.contains(&10) && [2, 3, 7].contains(&n))
    };
    if want(1) {
        progress("1/14 outcome ingest into the canary monitor");
        sections.push(ingest(&env, &sizes).await?);
    }
    let mut reroute_run = None;
    if want(2) {
        progress("2/14 breach to reroute");
        let (section, run, floor) = reroute(&env, &sizes).await?;
        sections.push(section);
        reroute_run = Some((run, floor));
    }
    let mut fanout_run = None;
    if want(3) {
        progress("3/14 manual rollback to many resolvers");
        let (section, run, floor) = fanout(&env, &sizes).await?;
        sections.push(section);
        fanout_run = Some((run, floor));
    }
    // The trusted-history sections use the same server; they run while it is up.
    let mut sign = None;
    if want(7) {
        progress("7/14 a signed command against the same command unsigned");
        let (section, sign_run) = signed_command(&env, &sizes).await?;
        sections.push(section);
        // Section 10's baseline of the command's read alone (untimed here, reported there).
        let sign_reads = read_samples(&env, &sign_run.prompt, sizes.cluster_sign_trials).await?;
        sign = Some((sign_run, sign_reads));
    }
    if want(8) {
        progress("8/14 verification throughput on read");
        sections.push(verify_throughput(&env, &sizes).await?);
    }
    if want(9) {
        progress("9/14 command cost against the family's history");
        sections.push(history_cost(&env, &sizes).await?);
    }
    if want(12) {
        progress("12/14 commands read from a snapshot at any history length");
        sections.push(snapshot_cost(&env, &sizes).await?);
    }
    drop(env);
    drop(server);
    if let (
        true,
        Some((reroute, reroute_floor)),
        Some((fanout, fanout_floor)),
        Some((sign, sign_reads)),
    ) = (want(10), reroute_run, fanout_run, sign)
    {
        // The cluster runs alone: the single server has stopped.
        progress("10/14 the same on a three-node R3 cluster");
        let single = SingleNode {
            reroute,
            reroute_floor,
            fanout,
            fanout_floor,
            sign,
            sign_reads,
        };
        sections.push(cluster(&sizes, &single).await?);
    }
    if want(11) {
        // The auditor's ledger is on a server of its own: nothing else runs meanwhile.
        progress("11/14 the auditor: audit verify and audit replay --at");
        sections.push(auditor(&sizes).await?);
    }
    if want(4) {
        progress("4/14 Resolver::resolve cost");
        let s = sizes.resolve_calls;
        let runs = sizes.resolve_runs;
        sections.push(
            tokio::task::spawn_blocking(move || resolve_cost(s, runs))
                .await
                .map_err(|e| fail("resolve")(e.to_string()))?,
        );
    }
    if want(5) {
        progress("5/14 judgement quality");
        let (canaries, detect) = (sizes.aa_canaries, sizes.detect_runs);
        sections.push(
            tokio::task::spawn_blocking(move || quality(canaries, detect))
                .await
                .map_err(|e| fail("quality")(e.to_string()))?,
        );
    }
    if want(6) {
        progress("6/14 resident memory of `pledger up`");
        sections.push(memory(&sizes).await?);
    }
    if want(13) {
        progress("13/14 resident memory of `pledger up` as releases come and go");
        sections.push(churn(&sizes).await?);
    }
    if want(14) {
        progress("14/14 the release page: a ledger change to the open page");
        sections.push(page_latency(&sizes).await?);
    }
    sections.sort_by_key(|s| s.number);
    progress("done");

    let report = Report {
        quick: args.quick,
        facts: machine_facts(&server_version),
        sections,
        elapsed: started.elapsed(),
    };
    println!("{}", report.text().trim_end());
    if let Some(path) = &args.write {
        std::fs::write(path, report.markdown())
            .map_err(|e| Failure::other(format!("{}: cannot write: {e}", path.display())))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Outcome ingest
// ---------------------------------------------------------------------------------------------

async fn ingest(env: &Env, sizes: &Sizes) -> Result<Section, Failure> {
    let js = env.js();
    let prompt = PromptName::parse("bench-ingest")?;
    let r = start_rollout(&env.ledger, &env.routing, &prompt, &plan(HEALTHY_PLAN)).await?;
    let (n, b) = (sizes.ingest_messages, sizes.ingest_batch);
    let total = (n * b) as u64;

    // Pre-fill the stream before any consumer runs: ingest is measured, not the publisher.
    let subject = outcome_subject(&prompt);
    let mut samples: Vec<Vec<u8>> = Vec::new();
    let mut in_flight = VecDeque::new();
    let mut bytes = 0usize;
    let t = Instant::now();
    for m in 0..n {
        let payload =
            serde_json::to_vec(&healthy_batch(&r, (m * b) as u64, b)).expect("outcomes serialize");
        bytes += payload.len();
        if samples.len() < 200 {
            samples.push(payload.clone());
        }
        in_flight.push_back(
            js.publish(subject.clone(), payload.into())
                .await
                .map_err(|e| fail("publishing outcomes")(e.to_string()))?,
        );
        if in_flight.len() >= 256 {
            if let Some(ack) = in_flight.pop_front() {
                ack.await
                    .map_err(|e| fail("outcomes not stored")(e.to_string()))?;
            }
        }
    }
    let mut last = 0;
    for ack in in_flight {
        last = ack
            .await
            .map_err(|e| fail("outcomes not stored")(e.to_string()))?
            .sequence;
    }
    let prefill = t.elapsed();

    let mut stream = js
        .get_stream(OUTCOMES_STREAM)
        .await
        .map_err(|e| fail("outcome stream")(e.to_string()))?;
    let state = stream
        .info()
        .await
        .map_err(|e| fail("outcome stream")(e.to_string()))?
        .state
        .clone();
    let messages = state.messages;
    let server_pid = children_named(std::process::id(), "nats-server")
        .first()
        .map(|p| p.to_string());
    let cpu = |server: &Option<String>| {
        (
            cpu_secs("self").unwrap_or(0.0),
            server.as_deref().and_then(cpu_secs).unwrap_or(0.0),
        )
    };

    // Alternating runs of the baseline and the monitor over the same stored messages; the
    // median run of each is reported.
    let mut bare_runs = Vec::new();
    let mut decoding_runs = Vec::new();
    let mut monitor_runs = Vec::new();
    let mut status = None;
    for rep in 0..sizes.ingest_reps {
        // The order rotates, so no consumer always runs first (or last).
        for which in (0..3).map(|k| (k + rep) % 3) {
            match which {
                0 => bare_runs.push(
                    bare_drain(
                        js,
                        &mut stream,
                        rep,
                        messages,
                        last,
                        &cpu,
                        &server_pid,
                        false,
                    )
                    .await?,
                ),
                1 => decoding_runs.push(
                    bare_drain(
                        js,
                        &mut stream,
                        rep,
                        messages,
                        last,
                        &cpu,
                        &server_pid,
                        true,
                    )
                    .await?,
                ),
                _ => {
                    let (run, st) =
                        monitor_drain(env, &r, rep, last, total, &cpu, &server_pid).await?;
                    monitor_runs.push(run);
                    status = st;
                }
            }
        }
    }
    let by_time = |runs: &mut Vec<Drain>| {
        runs.sort_by_key(|d| d.time);
        runs[runs.len() / 2]
    };
    let all_times = |runs: &[Drain]| {
        runs.iter()
            .map(|d| format!("{:.2}", d.time.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (bare_all, decoding_all, monitor_all) = (
        all_times(&bare_runs),
        all_times(&decoding_runs),
        all_times(&monitor_runs),
    );
    let bare_run = by_time(&mut bare_runs);
    let decoding_run = by_time(&mut decoding_runs);
    let monitor_run = by_time(&mut monitor_runs);
    let (bare_time, monitor_time) = (bare_run.time, monitor_run.time);
    let decoding_time = decoding_run.time;
    let (cpu0, cpu1) = (decoding_run.cpu_before, decoding_run.cpu_after);
    let (cpu2, cpu3) = (monitor_run.cpu_before, monitor_run.cpu_after);
    let bare_outcomes = messages * b as u64;

    // Profile: the parsing alone, on one core.
    let t = Instant::now();
    let mut parsed = 0usize;
    for p in &samples {
        parsed += parse_outcome_message(p)
            .iter()
            .filter(|o| o.is_ok())
            .count();
    }
    let parse_rate = per_sec(parsed as u64, t.elapsed());

    // The outcome stream is shared by the later sections' monitors, which start from its
    // first message: empty it.
    stream
        .purge()
        .await
        .map_err(|e| fail("purging outcomes")(e.to_string()))?;

    let bare_msgs = per_sec(messages, bare_time);
    let decoding_msgs = per_sec(messages, decoding_time);
    let decoding_rate = per_sec(bare_outcomes, decoding_time);
    let mon_msgs = per_sec(messages, monitor_time);
    let mon_rate = per_sec(total, monitor_time);
    let ratio = mon_msgs as f64 / decoding_msgs.max(1) as f64;
    let ceiling = mon_msgs as f64 / bare_msgs.max(1) as f64;

    let mut s = Section::new(1, "Outcome ingest into the canary monitor");
    s.baseline = "a decoding consumer: a durable pull consumer on the same pre-filled stream, \
                  reading through the workers' own batching (`Batches`, up to 1,000 messages per \
                  batch, `AckPolicy::All`, the last message of each batch acked) that decodes each \
                  message into the same typed outcomes with serde_json \
                  (`serde_json::from_slice::<Vec<Outcome>>`), the least any monitor must do; the \
                  same consumer decoding nothing is reported as the ceiling"
        .into();
    s.method = format!(
        "A real rollout (register, publish 2 versions, adopt, propose, 2 reviews by other actors, eval \
         bundle, gate, plan, start) of `{prompt}`; {} messages of {b} outcomes each (JSON arrays, both arms, \
         identical 2% escalation: healthy) published to `{subject}` before any consumer starts. Each \
         consumer is timed from its start (for the monitor: creating its consumers and its start-up \
         read of the ledger included) until the server reports its ack floor at the stream's last \
         sequence (consumer info polled every 5 ms). The monitor is `pledger_infra::worker::canary::run` \
         with `WorkerContext::open(WorkerKind::Canary, ...)` on a temporary sled store: it parses and \
         validates every outcome, places it by arm and segment, commits the stage counts with the \
         sequence in one sled transaction (flushed) per batch, acks, then judges the stage.",
        thousands(n as u64)
    );
    s.rows.push(row(
        "messages/s",
        thousands(mon_msgs),
        thousands(decoding_msgs),
        "≥ 0.8 × baseline",
        Mark::of(ratio >= 0.8),
    ));
    s.rows.push(row(
        "monitor / decoding consumer (message rate)",
        format!("{ratio:.3}"),
        "1",
        "≥ 0.8",
        Mark::of(ratio >= 0.8),
    ));
    s.rows.push(row(
        format!("outcomes/s ({b} per message)"),
        thousands(mon_rate),
        thousands(decoding_rate),
        "≥ 400,000",
        Mark::of(mon_rate >= 400_000),
    ));
    s.rows.push(row(
        "ceiling: a consumer that decodes nothing, messages/s (monitor / it in the baseline column)",
        thousands(bare_msgs),
        format!("{ceiling:.3}"),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!("time to drain {} outcomes", thousands(total)),
        format!("{:.2} s", monitor_time.as_secs_f64()),
        format!("{:.2} s", decoding_time.as_secs_f64()),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "CPU s used by this process while draining",
        format!("{:.2}", cpu3.0 - cpu2.0),
        format!("{:.2}", cpu1.0 - cpu0.0),
        "",
        Mark::Info,
    ));
    if server_pid.is_some() {
        s.rows.push(row(
            "CPU s used by nats-server while draining",
            format!("{:.2}", cpu3.1 - cpu2.1),
            format!("{:.2}", cpu1.1 - cpu0.1),
            "",
            Mark::Info,
        ));
    }
    if sizes.ingest_reps > 1 {
        s.notes.push(format!(
            "{} runs of each consumer, the order rotating, the median reported; drain times (s): \
             monitor {monitor_all}; decoding consumer {decoding_all}; consumer decoding nothing {bare_all}.",
            sizes.ingest_reps
        ));
    }
    let counted = status
        .as_ref()
        .map(|st| (st.judgement.candidate.samples, st.judgement.control.samples));
    s.notes.push(match counted {
        Some((c, k)) => format!(
            "Check: the monitor's published judgement of the stage counts {} candidate and {} control \
             samples: {} of the {} outcomes published{}.",
            thousands(c),
            thousands(k),
            thousands(c + k),
            thousands(total),
            if c + k == total { "" } else { " — NOT every outcome was counted: the figure is suspect" }
        ),
        None => "Check: the monitor published no judgement of the stage; the figure is suspect.".into(),
    });
    s.notes.push(format!(
        "Pre-fill (not part of the measure): {} messages, {:.1} MiB, published in {:.2} s ({} messages/s with an fsync before every ack).",
        thousands(messages),
        bytes as f64 / 1024.0 / 1024.0,
        prefill.as_secs_f64(),
        thousands(per_sec(messages, prefill))
    ));
    let us = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    let (bare_us, decoding_us, mon_us) = (
        us(bare_time, messages),
        us(decoding_time, messages),
        us(monitor_time, messages),
    );
    let parse_us = 1e6 * b as f64 / parse_rate.max(1) as f64;
    s.notes.push(format!(
        "Profile, per {b}-outcome message: the consumer decoding nothing spends {bare_us:.1} µs, the \
         decoding consumer {decoding_us:.1} µs, the monitor {mon_us:.1} µs. `parse_outcome_message` \
         alone (what the monitor calls on each message: decoding and validation), timed on one core \
         over {} of these payloads, costs {parse_us:.1} µs ({} outcomes/s). The monitor's drain used \
         {:.2} CPU s of this process in {:.2} s of wall time, and nats-server {:.2} CPU s.",
        samples.len(),
        thousands(parse_rate),
        cpu3.0 - cpu2.0,
        monitor_time.as_secs_f64(),
        cpu3.1 - cpu2.1,
    ));
    Ok(s)
}

/// One timed drain of the pre-filled outcome stream.
#[derive(Clone, Copy)]
struct Drain {
    time: Duration,
    /// CPU seconds of (this process, nats-server) before and after.
    cpu_before: (f64, f64),
    cpu_after: (f64, f64),
}

type CpuProbe = dyn Fn(&Option<String>) -> (f64, f64);

/// The baseline: a bare durable pull consumer through the same batching and acking as the
/// workers (`Batches`, `AckPolicy::All`, ack the last message of each batch), nothing else.
/// A consumer of the pre-filled outcome stream through the workers' batching, acking each
/// batch; with `decode`, each message is also decoded into typed outcomes with serde_json
/// (`Vec<Outcome>`: the least any monitor must do), and the outcomes counted.
#[allow(clippy::too_many_arguments)]
async fn bare_drain(
    js: &jetstream::Context,
    stream: &mut jetstream::stream::Stream,
    rep: usize,
    messages: u64,
    last: u64,
    cpu: &CpuProbe,
    server_pid: &Option<String>,
    decode: bool,
) -> Result<Drain, Failure> {
    let name = format!(
        "bench_{}_consumer_{rep}",
        if decode { "decoding" } else { "bare" }
    );
    let bare = stream
        .create_consumer(pledger_infra::worker::consumer_config(
            &name,
            pledger_core::names::OUTCOMES_FILTER,
            0,
        ))
        .await
        .map_err(|e| fail("bare consumer")(e.to_string()))?;
    let cpu_before = cpu(server_pid);
    let t = Instant::now();
    let mut batches = Batches::new(&bare)
        .await
        .map_err(|e| fail("bare consumer")(e.to_string()))?;
    let mut got = 0u64;
    while got < messages {
        let batch = batches
            .next(Duration::from_secs(10))
            .await
            .map_err(|e| fail("bare consumer")(e.to_string()))?;
        if batch.is_empty() {
            return Err(Failure::other("bench: the bare consumer stalled"));
        }
        got += batch.len() as u64;
        if decode {
            for m in &batch {
                let outcomes: Vec<pledger_core::outcome::Outcome> =
                    serde_json::from_slice(&m.payload)
                        .map_err(|e| fail("decoding consumer")(e.to_string()))?;
                std::hint::black_box(outcomes);
            }
        }
        ack_batch(&batch)
            .await
            .map_err(|e| fail("bare consumer")(e.to_string()))?;
    }
    wait_acked(
        js,
        OUTCOMES_STREAM,
        &name,
        last,
        Duration::from_millis(5),
        Duration::from_secs(60),
    )
    .await?;
    let time = t.elapsed();
    let cpu_after = cpu(server_pid);
    drop(batches);
    let _ = stream.delete_consumer(&name).await;
    Ok(Drain {
        time,
        cpu_before,
        cpu_after,
    })
}

/// The real canary monitor on a fresh store, from its start until its outcome consumer has
/// acked the stream's last message. Returns the drain and the monitor's published judgement.
async fn monitor_drain(
    env: &Env,
    r: &Rollout,
    rep: usize,
    last: u64,
    total: u64,
    cpu: &CpuProbe,
    server_pid: &Option<String>,
) -> Result<(Drain, Option<canary::CanaryStatus>), Failure> {
    let js = env.js();
    let replica = format!("ingest{rep}");
    let dir = env.dir.path().join(&replica);
    let cpu_before = cpu(server_pid);
    let t = Instant::now();
    let (ctx, stop, task) = spawn_monitor(&env.url, &replica, &dir).await?;
    let name = ctx.durable_name(OUTCOMES_STREAM);
    wait_acked(
        js,
        OUTCOMES_STREAM,
        &name,
        last,
        Duration::from_millis(5),
        Duration::from_secs(600),
    )
    .await?;
    let time = t.elapsed();
    let cpu_after = cpu(server_pid);
    // Check (outside the measure) that the monitor counted every outcome into the rollout:
    // its published judgement of the stage carries the samples per arm.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = None;
    while Instant::now() < deadline {
        status = canary::read_status(js, &r.release).await.ok().flatten();
        if status.as_ref().is_some_and(|s| {
            s.judgement.candidate.samples + s.judgement.control.samples >= total
                && s.monitor_replica == replica
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_monitor(stop, task).await?;
    for (stream, consumer) in [
        (OUTCOMES_STREAM, name),
        (LEDGER_STREAM, ctx.durable_name(LEDGER_STREAM)),
    ] {
        if let Ok(s) = js.get_stream_no_info(stream).await {
            let _ = s.delete_consumer(&consumer).await;
        }
    }
    Ok((
        Drain {
            time,
            cpu_before,
            cpu_after,
        },
        status,
    ))
}

// ---------------------------------------------------------------------------------------------
// Routing-KV floor (baseline of sections 2 and 3)
// ---------------------------------------------------------------------------------------------

/// Times raw writes of a prompt's routing table straight to the KV bucket until every resolver
/// serves the new stable version: the notification path alone, with no ledger and no worker.
async fn kv_floor(
    env: &Env,
    resolvers: &[Resolver],
    tag: &str,
    trials: usize,
) -> Result<Vec<Duration>, Failure> {
    let prompt = PromptName::parse(&format!("bench-floor-{tag}"))?;
    let versions = [artifact(1).version_id(), artifact(2).version_id()];
    let kv = env.routing.store();
    let mut samples = Vec::new();
    for trial in 0..=trials {
        let version = versions[trial % 2].clone();
        let table = RoutingTable {
            prompt: prompt.clone(),
            stable: Some(version.clone()),
            rollout: None,
            ledger_sequence: trial as u64 + 1,
            artifacts: BTreeMap::new(),
        };
        let waiters = wait_all(resolvers, prompt.as_str(), version);
        tokio::task::yield_now().await;
        let t = Instant::now();
        kv.put(
            prompt.as_str(),
            serde_json::to_vec(&table).expect("serializes").into(),
        )
        .await
        .map_err(|e| fail("routing KV")(e.to_string()))?;
        let seen = join_waiters(waiters).await?;
        // The first write creates the key: a warm-up, not a sample.
        if trial > 0 {
            samples.push(seen.saturating_duration_since(t));
        }
    }
    samples.sort();
    Ok(samples)
}

/// One task per resolver that waits (on its change notifications, no polling) until `prompt`
/// resolves to `version` for a fixed unit, and returns when it did.
fn wait_all(
    resolvers: &[Resolver],
    prompt: &str,
    version: VersionId,
) -> Vec<tokio::task::JoinHandle<Instant>> {
    resolvers
        .iter()
        .map(|r| {
            let (r, prompt, version) = (r.clone(), prompt.to_string(), version.clone());
            tokio::spawn(async move {
                r.wait_until(|r| {
                    r.resolve(&prompt, &RequestContext::new().unit("user-1"))
                        .version()
                        == Some(&version)
                })
                .await;
                Instant::now()
            })
        })
        .collect()
}

/// The latest instant of all waiters (bounded at 30 s).
async fn join_waiters(waiters: Vec<tokio::task::JoinHandle<Instant>>) -> Result<Instant, Failure> {
    let aborts: Vec<_> = waiters.iter().map(|w| w.abort_handle()).collect();
    let Ok(all) =
        tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(waiters)).await
    else {
        for a in aborts {
            a.abort();
        }
        return Err(Failure::other(
            "bench: resolvers did not see the change within 30 s",
        ));
    };
    let mut latest = None;
    for r in all {
        let at = r.map_err(|e| fail("resolver waiter")(e.to_string()))?;
        latest = Some(latest.map_or(at, |l: Instant| l.max(at)));
    }
    latest.ok_or_else(|| Failure::other("bench: no resolvers"))
}

async fn start_resolver(url: &str) -> Result<Resolver, Failure> {
    Ok(start_resolver_on(url).await?.0)
}

/// A resolver on its own connection, and that connection (which server it reached).
async fn start_resolver_on(url: &str) -> Result<(Resolver, async_nats::Client), Failure> {
    let client = pledger_client::connect(url)
        .await
        .map_err(|e| fail("resolver")(e.to_string()))?;
    let resolver = Resolver::start(
        client.clone(),
        ResolverOptions {
            autosave_snapshot: false,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| fail("resolver")(e.to_string()))?;
    Ok((resolver, client))
}

async fn see_rollout(resolvers: &[Resolver], prompt: &str) -> Result<(), Failure> {
    let waits = resolvers
        .iter()
        .map(|r| r.wait_for(prompt, |t| t.is_some_and(|t| t.rollout.is_some())));
    tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(waits))
        .await
        .map_err(|_| Failure::other("bench: resolvers did not see the rollout within 30 s"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Breach to reroute
// ---------------------------------------------------------------------------------------------

const PREFILL_PER_ARM: u64 = 99;
const TRIGGER_ESCALATIONS: u64 = 20;

/// What the breach-to-reroute trials measured (sorted samples).
struct RerouteRun {
    /// From publishing the trigger to the resolver serving stable.
    samples: Vec<Duration>,
    /// From publishing the trigger to its JetStream ack.
    publish_acks: Vec<Duration>,
    /// Trials also rolled back automatically within 10 s.
    rolled_back: usize,
    /// Why trials failed (each replaced by another).
    failed: Vec<String>,
    /// Why the canary monitor stopped, each time it did (it was started again).
    monitor_stopped: Vec<String>,
}

/// Records a failed trial; fails the measure once more than a tenth of `trials` (at least 3)
/// have failed.
fn give_up_after_failures(
    failed: &mut Vec<String>,
    e: Failure,
    trials: usize,
) -> Result<(), Failure> {
    progress(&format!(
        "  a trial failed (replaced by another): {}",
        e.message
    ));
    failed.push(e.message);
    if failed.len() > (trials / 10).max(3) {
        return Err(Failure::other(format!(
            "bench: {} trials failed: {}",
            failed.len(),
            failed.join("; ")
        )));
    }
    Ok(())
}

/// A note on the canary monitor's stops, if any.
fn monitor_note(stopped: &[String]) -> Option<String> {
    if stopped.is_empty() {
        return None;
    }
    Some(format!(
        "The canary monitor stopped during the trials and was started again after 1 s (as \
         `pledger up` does), {} time(s): {}.",
        stopped.len(),
        stopped
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A note on failed trials, if any.
fn failures_note(what: &str, failed: &[String]) -> Option<String> {
    if failed.is_empty() {
        return None;
    }
    let mut distinct: BTreeMap<&str, usize> = BTreeMap::new();
    for f in failed {
        *distinct.entry(f.as_str()).or_default() += 1;
    }
    Some(format!(
        "{what} that failed and were replaced by new ones (not in the figures): {} in all, {}.",
        failed.len(),
        distinct
            .iter()
            .map(|(e, n)| format!("{n} × \"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// `trials` breach-to-reroute trials on `env`: a canary monitor in this process (connected
/// with `env.url`), `resolver` watching the routing bucket.
async fn reroute_trials(
    env: &Env,
    resolver: &Resolver,
    trials: usize,
) -> Result<RerouteRun, Failure> {
    let js = env.js();
    let dir = env.dir.path().join("reroute");
    let ((ledger_consumer, outcome_consumer), quit, supervisor) =
        spawn_supervised_monitor(&env.url, "reroute", &dir).await?;
    let breach_plan = plan(BREACH_PLAN);
    let mut samples = Vec::new();
    let mut publish_acks = Vec::new();
    let mut rolled_back = 0;
    let mut checked = false;
    let mut failed = Vec::new();
    let mut attempt = 0;
    while samples.len() < trials {
        attempt += 1;
        let trial = async {
            let prompt = PromptName::parse(&format!("bench-reroute-{attempt}"))?;
            let r = start_rollout(&env.ledger, &env.routing, &prompt, &breach_plan).await?;
            // The monitor has seen the rollout start; the resolver serves the candidate.
            wait_acked(
                js,
                LEDGER_STREAM,
                &ledger_consumer,
                r.started_at_sequence,
                Duration::from_millis(5),
                Duration::from_secs(30),
            )
            .await?;
            see_rollout(std::slice::from_ref(resolver), prompt.as_str()).await?;
            let unit = (0..10_000)
                .map(|i| format!("user-{i}"))
                .find(|u| {
                    resolver
                        .resolve(prompt.as_str(), &RequestContext::new().unit(u))
                        .arm()
                        == Some(Arm::Candidate)
                })
                .ok_or_else(|| Failure::other("bench: no unit gets the candidate"))?;

            // Healthy outcomes for both arms, one short of the judgement's minimum samples.
            let prefill: Vec<Outcome> = (0..PREFILL_PER_ARM)
                .flat_map(|i| {
                    [
                        outcome(&r, Arm::Candidate, 2 * i, false),
                        outcome(&r, Arm::Baseline, 2 * i + 1, false),
                    ]
                })
                .collect();
            // The message that makes the breach decidable: escalations on the candidate arm and
            // the control's 100th sample.
            let mut trigger: Vec<Outcome> = (0..TRIGGER_ESCALATIONS)
                .map(|i| outcome(&r, Arm::Candidate, 1000 + i, true))
                .collect();
            trigger.push(outcome(&r, Arm::Baseline, 2000, false));
            if !checked {
                check_breach_design(&breach_plan, &prefill, &trigger)?;
                checked = true;
            }
            let subject = outcome_subject(&prompt);
            let seq = publish(
                js,
                &subject,
                serde_json::to_vec(&prefill).expect("serializes"),
            )
            .await?;
            wait_acked(
                js,
                OUTCOMES_STREAM,
                &outcome_consumer,
                seq,
                Duration::from_millis(5),
                Duration::from_secs(30),
            )
            .await?;
            // Let the monitor finish judging the pre-fill (not part of the measure).
            tokio::time::sleep(Duration::from_millis(50)).await;

            let stable = r.stable.clone();
            let waiter = {
                let (resolver, prompt, unit) = (resolver.clone(), prompt.to_string(), unit.clone());
                tokio::spawn(async move {
                    resolver
                        .wait_until(|x| {
                            x.resolve(&prompt, &RequestContext::new().unit(&unit))
                                .version()
                                == Some(&stable)
                        })
                        .await;
                    Instant::now()
                })
            };
            tokio::task::yield_now().await;
            let payload = serde_json::to_vec(&trigger).expect("serializes");
            let t = Instant::now();
            publish(js, &subject, payload).await?;
            let acked = t.elapsed();
            let seen = join_waiters(vec![waiter]).await?;
            // The automatic rollback follows the freeze; let it land before the next trial.
            let rolled = tokio::time::timeout(
                Duration::from_secs(10),
                resolver.wait_for(prompt.as_str(), |t| t.is_some_and(|t| t.rollout.is_none())),
            )
            .await
            .is_ok();
            Ok::<_, Failure>((seen.saturating_duration_since(t), acked, rolled))
        }
        .await;
        match trial {
            Ok((sample, acked, rolled)) => {
                samples.push(sample);
                publish_acks.push(acked);
                rolled_back += usize::from(rolled);
            }
            Err(e) => give_up_after_failures(&mut failed, e, trials)?,
        }
    }
    let _ = quit.send(true);
    let monitor_stopped = supervisor
        .await
        .map_err(|e| fail("canary monitor")(e.to_string()))?;
    samples.sort();
    publish_acks.sort();
    Ok(RerouteRun {
        samples,
        publish_acks,
        rolled_back,
        failed,
        monitor_stopped,
    })
}

/// Section 2, with its trials and its baseline's samples for section 10.
async fn reroute(
    env: &Env,
    sizes: &Sizes,
) -> Result<(Section, RerouteRun, Vec<Duration>), Failure> {
    let resolver = start_resolver(&env.url).await?;
    let run = reroute_trials(env, &resolver, sizes.reroute_trials).await?;
    let floor = kv_floor(
        env,
        std::slice::from_ref(&resolver),
        "reroute",
        sizes.floor_trials,
    )
    .await?;
    drop(resolver);
    let RerouteRun {
        samples,
        publish_acks,
        rolled_back,
        failed,
        monitor_stopped,
    } = &run;
    let rolled_back = *rolled_back;

    let p99 = percentile(samples, 99.0);
    let mut s = Section::new(2, "Breach to reroute");
    s.baseline = format!(
        "the notification path alone: a raw `put` of a routing table to the `pledger_routing` KV \
         bucket until the same Resolver serves the new version ({} trials, no ledger, no worker)",
        floor.len()
    );
    s.method = format!(
        "{} trials, a new prompt each, with a real rollout whose plan has a 50% stage, the guardrail \
         `escalation_rate = {{ max_increase = 0.01 }}` and `rollback.automatic = true`. The canary \
         monitor runs in this process (started again after 1 s if it stops, as `pledger up` does); a `pledger_client::Resolver` (own connection) watches the \
         routing bucket. Before each trial {PREFILL_PER_ARM} healthy outcomes per arm are published \
         and consumed (one short of the judgement's 100 samples per arm: the verdict holds). The timer \
         starts just before publishing the message that makes the breach decidable ({TRIGGER_ESCALATIONS} \
         escalated candidate outcomes and the control's 100th sample) and stops when the Resolver, \
         woken by its change notifications (no polling), resolves a unit that was on the candidate to \
         the stable version. That happens at the freeze's routing write (a frozen rollout routes \
         everything to stable); the automatic rollback follows.",
        samples.len()
    );
    s.rows.push(row(
        "p50",
        ms(percentile(samples, 50.0)),
        ms(percentile(&floor, 50.0)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "p99",
        ms(p99),
        ms(percentile(&floor, 99.0)),
        "< 50 ms",
        Mark::of(p99 < Duration::from_millis(50)),
    ));
    s.rows.push(row(
        "max",
        ms(samples.last().copied().unwrap_or_default()),
        ms(floor.last().copied().unwrap_or_default()),
        "",
        Mark::Info,
    ));
    s.notes.push(format!(
        "Of that, publishing the trigger until its JetStream ack (fsync included) took p50 {}, p99 {}.",
        ms(percentile(publish_acks, 50.0)),
        ms(percentile(publish_acks, 99.0))
    ));
    s.notes.push(format!(
        "The path measured: server stores the message → monitor's pull batch → parse, place, sled \
         commit (flushed), ack → judge (mSPRT breach) → `Ledger::execute(FreezeRollout)` (read the \
         prompt's family, conditional append with fsync) → routing table write (compare-and-set) → \
         KV watch → Resolver. {rolled_back} of {} trials were also rolled back automatically within 10 s.",
        samples.len()
    ));
    s.notes.push(format!(
        "p99 is nearest-rank: with {} samples it is {}.",
        samples.len(),
        ordinal(samples.len() - (0.99 * samples.len() as f64).ceil() as usize + 1)
    ));
    if let Some(note) = failures_note("Trials", failed) {
        s.notes.push(note);
    }
    if let Some(note) = monitor_note(monitor_stopped) {
        s.notes.push(note);
    }
    Ok((s, run, floor))
}

fn ordinal(n: usize) -> String {
    match n {
        0 | 1 => "the largest sample".into(),
        2 => "the 2nd largest sample".into(),
        3 => "the 3rd largest sample".into(),
        n => format!("the {n}th largest sample"),
    }
}

/// Checks, with the core's own judgement, that the pre-fill holds and the trigger breaches.
fn check_breach_design(
    plan: &RolloutPlan,
    prefill: &[Outcome],
    trigger: &[Outcome],
) -> Result<(), Failure> {
    let (mut cand, mut ctrl) = (ArmStats::new(), ArmStats::new());
    let judge_now = |cand: &ArmStats, ctrl: &ArmStats| {
        judge(&plan.guardrails, cand, ctrl, &JudgeConfig::default()).verdict
    };
    for o in prefill {
        match o.arm {
            Some(Arm::Candidate) => cand.record(o),
            _ => ctrl.record(o),
        }
    }
    if judge_now(&cand, &ctrl) == Verdict::Breached {
        return Err(Failure::other("bench: the pre-fill alone breaches"));
    }
    for o in trigger {
        match o.arm {
            Some(Arm::Candidate) => cand.record(o),
            _ => ctrl.record(o),
        }
    }
    if judge_now(&cand, &ctrl) != Verdict::Breached {
        return Err(Failure::other("bench: the trigger does not make a breach"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Manual rollback to many resolvers
// ---------------------------------------------------------------------------------------------

/// What the rollback trials measured (sorted samples).
struct FanoutRun {
    /// From the start of the rollback command to the last resolver serving stable.
    samples: Vec<Duration>,
    /// From the start of the rollback command to its return.
    command: Vec<Duration>,
    /// Why trials failed (each replaced by another).
    failed: Vec<String>,
}

/// `trials` manual rollbacks on `env`, each until all of `resolvers` serve the stable version.
async fn fanout_trials(
    env: &Env,
    resolvers: &[Resolver],
    trials: usize,
) -> Result<FanoutRun, Failure> {
    let all_traffic = plan(ALL_TRAFFIC_PLAN);
    let mut samples = Vec::new();
    let mut command = Vec::new();
    let mut failed = Vec::new();
    let mut attempt = 0;
    while samples.len() < trials {
        attempt += 1;
        let trial = async {
            let prompt = PromptName::parse(&format!("bench-rollback-{attempt}"))?;
            let r = start_rollout(&env.ledger, &env.routing, &prompt, &all_traffic).await?;
            see_rollout(resolvers, prompt.as_str()).await?;
            let waiters = wait_all(resolvers, prompt.as_str(), r.stable.clone());
            tokio::time::sleep(Duration::from_millis(20)).await;
            // `pledger rollback <prompt> --reason ...`, in-process: connect, ensure the streams,
            // pin the active rollout, Ledger::execute(Rollback), write the routing table.
            let cli = Cli::try_parse_from([
                "pledger",
                "--nats",
                &env.url,
                "--as",
                "oncall-sam",
                "--config-dir",
                &env.config_dir(),
                "rollback",
                prompt.as_str(),
                "--reason",
                "bench: manual rollback",
            ])
            .map_err(|e| fail("rollback command line")(e.to_string()))?;
            let app = App::from_cli(&cli);
            let t = Instant::now();
            let ran = app.run(cli.command).await;
            let returned = t.elapsed();
            if let Err(e) = ran {
                for w in &waiters {
                    w.abort();
                }
                return Err(e);
            }
            let seen = join_waiters(waiters).await?;
            Ok::<_, Failure>((seen.saturating_duration_since(t), returned))
        }
        .await;
        match trial {
            Ok((sample, returned)) => {
                samples.push(sample);
                command.push(returned);
            }
            Err(e) => give_up_after_failures(&mut failed, e, trials)?,
        }
    }
    samples.sort();
    command.sort();
    Ok(FanoutRun {
        samples,
        command,
        failed,
    })
}

/// Section 3, with its trials and its baseline's samples for section 10.
async fn fanout(env: &Env, sizes: &Sizes) -> Result<(Section, FanoutRun, Vec<Duration>), Failure> {
    let n = sizes.fanout_resolvers;
    let resolvers: Vec<Resolver> =
        futures::future::try_join_all((0..n).map(|_| start_resolver(&env.url))).await?;
    let run = fanout_trials(env, &resolvers, sizes.fanout_trials).await?;
    let floor = kv_floor(env, &resolvers, "fanout", sizes.floor_trials).await?;
    drop(resolvers);
    let FanoutRun {
        samples,
        command,
        failed,
    } = &run;

    let p99 = percentile(samples, 99.0);
    let mut s = Section::new(3, "Manual rollback to 100 resolvers");
    if n != 100 {
        s.title = "Manual rollback to many resolvers";
    }
    s.baseline = format!(
        "a raw `put` of a routing table to the KV bucket until all {n} resolvers serve the new \
         version ({} trials): the fan-out floor, with no ledger and no command",
        floor.len()
    );
    s.method = format!(
        "No worker runs. {n} `pledger_client::Resolver`s, each on its own NATS connection, watch the \
         routing bucket. {} trials, a new prompt each, with a real rollout whose single stage sends all \
         traffic to the candidate. The timer starts just before the CLI's rollback runs in-process \
         (`pledger --as oncall-sam rollback <prompt> --reason ...` parsed by clap and run by `App`: \
         connect, ensure streams and buckets, read the prompt to pin its active rollout, \
         `Ledger::execute(Command::Rollback)`, `RoutingStore::publish(routing_table_for(..))`) and stops \
         when the last of the {n} resolvers, each woken by its own change notifications, resolves to the \
         stable version.",
        samples.len()
    );
    s.rows.push(row(
        format!("all {n} resolvers on stable, p50"),
        ms(percentile(samples, 50.0)),
        ms(percentile(&floor, 50.0)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!("all {n} resolvers on stable, p99"),
        ms(p99),
        ms(percentile(&floor, 99.0)),
        "< 100 ms",
        Mark::of(p99 < Duration::from_millis(100)),
    ));
    s.rows.push(row(
        "rollback command returned, p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(command, 50.0)),
            ms(percentile(command, 99.0))
        ),
        "",
        "",
        Mark::Info,
    ));
    s.notes.push(format!(
        "p99 is nearest-rank: with {} samples it is {}.",
        samples.len(),
        ordinal(samples.len() - (0.99 * samples.len() as f64).ceil() as usize + 1)
    ));
    s.notes.push(
        "The command's time includes a fresh connection and the stream/bucket checks every CLI \
         command makes; a separate `pledger` process would add its own start-up (not measured here)."
            .into(),
    );
    if let Some(note) = failures_note("Trials", failed) {
        s.notes.push(note);
    }
    Ok((s, run, floor))
}

// ---------------------------------------------------------------------------------------------
// 4. Resolver::resolve cost
// ---------------------------------------------------------------------------------------------

/// Best ns per call over `runs` timed runs of `calls` calls, after a warm-up.
fn ns_per_call(calls: usize, runs: usize, f: &dyn Fn(usize) -> bool) -> f64 {
    let mut sink = 0usize;
    for i in 0..calls / 10 {
        sink += f(i) as usize;
    }
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        for i in 0..calls {
            sink += f(i) as usize;
        }
        best = best.min(t.elapsed().as_nanos() as f64 / calls as f64);
    }
    std::hint::black_box(sink);
    best
}

fn resolve_cost(calls: usize, runs: usize) -> Section {
    use std::hint::black_box;
    let table = pledger_core::routing::benchmark_table();
    let resolver = Resolver::from_tables([table.clone()]);
    let units: Vec<String> = (0..4096).map(|i| format!("user-{i:06}")).collect();
    let attr_sets: [&[(&str, &str)]; 4] = [
        &[
            ("user_kind", "external"),
            ("geo", "eu"),
            ("intent", "billing"),
        ],
        &[("user_kind", "external"), ("geo", "us"), ("intent", "faq")],
        &[("user_kind", "internal"), ("geo", "us")],
        &[("user_kind", "external"), ("geo", "eu")],
    ];
    let maps: Vec<BTreeMap<String, String>> = attr_sets
        .iter()
        .map(|s| {
            s.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    let sdk = ns_per_call(calls, runs, &|i| {
        let ctx = RequestContext::new()
            .unit(&units[i % units.len()])
            .attrs(&attr_sets[i % 4]);
        resolver.resolve(black_box("support-triage"), &ctx).arm() == Some(Arm::Candidate)
    });
    let sdk_maps = ns_per_call(calls, runs, &|i| {
        let ctx = RequestContext::new()
            .unit(&units[i % units.len()])
            .attrs(&maps[i % 4]);
        resolver.resolve(black_box("support-triage"), &ctx).arm() == Some(Arm::Candidate)
    });
    let hashing = ns_per_call(calls, runs, &|i| {
        let ctx = RequestContext::new()
            .unit(&units[i % units.len()])
            .attrs(&attr_sets[3]);
        resolver.resolve(black_box("support-triage"), &ctx).arm() == Some(Arm::Candidate)
    });
    let core = ns_per_call(calls, runs, &|i| {
        pledger_core::routing::resolve(
            black_box(&table),
            Some(&units[i % units.len()]),
            &maps[i % 4],
        )
        .arm == Some(Arm::Candidate)
    });
    let core_hashing = ns_per_call(calls, runs, &|i| {
        pledger_core::routing::resolve(black_box(&table), Some(&units[i % units.len()]), &maps[3])
            .arm
            == Some(Arm::Candidate)
    });
    let mut s = Section::new(4, "Resolver::resolve cost");
    s.baseline = "`pledger_core::routing::resolve` on the same table and requests (what `pledger \
                  resolve` runs: formats `salt:unit`, clones the ids it returns)"
        .into();
    s.method = format!(
        "`Resolver::from_tables` over a rollout at its third stage (`user_kind = internal` at 100%, \
         `intent in [faq, greeting]` at 100%, `geo = eu` at 25%); requests cycle through 4,096 unit \
         keys and 4 attribute sets (one of them hits the 25% stage and hashes). Best of {runs} timed \
         runs of {} calls each after a warm-up, single thread, in this process.",
        thousands(calls as u64)
    );
    s.rows.push(row(
        "per call, mixed requests (attrs: &[(&str, &str)])",
        format!("{sdk:.1} ns"),
        format!("{core:.1} ns"),
        "< 200 ns",
        Mark::of(sdk < 200.0),
    ));
    s.rows.push(row(
        "per call, mixed requests (attrs: &BTreeMap)",
        format!("{sdk_maps:.1} ns"),
        format!("{core:.1} ns"),
        "< 200 ns",
        Mark::of(sdk_maps < 200.0),
    ));
    s.rows.push(row(
        "per call, partial-share requests only (always hashes)",
        format!("{hashing:.1} ns"),
        format!("{core_hashing:.1} ns"),
        "",
        Mark::Info,
    ));
    s
}

// ---------------------------------------------------------------------------------------------
// 5. Judgement quality
// ---------------------------------------------------------------------------------------------

fn quality(canaries: usize, runs: usize) -> Section {
    // The settings of crates/pledger-core/tests/it/sim.rs.
    let guardrails = Guardrails {
        escalation_rate: Some(GuardrailLimit {
            max_rate: None,
            max_increase: Some(0.0),
        }),
        ..Guardrails::default()
    };
    let aa = AaSetup {
        canaries,
        samples_per_arm: 5000,
        check_every: 50,
        requests_per_second: 2.0,
        profile: ArmProfile::only(RateMetric::Escalation, 0.02),
        seed: 2024,
    };
    let detect = DetectionSetup {
        runs,
        metric: RateMetric::Escalation,
        base_rate: 0.02,
        bad_rate: 0.04,
        check_every: 50,
        max_samples_per_arm: 20_000,
        requests_per_second: 2.0,
        seed: 2024,
    };
    let config = JudgeConfig::default();
    let t = Instant::now();
    let a = aa_false_freeze_rate(&aa, &guardrails, &config);
    let d = samples_to_detect(&detect, &guardrails, &config);
    let took = t.elapsed();
    let pct = |r: f64| format!("{:.1}%", r * 100.0);
    let med = |m: Option<f64>| m.map_or_else(|| "none (half missed)".into(), |m| format!("{m:.0}"));
    let (seq, fixed) = (&a.sequential, &a.fixed_threshold);
    let mut s = Section::new(5, "Judgement quality");
    s.baseline = format!(
        "a Flagger-style fixed threshold on the same draws: every 60-second interval ({} samples per \
         arm at 2 requests/s per arm), breach when the interval's candidate rate exceeds the control's \
         by more than the guardrail allows",
        a.interval_samples_per_arm
    );
    s.method = format!(
        "Pure core (`pledger_core::sim`), seeded, with the settings of the core's tests: guardrail \
         `escalation_rate = {{ max_increase = 0.0 }}` (the boundary of the null: the hardest case), \
         default `JudgeConfig` (alpha 1%, 100 samples per arm minimum, tau 0.1). False freezes: {} A/A \
         canaries at 2% escalation in both arms, 5,000 samples per arm, judged every 50 samples per arm \
         ({} looks per canary), seed 2024. Detection: {} canaries whose candidate escalates 4% against \
         the control's 2%, judged every 50 samples per arm, up to 20,000. Took {:.1} s.",
        thousands(canaries as u64),
        seq.checks_per_canary,
        runs,
        took.as_secs_f64()
    );
    s.rows.push(row(
        format!(
            "A/A false freeze rate ({} canaries)",
            thousands(canaries as u64)
        ),
        format!("{} ({}/{})", pct(seq.rate), seq.frozen, seq.canaries),
        format!("{} ({}/{})", pct(fixed.rate), fixed.frozen, fixed.canaries),
        "≤ 1%",
        Mark::of(seq.rate <= 0.01),
    ));
    s.rows.push(row(
        format!("median samples per arm to detect 2% → 4% ({runs} runs)"),
        med(d.sequential.median),
        med(d.fixed_threshold.median),
        "≤ 2,500",
        Mark::of(d.sequential.median.is_some_and(|m| m <= 2500.0)),
    ));
    s.rows.push(row(
        "runs not detected within 20,000 samples per arm",
        d.sequential.missed.to_string(),
        d.fixed_threshold.missed.to_string(),
        "",
        Mark::Info,
    ));
    s.notes.push(
        "The fixed threshold detects sooner because it freezes A/A canaries most of the time: its \
         speed is bought with false freezes. The sequential test's false-freeze bound holds at any \
         number of looks."
            .into(),
    );
    s
}

// ---------------------------------------------------------------------------------------------
// 6. Resident memory of `pledger up`
// ---------------------------------------------------------------------------------------------

/// A `pledger up` child; SIGTERM (then SIGKILL) on drop.
struct UpProcess {
    child: Option<std::process::Child>,
}

impl UpProcess {
    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then waits up to 20 s (then SIGKILL). Returns the exit code and how long it took.
    fn stop(&mut self) -> Option<(Option<i32>, Duration)> {
        let mut child = self.child.take()?;
        let t = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status.code(), t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Some((None, t.elapsed()))
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `pledger up` child process (this binary) with its own data directory, config directory and
/// free port, started and ready.
struct LaunchedUp {
    up: UpProcess,
    pid: u32,
    /// The nats-server `pledger up` started.
    nats_pid: Option<u32>,
    url: String,
    exe: std::path::PathBuf,
    dir: tempfile::TempDir,
    /// Where `pledger up` serves its metrics (`--metrics`).
    metrics: String,
}

impl LaunchedUp {
    async fn launch() -> Result<LaunchedUp, Failure> {
        let dir = tempfile::tempdir().map_err(|e| fail("temp dir")(e.to_string()))?;
        let data = dir.path().join("data");
        let listen = format!("127.0.0.1:{}", free_port());
        let url = format!("nats://{listen}");
        let metrics = format!("127.0.0.1:{}", free_port());
        let exe = std::env::current_exe().map_err(|e| fail("own executable")(e.to_string()))?;
        let log_path = dir.path().join("up.log");
        let log = std::fs::File::create(&log_path).map_err(|e| fail("up log")(e.to_string()))?;
        let log_err = log.try_clone().map_err(|e| fail("up log")(e.to_string()))?;
        let child = std::process::Command::new(&exe)
            .arg("up")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &listen])
            // The release pages are served (on a free port): part of what is measured.
            .args(["--ui", "127.0.0.1:0"])
            .args(["--metrics", &metrics])
            .arg("--as")
            .arg("bench-up")
            .env("PLEDGER_CONFIG_DIR", dir.path().join("config"))
            .env_remove("PLEDGER_KEY")
            .env("PLEDGER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| fail("starting pledger up")(e.to_string()))?;
        let mut up = UpProcess { child: Some(child) };
        let pid = up.pid();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("ledger ready") {
                break;
            }
            if let Some(c) = up.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(Failure::other(format!(
                        "bench: pledger up exited ({status}): {text}"
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Failure::other(format!(
                    "bench: pledger up was not ready within 60 s: {text}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let nats_pid = children_named(pid, "nats-server").first().copied();
        Ok(LaunchedUp {
            up,
            pid,
            nats_pid,
            url,
            exe,
            dir,
            metrics,
        })
    }

    /// `pledger_process_heap_bytes` from its metrics: the bytes it has allocated and not
    /// freed, in KiB (none when it cannot be read).
    async fn heap_kib(&self) -> Option<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.metrics).await.ok()?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        );
        s.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).await.ok()?;
        let name = format!("{} ", pledger_core::names::METRIC_PROCESS_HEAP);
        let line = response.lines().find(|l| l.starts_with(&name))?;
        let bytes: f64 = line[name.len()..].trim().parse().ok()?;
        Some(bytes as u64 / 1024)
    }

    /// Connects (keeping snapshots in memory, as a worker does), and has `pledger up`'s
    /// operator (enrolled as the first admin) enrol the bench's cast with the roles the
    /// lifecycle needs.
    async fn enrolled_ledger(&self) -> Result<Ledger, Failure> {
        let client = pledger_infra::connect(&self.url).await?;
        let ledger = Ledger::new(client).with_snapshots(std::sync::Arc::new(
            pledger_infra::snapshot::SnapshotMemory::default(),
        ));
        let operator =
            crate::keys::load_private_key(&self.dir.path().join("config/keys/bench-up"))?;
        let mut with_operator = Cast::generate(&[]);
        with_operator.add("bench-up", &[Role::Admin], operator);
        for name in cast().names().skip(1) {
            let roles = match name {
                "maria" => vec![Role::Author, Role::ReleaseManager, Role::Oncall],
                "ci" => vec![Role::Ci],
                "oncall-sam" => vec![Role::Oncall],
                "canary-monitor" => vec![Role::Worker],
                _ => vec![Role::Reviewer],
            };
            with_operator.add(name, &roles, (*cast().key(name)).clone());
        }
        with_operator.enroll(&ledger).await?;
        Ok(ledger)
    }

    fn rss(&self) -> u64 {
        rss_kib(self.pid).map(|(rss, _)| rss).unwrap_or(0)
    }

    /// The address `pledger up` serves the release pages on (its ready line says).
    fn ui_addr(&self) -> Result<String, Failure> {
        let text = std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default();
        let marker = "release pages at http://";
        text.find(marker)
            .map(|at| &text[at + marker.len()..])
            .and_then(|rest| rest.find('/').map(|end| rest[..end].to_string()))
            .ok_or_else(|| {
                Failure::other(format!("bench: pledger up serves no release pages: {text}"))
            })
    }

    fn nats_rss(&self) -> u64 {
        self.nats_pid
            .and_then(rss_kib)
            .map(|(rss, _)| rss)
            .unwrap_or(0)
    }

    /// SIGTERM, off the runtime's threads.
    async fn stop(self) -> Result<Option<(Option<i32>, Duration)>, Failure> {
        let mut up = self.up;
        tokio::task::spawn_blocking(move || up.stop())
            .await
            .map_err(|e| fail("stopping pledger up")(e.to_string()))
    }
}

/// How `pledger up` ended on SIGTERM ([`LaunchedUp::stop`]), for a section's notes.
fn stop_note(stopped: Option<(Option<i32>, Duration)>) -> String {
    match stopped {
        Some((Some(0), d)) => format!(
            "SIGTERM: `pledger up` stopped cleanly (exit 0) in {:.1} s.",
            d.as_secs_f64()
        ),
        Some((code, d)) => format!(
            "SIGTERM: `pledger up` ended with {code:?} after {:.1} s.",
            d.as_secs_f64()
        ),
        None => "`pledger up` was not running at the end.".into(),
    }
}

async fn memory(sizes: &Sizes) -> Result<Section, Failure> {
    let launched = LaunchedUp::launch().await?;
    let (pid, nats_pid) = (launched.pid, launched.nats_pid);
    // Let the workers settle, then the baseline: the same process idle, no prompts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = launched.rss();
    let nats_idle = launched.nats_rss();
    let ledger = launched.enrolled_ledger().await?;
    let routing = RoutingStore::open(ledger.jetstream()).await?;
    let healthy = plan(HEALTHY_PLAN);
    let t = Instant::now();
    let prompts: Vec<PromptName> = (0..sizes.memory_prompts)
        .map(|i| PromptName::parse(&format!("bench-mem-{i:03}")))
        .collect::<Result<_, _>>()?;
    let rollouts: Vec<Rollout> = futures::stream::iter(
        prompts
            .iter()
            .map(|p| start_rollout(&ledger, &routing, p, &healthy)),
    )
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let setup = t.elapsed();
    let after_setup = rss_kib(pid).map(|(rss, _)| rss).unwrap_or(0);
    // One release page stays open through the load, as a browser would hold it.
    let mut page = PageStream::open(&launched.ui_addr()?, &rollouts[0].release).await?;
    let page_updates = tokio::spawn(async move {
        let mut n = 0u64;
        while page.next().await.is_ok() {
            n += 1;
        }
        n
    });

    // Outcome load: 100-outcome messages round-robin over every prompt.
    let js = ledger.jetstream();
    let payloads: Vec<(String, Vec<u8>)> = rollouts
        .iter()
        .map(|r| {
            (
                outcome_subject(&r.prompt),
                serde_json::to_vec(&healthy_batch(r, 0, 100)).expect("serializes"),
            )
        })
        .collect();
    let mut in_flight = VecDeque::new();
    let (mut sent, mut last_seq) = (0u64, 0u64);
    let (mut peak_rss, mut peak_nats) = (0u64, 0u64);
    let sample = |peak_rss: &mut u64, peak_nats: &mut u64| {
        if let Some((rss, _)) = rss_kib(pid) {
            *peak_rss = (*peak_rss).max(rss);
        }
        if let Some((rss, _)) = nats_pid.and_then(rss_kib) {
            *peak_nats = (*peak_nats).max(rss);
        }
    };
    let t = Instant::now();
    let mut last_sample = Instant::now();
    while t.elapsed() < sizes.memory_load {
        let (subject, payload) = &payloads[sent as usize % payloads.len()];
        in_flight.push_back(
            js.publish(subject.clone(), payload.clone().into())
                .await
                .map_err(|e| fail("publishing outcomes")(e.to_string()))?,
        );
        sent += 1;
        if in_flight.len() >= 256 {
            if let Some(ack) = in_flight.pop_front() {
                last_seq = ack
                    .await
                    .map_err(|e| fail("outcomes not stored")(e.to_string()))?
                    .sequence;
            }
        }
        if last_sample.elapsed() >= Duration::from_millis(250) {
            sample(&mut peak_rss, &mut peak_nats);
            last_sample = Instant::now();
        }
    }
    for ack in in_flight {
        last_seq = ack
            .await
            .map_err(|e| fail("outcomes not stored")(e.to_string()))?
            .sequence;
    }
    let load = t.elapsed();
    sample(&mut peak_rss, &mut peak_nats);
    let backlog = {
        let stream = js
            .get_stream_no_info(OUTCOMES_STREAM)
            .await
            .map_err(|e| fail("outcome stream")(e.to_string()))?;
        stream
            .consumer_info(pledger_core::names::durable_name(
                "canary",
                "0",
                pledger_core::names::OUTCOMES_STREAM,
            ))
            .await
            .ok()
            .map(|i| i.num_pending + i.num_ack_pending as u64)
    };
    let end_of_load = rss_kib(pid).map(|(rss, _)| rss).unwrap_or(0);
    // Keep sampling while the monitor works off what it has not consumed yet.
    let t = Instant::now();
    let monitor =
        &pledger_core::names::durable_name("canary", "0", pledger_core::names::OUTCOMES_STREAM);
    let stream = js
        .get_stream_no_info(OUTCOMES_STREAM)
        .await
        .map_err(|e| fail("outcome stream")(e.to_string()))?;
    let mut drained = None;
    while t.elapsed() < Duration::from_secs(60) {
        sample(&mut peak_rss, &mut peak_nats);
        if let Ok(info) = stream.consumer_info(monitor).await {
            if info.ack_floor.stream_sequence >= last_seq {
                drained = Some(t.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, hwm) = rss_kib(pid).unwrap_or((0, 0));
    let nats_hwm = nats_pid.and_then(rss_kib).map(|(_, h)| h).unwrap_or(0);
    let message_bytes = payloads.first().map_or(0, |(_, p)| p.len());
    drop(payloads);
    let exe = launched.exe.clone();
    let stopped = launched.stop().await?;
    // The page's stream ends with the server.
    let page_updates = page_updates.await.unwrap_or(0);

    let outcomes = sent * 100;
    let mut s = Section::new(
        6,
        "Resident memory of `pledger up` with 100 active rollouts under load",
    );
    if sizes.memory_prompts != 100 {
        s.title = "Resident memory of `pledger up` with active rollouts under load";
    }
    s.baseline =
        "the same `pledger up` process idle: started, workers running, no prompt yet".into();
    s.method = format!(
        "`pledger up` (this binary, `{}`) runs as a child process with its own data directory and a \
         free port; it starts its own nats-server and the gatekeeper, router, canary monitor, feedback collector, scheduler, notary and notifier, and serves the release pages. {} \
         prompts each get a real rollout (the full command sequence; {:.1} s), then 100-outcome messages \
         round-robin over every prompt are published as fast as the server acknowledges them for {:.1} s. \
         VmRSS of the `pledger up` process is read from /proc/<pid>/status every 250 ms during the load \
         and until its canary monitor has consumed every message; VmHWM is the kernel's peak. \
         nats-server is a separate process and is reported apart; the target applies to `pledger up` \
         itself. Then SIGTERM.",
        exe.display(),
        sizes.memory_prompts,
        setup.as_secs_f64(),
        load.as_secs_f64()
    );
    s.rows.push(row(
        "peak resident (VmHWM)",
        mib(hwm),
        mib(idle),
        "< 150 MiB",
        Mark::of(hwm < 150 * 1024),
    ));
    s.rows.push(row(
        "largest VmRSS sampled under load",
        mib(peak_rss),
        mib(idle),
        "< 150 MiB",
        Mark::of(peak_rss < 150 * 1024),
    ));
    s.rows.push(row(
        "VmRSS after the rollouts were created / at end of load",
        format!("{} / {}", mib(after_setup), mib(end_of_load)),
        mib(idle),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "nats-server (separate process): peak VmRSS sampled / VmHWM",
        format!("{} / {}", mib(peak_nats), mib(nats_hwm)),
        mib(nats_idle),
        "",
        Mark::Info,
    ));
    s.notes.push(format!(
        "Load: {} messages ({} outcomes) in {:.1} s: {} outcomes/s offered to {} active rollouts.",
        thousands(sent),
        thousands(outcomes),
        load.as_secs_f64(),
        thousands(per_sec(outcomes, load)),
        rollouts.len()
    ));
    s.notes.push(match drained {
        Some(d) => format!(
            "When the load stopped the canary monitor inside `pledger up` had {} messages not yet \
             consumed; it had consumed every message {:.1} s later.",
            backlog.map_or_else(|| "an unknown number of".into(), thousands),
            d.as_secs_f64()
        ),
        None => "The canary monitor inside `pledger up` had NOT consumed every message 60 s after the load stopped.".into(),
    });
    if hwm >= 150 * 1024 {
        s.notes.push(format!(
            "Profile: these outcome messages are {:.1} KiB each; the canary monitor pulls up to {} \
             messages per batch with no byte bound (`Batches`, pledger-infra/src/worker/mod.rs), so one \
             batch can hold {:.0} MiB of payload, plus its decoded outcomes, at once. VmRSS rose from \
             {} (rollouts created, no load) to a peak of {} while the monitor had a backlog.",
            message_bytes as f64 / 1024.0,
            thousands(pledger_infra::worker::MAX_BATCH as u64),
            (message_bytes * pledger_infra::worker::MAX_BATCH) as f64 / 1024.0 / 1024.0,
            mib(after_setup),
            mib(hwm)
        ));
    }
    s.notes.push(format!(
        "The release pages were served throughout, and the release page of {} was held open by \
         an event-stream client: it received {page_updates} updates during the run.",
        rollouts[0].release
    ));
    s.notes.push(stop_note(stopped));
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// 13. Resident memory as releases come and go
// ---------------------------------------------------------------------------------------------

/// Waits until every durable consumer of the ledger and outcome streams has nothing pending
/// and nothing unacknowledged: every worker of `pledger up` has handled everything recorded.
async fn workers_caught_up(ledger: &Ledger, within: Duration) -> Result<Duration, Failure> {
    let js = ledger.jetstream();
    let t = Instant::now();
    let mut said = false;
    loop {
        let mut behind = Vec::new();
        for name in [LEDGER_STREAM, OUTCOMES_STREAM] {
            let stream = js
                .get_stream_no_info(name)
                .await
                .map_err(|e| fail("stream")(e.to_string()))?;
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.next().await {
                let info = info.map_err(|e| fail("consumer list")(e.to_string()))?;
                if info.config.durable_name.is_some()
                    && (info.num_pending > 0 || info.num_ack_pending > 0)
                {
                    behind.push(format!(
                        "{} ({} pending, {} unacknowledged)",
                        info.name, info.num_pending, info.num_ack_pending
                    ));
                }
            }
        }
        if behind.is_empty() {
            return Ok(t.elapsed());
        }
        if !said && t.elapsed() > Duration::from_secs(5) {
            said = true;
            progress(&format!(
                "the workers are still behind after 5 s: {}",
                behind.join(", ")
            ));
        }
        if t.elapsed() > within {
            return Err(Failure::other(format!(
                "bench: the workers of pledger up did not catch up within {} s: {}",
                within.as_secs(),
                behind.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Release number `version` of `prompt` from proposal to completion, with the commands the CLI runs (a new
/// version published, proposed, two reviews, an eval bundle, the gate, a one-stage plan, the
/// start, one 100-outcome message for the rollout, completion). `pledger up`'s gatekeeper may
/// decide the gate first; its router and canary monitor see the rollout come and go.
async fn release_cycle(ledger: &Ledger, prompt: &PromptName, version: u32) -> Result<(), Failure> {
    // The previous cycle's candidate is stable now (the first cycle's: version 0, adopted).
    let stable = &artifact(version - 1).version_id();
    let published = artifact(version);
    let candidate = published.version_id();
    exec(
        ledger,
        prompt,
        "maria",
        Command::PublishVersion {
            artifact: published,
        },
    )
    .await?;
    let (release, started) =
        propose_to_start(ledger, prompt, &candidate, stable, &plan(ALL_TRAFFIC_PLAN)).await?;
    let rollout = Rollout {
        prompt: prompt.clone(),
        release: release.clone(),
        stable: stable.clone(),
        candidate,
        started_at_sequence: started.last_sequence,
        stage_visit: routing_table_for(&started.state, started.last_sequence)
            .rollout
            .and_then(|r| r.stage_visit),
    };
    let payload = serde_json::to_vec(&healthy_batch(&rollout, 0, 100)).expect("serializes");
    publish(ledger.jetstream(), &outcome_subject(prompt), payload).await?;
    exec(
        ledger,
        prompt,
        "maria",
        Command::CompleteRelease {
            release,
            force_reason: None,
        },
    )
    .await?;
    Ok(())
}

/// The median of five VmRSS samples 200 ms apart.
async fn settled_rss(launched: &LaunchedUp) -> u64 {
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(launched.rss());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

impl ChurnMark {
    /// The heap at the mark, for the report.
    fn heap_text(&self) -> String {
        self.heap.map_or("unknown".to_string(), mib)
    }
}

struct ChurnMark {
    completed: usize,
    rss: u64,
    /// The process's peak resident memory so far (VmHWM): when the peak happened.
    hwm: u64,
    nats_rss: u64,
    /// RssAnon and RssFile at the mark.
    split: (u64, u64),
    /// The bytes allocated and not freed (`pledger_process_heap_bytes`) at the mark, in KiB.
    heap: Option<u64>,
    /// Time to complete the releases since the previous mark, and for the workers to catch up.
    drive: Duration,
    catch_up: Duration,
}

async fn churn(sizes: &Sizes) -> Result<Section, Failure> {
    let launched = LaunchedUp::launch().await?;
    let ledger = launched.enrolled_ledger().await?;
    let prompts: Vec<PromptName> = (0..sizes.churn_prompts)
        .map(|i| PromptName::parse(&format!("bench-churn-{i:03}")))
        .collect::<Result<_, _>>()?;
    let stable = artifact(0);
    let stable_id = stable.version_id();
    for prompt in &prompts {
        exec(
            &ledger,
            prompt,
            "maria",
            Command::RegisterPrompt {
                owner: "bench".into(),
            },
        )
        .await?;
        exec(
            &ledger,
            prompt,
            "maria",
            Command::PublishVersion {
                artifact: stable.clone(),
            },
        )
        .await?;
        exec(
            &ledger,
            prompt,
            "maria",
            Command::AdoptVersion {
                version: stable_id.clone(),
                reason: "serving production".into(),
            },
        )
        .await?;
    }
    let mut marks: Vec<ChurnMark> = Vec::new();
    let mut completed = 0usize;
    let mut next_version = 1u32;
    for &mark in &sizes.churn_marks {
        let t = Instant::now();
        while completed < mark {
            // One round: a release on each prompt at once (as many as the mark still needs).
            let round = (mark - completed).min(prompts.len());
            let version = next_version;
            futures::future::try_join_all(
                prompts[..round]
                    .iter()
                    .map(|p| release_cycle(&ledger, p, version)),
            )
            .await?;
            next_version += 1;
            completed += round;
        }
        let drive = t.elapsed();
        let catch_up = workers_caught_up(&ledger, Duration::from_secs(300)).await?;
        marks.push(ChurnMark {
            completed,
            rss: settled_rss(&launched).await,
            hwm: rss_kib(launched.pid).map_or(0, |(_, hwm)| hwm),
            nats_rss: launched.nats_rss(),
            split: rss_split_kib(launched.pid).unwrap_or((0, 0)),
            heap: launched.heap_kib().await,
            drive,
            catch_up,
        });
        progress(&format!(
            "13: {completed} releases completed, pledger up at {} (heap {})",
            mib(marks.last().map_or(0, |m| m.rss)),
            marks
                .last()
                .map_or("unknown".to_string(), ChurnMark::heap_text)
        ));
    }
    let (_, hwm) = rss_kib(launched.pid).unwrap_or((0, 0));
    let exe = launched.exe.clone();
    let stopped = launched.stop().await?;

    let first = marks
        .first()
        .ok_or_else(|| Failure::other("bench: no churn marks"))?;
    let last = marks.last().unwrap_or(first);
    let mut s = Section::new(
        13,
        "Resident memory of `pledger up` as releases come and go",
    );
    s.baseline = format!(
        "the same `pledger up` process after {} completed releases",
        thousands(first.completed as u64)
    );
    s.method = format!(
        "`pledger up` (this binary, `{}`) runs as a child process with its own data directory and a \
         free port, with all its workers. {} prompts are registered with a stable version; then \
         releases run on all of them at once, each from a new version to its completion with the \
         commands the CLI runs (publish, propose, two reviews, an eval bundle, the gate, a \
         one-stage plan, start, one 100-outcome message, complete), until {} releases have \
         completed. By the first mark each prompt has ended more releases than its live state \
         keeps in full ({}), so what grows after it grows with history, not with the number of \
         prompts. At each mark the bench waits until every worker's durable consumer has nothing \
         pending or unacknowledged, then takes the median of five VmRSS samples of the `pledger up` \
         process (/proc/<pid>/status) 200 ms apart. nats-server is a separate process, reported \
         apart.",
        exe.display(),
        prompts.len(),
        sizes
            .churn_marks
            .iter()
            .map(|m| thousands(*m as u64))
            .collect::<Vec<_>>()
            .join(", then "),
        pledger_core::state::RECENT
    );
    let ratio = last.rss as f64 / first.rss.max(1) as f64;
    s.rows.push(row(
        format!(
            "VmRSS after {} completed releases",
            thousands(last.completed as u64)
        ),
        format!("{} ({ratio:.2}×)", mib(last.rss)),
        mib(first.rss),
        "≤ 1.10×",
        Mark::of(ratio <= 1.10),
    ));
    for m in &marks[1..marks.len().saturating_sub(1)] {
        s.rows.push(row(
            format!(
                "VmRSS after {} completed releases",
                thousands(m.completed as u64)
            ),
            format!(
                "{} ({:.2}×)",
                mib(m.rss),
                m.rss as f64 / first.rss.max(1) as f64
            ),
            mib(first.rss),
            "",
            Mark::Info,
        ));
    }
    s.rows.push(row(
        "peak resident over the run (VmHWM)",
        mib(hwm),
        mib(first.rss),
        "< 150 MiB",
        Mark::of(hwm < 150 * 1024),
    ));
    s.rows.push(row(
        "nats-server (separate process) VmRSS at the first / last mark",
        format!("{} / {}", mib(first.nats_rss), mib(last.nats_rss)),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "heap allocated and not freed (`pledger_process_heap_bytes`) at the first / last mark",
        format!("{} / {}", first.heap_text(), last.heap_text()),
        "",
        "",
        Mark::Info,
    ));
    for m in &marks {
        s.notes.push(format!(
            "{} releases completed: {:.1} s to drive them since the previous mark, then {:.1} s \
             for the workers to catch up; VmRSS {} (anonymous {}, file-backed {}), heap \
             allocated {}, VmHWM so far {}.",
            thousands(m.completed as u64),
            m.drive.as_secs_f64(),
            m.catch_up.as_secs_f64(),
            mib(m.rss),
            mib(m.split.0),
            mib(m.split.1),
            m.heap_text(),
            mib(m.hwm)
        ));
    }
    s.notes.push(stop_note(stopped));
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// 7–9. Trusted history: what signing and verifying cost
// ---------------------------------------------------------------------------------------------

/// A member of the cast as the bench ledger's roster knows it (what `Ledger::execute`
/// identifies from the signing key).
struct Member {
    key: std::sync::Arc<ssh_key::PrivateKey>,
    actor: Actor,
    roles: BTreeSet<Role>,
}

type Members = BTreeMap<&'static str, Member>;

/// The people who write the generated histories, identified on the ledger's roster.
async fn members(ledger: &Ledger) -> Result<Members, Failure> {
    members_of(ledger, cast()).await
}

/// [`members`] with the keys of another cast with the same people (enrolled on `ledger`).
async fn members_of(ledger: &Ledger, cast: &Cast) -> Result<Members, Failure> {
    let (verifier, _, _) = ledger.roster().await?;
    let mut out = BTreeMap::new();
    for name in ["maria", "priya", "tomas", "ci"] {
        let key = cast.key(name);
        let who = identify(&verifier.roster, &*key)?;
        out.insert(
            name,
            Member {
                key,
                actor: who.actor,
                roles: who.roles,
            },
        );
    }
    Ok(out)
}

/// The commands of a generated history, in order: register, publish, adopt, then release
/// cycles of nine events (publish a version, propose it, product and technical approvals by
/// two reviewers, an eval bundle, the gate, a one-stage plan, start, complete).
const CYCLE: usize = 9;

/// A prompt's history generated in this process: each command decided on the state so far
/// (`pledger_core::decide`, as its signer with its roster roles, at the wall clock), sealed
/// onto the family's chain (`verify::seal`) and folded. They are the events `Ledger::execute`
/// would record, so every reader accepts them.
struct History {
    prompt: PromptName,
    state: PromptState,
    head: Option<String>,
    sealed: Vec<Sealed>,
}

impl History {
    fn record(&mut self, who: &Member, command: Command) -> Result<(), Failure> {
        let now = pledger_infra::ledger::now();
        let ctx = Context::new(who.actor.clone(), who.roles.clone(), now);
        let events = pledger_core::decide(&self.state, &command, &ctx)?;
        if events.len() != 1 {
            return Err(Failure::other(format!(
                "bench: `{}` on {} recorded {} events, not one",
                command.name(),
                self.prompt,
                events.len()
            )));
        }
        for event in events {
            let envelope = envelope_for(event, &who.actor, now, "bench-history", None);
            let sealed = seal(envelope, self.head.clone(), &*who.key)
                .map_err(|e| fail("seal")(e.to_string()))?;
            pledger_core::evolve(&mut self.state, &sealed.envelope);
            self.head = Some(sealed.hash.clone());
            self.sealed.push(sealed);
        }
        Ok(())
    }

    /// A history of exactly `events` events (the last release cycle cut short).
    fn generate(prompt: PromptName, events: usize, m: &Members) -> Result<History, Failure> {
        let mut h = History {
            state: PromptState::new(prompt.clone()),
            prompt,
            head: None,
            sealed: Vec::with_capacity(events),
        };
        let all_traffic = plan(ALL_TRAFFIC_PLAN);
        let mut version = 0u32;
        let mut release: Option<ReleaseId> = None;
        let open = |r: &Option<ReleaseId>| {
            r.clone()
                .ok_or_else(|| Failure::other("bench: no release proposed yet"))
        };
        for i in 0..events {
            let (who, command) = match i {
                0 => (
                    "maria",
                    Command::RegisterPrompt {
                        owner: "bench".into(),
                    },
                ),
                1 => (
                    "maria",
                    Command::PublishVersion {
                        artifact: artifact(0),
                    },
                ),
                2 => (
                    "maria",
                    Command::AdoptVersion {
                        version: artifact(0).version_id(),
                        reason: "serving production".into(),
                    },
                ),
                _ => match (i - 3) % CYCLE {
                    0 => {
                        version += 1;
                        (
                            "maria",
                            Command::PublishVersion {
                                artifact: artifact(version),
                            },
                        )
                    }
                    1 => (
                        "maria",
                        Command::ProposeChange {
                            candidate: artifact(version).version_id(),
                            rationale: "bench history".into(),
                            expected_changes: vec![],
                        },
                    ),
                    2 | 3 => (
                        if (i - 3) % CYCLE == 2 {
                            "priya"
                        } else {
                            "tomas"
                        },
                        Command::SubmitReview {
                            release: open(&release)?,
                            layer: if (i - 3) % CYCLE == 2 {
                                ReviewLayer::Product
                            } else {
                                ReviewLayer::Technical
                            },
                            verdict: ReviewVerdict::Approve,
                            note: None,
                        },
                    ),
                    4 => {
                        let stable = h.state.stable.clone().ok_or_else(|| {
                            Failure::other("bench: the history has no stable version")
                        })?;
                        (
                            "ci",
                            Command::AttachEvalBundle {
                                release: open(&release)?,
                                bundle: bundle(&artifact(version).version_id(), &stable),
                            },
                        )
                    }
                    5 => (
                        "ci",
                        Command::DecideGate {
                            release: open(&release)?,
                        },
                    ),
                    6 => (
                        "maria",
                        Command::PlanRollout {
                            release: open(&release)?,
                            plan: all_traffic.clone(),
                        },
                    ),
                    7 => (
                        "maria",
                        Command::StartRollout {
                            release: open(&release)?,
                            bucketing_salt: uuid::Uuid::new_v4().simple().to_string(),
                            force_reason: None,
                        },
                    ),
                    _ => (
                        "maria",
                        Command::CompleteRelease {
                            release: open(&release)?,
                            force_reason: None,
                        },
                    ),
                },
            };
            h.record(&m[who], command)?;
            if let Some(Event::ChangeProposed(p)) = h.sealed.last().map(|s| &s.envelope.event) {
                release = Some(p.release.clone());
            }
        }
        Ok(h)
    }

    /// The latest published version that is not the stable one: what the timed proposals
    /// propose (as a person proposes the version just published).
    fn candidate(&self) -> Result<VersionId, Failure> {
        self.state
            .version_order
            .iter()
            .rev()
            .find(|v| Some(v) != self.state.stable.as_ref())
            .ok_or_else(|| Failure::other("bench: the history has no version to propose"))
    }

    /// Appends every event with `Ledger::append` (conditional on the family's last sequence).
    async fn publish(&self, ledger: &Ledger) -> Result<(), Failure> {
        let mut expected = 0;
        for s in &self.sealed {
            expected = ledger
                .append(&self.prompt, expected, s)
                .await?
                .ok_or_else(|| Failure::other(format!("bench: {}'s family moved", self.prompt)))?;
        }
        Ok(())
    }
}

/// What `Ledger::load` reads for a command on `prompt`: the family, the roster, the global
/// windows.
async fn command_read(ledger: &Ledger, prompt: &PromptName) -> Result<Vec<RawRecord>, Failure> {
    Ok(ledger
        .read_raw(
            &[
                &family_filter(prompt),
                ROSTER_SUBJECT,
                FLEET_WINDOWS_SUBJECT,
            ],
            0,
        )
        .await?)
}

fn propose(candidate: &VersionId) -> Command {
    Command::ProposeChange {
        candidate: candidate.clone(),
        rationale: "bench: timed proposal".into(),
        expected_changes: vec![],
    }
}

/// `pledger release propose`, signed: `Ledger::execute` (read the family, the roster and the
/// windows, verify every message, identify the key, decide, seal, conditional append).
async fn propose_signed(
    ledger: &Ledger,
    prompt: &PromptName,
    who: &Member,
    candidate: &VersionId,
) -> Result<(), Failure> {
    let command = propose(candidate);
    let done = ledger
        .execute(prompt, &*who.key, "bench", move |_| Ok(command.clone()))
        .await?;
    if done.recorded.len() != 1 {
        return Err(Failure::other(format!(
            "bench: the proposal on {prompt} recorded {} events",
            done.recorded.len()
        )));
    }
    Ok(())
}

/// The baseline: the same proposal without signing or verification. The same read (family,
/// roster, windows: one ephemeral consumer), every message decoded (`serde_json::from_slice::<
/// Envelope>`) and the family's folded (`evolve`) with no check, the same `decide` with the
/// member's roles, the envelope encoded with `serde_json::to_vec` (no canonical form, no
/// signature, no hash) and appended conditionally on the family (`Ledger::append`: same
/// headers, same fsync).
async fn propose_unsigned(
    ledger: &Ledger,
    prompt: &PromptName,
    who: &Member,
    candidate: &VersionId,
) -> Result<(), Failure> {
    let raws = command_read(ledger, prompt).await?;
    let filter = family_filter(prompt);
    let family = filter.trim_end_matches('>');
    let mut state = PromptState::new(prompt.clone());
    let mut windows = None;
    let mut last = 0;
    for r in &raws {
        let envelope: Envelope =
            serde_json::from_slice(&r.payload).map_err(|e| fail("decode")(e.to_string()))?;
        if r.subject.starts_with(family) {
            pledger_core::evolve(&mut state, &envelope);
            last = r.sequence;
        } else if let Event::FleetWindowsSet(w) = &envelope.event {
            windows = w.windows.clone();
        }
    }
    let now = pledger_infra::ledger::now();
    let mut ctx = Context::new(who.actor.clone(), who.roles.clone(), now);
    ctx.fleet_windows = windows;
    for event in pledger_core::decide(&state, &propose(candidate), &ctx)? {
        let envelope = envelope_for(event, &who.actor, now, "bench", None);
        let bytes = serde_json::to_vec(&envelope).map_err(|e| fail("encode")(e.to_string()))?;
        let unsigned = Sealed {
            envelope,
            bytes,
            hash: String::new(),
        };
        last = ledger
            .append(prompt, last, &unsigned)
            .await?
            .ok_or_else(|| Failure::other(format!("bench: {prompt}'s family moved")))?;
        pledger_core::evolve(&mut state, &unsigned.envelope);
    }
    Ok(())
}

/// Timed proposals, signed and unsigned, on prompts with `events` events of history.
struct Trials {
    signed: Vec<Duration>,
    unsigned: Vec<Duration>,
    /// What the first signed proposal read (before it ran), for the in-process pieces.
    read: Vec<RawRecord>,
    prompt: PromptName,
    /// The first unsigned proposal's prompt (the twin of `prompt`).
    twin: PromptName,
    candidate: VersionId,
    /// Events generated and appended for the trials, and how long that took.
    generated: usize,
    generating: Duration,
}

/// `trials` signed and `trials` unsigned proposals, alternating which goes first. Each side
/// has its own prompts (twins: the same generated history), `per_prompt` proposals each, so
/// the unsigned appends never enter a family the signed side reads.
async fn propose_trials(
    env: &Env,
    m: &Members,
    label: &str,
    events: usize,
    trials: usize,
    per_prompt: usize,
) -> Result<Trials, Failure> {
    let maria = &m["maria"];
    let mut out: Option<Trials> = None;
    let (mut signed, mut unsigned) = (Vec::new(), Vec::new());
    let (mut generated, mut generating) = (0, Duration::ZERO);
    let mut pair = 0;
    while signed.len() < trials {
        let t = Instant::now();
        let a = History::generate(
            PromptName::parse(&format!("bench-{label}-{pair}-signed"))?,
            events,
            m,
        )?;
        let b = History::generate(
            PromptName::parse(&format!("bench-{label}-{pair}-unsigned"))?,
            events,
            m,
        )?;
        a.publish(&env.ledger).await?;
        b.publish(&env.ledger).await?;
        generating += t.elapsed();
        generated += a.sealed.len() + b.sealed.len();
        let (ca, cb) = (a.candidate()?, b.candidate()?);
        if out.is_none() {
            out = Some(Trials {
                signed: vec![],
                unsigned: vec![],
                read: command_read(&env.ledger, &a.prompt).await?,
                prompt: a.prompt.clone(),
                twin: b.prompt.clone(),
                candidate: ca.clone(),
                generated: 0,
                generating: Duration::ZERO,
            });
        }
        for _ in 0..per_prompt.min(trials - signed.len()) {
            let signed_first = signed.len() % 2 == 0;
            for side in [signed_first, !signed_first] {
                let t = Instant::now();
                if side {
                    propose_signed(&env.ledger, &a.prompt, maria, &ca).await?;
                    signed.push(t.elapsed());
                } else {
                    propose_unsigned(&env.ledger, &b.prompt, maria, &cb).await?;
                    unsigned.push(t.elapsed());
                }
            }
        }
        pair += 1;
    }
    signed.sort();
    unsigned.sort();
    let mut out = out.ok_or_else(|| Failure::other("bench: no trials"))?;
    out.signed = signed;
    out.unsigned = unsigned;
    out.generated = generated;
    out.generating = generating;
    Ok(out)
}

/// Every message through a fresh `LedgerVerifier`: how many it accepted.
fn verify_all(raws: &[RawRecord]) -> u64 {
    let mut verifier = LedgerVerifier::new();
    for r in raws {
        let _ = verifier.observe(r.sequence, &r.subject, &r.payload);
    }
    verifier.accepted
}

/// Every message decoded, nothing else: how many decoded.
fn decode_all(raws: &[RawRecord]) -> usize {
    raws.iter()
        .filter(|r| serde_json::from_slice::<Envelope>(&r.payload).is_ok())
        .count()
}

/// Every message decoded and the prompt events folded, with no check (a reader without
/// verification).
fn decode_fold(raws: &[RawRecord]) -> usize {
    let mut states: BTreeMap<PromptName, PromptState> = BTreeMap::new();
    for r in raws {
        if let Ok(envelope) = serde_json::from_slice::<Envelope>(&r.payload) {
            if let Some(p) = envelope.event.aggregate().prompt() {
                let state = states
                    .entry(p.clone())
                    .or_insert_with(|| PromptState::new(p.clone()));
                pledger_core::evolve(state, &envelope);
            }
        }
    }
    states.values().map(|s| s.releases.len()).sum()
}

/// The median wall time of `reps` calls (after one warm-up call).
fn median_of<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    let mut samples: Vec<Duration> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    samples.sort();
    percentile(&samples, 50.0)
}

/// The fastest of `runs` calls (after one warm-up call).
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Microseconds, or milliseconds from 1 ms.
fn us(d: Duration) -> String {
    if d >= Duration::from_millis(1) {
        ms2(d)
    } else {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }
}

fn ms2(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn signed_diff(a: Duration, b: Duration) -> String {
    let d = a.as_secs_f64() - b.as_secs_f64();
    format!(
        "{}{:.2} ms",
        if d < 0.0 { "−" } else { "+" },
        d.abs() * 1000.0
    )
}

// ---------------------------------------------------------------------------------------------
// 7. A signed command against the same command unsigned
// ---------------------------------------------------------------------------------------------

/// Section 7, with its trials for section 10.
async fn signed_command(env: &Env, sizes: &Sizes) -> Result<(Section, Trials), Failure> {
    let m = members(&env.ledger).await?;
    let t = propose_trials(env, &m, "sign", 4, sizes.sign_trials, 1).await?;
    let (s50, u50) = (percentile(&t.signed, 50.0), percentile(&t.unsigned, 50.0));

    // The pieces, in this process, on the messages the first signed proposal read.
    let reps = sizes.piece_reps;
    let read = &t.read;
    if verify_all(read) != read.len() as u64 {
        return Err(Failure::other("bench: a generated event did not verify"));
    }
    let verify = median_of(reps, || verify_all(read));
    let fold = median_of(reps, || decode_fold(read));
    let mut verifier = LedgerVerifier::new();
    for r in read {
        let _ = verifier.observe(r.sequence, &r.subject, &r.payload);
    }
    let maria = &m["maria"];
    let ctx = Context::new(
        maria.actor.clone(),
        maria.roles.clone(),
        pledger_infra::ledger::now(),
    );
    let event = pledger_core::decide(&verifier.state(&t.prompt), &propose(&t.candidate), &ctx)?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::other("bench: the proposal decides nothing"))?;
    let envelope = envelope_for(event, &maria.actor, ctx.now, "bench", None);
    let head = verifier.family_head(&t.prompt);
    let sealing = median_of(reps, || {
        seal(envelope.clone(), head.clone(), &*maria.key).map(|s| s.bytes.len())
    });
    let encoding = median_of(reps, || {
        serde_json::to_vec(&envelope.clone()).map(|b| b.len())
    });
    let sealed_len = seal(envelope.clone(), head.clone(), &*maria.key)
        .map(|s| s.bytes.len())
        .unwrap_or(0);
    let plain_len = serde_json::to_vec(&envelope).map(|b| b.len()).unwrap_or(0);
    let family_events = read.len() - read.iter().filter(|r| r.subject == ROSTER_SUBJECT).count();
    let roster_events = read.len() - family_events;

    let mut s = Section::new(7, "Signed command against the same command unsigned");
    s.baseline = "the same proposal without signing or verification, measured in the same run: the same \
                  read (one ephemeral consumer over the family, the roster and the global windows), every \
                  message decoded with `serde_json::from_slice::<Envelope>` and the family's events folded \
                  with `evolve` but nothing checked, the same `decide` with the author's roles, the \
                  envelope encoded with `serde_json::to_vec` (no canonical form, no signature, no hash) \
                  and appended with `Ledger::append` (the same conditional headers, the same fsync). The \
                  product has no unsigned path any more; this is it rebuilt from the public pieces"
        .into();
    s.method = format!(
        "`pledger release propose` as the CLI runs it after connecting: `Ledger::execute(prompt, \
         signer, ..)` with maria's in-memory ed25519 key (read the family with the roster and the \
         global windows, verify every message with `LedgerVerifier::observe`, identify the key on \
         the roster, `decide`, `verify::seal` (canonical JSON, SSHSIG over it, sha256 of the \
         stored bytes), conditional append with fsync). {} trials, each on a fresh pair of prompts \
         whose history is what a new prompt has when its first change is proposed ({family_events} \
         events: registered, a first version published and adopted, a second published; generated in this process, \
         signed, and appended with `Ledger::append`), one prompt for the signed proposal and its \
         twin for the unsigned one, alternating which runs first. The read also returns the \
         roster's {roster_events} enrolments. Timed from the call to its return (the \
         acknowledged append), in this process; the CLI's connection and stream checks are not \
         included. The in-process rows time the two added steps alone on the messages the first \
         signed proposal read: median of {reps} calls each.",
        t.signed.len()
    );
    s.rows.push(row(
        "`release propose`, p50",
        ms2(s50),
        ms2(u50),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "`release propose`, p99",
        ms2(percentile(&t.signed, 99.0)),
        ms2(percentile(&t.unsigned, 99.0)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "signed − unsigned, p50",
        signed_diff(s50, u50),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!(
            "verify the read in-process: `LedgerVerifier::observe` × {} messages",
            read.len()
        ),
        us(verify),
        us(fold),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "seal the proposal in-process: `verify::seal` (1 event)",
        us(sealing),
        us(encoding),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "in-process sum: verify the read + seal",
        us(verify + sealing),
        us(fold + encoding),
        "",
        Mark::Info,
    ));
    s.notes.push(format!(
        "Baseline of the in-process rows: decode + fold the same messages without checks \
         (`from_slice` + `evolve`), and `serde_json::to_vec` of the same envelope. The sealed \
         event is {} bytes; unsigned it is {} bytes.",
        thousands(sealed_len as u64),
        thousands(plain_len as u64)
    ));
    s.notes.push(format!(
        "Signing and verifying add {} to the p50 of a proposal on a new prompt; the two steps \
         alone cost {} in this process ({} for verifying {} messages, {} for sealing one event). \
         The rest of the command (one consumer, one fsynced append) is the same on both sides.",
        signed_diff(s50, u50),
        us(verify + sealing),
        us(verify),
        read.len(),
        us(sealing)
    ));
    s.notes.push(format!(
        "Set-up (not timed): {} events generated, signed and appended in {:.1} s.",
        thousands(t.generated as u64),
        t.generating.as_secs_f64()
    ));
    Ok((s, t))
}

// ---------------------------------------------------------------------------------------------
// 8. Verification throughput on read
// ---------------------------------------------------------------------------------------------

async fn verify_throughput(env: &Env, sizes: &Sizes) -> Result<Section, Failure> {
    let m = members(&env.ledger).await?;
    let n = sizes.verify_events;
    let roster = env.ledger.read_raw(&[ROSTER_SUBJECT], 0).await?;
    let t = Instant::now();
    let h = History::generate(PromptName::parse("bench-verify")?, n, &m)?;
    let generating = t.elapsed();
    // The family placed after the roster, as on a ledger (never published: pure).
    let first = roster.last().map(|r| r.sequence).unwrap_or(0) + 1;
    let raws: Vec<RawRecord> = roster
        .iter()
        .cloned()
        .chain(h.sealed.iter().enumerate().map(|(i, s)| RawRecord {
            sequence: first + i as u64,
            subject: subject_for(&s.envelope.event.aggregate()),
            payload: s.bytes.clone().into(),
        }))
        .collect();
    let total = raws.len();
    let accepted = verify_all(&raws);
    if accepted != total as u64 {
        return Err(Failure::other(format!(
            "bench: {accepted} of {total} generated messages verified"
        )));
    }
    let runs = sizes.verify_runs;
    let observe = best_of(runs, || verify_all(&raws));
    let decode = best_of(runs, || decode_all(&raws));
    let fold = best_of(runs, || decode_fold(&raws));

    // The checks one at a time, over the family's events.
    let family: Vec<(&Sealed, &Member)> = h
        .sealed
        .iter()
        .map(|s| {
            let who = m
                .values()
                .find(|w| w.actor == s.envelope.actor)
                .expect("a member wrote it");
            (s, who)
        })
        .collect();
    // What each signature covers: the stored bytes without the `signature` member.
    let signed: Vec<(Vec<u8>, ssh_key::SshSig, &ssh_key::PublicKey)> = family
        .iter()
        .map(|(s, who)| {
            let mut unsigned = s.envelope.clone();
            unsigned.signature = None;
            let bytes = pledger_core::verify::signing_bytes(&unsigned);
            let sig = EventSigner::sign(&*who.key, &bytes).expect("signs");
            (bytes, sig, who.key.public_key())
        })
        .collect();
    let signature = best_of(runs, || {
        signed
            .iter()
            .filter(|(bytes, sig, key)| {
                key.verify(pledger_core::verify::SIGNATURE_NAMESPACE, bytes, sig)
                    .is_ok()
            })
            .count()
    });
    if signed.iter().any(|(b, sig, key)| {
        key.verify(pledger_core::verify::SIGNATURE_NAMESPACE, b, sig)
            .is_err()
    }) {
        return Err(Failure::other("bench: a signature did not verify"));
    }
    // Admission alone: the fold between events is not timed.
    let admit = (0..runs.max(1))
        .map(|_| {
            let mut state = PromptState::new(h.prompt.clone());
            let mut spent = Duration::ZERO;
            for (s, who) in &family {
                let t = Instant::now();
                let ok = pledger_core::verify::admit(&state, &s.envelope, &who.roles).is_ok();
                spent += t.elapsed();
                std::hint::black_box(ok);
                pledger_core::evolve(&mut state, &s.envelope);
            }
            spent
        })
        .min()
        .unwrap_or_default();
    let hashing = best_of(runs, || {
        h.sealed
            .iter()
            .map(|s| pledger_core::verify::event_hash(&s.bytes).len())
            .sum::<usize>()
    });
    let bytes: usize = h.sealed.iter().map(|s| s.bytes.len()).sum();
    let per = |d: Duration, count: usize| d / count.max(1) as u32;

    let mut s = Section::new(8, "Verification throughput on read");
    s.baseline = "decoding alone: `serde_json::from_slice::<Envelope>` over the same messages, \
                  nothing checked or folded"
        .into();
    s.method = format!(
        "A signed ledger generated in this process: the bench ledger's roster ({} enrolments, as \
         stored) then one prompt's family of {} events (registered, v0 published and adopted, \
         then release cycles of nine events: a version published, proposed, approved by product \
         and technical reviewers, an eval bundle, the gate, a one-stage plan, started, completed; \
         each decided by `decide` as its author with the author's roster roles and sealed with \
         `verify::seal`; generated in {:.1} s). Every message goes through one fresh \
         `LedgerVerifier::observe` in stream order (decoding, subject, key on the roster at that \
         position, SSHSIG ed25519 signature, chain link, unique id, role, admissibility by the \
         decider on the state before, fold): all {} accepted. Pure, single thread, best of {runs} \
         runs each.",
        roster.len(),
        thousands(n as u64),
        generating.as_secs_f64(),
        thousands(total as u64),
    );
    s.rows.push(row(
        "events/s",
        thousands(per_sec(total as u64, observe)),
        thousands(per_sec(total as u64, decode)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "per event",
        us(per(observe, total)),
        us(per(decode, total)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!("all {} messages", thousands(total as u64)),
        ms(observe),
        ms(decode),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "decode and fold without checks (`from_slice` + `evolve`), per event",
        us(per(fold, total)),
        us(per(decode, total)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "the signature check alone (`PublicKey::verify`, SSHSIG ed25519), per event",
        us(per(signature, family.len())),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "admissibility alone (`verify::admit`: the decider re-run), per event",
        us(per(admit, family.len())),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "the chain link alone (`event_hash`: sha256 of the stored bytes), per event",
        us(per(hashing, h.sealed.len())),
        "",
        "",
        Mark::Info,
    ));
    s.notes.push(format!(
        "The family's events average {} bytes as stored ({:.1} MiB in all).",
        thousands((bytes / h.sealed.len().max(1)) as u64),
        bytes as f64 / 1024.0 / 1024.0
    ));
    s.notes.push(
        "The single-check rows time each check alone over the family's events (the signature \
         over each event's signing bytes with an already-decoded SSHSIG; admission on the state \
         before each event, the fold not timed): they show where `observe`'s time goes and do \
         not add up to it exactly (`observe` also decodes, splits out the signing bytes, decodes \
         the base64 SSHSIG, looks the key up and clones the envelope)."
            .into(),
    );
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// 9. Command cost against the family's history
// ---------------------------------------------------------------------------------------------

/// Section 12's figures at one history length.
struct FromSnapshot {
    events: usize,
    /// The first read, which replays the family and keeps its snapshot.
    first_read: Duration,
    snapshot_bytes: u64,
    propose: Vec<Duration>,
    show: Vec<Duration>,
}

/// Section 12: `release propose` (in process, `Ledger::execute` on a ledger keeping snapshots
/// in a directory) and `prompt show` (a child process with the same cache dir) on prompts with
/// 100 to 100,000 events.
async fn snapshot_cost(env: &Env, sizes: &Sizes) -> Result<Section, Failure> {
    let m = members(&env.ledger).await?;
    let maria = &m["maria"];
    let exe = std::env::current_exe().map_err(|e| fail("own executable")(e.to_string()))?;
    let home = env.dir.path().join("snapshot-home");
    let cache = home.join("config").join("cache");
    std::fs::create_dir_all(&cache).map_err(|e| fail("temp home")(e.to_string()))?;
    let store = std::sync::Arc::new(pledger_infra::snapshot::SnapshotDir::new(
        cache.join(pledger_core::names::SNAPSHOT_DIR),
    ));
    let ledger = Ledger::new(env.ledger.jetstream().client()).with_snapshots(store.clone());
    let key = ledger.ledger_key().await?;
    let mut measured = Vec::new();
    for &n in &sizes.snapshot_sizes {
        progress(&format!(
            "12/14   a family of {} events: generate, append",
            thousands(n as u64)
        ));
        let h = History::generate(PromptName::parse(&format!("bench-snapshot-{n}"))?, n, &m)?;
        h.publish(&env.ledger).await?;
        let candidate = h.candidate()?;
        progress(&format!("12/14   {} events: timed", thousands(n as u64)));
        let t = Instant::now();
        ledger.load(&h.prompt).await?;
        let first_read = t.elapsed();
        let snapshot_bytes = std::fs::metadata(store.path(&key, &h.prompt))
            .map(|m| m.len())
            .unwrap_or(0);
        let prompt = h.prompt.to_string();
        let show = ["prompt", "show", &prompt];
        // One untimed run: the binary in the page cache.
        tokio::task::block_in_place(|| child_command(&exe, &env.url, &home, &show))?;
        let (mut proposed, mut shown) = (Vec::new(), Vec::new());
        for trial in 0..sizes.snapshot_trials {
            for first in [trial % 2 == 0, trial % 2 == 1] {
                if first {
                    let t = Instant::now();
                    propose_signed(&ledger, &h.prompt, maria, &candidate).await?;
                    proposed.push(t.elapsed());
                } else {
                    let (wall, _) = tokio::task::block_in_place(|| {
                        child_command(&exe, &env.url, &home, &show)
                    })?;
                    shown.push(wall);
                }
            }
        }
        proposed.sort();
        shown.sort();
        measured.push(FromSnapshot {
            events: n,
            first_read,
            snapshot_bytes,
            propose: proposed,
            show: shown,
        });
    }

    let mut s = Section::new(12, "Commands read from a snapshot at any history length");
    let base = measured
        .first()
        .map(|b| thousands(b.events as u64))
        .unwrap_or_default();
    s.baseline =
        format!("the same command on a prompt with {base} events of history, in the same run");
    s.method = format!(
        "Prompts whose family holds {} events, generated and signed as in section 8 (release cycles of nine events) and appended with `Ledger::append`. At each size: one read (`Ledger::load` on a ledger keeping snapshots in a directory: it replays the family and keeps its snapshot), then {} signed `release propose` in process (`Ledger::execute` on that ledger: it resumes from the snapshot, verifies what came after it, and keeps a new snapshot every {} events) alternating with as many `pledger prompt show` runs as child processes (spawn to exit, the same cache dir: `--cache-dir` defaults to `<config dir>/cache`). Each proposal adds an event.",
        measured
            .iter()
            .map(|m| thousands(m.events as u64))
            .collect::<Vec<_>>()
            .join(", "),
        sizes.snapshot_trials,
        pledger_infra::ledger::SNAPSHOT_EVERY,
    );
    let p50 = |v: &[Duration]| percentile(v, 50.0);
    let Some(first) = measured.first() else {
        return Ok(s);
    };
    let (base_propose, base_show) = (p50(&first.propose), p50(&first.show));
    for m in &measured {
        let n = thousands(m.events as u64);
        let last =
            m.events == measured.last().map(|l| l.events).unwrap_or(0) && m.events > first.events;
        for (what, v, b) in [
            ("`release propose`", p50(&m.propose), base_propose),
            ("`prompt show` (child process)", p50(&m.show), base_show),
        ] {
            let ratio = v.as_secs_f64() / b.as_secs_f64().max(1e-9);
            s.rows.push(row(
                format!("{what} p50, {n} events of history"),
                ms2(v),
                ms2(b),
                if last { "≤ 1.5× the baseline" } else { "" },
                if last {
                    Mark::of(ratio <= 1.5)
                } else {
                    Mark::Info
                },
            ));
        }
        s.rows.push(row(
            format!("{n}: the first read (no snapshot yet: the whole family replayed)"),
            ms2(m.first_read),
            ms2(first.first_read),
            "",
            Mark::Info,
        ));
        s.rows.push(row(
            format!("{n}: the snapshot's size"),
            format!("{:.1} KiB", m.snapshot_bytes as f64 / 1024.0),
            format!("{:.1} KiB", first.snapshot_bytes as f64 / 1024.0),
            "",
            Mark::Info,
        ));
        s.notes.push(format!(
            "{n} events: `release propose` p99 {}, `prompt show` p99 {} ({} samples each).",
            ms2(percentile(&m.propose, 99.0)),
            ms2(percentile(&m.show, 99.0)),
            m.propose.len()
        ));
    }
    Ok(s)
}

/// Section 9's figures at one history length.
struct Measured {
    events: usize,
    trials: Trials,
    /// In-process: `LedgerVerifier::observe` over what the command read; decode and fold.
    verify: Duration,
    fold: Duration,
    /// The read alone (median of 3), as `Ledger::load` makes it and with the family's filter
    /// only: on the signed side's prompt and on its unsigned twin.
    read: Duration,
    twin_read: Duration,
    family_only: Duration,
    twin_family_only: Duration,
}

async fn history_cost(env: &Env, sizes: &Sizes) -> Result<Section, Failure> {
    let m = members(&env.ledger).await?;
    let trials = sizes.history_trials;
    let mut measured: Vec<Measured> = Vec::new();
    for &n in &sizes.history_sizes {
        progress(&format!("9/9   history of {} events", thousands(n as u64)));
        // At most 5% growth of the history during the trials.
        let per_prompt = (n / 20).max(1);
        let t = propose_trials(env, &m, &format!("history{n}"), n, trials, per_prompt).await?;
        if verify_all(&t.read) != t.read.len() as u64 {
            return Err(Failure::other("bench: a generated event did not verify"));
        }
        let verify = best_of(3, || verify_all(&t.read));
        let fold = best_of(3, || decode_fold(&t.read));
        // The read alone, as `Ledger::load` makes it and with the family's filter only, on
        // both sides' prompts: [signed 3 filters, twin 3 filters, signed 1, twin 1].
        let mut reads: [Vec<Duration>; 4] = Default::default();
        for _ in 0..3 {
            for (i, prompt) in [&t.prompt, &t.twin].into_iter().enumerate() {
                let started = Instant::now();
                command_read(&env.ledger, prompt).await?;
                reads[i].push(started.elapsed());
                let started = Instant::now();
                env.ledger.read_raw(&[&family_filter(prompt)], 0).await?;
                reads[2 + i].push(started.elapsed());
            }
        }
        let [read, twin_read, family_only, twin_family_only] = reads.map(|mut v| {
            v.sort();
            percentile(&v, 50.0)
        });
        measured.push(Measured {
            events: n,
            read,
            twin_read,
            family_only,
            twin_family_only,
            trials: t,
            verify,
            fold,
        });
    }

    let mut s = Section::new(9, "Command cost against the family's history");
    s.baseline = "the same proposal unsigned, as in section 7 (the same read, decode and fold without \
                  checks, `decide`, `serde_json::to_vec`, `Ledger::append`), on a twin prompt with the same \
                  history"
        .into();
    let sizes_text = measured
        .iter()
        .map(|m| thousands(m.events as u64))
        .collect::<Vec<_>>()
        .join(", ");
    s.method = format!(
        "`pledger release propose` through `Ledger::execute`, signed, as in section 7, on prompts \
         whose family already holds {sizes_text} events: histories generated in this process as in \
         section 8 (release cycles of nine events), signed and appended with `Ledger::append`; \
         every event verifies. {trials} signed and {trials} unsigned proposals per size, \
         alternating, each side on its own prompts, at most one proposal per 20 events of history \
         on a prompt (each proposal adds an event: the history grows by at most 5% during the \
         trials; new prompts are generated as needed). The \"of which\" rows take the command \
         apart at each size: the in-process rows verify (or decode and fold) what the first \
         signed proposal read, best of 3; the read rows time `Ledger::read_raw` alone, after the \
         trials, on the first signed proposal's prompt (pledger column) and on its unsigned twin \
         (baseline column), median of 3."
    );
    let p50 = |v: &[Duration]| percentile(v, 50.0);
    for m in &measured {
        let n = thousands(m.events as u64);
        s.rows.push(row(
            format!("`release propose` p50, {n} events of history"),
            ms2(p50(&m.trials.signed)),
            ms2(p50(&m.trials.unsigned)),
            "",
            Mark::Info,
        ));
        s.rows.push(row(
            format!(
                "{n}: of which verifying the read in-process ({} messages) / decode and fold",
                thousands(m.trials.read.len() as u64)
            ),
            ms2(m.verify),
            ms2(m.fold),
            "",
            Mark::Info,
        ));
        s.rows.push(row(
            format!("{n}: of which the read alone (one consumer: family, roster, windows)"),
            ms2(m.read),
            ms2(m.twin_read),
            "",
            Mark::Info,
        ));
        s.rows.push(row(
            format!("{n}: for comparison, a read of the family's filter only"),
            ms2(m.family_only),
            ms2(m.twin_family_only),
            "",
            Mark::Info,
        ));
    }
    if let (Some(small), Some(large)) = (measured.first(), measured.last()) {
        if large.events > small.events {
            let events = (large.events - small.events) as f64;
            let slope = |a: Duration, b: Duration| (b.as_secs_f64() - a.as_secs_f64()) / events;
            let signed = slope(p50(&small.trials.signed), p50(&large.trials.signed));
            let unsigned = slope(p50(&small.trials.unsigned), p50(&large.trials.unsigned));
            let verifying = slope(small.verify, large.verify);
            let reading = slope(small.read, large.read);
            s.rows.push(row(
                format!(
                    "p50 growth per event of history ({} → {})",
                    thousands(small.events as u64),
                    thousands(large.events as u64)
                ),
                format!("{:.1} µs", signed * 1e6),
                format!("{:.1} µs", unsigned * 1e6),
                "",
                Mark::Info,
            ));
            s.notes.push(format!(
                "Finding: a command's cost grows with its prompt's history, signed or not, because \
                 every command reads the whole family (with the roster and the windows) and, \
                 signed, verifies every message before deciding. At {} events a signed proposal \
                 takes {} (p50), {:.0}× its cost at {} events; verifying the read takes {} of it \
                 and the read itself {}. Between the two sizes each event of history adds about \
                 {:.0} µs to a signed proposal and {:.0} µs to an unsigned one; of that, \
                 verification about {:.0} µs and the read about {:.0} µs. At {} events the read \
                 through one consumer with three filters (family, roster, windows) took {:.1}× \
                 the read of the family alone ({} against {}). Issue 11 addresses it.",
                thousands(large.events as u64),
                ms2(p50(&large.trials.signed)),
                p50(&large.trials.signed).as_secs_f64()
                    / p50(&small.trials.signed).as_secs_f64().max(1e-9),
                thousands(small.events as u64),
                ms2(large.verify),
                ms2(large.read),
                signed * 1e6,
                unsigned * 1e6,
                verifying * 1e6,
                reading * 1e6,
                thousands(large.events as u64),
                large.read.as_secs_f64() / large.family_only.as_secs_f64().max(1e-9),
                ms2(large.read),
                ms2(large.family_only)
            ));
        }
    }
    for m in &measured {
        let (lo, hi) = (m.read.min(m.twin_read), m.read.max(m.twin_read));
        if hi > lo * 2 {
            let signed_slower = m.read > m.twin_read;
            s.notes.push(format!(
                "At {} events the same three-filter read took {} on the signed side's prompt and \
                 {} on its unsigned twin (the same history, appended right after it), while the \
                 family-only reads took {} and {}: what the server spends on the three-filter \
                 read depends on where the family sits in the stream, not only on its length. \
                 Here the {} side's read is the slower one, so at this size the signed − \
                 unsigned gap {} what signing and verification add.",
                thousands(m.events as u64),
                ms2(m.read),
                ms2(m.twin_read),
                ms2(m.family_only),
                ms2(m.twin_family_only),
                if signed_slower { "signed" } else { "unsigned" },
                if signed_slower {
                    "overstates"
                } else {
                    "understates"
                }
            ));
        }
    }
    for m in &measured {
        s.notes.push(format!(
            "{} events: p99 signed {} / unsigned {} ({} samples each); set-up (not timed): {} \
             events generated, signed and appended in {:.1} s.",
            thousands(m.events as u64),
            ms2(percentile(&m.trials.signed, 99.0)),
            ms2(percentile(&m.trials.unsigned, 99.0)),
            m.trials.signed.len(),
            thousands(m.trials.generated as u64),
            m.trials.generating.as_secs_f64()
        ));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// 10. The same on a three-node R3 cluster
// ---------------------------------------------------------------------------------------------

/// The single node's samples from sections 2, 3 and 7: the baselines of section 10.
struct SingleNode {
    reroute: RerouteRun,
    reroute_floor: Vec<Duration>,
    fanout: FanoutRun,
    fanout_floor: Vec<Duration>,
    sign: Trials,
    /// The read of a command on section 7's first signed prompt, alone.
    sign_reads: Vec<Duration>,
}

/// `reps` timed reads of what a command on `prompt` reads: `Ledger::load`'s two
/// `Ledger::read_raw`s (the family, then the roster and the windows; one ephemeral consumer
/// each), without the verification. Sorted.
async fn read_samples(
    env: &Env,
    prompt: &PromptName,
    reps: usize,
) -> Result<Vec<Duration>, Failure> {
    let family = family_filter(prompt);
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        env.ledger.read_raw(&[&family], 0).await?;
        env.ledger
            .read_raw(&[ROSTER_SUBJECT, FLEET_WINDOWS_SUBJECT], 0)
            .await?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

/// "p50 / p99" of sorted samples.
fn p50_p99(sorted: &[Duration], fmt: fn(Duration) -> String) -> String {
    format!(
        "{} / {}",
        fmt(percentile(sorted, 50.0)),
        fmt(percentile(sorted, 99.0))
    )
}

/// The server that leads `stream` (its cluster's leader), if the stream is clustered.
async fn leader_of(js: &jetstream::Context, stream: &str) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    info.cluster.as_ref().and_then(|c| c.leader.clone())
}

/// A failure on the cluster, saying where.
fn on_cluster(phase: &'static str) -> impl Fn(Failure) -> Failure {
    move |e| Failure {
        message: format!("bench: on the R3 cluster, {phase}: {}", e.message),
        ..e
    }
}

/// Runs a set-up step on the cluster (nothing measured) until it succeeds, for up to 30 s: for
/// a while after the streams are created, a read there may fail with "no responders".
async fn settle<T, F: std::future::Future<Output = Result<T, Failure>>>(
    what: &'static str,
    mut step: impl FnMut() -> F,
) -> Result<T, Failure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                progress(&format!("  {what} failed ({}); trying again", e.message));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(on_cluster(what)(e)),
        }
    }
}

async fn cluster(sizes: &Sizes, single: &SingleNode) -> Result<Section, Failure> {
    const NODES: usize = 3;
    let nodes = tokio::task::spawn_blocking(|| EphemeralCluster::start(NODES))
        .await
        .map_err(|e| fail("cluster")(e.to_string()))?
        .map_err(|e| fail("cluster")(e.to_string()))?;
    let url = nodes.url();
    let client = pledger_infra::connect(&url).await?;
    let ledger = Ledger::new(client);
    // What `pledger init --replicas 3` runs; the cluster elects its JetStream meta leader
    // after start, so the first attempts may fail.
    let t = Instant::now();
    loop {
        match ledger.ensure_replicated(Some(NODES)).await {
            Ok(()) => break,
            Err(e) if t.elapsed() > Duration::from_secs(30) => {
                return Err(fail("cluster: creating the R3 streams")(e.to_string()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let formed = t.elapsed();
    let (replicas, servers) = ledger.replication().await?;
    if servers != NODES || replicas.iter().any(|(_, n)| *n != NODES) {
        return Err(Failure::other(format!(
            "bench: the cluster has {servers} servers and streams {replicas:?}, not {NODES} and R{NODES}"
        )));
    }
    settle("enrolling the cast", || async {
        cast().enroll(&ledger).await.map_err(Failure::from)
    })
    .await?;
    let routing = settle("opening the routing bucket", || async {
        RoutingStore::open(ledger.jetstream())
            .await
            .map_err(Failure::from)
    })
    .await?;
    let env = Env {
        url,
        ledger,
        routing,
        dir: tempfile::tempdir().map_err(|e| fail("temp dir")(e.to_string()))?,
    };
    let keyring = crate::keys::Keyring::in_config_dir(Path::new(&env.config_dir()));
    for name in cast().names() {
        keyring.store(name, &cast().key(name))?;
    }

    // Breach to reroute (section 2's trials and floor).
    let t = Instant::now();
    let resolver = start_resolver(&env.url).await?;
    let reroute = reroute_trials(&env, &resolver, sizes.cluster_reroute_trials)
        .await
        .map_err(on_cluster("breach to reroute"))?;
    let reroute_floor = kv_floor(
        &env,
        std::slice::from_ref(&resolver),
        "reroute",
        sizes.cluster_floor_trials,
    )
    .await
    .map_err(on_cluster("bare routing-KV writes to one resolver"))?;
    drop(resolver);
    let reroute_took = t.elapsed();

    // Rollback fan-out (section 3's trials and floor).
    let t = Instant::now();
    let n = sizes.fanout_resolvers;
    let started: Vec<(Resolver, async_nats::Client)> =
        futures::future::try_join_all((0..n).map(|_| start_resolver_on(&env.url))).await?;
    let (resolvers, clients): (Vec<Resolver>, Vec<async_nats::Client>) =
        started.into_iter().unzip();
    let fanout = fanout_trials(&env, &resolvers, sizes.cluster_fanout_trials)
        .await
        .map_err(on_cluster("rollback fan-out"))?;
    let fanout_floor = kv_floor(&env, &resolvers, "fanout", sizes.cluster_floor_trials)
        .await
        .map_err(on_cluster("bare routing-KV writes to many resolvers"))?;
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for c in &clients {
        *spread.entry(c.server_info().server_name).or_default() += 1;
    }
    drop(resolvers);
    drop(clients);
    let fanout_took = t.elapsed();

    // Writes (section 7's proposals).
    let t = Instant::now();
    let m = settle("reading the roster", || members(&env.ledger)).await?;
    let sign = propose_trials(&env, &m, "sign", 4, sizes.cluster_sign_trials, 1)
        .await
        .map_err(on_cluster("proposals"))?;
    let reads = read_samples(&env, &sign.prompt, sizes.cluster_sign_trials)
        .await
        .map_err(on_cluster("reads"))?;
    let sign_took = t.elapsed();

    let js = env.js();
    let mut leaders = Vec::new();
    for (what, stream) in [
        ("ledger stream", LEDGER_STREAM.to_string()),
        ("outcome stream", OUTCOMES_STREAM.to_string()),
        (
            "routing bucket",
            format!("KV_{}", pledger_infra::ledger::ROUTING_BUCKET),
        ),
    ] {
        let leader = leader_of(js, &stream)
            .await
            .unwrap_or_else(|| "unknown".into());
        leaders.push(format!("{what} `{leader}`"));
    }
    let bench_node = js.client().server_info().server_name;
    drop(env);
    drop(nodes);

    let mut s = Section::new(10, "A three-node R3 cluster against the single node");
    s.heads = ["R3 cluster", "single node"];
    s.baseline = format!(
        "the single node's figures from sections 2, 3 and 7 of this run (the same measures, the \
         same code, the same workload sizes except the trial counts given here: {} breach trials, \
         {} rollbacks, {} bare routing-KV writes of each kind and {} proposals of each kind on the \
         single node), and {} reads of section 7's first signed prompt timed alone on the single \
         node right after section 7",
        single.reroute.samples.len(),
        single.fanout.samples.len(),
        single.reroute_floor.len(),
        single.sign.signed.len(),
        single.sign_reads.len()
    );
    s.method = format!(
        "After the single server has stopped, a throwaway three-node cluster on this machine \
         (`EphemeralCluster::start(3)`: three nats-server processes, the single server's config — \
         loopback, file store, `sync_interval: always` — with each node's name and a `cluster` block \
         routing to the other two over loopback), then `Ledger::ensure_replicated(Some(3))` (what \
         `pledger init --replicas 3` runs, retried until the cluster had elected its meta leader: \
         the streams were created {:.1} s after the nodes were up): every stream and both buckets at three \
         replicas, checked. Every client is given all three URLs (`nats://n1,nats://n2,nats://n3`, as \
         `--nats` takes them): the ledger connection, the canary monitor, every resolver and the \
         rollback command; each connects to one node. Then, on the cluster: section 2's trials ({} \
         trials: a new prompt each, the canary monitor in this process, timed from publishing the \
         breaching message to a resolver serving stable; {:.0} s), section 3's ({} trials: the \
         in-process `pledger rollback` until all {n} resolvers serve stable; {:.0} s), each with its \
         bare routing-KV writes ({} trials each), and section 7's proposals ({} signed and {} \
         unsigned `release propose`, alternating, each on a fresh prompt with 4 events of history, \
         then as many reads of the first signed prompt as a command makes them, timed alone; \
         {:.0} s).",
        formed.as_secs_f64(),
        reroute.samples.len(),
        reroute_took.as_secs_f64(),
        fanout.samples.len(),
        fanout_took.as_secs_f64(),
        reroute_floor.len(),
        sign.signed.len(),
        sign.unsigned.len(),
        sign_took.as_secs_f64()
    );
    let one =
        |name: &str, r3: &[Duration], single: &[Duration], p: f64, f: fn(Duration) -> String| {
            row(
                name,
                f(percentile(r3, p)),
                f(percentile(single, p)),
                "",
                Mark::Info,
            )
        };
    let (rr, rr1) = (&reroute.samples, &single.reroute.samples);
    let rr_p99 = percentile(rr, 99.0);
    s.rows
        .push(one("breach to reroute, p50", rr, rr1, 50.0, ms));
    s.rows.push(row(
        "breach to reroute, p99",
        ms(rr_p99),
        ms(percentile(rr1, 99.0)),
        "< 50 ms",
        Mark::of(rr_p99 < Duration::from_millis(50)),
    ));
    s.rows
        .push(one("breach to reroute, max", rr, rr1, 100.0, ms));
    s.rows.push(row(
        "of which the breaching message's publish until its JetStream ack (an outcome write), p50 / p99",
        p50_p99(&reroute.publish_acks, ms),
        p50_p99(&single.reroute.publish_acks, ms),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "breach trials also rolled back automatically within 10 s",
        format!("{} of {}", reroute.rolled_back, reroute.samples.len()),
        format!(
            "{} of {}",
            single.reroute.rolled_back,
            single.reroute.samples.len()
        ),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "bare routing-KV put until the resolver serves it, p50 / p99",
        p50_p99(&reroute_floor, ms),
        p50_p99(&single.reroute_floor, ms),
        "",
        Mark::Info,
    ));
    let (fo, fo1) = (&fanout.samples, &single.fanout.samples);
    let fo_p99 = percentile(fo, 99.0);
    s.rows.push(one(
        &format!("rollback to all {n} resolvers on stable, p50"),
        fo,
        fo1,
        50.0,
        ms,
    ));
    s.rows.push(row(
        format!("rollback to all {n} resolvers on stable, p99"),
        ms(fo_p99),
        ms(percentile(fo1, 99.0)),
        "< 100 ms",
        Mark::of(fo_p99 < Duration::from_millis(100)),
    ));
    s.rows.push(one(
        &format!("rollback to all {n} resolvers on stable, max"),
        fo,
        fo1,
        100.0,
        ms,
    ));
    s.rows.push(row(
        "rollback command returned, p50 / p99",
        p50_p99(&fanout.command, ms),
        p50_p99(&single.fanout.command, ms),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!("bare routing-KV put until all {n} resolvers serve it, p50 / p99"),
        p50_p99(&fanout_floor, ms),
        p50_p99(&single.fanout_floor, ms),
        "",
        Mark::Info,
    ));
    s.rows.push(one(
        "signed `release propose` (a write), p50",
        &sign.signed,
        &single.sign.signed,
        50.0,
        ms2,
    ));
    s.rows.push(one(
        "signed `release propose` (a write), p99",
        &sign.signed,
        &single.sign.signed,
        99.0,
        ms2,
    ));
    s.rows.push(row(
        "the same proposal unsigned (the read and the conditional append), p50 / p99",
        p50_p99(&sign.unsigned, ms2),
        p50_p99(&single.sign.unsigned, ms2),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "the command's reads alone (`Ledger::load`'s two `read_raw`s, one ephemeral consumer \
         each, no verification), p50 / p99",
        p50_p99(&reads, ms2),
        p50_p99(&single.sign_reads, ms2),
        "",
        Mark::Info,
    ));
    let more = |r3: &[Duration], single: &[Duration]| {
        let (a, b) = (percentile(r3, 50.0), percentile(single, 50.0));
        format!(
            "{} ({:.1}×)",
            signed_diff(a, b),
            a.as_secs_f64() / b.as_secs_f64().max(1e-9)
        )
    };
    s.notes.push(format!(
        "What R3 adds at the median: breach to reroute {}, rollback to {n} resolvers {}, a signed \
         proposal {}, its reads alone {}, an outcome message's publish-to-ack {}, a bare routing-KV \
         put seen by one resolver {}. An R3 write is acknowledged by the stream's leader once a majority (itself and \
         one follower) has stored it, each with its own fsync.",
        more(rr, rr1),
        more(fo, fo1),
        more(&sign.signed, &single.sign.signed),
        more(&reads, &single.sign_reads),
        more(&reroute.publish_acks, &single.reroute.publish_acks),
        more(&reroute_floor, &single.reroute_floor),
    ));
    s.notes.push(
        "Reads: the reads row is `Ledger::load`'s two reads (two ephemeral consumers, as every \
         signed command makes them); the unsigned proposal reads through one consumer with three \
         filters, so on the cluster its whole command can take less than the reads row. On a \
         cluster an ephemeral consumer is created through the JetStream meta leader (a replicated \
         assignment before the consumer exists): that, more than the replicated append, is where \
         a command's extra time goes (compare the outcome write's publish-to-ack row)."
            .into(),
    );
    s.notes.push(format!(
        "Where things were: stream leaders at the end: {}; the bench's ledger connection on `{}`; \
         the {n} resolvers on {}. A write through a node that does not lead the stream is forwarded \
         to the leader.",
        leaders.join(", "),
        bench_node,
        spread
            .iter()
            .map(|(node, count)| format!("`{node}` {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (what, failed) in [
        ("Breach trials on the cluster", &reroute.failed),
        ("Rollbacks on the cluster", &fanout.failed),
    ] {
        if let Some(note) = failures_note(what, failed) {
            s.notes.push(note);
        }
    }
    if let Some(note) = monitor_note(&reroute.monitor_stopped) {
        s.notes.push(note.replacen(
            "The canary monitor",
            "On the cluster, the canary monitor",
            1,
        ));
    }
    s.notes.push(format!(
        "All three nodes share this machine's {} cores with the bench and its workers, and reach \
         each other over loopback: the figures include CPU contention a cluster of three machines \
         would not have and lack the network round trips between machines it would have.",
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "unknown number of".into())
    ));
    s.notes.push(format!(
        "p99 is nearest-rank: with {} breach trials it is {}, with {} rollbacks {}; the single node's \
         likewise with its own counts.",
        rr.len(),
        ordinal(rr.len() - (0.99 * rr.len() as f64).ceil() as usize + 1),
        fo.len(),
        ordinal(fo.len() - (0.99 * fo.len() as f64).ceil() as usize + 1)
    ));
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// 11. The auditor: `audit verify` and `audit replay --at` on a long ledger
// ---------------------------------------------------------------------------------------------

/// The people of the auditor's ledger: the writers of the generated histories (with the roles
/// they have in [`cast`]) and a notary. Keys of their own, on a server of its own.
fn audit_cast() -> Cast {
    Cast::generate(&[
        ("bench-admin", &[Role::Admin]),
        ("maria", &[Role::Author, Role::ReleaseManager, Role::Oncall]),
        ("priya", &[Role::Reviewer]),
        ("tomas", &[Role::Reviewer]),
        ("ci", &[Role::Ci]),
        ("notary", &[Role::Notary]),
    ])
}

/// One prompt's generated family as it is stored.
struct AuditFamily {
    prompt: PromptName,
    /// Each event in chain order: its subject, event id, time, and stored bytes.
    events: Vec<(String, String, pledger_core::Timestamp, Vec<u8>)>,
}

/// [`History::generate`] of `per_prompt` events for each name, on `threads` threads.
fn generate_families(
    names: &[PromptName],
    per_prompt: usize,
    m: &Members,
    threads: usize,
) -> Result<Vec<AuditFamily>, Failure> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, AuditFamily)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let next = &next;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(name) = names.get(i) else { break };
                        let History { prompt, sealed, .. } =
                            History::generate(name.clone(), per_prompt, m)?;
                        let events = sealed
                            .into_iter()
                            .map(|s| {
                                (
                                    subject_for(&s.envelope.event.aggregate()),
                                    s.envelope.event_id.clone(),
                                    s.envelope.occurred_at,
                                    s.bytes,
                                )
                            })
                            .collect();
                        out.push((i, AuditFamily { prompt, events }));
                    }
                    Ok::<_, Failure>(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| Failure::other("bench: a generating thread panicked"))??,
            );
        }
        Ok::<_, Failure>(all)
    })?;
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, f)| f).collect())
}

/// Appends every family's events raw (no condition; `Nats-Msg-Id` as `Ledger::append` sets
/// it), interleaved: the first event of each family, then the second of each, and so on.
/// Publishes are pipelined, at most 256 awaiting their acknowledgement. Returns each event's
/// stream sequence.
async fn append_interleaved(
    ledger: &Ledger,
    families: &[AuditFamily],
) -> Result<Vec<Vec<u64>>, Failure> {
    let js = ledger.jetstream();
    let mut sequences: Vec<Vec<u64>> = families.iter().map(|f| vec![0; f.events.len()]).collect();
    let longest = families.iter().map(|f| f.events.len()).max().unwrap_or(0);
    let mut in_flight = VecDeque::new();
    for i in 0..longest {
        for (f, family) in families.iter().enumerate() {
            let Some((subject, id, _, bytes)) = family.events.get(i) else {
                continue;
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = js
                .publish_with_headers(subject.clone(), headers, bytes.clone().into())
                .await
                .map_err(|e| fail("appending the auditor's ledger")(e.to_string()))?;
            in_flight.push_back((f, i, ack));
            if in_flight.len() >= 256 {
                if let Some((f, i, ack)) = in_flight.pop_front() {
                    sequences[f][i] = ack
                        .await
                        .map_err(|e| fail("the auditor's ledger not stored")(e.to_string()))?
                        .sequence;
                }
            }
        }
    }
    for (f, i, ack) in in_flight {
        sequences[f][i] = ack
            .await
            .map_err(|e| fail("the auditor's ledger not stored")(e.to_string()))?
            .sequence;
    }
    Ok(sequences)
}

/// The checkpoint stream's messages, as `audit verify` reads them.
async fn found_checkpoints(ledger: &Ledger) -> Result<Vec<FoundCheckpoint>, Failure> {
    Ok(ledger
        .checkpoints()
        .await?
        .into_iter()
        .map(|r| FoundCheckpoint {
            sequence: Some(r.sequence),
            text: String::from_utf8_lossy(&r.payload).into_owned(),
        })
        .collect())
}

/// `audit verify`'s checks over what it read (commands/audit.rs `read_ledger`, then
/// `finish`), with the state-free checks on `threads` threads.
fn verify_records(
    facts: &StreamFacts,
    records: &[RawRecord],
    checkpoints: Vec<FoundCheckpoint>,
    threads: usize,
) -> AuditReport {
    let mut auditor = Auditor::new();
    auditor.stream(facts);
    pledger_infra::audit::feed(&mut auditor, records, threads);
    auditor.end(facts.last_sequence);
    for c in checkpoints {
        auditor.checkpoint(c);
    }
    auditor.finish(None)
}

/// `audit verify` after connecting, as the CLI's `read_ledger` runs it, with `threads`
/// threads: the stream's facts, every ledger message, the checkpoints, the checks.
async fn audit_verify(ledger: &Ledger, threads: usize) -> Result<AuditReport, Failure> {
    let facts = ledger.stream_facts().await?;
    let records = ledger.read_raw(&[LEDGER_SUBJECTS], 0).await?;
    let checkpoints = found_checkpoints(ledger).await?;
    Ok(verify_records(&facts, &records, checkpoints, threads))
}

/// Fails unless `report` is clean and covers `total` messages and one checkpoint of them.
fn check_clean(report: &AuditReport, total: usize, what: &str) -> Result<(), Failure> {
    let s = &report.summary;
    let size = s.latest_checkpoint.as_ref().map(|c| c.size);
    if report.findings.is_empty()
        && s.accepted == total as u64
        && s.checkpoints_verified == 1
        && size == Some(total as u64)
    {
        return Ok(());
    }
    let findings: Vec<String> = report
        .findings
        .iter()
        .take(5)
        .map(|f| f.to_string())
        .collect();
    Err(Failure::other(format!(
        "bench: {what}: {} findings, {} of {total} messages accepted, {} checkpoints verified \
         (latest of size {size:?}); first findings: {}",
        report.findings.len(),
        s.accepted,
        s.checkpoints_verified,
        findings.join("; ")
    )))
}

/// `pledger audit verify` in this process, as the CLI runs it (connect, check the server,
/// read, verify on every core, render): its wall time and the CPU seconds this process used.
async fn cli_audit_verify(url: &str, config_dir: &Path) -> Result<(Duration, f64), Failure> {
    let config_dir = config_dir.display().to_string();
    let cli = Cli::try_parse_from([
        "pledger",
        "--nats",
        url,
        "--config-dir",
        &config_dir,
        "audit",
        "verify",
    ])
    .map_err(|e| fail("audit verify command line")(e.to_string()))?;
    let app = App::from_cli(&cli);
    let cpu = cpu_secs("self").unwrap_or(0.0);
    let t = Instant::now();
    let report = app.run(cli.command).await?;
    let wall = t.elapsed();
    let cpu = cpu_secs("self").unwrap_or(0.0) - cpu;
    if report.exit != crate::failure::Exit::Success {
        return Err(Failure::other(format!(
            "bench: audit verify exited {:?}: {}",
            report.exit, report.text
        )));
    }
    Ok((wall, cpu))
}

/// The whole ledger stream through an async-nats ordered pull consumer (`OrderedConfig`),
/// collected as `read_raw` collects it: how many messages were read.
async fn ordered_read(ledger: &Ledger, expected: usize) -> Result<usize, Failure> {
    let stream = ledger
        .jetstream()
        .get_stream_no_info(LEDGER_STREAM)
        .await
        .map_err(|e| fail("ordered read")(e.to_string()))?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: LEDGER_SUBJECTS.to_string(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| fail("ordered read")(e.to_string()))?;
    let name = consumer.cached_info().name.clone();
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| fail("ordered read")(e.to_string()))?;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| Failure::other("bench: the ordered read timed out"))?
            .ok_or_else(|| Failure::other("bench: the ordered read ended early"))?
            .map_err(|e| fail("ordered read")(e.to_string()))?;
        let sequence = message
            .info()
            .map_err(|e| fail("ordered read")(e.to_string()))?
            .stream_sequence;
        records.push(RawRecord {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
        });
    }
    drop(messages);
    let _ = stream.delete_consumer(&name).await;
    Ok(records.len())
}

/// Runs this binary with `args` against `url`, with a home and a config dir of its own and no
/// key: its wall time (spawn to exit) and its output.
fn child_command(
    exe: &Path,
    url: &str,
    home: &Path,
    args: &[&str],
) -> Result<(Duration, String), Failure> {
    let t = Instant::now();
    let out = std::process::Command::new(exe)
        .arg("--nats")
        .arg(url)
        .args(args)
        .env("HOME", home)
        .env("PLEDGER_CONFIG_DIR", home.join("config"))
        .env_remove("PLEDGER_KEY")
        .env_remove("PLEDGER_ACTOR")
        .env_remove("PLEDGER_NATS_URL")
        .env("PLEDGER_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail("running pledger")(e.to_string()))?;
    let wall = t.elapsed();
    if !out.status.success() {
        return Err(Failure::other(format!(
            "bench: `pledger {}` exited {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((wall, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 50.0)
}

async fn auditor(sizes: &Sizes) -> Result<Section, Failure> {
    let started = Instant::now();
    let cores = pledger_infra::audit::cores();
    let server = tokio::task::spawn_blocking(EphemeralServer::start)
        .await
        .map_err(|e| fail("auditor's server")(e.to_string()))?
        .map_err(|e| fail("auditor's server")(e.to_string()))?;
    let url = server.url();
    let ledger = Ledger::new(pledger_infra::connect(&url).await?);
    ledger.ensure().await?;
    let people = audit_cast();
    people.enroll(&ledger).await?;
    let m = members_of(&ledger, &people).await?;
    let dir = tempfile::tempdir().map_err(|e| fail("temp dir")(e.to_string()))?;

    // The ledger: the roster, then the families interleaved, then one notary checkpoint.
    let prompts = sizes.audit_prompts.max(1);
    let per_prompt = sizes.audit_events / prompts;
    let names: Vec<PromptName> = (0..prompts)
        .map(|i| PromptName::parse(&format!("bench-audit-{i:02}")))
        .collect::<Result<_, _>>()?;
    progress(&format!(
        "11/11   generating {} prompts of {} events",
        prompts,
        thousands(per_prompt as u64)
    ));
    let t = Instant::now();
    let families =
        tokio::task::block_in_place(|| generate_families(&names, per_prompt, &m, cores))?;
    let generating = t.elapsed();
    progress("11/14   appending them");
    let t = Instant::now();
    let sequences = append_interleaved(&ledger, &families).await?;
    let appending = t.elapsed();
    let records = ledger.read_raw(&[LEDGER_SUBJECTS], 0).await?;
    let total = records.len();
    let events: usize = families.iter().map(|f| f.events.len()).sum();
    let roster = total - events;
    let mut tree = pledger_core::merkle::Tree::new();
    for r in &records {
        tree.push_entry(&r.payload);
    }
    let (verifier, _, _) = ledger.roster().await?;
    let genesis = verifier
        .roster
        .genesis
        .as_ref()
        .ok_or_else(|| Failure::other("bench: the auditor's ledger has no roster"))?;
    let checkpoint = pledger_core::note::Checkpoint {
        origin: pledger_core::names::checkpoint_origin(&genesis.hash),
        size: tree.size(),
        root: tree.root(),
        extensions: Vec::new(),
    };
    let note_key = people
        .key("notary")
        .note_key()
        .ok_or_else(|| Failure::other("bench: the notary's key cannot sign notes"))?;
    let text = pledger_core::note::sign(&checkpoint.body(), "notary", &note_key)
        .map_err(|e| fail("signing the checkpoint")(e.to_string()))?;
    ledger
        .publish_checkpoint(
            checkpoint.size,
            &pledger_core::merkle::hash_to_base64(&checkpoint.root),
            &text,
        )
        .await?;
    let facts = ledger.stream_facts().await?;
    let stored_bytes = ledger
        .jetstream()
        .get_stream(LEDGER_STREAM)
        .await
        .map_err(|e| fail("ledger stream")(e.to_string()))?
        .info()
        .await
        .map_err(|e| fail("ledger stream")(e.to_string()))?
        .state
        .bytes;
    let payload_bytes: usize = records.iter().map(|r| r.payload.len()).sum();
    // Before anything is timed: the whole ledger verifies, with no finding.
    progress("11/14   checking the ledger verifies");
    let found = found_checkpoints(&ledger).await?;
    let report = tokio::task::block_in_place(|| verify_records(&facts, &records, found, cores));
    check_clean(&report, total, "the generated ledger")?;

    // `audit verify` against the raw read, alternating which goes first.
    progress("11/14   audit verify against the raw read");
    let reps = sizes.audit_reps.max(1);
    let (mut raw, mut cli, mut one, mut ordered) = (vec![], vec![], vec![], vec![]);
    let (mut cli_cpu, mut cli_wall) = (0.0, 0.0);
    for rep in 0..reps {
        for measured in [rep % 2 == 1, rep % 2 == 0] {
            if measured {
                let (wall, cpu) = cli_audit_verify(&url, &dir.path().join("config")).await?;
                cli.push(wall);
                cli_cpu += cpu;
                cli_wall += wall.as_secs_f64();
                let t = Instant::now();
                let report = audit_verify(&ledger, 1).await?;
                one.push(t.elapsed());
                check_clean(&report, total, "audit verify on one thread")?;
            } else {
                let t = Instant::now();
                let read = ledger.read_raw(&[LEDGER_SUBJECTS], 0).await?;
                raw.push(t.elapsed());
                if read.len() != total {
                    return Err(Failure::other(format!(
                        "bench: the raw read returned {} of {total} messages",
                        read.len()
                    )));
                }
                drop(read);
                let t = Instant::now();
                ordered_read(&ledger, total).await?;
                ordered.push(t.elapsed());
            }
        }
    }

    // The verification alone, over the records already read.
    progress("11/14   the verification alone");
    let found = found_checkpoints(&ledger).await?;
    let (mut alone, mut alone_one) = (vec![], vec![]);
    let (mut alone_cpu, mut alone_wall, mut one_cpu, mut one_wall) = (0.0, 0.0, 0.0, 0.0);
    for rep in 0..reps {
        let order = if rep % 2 == 0 { [cores, 1] } else { [1, cores] };
        for threads in order {
            let cpu = cpu_secs("self").unwrap_or(0.0);
            let t = Instant::now();
            let report = tokio::task::block_in_place(|| {
                verify_records(&facts, &records, found.clone(), threads)
            });
            let wall = t.elapsed();
            let cpu = cpu_secs("self").unwrap_or(0.0) - cpu;
            check_clean(&report, total, "the verification alone")?;
            if threads == 1 && cores != 1 {
                alone_one.push(wall);
                one_cpu += cpu;
                one_wall += wall.as_secs_f64();
            } else {
                alone.push(wall);
                alone_cpu += cpu;
                alone_wall += wall.as_secs_f64();
                if cores == 1 {
                    alone_one.push(wall);
                    one_cpu += cpu;
                    one_wall += wall.as_secs_f64();
                }
            }
        }
    }
    // Of which the state-free checks (`precheck_all`: decoding, signatures in batches, hashes)
    // on one thread; the rest of the one-thread figure is the checks in stream order.
    let mut state_free = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        tokio::task::block_in_place(|| {
            for chunk in records.chunks(512) {
                let messages: Vec<&[u8]> = chunk.iter().map(|r| &r.payload[..]).collect();
                std::hint::black_box(pledger_core::verify::precheck_all(&messages));
            }
        });
        state_free.push(t.elapsed());
    }
    drop(records);

    // `audit replay --at` as a child process, against `prompt show` the same way.
    progress("11/14   audit replay --at as a child process");
    let exe = std::env::current_exe().map_err(|e| fail("own executable")(e.to_string()))?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).map_err(|e| fail("temp home")(e.to_string()))?;
    let family = &families[0];
    let prompt = family.prompt.to_string();
    let mid = family.events.len() / 2;
    let at_time = family.events[mid].2.to_rfc3339();
    let at_sequence = sequences[0][mid].to_string();
    let replay_time = ["audit", "replay", &prompt, "--at", &at_time];
    let replay_sequence = ["audit", "replay", &prompt, "--at", &at_sequence];
    let show = ["prompt", "show", &prompt];
    // One untimed run of each: their output, and the binary in the page cache.
    let (mut replayed_time, mut replayed_sequence) = (String::new(), String::new());
    for (args, out) in [
        (&replay_time[..], Some(&mut replayed_time)),
        (&replay_sequence[..], Some(&mut replayed_sequence)),
        (&show[..], None),
    ] {
        let (_, text) = tokio::task::block_in_place(|| child_command(&exe, &url, &home, args))?;
        if let Some(out) = out {
            *out = text
                .lines()
                .next()
                .and_then(|l| l.split_once("(through "))
                .map(|(_, rest)| rest.trim_end_matches(')').to_string())
                .unwrap_or_default();
        }
    }
    let (mut by_time, mut by_sequence, mut shown) = (vec![], vec![], vec![]);
    for run in 0..sizes.replay_runs.max(1) {
        let mut order = [0, 1, 2];
        order.rotate_left(run % 3);
        for which in order {
            let (args, into) = match which {
                0 => (&show[..], &mut shown),
                1 => (&replay_time[..], &mut by_time),
                _ => (&replay_sequence[..], &mut by_sequence),
            };
            let (wall, _) = tokio::task::block_in_place(|| child_command(&exe, &url, &home, args))?;
            into.push(wall);
        }
    }
    by_time.sort();
    by_sequence.sort();
    shown.sort();
    drop(ledger);
    drop(server);

    let rate = |d: Duration| per_sec(total as u64, d);
    let (raw_m, cli_m, one_m, ordered_m) = (
        median(raw.clone()),
        median(cli.clone()),
        median(one.clone()),
        median(ordered.clone()),
    );
    let (alone_m, alone_one_m) = (median(alone.clone()), median(alone_one.clone()));
    let ratio = rate(cli_m) as f64 / rate(raw_m).max(1) as f64;
    let busy = |cpu: f64, wall: f64| if wall > 0.0 { cpu / wall } else { 0.0 };
    let alone_busy = busy(alone_cpu, alone_wall);
    let max = |v: &[Duration]| v.last().copied().unwrap_or_default();

    let title: &'static str = Box::leak(
        format!(
            "The auditor: `audit verify` and `audit replay --at` on {} events",
            thousands(events as u64)
        )
        .into_boxed_str(),
    );
    let mut s = Section::new(11, title);
    s.baseline = format!(
        "the raw ordered read of the same stream in the same run: `Ledger::read_raw(&[\"{LEDGER_SUBJECTS}\"], 0)` \
         (one ephemeral pull consumer, what `audit verify` reads through; messages/s), alternating \
         with the measured runs; for the replay rows, `pledger prompt show {prompt}` run the same \
         way (the same read: `Ledger::load`, the family verified)"
    );
    s.method = format!(
        "On a throwaway nats-server of its own (the same config as the others), a signed ledger: \
         the roster ({roster} enrolments: an admin, the four writers of section 8 and a notary \
         holding `Role::Notary`), then {prompts} prompts' families of {} events each, generated \
         as in section 8 (`History::generate`: every event decided as its author and sealed; {} \
         events in {:.1} s on {cores} threads), appended raw in stream order with the families \
         interleaved (the first event of each, then the second of each, ...; pipelined, at most \
         256 publishes awaiting acks; {:.1} s), then one checkpoint of the whole tree ({} leaves) \
         signed by the notary (`note::sign` of `Checkpoint::body()`, origin \
         `checkpoint_origin` of the roster's genesis) on the checkpoint stream. {} messages in \
         all, {} bytes of events on average ({:.1} MiB of payload; {:.1} MiB stored). Before \
         anything is timed, a verification of the whole ledger reports no finding, every message \
         accepted and the checkpoint verified; so does every timed run. This machine has {cores} \
         cores (`audit::cores()`). The `audit verify` row is the CLI's path in this process: \
         `Cli::try_parse_from([\"pledger\", \"--nats\", .., \"audit\", \"verify\"])` and \
         `App::run` (connect and check the server, `stream_facts`, `read_raw` of every ledger \
         message, the checkpoints, `audit::feed` on {cores} threads, `end`, `finish`, the report \
         rendered); the one-thread row is the same work after connecting with \
         `feed(.., 1)` (every check on the caller's thread; with {cores} threads the \
         state-free checks — decoding, signatures, hashes — run on {cores} worker threads while \
         the caller's thread runs the stateful ones in order). Each of the raw read, `audit verify`, the one-thread \
         run and the ordered-consumer read: median of {reps} runs, measured and baseline \
         alternating which goes first. The verification-alone rows run `stream`, `feed`, `end`, \
         the checkpoint and `finish` over the records already in memory, median of {reps} each, \
         alternating; their CPU figure is this process's CPU seconds (/proc, 10 ms ticks) over \
         the wall time of those runs. The replay rows run this binary as a child process \
         (`--nats` this server's URL, `HOME` and `PLEDGER_CONFIG_DIR` in a temporary directory, \
         no key), spawn to exit, {} runs each (after one untimed run of each), the three \
         commands rotating: `pledger audit replay {prompt} --at {at_time}` (the time of the \
         family's middle event: through {replayed_time}) and `--at {at_sequence}` (its stream \
         sequence: through {replayed_sequence}).",
        thousands(per_prompt as u64),
        thousands(events as u64),
        generating.as_secs_f64(),
        appending.as_secs_f64(),
        thousands(total as u64),
        thousands(total as u64),
        thousands((payload_bytes / total.max(1)) as u64),
        payload_bytes as f64 / 1024.0 / 1024.0,
        stored_bytes as f64 / 1024.0 / 1024.0,
        sizes.replay_runs.max(1),
    );
    s.rows.push(row(
        format!("`audit verify` on {cores} threads, events/s (every ledger message)"),
        thousands(rate(cli_m)),
        thousands(rate(raw_m)),
        "≥ 20,000",
        Mark::of(rate(cli_m) >= 20_000),
    ));
    s.rows.push(row(
        "`audit verify` / raw read (rate)",
        format!("{ratio:.2}"),
        "1",
        "≥ 0.3",
        Mark::of(ratio >= 0.3),
    ));
    s.rows.push(row(
        format!("time for all {} messages", thousands(total as u64)),
        secs(cli_m),
        secs(raw_m),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "`audit verify` with `feed(.., 1)`, events/s",
        thousands(rate(one_m)),
        thousands(rate(raw_m)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!("speed-up of `audit verify` from 1 to {cores} threads"),
        format!(
            "{:.2}×",
            one_m.as_secs_f64() / cli_m.as_secs_f64().max(1e-9)
        ),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "cores busy during `audit verify` (this process's CPU s / wall s; the server's not counted)",
        format!("{:.2}", busy(cli_cpu, cli_wall)),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!("verification alone (records in memory) on {cores} threads, events/s"),
        thousands(rate(alone_m)),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "verification alone on 1 thread, events/s",
        thousands(rate(alone_one_m)),
        "",
        "",
        Mark::Info,
    ));
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    let state_free_m = median(state_free.clone());
    s.rows.push(row(
        "of which the state-free checks alone on 1 thread (`precheck_all` in chunks of 512: decoding, signatures verified in batches, hashes), per event",
        format!("{:.1} µs", per_event(state_free_m)),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "and the checks in stream order on 1 thread (key, chain, id, role, admissibility, fold, tree), per event",
        format!("{:.1} µs", per_event(alone_one_m.saturating_sub(state_free_m))),
        "",
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        format!(
            "cores busy during the verification alone on {cores} threads (CPU s / wall s; 1 thread in the baseline column)"
        ),
        format!("{alone_busy:.2}"),
        format!("{:.2}", busy(one_cpu, one_wall)),
        "> 1 (both cores used)",
        Mark::of(alone_busy > 1.0),
    ));
    s.rows.push(row(
        "raw read through an async-nats ordered consumer (`OrderedConfig`), messages/s",
        thousands(rate(ordered_m)),
        thousands(rate(raw_m)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "`audit replay --at <time>` p50 (child process)",
        secs(percentile(&by_time, 50.0)),
        secs(percentile(&shown, 50.0)),
        "< 2 s",
        Mark::of(percentile(&by_time, 50.0) < Duration::from_secs(2)),
    ));
    s.rows.push(row(
        "`audit replay --at <time>` max",
        secs(max(&by_time)),
        secs(max(&shown)),
        "",
        Mark::Info,
    ));
    s.rows.push(row(
        "`audit replay --at <sequence>` p50",
        secs(percentile(&by_sequence, 50.0)),
        secs(percentile(&shown, 50.0)),
        "< 2 s",
        Mark::of(percentile(&by_sequence, 50.0) < Duration::from_secs(2)),
    ));
    s.rows.push(row(
        "`audit replay --at <sequence>` max",
        secs(max(&by_sequence)),
        secs(max(&shown)),
        "",
        Mark::Info,
    ));
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s.notes.push(format!(
        "Every run, in seconds, in the order run: raw read {}; `audit verify` {}; one thread \
         {}; ordered consumer {}; verification alone {}, on one thread {}; `prompt show` {} \
         (sorted).",
        all(&raw),
        all(&cli),
        all(&one),
        all(&ordered),
        all(&alone),
        all(&alone_one),
        all(&shown)
    ));
    s.notes.push(format!(
        "The section took {:.0} s, set-up included.",
        started.elapsed().as_secs_f64()
    ));
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// 14. The release page
// ---------------------------------------------------------------------------------------------

/// A release page's event stream, read as a browser's `EventSource` reads it.
struct PageStream {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl PageStream {
    async fn open(addr: &str, release: &ReleaseId) -> Result<PageStream, Failure> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail("release page")(e.to_string()))?;
        stream
            .write_all(
                format!(
                    "GET /releases/{release}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .map_err(|e| fail("release page")(e.to_string()))?;
        let mut lines = tokio::io::BufReader::new(stream).lines();
        let status = lines
            .next_line()
            .await
            .map_err(|e| fail("release page")(e.to_string()))?
            .unwrap_or_default();
        if !status.starts_with("HTTP/1.1 200") {
            return Err(Failure::other(format!(
                "bench: the release page's event stream answered `{status}`"
            )));
        }
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| fail("release page")(e.to_string()))?
        {
            if line.is_empty() {
                break;
            }
        }
        Ok(PageStream { lines })
    }

    /// The next event: its name and data.
    async fn next(&mut self) -> Result<(String, String), Failure> {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|e| fail("release page")(e.to_string()))?
                .ok_or_else(|| Failure::other("bench: the release page's event stream ended"))?;
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                data.push('\n');
            } else if line.is_empty() && !name.is_empty() {
                return Ok((name, data));
            }
        }
    }

    /// Waits for a `live` event whose page shows `needle`.
    async fn live_with(&mut self, needle: &str, limit: Duration) -> Result<(), Failure> {
        tokio::time::timeout(limit, async {
            loop {
                let (name, data) = self.next().await?;
                if name == "live" && data.contains(needle) {
                    return Ok(());
                }
            }
        })
        .await
        .map_err(|_| Failure::other(format!("bench: the open page never showed `{needle}`")))?
    }
}

async fn page_latency(sizes: &Sizes) -> Result<Section, Failure> {
    let launched = LaunchedUp::launch().await?;
    let ui = launched.ui_addr()?;
    let ledger = launched.enrolled_ledger().await?;
    let routing = RoutingStore::open(ledger.jetstream()).await?;
    let prompt = PromptName::parse("bench-page")?;
    let r = start_rollout(&ledger, &routing, &prompt, &plan(HEALTHY_PLAN)).await?;
    // The baseline: a plain consumer of the prompt's ledger family, new messages only.
    let family: jetstream::consumer::PullConsumer = ledger
        .jetstream()
        .get_stream_no_info(LEDGER_STREAM)
        .await
        .map_err(|e| fail("ledger stream")(e.to_string()))?
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ack_policy: jetstream::consumer::AckPolicy::None,
            filter_subject: family_filter(&prompt),
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| fail("family consumer")(e.to_string()))?;
    let mut plain = family
        .messages()
        .await
        .map_err(|e| fail("family consumer")(e.to_string()))?;
    let mut page = PageStream::open(&ui, &r.release).await?;
    page.live_with("data-state=\"rolling_out\"", Duration::from_secs(30))
        .await?;
    let (mut to_page, mut to_consumer) = (Vec::new(), Vec::new());
    for i in 0..sizes.page_trials {
        let (command, shows) = if i % 2 == 0 {
            (
                Command::PauseRollout {
                    release: r.release.clone(),
                    reason: "bench".into(),
                },
                "data-state=\"paused\"",
            )
        } else {
            (
                Command::ResumeRollout {
                    release: r.release.clone(),
                },
                "data-state=\"rolling_out\"",
            )
        };
        let t = Instant::now();
        exec(&ledger, &prompt, "maria", command).await?;
        let seen = tokio::time::timeout(Duration::from_secs(30), plain.next())
            .await
            .map_err(|_| Failure::other("bench: the family consumer got nothing"))?;
        if !matches!(seen, Some(Ok(_))) {
            return Err(Failure::other("bench: the family consumer ended"));
        }
        to_consumer.push(t.elapsed());
        page.live_with(shows, Duration::from_secs(30)).await?;
        to_page.push(t.elapsed());
    }
    let rss = launched.rss();
    let stopped = launched.stop().await?;
    to_page.sort_unstable();
    to_consumer.sort_unstable();
    let mut s = Section::new(14, "The release page: a ledger change to the open page");
    s.baseline =
        "a plain JetStream consumer of the prompt's ledger family receiving the same event".into();
    s.method = format!(
        "`pledger up` (this binary) serves the release pages on a free port; one prompt gets a real \
         rollout. An event-stream client (what the page's `EventSource` reads) holds its release \
         page open. {} times, the rollout is paused or resumed through the ledger (a signed \
         append); each is timed from before the append until the page's stream delivers a `live` \
         update showing the new state (the server's {} ms of settling, a verified read of the \
         family and the canary status, and the render included), and, as the baseline, until a \
         plain consumer of the family delivers the event.",
        sizes.page_trials,
        crate::ui::SETTLE.as_millis()
    );
    s.rows.push(row(
        "a change on the open page, p95",
        ms(percentile(&to_page, 95.0)),
        ms(percentile(&to_consumer, 95.0)),
        "≤ 1,000 ms",
        Mark::of(percentile(&to_page, 95.0) <= Duration::from_secs(1)),
    ));
    s.rows.push(row(
        "a change on the open page, p50",
        ms(percentile(&to_page, 50.0)),
        ms(percentile(&to_consumer, 50.0)),
        "",
        Mark::Info,
    ));
    s.notes.push(format!(
        "`pledger up` resident at {} after the trials, with the page open.",
        mib(rss)
    ));
    s.notes.push(stop_note(stopped));
    Ok(s)
}
