//! JSON Schemas: the files under `schemas/` are current, and examples validate against them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pledger_core::schema::all_schema_files;
use pledger_core::Event;
use serde_json::Value;

use crate::support::*;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// Every `.json` file under `dir`, as paths relative to it with `/` separators.
fn json_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                let rel = path.strip_prefix(root).unwrap();
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Compares the generated schemas with `schemas/`. With `UPDATE_SCHEMAS=1` it writes them
/// instead (and still fails on stale extra files, which it does not delete).
#[test]
fn schemas_are_current() {
    let dir = schemas_dir();
    let update = std::env::var("UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let generated: BTreeMap<String, String> = all_schema_files().into_iter().collect();
    let mut problems = Vec::new();
    for (rel, text) in &generated {
        let path = dir.join(rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let same = std::fs::read_to_string(&path).is_ok_and(|old| &old == text);
            if !same {
                std::fs::write(&path, text)
                    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            }
        } else {
            match std::fs::read_to_string(&path) {
                Ok(old) if &old == text => {}
                Ok(_) => problems.push(format!("schemas/{rel} is out of date")),
                Err(_) => problems.push(format!("schemas/{rel} is missing")),
            }
        }
    }
    for rel in json_files(&dir) {
        if !generated.contains_key(&rel) {
            problems.push(format!(
                "schemas/{rel} is stale: no type generates it (delete it)"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nrun `UPDATE_SCHEMAS=1 cargo test -p pledger-core --test it schemas_are_current` to regenerate schemas/",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// A small structural validator: enough of JSON Schema 2020-12 for what schemars emits here
// ($ref to $defs, type, const, enum, properties, required, additionalProperties, items,
// anyOf/oneOf/allOf, minimum/maximum, integer formats).
// ---------------------------------------------------------------------------------------------

fn validate(root: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{path}: not allowed"));
        }
        return;
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .unwrap_or_else(|| panic!("unsupported $ref {r}"));
        let target = root["$defs"]
            .get(name)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
        validate(root, target, value, path, errors);
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            other => panic!("unsupported type {other}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            other => panic!("unsupported type {other}"),
        });
        if !ok {
            errors.push(format!("{path}: {value} is not of type {t}"));
            return;
        }
    }
    if let Some(c) = s.get("const") {
        if c != value {
            errors.push(format!("{path}: {value} is not the constant {c}"));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(value) {
            errors.push(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if n < min {
                errors.push(format!("{path}: {n} < minimum {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if n > max {
                errors.push(format!("{path}: {n} > maximum {max}"));
            }
        }
        match s.get("format").and_then(Value::as_str) {
            Some("uint32") if value.as_u64().and_then(|v| u32::try_from(v).ok()).is_none() => {
                errors.push(format!("{path}: {value} is not a uint32"))
            }
            Some("uint64" | "uint") if value.as_u64().is_none() => {
                errors.push(format!("{path}: {value} is not a uint64"))
            }
            _ => {}
        }
    }
    if let Some(obj) = value.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = s.get("required") {
            for r in required {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    errors.push(format!("{path}: missing required `{r}`"));
                }
            }
        }
        for (k, v) in obj {
            let child = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(p) => validate(root, p, v, &child, errors),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{path}: unknown property `{k}`"))
                    }
                    Some(extra @ Value::Object(_)) => validate(root, extra, v, &child, errors),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (s.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            validate(root, items, v, &format!("{path}[{i}]"), errors);
        }
    }
    let matching = |options: &Vec<Value>| {
        options
            .iter()
            .filter(|o| {
                let mut e = Vec::new();
                validate(root, o, value, path, &mut e);
                e.is_empty()
            })
            .count()
    };
    if let Some(Value::Array(options)) = s.get("anyOf") {
        if matching(options) == 0 {
            errors.push(format!("{path}: {value} matches no anyOf option"));
        }
    }
    if let Some(Value::Array(options)) = s.get("oneOf") {
        let n = matching(options);
        if n != 1 {
            errors.push(format!("{path}: {value} matches {n} oneOf options"));
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for o in all {
            validate(root, o, value, path, errors);
        }
    }
}

fn schema(rel: &str) -> Value {
    let text = all_schema_files()
        .into_iter()
        .find(|(r, _)| r == rel)
        .unwrap_or_else(|| panic!("no schema {rel}"))
        .1;
    serde_json::from_str(&text).unwrap()
}

fn errors_of(rel: &str, value: &Value) -> Vec<String> {
    let s = schema(rel);
    let mut errors = Vec::new();
    validate(&s, &s, value, "$", &mut errors);
    errors
}

#[track_caller]
fn assert_valid(rel: &str, value: &Value) {
    let errors = errors_of(rel, value);
    assert!(
        errors.is_empty(),
        "{rel}:\n{}\n{value:#}",
        errors.join("\n")
    );
}

#[test]
fn every_kind_has_a_schema_file() {
    let files: Vec<String> = all_schema_files().into_iter().map(|(r, _)| r).collect();
    for kind in Event::KINDS {
        let rel = format!("events/{kind}.schema.json");
        assert!(files.contains(&rel), "no schema for {kind}");
        let s = schema(&rel);
        assert_eq!(s["properties"]["kind"]["const"], *kind);
        assert_eq!(s["title"], *kind);
        assert!(s["properties"]["payload"].is_object());
        assert!(s["properties"]["payload"].get("$schema").is_none());
        assert!(s["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("payload")));
    }
    let event_files = files.iter().filter(|f| f.starts_with("events/")).count();
    assert_eq!(event_files, Event::KINDS.len());
    for top in [
        "artifact",
        "eval-bundle",
        "rollout-plan",
        "gate-policy",
        "routing-table",
        "envelope",
    ] {
        assert!(files.contains(&format!("{top}.schema.json")), "{top}");
    }
    // Every file is pretty JSON ending in a newline, and deterministic.
    assert_eq!(all_schema_files(), all_schema_files());
    for (rel, text) in all_schema_files() {
        assert!(text.ends_with("}\n"), "{rel}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{rel}"
        );
    }
}

#[test]
fn every_recorded_envelope_validates_against_its_kind() {
    let w = every_kind();
    for e in &w.log {
        let v = serde_json::to_value(e).unwrap();
        let rel = format!("events/{}.schema.json", e.kind());
        assert_eq!(schema(&rel)["properties"]["kind"]["const"], v["kind"]);
        assert_valid(&rel, &v);
        assert_valid("envelope.schema.json", &v);
    }
}

#[test]
fn the_validator_is_not_vacuous() {
    let w = every_kind();
    let e = w
        .log
        .iter()
        .find(|e| e.kind() == "release.review_submitted")
        .unwrap();
    let good = serde_json::to_value(e).unwrap();
    type Edit = fn(&mut Value);
    #[rustfmt::skip]
    let table: Vec<(&str, Edit)> = vec![
        ("another kind", |v| v["kind"] = "release.completed".into()),
        ("missing payload field", |v| { v["payload"].as_object_mut().unwrap().remove("reviewer"); }),
        ("unknown verdict", |v| v["payload"]["verdict"] = "maybe".into()),
        ("unknown layer", |v| v["payload"]["layer"] = "legal".into()),
        ("unknown envelope field", |v| v["extra"] = 1.into()),
        ("negative schema_version", |v| v["schema_version"] = (-1).into()),
        ("wrong type", |v| v["event_id"] = 7.into()),
    ];
    for (what, edit) in table {
        let mut bad = good.clone();
        edit(&mut bad);
        assert!(
            !errors_of("events/release.review_submitted.schema.json", &bad).is_empty(),
            "{what}"
        );
    }
}

#[test]
fn file_formats_validate_against_their_schemas() {
    let w = every_kind();
    let release = w.release(2);
    let mut table: Vec<(&str, Value)> = vec![
        (
            "artifact.schema.json",
            serde_json::to_value(full_artifact()).unwrap(),
        ),
        (
            "artifact.schema.json",
            serde_json::to_value(version(1)).unwrap(),
        ),
        (
            "eval-bundle.schema.json",
            serde_json::to_value(bundle(&vid(2), &vid(1))).unwrap(),
        ),
        (
            "rollout-plan.schema.json",
            serde_json::to_value(standard_plan()).unwrap(),
        ),
        (
            "gate-policy.schema.json",
            serde_json::to_value(&w.state.policy).unwrap(),
        ),
        ("gate-policy.schema.json", serde_json::json!({})),
        (
            "routing-table.schema.json",
            serde_json::to_value(pledger_core::routing::routing_table_for(
                &rolling().state,
                3,
            ))
            .unwrap(),
        ),
        (
            "routing-table.schema.json",
            serde_json::to_value(pledger_core::routing::routing_table_for(&w.state, 3)).unwrap(),
        ),
    ];
    table.push((
        "eval-bundle.schema.json",
        serde_json::to_value(&release.bundle.as_ref().unwrap().bundle).unwrap(),
    ));
    for (rel, value) in &table {
        assert_valid(rel, value);
    }
    // And the schemas refuse what the parsers refuse.
    let mut bad_artifact = serde_json::to_value(version(1)).unwrap();
    bad_artifact["model"]["temprature"] = 1.into();
    assert!(!errors_of("artifact.schema.json", &bad_artifact).is_empty());
    let mut bad_plan = serde_json::to_value(standard_plan()).unwrap();
    bad_plan["stages"][0]["percent"] = "all".into();
    assert!(!errors_of("rollout-plan.schema.json", &bad_plan).is_empty());
}
