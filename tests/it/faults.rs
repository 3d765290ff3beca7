//! Faults end to end, against real servers: a single nats-server SIGKILLed and restarted while
//! outcomes are ingested and while commands run, and the node leading the ledger of a
//! three-node R3 cluster SIGKILLed while outcomes are ingested and a rollout is judged.
//!
//! Outcomes are published with JetStream acknowledgements and a `Nats-Msg-Id` per message; a
//! publish that gets no acknowledgement is sent again with the same id (a copy that did land is
//! dropped as a duplicate), and only acknowledged messages are counted. Every wait is bounded
//! and polls an observation (a count, a state, an acknowledgement), never a fixed sleep.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pledger_core::names::{self, DEADLETTER_STREAM, LEDGER_STREAM, OUTCOMES_STREAM};
use pledger_e2e::*;
use pledger_infra::server::EphemeralCluster;
use serde_json::{json, Value};

use crate::fixture::*;

/// One stage that never advances (it asks for more samples than any test sends) and a
/// guardrail that never breaches: the monitor only counts.
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

/// Automatic freeze and rollback when the candidate escalates more than one point above the
/// concurrent control; never advances on its own.
const GUARDED_PLAN: &str = r#"
[[stages]]
name = "half"
percent = 50
min_samples = 1000000

[[stages]]
name = "everyone"
percent = 100

[guardrails]
escalation_rate = { max_increase = 0.01 }

[rollback]
criteria = "escalation rate more than one point above the control"
automatic = true
"#;

/// Outcomes per message (half candidate, half baseline).
const PER_MESSAGE: u64 = 4;

/// What the outcomes of a rollout name.
#[derive(Clone)]
struct Rollout {
    prompt: String,
    release: String,
    baseline: String,
    candidate: String,
}

impl Rollout {
    fn of(prompt: &str, p: &Prepared) -> Rollout {
        Rollout {
            prompt: prompt.to_string(),
            release: p.release.clone(),
            baseline: p.v1.clone(),
            candidate: p.v2.clone(),
        }
    }
}

/// How the candidate behaves in a stream of outcomes.
#[derive(Clone, Copy)]
enum Traffic {
    /// Both arms escalate 2% of requests.
    Healthy,
    /// The candidate escalates 40% of requests, the baseline still 2%.
    CandidateEscalates,
}

/// One outcome message: an array of [`PER_MESSAGE`] outcomes, with its `Nats-Msg-Id`.
struct OutcomeMessage {
    id: String,
    subject: String,
    payload: Vec<u8>,
    candidate: u64,
    baseline: u64,
}

/// Messages `range` of a stream named `name` (message ids and request ids are unique per name).
fn outcome_messages(
    r: &Rollout,
    name: &str,
    range: std::ops::Range<u64>,
    traffic: Traffic,
) -> Vec<OutcomeMessage> {
    range
        .map(|m| {
            let outcomes: Vec<Value> = (0..PER_MESSAGE)
                .map(|k| {
                    let n = m * PER_MESSAGE + k;
                    let candidate = k % 2 == 0;
                    // The arms alternate: `i` counts the requests of this one.
                    let i = n / 2;
                    let escalated = match (traffic, candidate) {
                        (Traffic::CandidateEscalates, true) => i % 5 < 2,
                        _ => i.is_multiple_of(50),
                    };
                    json!({
                        "prompt": r.prompt,
                        "version": if candidate { &r.candidate } else { &r.baseline },
                        "release": r.release,
                        "arm": if candidate { "candidate" } else { "baseline" },
                        "request_id": format!("{name}-{n}"),
                        "fallback": false,
                        "escalated": escalated,
                        "manually_corrected": false,
                        "refusal": false,
                        "latency_ms": 100.0 + (n % 7) as f64,
                        "tokens_in": 10,
                        "tokens_out": 5
                    })
                })
                .collect();
            OutcomeMessage {
                id: format!("{name}-{m}"),
                subject: outcomes_of(&r.prompt),
                payload: serde_json::to_vec(&outcomes).unwrap(),
                candidate: PER_MESSAGE / 2,
                baseline: PER_MESSAGE / 2,
            }
        })
        .collect()
}

/// What a publisher thread has done so far, for the test to watch.
#[derive(Default)]
struct Progress {
    acknowledged: AtomicU64,
    failed_attempts: AtomicU64,
}

impl Progress {
    fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }
    fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::SeqCst)
    }
}

/// What a publisher thread published, counting acknowledged messages only.
#[derive(Debug, Default)]
struct Tally {
    candidate: u64,
    baseline: u64,
    messages: u64,
    /// Acknowledgements that said the message was already stored (a retry of a publish whose
    /// acknowledgement was lost).
    duplicates: u64,
    failed_attempts: u64,
    /// Messages never acknowledged (not counted anywhere).
    unacknowledged: Vec<String>,
    /// The last publish error seen, for a failing test to show.
    last_error: Option<String>,
}

impl Tally {
    fn outcomes(&self) -> u64 {
        self.candidate + self.baseline
    }
}

/// Publishes `messages` in order from a thread of its own, each until acknowledged (resent with
/// the same `Nats-Msg-Id` after a failure, for at most a minute).
fn spawn_publisher(
    url: String,
    messages: Vec<OutcomeMessage>,
    progress: Arc<Progress>,
) -> JoinHandle<Tally> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = pledger_infra::connect(&url)
                .await
                .expect("the publisher connects");
            let mut js = async_nats::jetstream::new(client);
            js.set_timeout(Duration::from_secs(1));
            let mut tally = Tally::default();
            for m in messages {
                let give_up = Instant::now() + Duration::from_secs(60);
                loop {
                    let publish = async_nats::jetstream::message::PublishMessage::build()
                        .payload(m.payload.clone().into())
                        .message_id(&m.id);
                    let ack = match js.send_publish(m.subject.clone(), publish).await {
                        Ok(pending) => pending.await,
                        Err(e) => Err(e),
                    };
                    match ack {
                        Ok(ack) => {
                            tally.duplicates += u64::from(ack.duplicate);
                            tally.messages += 1;
                            tally.candidate += m.candidate;
                            tally.baseline += m.baseline;
                            progress.acknowledged.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(e) => {
                            tally.failed_attempts += 1;
                            tally.last_error = Some(e.to_string());
                            progress.failed_attempts.fetch_add(1, Ordering::SeqCst);
                            if Instant::now() >= give_up {
                                tally.unacknowledged.push(m.id.clone());
                                break;
                            }
                            // Back off before the same message goes again.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            tally
        })
    })
}

/// Does the durable consumer have nothing left to deliver or acknowledge? `false` while the
/// server cannot answer.
fn drained(url: &str, durable: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Ok(client) = pledger_infra::connect(url).await else {
            return false;
        };
        let js = async_nats::jetstream::new(client);
        let Ok(stream) = js.get_stream(OUTCOMES_STREAM).await else {
            return false;
        };
        let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
            .await
        else {
            return false;
        };
        match c.info().await {
            Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
            Err(_) => false,
        }
    })
}

/// The outcome and dead-letter streams' states as the server reports them, for a failing
/// test to show.
fn outcome_stream_state(url: &str) -> String {
    block_on(async {
        let client = pledger_infra::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let mut states = Vec::new();
        for name in [OUTCOMES_STREAM, DEADLETTER_STREAM] {
            let mut stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
            let i = stream.info().await.map_err(|e| e.to_string())?;
            states.push(format!(
                "{name} holds {} messages, sequences {}..={}",
                i.state.messages, i.state.first_sequence, i.state.last_sequence
            ));
        }
        Ok::<String, String>(states.join("; "))
    })
    .unwrap_or_else(|e| format!("streams: {e}"))
}

/// The durable consumer's state as the server reports it, for a failing test to show.
fn consumer_state(url: &str, durable: &str) -> String {
    block_on(async {
        let client = pledger_infra::connect(url).await.map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(OUTCOMES_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let mut c = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
            .await
            .map_err(|e| e.to_string())?;
        let i = c.info().await.map_err(|e| e.to_string())?;
        Ok::<String, String>(format!(
            "{durable}: delivered up to {}, acked up to {}, {} pending, {} awaiting ack, {} waiting pulls",
            i.delivered.stream_sequence,
            i.ack_floor.stream_sequence,
            i.num_pending,
            i.num_ack_pending,
            i.num_waiting
        ))
    })
    .unwrap_or_else(|e| format!("{durable}: {e}"))
}

fn durable(replica: &str) -> String {
    names::durable_name("canary", replica, OUTCOMES_STREAM)
}

/// The candidate and control samples the monitor's status counts (0, 0 before it has one).
fn samples(status: &Value) -> (u64, u64) {
    (
        status["judgement"]["candidate"]["samples"]
            .as_u64()
            .unwrap_or(0),
        status["judgement"]["control"]["samples"]
            .as_u64()
            .unwrap_or(0),
    )
}

/// Marks on stderr how long after the start of a test each step came (shown when it fails, and
/// with `--nocapture`). Starts after the pledger binary is built.
struct Timeline(Instant);

impl Timeline {
    fn start() -> Timeline {
        pledger_bin();
        Timeline(Instant::now())
    }
    fn mark(&self, what: &str) {
        eprintln!("[{:>7.2}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

/// How many times the worker process's supervisor started a failed worker again (each is
/// logged).
fn supervised_restarts(worker: &WorkerProcess) -> usize {
    worker.log_text().matches("starting it again").count()
}

/// Fails at once, with its log, when a worker has exited on its own.
#[track_caller]
fn assert_alive(worker: &mut WorkerProcess, what: &str) {
    if let Some(status) = worker.exited() {
        panic!(
            "{what} exited on its own ({status}); its log:\n{}",
            worker.log_text()
        );
    }
}

/// A release of `prompt` rolling out under `plan`, on a single-server world.
fn rolling(w: &World, prompt: &str, plan: &str) -> Prepared {
    let p = gated(w, prompt);
    let file = w.file(&format!("{prompt}-plan.toml"), plan);
    w.run("maria", &["rollout", "plan", &p.release, &file]).ok();
    w.run("maria", &["rollout", "start", &p.release]).ok();
    p
}

/// Every accepted event of the prompt's family, as `audit log` prints them.
fn audit_events(w: &World, prompt: &str) -> Vec<Value> {
    let log = w.json("auditor", &["audit", "log", prompt]);
    assert!(
        log["ignored"].as_array().is_none_or(|a| a.is_empty()),
        "{log}"
    );
    log["events"].as_array().unwrap().clone()
}

/// How long a killed single server stays down.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// Restarted as soon as the publisher has lost an acknowledgement (about a second).
    Brief,
    /// Restarted once the publisher has gone without acknowledgements for six attempts of a
    /// second each: longer than the 5 s idle heartbeat of the workers' pull consumers.
    LongerThanAHeartbeat,
}

impl Outage {
    fn failed_attempts(self) -> u64 {
        match self {
            Outage::Brief => 1,
            Outage::LongerThanAHeartbeat => 6,
        }
    }
}

#[test]
fn a_server_sigkilled_mid_ingest_and_restarted_counts_each_acknowledged_outcome_once() {
    killed_mid_ingest(Outage::Brief);
}

#[test]
fn a_server_down_longer_than_a_heartbeat_keeps_its_monitor_and_counts_each_outcome_once() {
    killed_mid_ingest(Outage::LongerThanAHeartbeat);
}

/// One nats-server, a rollout and its canary monitor; a publisher of acknowledged outcome
/// messages; the server SIGKILLed a third of the way through and restarted on its port and
/// store after `outage`.
fn killed_mid_ingest(outage: Outage) {
    let t = Timeline::start();
    let mut w = World::new();
    let mut monitor = w.worker("canary", "a");
    let p = rolling(&w, "triage", HOLDING_PLAN);
    let r = Rollout::of("triage", &p);
    let show = |w: &World| w.json("auditor", &["release", "show", &p.release]);
    t.mark("rolling out, monitor running");
    let total = 1500;
    let progress = Arc::new(Progress::default());
    let publisher = spawn_publisher(
        w.server.url(),
        outcome_messages(&r, "single", 0..total, Traffic::Healthy),
        progress.clone(),
    );
    // Mid-stream: a third of the messages acknowledged, and the monitor counting.
    w.wait_for(
        "a third of the outcomes acknowledged and the monitor counting",
        Duration::from_secs(60),
        || {
            assert_alive(&mut monitor, "the canary monitor");
            let (c, b) = samples(&show(&w)["canary"]);
            (progress.acknowledged() >= total / 3 && c + b > 0).then_some(())
        },
    );
    w.server.kill();
    let killed_at = progress.acknowledged();
    t.mark(&format!(
        "server killed after {killed_at} of {total} messages"
    ));
    // The publisher is cut off mid-stream (its publishes go unacknowledged) ...
    w.wait_for(
        "the publisher to lose its acknowledgements",
        Duration::from_secs(30),
        || (progress.failed_attempts() >= outage.failed_attempts()).then_some(()),
    );
    assert!(
        killed_at < total,
        "the server was killed after the stream ended"
    );
    // ... and goes on once the server is back on its port and store.
    w.server
        .restart()
        .expect("nats-server restarts on its store");
    t.mark(&format!("server restarted after a {outage:?} outage"));
    let tally = publisher.join().expect("the publisher thread");
    t.mark(&format!("publisher done: {tally:?}"));
    assert!(
        tally.unacknowledged.is_empty(),
        "messages never acknowledged after the restart: {tally:?}"
    );
    assert_eq!(tally.messages, total, "{tally:?}");
    assert!(tally.failed_attempts > 0, "{tally:?}");

    // The monitor counts every acknowledged outcome exactly once.
    let mut last = Value::Null;
    let status = w.try_wait_for(Duration::from_secs(60), || {
        assert_alive(&mut monitor, "the canary monitor");
        let s = show(&w)["canary"].clone();
        let (c, b) = samples(&s);
        last = s.clone();
        assert!(
            c <= tally.candidate && b <= tally.baseline,
            "the monitor counted more than was acknowledged: {c} candidate and {b} control against {tally:?}; log:\n{}",
            monitor.log_text()
        );
        (c + b == tally.outcomes() && drained(&w.server.url(), &durable("a"))).then_some(s)
    });
    let status = status.unwrap_or_else(|| {
        panic!(
            "the monitor did not count every acknowledged outcome ({tally:?}); last status {}; {}; {}; its log:\n{}",
            last["judgement"],
            outcome_stream_state(&w.server.url()),
            consumer_state(&w.server.url(), &durable("a")),
            monitor.log_text()
        )
    });
    t.mark(&format!(
        "the monitor counted every acknowledged outcome ({} supervised restarts)",
        supervised_restarts(&monitor)
    ));
    assert_eq!(
        samples(&status),
        (tally.candidate, tally.baseline),
        "none lost, none counted twice"
    );
    assert_eq!(monitor.stop(), Some(0), "SIGTERM stops the monitor cleanly");
}

#[test]
fn a_command_while_the_server_is_down_exits_5_records_nothing_and_succeeds_after_restart() {
    let t = Timeline::start();
    let mut w = World::new();
    two_versions(&w, "triage", true);
    let before = audit_events(&w, "triage");
    assert_eq!(before.len(), 4);
    let roster = w.json("auditor", &["identity", "list"]);
    let v3 = w.file(
        "triage-v3.toml",
        &artifact_toml("Classify the message; cite the policy.", 0.2),
    );
    let publish = ["--json", "prompt", "publish", "triage", v3.as_str()];

    t.mark("history written");
    w.server.kill();
    let started = Instant::now();
    let down = w.run("maria", &publish);
    assert_eq!(down.code, 5, "the unavailable exit code: {down:?}");
    assert!(
        down.stderr.contains("cannot reach the NATS server"),
        "{down:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the command took {:?} to give up",
        started.elapsed()
    );
    let read = w.run("auditor", &["--json", "audit", "log", "triage"]);
    assert_eq!(read.code, 5, "{read:?}");
    assert_eq!(read.json()["error"]["exit_code"], 5, "{read:?}");
    t.mark("commands refused while down");
    w.server
        .restart()
        .expect("nats-server restarts on its store");
    t.mark("server restarted");
    assert_eq!(
        audit_events(&w, "triage"),
        before,
        "the failed command recorded nothing, and nothing was lost"
    );
    let up = w.run("maria", &publish).ok().json();
    let after = audit_events(&w, "triage");
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        after[..before.len()],
        before[..],
        "history before is intact"
    );
    let last = &after[before.len()]["event"];
    assert_eq!(last["kind"], "prompt.version_published");
    assert_eq!(last["actor"], "maria");
    assert!(
        last.to_string().contains(up["version"].as_str().unwrap()),
        "{last}"
    );
    assert_eq!(w.json("auditor", &["identity", "list"]), roster);
    t.mark("the command succeeded after the restart");
}

/// The pledger CLI against a cluster: its own config dir (keyring) and `$HOME`.
struct ClusterCli {
    url: String,
    dir: tempfile::TempDir,
}

impl ClusterCli {
    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn run_via(&self, url: &str, actor: &str, args: &[&str]) -> Run {
        std::process::Command::new(pledger_bin())
            .args(["--nats", url, "--as", actor])
            .args(args)
            .env_remove("PLEDGER_NATS_URL")
            .env_remove("PLEDGER_ACTOR")
            .env_remove("PLEDGER_KEY")
            .env_remove("XDG_CONFIG_HOME")
            .env("PLEDGER_CONFIG_DIR", self.config())
            .env("HOME", self.config())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("pledger runs")
            .into()
    }

    #[track_caller]
    fn ok(&self, actor: &str, args: &[&str]) -> Run {
        self.run_via(&self.url, actor, args).ok()
    }

    #[track_caller]
    fn json(&self, actor: &str, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(actor, &all).json()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Enrols `name` with `roles`, its key generated under `keys_dir`.
    fn enroll(&self, keys_dir: &Path, name: &str, roles: &[&str]) {
        let public = write_key(keys_dir, name).display().to_string();
        let mut args = vec!["identity", "add", name, "--public-key", &public];
        for r in roles {
            args.extend(["--role", r]);
        }
        self.ok("admin", &args);
    }

    fn audit(&self, prompt: &str) -> Vec<Value> {
        let log = self.json("admin", &["audit", "log", prompt]);
        assert!(
            log["ignored"].as_array().is_none_or(|a| a.is_empty()),
            "{log}"
        );
        log["events"].as_array().unwrap().clone()
    }

    fn kinds(&self, prompt: &str) -> Vec<String> {
        self.audit(prompt)
            .iter()
            .map(|e| e["event"]["kind"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The server name of the current leader of `stream`, asked through `url` (`None` while it
/// has none or the cluster cannot answer).
fn leader(url: &str, stream: &str) -> Option<String> {
    block_on(async {
        let client = pledger_infra::connect(url).await.ok()?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        info.cluster.clone().and_then(|c| c.leader)
    })
}

/// Asks the leader of `stream` to step down (the cluster elects another).
fn step_down(url: &str, stream: &str) {
    block_on(async {
        if let Ok(client) = pledger_infra::connect(url).await {
            let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
            let _ = client.request(subject, "".into()).await;
        }
    })
}

/// Moves the leadership of `stream` to the node named `to`: its leader steps down until the
/// cluster elects that node.
fn move_leader(url: &str, stream: &str, to: &str) {
    wait_until(
        &format!("{to} to lead {stream}"),
        Duration::from_secs(30),
        || {
            let now = leader(url, stream)?;
            if now == to {
                return Some(());
            }
            step_down(url, stream);
            // Wait for the election to end before looking again.
            try_wait_until(Duration::from_secs(5), || {
                leader(url, stream).filter(|l| *l != now)
            });
            None
        },
    )
}

/// Fails at once, with their logs, when a monitor has exited on its own.
fn check_monitors(monitors: &mut [(&str, WorkerProcess)]) {
    for (replica, m) in monitors.iter_mut() {
        assert_alive(m, &format!("canary monitor {replica}"));
    }
}

/// An R3 ledger on three nodes, a rollout with automatic freeze and rollback judged by monitor
/// `replicas` (each given every node's URL); the node leading both the ledger and the outcome
/// streams is SIGKILLed a third of the way through a healthy stream of outcomes, then the
/// candidate regresses.
fn leader_killed_during_ingest_and_rollout(replicas: &[&'static str]) {
    let t = Timeline::start();
    let mut cluster = EphemeralCluster::start(3).expect("three nats-servers start");
    let cli = ClusterCli {
        url: cluster.url(),
        dir: tempfile::tempdir().unwrap(),
    };
    let keys = cli.config().join("keys");
    write_key(&keys, "admin");
    // The cluster elects its JetStream meta leader after start: init once it has.
    let init = wait_until(
        "pledger init --replicas 3 on the new cluster",
        Duration::from_secs(30),
        || {
            let run = cli.run_via(
                &cli.url,
                "admin",
                &["--json", "init", "--admin", "admin", "--replicas", "3"],
            );
            (run.code == 0).then(|| run.json())
        },
    );
    for r in init["replicas"].as_array().unwrap() {
        assert_eq!(r["replicas"], 3, "{init}");
    }
    cli.ok(
        "admin",
        &[
            "identity", "roles", "admin", "--role", "admin", "--role", "ci",
        ],
    );
    cli.enroll(&keys, "maria", &["author", "release-manager"]);
    cli.enroll(&keys, "priya", &["reviewer"]);
    cli.enroll(&keys, "tomas", &["reviewer"]);
    let workers = cli.dir.path().join("workers");
    cli.enroll(&workers.join("keys"), "canary-monitor", &["worker"]);

    // A release of `triage` rolling out with automatic freeze and rollback.
    cli.ok(
        "maria",
        &["prompt", "register", "triage", "--owner", "support"],
    );
    let version = |name: &str, instructions: &str| {
        let f = cli.file(name, &artifact_toml(instructions, 0.2));
        cli.json("maria", &["prompt", "publish", "triage", &f])["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let v1 = version("v1.toml", "Classify the message.");
    let v2 = version("v2.toml", "Classify the message; ask when unsure.");
    cli.ok(
        "maria",
        &[
            "prompt",
            "adopt",
            "triage",
            &v1,
            "--reason",
            "serving production",
        ],
    );
    let release = cli.json(
        "maria",
        &[
            "release",
            "propose",
            "triage",
            &v2,
            "--rationale",
            "ask when unsure",
        ],
    )["release"]
        .as_str()
        .unwrap()
        .to_string();
    for (who, layer) in [("priya", "product"), ("tomas", "technical")] {
        cli.ok(
            who,
            &["release", "review", &release, "--layer", layer, "--approve"],
        );
    }
    let bundle = cli.file("bundle.json", &bundle_json(&v2, &v1, 0.0));
    cli.ok("admin", &["release", "attach-eval", &release, &bundle]);
    cli.ok("admin", &["release", "gate", &release]);
    let plan = cli.file("plan.toml", GUARDED_PLAN);
    cli.ok("maria", &["rollout", "plan", &release, &plan]);
    cli.ok("maria", &["rollout", "start", &release]);
    t.mark("rolling out on the cluster");
    let r = Rollout {
        prompt: "triage".into(),
        release: release.clone(),
        baseline: v1.clone(),
        candidate: v2.clone(),
    };

    // The node that leads the ledger leads the outcomes too, so losing it interrupts both.
    let victim_name = wait_until("a ledger leader", Duration::from_secs(20), || {
        leader(&cli.url, LEDGER_STREAM)
    });
    move_leader(&cli.url, OUTCOMES_STREAM, &victim_name);
    let victim = (0..3)
        .find(|i| cluster.node_name(*i) == victim_name)
        .unwrap();
    t.mark(&format!(
        "{victim_name} leads PLEDGER_LEDGER and PLEDGER_OUTCOMES"
    ));
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let survivors_url = survivors
        .iter()
        .map(|i| cluster.node_url(*i))
        .collect::<Vec<_>>()
        .join(",");

    let mut monitors: Vec<(&str, WorkerProcess)> = replicas
        .iter()
        .copied()
        .map(|replica| {
            (
                replica,
                WorkerProcess::spawn(&cli.url, "canary", replica, &workers),
            )
        })
        .collect();
    let show = || cli.json("admin", &["release", "show", &release]);

    // Healthy outcomes; the leader dies a third of the way through.
    let total = 1200;
    let progress = Arc::new(Progress::default());
    let publisher = spawn_publisher(
        cli.url.clone(),
        outcome_messages(&r, "healthy", 0..total, Traffic::Healthy),
        progress.clone(),
    );
    wait_until(
        "a third of the outcomes acknowledged and the monitors counting",
        Duration::from_secs(60),
        || {
            check_monitors(&mut monitors);
            let (c, b) = samples(&show()["canary"]);
            (progress.acknowledged() >= total / 3 && c + b > 0).then_some(())
        },
    );
    let history = cli.audit("triage");
    assert_eq!(
        leader(&cluster.node_url(survivors[0]), LEDGER_STREAM).as_deref(),
        Some(victim_name.as_str()),
        "the victim still leads the ledger"
    );
    cluster.kill(victim);
    let killed = Instant::now();
    t.mark(&format!(
        "{victim_name} killed after {} of {total} messages",
        progress.acknowledged()
    ));

    // Commands through the survivors: a write and a read within 10 s of the kill.
    let v3 = cli.file(
        "v3.toml",
        &artifact_toml("Classify the message; cite the policy.", 0.2),
    );
    let mut attempts = 0;
    let mut last = None;
    let written = try_wait_until(Duration::from_secs(10), || {
        attempts += 1;
        let run = cli.run_via(
            &survivors_url,
            "maria",
            &["prompt", "publish", "triage", &v3],
        );
        let ok = run.code == 0;
        if !ok {
            t.mark(&format!(
                "write refused (exit {}): {}",
                run.code,
                run.stderr.trim().lines().last().unwrap_or_default()
            ));
        }
        last = Some(run);
        ok.then_some(())
    });
    assert!(
        written.is_some(),
        "no write through the survivors within 10 s of the kill ({attempts} attempts): {last:?}"
    );
    let deadline = killed + Duration::from_secs(10);
    let read = try_wait_until(deadline.saturating_duration_since(Instant::now()), || {
        let run = cli.run_via(
            &survivors_url,
            "admin",
            &["--json", "release", "show", &release],
        );
        (run.code == 0).then_some(run)
    });
    assert!(
        read.is_some(),
        "no read through the survivors within 10 s of the kill"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "a write and a read took {:?} after the kill",
        killed.elapsed()
    );
    t.mark(&format!(
        "a write ({attempts} attempts) and a read through the survivors, {:?} after the kill",
        killed.elapsed()
    ));
    assert_ne!(
        leader(&survivors_url, LEDGER_STREAM).as_deref(),
        Some(victim_name.as_str())
    );

    let healthy = publisher.join().expect("the publisher thread");
    assert!(
        healthy.unacknowledged.is_empty(),
        "messages never acknowledged: {healthy:?}"
    );
    assert_eq!(healthy.messages, total, "{healthy:?}");
    t.mark(&format!("healthy publisher done: {healthy:?}"));
    // Each replica counts every acknowledged outcome exactly once (they take turns writing the
    // status; wait until each has written the full count).
    let mut full: Vec<&str> = Vec::new();
    let mut seen: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let counted = try_wait_until(Duration::from_secs(60), || {
        check_monitors(&mut monitors);
        let s = show()["canary"].clone();
        let (c, b) = samples(&s);
        assert!(
            c <= healthy.candidate && b <= healthy.baseline,
            "monitor {} counted more than was acknowledged: {c} candidate and {b} control against {healthy:?}",
            s["monitor_replica"]
        );
        let replica = s["monitor_replica"].as_str().unwrap_or_default();
        seen.insert(replica.to_string(), (c, b));
        if (c, b) == (healthy.candidate, healthy.baseline) {
            if let Some(known) = replicas.iter().copied().find(|x| *x == replica) {
                if !full.contains(&known) {
                    full.push(known);
                }
            }
        }
        (full.len() == replicas.len()
            && replicas
                .iter()
                .all(|x| drained(&survivors_url, &durable(x))))
        .then_some(())
    });
    if counted.is_none() {
        panic!(
            "the monitors did not count every acknowledged outcome ({healthy:?}) within 60 s; the last (candidate, control) counts each published: {seen:?}; {}; consumers: {:?}; logs:\n{}",
            outcome_stream_state(&survivors_url),
            replicas
                .iter()
                .map(|r| consumer_state(&survivors_url, &durable(r)))
                .collect::<Vec<_>>(),
            monitors
                .iter()
                .map(|(r, m)| format!("--- {r}\n{}", m.log_text()))
                .collect::<String>()
        );
    }
    t.mark(&format!(
        "every monitor counted every acknowledged outcome (supervised restarts: {:?})",
        monitors
            .iter()
            .map(|(r, m)| (*r, supervised_restarts(m)))
            .collect::<Vec<_>>()
    ));
    assert_eq!(
        show()["state"],
        "rolling_out",
        "healthy traffic freezes nothing"
    );

    // The candidate regresses: exactly one freeze and one rollback, by the monitor. (Outcomes
    // after the rollback count for no rollout, and the status stays the rollout's last, so the
    // counts are compared above, before the decisions.)
    let breaching = spawn_publisher(
        cli.url.clone(),
        outcome_messages(&r, "breach", 0..400, Traffic::CandidateEscalates),
        Arc::new(Progress::default()),
    );
    wait_until("the automatic rollback", Duration::from_secs(60), || {
        check_monitors(&mut monitors);
        (show()["state"] == "rolled_back").then_some(())
    });
    t.mark("rolled back");
    let breached = breaching.join().expect("the publisher thread");
    assert!(breached.unacknowledged.is_empty(), "{breached:?}");
    // Every replica has judged all of it before the decisions are counted.
    wait_until(
        "every monitor to consume every outcome",
        Duration::from_secs(60),
        || {
            check_monitors(&mut monitors);
            replicas
                .iter()
                .all(|x| drained(&survivors_url, &durable(x)))
                .then_some(())
        },
    );
    t.mark("every monitor drained");
    let kinds = cli.kinds("triage");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "release.rollout_frozen")
            .count(),
        1,
        "exactly one freeze: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "release.rolled_back").count(),
        1,
        "exactly one rollback: {kinds:?}"
    );
    let events = cli.audit("triage");
    assert_eq!(
        events[..history.len()],
        history[..],
        "the history written before the kill is intact"
    );
    let frozen = events
        .iter()
        .find(|e| e["event"]["kind"] == "release.rollout_frozen")
        .unwrap();
    assert_eq!(frozen["event"]["actor"], "canary-monitor");
    assert_eq!(
        frozen["event"]["payload"]["evidence"]["verdict"],
        "breached"
    );
    let resolved = cli.json("admin", &["resolve", "triage", "--unit", "user-1"]);
    assert_eq!(
        resolved["version"],
        v1.as_str(),
        "traffic is back on stable"
    );
    for (replica, m) in monitors.iter_mut() {
        assert_eq!(m.stop(), Some(0), "monitor {replica} stops cleanly");
    }
}

#[test]
fn an_r3_clusters_leader_sigkilled_during_ingest_and_rollout_counts_exactly_and_decides_once() {
    leader_killed_during_ingest_and_rollout(&["a"]);
}

#[test]
fn two_monitor_replicas_on_an_r3_cluster_losing_its_leader_decide_once() {
    leader_killed_during_ingest_and_rollout(&["a", "b"]);
}

#[test]
fn writers_racing_on_one_prompt_of_an_r3_cluster_each_reread_and_record_once() {
    let cluster = EphemeralCluster::start(3).expect("three nats-servers start");
    let cli = ClusterCli {
        url: cluster.url(),
        dir: tempfile::tempdir().unwrap(),
    };
    let keys = cli.config().join("keys");
    write_key(&keys, "admin");
    wait_until(
        "pledger init --replicas 3 on the new cluster",
        Duration::from_secs(30),
        || {
            let run = cli.run_via(
                &cli.url,
                "admin",
                &["init", "--admin", "admin", "--replicas", "3"],
            );
            (run.code == 0).then_some(())
        },
    );
    cli.enroll(&keys, "maria", &["author"]);
    cli.ok(
        "maria",
        &["prompt", "register", "triage", "--owner", "support"],
    );
    // Ten commands at once, each publishing its own version: every one that loses the
    // conditional append re-reads, re-decides and appends after the winner.
    let n = 10;
    let files: Vec<String> = (0..n)
        .map(|i| {
            cli.file(
                &format!("v{i}.toml"),
                &artifact_toml(&format!("Version {i}."), 0.2),
            )
        })
        .collect();
    let children: Vec<std::process::Child> = files
        .iter()
        .map(|f| {
            std::process::Command::new(pledger_bin())
                .args(["--nats", &cli.url, "--as", "maria"])
                .args(["prompt", "publish", "triage", f])
                .env_remove("PLEDGER_NATS_URL")
                .env_remove("PLEDGER_ACTOR")
                .env_remove("PLEDGER_KEY")
                .env("PLEDGER_CONFIG_DIR", cli.config())
                .env("HOME", cli.config())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().into())
        .collect();
    let failed: Vec<&Run> = runs.iter().filter(|r| r.code != 0).collect();
    assert!(
        failed.is_empty(),
        "every racing writer re-reads after losing and succeeds; failed: {failed:#?}"
    );
    let kinds = cli.kinds("triage");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "prompt.version_published")
            .count(),
        n,
        "{kinds:?}"
    );
}
