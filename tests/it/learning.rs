//! The learning loop: production feedback becomes redacted, de-duplicated regression cases that
//! the next release's eval bundle must cover.

use std::time::Duration;

use pledger_e2e::*;
use serde_json::Value;

use crate::fixture::*;

fn publish(w: &World, subject: &str, payload: Value) {
    w.publish_raw(subject, serde_json::to_vec(&payload).unwrap());
}

fn report(p: &Prepared, n: u32, tag: &str, example: &str) -> Value {
    serde_json::json!({
        "prompt": "triage", "version": p.v1, "request_id": format!("r{n}"),
        "fallback": false, "escalated": false, "manually_corrected": true, "refusal": tag == "unexpected_refusal",
        "latency_ms": 300.0, "tokens_in": 100, "tokens_out": 40,
        "feedback": { "tag": tag, "example": example }
    })
}

fn cases(w: &World) -> Vec<Value> {
    w.json("reviewer", &["regressions", "list", "triage"])["cases"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn production_feedback_becomes_redacted_deduplicated_cases_the_gate_requires() {
    let w = World::new();
    let _collector = w.worker("feedback", "a");
    let p = reviewed(&w, "triage");
    // Five reports of one failure (different people, numbers and spacing), two of another.
    let refusals = [
        "Refused to reset the password for jane.doe@example.com, call +1 415 555 0100",
        "refused to reset the password for  bob.smith@example.org, call (415) 555-0199",
        "Refused to reset the password for a@b.io, call +44 20 7946 0958",
        "Refused to reset the password for x.y@example.com, call +1 415 555 0101.",
        "REFUSED to reset the password for q@example.net, call +1 212 555 0123",
    ];
    let mut batch: Vec<Value> = refusals
        .iter()
        .enumerate()
        .map(|(i, e)| report(&p, i as u32, "unexpected_refusal", e))
        .collect();
    batch.push(report(
        &p,
        10,
        "hallucinated_field",
        "Invented card_number 4111 1111 1111 1111 in the reply",
    ));
    batch.push(report(
        &p,
        11,
        "hallucinated_field",
        "Invented card_number 5555-5555-5555-4444 in the reply",
    ));
    publish(&w, &outcomes_of("triage"), Value::Array(batch));

    let found = w.wait_for("two cases", Duration::from_secs(30), || {
        let c = cases(&w);
        (c.len() == 2 && c.iter().map(|c| c["count"].as_u64().unwrap()).sum::<u64>() == 7)
            .then_some(c)
    });
    let mut counts: Vec<u64> = found.iter().map(|c| c["count"].as_u64().unwrap()).collect();
    counts.sort();
    assert_eq!(counts, [2, 5], "de-duplicated by fingerprint, counted");

    // Three more reports of the first failure raise its count; they do not add a case.
    let more: Vec<Value> = (20..23)
        .map(|n| {
            report(
                &p,
                n,
                "unexpected_refusal",
                "Refused to reset the password for z@z.com, call +1 650 555 0000",
            )
        })
        .collect();
    publish(&w, &outcomes_of("triage"), Value::Array(more));
    // Counted live at once (recorded on the ledger within the hour: the day test below).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    w.wait_for("the repeats to be counted", Duration::from_secs(30), || {
        let c = cases(&w);
        let counters = collector_counters(&rt, &w, "triage")?;
        let live = |case: &Value| {
            let fingerprint = case["fingerprint"].as_str().unwrap_or_default();
            case["count"].as_u64().unwrap_or(0)
                + counters["unrecorded"][fingerprint].as_u64().unwrap_or(0)
        };
        (c.len() == 2 && c.iter().any(|c| live(c) == 8)).then_some(())
    });

    // Nothing personal reached the ledger.
    let log = w
        .run("auditor", &["--json", "audit", "log", "triage"])
        .ok()
        .stdout;
    for secret in [
        // Whole values: fragments like `555` also occur in random ids and digests.
        "jane.doe@example.com",
        "bob.smith@example.org",
        "a@b.io",
        "415 555 0100",
        "(415) 555-0199",
        "20 7946 0958",
        "650 555 0000",
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
    ] {
        assert!(!log.contains(secret), "`{secret}` reached the ledger");
    }
    assert!(log.contains("prompt.regression_case_collected"));

    // A reviewer files one by hand; it is redacted the same way.
    let file = w.file("example.txt", "Called the wrong tool twice; customer sk-abcdefghijklmnopqrstuvwxyz123456 was billed twice");
    let added = w.json(
        "reviewer",
        &[
            "regressions",
            "add",
            "triage",
            "--tag",
            "wrong_tool_sequence",
            "--example-file",
            &file,
        ],
    );
    assert!(
        !added["example"].as_str().unwrap().contains("sk-abc"),
        "{added}"
    );

    // Export: JSONL, one open case a line.
    let export = w
        .run("reviewer", &["regressions", "export", "triage"])
        .ok()
        .stdout;
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let ids: Vec<String> = lines
        .iter()
        .map(|l| l["case_id"].as_str().unwrap().to_string())
        .collect();

    // A bundle that omits a case fails the gate, naming it; one that covers them all passes.
    let missing_one = bundle_covering(&p, &ids[..2]);
    w.run(
        "ci",
        &[
            "release",
            "attach-eval",
            &p.release,
            &w.file("b1.json", &missing_one),
        ],
    )
    .ok();
    let gate = w.run("ci", &["--json", "release", "gate", &p.release]);
    assert_eq!(gate.code, 6, "{gate:?}");
    let check = gate.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "regressions.coverage")
        .unwrap()
        .clone();
    assert!(
        check["detail"].as_str().unwrap().contains(&ids[2]),
        "{check}"
    );
    w.run(
        "ci",
        &[
            "release",
            "attach-eval",
            &p.release,
            &w.file("b2.json", &bundle_covering(&p, &ids)),
        ],
    )
    .ok();
    assert_eq!(
        w.json("ci", &["release", "gate", &p.release])["passed"],
        true
    );

    // A case can be retired; it is no longer exported.
    w.run(
        "reviewer",
        &[
            "regressions",
            "close",
            &ids[0],
            "--reason",
            "duplicate of a known issue",
        ],
    )
    .ok();
    let export = w
        .run("reviewer", &["regressions", "export", "triage"])
        .ok()
        .stdout;
    assert_eq!(export.lines().count(), 2);
    w.run(
        "reviewer",
        &[
            "regressions",
            "close",
            "triage-rc-000000000000",
            "--reason",
            "x",
        ],
    )
    .rejected("unknown-regression-case");
    w.assert_audit_clean();
}

fn bundle_covering(p: &Prepared, ids: &[String]) -> String {
    let mut b: Value = serde_json::from_str(&bundle_json(&p.v2, &p.v1, 0.0)).unwrap();
    b["covers_regressions"] = serde_json::json!(ids);
    b.to_string()
}

#[test]
fn a_flood_of_new_failures_is_rate_limited_and_says_so() {
    let w = World::new();
    let _collector = w.worker("feedback", "a");
    let p = reviewed(&w, "triage");
    // 25 different failures in one minute: 20 become cases, 5 are counted as refused.
    let flood: Vec<Value> = (0..25)
        .map(|n| {
            report(
                &p,
                n,
                "excessive_verbosity",
                &format!(
                    "answer {} words too long about topic {}",
                    n,
                    ["alpha", "beta", "gamma", "delta", "epsilon"][n as usize % 5]
                        .repeat(n as usize / 5 + 1)
                ),
            )
        })
        .collect();
    publish(&w, &outcomes_of("triage"), Value::Array(flood));
    let listed = w.wait_for("the collector's counters", Duration::from_secs(30), || {
        let l = w.json("reviewer", &["regressions", "list", "triage"]);
        // The counters are published as the collector decides; the last case's append may
        // still be on its way, so wait for the ledger to list as many as it recorded.
        (l["collector"]["reports"] == 25
            && l["collector"]["rate_limited"].as_u64().unwrap_or(0) > 0
            && l["cases"].as_array().map(Vec::len)
                == l["collector"]["cases_recorded"]
                    .as_u64()
                    .map(|n| n as usize))
        .then_some(l)
    });
    assert_eq!(listed["cases"].as_array().unwrap().len(), 20, "{listed}");
    assert_eq!(listed["collector"]["cases_recorded"], 20);
    assert_eq!(listed["collector"]["rate_limited"], 5);
}

/// The feedback collector's published counters of `prompt` (the status bucket), read in-process.
fn collector_counters(rt: &tokio::runtime::Runtime, w: &World, prompt: &str) -> Option<Value> {
    rt.block_on(async {
        let client = async_nats::connect(w.server.url()).await.ok()?;
        let kv = async_nats::jetstream::new(client)
            .get_key_value(pledger_infra::ledger::CANARY_STATUS_BUCKET)
            .await
            .ok()?;
        let prompt = pledger_core::PromptName::parse(prompt).ok()?;
        let bytes = kv
            .get(pledger_infra::worker::feedback::status_key(&prompt))
            .await
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    })
}

#[test]
fn a_day_of_one_failure_every_second_adds_at_most_24_events_and_counts_exactly() {
    let w = World::with_clock("2026-11-27T00:00:00.000Z");
    let _collector = w.worker("feedback", "a");
    let p = reviewed(&w, "triage");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async {
        async_nats::jetstream::new(async_nats::connect(w.server.url()).await.unwrap())
    });
    // A day on the test clock in half hours: at each, the next 1,800 reports of one failure
    // (one a second), then the clock moves on once the collector has counted them.
    const STEP: u32 = 1_800;
    for step in 0..48u32 {
        let minutes = step * 30;
        w.set_clock(&format!(
            "2026-11-27T{:02}:{:02}:00.000Z",
            minutes / 60,
            minutes % 60
        ));
        for part in 0..(STEP / 200) {
            let batch: Vec<Value> = (0..200)
                .map(|i| {
                    report(
                        &p,
                        step * STEP + part * 200 + i,
                        "unexpected_refusal",
                        "Refused to reset the password for jane.doe@example.com",
                    )
                })
                .collect();
            let bytes = serde_json::to_vec(&Value::Array(batch)).unwrap();
            rt.block_on(async {
                js.publish(outcomes_of("triage"), bytes.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
            });
        }
        let want = u64::from((step + 1) * STEP);
        w.wait_for(
            "the collector to count the reports",
            Duration::from_secs(30),
            || {
                let c = collector_counters(&rt, &w, "triage")?;
                (c["reports"].as_u64() == Some(want)).then_some(())
            },
        );
    }
    // Live: what the ledger holds plus what the collector holds is every report.
    let live = |c: &Value| {
        let recorded = cases(&w)[0]["count"].as_u64().unwrap();
        let unrecorded: u64 = c["unrecorded"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        recorded + unrecorded
    };
    let counters = collector_counters(&rt, &w, "triage").unwrap();
    assert_eq!(live(&counters), 86_400, "{counters}");

    // The next hour records the rest: the case's count on the ledger is exact.
    w.set_clock("2026-11-28T00:00:01.000Z");
    w.wait_for(
        "the last hour on the ledger",
        Duration::from_secs(30),
        || {
            let c = cases(&w);
            (c.len() == 1 && c[0]["count"] == 86_400).then_some(())
        },
    );
    let events = w.json("auditor", &["audit", "log", "triage"])["events"]
        .as_array()
        .unwrap()
        .clone();
    let case_events: Vec<&Value> = events
        .iter()
        .filter(|e| {
            let kind = e["event"]["kind"].as_str().unwrap();
            kind == "prompt.regression_case_collected" || kind == "prompt.regression_case_recurred"
        })
        .collect();
    let on_the_day = case_events
        .iter()
        .filter(|e| e["event"]["occurred_at"].as_str().unwrap() < "2026-11-28")
        .count();
    assert!(on_the_day <= 24, "{on_the_day} case events on one day");
    assert_eq!(
        on_the_day, 24,
        "the first report, then one event per new hour"
    );
    assert_eq!(case_events.len(), 25, "and the next day's first hour");
    let counters = collector_counters(&rt, &w, "triage").unwrap();
    assert_eq!(counters["reports"], 86_400);
    assert!(
        counters["unrecorded"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{counters}"
    );
}
