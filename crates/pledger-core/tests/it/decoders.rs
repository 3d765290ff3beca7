//! Property tests of every decoder of outside input in the core: ledger envelopes (the stored
//! bytes readers decode and verify), outcome messages, artifact files, eval bundles, rollout
//! plans, release windows, gate and redaction policies, routing tables (the KV value the SDK
//! reads) and the field values they are made of (ids, times, durations, keys, cron, weeks, NATS
//! URLs).
//!
//! Two properties for each decoder:
//!
//! - (a) arbitrary input (bytes, text, and JSON or TOML documents built from the decoder's own
//!   field names and plausible values) never panics;
//! - (b) a valid fixture, mutated, never panics, and a refusal names what is wrong: after a
//!   structured edit (a field dropped, retyped to another JSON type, or an unknown one added)
//!   the error names that field; after byte edits (bytes deleted, replaced or inserted) it names
//!   a field or the line and column of the syntax error.
//!
//! The runs are deterministic: a fixed seed (unless `PROPTEST_RNG_SEED` is set), 256 cases per
//! property (unless `PROPTEST_CASES` is set), and no failure files are written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use pledger_core::event::CURRENT_SCHEMA_VERSION;
use pledger_core::gate::GatePolicy;
use pledger_core::identity::{PublicKey, Role};
use pledger_core::ids::{Actor, DurationSpec, PromptName, ReleaseId, Timestamp, VersionId};
use pledger_core::names::subject_for;
use pledger_core::outcome::parse_outcome_message;
use pledger_core::redact::{RedactionPattern, RedactionPolicy};
use pledger_core::routing::{benchmark_table, resolve, RoutingTable};
use pledger_core::verify::{seal, Check, LedgerVerifier, Verdict};
use pledger_core::window::{parse_week, CronSchedule, ReleaseWindows};
use pledger_core::{Artifact, Envelope, EvalBundle, FileError, FileFormat, RolloutPlan};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;
use serde_json::{json, Value};

use crate::support::*;
use crate::trust::{generated_ledger, SignedLedger};

/// The seed of every property, unless `PROPTEST_RNG_SEED` names another.
const SEED: u64 = 0x5eed_dec0_de25_0001;

fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    let set = |name: &str| std::env::var_os(name).is_some();
    ProptestConfig {
        cases: if set("PROPTEST_CASES") {
            default.cases
        } else {
            256
        },
        rng_seed: if set("PROPTEST_RNG_SEED") {
            default.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------------------------
// Edits
// ---------------------------------------------------------------------------------------------

/// One step of a path into a JSON value.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Every path in `v` below its root, parents before children.
fn paths(v: &Value) -> Vec<Vec<Seg>> {
    fn walk(v: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        let children: Vec<(Seg, &Value)> = match v {
            Value::Object(map) => map.iter().map(|(k, v)| (Seg::Key(k.clone()), v)).collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (Seg::Index(i), v))
                .collect(),
            _ => return,
        };
        for (seg, child) in children {
            prefix.push(seg);
            out.push(prefix.clone());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One of the paths.
fn pick(at: Index, paths: &[Vec<Seg>]) -> &[Seg] {
    at.get::<Vec<Seg>>(paths)
}

fn get_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match (seg, v) {
        (Seg::Key(k), Value::Object(map)) => map.get_mut(k),
        (Seg::Index(i), Value::Array(items)) => items.get_mut(*i),
        _ => None,
    })
}

fn shown(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => s.push_str(&format!(".{k}")),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A structured edit of one field.
#[derive(Clone, Debug)]
enum FieldEdit {
    /// Remove the field (or array element).
    Drop,
    /// Replace its value, usually by one of another JSON type.
    Retype(Value),
    /// Add `unexpected_field` to the nearest object at or above it.
    AddUnknown,
}

const UNKNOWN_FIELD: &str = "unexpected_field";

fn wrong_value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(""),
        json!("x"),
        json!("sha256:zz"),
        json!([]),
        json!([1, "x"]),
        json!({}),
        json!({ "x": 1 }),
    ])
}

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    prop_oneof![
        Just(FieldEdit::Drop),
        wrong_value().prop_map(FieldEdit::Retype),
        Just(FieldEdit::AddUnknown),
    ]
}

/// A fixture after a structured edit, and what a refusal must name.
#[derive(Clone, Debug)]
struct Edited {
    value: Value,
    /// Where the edit was made, for messages (`stages[1].percent`).
    path: String,
    /// The word a decoding error must contain: the edited field's name (for an array element,
    /// the array's), or `unexpected_field`. Empty for an edit of a whole top-level element.
    word: String,
    /// The first field name on the path: a value rule broken by the edit names a field under it.
    top: String,
    /// The index of the top-level array element edited, when the fixture is an array.
    element: Option<usize>,
}

fn apply(fixture: &Value, path: &[Seg], edit: &FieldEdit) -> Edited {
    let mut value = fixture.clone();
    let mut path = path.to_vec();
    let word = match edit {
        FieldEdit::Drop => {
            let (last, parent) = path.split_last().expect("a path below the root");
            match (get_mut(&mut value, parent), last) {
                (Some(Value::Object(map)), Seg::Key(k)) => {
                    map.remove(k);
                }
                (Some(Value::Array(items)), Seg::Index(i)) => {
                    items.remove(*i);
                }
                _ => unreachable!("paths come from the fixture"),
            }
            last_key(&path)
        }
        FieldEdit::Retype(new) => {
            *get_mut(&mut value, &path).expect("a path of the fixture") = new.clone();
            last_key(&path)
        }
        FieldEdit::AddUnknown => {
            while !matches!(get_mut(&mut value, &path), Some(Value::Object(_))) {
                path.pop();
            }
            let Some(Value::Object(map)) = get_mut(&mut value, &path) else {
                unreachable!()
            };
            map.insert(UNKNOWN_FIELD.into(), json!(1));
            path.push(Seg::Key(UNKNOWN_FIELD.into()));
            UNKNOWN_FIELD.to_string()
        }
    };
    let top = path
        .iter()
        .find_map(|s| match s {
            Seg::Key(k) => Some(k.clone()),
            Seg::Index(_) => None,
        })
        .unwrap_or_default();
    let element = match (fixture, path.first()) {
        (Value::Array(_), Some(Seg::Index(i))) => Some(*i),
        _ => None,
    };
    Edited {
        value,
        path: shown(&path),
        word,
        top,
        element,
    }
}

/// The last field name on a path (the array's name for an element).
fn last_key(path: &[Seg]) -> String {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Seg::Key(k) => Some(k.clone()),
            Seg::Index(_) => None,
        })
        .unwrap_or_default()
}

/// A byte-level edit.
#[derive(Clone, Debug)]
enum ByteEdit {
    Delete(Index, usize),
    Replace(Index, u8),
    Insert(Index, Vec<u8>),
}

/// Fragments that make parsers take unusual turns.
const FRAGMENTS: &[&str] = &[
    "\"",
    "'",
    "{",
    "}",
    "[",
    "]",
    "[[",
    "]]",
    ",",
    ":",
    "=",
    "\n",
    "\r\n",
    "\\",
    "\\u",
    "\\ud800",
    "#",
    ".",
    "-",
    "+",
    "0",
    "1e999",
    "-1",
    "nan",
    "inf",
    "true",
    "null",
    "\"\"",
    "{}",
    "[]",
    "é",
    "\u{1F600}",
    "\u{0}",
    "\u{feff}",
    "\"\"\"",
    "'''",
    "=\n",
    "[x]",
    "\t",
];

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let insert = prop_oneof![
        prop::sample::select(FRAGMENTS).prop_map(|f| f.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..4),
    ];
    prop_oneof![
        (any::<Index>(), 1..8usize).prop_map(|(at, n)| ByteEdit::Delete(at, n)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| ByteEdit::Replace(at, b)),
        (any::<Index>(), insert).prop_map(|(at, bytes)| ByteEdit::Insert(at, bytes)),
    ]
}

fn byte_edits() -> impl Strategy<Value = Vec<ByteEdit>> {
    prop::collection::vec(byte_edit(), 1..4)
}

fn apply_bytes(original: &[u8], edits: &[ByteEdit]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for edit in edits {
        match edit {
            ByteEdit::Delete(at, n) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            ByteEdit::Replace(at, b) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = *b;
            }
            ByteEdit::Insert(at, new) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every object key in `v`, at any depth.
fn keys_of(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                keys_of(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys_of(v, out)),
        _ => {}
    }
}

/// Does an error message locate its problem: a line (syntax errors) or a field name?
fn locates(message: &str, fields: &BTreeSet<String>) -> bool {
    message.contains("line") || fields.iter().any(|f| message.contains(f.as_str()))
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input
// ---------------------------------------------------------------------------------------------

/// Plausible string values: valid and almost valid ids, times, durations, zones, cron
/// expressions, keys, enum names.
fn sample_strings() -> Vec<String> {
    let mut s: Vec<String> = [
        "",
        " ",
        "x",
        "support-triage",
        "support-triage-r1",
        "support-triage-r0",
        "-r1",
        "sha256:",
        "2026-11-24T09:30:00.000Z",
        "2026-02-30T09:30:00Z",
        "9999-12-31T23:59:60.999999Z",
        "0000-01-01T00:00:00Z",
        "1h30m",
        "0",
        "7d",
        "99999999999999999999d",
        "UTC",
        "Europe/Berlin",
        "Mars/Olympus",
        "0 0 9 * * Mon-Fri",
        "0 0 9 * * Mon 2027",
        "* * * * * * *",
        "0 0 0 31 Feb *",
        "@weekly",
        "@",
        "0 0 9 * * 0",
        "59-0 * * * * *",
        "*/0 * * * * *",
        "0 0 9 * * Mon 1969",
        "candidate",
        "baseline",
        "frozen",
        "rolling_out",
        "unexpected_refusal",
        "product",
        "technical",
        "approve",
        "admin",
        "release-manager",
        "ssh-ed25519 AAAA",
        "prompt:support-triage",
        "release:support-triage-r1",
        "fleet:roster",
        "release.review_submitted",
        "prompt.registered",
        "fleet.identity_enrolled",
        "2026-W48",
        "2026-W53",
        "[a-",
        "(a|)",
        "é\u{1F600}",
        "a\u{0}b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    s.push(vid(1).to_string());
    s.push(format!("sha256:{}", "A".repeat(64)));
    s.push(public_key(1).to_string());
    s.push("x".repeat(5000));
    s
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![0.0, 0.5, 1.0, 2.0, 100.0, -0.0, 1e-9]).prop_map(|f| json!(f)),
        prop::sample::select(sample_strings()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// JSON documents built from `keys` (the decoder's own field names) and plausible values;
/// mostly objects, as the decoders expect.
fn document(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(keys);
    let object_keys = keys.clone();
    let inner = leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    prop_oneof![
        1 => inner.clone(),
        6 => prop::collection::vec((object_keys, inner), 0..10)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
    ]
}

/// Text of a document, as JSON or (when it has a TOML form) TOML.
fn document_text(v: &Value, format: FileFormat) -> Option<String> {
    match format {
        FileFormat::Json => Some(serde_json::to_string_pretty(v).unwrap()),
        FileFormat::Toml => toml::to_string(v).ok(),
    }
}

/// Text soup: the decoder's field names and syntax in any order.
fn soup(keys: Vec<String>) -> impl Strategy<Value = String> {
    let mut tokens: Vec<String> = FRAGMENTS.iter().map(|s| s.to_string()).collect();
    for k in keys {
        tokens.push(format!("\"{k}\""));
        tokens.push(format!("{k} = "));
        tokens.push(format!("[{k}]"));
        tokens.push(format!("[[{k}]]"));
        tokens.push(k);
    }
    tokens.extend(sample_strings().into_iter().map(|s| format!("\"{s}\"")));
    let token = prop_oneof![
        8 => prop::sample::select(tokens),
        1 => any::<String>(),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

fn any_format() -> impl Strategy<Value = FileFormat> {
    prop_oneof![Just(FileFormat::Toml), Just(FileFormat::Json)]
}

// ---------------------------------------------------------------------------------------------
// Files: artifacts, eval bundles, rollout plans, gate policies, redaction policies
// ---------------------------------------------------------------------------------------------

/// A file decoder of the core and its valid fixtures.
struct FileKind {
    decode: fn(&str, FileFormat) -> Result<(), FileError>,
    fixtures: Vec<Value>,
    /// Every field name of the fixtures.
    keys: Vec<String>,
}

impl FileKind {
    fn new(decode: fn(&str, FileFormat) -> Result<(), FileError>, fixtures: Vec<Value>) -> Self {
        let mut keys = BTreeSet::new();
        for f in &fixtures {
            keys_of(f, &mut keys);
        }
        for (i, f) in fixtures.iter().enumerate() {
            for format in [FileFormat::Json, FileFormat::Toml] {
                let text = document_text(f, format).expect("the fixture has a TOML form");
                if let Err(e) = decode(&text, format) {
                    panic!("fixture {i} is refused as {format}: {e}\n{text}");
                }
            }
        }
        FileKind {
            decode,
            fixtures,
            keys: keys.into_iter().collect(),
        }
    }

    fn fields(&self) -> BTreeSet<String> {
        self.keys.iter().cloned().collect()
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

static ARTIFACTS: LazyLock<FileKind> = LazyLock::new(|| {
    FileKind::new(
        |t, f| Artifact::from_text(t, f).map(drop),
        vec![to_value(&full_artifact()), to_value(&version(1))],
    )
});

static BUNDLES: LazyLock<FileKind> = LazyLock::new(|| {
    let mut rich = BundleBuilder::new(&vid(2), &vid(1))
        .segment("billing", 40, 0.85, 0.8)
        .build();
    rich.regressions = vec![pledger_core::bundle::Regression {
        case: "refund-42".into(),
        segment: "billing".into(),
        detail: "asks twice".into(),
    }];
    rich.expected_changes = vec!["shorter answers".into()];
    rich.covers_regressions = vec!["support-triage-rc-abcdefabcdef".into()];
    FileKind::new(
        |t, f| EvalBundle::from_text(t, f).map(drop),
        vec![to_value(&rich), to_value(&bundle(&vid(2), &vid(1)))],
    )
});

static PLANS: LazyLock<FileKind> = LazyLock::new(|| {
    let mut rich = standard_plan();
    rich.stages[1] = stage_matching("canary", 5.0, "geo", &["eu", "us"]);
    rich.stages[1].min_samples = 500;
    rich.stages[1].min_bake = DurationSpec::parse("1h30m").unwrap();
    rich.guardrails.latency_p95_ms = Some(pledger_core::plan::QuantityLimit {
        max_value: Some(2000.0),
        max_increase: Some(0.2),
    });
    rich.advance.automatic = true;
    FileKind::new(
        |t, f| RolloutPlan::from_text(t, f).map(drop),
        vec![to_value(&rich), to_value(&plan_without_rollback())],
    )
});

static GATE_POLICIES: LazyLock<FileKind> = LazyLock::new(|| {
    let policy = GatePolicy {
        segment_max_pass_rate_drop: [("billing".to_string(), 0.0), ("general".into(), 0.05)].into(),
        require_regression_coverage: Some(true),
        ..GatePolicy::default()
    };
    FileKind::new(
        |t, f| GatePolicy::from_text(t, f).map(drop),
        vec![to_value(&policy), json!({ "max_cost_increase": 0.2 })],
    )
});

static REDACTION_POLICIES: LazyLock<FileKind> = LazyLock::new(|| {
    let policy = RedactionPolicy {
        patterns: vec![
            RedactionPattern {
                name: "employee_id".into(),
                regex: "EMP-[0-9]{6}".into(),
                placeholder: "<employee>".into(),
            },
            RedactionPattern {
                name: "ticket".into(),
                regex: "(?i)ticket #[0-9]+".into(),
                placeholder: "<ticket>".into(),
            },
        ],
    };
    FileKind::new(
        |t, f| RedactionPolicy::from_text(t, f).map(drop),
        vec![to_value(&policy)],
    )
});

/// (a) for a file decoder: documents of its fields, text soup and any string.
fn file_arbitrary(kind: &FileKind, doc: &Value, format: FileFormat, soup: &str, any: &str) {
    if let Some(text) = document_text(doc, format) {
        let _ = (kind.decode)(&text, format);
    }
    let _ = (kind.decode)(soup, format);
    let _ = (kind.decode)(any, format);
}

/// (b) byte edits of a fixture: no panic; a refusal locates the problem.
fn file_byte_edits(
    kind: &FileKind,
    fixture: Index,
    format: FileFormat,
    edits: &[ByteEdit],
) -> Result<(), TestCaseError> {
    let fixture = fixture.get(&kind.fixtures);
    let text = document_text(fixture, format).unwrap();
    let edited = text_of(&apply_bytes(text.as_bytes(), edits));
    if let Err(e) = (kind.decode)(&edited, format) {
        check_file_error_locates(&e, &kind.fields(), &edited)?;
    }
    Ok(())
}

fn check_file_error_locates(
    e: &FileError,
    fields: &BTreeSet<String>,
    text: &str,
) -> Result<(), TestCaseError> {
    match e {
        FileError::Syntax { message, .. } => prop_assert!(
            locates(message, fields),
            "`{message}` names no field and no line, for:\n{text}"
        ),
        FileError::Invalid { source, .. } => prop_assert!(
            !source.field.is_empty() && e.to_string().contains(&source.field),
            "{e}"
        ),
        FileError::TooLarge { .. } => prop_assert!(false, "a small file is too large: {e}"),
    }
    Ok(())
}

/// (b) a structured edit of a fixture: no panic; a refusal names the edited field.
fn file_field_edit(
    kind: &FileKind,
    fixture: Index,
    at: Index,
    edit: &FieldEdit,
    format: FileFormat,
) -> Result<(), TestCaseError> {
    let fixture = fixture.get(&kind.fixtures);
    let all = paths(fixture);
    let edited = apply(fixture, pick(at, &all), edit);
    let Some(text) = document_text(&edited.value, format) else {
        return Ok(()); // no TOML form (a null, an integer beyond i64)
    };
    let Err(e) = (kind.decode)(&text, format) else {
        return Ok(());
    };
    match &e {
        FileError::Syntax { message, .. } => prop_assert!(
            message.contains(&edited.word),
            "{edit:?} at {}: `{message}` does not name `{}`, for:\n{text}",
            edited.path,
            edited.word
        ),
        FileError::Invalid { source, .. } => prop_assert!(
            source.field.contains(&edited.word) || top_of(&source.field) == edited.top,
            "{edit:?} at {}: {e} names another field than `{}`",
            edited.path,
            edited.word
        ),
        FileError::TooLarge { .. } => prop_assert!(false, "{e}"),
    }
    Ok(())
}

/// The first name of a dotted field path (`stages` of `stages[2].percent`).
fn top_of(field: &str) -> &str {
    field.split(['.', '[']).next().unwrap_or_default()
}

macro_rules! file_properties {
    ($($kind:ident: $arbitrary:ident, $bytes:ident, $fields:ident;)*) => {
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $arbitrary(
                    doc in document($kind.keys.clone()),
                    format in any_format(),
                    soup in soup($kind.keys.clone()),
                    any in any::<String>(),
                ) {
                    file_arbitrary(&$kind, &doc, format, &soup, &any);
                }

                #[test]
                fn $bytes(fixture in any::<Index>(), format in any_format(), edits in byte_edits()) {
                    file_byte_edits(&$kind, fixture, format, &edits)?;
                }

                #[test]
                fn $fields(
                    fixture in any::<Index>(),
                    at in any::<Index>(),
                    edit in field_edit(),
                    format in any_format(),
                ) {
                    file_field_edit(&$kind, fixture, at, &edit, format)?;
                }
            )*
        }
    };
}

file_properties! {
    ARTIFACTS: artifact_any_input_never_panics, artifact_byte_edits_are_located, artifact_field_edits_name_the_field;
    BUNDLES: bundle_any_input_never_panics, bundle_byte_edits_are_located, bundle_field_edits_name_the_field;
    PLANS: plan_any_input_never_panics, plan_byte_edits_are_located, plan_field_edits_name_the_field;
    GATE_POLICIES: gate_policy_any_input_never_panics, gate_policy_byte_edits_are_located, gate_policy_field_edits_name_the_field;
    REDACTION_POLICIES: redaction_policy_any_input_never_panics, redaction_policy_byte_edits_are_located, redaction_policy_field_edits_name_the_field;
}

// ---------------------------------------------------------------------------------------------
// Release windows (TOML and JSON; errors are `FieldError`s)
// ---------------------------------------------------------------------------------------------

fn windows_decode(text: &str, format: FileFormat) -> Result<ReleaseWindows, String> {
    let decoded = match format {
        FileFormat::Toml => ReleaseWindows::from_toml(text),
        FileFormat::Json => ReleaseWindows::from_json(text),
    };
    match decoded {
        Ok(w) => {
            // What a worker does next with windows it read: ask whether they are open now.
            let compiled = w
                .compile()
                .map_err(|e| format!("compiled, then refused: {e}"))?;
            let _ = compiled.is_open(T0);
            Ok(w)
        }
        Err(e) => {
            assert!(!e.field.is_empty(), "an error without a field: {e:?}");
            Err(e.to_string())
        }
    }
}

static WINDOWS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let rich = windows(
        r#"
timezone = "Europe/Berlin"

[[open]]
cron = "0 0 9 * * Mon-Fri"
duration = "7h"

[[open]]
cron = "0 30 22 * * Sat"
duration = "1h30m"
note = "weekend batch"

[[closed]]
cron = "0 0 12 * * Fri"
duration = "12h"
note = "no Friday afternoon releases"
"#,
    );
    vec![to_value(&rich), json!({ "timezone": "UTC" })]
});

static WINDOW_KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut keys = BTreeSet::new();
    WINDOWS.iter().for_each(|w| keys_of(w, &mut keys));
    keys.into_iter().collect()
});

proptest! {
    #![proptest_config(config())]

    #[test]
    fn windows_any_input_never_panics(
        doc in document(WINDOW_KEYS.clone()),
        format in any_format(),
        soup in soup(WINDOW_KEYS.clone()),
        any in any::<String>(),
    ) {
        if let Some(text) = document_text(&doc, format) {
            let _ = windows_decode(&text, format);
        }
        let _ = windows_decode(&soup, format);
        let _ = windows_decode(&any, format);
    }

    #[test]
    fn windows_byte_edits_are_located(
        fixture in any::<Index>(),
        format in any_format(),
        edits in byte_edits(),
    ) {
        let text = document_text(fixture.get(&WINDOWS), format).unwrap();
        let edited = text_of(&apply_bytes(text.as_bytes(), &edits));
        if let Err(e) = windows_decode(&edited, format) {
            let fields: BTreeSet<String> = WINDOW_KEYS.iter().cloned().chain(["windows".into()]).collect();
            prop_assert!(locates(&e, &fields), "`{e}` for:\n{edited}");
        }
    }

    #[test]
    fn windows_field_edits_name_the_field(
        fixture in any::<Index>(),
        at in any::<Index>(),
        edit in field_edit(),
        format in any_format(),
    ) {
        let fixture = fixture.get(&WINDOWS);
        let edited = apply(fixture, pick(at, &paths(fixture)), &edit);
        if let Some(text) = document_text(&edited.value, format) {
            if let Err(e) = windows_decode(&text, format) {
                prop_assert!(
                    e.contains(&edited.word),
                    "{edit:?} at {}: `{e}` does not name `{}`, for:\n{text}",
                    edited.path,
                    edited.word
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outcome messages
// ---------------------------------------------------------------------------------------------

fn outcome(n: u32) -> Value {
    json!({
        "prompt": PROMPT,
        "version": vid(2).to_string(),
        "release": rid(1).to_string(),
        "arm": "candidate",
        "unit": format!("user-{n}"),
        "attrs": { "geo": "eu", "tier": "internal" },
        "request_id": format!("req-{n}"),
        "fallback": false,
        "escalated": true,
        "manually_corrected": false,
        "refusal": false,
        "latency_ms": 120.5,
        "tokens_in": 300,
        "tokens_out": 80,
        "cost_usd": 0.002,
        "feedback": { "tag": "hallucinated_field", "example": "invented an order_id" },
    })
}

static OUTCOME_MESSAGES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let mut minimal = outcome(3);
    for k in ["release", "arm", "unit", "attrs", "cost_usd", "feedback"] {
        minimal.as_object_mut().unwrap().remove(k);
    }
    vec![
        outcome(1),
        json!([outcome(1), minimal.clone(), outcome(2)]),
        minimal,
    ]
});

static OUTCOME_KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut keys = BTreeSet::new();
    OUTCOME_MESSAGES.iter().for_each(|m| keys_of(m, &mut keys));
    keys.into_iter().collect()
});

/// Does an outcome error locate its problem: a position, a field, or the message's shape?
fn outcome_error_located(reason: &str) -> bool {
    let fields: BTreeSet<String> = OUTCOME_KEYS.iter().cloned().collect();
    locates(reason, &fields) || reason.starts_with("an outcome message is a JSON object or array")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn outcome_any_message_never_panics(
        doc in document(OUTCOME_KEYS.clone()),
        many in prop::collection::vec(document(OUTCOME_KEYS.clone()), 0..4),
        soup in soup(OUTCOME_KEYS.clone()),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        for message in [
            serde_json::to_vec(&doc).unwrap(),
            serde_json::to_vec(&many).unwrap(),
            soup.into_bytes(),
            bytes,
        ] {
            for result in parse_outcome_message(&message) {
                if let Err(e) = result {
                    prop_assert!(!e.reason.is_empty());
                }
            }
        }
    }

    #[test]
    fn outcome_byte_edits_are_located(fixture in any::<Index>(), edits in byte_edits()) {
        let message = serde_json::to_vec_pretty(fixture.get(&OUTCOME_MESSAGES)).unwrap();
        let edited = apply_bytes(&message, &edits);
        for e in parse_outcome_message(&edited).into_iter().filter_map(Result::err) {
            prop_assert!(
                outcome_error_located(&e.reason),
                "`{}` for:\n{}",
                e.reason,
                text_of(&edited)
            );
        }
    }

    #[test]
    fn outcome_field_edits_name_the_field(
        fixture in any::<Index>(),
        at in any::<Index>(),
        edit in field_edit(),
    ) {
        let fixture = fixture.get(&OUTCOME_MESSAGES);
        let edited = apply(fixture, pick(at, &paths(fixture)), &edit);
        let message = serde_json::to_vec(&edited.value).unwrap();
        for e in parse_outcome_message(&message).into_iter().filter_map(Result::err) {
            if let (Some(element), Some(index)) = (edited.element, e.index) {
                // Only the edited element is refused.
                prop_assert_eq!(index, element, "{:?} at {}: {}", edit, edited.path, e.reason);
            }
            prop_assert!(
                e.reason.contains(&edited.word) || e.reason.contains(&edited.top),
                "{edit:?} at {}: `{}` does not name `{}`",
                edited.path,
                e.reason,
                edited.word
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing tables (the KV value services resolve against)
// ---------------------------------------------------------------------------------------------

static ROUTING_TABLES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let full = benchmark_table();
    let mut stable_only = full.clone();
    stable_only.rollout = None;
    stable_only
        .artifacts
        .retain(|v, _| Some(v) == full.stable.as_ref());
    vec![to_value(&full), to_value(&stable_only)]
});

static ROUTING_KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut keys = BTreeSet::new();
    ROUTING_TABLES.iter().for_each(|t| keys_of(t, &mut keys));
    keys.into_iter().collect()
});

/// Decodes a routing table and resolves a request against it, as the SDK does.
fn routing_decode(
    bytes: &[u8],
    unit: Option<&str>,
    attributes: &BTreeMap<String, String>,
) -> Result<RoutingTable, String> {
    match RoutingTable::from_json(bytes) {
        Ok(table) => {
            let _ = resolve(&table, unit, attributes);
            Ok(table)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn attributes() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop::sample::select(vec!["user_kind", "intent", "geo", "tier", "x"]);
    let value = prop::sample::select(vec!["internal", "faq", "greeting", "eu", "us", ""]);
    prop::collection::btree_map(
        key.prop_map(str::to_string),
        value.prop_map(str::to_string),
        0..4,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn routing_any_value_never_panics(
        doc in document(ROUTING_KEYS.clone()),
        soup in soup(ROUTING_KEYS.clone()),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        unit in prop::option::of(any::<String>()),
        attrs in attributes(),
    ) {
        for value in [serde_json::to_vec(&doc).unwrap(), soup.into_bytes(), bytes] {
            let _ = routing_decode(&value, unit.as_deref(), &attrs);
        }
    }

    #[test]
    fn routing_byte_edits_are_located(
        fixture in any::<Index>(),
        edits in byte_edits(),
        unit in prop::option::of(any::<String>()),
        attrs in attributes(),
    ) {
        let value = serde_json::to_vec_pretty(fixture.get(&ROUTING_TABLES)).unwrap();
        let edited = apply_bytes(&value, &edits);
        if let Err(e) = routing_decode(&edited, unit.as_deref(), &attrs) {
            let fields: BTreeSet<String> = ROUTING_KEYS.iter().cloned().collect();
            prop_assert!(locates(&e, &fields), "`{e}` for:\n{}", text_of(&edited));
        }
    }

    #[test]
    fn routing_field_edits_name_the_field(
        fixture in any::<Index>(),
        at in any::<Index>(),
        edit in field_edit(),
        unit in prop::option::of(any::<String>()),
        attrs in attributes(),
    ) {
        let fixture = fixture.get(&ROUTING_TABLES);
        let edited = apply(fixture, pick(at, &paths(fixture)), &edit);
        let value = serde_json::to_vec(&edited.value).unwrap();
        if let Err(e) = routing_decode(&value, unit.as_deref(), &attrs) {
            prop_assert!(
                e.contains(&edited.word),
                "{edit:?} at {}: `{e}` does not name `{}`",
                edited.path,
                edited.word
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ledger envelopes: the wire JSON, and the stored bytes every reader verifies
// ---------------------------------------------------------------------------------------------

/// The wire JSON of an unsigned envelope of every kind.
static ENVELOPES: LazyLock<Vec<Value>> =
    LazyLock::new(|| every_kind().log.iter().map(to_value).collect());

/// A signed ledger (one release cycle and the roster) and its verifier after it.
static SIGNED: LazyLock<SignedLedger> = LazyLock::new(|| generated_ledger(1));

static ENVELOPE_KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut keys = BTreeSet::new();
    ENVELOPES.iter().for_each(|e| keys_of(e, &mut keys));
    keys.into_iter().collect()
});

/// Observes `bytes` as a new message after the signed ledger; a decoding finding must locate
/// its problem. Returns the finding, if any.
fn observe_after_ledger(subject: &str, bytes: &[u8]) -> Option<pledger_core::verify::Finding> {
    let mut verifier = SIGNED.verifier.clone();
    let sequence = (SIGNED.entries.len() as u64 + 1) * 100;
    match verifier.observe(sequence, subject, bytes) {
        Verdict::Accepted(_) => None,
        Verdict::Ignored(f) => {
            assert_eq!(f.sequence, sequence);
            Some(f)
        }
    }
}

fn stored_message() -> impl Strategy<Value = (String, Vec<u8>)> {
    any::<Index>().prop_map(|i| {
        let entry = i.get(&SIGNED.entries);
        (entry.subject.clone(), entry.bytes.clone())
    })
}

fn subject() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Index>().prop_map(|i| i.get(&SIGNED.entries).subject.clone()),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn envelope_any_bytes_never_panic(
        doc in document(ENVELOPE_KEYS.clone()),
        soup in soup(ENVELOPE_KEYS.clone()),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        subject in subject(),
    ) {
        for message in [serde_json::to_vec(&doc).unwrap(), soup.into_bytes(), bytes] {
            let _ = serde_json::from_slice::<Envelope>(&message);
            let _ = Envelope::from_json(&message);
            let mut fresh = LedgerVerifier::new();
            let _ = fresh.observe(1, &subject, &message);
            let _ = observe_after_ledger(&subject, &message);
        }
    }

    #[test]
    fn envelope_field_edits_name_the_field(
        fixture in any::<Index>(),
        at in any::<Index>(),
        edit in field_edit(),
    ) {
        let fixture = fixture.get(&ENVELOPES);
        let edited = apply(fixture, pick(at, &paths(fixture)), &edit);
        let bytes = serde_json::to_vec(&edited.value).unwrap();
        let _ = serde_json::from_slice::<Envelope>(&bytes);
        if let Err(e) = Envelope::from_json(&bytes) {
            prop_assert!(
                e.contains(&edited.word),
                "{edit:?} at {}: `{e}` does not name `{}`",
                edited.path,
                edited.word
            );
        }
    }

    #[test]
    fn stored_event_byte_edits_are_ignored_and_located(
        (subject, bytes) in stored_message(),
        edits in byte_edits(),
    ) {
        let edited = apply_bytes(&bytes, &edits);
        if let Some(f) = observe_after_ledger(&subject, &edited) {
            if f.check == Check::Decoding {
                let fields: BTreeSet<String> = ENVELOPE_KEYS.iter().cloned().collect();
                prop_assert!(locates(&f.reason, &fields), "{f}, for:\n{}", text_of(&edited));
            }
        }
    }

    /// Structured edits of signed, stored events: decoding findings name the field; an edit
    /// that still decodes is signed again by the actor's key and observed, which takes it
    /// through every later check.
    #[test]
    fn stored_event_field_edits_are_named_or_checked_further(
        (subject, bytes) in stored_message(),
        at in any::<Index>(),
        edit in field_edit(),
    ) {
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        let edited = apply(&stored, pick(at, &paths(&stored)), &edit);
        let canonical = pledger_core::artifact::canonical_json_of(&edited.value).into_bytes();
        if let Some(f) = observe_after_ledger(&subject, &canonical) {
            if f.check == Check::Decoding {
                prop_assert!(
                    f.reason.contains(&edited.word),
                    "{edit:?} at {}: `{}` does not name `{}`",
                    edited.path,
                    f.reason,
                    edited.word
                );
            }
        }
        if let Ok(envelope) = Envelope::from_json(&canonical) {
            let key = SIGNED
                .keys
                .get(envelope.actor.as_str())
                .unwrap_or(&SIGNED.keys["root-admin"])
                .clone();
            let aggregate = envelope.event.aggregate();
            let head = match aggregate.prompt() {
                Some(p) => SIGNED.verifier.family_head(p),
                None => SIGNED.verifier.fleet_head(&aggregate),
            };
            let sealed = seal(envelope, head, &key).unwrap();
            let _ = observe_after_ledger(&subject_for(&aggregate), &sealed.bytes);
            let _ = observe_after_ledger(&subject, &sealed.bytes);
        }
    }
}

#[test]
fn every_envelope_fixture_decodes() {
    for e in ENVELOPES.iter() {
        Envelope::from_json(&serde_json::to_vec(e).unwrap()).unwrap();
    }
    assert!(SIGNED.entries.len() > 20);
    assert_eq!(CURRENT_SCHEMA_VERSION, 1);
}

// ---------------------------------------------------------------------------------------------
// Field values: ids, times, durations, roles, keys, cron expressions, weeks, NATS URLs
// ---------------------------------------------------------------------------------------------

/// Every field-value parser of the core, on one string; a refusal names its field.
fn parse_field_values(raw: &str) {
    let field_errors = [
        PromptName::parse(raw).err(),
        VersionId::parse(raw).err(),
        ReleaseId::parse(raw).err(),
        Actor::parse(raw).err(),
        Timestamp::parse_rfc3339(raw).err(),
        DurationSpec::parse(raw).err(),
        Role::parse(raw).err(),
        PublicKey::parse(raw).err(),
        CronSchedule::parse(raw, "UTC").err(),
        CronSchedule::parse("0 0 9 * * Mon", raw).err(),
        parse_week(raw, "Europe/Berlin").err(),
        parse_week("2026-W48", raw).err(),
    ];
    for e in field_errors.into_iter().flatten() {
        assert!(!e.field.is_empty(), "{e:?}");
    }
    if let Ok(v) = VersionId::parse(raw) {
        let _ = (v.short(), v.matches_prefix(raw));
    }
    if let Ok(t) = Timestamp::parse_rfc3339(raw) {
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t), "{raw}");
    }
    if let Ok(schedule) = CronSchedule::parse(raw, "Europe/Berlin") {
        let _ = (schedule.next_after(T0), schedule.last_at_or_before(T0));
    }
    let _ = pledger_core::nats_url::credentials_of(raw);
    let _ = pledger_core::nats_url::redact_all(raw);
}

fn field_value() -> impl Strategy<Value = String> {
    let mutated = (prop::sample::select(sample_strings()), byte_edits())
        .prop_map(|(s, edits)| text_of(&apply_bytes(s.as_bytes(), &edits)));
    let url = (
        prop::sample::select(vec!["nats://", "tls://", "", "nats://u:p@", "nats://@"]),
        "[a-z%0-9:@/,._-]{0,24}",
    )
        .prop_map(|(a, b)| format!("{a}{b}"));
    let cron = prop::collection::vec(
        prop::sample::select(vec![
            "0", "*", "59", "60", "1-5", "5-1", "*/15", "*/0", "?", "Mon-Fri", "Sun", "L", "#",
            ",", "1,2", "2100", "1969", "0-59/7", "Feb", "31", "-", "/",
        ]),
        0..9,
    )
    .prop_map(|fields| fields.join(" "));
    prop_oneof![
        prop::sample::select(sample_strings()),
        mutated,
        url,
        cron,
        "[0-9]{4}-W[0-9]{1,2}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,4})?Z",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn field_values_never_panic_and_name_their_field(raw in field_value()) {
        parse_field_values(&raw);
    }
}

// ---------------------------------------------------------------------------------------------
// What the properties found, kept as plain regression tests with the minimal inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn a_leap_second_on_the_last_day_of_9999_is_refused() {
    // It parsed to an instant in year 10000, which wrote back as `10000-01-01T00:00:00.999Z`
    // and could not be read again.
    for raw in ["9999-12-31T23:59:60Z", "9999-12-31T23:59:60.999999Z"] {
        let e = Timestamp::parse_rfc3339(raw).unwrap_err();
        assert_eq!(e.field, "timestamp", "{raw}");
    }
    let last = Timestamp::parse_rfc3339("9999-12-31T23:59:59.999Z").unwrap();
    assert_eq!(last.to_rfc3339(), "9999-12-31T23:59:59.999Z");
    let leap = Timestamp::parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
    assert_eq!(leap.to_rfc3339(), "2017-01-01T00:00:00.000Z");
}

/// Type errors in JSON files named only a line and column (`invalid type: string "hot",
/// expected f64 at line 1 column 40`); they now start with the path to the value.
#[test]
fn json_type_errors_in_files_name_the_field() {
    let mut artifact = to_value(&version(1));
    artifact["model"]["temperature"] = json!("hot");
    let text = serde_json::to_string(&artifact).unwrap();
    let e = Artifact::from_text(&text, FileFormat::Json).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("artifact file is not valid JSON: model.temperature: invalid type"),
        "{e}"
    );
    let mut plan = to_value(&standard_plan());
    plan["stages"][2]["min_samples"] = json!(-1);
    let e = RolloutPlan::from_text(&plan.to_string(), FileFormat::Json).unwrap_err();
    assert!(
        e.to_string()
            .contains("stages[2].min_samples: invalid value"),
        "{e}"
    );
    // TOML: the path too, where the parser's snippet shows only the value's own line.
    let text = "instructions = \"x\"\nknown_limitations = [\n  1,\n]\n[model]\nfamily = \"f\"\ntemperature = 0.2\n[tools]\nschema_version = \"none\"\n";
    let e = Artifact::from_text(text, FileFormat::Toml).unwrap_err();
    assert!(e.to_string().contains("known_limitations[0]: "), "{e}");
    // Trailing characters after a JSON document are still refused, with their position.
    let e = GatePolicy::from_text("{} x", FileFormat::Json).unwrap_err();
    assert!(
        e.to_string()
            .contains("trailing characters at line 1 column 4"),
        "{e}"
    );
}

/// A bad envelope or payload field named no field (`invalid type: null, expected a string at
/// line 1 column 13`, `payload of ...: invalid type ...`); inside an internally tagged `notice`
/// serde names only `notice`, so the decoder finds the member at fault.
#[test]
fn envelope_errors_name_the_field() {
    let review = ENVELOPES
        .iter()
        .find(|e| e["kind"] == "release.review_submitted")
        .unwrap();
    let refused = |edit: &dyn Fn(&mut Value)| {
        let mut v = review.clone();
        edit(&mut v);
        Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err()
    };
    let e = refused(&|v| v["actor"] = Value::Null);
    assert!(e.starts_with("actor: invalid type: null"), "{e}");
    let e = refused(&|v| v["payload"]["verdict"] = json!(1));
    assert!(
        e.starts_with("payload of `release.review_submitted`: verdict: invalid type"),
        "{e}"
    );
    let notice = ENVELOPES
        .iter()
        .find(|e| e["kind"] == "release.notice_raised")
        .unwrap();
    for (member, bad) in [
        ("waiting", Value::Null),
        ("candidate", json!(1)),
        ("missing", json!([""])),
    ] {
        let mut v = notice.clone();
        v["payload"]["notice"][member] = bad;
        let e = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "payload of `release.notice_raised`: notice.{member}"
            )),
            "{e}"
        );
    }
    let mut v = notice.clone();
    v["payload"]["notice"]["notice"] = json!("teleported");
    let e = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(
        e.contains("notice.notice: unknown variant `teleported`"),
        "{e}"
    );
    // An aggregate_id that does not match the payload names the payload's field too.
    let digest = ENVELOPES
        .iter()
        .find(|e| e["kind"] == "fleet.digest_recorded")
        .unwrap();
    let mut v = digest.clone();
    v["payload"]["week"] = json!("");
    let e = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(
        e.contains("aggregate_id `fleet:digest-2026-W48`") && e.contains("(from its `week`)"),
        "{e}"
    );
    // A stored event without its signature says which member it lacks.
    let entry = &SIGNED.entries[3];
    let mut stored: Value = serde_json::from_slice(&entry.bytes).unwrap();
    stored.as_object_mut().unwrap().remove("signature");
    let f = observe_after_ledger(&entry.subject, &serde_json::to_vec(&stored).unwrap()).unwrap();
    assert_eq!(f.check, Check::Decoding);
    assert!(f.reason.contains("`signature`"), "{f}");
}

/// The SDK decoded routing tables with `serde_json::from_slice`, whose errors named no field.
#[test]
fn routing_errors_name_the_field() {
    let mut table = to_value(&benchmark_table());
    table["rollout"]["stages"][1]["percent"] = json!("all");
    let e = RoutingTable::from_json(&serde_json::to_vec(&table).unwrap()).unwrap_err();
    assert_eq!(e.field, "rollout.stages[1].percent");
    assert!(e.message.starts_with("invalid type: string \"all\""), "{e}");
    let mut table = to_value(&benchmark_table());
    table.as_object_mut().unwrap().remove("prompt");
    let e = RoutingTable::from_json(&serde_json::to_vec(&table).unwrap()).unwrap_err();
    assert_eq!(e.field, "routing");
    assert!(e.message.starts_with("missing field `prompt`"), "{e}");
    let e = RoutingTable::from_json(b"{\"prompt\": ").unwrap_err();
    assert_eq!(e.field, "prompt");
    assert!(e.message.contains("line 1 column 11"), "{e}");
    let round_trip = RoutingTable::from_json(&serde_json::to_vec(&benchmark_table()).unwrap());
    assert_eq!(round_trip.unwrap(), benchmark_table());
}
