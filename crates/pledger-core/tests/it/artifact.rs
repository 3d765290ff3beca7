//! Artifacts: canonical form, content-addressed ids, validation and file errors.

use pledger_core::artifact::{canonical_json_of, json_digest, MAX_ARTIFACT_BYTES};
use pledger_core::{Artifact, FileError, FileFormat};

use crate::support::*;

/// The content of [`full_artifact`] as TOML, keys in a different order than the struct, an
/// integer temperature.
const FULL_TOML: &str = r#"
notes = "tighter tone"
known_limitations = ["no refunds", "english only"]
instructions = """
You are the support triage assistant.
Classify the ticket."""

[tools]
schema_version = "2024-06"

[model]
temperature = 1
max_output_tokens = 512
top_p = 0.9
name = "gpt-4o-2024-08-06"
family = "gpt-4o"

[retrieval]
top_k = 5
rerank = true
source = "kb"

[retrieval.chunk]
size = 400

[retrieval.filters]
window = { include_archived = false, days = 30 }
product = ["billing", "login"]
lang = "en"
"#;

/// The same content as JSON, yet another key order, `1.0` for the temperature.
const FULL_JSON: &str = r#"{
  "retrieval": {
    "filters": { "product": ["billing", "login"], "lang": "en", "window": { "days": 30, "include_archived": false } },
    "source": "kb",
    "chunk": { "size": 400 },
    "rerank": true,
    "top_k": 5
  },
  "model": { "family": "gpt-4o", "name": "gpt-4o-2024-08-06", "top_p": 0.9, "temperature": 1.0, "max_output_tokens": 512 },
  "known_limitations": ["no refunds", "english only"],
  "tools": { "schema_version": "2024-06" },
  "instructions": "You are the support triage assistant.\nClassify the ticket.",
  "notes": "tighter tone"
}"#;

fn toml(text: &str) -> Artifact {
    Artifact::from_text(text, FileFormat::Toml).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn json(text: &str) -> Artifact {
    Artifact::from_text(text, FileFormat::Json).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The [`FULL_JSON`] document with one JSON pointer set to a value (or removed with `None`).
fn full_json_with(pointer: &str, value: Option<serde_json::Value>) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(FULL_JSON).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut doc
    } else {
        doc.pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent}"))
    };
    let map = target.as_object_mut().unwrap();
    match value {
        Some(v) => {
            map.insert(key.to_string(), v);
        }
        None => {
            map.remove(key);
        }
    }
    doc.to_string()
}

#[test]
fn same_content_in_toml_and_json_has_the_same_id() {
    let from_toml = toml(FULL_TOML);
    let from_json = json(FULL_JSON);
    assert_eq!(from_toml, full_artifact());
    assert_eq!(from_json, full_artifact());
    assert_eq!(from_toml.canonical_json(), from_json.canonical_json());
    assert_eq!(from_toml.version_id(), from_json.version_id());
    assert_eq!(from_toml.version_id(), full_artifact().version_id());
}

#[test]
fn integer_and_float_temperatures_are_the_same() {
    // (format, text of the temperature) → all the same id.
    let cases = [
        (FileFormat::Toml, "1"),
        (FileFormat::Toml, "1.0"),
        (FileFormat::Toml, "1e0"),
        (FileFormat::Json, "1"),
        (FileFormat::Json, "1.0"),
        (FileFormat::Json, "1.000"),
        (FileFormat::Json, "10e-1"),
    ];
    assert!(FULL_TOML.contains("temperature = 1\n"));
    assert!(FULL_JSON.contains("\"temperature\": 1.0"));
    let ids: Vec<_> = cases
        .iter()
        .map(|(format, t)| {
            let text = match format {
                FileFormat::Toml => {
                    FULL_TOML.replace("temperature = 1\n", &format!("temperature = {t}\n"))
                }
                FileFormat::Json => {
                    FULL_JSON.replace("\"temperature\": 1.0", &format!("\"temperature\": {t}"))
                }
            };
            Artifact::from_text(&text, *format).unwrap().version_id()
        })
        .collect();
    for (id, case) in ids.iter().zip(cases) {
        assert_eq!(id, &full_artifact().version_id(), "{case:?}");
    }
    assert!(full_artifact()
        .canonical_json()
        .contains(r#""temperature":1.0"#));
}

#[test]
fn canonical_form_is_compact_with_sorted_keys() {
    let a = full_artifact();
    let c = a.canonical_json();
    assert!(
        !c.contains('\n') && !c.contains(": ") && !c.contains(", "),
        "{c}"
    );
    // Keys sorted at every depth: (keys of one object, in the order they must appear).
    #[rustfmt::skip]
    let levels: [&[&str]; 5] = [
        &["\"instructions\"", "\"known_limitations\"", "\"model\"", "\"notes\"", "\"retrieval\"", "\"tools\""],
        &["\"family\"", "\"max_output_tokens\"", "\"name\"", "\"temperature\"", "\"top_p\""],
        // The flattened extra keys sort among the named ones.
        &["\"chunk\"", "\"filters\"", "\"rerank\"", "\"source\"", "\"top_k\""],
        &["\"lang\"", "\"product\"", "\"window\""],
        &["\"days\"", "\"include_archived\""],
    ];
    for keys in levels {
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| c.find(k).unwrap_or_else(|| panic!("{k} in {c}")))
            .collect();
        assert!(
            positions.windows(2).all(|p| p[0] < p[1]),
            "{keys:?} out of order in {c}"
        );
    }
    assert!(c.starts_with(r#"{"instructions":"#), "{c}");
    // Absent optionals are left out.
    let minimal = version(1).canonical_json();
    for absent in [
        "\"notes\"",
        "\"retrieval\"",
        "\"top_p\"",
        "\"name\"",
        "null",
    ] {
        assert!(!minimal.contains(absent), "{absent} in {minimal}");
    }
}

#[test]
fn version_id_is_sha256_of_the_canonical_form() {
    let id = version(1).version_id();
    let s = id.as_str();
    assert!(s.starts_with("sha256:"));
    assert_eq!(s.len(), "sha256:".len() + 64);
    assert!(s["sha256:".len()..]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(id.short().len(), 12);
    assert_eq!(s["sha256:".len()..], json_digest(&version(1)));
    assert_eq!(canonical_json_of(&version(1)), version(1).canonical_json());
}

#[test]
fn golden_version_id() {
    // Version ids are stored on the ledger: the canonical form must never drift. If this
    // fails, existing ledgers' ids no longer match their artifacts.
    let minimal = Artifact::from_text(
        "instructions = \"Say hi.\"\nknown_limitations = []\n[model]\nfamily = \"gpt-4o\"\ntemperature = 0\n[tools]\nschema_version = \"none\"\n",
        FileFormat::Toml,
    )
    .unwrap();
    assert_eq!(
        minimal.canonical_json(),
        r#"{"instructions":"Say hi.","known_limitations":[],"model":{"family":"gpt-4o","temperature":0.0},"tools":{"schema_version":"none"}}"#
    );
    use sha2::Digest;
    let expected = sha2::Sha256::digest(minimal.canonical_json().as_bytes());
    let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(minimal.version_id().as_str(), format!("sha256:{hex}"));
}

#[test]
fn any_single_field_change_gives_a_new_id() {
    use serde_json::json as j;
    // (pointer into FULL_JSON, new value or None to remove)
    #[rustfmt::skip]
    let table: Vec<(&str, Option<serde_json::Value>)> = vec![
        ("/instructions", Some(j!("You are the support triage assistant.\nClassify the ticket!"))),
        ("/instructions", Some(j!("You are the support triage assistant.\nClassify the ticket.\n"))),
        ("/instructions", Some(j!(" You are the support triage assistant.\nClassify the ticket."))),
        ("/model/family", Some(j!("claude-sonnet"))),
        ("/model/name", Some(j!("gpt-4o-2024-11-20"))),
        ("/model/name", None),
        ("/model/temperature", Some(j!(0.7))),
        ("/model/temperature", Some(j!(1.0000001))),
        ("/model/top_p", Some(j!(0.95))),
        ("/model/top_p", None),
        ("/model/max_output_tokens", Some(j!(513))),
        ("/model/max_output_tokens", None),
        ("/tools/schema_version", Some(j!("2024-07"))),
        ("/known_limitations", Some(j!(["no refunds"]))),
        ("/known_limitations", Some(j!(["english only", "no refunds"]))),
        ("/known_limitations", Some(j!([]))),
        ("/notes", Some(j!("tighter tone."))),
        ("/notes", Some(j!(""))),
        ("/notes", None),
        ("/retrieval", None),
        ("/retrieval/source", Some(j!("kb-v2"))),
        ("/retrieval/source", None),
        ("/retrieval/top_k", Some(j!(6))),
        ("/retrieval/top_k", None),
        ("/retrieval/filters", None),
        ("/retrieval/filters/lang", Some(j!("de"))),
        ("/retrieval/filters/lang", None),
        ("/retrieval/filters/product", Some(j!(["login", "billing"]))),
        ("/retrieval/filters/window/days", Some(j!(31))),
        ("/retrieval/filters/window/include_archived", Some(j!(true))),
        ("/retrieval/filters/extra_filter", Some(j!("x"))),
        ("/retrieval/rerank", Some(j!(false))),
        ("/retrieval/rerank", None),
        ("/retrieval/rerank", Some(j!("true"))),
        ("/retrieval/chunk/size", Some(j!(401))),
        ("/retrieval/chunk/overlap", Some(j!(20))),
        ("/retrieval/hybrid", Some(j!(true))),
    ];
    let base = json(FULL_JSON).version_id();
    let mut seen = vec![(String::from("base"), base.clone())];
    for (pointer, value) in table {
        let what = format!("{pointer} = {value:?}");
        let changed = json(&full_json_with(pointer, value));
        let id = changed.version_id();
        if let Some((other, _)) = seen.iter().find(|(_, s)| *s == id) {
            panic!("{what} gives the same id as {other}");
        }
        seen.push((what, id));
    }
}

#[test]
fn absent_optional_and_explicit_null_are_the_same() {
    let base = json(FULL_JSON);
    // Start from the artifact without the optional, then write it as null.
    #[rustfmt::skip]
    let table: Vec<(&str, &str)> = vec![
        ("/notes", "notes"),
        ("/model/name", "model.name"),
        ("/model/top_p", "model.top_p"),
        ("/model/max_output_tokens", "model.max_output_tokens"),
        ("/retrieval", "retrieval"),
        ("/retrieval/source", "retrieval.source"),
        ("/retrieval/top_k", "retrieval.top_k"),
        ("/retrieval/filters", "retrieval.filters"),
    ];
    for (pointer, what) in table {
        let absent = json(&full_json_with(pointer, None));
        let null = json(&full_json_with(pointer, Some(serde_json::Value::Null)));
        assert_eq!(absent, null, "{what}");
        assert_eq!(absent.version_id(), null.version_id(), "{what}");
        assert_ne!(absent.version_id(), base.version_id(), "{what}");
        assert!(
            !null.canonical_json().contains("null"),
            "{what}: {}",
            null.canonical_json()
        );
    }
}

#[test]
fn artifacts_round_trip_through_their_canonical_form() {
    for a in [full_artifact(), version(1), toml(FULL_TOML)] {
        let back = json(&a.canonical_json());
        assert_eq!(back, a);
        assert_eq!(back.version_id(), a.version_id());
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and file errors
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_values_name_their_field() {
    use serde_json::json as j;
    // (pointer, value) → the field named by the error.
    #[rustfmt::skip]
    let table: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/instructions", j!(""), "instructions"),
        ("/instructions", j!("  \n\t"), "instructions"),
        ("/model/family", j!(" "), "model.family"),
        ("/model/temperature", j!(2.01), "model.temperature"),
        ("/model/temperature", j!(-0.1), "model.temperature"),
        ("/model/top_p", j!(1.5), "model.top_p"),
        ("/model/top_p", j!(-0.5), "model.top_p"),
        ("/model/max_output_tokens", j!(0), "model.max_output_tokens"),
        ("/tools/schema_version", j!(""), "tools.schema_version"),
    ];
    for (pointer, value, field) in table {
        let text = full_json_with(pointer, Some(value.clone()));
        let err = Artifact::from_text(&text, FileFormat::Json).unwrap_err();
        let FileError::Invalid { kind, source } = &err else {
            panic!("{pointer}={value}: {err:?}")
        };
        assert_eq!(*kind, "artifact");
        assert_eq!(source.field, field, "{pointer}={value}");
        assert!(
            err.to_string()
                .starts_with(&format!("artifact file: {field}: ")),
            "{err}"
        );
        // validate() says the same on the parsed-but-invalid value.
        let raw: Artifact = serde_json::from_str(&text).unwrap();
        assert_eq!(raw.validate().unwrap_err().field, field);
    }
    // Boundaries are inclusive.
    for (pointer, value) in [
        ("/model/temperature", j!(0)),
        ("/model/temperature", j!(2)),
        ("/model/top_p", j!(0)),
        ("/model/top_p", j!(1)),
        ("/model/max_output_tokens", j!(1)),
    ] {
        Artifact::from_text(
            &full_json_with(pointer, Some(value.clone())),
            FileFormat::Json,
        )
        .unwrap_or_else(|e| panic!("{pointer}={value}: {e}"));
    }
}

#[test]
fn syntax_errors_name_the_field() {
    // (format, text, words the error must contain)
    let drop_line = |needle: &str| -> String {
        FULL_TOML
            .lines()
            .filter(|l| !l.starts_with(needle))
            .collect::<Vec<_>>()
            .join("\n")
    };
    #[rustfmt::skip]
    let table: Vec<(FileFormat, String, Vec<&str>)> = vec![
        (FileFormat::Toml, FULL_TOML.replace("temperature = 1", "temprature = 1"), vec!["temprature"]),
        (FileFormat::Toml, drop_line("known_limitations"), vec!["known_limitations"]),
        (FileFormat::Toml, drop_line("family"), vec!["family"]),
        (FileFormat::Toml, FULL_TOML.replace("temperature = 1", "temperature = \"hot\""), vec!["temperature"]),
        (FileFormat::Toml, FULL_TOML.replace("[tools]", "[tool]"), vec!["tool"]),
        (FileFormat::Toml, FULL_TOML.replace("max_output_tokens = 512", "max_output_tokens = -1"), vec!["max_output_tokens"]),
        (FileFormat::Toml, "instructions = \"x\"\nknown_limitations = [\n".to_string(), vec!["TOML"]),
        (FileFormat::Json, full_json_with("/colour", Some(serde_json::json!("red"))), vec!["colour"]),
        (FileFormat::Json, full_json_with("/model/temp", Some(serde_json::json!(1))), vec!["temp"]),
        (FileFormat::Json, full_json_with("/known_limitations", None), vec!["known_limitations"]),
        (FileFormat::Json, full_json_with("/tools/schema_version", None), vec!["schema_version"]),
        (FileFormat::Json, "{".to_string(), vec!["JSON"]),
    ];
    for (format, text, words) in table {
        let err = Artifact::from_text(&text, format).unwrap_err();
        let FileError::Syntax {
            kind, format: f, ..
        } = &err
        else {
            panic!("{words:?}: {err:?}")
        };
        assert_eq!((*kind, *f), ("artifact", format));
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("artifact file is not valid {format}: ")),
            "{shown}"
        );
        for w in words {
            assert!(shown.contains(w), "`{w}` not in: {shown}");
        }
        assert!(!shown.contains('\n'), "one line: {shown}");
    }
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let big = format!("instructions = \"{}\"", "x".repeat(MAX_ARTIFACT_BYTES));
    let err = Artifact::from_text(&big, FileFormat::Toml).unwrap_err();
    assert_eq!(
        err,
        FileError::TooLarge {
            kind: "artifact",
            size: big.len(),
            limit: MAX_ARTIFACT_BYTES
        }
    );
    assert!(err.to_string().contains(&MAX_ARTIFACT_BYTES.to_string()));
    // Exactly at the limit is parsed (and fails for other reasons, not size).
    let at_limit = " ".repeat(MAX_ARTIFACT_BYTES);
    assert!(matches!(
        Artifact::from_text(&at_limit, FileFormat::Toml),
        Err(FileError::Syntax { .. })
    ));
}

#[test]
fn file_format_is_chosen_by_extension() {
    for (path, format) in [
        ("prompt.json", FileFormat::Json),
        ("PROMPT.JSON", FileFormat::Json),
        ("dir.json/prompt.toml", FileFormat::Toml),
        ("prompt.toml", FileFormat::Toml),
        ("prompt", FileFormat::Toml),
        ("prompt.jsonc", FileFormat::Toml),
    ] {
        assert_eq!(FileFormat::from_path(path), format, "{path}");
    }
}
