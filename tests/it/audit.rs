//! The auditor's toolkit through the binary: `audit verify` on a real ledger and on forged
//! copies of it served by another server, checkpoints written by the notary worker and kept
//! outside NATS, inclusion proofs, an offline export, and time travel checked against what a
//! service's resolver actually served.

use std::time::Duration;

use async_nats::jetstream;
use base64::Engine;
use pledger_core::merkle;
use pledger_core::names::{CHECKPOINT_STREAM, LEDGER_STREAM};
use pledger_e2e::*;
use pledger_infra::server::EphemeralServer;
use serde_json::Value;

use crate::fixture::*;

/// Every stored message of `stream` on the server at `url`, in order: (subject, bytes).
fn messages(url: &str, stream: &str) -> Vec<(String, Vec<u8>)> {
    block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client);
        let s = js.get_stream(stream).await.unwrap();
        let last = s.get_info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = s.direct_get(seq).await.unwrap();
            out.push((m.subject.to_string(), m.payload.to_vec()));
        }
        out
    })
}

/// A second server holding the streams as `pledger init` creates them, with `ledger` and
/// `checkpoints` copied in: what a server that rewrote history would serve.
fn forged_server(
    ledger: &[(String, Vec<u8>)],
    checkpoints: &[(String, Vec<u8>)],
) -> EphemeralServer {
    let server = EphemeralServer::start().unwrap();
    block_on(async {
        let client = pledger_infra::connect(&server.url()).await.unwrap();
        pledger_infra::Ledger::new(client.clone())
            .ensure()
            .await
            .unwrap();
        let js = jetstream::new(client);
        for (subject, bytes) in ledger.iter().chain(checkpoints) {
            js.publish(subject.clone(), bytes.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    server
}

/// `pledger audit verify --json` against `url` (with extra args); its exit code and report.
fn verify(w: &World, url: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json", "audit", "verify"];
    args.extend(extra);
    let run = w.run_via(url, "auditor", &args);
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr));
    (run.code, report)
}

fn findings(report: &Value) -> Vec<Value> {
    report["findings"].as_array().cloned().unwrap_or_default()
}

/// Waits until the notary's latest checkpoint covers the whole ledger; returns it.
fn checkpoint_of_everything(w: &World, notary: &WorkerProcess) -> Value {
    let found = w.try_wait_for(Duration::from_secs(30), || {
        let run = w.run("auditor", &["--json", "audit", "checkpoint"]);
        if run.code != 0 {
            return None;
        }
        let cp = run.json();
        let last = messages(&w.server.url(), LEDGER_STREAM).len() as u64;
        (cp["size"].as_u64() == Some(last)).then_some(cp)
    });
    found.unwrap_or_else(|| {
        panic!(
            "no checkpoint of the whole ledger within 30 s; the notary's log:\n{}",
            notary.log_text()
        )
    })
}

/// A ledger with two prompts: one rolling out, one proposed and reviewed; and the notary.
fn audited_world() -> (World, WorkerProcess, Prepared) {
    let w = World::new();
    w.enroll("auditor", &["auditor"]);
    w.enroll_workers();
    // A checkpoint every second while the ledger grows, so tests need not wait a minute.
    let notary = w.worker_with_args("notary", "0", &["--checkpoint-every", "1"]);
    let p = started(&w, "triage");
    reviewed(&w, "summarize");
    (w, notary, p)
}

#[test]
fn verify_is_clean_on_a_real_ledger_and_names_an_edited_row_on_a_forged_copy() {
    let (w, notary, p) = audited_world();
    let cp = checkpoint_of_everything(&w, &notary);
    assert_eq!(cp["signed_by"][0], "notary", "{cp}");
    let note = cp["note"].as_str().unwrap();
    assert!(note.starts_with("pledger/ledger/"), "{note}");
    assert!(note.contains("\n\n\u{2014} notary "), "{note}");

    let url = w.server.url();
    let (code, clean) = verify(&w, &url, &[]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["clean"], true);
    let s = &clean["summary"];
    assert!(s["checkpoints_verified"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["tree_size"], s["messages"]);
    assert_eq!(s["accepted"], s["messages"], "{s}");
    assert_eq!(s["prompts"], 2);
    let text = w.run("auditor", &["audit", "verify"]).ok().stdout;
    assert!(text.contains("result      clean"), "{text}");

    // The auditor keeps a checkpoint outside NATS; the ledger then grows and still extends it.
    let kept = w.files.path().join("kept-checkpoint");
    w.run(
        "auditor",
        &["audit", "checkpoint", "--out", &kept.display().to_string()],
    )
    .ok();
    let kept = kept.display().to_string();
    w.run(
        "maria",
        &["rollout", "pause", &p.release, "--reason", "lunch"],
    )
    .ok();
    let (code, grown) = verify(&w, &url, &["--trusted-checkpoint", &kept]);
    assert_eq!(code, 0, "{grown}");
    assert_eq!(grown["summary"]["trusted"]["extends"], true, "{grown}");

    // A server that serves the same ledger with one row edited in the middle.
    let ledger = messages(&url, LEDGER_STREAM);
    let checkpoints = messages(&url, CHECKPOINT_STREAM);
    let k = ledger
        .iter()
        .position(|(_, b)| String::from_utf8_lossy(b).contains("\"rationale\""))
        .expect("a proposal");
    let mut edited = ledger.clone();
    let text = String::from_utf8(edited[k].1.clone()).unwrap();
    edited[k].1 = text
        .replacen("\"rationale\":\"", "\"rationale\":\"(edited) ", 1)
        .into_bytes();
    let sequence = (k + 1) as u64;

    // Without the checkpoints: an integrity failure, named at its sequence.
    let bare = forged_server(&edited, &[]);
    let (code, report) = verify(&w, &bare.url(), &[]);
    assert_eq!(code, 7, "{report}");
    let f = findings(&report);
    let at_k: Vec<&Value> = f.iter().filter(|f| f["sequence"] == sequence).collect();
    assert_eq!(at_k.len(), 1, "{f:?}");
    assert_eq!(at_k[0]["class"], "integrity");
    assert_eq!(at_k[0]["check"], "signature", "{f:?}");
    assert!(at_k[0]["event_id"].is_string());
    assert_eq!(report["worst"], "integrity");

    // With its checkpoints copied too: the checkpoint no longer matches (trust, exit 9), and
    // the edited row is still named.
    let copied = forged_server(&edited, &checkpoints);
    let (code, report) = verify(&w, &copied.url(), &[]);
    assert_eq!(code, 9, "{report}");
    let f = findings(&report);
    assert!(f
        .iter()
        .any(|f| f["sequence"] == sequence && f["class"] == "integrity"));
    assert!(
        f.iter()
            .any(|f| f["check"] == "checkpoint"
                && f["reason"].as_str().unwrap().contains("rewritten")),
        "{f:?}"
    );

    // A truncated copy, checkpoints and all: only the checkpoint kept outside NATS tells.
    let short = ledger.len() - 3;
    let truncated = forged_server(&ledger[..short], &[]);
    let (code, report) = verify(&w, &truncated.url(), &[]);
    assert_eq!(
        code, 0,
        "a truncated tail alone looks like a shorter ledger: {report}"
    );
    let (code, report) = verify(&w, &truncated.url(), &["--trusted-checkpoint", &kept]);
    assert_eq!(code, 9, "{report}");
    assert!(
        findings(&report)
            .iter()
            .any(|f| f["check"] == "trusted-checkpoint"
                && f["reason"].as_str().unwrap().contains("truncated")),
        "{report}"
    );
}

#[test]
fn a_policy_violation_on_the_ledger_exits_8_and_a_forged_event_7() {
    let (w, _notary, p) = audited_world();
    // An event signed by an enrolled key whose identity lacks the role: rita (a reviewer and
    // nothing else) pausing the rollout, signed in-process with her own key and appended by
    // a raw client.
    w.enroll("rita", &["reviewer"]).ok();
    let log = w.json("auditor", &["audit", "log", "triage"]);
    let events = log["events"].as_array().unwrap();
    let last = events.last().unwrap();
    let subject = last["subject"].as_str().unwrap().to_string();
    let head = {
        let bytes = messages(&w.server.url(), LEDGER_STREAM)
            .into_iter()
            .rev()
            .find(|(s, _)| s == &subject)
            .unwrap()
            .1;
        pledger_core::verify::event_hash(&bytes)
    };
    let key = ssh_key::PrivateKey::read_openssh_file(&w.keys_dir().join("rita")).unwrap();
    let envelope: pledger_core::Envelope = serde_json::from_value(last["event"].clone()).unwrap();
    let mut forged = envelope.clone();
    forged.event_id = "01930000-0000-7000-8000-0000000000aa".into();
    forged.actor = pledger_core::Actor::parse("rita").unwrap();
    forged.event = pledger_core::Event::RolloutPaused(pledger_core::event::RolloutPaused {
        release: pledger_core::ReleaseId::parse(&p.release).unwrap(),
        stage: "internal".into(),
        reason: "not mine to pause".into(),
    });
    let sealed = pledger_core::verify::seal(forged, Some(head), &key).unwrap();
    block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        jetstream::new(client)
            .publish(subject.clone(), sealed.bytes.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let (code, report) = verify(&w, &w.server.url(), &[]);
    assert_eq!(code, 8, "{report}");
    let f = findings(&report);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["class"], "policy");
    assert_eq!(f[0]["check"], "role");
    assert_eq!(f[0]["event_id"], "01930000-0000-7000-8000-0000000000aa");
    // --prompt shows this prompt's findings and none of another's.
    let (code, scoped) = verify(&w, &w.server.url(), &["--prompt", "summarize"]);
    assert_eq!((code, findings(&scoped).len()), (0, 0), "{scoped}");

    // Garbage from a foreign client: integrity, and the exit code says so.
    block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        jetstream::new(client)
            .publish(subject.clone(), "not an event".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let (code, report) = verify(&w, &w.server.url(), &[]);
    assert_eq!(code, 7, "{report}");
    assert!(findings(&report).iter().any(|f| f["check"] == "decoding"));
}

#[test]
fn forged_checkpoints_are_trust_findings_and_the_notary_goes_on() {
    let (w, notary, p) = audited_world();
    let good = checkpoint_of_everything(&w, &notary);
    // Any client allowed on the subject can append to the checkpoint stream: garbage, and a
    // well-formed note of the right size and root signed by a key that is not the notary's.
    let note = good["note"].as_str().unwrap();
    let body = &note[..note.find("\n\n").unwrap() + 1];
    let impostor = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let forged = pledger_core::note::sign(body, "notary", &impostor).unwrap();
    block_on(async {
        let client = async_nats::connect(w.server.url()).await.unwrap();
        let js = jetstream::new(client);
        for payload in [b"not a note".to_vec(), forged.into_bytes()] {
            js.publish(pledger_core::names::CHECKPOINT_SUBJECT, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let (code, report) = verify(&w, &w.server.url(), &[]);
    assert_eq!(code, 9, "{report}");
    let f = findings(&report);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f
        .iter()
        .all(|f| f["class"] == "trust" && f["check"] == "checkpoint"));
    assert!(
        f[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a signed note"),
        "{f:?}"
    );
    // The auditor's tools still find the notary's own checkpoints, and the notary goes on.
    w.run(
        "maria",
        &["rollout", "pause", &p.release, "--reason", "lunch"],
    )
    .ok();
    let next = checkpoint_of_everything(&w, &notary);
    assert!(next["size"].as_u64() > good["size"].as_u64(), "{next}");
    assert_eq!(next["signed_by"][0], "notary");
}

#[test]
fn a_proof_and_an_export_verify_with_no_server() {
    let (w, notary, _p) = audited_world();
    let cp = checkpoint_of_everything(&w, &notary);
    let log = w.json("auditor", &["audit", "log", "triage"]);
    let gate = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["kind"] == "release.gate_decided")
        .expect("a gate decision")
        .clone();
    let id = gate["event"]["event_id"].as_str().unwrap();
    let proof = w.json("auditor", &["audit", "prove", id]);
    assert_eq!(proof["sequence"], gate["sequence"]);
    assert_eq!(proof["tree_size"], cp["size"]);
    // Checked here with the core's RFC 6962 verifier, from the printed values alone.
    let h = |v: &Value| merkle::hash_from_base64(v.as_str().unwrap()).unwrap();
    let path: Vec<merkle::Hash> = proof["proof"].as_array().unwrap().iter().map(h).collect();
    merkle::verify_inclusion(
        proof["leaf_index"].as_u64().unwrap(),
        proof["tree_size"].as_u64().unwrap(),
        &h(&proof["leaf_hash"]),
        &path,
        &h(&cp["root"]),
    )
    .expect("the inclusion proof verifies");

    let whole = w.files.path().join("whole.json").display().to_string();
    let one = w.files.path().join("triage.json").display().to_string();
    w.run("auditor", &["audit", "export", "--out", &whole]).ok();
    w.run(
        "auditor",
        &["audit", "export", "--prompt", "triage", "--out", &one],
    )
    .ok();
    let report = w
        .run("auditor", &["audit", "report", &proof_release(&gate)])
        .ok()
        .stdout;
    assert!(report.contains("change-management record"), "{report}");
    assert!(report.contains("signature verified"), "{report}");
    drop(notary);

    // No server at all: an unreachable URL.
    let offline = "nats://127.0.0.1:1";
    for file in [&whole, &one] {
        let run = w.run_via(
            offline,
            "auditor",
            &["--json", "audit", "verify", "--export", file],
        );
        assert_eq!(run.code, 0, "{file}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.json()["clean"], true);
    }
    let selection: Value = serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    assert_eq!(selection["complete"], false);
    assert!(selection["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| !r["subject"].as_str().unwrap().contains(".summarize.")));

    // One byte of one exported event changed: named, offline.
    let mut tampered = selection.clone();
    let records = tampered["records"].as_array_mut().unwrap();
    let r = records
        .iter_mut()
        .find(|r| r["subject"].as_str().unwrap().contains(".release."))
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(r["bytes"].as_str().unwrap()).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    r["bytes"] = Value::String(b64.encode(&bytes));
    let sequence = r["sequence"].clone();
    let path = w.files.path().join("tampered.json");
    std::fs::write(&path, tampered.to_string()).unwrap();
    let run = w.run_via(
        offline,
        "auditor",
        &[
            "--json",
            "audit",
            "verify",
            "--export",
            &path.display().to_string(),
        ],
    );
    assert_eq!(run.code, 7, "{}{}", run.stdout, run.stderr);
    let f = findings(&run.json());
    assert!(
        f.iter()
            .any(|f| f["sequence"] == sequence && f["check"] == "inclusion"),
        "{f:?}"
    );
}

fn proof_release(gate: &Value) -> String {
    gate["event"]["payload"]["release"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn replay_and_resolve_at_agree_with_what_a_resolver_served() {
    let w = World::new();
    w.enroll_workers();
    let _router = w.worker("router", "0");
    let (rt, resolver) = service_resolver(&w);
    let units: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    let contexts = [("internal", "eu"), ("customer", "eu"), ("customer", "us")];
    // (time, unit, user_kind, geo, version served)
    let mut served: Vec<(String, String, &str, &str, Option<String>)> = Vec::new();
    let record = |served: &mut Vec<_>, at_sequence_above: u64| {
        rt.block_on(resolver.wait_for("triage", |t| {
            t.is_some_and(|t| t.ledger_sequence >= at_sequence_above)
        }));
        let at = pledger_infra::ledger::now();
        for unit in &units {
            for (kind, geo) in contexts {
                let attrs = [("user_kind", kind), ("geo", geo)];
                let r = resolver.resolve(
                    "triage",
                    &pledger_client::RequestContext::new()
                        .unit(unit)
                        .attrs(&attrs),
                );
                served.push((
                    at.to_rfc3339(),
                    unit.clone(),
                    kind,
                    geo,
                    r.version().map(|v| v.to_string()),
                ));
            }
        }
        // The next step's events must be later than this moment.
        while pledger_infra::ledger::now() <= at {
            std::hint::spin_loop();
        }
    };
    let last_sequence = |w: &World| messages(&w.server.url(), LEDGER_STREAM).len() as u64;

    let p = started(&w, "triage");
    record(&mut served, last_sequence(&w));
    w.run("maria", &["rollout", "advance", &p.release]).ok();
    record(&mut served, last_sequence(&w));
    w.run(
        "maria",
        &["rollout", "freeze", &p.release, "--reason", "drill"],
    )
    .ok();
    record(&mut served, last_sequence(&w));
    w.run("maria", &["rollback", "triage", "--reason", "drill over"])
        .ok();
    record(&mut served, last_sequence(&w));

    let mut disagreements = Vec::new();
    let mut checked = 0;
    let mut candidates = 0;
    for (at, unit, kind, geo, version) in &served {
        let answer = w.json(
            "auditor",
            &[
                "audit",
                "resolve",
                "triage",
                "--at",
                at,
                "--unit",
                unit,
                "--attr",
                &format!("user_kind={kind}"),
                "--attr",
                &format!("geo={geo}"),
            ],
        );
        checked += 1;
        if answer["version"].as_str().map(str::to_string) != *version {
            disagreements.push(format!(
                "{at} {unit} {kind}/{geo}: served {version:?}, audit says {answer}"
            ));
        }
        if version.as_deref() == Some(p.v2.as_str()) {
            candidates += 1;
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert!(candidates > 0, "the candidate was served to someone");
    assert_eq!(checked, 4 * units.len() * contexts.len());

    // Replay at the freeze: frozen, traffic on the baseline, who froze it.
    let frozen_at = &served[2 * units.len() * contexts.len()].0;
    let replay = w.json("auditor", &["audit", "replay", "triage", "--at", frozen_at]);
    assert_eq!(replay["active_release"]["status"], "frozen", "{replay}");
    assert_eq!(replay["stable"], p.v1.as_str());
    assert!(
        replay["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "release.rollout_frozen" && s["actor"] == "maria"),
        "{replay}"
    );
    assert_eq!(replay["last_gate"]["passed"], true);
    // At a sequence: before the rollout started.
    let replay = w.json("auditor", &["audit", "replay", "triage", "--at", "3"]);
    assert!(replay["active_release"].is_null(), "{replay}");
    let run = w.run(
        "auditor",
        &["audit", "replay", "triage", "--at", "yesterday"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--at `yesterday`"), "{}", run.stderr);
}
