//! Differences between two artifacts: field-level changes and a line diff of the instructions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::artifact::Artifact;

/// One field whose value differs. Values are compact JSON; `None` means absent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One line of the instructions diff.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffLine {
    /// `" "` unchanged, `"-"` removed, `"+"` added.
    pub tag: &'static str,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArtifactDiff {
    /// Changes of every field except `instructions`, by dotted path.
    pub fields: Vec<FieldChange>,
    /// Whether the instructions differ.
    pub instructions_changed: bool,
    /// Unified line diff of the instructions with three lines of context (empty if unchanged).
    pub instructions: Vec<DiffLine>,
}

impl ArtifactDiff {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && !self.instructions_changed
    }
}

pub fn diff_artifacts(from: &Artifact, to: &Artifact) -> ArtifactDiff {
    let mut left = BTreeMap::new();
    let mut right = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(from).expect("serializes"),
        &mut left,
    );
    flatten(
        "",
        &serde_json::to_value(to).expect("serializes"),
        &mut right,
    );
    left.remove("instructions");
    right.remove("instructions");
    let mut keys: Vec<&String> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    let fields = keys
        .into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            from: left.get(k).cloned(),
            to: right.get(k).cloned(),
        })
        .collect();

    let instructions_changed = from.instructions != to.instructions;
    let mut instructions = Vec::new();
    if instructions_changed {
        let diff = similar::TextDiff::from_lines(&from.instructions, &to.instructions);
        for group in diff.grouped_ops(3) {
            for op in group {
                for change in diff.iter_changes(&op) {
                    let tag = match change.tag() {
                        similar::ChangeTag::Equal => " ",
                        similar::ChangeTag::Delete => "-",
                        similar::ChangeTag::Insert => "+",
                    };
                    instructions.push(DiffLine {
                        tag,
                        text: change.value().trim_end_matches('\n').to_string(),
                    });
                }
            }
        }
    }
    ArtifactDiff {
        fields,
        instructions_changed,
        instructions,
    }
}

/// Flattens objects into dotted paths; arrays, scalars and empty objects are leaves (compact
/// JSON). An empty object is kept so that `{}` and an absent field, which are different
/// versions, still differ.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}
