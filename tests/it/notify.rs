//! Notifications end to end: webhooks configured on the ledger, delivered by two notifier
//! replicas to a local receiver that fails on purpose.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::Mac;
use pledger_e2e::*;
use serde_json::Value;

use crate::fixture::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: String,
    /// The status it answered.
    status: u16,
}

/// A webhook receiver on a free local port: it answers 500 to the first `failures` attempts
/// of each idempotency key, then 200.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(failures: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
                let length: usize = headers
                    .get("content-length")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut got = log.lock().unwrap();
                let key = headers.get("idempotency-key").cloned().unwrap_or_default();
                let before = got
                    .iter()
                    .filter(|r| r.headers.get("idempotency-key") == Some(&key))
                    .count();
                let status = if before < failures { 500 } else { 200 };
                got.push(Received {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                    status,
                });
                drop(got);
                let reason = if status == 200 {
                    "OK"
                } else {
                    "Internal Server Error"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/pledger", self.port)
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

const SECRET: &str = "a shared secret";

#[test]
fn a_freeze_and_a_rollback_reach_a_webhook_that_fails_twice_once_across_two_replicas() {
    let w = World::new();
    let hook = Receiver::start(2);
    // The URL and the secret stay off the ledger: the notifiers read them from their
    // environment.
    w.run(
        "admin",
        &[
            "notify",
            "add",
            "oncall",
            "--url",
            "env:PLEDGER_TEST_HOOK_URL",
            "--events",
            "frozen,rolled_back",
            "--secret-env",
            "PLEDGER_TEST_HOOK_SECRET",
        ],
    )
    .ok();
    // Garbage on the webhooks' subject is reported and changes nothing.
    w.publish_raw(
        pledger_core::names::NOTIFICATIONS_SUBJECT,
        br#"{"kind":"fleet.notifications_set","payload":{"webhooks":[]}}"#.to_vec(),
    );
    let listed = w.json("reviewer", &["notify", "list"]);
    assert_eq!(listed["ignored"], 1);
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(listed["webhooks"][0]["webhook"]["id"], "oncall");
    assert_eq!(
        listed["webhooks"][0]["webhook"]["url"],
        "env:PLEDGER_TEST_HOOK_URL"
    );
    // Only an admin sets webhooks, and a bad one is refused naming its field.
    w.enroll("rita", &["reviewer", "release-manager"]).ok();
    w.run("rita", &["notify", "add", "mine", "--url", &hook.url()])
        .rejected("not-permitted");
    let bad = w.run(
        "admin",
        &["notify", "add", "Bad Name", "--url", "https://x.example"],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("id"), "{}", bad.stderr);

    let url = hook.url();
    let env = [
        ("PLEDGER_TEST_HOOK_URL", url.as_str()),
        ("PLEDGER_TEST_HOOK_SECRET", SECRET),
    ];
    let a = w.worker_with_env("notifier", "a", &env);
    let b = w.worker_with_env("notifier", "b", &env);

    let p = started(&w, "triage");
    // A forged freeze, published by hand without a signature: nobody hears of it.
    let release = pledger_core::ReleaseId::parse(&p.release).unwrap();
    let forged = serde_json::json!({
        "event_id": "forged-freeze-1", "kind": "release.rollout_frozen", "schema_version": 1,
        "aggregate_id": format!("release:{}", p.release), "occurred_at": "2026-11-27T03:00:00.000Z",
        "actor": "canary-monitor", "correlation_id": "forged",
        "payload": { "release": p.release, "stage": "internal", "reason": "forged" }
    });
    w.publish_raw(
        &pledger_core::names::subject_for(&pledger_core::event::Aggregate::Release(release)),
        serde_json::to_vec(&forged).unwrap(),
    );
    w.run(
        "olga",
        &[
            "rollout",
            "freeze",
            &p.release,
            "--reason",
            "escalations up",
        ],
    )
    .ok();
    w.run("olga", &["rollback", "triage", "--reason", "drill over"])
        .ok();

    // Each notification: two failures, then delivered on the third attempt.
    let delivered = w.wait_for(
        "both notifications delivered",
        Duration::from_secs(60),
        || {
            let got = hook.requests();
            (got.iter().filter(|r| r.status == 200).count() == 2).then_some(got)
        },
    );
    let mut by_key: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for r in delivered {
        by_key
            .entry(r.headers["idempotency-key"].clone())
            .or_default()
            .push(r);
    }
    assert_eq!(by_key.len(), 2, "{:?}", by_key.keys());
    let mut seen = Vec::new();
    for (key, attempts) in &by_key {
        let statuses: Vec<u16> = attempts.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [500, 500, 200], "{key}");
        let numbers: Vec<&str> = attempts
            .iter()
            .map(|r| r.headers["x-pledger-delivery-attempt"].as_str())
            .collect();
        assert_eq!(numbers, ["1", "2", "3"], "{key}");
        let body: Value = serde_json::from_str(&attempts[2].body).unwrap();
        assert!(attempts.iter().all(|r| r.body == attempts[2].body));
        let event_id = body["event_id"].as_str().unwrap();
        assert_eq!(key, &format!("{event_id}/oncall"));
        assert_eq!(body["release"], p.release.as_str());
        assert_eq!(body["ledger_event"]["event_id"], event_id);
        assert_ne!(event_id, "forged-freeze-1");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(attempts[2].body.as_bytes());
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            attempts[2].headers["x-pledger-signature"],
            format!("sha256={expected}")
        );
        seen.push(body["event"].as_str().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["frozen", "rolled_back"]);

    // One replica sent each; the other dropped it on seeing the claim delivered.
    w.wait_for(
        "the other replica dropped each",
        Duration::from_secs(30),
        || {
            let logs = [a.log_text(), b.log_text()];
            let done = by_key.keys().all(|key| {
                let event = key.split('/').next().unwrap();
                let sent = logs
                    .iter()
                    .filter(|l| {
                        l.lines()
                            .any(|x| x.contains("notification delivered") && x.contains(event))
                    })
                    .count();
                let dropped = logs
                    .iter()
                    .filter(|l| {
                        l.lines().any(|x| {
                            x.contains("not sent here: delivered by replica") && x.contains(event)
                        })
                    })
                    .count();
                sent == 1 && dropped == 1
            });
            done.then_some(())
        },
    );
    assert_eq!(hook.requests().len(), 6, "no attempt after the deliveries");
    // The gate that passed and the rollout's start were not asked for: not sent.
    assert!(hook
        .requests()
        .iter()
        .all(|r| !r.body.contains("\"event\":\"gate_failed\"")));

    // Removed: later events reach nobody.
    w.run("admin", &["notify", "remove", "oncall"]).ok();
    assert_eq!(
        w.json("reviewer", &["notify", "list"])["webhooks"],
        serde_json::json!([])
    );
}
