//! The shared resolution vectors, `clients/vectors/resolve.json`: unit keys, salts, request
//! attributes and routing tables with the bucket and the resolution the core computes. Every
//! SDK (Rust, Python) runs them, so a service resolves exactly as `pledger resolve` and the
//! canary monitor assume. With `UPDATE_VECTORS=1` this test writes the file instead of
//! comparing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pledger_core::routing::{bucket, resolve, RoutedRollout, RoutedStage, RoutingTable};
use pledger_core::{Artifact, PromptName, ReleaseId};
use serde_json::{json, Value};

use crate::support::routed;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/vectors/resolve.json")
}

fn version(n: u32) -> pledger_core::VersionId {
    Artifact::from_text(
        &format!("instructions = \"Answer the customer (vector version {n}).\"\nknown_limitations = [\"none\"]\n\n[model]\nfamily = \"gpt-4o\"\ntemperature = 0.0\n\n[tools]\nschema_version = \"none\"\n"),
        pledger_core::error::FileFormat::Toml,
    )
    .expect("a valid artifact")
    .version_id()
}

fn tables() -> Vec<(&'static str, RoutingTable)> {
    let prompt = PromptName::parse("support-triage").expect("valid");
    let release = ReleaseId::new(prompt.clone(), 7);
    let rollout = |state: &str, salt: &str, stages: Vec<RoutedStage>| RoutedRollout {
        release: release.clone(),
        candidate: version(2),
        state: state.into(),
        current_stage: stages.last().map(|s| s.name.clone()).unwrap_or_default(),
        stage_visit: Some(format!("{release}/{}/1795000000000", stages.len() - 1)),
        bucketing_salt: salt.into(),
        stages,
    };
    let table = |rollout: Option<RoutedRollout>| RoutingTable {
        prompt: prompt.clone(),
        stable: Some(version(1)),
        rollout,
        ledger_sequence: 42,
        artifacts: BTreeMap::new(),
    };
    let segmented = vec![
        routed("internal", 100.0, &[("user_kind", &["internal"])]),
        routed("eu-and-uk", 5.0, &[("geo", &["eu", "uk"])]),
        routed("everyone", 25.5, &[]),
    ];
    let mut no_stable = table(None);
    no_stable.stable = None;
    vec![
        ("no rollout", table(None)),
        ("no rollout and no stable version", no_stable),
        (
            "segmented stages, rolling out",
            table(Some(rollout(
                "rolling_out",
                "5f0c0a7e9d3b4c21",
                segmented.clone(),
            ))),
        ),
        (
            "segmented stages, paused (routes as rolling out)",
            table(Some(rollout(
                "paused",
                "5f0c0a7e9d3b4c21",
                segmented.clone(),
            ))),
        ),
        (
            "segmented stages, frozen (everything to the baseline)",
            table(Some(rollout("frozen", "5f0c0a7e9d3b4c21", segmented))),
        ),
        (
            "one bucket in ten thousand",
            table(Some(rollout(
                "rolling_out",
                "a1b2c3d4e5f60718",
                vec![routed("tiny", 0.01, &[])],
            ))),
        ),
        (
            "all but one bucket, for one tenant",
            table(Some(rollout(
                "rolling_out",
                "s",
                vec![routed("tenant", 99.99, &[("tenant", &["acme"])])],
            ))),
        ),
        (
            "two keys in one match, half the traffic",
            table(Some(rollout(
                "rolling_out",
                "ünïcode-salt",
                vec![routed(
                    "eu-externals",
                    50.0,
                    &[("geo", &["eu"]), ("user_kind", &["external", "trial"])],
                )],
            ))),
        ),
        (
            "a whole segment without a unit key",
            table(Some(rollout(
                "rolling_out",
                "0000",
                vec![
                    routed("us", 100.0, &[("geo", &["us"])]),
                    routed("rest", 0.0, &[]),
                ],
            ))),
        ),
    ]
}

fn units() -> Vec<Option<String>> {
    let mut units: Vec<Option<String>> = (0..12).map(|i| Some(format!("user-{i}"))).collect();
    units.extend(
        ["", "ünït-ß", "tenant:acme/user:42", "a:b", "  spaced  "]
            .iter()
            .map(|u| Some(u.to_string())),
    );
    units.push(None);
    units
}

fn attribute_sets() -> Vec<BTreeMap<String, String>> {
    let set = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        set(&[]),
        set(&[("user_kind", "internal")]),
        set(&[("geo", "eu"), ("user_kind", "external")]),
        set(&[("geo", "uk"), ("user_kind", "trial"), ("tenant", "acme")]),
        set(&[("geo", "us"), ("tenant", "other")]),
        set(&[("geo", "EU")]),
    ]
}

/// The vectors, as the core computes them.
fn generate() -> Value {
    let salts = [
        "5f0c0a7e9d3b4c21",
        "a1b2c3d4e5f60718",
        "s",
        "ünïcode-salt",
        "",
    ];
    let mut buckets = Vec::new();
    for salt in salts {
        for unit in units().into_iter().flatten() {
            buckets.push(json!({"salt": salt, "unit": unit, "bucket": bucket(salt, &unit)}));
        }
    }
    let mut cases = Vec::new();
    for (name, table) in tables() {
        let mut expected = Vec::new();
        for unit in units() {
            for attributes in attribute_sets() {
                let resolution = resolve(&table, unit.as_deref(), &attributes);
                expected.push(json!({
                    "unit": unit,
                    "attributes": attributes,
                    "expect": resolution,
                }));
            }
        }
        cases.push(json!({"name": name, "table": table, "requests": expected}));
    }
    json!({
        "about": "Generated by pledger-core (crates/pledger-core/tests/it/vectors.rs; UPDATE_VECTORS=1 cargo test -p pledger-core --test it vectors). bucket = SHA-256 of `salt:unit` (UTF-8), first 8 bytes big-endian, modulo 10000. resolve: a table and a request (unit key or null, attributes) give the version, release, arm and stage visit the request gets.",
        "buckets": buckets,
        "tables": cases,
    })
}

#[test]
fn resolve_vectors_are_current() {
    let text = serde_json::to_string_pretty(&generate()).expect("serializes") + "\n";
    let path = vectors_path();
    if std::env::var("UPDATE_VECTORS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let old = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_VECTORS=1 writes it)", path.display()));
    assert!(
        old == text,
        "clients/vectors/resolve.json is out of date: run UPDATE_VECTORS=1 cargo test -p pledger-core --test it vectors"
    );
}

/// The vectors cover what they are for: both arms, unit-less requests, frozen tables.
#[test]
fn resolve_vectors_cover_every_answer() {
    let v = generate();
    let mut arms = std::collections::BTreeSet::new();
    for table in v["tables"].as_array().unwrap() {
        for r in table["requests"].as_array().unwrap() {
            arms.insert(format!("{}/{}", r["expect"]["arm"], r["unit"].is_null()));
        }
    }
    for want in [
        "\"candidate\"/false",
        "\"baseline\"/false",
        "null/false",
        "\"candidate\"/true",
        "\"baseline\"/true",
    ] {
        assert!(
            arms.contains(want),
            "no vector resolves to {want}: {arms:?}"
        );
    }
}
