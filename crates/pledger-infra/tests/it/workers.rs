//! Workers against a real server: the gatekeeper and the router.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use pledger_core::bundle::EvalBundle;
use pledger_core::event::{Envelope, ReviewLayer, ReviewVerdict};
use pledger_core::{Command, FileFormat, PromptName, ReleaseId};
use pledger_infra::worker::{gatekeeper, router, WorkerContext, WorkerKind};
use pledger_infra::RoutingStore;
use tokio::sync::watch;

use crate::support::*;

/// Starts a worker task; returns the handle and the sender that stops it.
async fn spawn(
    kind: WorkerKind,
    replica: &str,
    url: &str,
    dir: &Path,
) -> (tokio::task::JoinHandle<()>, watch::Sender<bool>) {
    let client = pledger_infra::connect(url).await.unwrap();
    let key = signer(WorkerContext::identity_name(kind));
    let ctx = WorkerContext::open(kind, replica, client, dir, key)
        .await
        .unwrap();
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        match kind {
            WorkerKind::Gatekeeper => gatekeeper::run(ctx, rx).await.unwrap(),
            WorkerKind::Router => router::run(ctx, rx).await.unwrap(),
            WorkerKind::Canary
            | WorkerKind::Feedback
            | WorkerKind::Scheduler
            | WorkerKind::Notary
            | WorkerKind::Notifier => {
                unreachable!("end-to-end tests cover these")
            }
        }
    });
    (handle, tx)
}

/// Waits (bounded) for the next ledger event of `kind` on the prompt's family.
async fn next_event(sub: &mut async_nats::Subscriber, kind: &str) -> Envelope {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = sub.next().await.expect("subscription open");
            let e: Envelope = serde_json::from_slice(&m.payload).unwrap();
            if e.kind() == kind {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event within 20 s"))
}

fn bundle(candidate: &str, baseline: &str, cost_rise: f64) -> EvalBundle {
    let text = serde_json::json!({
        "candidate": candidate, "baseline": baseline, "suite": "it",
        "segments": [{ "name": "all", "cases": 100, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 }],
        "hard_negatives": {
            "ambiguous": { "cases": 5, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "adversarial": { "cases": 5, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "long_context": { "cases": 5, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "partial_tool_failure": { "cases": 5, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 }
        },
        "latency_ms": { "candidate_p50": 1, "baseline_p50": 1, "candidate_p95": 2, "baseline_p95": 2 },
        "cost_per_request_usd": { "candidate": 1.0 + cost_rise, "baseline": 1.0 }
    });
    EvalBundle::from_text(&text.to_string(), FileFormat::Json).unwrap()
}

/// Registers `triage`, adopts v1, proposes v2 and approves it; returns (release, v1, v2).
async fn reviewed(h: &Harness) -> (ReleaseId, String, String) {
    let p = prompt("triage");
    let run = |who: &'static str, c: Command| {
        let ledger = h.ledger.clone();
        let p = p.clone();
        async move {
            ledger
                .execute(&p, &*signer(who), "it", move |_| Ok(c.clone()))
                .await
                .unwrap()
        }
    };
    run(
        "ana",
        Command::RegisterPrompt {
            owner: "support".into(),
        },
    )
    .await;
    let (a1, a2) = (artifact("one"), artifact("two"));
    let (v1, v2) = (a1.version_id(), a2.version_id());
    run("ana", Command::PublishVersion { artifact: a1 }).await;
    run("ana", Command::PublishVersion { artifact: a2 }).await;
    run(
        "ana",
        Command::AdoptVersion {
            version: v1.clone(),
            reason: "live".into(),
        },
    )
    .await;
    run(
        "ana",
        Command::ProposeChange {
            candidate: v2.clone(),
            rationale: "r".into(),
            expected_changes: vec![],
        },
    )
    .await;
    let release = ReleaseId::new(p.clone(), 1);
    for (who, layer) in [("bo", ReviewLayer::Product), ("cy", ReviewLayer::Technical)] {
        run(
            who,
            Command::SubmitReview {
                release: release.clone(),
                layer,
                verdict: ReviewVerdict::Approve,
                note: None,
            },
        )
        .await;
    }
    (release, v1.to_string(), v2.to_string())
}

async fn attach(h: &Harness, release: &ReleaseId, b: EvalBundle) {
    let r = release.clone();
    h.ledger
        .execute(release.prompt(), &*signer("ci"), "it", move |_| {
            Ok(Command::AttachEvalBundle {
                release: r.clone(),
                bundle: b.clone(),
            })
        })
        .await
        .unwrap();
}

/// Waits until a durable consumer of the ledger has nothing pending or unacknowledged.
async fn wait_drained(h: &Harness, durable: &str) {
    let stream = h
        .ledger
        .jetstream()
        .get_stream(pledger_core::names::LEDGER_STREAM)
        .await
        .unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(durable).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let info = consumer.info().await.unwrap();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{durable} did not drain"));
}

fn gate_decisions(family: &pledger_infra::Family) -> usize {
    family
        .events
        .iter()
        .filter(|e| e.envelope.kind() == "release.gate_decided")
        .count()
}

#[tokio::test]
async fn two_gatekeeper_replicas_decide_a_ready_release_once() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let (release, v1, v2) = reviewed(&h).await;
    let client = pledger_infra::connect(&h.server.url()).await.unwrap();
    let mut sub = client
        .subscribe(pledger_core::names::family_filter(
            &pledger_core::PromptName::parse("triage").unwrap(),
        ))
        .await
        .unwrap();
    let (g1, s1) = spawn(WorkerKind::Gatekeeper, "a", &h.server.url(), dir.path()).await;
    let (g2, s2) = spawn(WorkerKind::Gatekeeper, "b", &h.server.url(), dir.path()).await;
    attach(&h, &release, bundle(&v2, &v1, 0.0)).await;
    let decided = next_event(&mut sub, "release.gate_decided").await;
    assert_eq!(decided.actor.as_str(), "gatekeeper");
    // Wait until both replicas have consumed and acked everything, including the decision.
    for replica in ["a", "b"] {
        wait_drained(&h, &format!("pledger_gatekeeper_{replica}_pledger_ledger")).await;
    }
    for (s, g) in [(s1, g1), (s2, g2)] {
        s.send(true).unwrap();
        g.await.unwrap();
    }
    let family = h.ledger.load(&prompt("triage")).await.unwrap();
    assert_eq!(gate_decisions(&family), 1);
    assert!(
        family
            .state
            .release(&release)
            .unwrap()
            .gate
            .as_ref()
            .unwrap()
            .passed
    );
}

#[tokio::test]
async fn the_gatekeeper_waits_for_a_tradeoff_when_only_cost_fails() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let (release, v1, v2) = reviewed(&h).await;
    let client = pledger_infra::connect(&h.server.url()).await.unwrap();
    let mut sub = client
        .subscribe(pledger_core::names::family_filter(
            &pledger_core::PromptName::parse("triage").unwrap(),
        ))
        .await
        .unwrap();
    let (g, stop) = spawn(WorkerKind::Gatekeeper, "a", &h.server.url(), dir.path()).await;
    attach(&h, &release, bundle(&v2, &v1, 0.5)).await;
    next_event(&mut sub, "release.eval_bundle_attached").await;
    let r = release.clone();
    h.ledger
        .execute(release.prompt(), &*signer("lead"), "it", move |_| {
            Ok(Command::AcceptTradeoff {
                release: r.clone(),
                reason: "worth it".into(),
            })
        })
        .await
        .unwrap();
    let decided = next_event(&mut sub, "release.gate_decided").await;
    let pledger_core::Event::GateDecided(g_event) = decided.event else {
        unreachable!()
    };
    assert!(g_event.passed, "decided after the trade-off, so it passed");
    stop.send(true).unwrap();
    g.await.unwrap();
    assert_eq!(
        gate_decisions(&h.ledger.load(&prompt("triage")).await.unwrap()),
        1,
        "no failed decision before the trade-off"
    );
}

#[tokio::test]
async fn the_router_projects_the_ledger_and_reconciles_a_bogus_table() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let (_release, v1, _v2) = reviewed(&h).await;
    let store = RoutingStore::open(h.ledger.jetstream()).await.unwrap();
    let p: PromptName = prompt("triage");
    // Someone writes a table that routes to nothing and claims a sequence from the future.
    let (current, revision) = store
        .get(&p)
        .await
        .unwrap()
        .map(|(t, r)| (Some(t), r))
        .unwrap_or((None, 0));
    assert!(
        current.is_none(),
        "adopting through Ledger::execute alone writes no routing"
    );
    let bogus = pledger_core::routing::RoutingTable {
        prompt: p.clone(),
        stable: None,
        rollout: None,
        ledger_sequence: 999_999,
        artifacts: Default::default(),
    };
    store.publish(&bogus).await.unwrap();
    let _ = revision;
    let mut watch = store.store().watch(p.as_str()).await.unwrap();
    let (r, stop) = spawn(WorkerKind::Router, "a", &h.server.url(), dir.path()).await;
    // The router's start-up reconciliation rewrites the table from the ledger.
    let fixed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let entry = watch.next().await.unwrap().unwrap();
            let t: pledger_core::routing::RoutingTable =
                serde_json::from_slice(&entry.value).unwrap();
            if t.stable.is_some() {
                return t;
            }
        }
    })
    .await
    .expect("the router reconciled the table");
    assert_eq!(fixed.stable.as_ref().map(|v| v.to_string()), Some(v1));
    assert!(fixed.ledger_sequence < 999_999);
    stop.send(true).unwrap();
    r.await.unwrap();
}
