//! The wire envelope: JSON shape, round trips, and what a reader refuses.

use std::collections::BTreeSet;

use pledger_core::event::{Aggregate, CURRENT_SCHEMA_VERSION};
use pledger_core::{Envelope, Event, EventMeta};

use crate::support::*;

const ENVELOPE_KEYS: [&str; 12] = [
    "actor",
    "aggregate_id",
    "causation_id",
    "correlation_id",
    "event_id",
    "key_id",
    "kind",
    "occurred_at",
    "payload",
    "prev_hash",
    "schema_version",
    "signature",
];

fn sample() -> Envelope {
    let w = proposed().with(
        PRODUCT,
        approve(1, pledger_core::event::ReviewLayer::Product),
    );
    w.log.last().unwrap().clone()
}

fn wire(e: &Envelope) -> serde_json::Value {
    serde_json::to_value(e).unwrap()
}

/// Parses a wire value and returns the error texts (it must be refused): as a value, and as
/// stored bytes by `Envelope::from_json` (its one-pass decoding and its slow path).
#[track_caller]
fn refused(value: serde_json::Value) -> [String; 2] {
    let as_value = match serde_json::from_value::<Envelope>(value.clone()) {
        Ok(e) => panic!("accepted {value}: {e:?}"),
        Err(e) => e.to_string(),
    };
    match Envelope::from_json(&serde_json::to_vec(&value).unwrap()) {
        Ok(e) => panic!("from_json accepted {value}: {e:?}"),
        Err(e) => [as_value, e],
    }
}

#[test]
fn every_kind_is_on_the_tour() {
    let w = every_kind();
    let seen: BTreeSet<&str> = w.log.iter().map(|e| e.kind()).collect();
    let all: BTreeSet<&str> = Event::KINDS.iter().copied().collect();
    assert_eq!(seen, all);
    assert_eq!(Event::KINDS.len(), all.len(), "kinds are unique");
}

#[test]
fn wire_json_round_trips_for_every_kind() {
    for e in &every_kind().log {
        let text = serde_json::to_string(e).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, e, "{}", e.kind());
        let fast = Envelope::from_json(text.as_bytes()).unwrap();
        assert_eq!(&fast, e, "from_json of {}", e.kind());
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            text,
            "stable bytes for {}",
            e.kind()
        );
    }
}

#[test]
fn wire_json_shape() {
    let e = sample();
    let v = wire(&e);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ENVELOPE_KEYS);
    assert_eq!(v["kind"], "release.review_submitted");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["aggregate_id"], "release:support-triage-r1");
    assert_eq!(v["actor"], PRODUCT);
    assert_eq!(
        v["occurred_at"],
        serde_json::json!(e.occurred_at.to_rfc3339())
    );
    assert!(v["occurred_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["prev_hash"], serde_json::Value::Null);
    let payload = v["payload"].as_object().unwrap();
    assert!(!payload.contains_key("kind"));
    assert_eq!(payload["release"], "support-triage-r1");
    assert_eq!(payload["layer"], "product");
    assert_eq!(payload["verdict"], "approve");
    assert_eq!(payload["candidate"], serde_json::json!(vid(2).as_str()));
}

#[test]
fn envelope_new_fills_schema_version_and_aggregate() {
    for e in &every_kind().log {
        assert_eq!(e.schema_version, e.event.schema_version());
        assert_eq!(e.schema_version, CURRENT_SCHEMA_VERSION);
        assert_eq!(e.aggregate_id, e.event.aggregate().id());
        let (family, _) = e.kind().split_once('.').unwrap();
        match e.event.aggregate() {
            Aggregate::Fleet(topic) => {
                assert_eq!(family, "fleet", "{}", e.kind());
                assert_eq!(e.event.aggregate().prompt(), None);
                assert!(e.aggregate_id.starts_with("fleet:"), "{topic:?}");
                continue;
            }
            _ => assert_eq!(e.event.aggregate().prompt(), Some(&prompt())),
        }
        match e.event.aggregate() {
            Aggregate::Fleet(_) => unreachable!(),
            Aggregate::Prompt(p) => {
                assert_eq!(family, "prompt", "{}", e.kind());
                assert_eq!(e.aggregate_id, format!("prompt:{p}"));
            }
            Aggregate::Release(r) => {
                assert_eq!(family, "release", "{}", e.kind());
                assert_eq!(e.aggregate_id, format!("release:{r}"));
            }
        }
        assert!(e.prev_hash.is_none() && e.signature.is_none());
    }
}

#[test]
fn audit_fields_survive_the_round_trip() {
    let mut e = sample();
    e.prev_hash = Some("ab".repeat(32));
    e.signature = Some("sig:xyz".into());
    e.causation_id = None;
    let back: Envelope = serde_json::from_value(wire(&e)).unwrap();
    assert_eq!(back, e);
    // Optional envelope fields may be left out entirely.
    let mut v = wire(&sample());
    for k in ["causation_id", "prev_hash", "signature"] {
        v.as_object_mut().unwrap().remove(k);
    }
    let back: Envelope = serde_json::from_value(v).unwrap();
    assert_eq!(
        (back.causation_id, back.prev_hash, back.signature),
        (None, None, None)
    );
}

#[test]
fn readers_refuse_what_they_cannot_read() {
    // (what, edit of the wire JSON, words of the error)
    type Edit = fn(&mut serde_json::Value);
    #[rustfmt::skip]
    let table: Vec<(&str, Edit, &[&str])> = vec![
        ("unknown kind", |v| v["kind"] = "release.teleported".into(), &["unknown event kind", "release.teleported"]),
        ("kind of another shape", |v| v["kind"] = "release.completed".into(), &["payload of `release.completed`"]),
        ("future schema_version", |v| v["schema_version"] = 2.into(), &["schema_version 2", "release.review_submitted", "up to 1"]),
        ("far-future schema_version", |v| v["schema_version"] = 4_000_000.into(), &["schema_version 4000000"]),
        ("schema_version 0", |v| v["schema_version"] = 0.into(), &["schema_version 0"]),
        ("negative schema_version", |v| v["schema_version"] = (-1).into(), &["-1", "u32"]),
        ("aggregate of another release", |v| v["aggregate_id"] = "release:support-triage-r2".into(), &["aggregate_id `release:support-triage-r2`", "release:support-triage-r1"]),
        ("prompt aggregate for a release event", |v| v["aggregate_id"] = "prompt:support-triage".into(), &["does not match"]),
        ("aggregate of another prompt", |v| v["payload"]["release"] = "billing-r1".into(), &["release:billing-r1"]),
        ("unknown envelope field", |v| v["trace"] = "x".into(), &["trace"]),
        ("missing envelope field", |v| { v.as_object_mut().unwrap().remove("correlation_id"); }, &["correlation_id"]),
        ("missing kind", |v| { v.as_object_mut().unwrap().remove("kind"); }, &["kind"]),
        ("missing payload field", |v| { v["payload"].as_object_mut().unwrap().remove("reviewer"); }, &["release.review_submitted", "reviewer"]),
        ("bad payload value", |v| v["payload"]["verdict"] = "maybe".into(), &["maybe"]),
        ("bad timestamp", |v| v["occurred_at"] = "yesterday".into(), &["yesterday"]),
        ("bad actor", |v| v["actor"] = "".into(), &["actor"]),
        ("bad release id", |v| v["payload"]["release"] = "r1".into(), &["r1"]),
    ];
    for (what, edit, words) in table {
        let mut v = wire(&sample());
        edit(&mut v);
        for err in refused(v) {
            for w in words {
                assert!(err.contains(w), "{what}: `{w}` not in {err}");
            }
        }
    }
}

#[test]
fn prompt_events_have_prompt_aggregates() {
    let mut w = World::new();
    w.run(OWNER, register());
    let e = &w.log[0];
    assert_eq!(e.aggregate_id, "prompt:support-triage");
    let mut v = wire(e);
    v["aggregate_id"] = "prompt:billing".into();
    assert!(refused(v)
        .iter()
        .all(|e| e.contains("prompt:support-triage")));
    // Metadata comes from EventMeta as given.
    let meta = EventMeta {
        event_id: "0190a6c4-0000-7000-8000-000000000001".into(),
        occurred_at: ts("2026-11-24T09:30:00.123Z"),
        actor: actor("ops bot"),
        causation_id: Some("cause".into()),
        correlation_id: "corr".into(),
    };
    let e = Envelope::new(e.event.clone(), meta.clone());
    assert_eq!(
        (
            e.event_id.as_str(),
            e.occurred_at,
            &e.actor,
            e.causation_id.as_deref(),
            e.correlation_id.as_str()
        ),
        (
            meta.event_id.as_str(),
            meta.occurred_at,
            &meta.actor,
            Some("cause"),
            "corr"
        )
    );
    assert_eq!(wire(&e)["occurred_at"], "2026-11-24T09:30:00.123Z");
}
