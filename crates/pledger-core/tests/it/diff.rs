//! Artifact diffs: field changes by dotted path, line diff of the instructions.

use std::collections::BTreeMap;

use pledger_core::artifact::RetrievalSettings;
use pledger_core::diff::{diff_artifacts, FieldChange};
use pledger_core::Artifact;

use crate::support::*;

fn change(field: &str, from: Option<&str>, to: Option<&str>) -> FieldChange {
    FieldChange {
        field: field.into(),
        from: from.map(str::to_string),
        to: to.map(str::to_string),
    }
}

/// Diffs `full_artifact()` against a copy changed by `edit` and checks the field changes.
#[track_caller]
fn check(what: &str, edit: impl FnOnce(&mut Artifact), expected: &[FieldChange]) {
    let from = full_artifact();
    let mut to = full_artifact();
    edit(&mut to);
    let d = diff_artifacts(&from, &to);
    assert_eq!(d.fields, expected, "{what}");
    assert!(!d.instructions_changed, "{what}");
    assert_eq!(d.is_empty(), expected.is_empty(), "{what}");
    assert_eq!(
        d.is_empty(),
        from.version_id() == to.version_id(),
        "{what}: an empty diff means the same version"
    );
}

#[test]
fn field_changes_by_dotted_path() {
    check("identical", |_| {}, &[]);
    check(
        "temperature",
        |a| a.model.temperature = 0.5,
        &[change("model.temperature", Some("1.0"), Some("0.5"))],
    );
    check(
        "model name removed",
        |a| a.model.name = None,
        &[change("model.name", Some("\"gpt-4o-2024-08-06\""), None)],
    );
    check(
        "notes added to none",
        |a| a.notes = Some("x".into()),
        &[change("notes", Some("\"tighter tone\""), Some("\"x\""))],
    );
    check(
        "notes removed",
        |a| a.notes = None,
        &[change("notes", Some("\"tighter tone\""), None)],
    );
    check(
        "tools",
        |a| a.tools.schema_version = "2025-01".into(),
        &[change(
            "tools.schema_version",
            Some("\"2024-06\""),
            Some("\"2025-01\""),
        )],
    );
    check(
        "known limitations are one leaf",
        |a| a.known_limitations.push("no emoji".into()),
        &[change(
            "known_limitations",
            Some(r#"["no refunds","english only"]"#),
            Some(r#"["no refunds","english only","no emoji"]"#),
        )],
    );
    check(
        "nested filter",
        |a| {
            let f = a.retrieval.as_mut().unwrap().filters.as_mut().unwrap();
            f.insert(
                "window".into(),
                serde_json::json!({ "days": 7, "include_archived": false }),
            );
        },
        &[change(
            "retrieval.filters.window.days",
            Some("30"),
            Some("7"),
        )],
    );
    check(
        "extra retrieval key added",
        |a| {
            a.retrieval
                .as_mut()
                .unwrap()
                .extra
                .insert("hybrid".into(), serde_json::json!(true));
        },
        &[change("retrieval.hybrid", None, Some("true"))],
    );
    check(
        "several fields, sorted by path",
        |a| {
            a.model.top_p = None;
            a.model.family = "claude-sonnet".into();
            a.retrieval.as_mut().unwrap().top_k = Some(8);
        },
        &[
            change(
                "model.family",
                Some("\"gpt-4o\""),
                Some("\"claude-sonnet\""),
            ),
            change("model.top_p", Some("0.9"), None),
            change("retrieval.top_k", Some("5"), Some("8")),
        ],
    );
    check(
        "empty retrieval instead of none",
        |a| {
            a.retrieval = Some(RetrievalSettings {
                source: None,
                top_k: None,
                filters: None,
                extra: BTreeMap::new(),
            });
        },
        &[
            change("retrieval", None, Some("{}")),
            change("retrieval.chunk.size", Some("400"), None),
            change("retrieval.filters.lang", Some("\"en\""), None),
            change(
                "retrieval.filters.product",
                Some(r#"["billing","login"]"#),
                None,
            ),
            change("retrieval.filters.window.days", Some("30"), None),
            change(
                "retrieval.filters.window.include_archived",
                Some("false"),
                None,
            ),
            change("retrieval.rerank", Some("true"), None),
            change("retrieval.source", Some("\"kb\""), None),
            change("retrieval.top_k", Some("5"), None),
        ],
    );
}

#[test]
fn empty_objects_still_show_as_a_difference() {
    // `retrieval = {}` and no retrieval are different versions; the diff must say so.
    let a = version(1);
    let mut b = version(1);
    b.retrieval = Some(RetrievalSettings {
        source: None,
        top_k: None,
        filters: None,
        extra: BTreeMap::new(),
    });
    assert_ne!(a.version_id(), b.version_id());
    let d = diff_artifacts(&a, &b);
    assert!(!d.is_empty());
    assert_eq!(d.fields, [change("retrieval", None, Some("{}"))]);
    // Likewise an empty filter map.
    let mut c = b.clone();
    c.retrieval.as_mut().unwrap().filters = Some(BTreeMap::new());
    assert_ne!(b.version_id(), c.version_id());
    assert_eq!(
        diff_artifacts(&b, &c).fields,
        [
            change("retrieval", Some("{}"), None),
            change("retrieval.filters", None, Some("{}"))
        ]
    );
}

#[test]
fn instructions_line_diff() {
    let from = artifact("one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten");
    let to = artifact("one\ntwo\nthree\nfour\nfive\nSIX\nseven\neight\nnine\nten\neleven");
    let d = diff_artifacts(&from, &to);
    assert!(d.instructions_changed);
    assert!(
        d.fields.is_empty(),
        "instructions are not a field change: {:?}",
        d.fields
    );
    let lines: Vec<String> = d
        .instructions
        .iter()
        .map(|l| format!("{}{}", l.tag, l.text))
        .collect();
    assert_eq!(
        lines,
        [
            " three", " four", " five", "-six", "+SIX", " seven", " eight", " nine", "-ten",
            "+ten", "+eleven"
        ]
    );
    // Unchanged instructions give no lines.
    let same = diff_artifacts(&from, &from);
    assert!(!same.instructions_changed && same.instructions.is_empty() && same.is_empty());
    // Far-apart changes keep three lines of context each, not everything in between.
    let long_from: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    let mut long_to = long_from.clone();
    long_to[1] = "LINE 2".into();
    long_to[27] = "LINE 28".into();
    let d = diff_artifacts(
        &artifact(&long_from.join("\n")),
        &artifact(&long_to.join("\n")),
    );
    assert!(
        d.instructions.iter().all(|l| l.text != "line 15"),
        "{:?}",
        d.instructions
    );
    assert_eq!(d.instructions.iter().filter(|l| l.tag == "-").count(), 2);
    assert_eq!(d.instructions.iter().filter(|l| l.tag == "+").count(), 2);
    assert!(d.instructions.iter().all(|l| !l.text.ends_with('\n')));
}

#[test]
fn diff_serializes_for_the_cli() {
    let d = diff_artifacts(&version(1), &version(2));
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["instructions_changed"], serde_json::json!(true));
    assert!(v["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["tag"] == "-"));
    assert_eq!(v["fields"], serde_json::json!([]));
}
