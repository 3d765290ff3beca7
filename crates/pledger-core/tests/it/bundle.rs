//! Eval bundles: the contract with CI pipelines, validation naming fields, digests.

use pledger_core::artifact::json_digest;
use pledger_core::bundle::{HARD_NEGATIVE_CATEGORIES, MAX_BUNDLE_BYTES};
use pledger_core::{EvalBundle, FileError, FileFormat};

use crate::support::*;

fn bundle_json() -> serde_json::Value {
    serde_json::to_value(bundle(&vid(2), &vid(1))).unwrap()
}

/// The test bundle's JSON with one pointer set (or removed).
fn with(pointer: &str, value: Option<serde_json::Value>) -> String {
    let mut doc = bundle_json();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut doc
    } else {
        doc.pointer_mut(parent)
            .unwrap_or_else(|| panic!("{parent}"))
    };
    match (target, value) {
        (serde_json::Value::Object(map), Some(v)) => {
            map.insert(key.into(), v);
        }
        (serde_json::Value::Object(map), None) => {
            map.remove(key);
        }
        (serde_json::Value::Array(items), Some(v)) => items[key.parse::<usize>().unwrap()] = v,
        (other, _) => panic!("{other}"),
    }
    doc.to_string()
}

#[test]
fn a_bundle_written_by_a_pipeline_parses() {
    let text = format!(
        r#"
candidate = "{}"
baseline = "{}"
suite = "support-regression"
expected_changes = ["billing tickets go to billing"]

[[segments]]
name = "billing"
cases = 120
candidate_pass_rate = 0.93
baseline_pass_rate = 0.90

[hard_negatives]
ambiguous = {{ cases = 20, candidate_pass_rate = 0.8, baseline_pass_rate = 0.8 }}
adversarial = {{ cases = 20, candidate_pass_rate = 0.8, baseline_pass_rate = 0.8 }}
long_context = {{ cases = 20, candidate_pass_rate = 0.8, baseline_pass_rate = 0.8 }}
partial_tool_failure = {{ cases = 20, candidate_pass_rate = 0.8, baseline_pass_rate = 0.8 }}

[[regressions]]
case = "T-17"
segment = "billing"
detail = "routed to sales"

[latency_ms]
candidate_p50 = 410
baseline_p50 = 400
candidate_p95 = 1000.5
baseline_p95 = 990

[cost_per_request_usd]
candidate = 0.011
baseline = 0.010
"#,
        vid(2),
        vid(1)
    );
    let b = EvalBundle::from_text(&text, FileFormat::Toml).unwrap();
    assert_eq!(b.candidate, vid(2));
    assert_eq!(b.segments[0].cases, 120);
    assert_eq!(b.regressions[0].case, "T-17");
    assert_eq!(b.latency_ms.candidate_p50, 410.0);
    assert!(b.tokens_per_request.is_none());
    assert_eq!(b.hard_negatives.len(), HARD_NEGATIVE_CATEGORIES.len());
    // And back through JSON.
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(EvalBundle::from_text(&json, FileFormat::Json).unwrap(), b);
}

#[test]
fn invalid_values_name_their_field() {
    use serde_json::json as j;
    #[rustfmt::skip]
    let table: Vec<(&str, Option<serde_json::Value>, &str)> = vec![
        ("/suite", Some(j!(" ")), "suite"),
        ("/segments", Some(j!([])), "segments"),
        ("/segments/0/name", Some(j!("")), "segments[0].name"),
        ("/segments/0/candidate_pass_rate", Some(j!(1.01)), "segments[0].candidate_pass_rate"),
        ("/segments/0/baseline_pass_rate", Some(j!(-0.01)), "segments[0].baseline_pass_rate"),
        ("/hard_negatives/adversarial/candidate_pass_rate", Some(j!(2)), "hard_negatives.adversarial.candidate_pass_rate"),
        ("/hard_negatives/ambiguous/baseline_pass_rate", Some(j!(-1)), "hard_negatives.ambiguous.baseline_pass_rate"),
        ("/latency_ms/candidate_p50", Some(j!(-1)), "latency_ms.candidate_p50"),
        ("/latency_ms/baseline_p95", Some(j!(-0.5)), "latency_ms.baseline_p95"),
        ("/tokens_per_request/candidate", Some(j!(-3)), "tokens_per_request.candidate"),
        ("/cost_per_request_usd/baseline", Some(j!(-0.01)), "cost_per_request_usd.baseline"),
    ];
    for (pointer, value, field) in table {
        let text = with(pointer, value);
        let err = EvalBundle::from_text(&text, FileFormat::Json).unwrap_err();
        let FileError::Invalid { kind, source } = &err else {
            panic!("{pointer}: {err:?}")
        };
        assert_eq!(*kind, "eval bundle");
        assert_eq!(source.field, field, "{pointer}");
    }
    // A duplicate segment names the second one.
    let b = BundleBuilder::new(&vid(2), &vid(1)).build();
    let mut dup = b.clone();
    dup.segments.push(dup.segments[0].clone());
    let err = dup.validate().unwrap_err();
    assert_eq!(err.field, "segments[1].name");
    assert!(err.message.contains("general"));
    // Neither tokens nor cost.
    let err = BundleBuilder::new(&vid(2), &vid(1))
        .no_tokens()
        .no_cost()
        .build()
        .validate()
        .unwrap_err();
    assert_eq!(err.field, "tokens_per_request");
    assert!(err.message.contains("cost_per_request_usd"));
    // One of them is enough.
    BundleBuilder::new(&vid(2), &vid(1))
        .no_tokens()
        .build()
        .validate()
        .unwrap();
    BundleBuilder::new(&vid(2), &vid(1))
        .no_cost()
        .build()
        .validate()
        .unwrap();
}

#[test]
fn syntax_errors_name_the_field() {
    #[rustfmt::skip]
    let table: Vec<(String, &str)> = vec![
        (with("/latency", Some(serde_json::json!({}))), "latency"),
        (with("/segments/0/pass_rate", Some(serde_json::json!(1))), "pass_rate"),
        (with("/suite", None), "suite"),
        (with("/latency_ms", None), "latency_ms"),
        (with("/hard_negatives", None), "hard_negatives"),
        (with("/candidate", Some(serde_json::json!("v2"))), "v2"),
        (with("/baseline", Some(serde_json::json!("sha256:ABC"))), "sha256:ABC"),
    ];
    for (text, word) in table {
        let err = EvalBundle::from_text(&text, FileFormat::Json).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::Syntax {
                    kind: "eval bundle",
                    format: FileFormat::Json,
                    ..
                }
            ),
            "{word}: {err:?}"
        );
        assert!(err.to_string().contains(word), "`{word}` not in {err}");
    }
    let big = " ".repeat(MAX_BUNDLE_BYTES + 1);
    assert!(matches!(
        EvalBundle::from_text(&big, FileFormat::Json),
        Err(FileError::TooLarge {
            kind: "eval bundle",
            ..
        })
    ));
}

#[test]
fn bundle_digest_ignores_format_and_key_order() {
    let b = bundle(&vid(2), &vid(1));
    let pretty = serde_json::to_string_pretty(&b).unwrap();
    let reordered = {
        // Reverse every object's key order in the text by going through a Vec of pairs.
        fn rev(v: serde_json::Value) -> String {
            match v {
                serde_json::Value::Object(map) => {
                    let parts: Vec<String> = map
                        .into_iter()
                        .rev()
                        .map(|(k, v)| format!("{}:{}", serde_json::Value::String(k), rev(v)))
                        .collect();
                    format!("{{{}}}", parts.join(","))
                }
                serde_json::Value::Array(items) => format!(
                    "[{}]",
                    items.into_iter().map(rev).collect::<Vec<_>>().join(",")
                ),
                other => other.to_string(),
            }
        }
        rev(serde_json::to_value(&b).unwrap())
    };
    assert_ne!(pretty, reordered);
    let d = json_digest(&b);
    assert_eq!(d.len(), 64);
    for text in [pretty, reordered] {
        let parsed = EvalBundle::from_text(&text, FileFormat::Json).unwrap();
        assert_eq!(json_digest(&parsed), d);
    }
    // Any change changes it.
    let changed = BundleBuilder::new(&vid(2), &vid(1))
        .segment("general", 200, 0.9, 0.91)
        .build();
    assert_ne!(json_digest(&changed), d);
}
