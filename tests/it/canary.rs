//! The canary monitor end to end: simulated traffic, automatic advance, automatic freeze and
//! rollback with evidence, replicas, restarts under SIGKILL, malformed outcomes.

use std::time::Duration;

use pledger_core::names;
use pledger_e2e::*;
use serde_json::Value;

use crate::fixture::*;

pub(crate) const AUTO_PLAN: &str = r#"
[[stages]]
name = "internal"
match = { user_kind = "internal" }
percent = 100
min_samples = 100

[[stages]]
name = "half"
percent = 50
min_samples = 100000

[[stages]]
name = "everyone"
percent = 100

[guardrails]
escalation_rate = { max_increase = 0.01 }

[rollback]
criteria = "escalation rate more than one point above the control"
automatic = true

[advance]
automatic = true
"#;

/// A release of `triage` rolling out under `plan`.
pub(crate) fn rolling_with(w: &World, plan: &str) -> Prepared {
    let p = gated(w, "triage");
    let file = w.file("auto-plan.toml", plan);
    w.run("maria", &["rollout", "plan", &p.release, &file]).ok();
    w.run("maria", &["rollout", "start", &p.release]).ok();
    p
}

fn show(w: &World, release: &str) -> Value {
    w.json("auditor", &["release", "show", release])
}

/// 3,000 requests to `triage` whose candidate escalates 30% of the time, half from internal
/// users.
pub(crate) fn regressed_traffic(w: &World) {
    sim(
        w,
        &[
            "--requests",
            "3000",
            "--seed",
            "5",
            "--regression-after",
            "0",
            "--regression-rate",
            "0.3",
            "--segment",
            "user_kind=internal:1",
            "--segment",
            "user_kind=customer:1",
        ],
    );
}

fn sim(w: &World, args: &[&str]) -> Value {
    let mut all = vec!["sim", "triage"];
    all.extend_from_slice(args);
    w.json("svc", &all)
}

fn advances_then_freezes_and_rolls_back(replicas: &[&str]) {
    let w = World::new();
    let monitors: Vec<WorkerProcess> = replicas.iter().map(|r| w.worker("canary", r)).collect();
    let p = rolling_with(&w, AUTO_PLAN);
    // A service's resolver, watching the runtime config layer.
    let (rt, resolver) = service_resolver(&w);
    let candidate_for_internal = rt.block_on(async {
        resolver
            .wait_for("triage", |t| t.is_some_and(|t| t.rollout.is_some()))
            .await;
        let attrs = [("user_kind", "internal")];
        resolver
            .resolve(
                "triage",
                &pledger_client::RequestContext::new()
                    .unit("user-1")
                    .attrs(&attrs),
            )
            .version()
            .cloned()
    });
    assert_eq!(
        candidate_for_internal.map(|v| v.to_string()),
        Some(p.v2.clone())
    );

    // Healthy traffic, half internal users: the monitor advances `internal` -> `half` on its own.
    sim(
        &w,
        &[
            "--requests",
            "1200",
            "--seed",
            "3",
            "--segment",
            "user_kind=internal:1",
            "--segment",
            "user_kind=customer:1",
        ],
    );
    w.wait_for(
        "the automatic advance to `half`",
        Duration::from_secs(30),
        || (show(&w, &p.release)["release"]["status"]["stage"] == 1).then_some(()),
    );
    assert_eq!(w.count("triage", "release.stage_advanced"), 1);

    // The candidate's escalation rate jumps to 20%: one freeze, one rollback, with evidence.
    sim(
        &w,
        &[
            "--requests",
            "4000",
            "--seed",
            "4",
            "--regression-after",
            "0",
            "--regression-rate",
            "0.2",
        ],
    );
    w.wait_for("the automatic rollback", Duration::from_secs(30), || {
        (show(&w, &p.release)["state"] == "rolled_back").then_some(())
    });
    // Every replica has judged the same traffic by now; wait until each has consumed it all.
    for (r, m) in replicas.iter().zip(&monitors) {
        let drained = w.try_wait_for(Duration::from_secs(30), || {
            drained(
                &w,
                &pledger_core::names::durable_name(
                    "canary",
                    r,
                    pledger_core::names::OUTCOMES_STREAM,
                ),
            )
            .then_some(())
        });
        assert!(
            drained.is_some(),
            "replica {r} did not drain; its log:\n{}",
            std::fs::read_to_string(m.log_path()).unwrap_or_default()
        );
    }
    assert_eq!(
        w.count("triage", "release.rollout_frozen"),
        1,
        "exactly one freeze"
    );
    assert_eq!(
        w.count("triage", "release.rolled_back"),
        1,
        "exactly one rollback"
    );
    let log = w.json("auditor", &["audit", "log", "triage"]);
    let frozen = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["kind"] == "release.rollout_frozen")
        .unwrap();
    assert_eq!(frozen["event"]["actor"], "canary-monitor");
    let evidence = &frozen["event"]["payload"]["evidence"];
    assert_eq!(evidence["verdict"], "breached");
    let breached: Vec<&Value> = evidence["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["breached"] == true)
        .collect();
    assert_eq!(breached[0]["guardrail"], "escalation_rate");
    assert!(
        breached[0]["statistic"].as_f64().unwrap() >= breached[0]["threshold"].as_f64().unwrap()
    );
    assert!(evidence["candidate"]["samples"].as_u64().unwrap() >= 100);
    // Traffic is back on the stable version, for the CLI and for the service's resolver alike.
    let r = w.json("svc", &["resolve", "triage", "--unit", "user-1"]);
    assert_eq!(r["version"], p.v1.as_str());
    let resolved = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            resolver.wait_for("triage", |t| t.is_some_and(|t| t.rollout.is_none())),
        )
        .await
        .expect("the resolver saw the rollback");
        let attrs = [("user_kind", "internal")];
        resolver
            .resolve(
                "triage",
                &pledger_client::RequestContext::new()
                    .unit("user-1")
                    .attrs(&attrs),
            )
            .version()
            .cloned()
    });
    assert_eq!(
        resolved.map(|v| v.to_string()),
        Some(p.v1.clone()),
        "the resolver returns the stable version"
    );
    // Everything the monitors and people recorded verifies, worker decisions included.
    w.assert_audit_clean();
    // The rollout ended: once each monitor has read the rollback, its store holds no stage
    // counts (they were there while it rolled out: the judgements above came from them).
    for (r, mut m) in replicas.iter().zip(monitors) {
        let ledger =
            pledger_core::names::durable_name("canary", r, pledger_core::names::LEDGER_STREAM);
        w.wait_for(
            "the monitor to read the rollback",
            Duration::from_secs(30),
            || drained_on(&w, pledger_core::names::LEDGER_STREAM, &ledger).then_some(()),
        );
        m.stop();
        let dir = w.files.path().join("workers").join(format!("canary-{r}"));
        let store = pledger_infra::projection::ProjectionStore::open(&dir).unwrap();
        assert_eq!(
            store.keys_with_prefix("stats/").unwrap(),
            Vec::<String>::new(),
            "replica {r} kept the stage counts of an ended rollout"
        );
    }
}

#[test]
fn a_regression_freezes_and_rolls_back_once() {
    advances_then_freezes_and_rolls_back(&["a"]);
}

#[test]
fn two_monitor_replicas_freeze_and_roll_back_once() {
    advances_then_freezes_and_rolls_back(&["a", "b"]);
}

/// Does a durable consumer have nothing left to deliver or acknowledge? (`pledger` has no
/// command for consumer state, so the test asks the server directly.)
fn drained(w: &World, durable: &str) -> bool {
    drained_on(w, pledger_core::names::OUTCOMES_STREAM, durable)
}

/// [`drained`] on any stream.
fn drained_on(w: &World, stream: &str, durable: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(stream).await.unwrap();
        let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
            .await
        else {
            return false;
        };
        let info = c.info().await.unwrap();
        info.num_pending == 0 && info.num_ack_pending == 0
    })
}

const HOLDING_PLAN: &str = r#"
[[stages]]
name = "half"
percent = 50
min_samples = 1000000

[[stages]]
name = "everyone"
percent = 100

[guardrails]
escalation_rate = { max_rate = 0.99 }

[rollback]
criteria = "never in this test"
"#;

#[test]
fn sigkilled_monitors_count_every_outcome_exactly_once() {
    let w = World::new();
    let mut monitor = w.worker("canary", "a");
    let p = rolling_with(&w, HOLDING_PLAN);
    let sim = w
        .command(
            "svc",
            &[
                "--json",
                "sim",
                "triage",
                "--requests",
                "40000",
                "--batch",
                "20",
                "--seed",
                "9",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the monitor three times while the traffic is flowing, restarting it each time.
    for _ in 0..3 {
        let before = status_samples(&w, &p.release);
        w.wait_for(
            "the monitor to count more outcomes",
            Duration::from_secs(60),
            || (status_samples(&w, &p.release) > before).then_some(()),
        );
        monitor.kill9();
        monitor.start();
    }
    let out = sim.wait_with_output().unwrap();
    assert!(out.status.success());
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (candidate, baseline) = (
        published["candidate"].as_u64().unwrap(),
        published["baseline"].as_u64().unwrap(),
    );
    assert_eq!(candidate + baseline, 40_000);
    let mut last = Value::Null;
    let status = w.try_wait_for(Duration::from_secs(60), || {
        let s = show(&w, &p.release)["canary"].clone();
        last = s.clone();
        let seen = s["judgement"]["candidate"]["samples"].as_u64().unwrap_or(0)
            + s["judgement"]["control"]["samples"].as_u64().unwrap_or(0);
        (seen >= candidate + baseline
            && drained(
                &w,
                &pledger_core::names::durable_name(
                    "canary",
                    "a",
                    pledger_core::names::OUTCOMES_STREAM,
                ),
            ))
        .then_some(s)
    });
    let status = status.unwrap_or_else(|| {
        panic!(
            "the monitor did not count every outcome ({candidate} candidate, {baseline} baseline published); last status {}; log:\n{}",
            last["judgement"],
            std::fs::read_to_string(monitor.log_path()).unwrap_or_default()
        )
    });
    assert_eq!(
        status["judgement"]["candidate"]["samples"], candidate,
        "none lost, none counted twice"
    );
    assert_eq!(
        status["judgement"]["control"]["samples"], baseline,
        "none lost, none counted twice"
    );
    assert_eq!(monitor.stop(), Some(0), "SIGTERM stops the worker cleanly");
}

fn status_samples(w: &World, release: &str) -> u64 {
    let s = &show(w, release)["canary"];
    s["judgement"]["candidate"]["samples"].as_u64().unwrap_or(0)
        + s["judgement"]["control"]["samples"].as_u64().unwrap_or(0)
}

#[test]
fn malformed_outcomes_are_dead_lettered_and_the_good_ones_counted() {
    let w = World::new();
    let _monitor = w.worker("canary", "a");
    let p = rolling_with(&w, HOLDING_PLAN);
    let good = |n: u32, arm: &str, version: &str| {
        serde_json::json!({
            "prompt": "triage", "version": version, "release": p.release, "arm": arm, "request_id": format!("r{n}"),
            "fallback": false, "escalated": false, "manually_corrected": false, "refusal": false,
            "latency_ms": 100.0, "tokens_in": 10, "tokens_out": 5
        })
    };
    let mut negative = good(90, "candidate", &p.v2);
    negative["latency_ms"] = serde_json::json!(-5.0);
    let mut wrong_type = good(91, "candidate", &p.v2);
    wrong_type["escalated"] = serde_json::json!("yes");
    let unknown_version = good(92, "baseline", &format!("sha256:{}", "0".repeat(64)));
    let mut unknown_prompt = good(93, "baseline", &p.v1);
    unknown_prompt["prompt"] = serde_json::json!("ghost");
    let messages: Vec<(String, Vec<u8>)> = vec![
        (outcomes_of("triage"), b"this is not json".to_vec()),
        (
            outcomes_of("triage"),
            serde_json::to_vec(&wrong_type).unwrap(),
        ),
        (
            outcomes_of("triage"),
            serde_json::to_vec(&negative).unwrap(),
        ),
        (
            outcomes_of("triage"),
            serde_json::to_vec(&unknown_version).unwrap(),
        ),
        (
            outcomes_of("ghost"),
            serde_json::to_vec(&unknown_prompt).unwrap(),
        ),
        // An array with one bad element among three good ones.
        (
            outcomes_of("triage"),
            serde_json::to_vec(&serde_json::json!([
                good(1, "candidate", &p.v2),
                negative,
                good(2, "baseline", &p.v1),
                good(3, "baseline", &p.v1)
            ]))
            .unwrap(),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        for (subject, payload) in messages {
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let status = w.wait_for(
        "the good outcomes to be counted",
        Duration::from_secs(30),
        || {
            let s = show(&w, &p.release)["canary"].clone();
            (s["judgement"]["candidate"]["samples"] == 1
                && s["judgement"]["control"]["samples"] == 2)
                .then_some(s)
        },
    );
    assert_eq!(
        status["judgement"]["verdict"], "holding",
        "three samples are too few to judge"
    );
    // Six bad items, each with its reason, on the dead-letter stream.
    let reasons: Vec<String> = rt.block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(pledger_core::names::DEADLETTER_STREAM)
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut reasons = Vec::new();
        while reasons.len() < 6 {
            let m = tokio::time::timeout(
                Duration::from_secs(20),
                futures::StreamExt::next(&mut messages),
            )
            .await
            .unwrap()
            .unwrap()
            .unwrap();
            let letter: Value = serde_json::from_slice(&m.payload).unwrap();
            reasons.push(letter["reason"].as_str().unwrap().to_string());
        }
        reasons
    });
    for expected in [
        "not JSON",
        "escalated",
        "latency_ms",
        "unknown version",
        "unknown prompt",
        "element 1",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter mentions `{expected}`: {reasons:?}"
        );
    }
}

#[test]
fn a_freeze_without_automatic_rollback_waits_and_a_resume_counts_afresh() {
    let w = World::new();
    let _monitor = w.worker("canary", "a");
    let plan = AUTO_PLAN.replace(
        "automatic = true\n\n[advance]",
        "automatic = false\n\n[advance]",
    );
    let p = rolling_with(&w, &plan);
    regressed_traffic(&w);
    w.wait_for("the automatic freeze", Duration::from_secs(30), || {
        (show(&w, &p.release)["state"] == "frozen").then_some(())
    });
    assert_eq!(
        w.count("triage", "release.rolled_back"),
        0,
        "the plan leaves the rollback to a person"
    );
    // Frozen: every request is served by the stable version.
    let r = w.json(
        "svc",
        &[
            "resolve",
            "triage",
            "--unit",
            "user-1",
            "--attr",
            "user_kind=internal",
        ],
    );
    assert_eq!(r["version"], p.v1.as_str());
    // A person resumes after a fix elsewhere: the stage counts afresh and is not frozen again.
    w.run("oncall", &["rollout", "resume", &p.release]).ok();
    w.wait_for(
        "a fresh judgement of the resumed stage",
        Duration::from_secs(30),
        || {
            let s = show(&w, &p.release);
            (s["state"] == "rolling_out" && s["canary"]["judgement"]["candidate"]["samples"] == 0)
                .then_some(())
        },
    );
    assert_eq!(w.count("triage", "release.rollout_frozen"), 1);
}

/// Messages a durable consumer still has to deliver or acknowledge (`None` before it exists).
async fn left_on(js: &async_nats::jetstream::Context, stream: &str, durable: &str) -> Option<u64> {
    let stream = js.get_stream(stream).await.ok()?;
    let mut c = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
        .await
        .ok()?;
    let info = c.info().await.ok()?;
    Some(info.num_pending + info.num_ack_pending as u64)
}

/// The monitor takes outcome batches in turn with ledger batches: with a backlog on both, the
/// outcomes are counted while ledger messages are still waiting, not once the ledger is quiet.
#[test]
fn a_busy_ledger_does_not_hold_back_the_outcomes() {
    use pledger_core::names::{durable_name, LEDGER_STREAM, OUTCOMES_STREAM};
    let w = World::new();
    let p = rolling_with(&w, HOLDING_PLAN);
    // Before the monitor starts: outcomes of the rollout, then a backlog on the ledger of large
    // messages that are not events (each is reported and ignored). Each ledger batch holds
    // at most 2 MiB, so the backlog takes the monitor about fifteen batches, each reading the
    // whole backlog again.
    let published = sim(&w, &["--requests", "200", "--seed", "5"]);
    assert!(
        published["published"].as_u64().unwrap_or(0) > 0,
        "{published}"
    );
    let noise =
        pledger_core::names::prompt_subject(&pledger_core::PromptName::parse("noise").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut acks = Vec::new();
        for i in 0..300u32 {
            let mut payload = format!("not an event {i} ").into_bytes();
            payload.resize(100_000, b'.');
            acks.push(js.publish(noise.clone(), payload.into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
        js
    });
    let _monitor = w.worker("canary", "a");
    // The moment every outcome is counted and acknowledged, the monitor has ledger messages
    // left: it took the outcomes in turn with the ledger, not after it.
    let outcomes = durable_name("canary", "a", OUTCOMES_STREAM);
    let ledger = durable_name("canary", "a", LEDGER_STREAM);
    let ledger_left = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the monitor to count the outcomes"
            );
            if left_on(&js, OUTCOMES_STREAM, &outcomes).await == Some(0) {
                break left_on(&js, LEDGER_STREAM, &ledger).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(
        ledger_left.unwrap_or(0) > 0,
        "the outcomes were counted only after the ledger backlog ({ledger_left:?} left)"
    );
    let in_rollout =
        published["candidate"].as_u64().unwrap() + published["baseline"].as_u64().unwrap();
    w.wait_for(
        "every outcome in the status",
        Duration::from_secs(60),
        || (status_samples(&w, &p.release) == in_rollout).then_some(()),
    );
}

const MANUAL_PLAN: &str = r#"
[[stages]]
name = "internal"
match = { user_kind = "internal" }
percent = 100
min_samples = 1000000

[[stages]]
name = "half"
percent = 50
min_samples = 1000000

[[stages]]
name = "everyone"
percent = 100

[guardrails]
escalation_rate = { max_rate = 0.99 }

[rollback]
criteria = "never in this test"
"#;

/// Issue 12: an outcome counts in the stage its request was served in, however late the
/// monitor processes it. Requests resolved in `internal` report after the rollout advanced to
/// `half`; outcomes without a stage visit (an older client) still count where the rollout is.
#[test]
fn an_outcome_served_in_a_stage_counts_there_when_processed_after_the_advance() {
    let w = World::new();
    let _monitor = w.worker("canary", "a");
    let p = rolling_with(&w, MANUAL_PLAN);
    let stage_of = |w: &World| show(w, &p.release)["canary"]["stage"].clone();
    w.wait_for(
        "the monitor's judgement of `internal`",
        Duration::from_secs(30),
        || (stage_of(&w) == "internal").then_some(()),
    );
    // A service resolves 30 internal requests in `internal` and holds their outcomes.
    let (rt, resolver) = service_resolver(&w);
    let served_in_internal: Vec<pledger_core::outcome::Outcome> = rt.block_on(async {
        resolver
            .wait_for("triage", |t| t.is_some_and(|t| t.rollout.is_some()))
            .await;
        (0..30)
            .map(|i| {
                let unit = format!("user-{i}");
                let attrs = [("user_kind", "internal")];
                let ctx = pledger_client::RequestContext::new()
                    .unit(&unit)
                    .attrs(&attrs);
                let mut o = resolver
                    .resolve("triage", &ctx)
                    .outcome(format!("req-{i}"))
                    .expect("the prompt is served");
                o.attrs = [("user_kind".to_string(), "internal".to_string())].into();
                o
            })
            .collect()
    });
    let visit = served_in_internal[0].stage_visit.clone();
    assert!(
        visit
            .as_deref()
            .is_some_and(|v| v.starts_with(&format!("{}/0/", p.release))),
        "the resolution names the stage visit it was made under: {visit:?}"
    );
    assert!(served_in_internal
        .iter()
        .all(|o| o.arm == Some(pledger_core::routing::Arm::Candidate)));

    // A person advances to `half`; the monitor sees it.
    w.run(
        "oncall",
        &[
            "rollout", "advance", &p.release, "--force", "--reason", "test",
        ],
    )
    .ok();
    w.wait_for(
        "the monitor's judgement of `half`",
        Duration::from_secs(30),
        || (stage_of(&w) == "half").then_some(()),
    );

    // Only now do the outcomes arrive, with 7 from a client that sends no stage visit.
    let mut unattributed: Vec<pledger_core::outcome::Outcome> = served_in_internal[..7].to_vec();
    for (i, o) in unattributed.iter_mut().enumerate() {
        o.stage_visit = None;
        o.request_id = format!("late-{i}");
    }
    rt.block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        for batch in [&served_in_internal, &unattributed] {
            js.publish(
                outcomes_of("triage"),
                serde_json::to_vec(batch).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    });
    let status = w.wait_for("the late outcomes counted", Duration::from_secs(30), || {
        let s = show(&w, &p.release)["canary"].clone();
        (s["earlier_stages"][0]["candidate_samples"] == 30
            && s["judgement"]["candidate"]["samples"] == 7)
            .then_some(s)
    });
    assert_eq!(status["stage"], "half");
    assert_eq!(status["earlier_stages"].as_array().unwrap().len(), 1);
    assert_eq!(status["earlier_stages"][0]["stage"], "internal");
    assert_eq!(status["earlier_stages"][0]["stage_index"], 0);
    // The text form says it too.
    let text = w
        .run("auditor", &["release", "show", &p.release])
        .ok()
        .stdout;
    assert!(
        text.contains("earlier: stage `internal`") && text.contains("candidate 30 samples"),
        "{text}"
    );
}

/// `GET /metrics` on a local address, the body as lines.
fn scrape(addr: &str) -> Option<Vec<String>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    Some(body.lines().map(str::to_string).collect())
}

/// The samples of a scrape, parsed by a real exposition-format parser.
fn parse(lines: Vec<String>) -> Vec<prometheus_parse::Sample> {
    prometheus_parse::Scrape::parse(lines.into_iter().map(Ok))
        .expect("the exposition parses")
        .samples
}

fn value_of(
    samples: &[prometheus_parse::Sample],
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Issue 12: `pledger worker canary --metrics ADDR` serves the rollout, its guardrails, the
/// decisions and the worker's dead letters and lag; a freeze shows within one scrape interval.
#[test]
fn the_metrics_endpoint_shows_a_freeze() {
    let w = World::new();
    let addr = format!("127.0.0.1:{}", pledger_infra::server::free_port());
    let _monitor = w.worker_with_args("canary", "a", &["--metrics", &addr]);
    let plan = AUTO_PLAN.replace(
        "automatic = true\n\n[advance]",
        "automatic = false\n\n[advance]",
    );
    let p = rolling_with(&w, &plan);
    let triage = [("prompt", "triage"), ("release", p.release.as_str())];
    let samples = w.wait_for(
        "the rollout in the metrics",
        Duration::from_secs(30),
        || {
            let s = parse(scrape(&addr)?);
            (value_of(&s, names::METRIC_RELEASE_INFO, &[("phase", "rolling_out")]) == Some(1.0))
                .then_some(s)
        },
    );
    assert_eq!(
        value_of(&samples, names::METRIC_RELEASE_STATUS, &triage),
        Some(0.0)
    );
    assert_eq!(
        value_of(&samples, names::METRIC_ROLLOUT_WEIGHT, &triage),
        Some(100.0)
    );
    assert_eq!(
        value_of(&samples, names::METRIC_ROLLOUT_STAGE, &triage),
        Some(0.0)
    );
    // A garbage outcome: dead-lettered, and counted for the worker.
    w.publish_raw(&outcomes_of("triage"), b"not json".to_vec());
    regressed_traffic(&w);
    w.wait_for("the automatic freeze", Duration::from_secs(30), || {
        (show(&w, &p.release)["state"] == "frozen").then_some(())
    });
    // Within one scrape interval (Prometheus' default is 15 s; this allows 10).
    let frozen_at = std::time::Instant::now();
    let samples = w.wait_for("the freeze in the metrics", Duration::from_secs(10), || {
        let s = parse(scrape(&addr)?);
        (value_of(&s, names::METRIC_RELEASE_STATUS, &triage) == Some(2.0)).then_some(s)
    });
    eprintln!(
        "the freeze showed {:?} after the ledger had it",
        frozen_at.elapsed()
    );
    assert_eq!(
        value_of(
            &samples,
            names::METRIC_RELEASE_INFO,
            &[("release", p.release.as_str()), ("phase", "frozen")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            names::METRIC_RELEASE_INFO,
            &[("phase", "rolling_out")]
        ),
        None,
        "the phase series moved on"
    );
    assert_eq!(
        value_of(&samples, names::METRIC_ROLLOUT_WEIGHT, &triage),
        Some(0.0),
        "a frozen rollout serves the candidate to nobody"
    );
    assert_eq!(
        value_of(
            &samples,
            &format!("{}_total", names::METRIC_DECISIONS),
            &[("prompt", "triage"), ("decision", "freeze")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            names::METRIC_GUARDRAIL_BREACHED,
            &[("guardrail", "escalation_rate"), ("bound", "max_increase")]
        ),
        Some(1.0)
    );
    let candidate = value_of(
        &samples,
        names::METRIC_GUARDRAIL_VALUE,
        &[("guardrail", "escalation_rate"), ("arm", "candidate")],
    )
    .unwrap();
    let control = value_of(
        &samples,
        names::METRIC_GUARDRAIL_VALUE,
        &[("guardrail", "escalation_rate"), ("arm", "control")],
    )
    .unwrap();
    let limit = value_of(
        &samples,
        names::METRIC_GUARDRAIL_LIMIT,
        &[("guardrail", "escalation_rate")],
    )
    .unwrap();
    assert!(
        candidate - control > limit,
        "max_increase: candidate {candidate} is more than {limit} above control {control}"
    );
    assert!(
        value_of(
            &samples,
            names::METRIC_CANARY_SAMPLES,
            &[("arm", "candidate")]
        )
        .unwrap()
            >= 100.0
    );
    assert_eq!(
        value_of(
            &samples,
            &format!("{}_total", names::METRIC_DEAD_LETTERS),
            &[("worker", "canary"), ("replica", "a")]
        ),
        Some(1.0)
    );
    // The process counts its heap, beside its resident memory (the heap counts what was
    // asked for, so buffers allocated and not yet written may put it above the resident).
    let heap = value_of(&samples, names::METRIC_PROCESS_HEAP, &[]).expect("the heap");
    let resident = value_of(&samples, names::METRIC_PROCESS_RESIDENT, &[]).expect("resident");
    assert!(
        heap > 1e6 && resident > 1e6,
        "heap {heap} bytes, resident {resident} bytes"
    );
    // The consumers' lag is read every 5 s (a consumer not created yet is skipped).
    w.wait_for("the consumer lag", Duration::from_secs(15), || {
        let s = parse(scrape(&addr)?);
        value_of(
            &s,
            names::METRIC_CONSUMER_PENDING,
            &[
                ("worker", "canary"),
                ("stream", pledger_core::names::OUTCOMES_STREAM),
            ],
        )
    });
}
