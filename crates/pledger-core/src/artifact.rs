//! Prompt artifacts: the structured, immutable content of a prompt version, its canonical
//! form and its content-addressed id.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{parse_file, FieldError, FileError, FileFormat};
use crate::ids::VersionId;

/// Largest artifact file accepted (bytes). Events carry the artifact, and NATS's default
/// max_payload is 1 MiB.
pub const MAX_ARTIFACT_BYTES: usize = 256 * 1024;

/// A prompt version's content. The same field names in TOML and JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// The instruction text (system prompt).
    pub instructions: String,
    pub model: ModelSettings,
    pub tools: ToolSettings,
    /// Retrieval settings; open-ended beyond the named keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalSettings>,
    /// Known limitations of this version; required, may be empty.
    pub known_limitations: Vec<String>,
    /// An optional change note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model family, e.g. `gpt-4o` or `claude-sonnet`.
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sampling temperature, 0 to 2.
    pub temperature: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSettings {
    /// Version of the tool schema the prompt is written against; `"none"` without tools.
    pub schema_version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RetrievalSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<BTreeMap<String, serde_json::Value>>,
    /// Any further retrieval setting, kept as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Artifact {
    /// Reads an artifact from TOML or JSON text and checks its values.
    pub fn from_text(text: &str, format: FileFormat) -> Result<Artifact, FileError> {
        let artifact: Artifact = parse_file("artifact", text, format, MAX_ARTIFACT_BYTES)?;
        artifact.validate().map_err(|source| FileError::Invalid {
            kind: "artifact",
            source,
        })?;
        Ok(artifact)
    }

    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.instructions.trim().is_empty() {
            return Err(FieldError::new("instructions", "must not be empty"));
        }
        if self.model.family.trim().is_empty() {
            return Err(FieldError::new("model.family", "must not be empty"));
        }
        let t = self.model.temperature;
        if !(0.0..=2.0).contains(&t) || t.is_nan() {
            return Err(FieldError::new(
                "model.temperature",
                format!("{t} is outside 0 to 2"),
            ));
        }
        if let Some(p) = self.model.top_p {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(FieldError::new(
                    "model.top_p",
                    format!("{p} is outside 0 to 1"),
                ));
            }
        }
        if self.model.max_output_tokens == Some(0) {
            return Err(FieldError::new(
                "model.max_output_tokens",
                "must be at least 1",
            ));
        }
        if self.tools.schema_version.trim().is_empty() {
            return Err(FieldError::new(
                "tools.schema_version",
                "must not be empty (write \"none\" when the prompt uses no tools)",
            ));
        }
        Ok(())
    }

    /// The canonical form: compact JSON with object keys sorted and absent optional fields
    /// left out. The same content gives the same bytes whatever the file's format or key order.
    pub fn canonical_json(&self) -> String {
        canonical_json_of(self)
    }

    /// The content-addressed version id: SHA-256 of the canonical form.
    pub fn version_id(&self) -> VersionId {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        VersionId::from_digest_hex(&hex(&digest))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// SHA-256 of a value's compact JSON (sorted keys), as hex: digests of bundles and policies.
pub fn json_digest<T: Serialize>(value: &T) -> String {
    hex(&Sha256::digest(canonical_json_of(value).as_bytes()))
}

/// Compact JSON with every object's keys in sorted order, at every depth. It does not rely on
/// serde_json's map type (another crate may turn on `preserve_order`).
pub fn canonical_json_of<T: Serialize>(value: &T) -> String {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    let value = serde_json::to_value(value).expect("value serializes");
    if maps_are_sorted() {
        serde_json::to_string(&value).expect("value serializes")
    } else {
        serde_json::to_string(&sorted(value)).expect("value serializes")
    }
}

/// Whether serde_json's map keeps its keys sorted (its default; another crate in the build may
/// turn on `preserve_order`, which keeps insertion order instead). Asked once.
fn maps_are_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut map = serde_json::Map::new();
        map.insert("b".into(), serde_json::Value::Null);
        map.insert("a".into(), serde_json::Value::Null);
        map.keys().map(String::as_str).eq(["a", "b"])
    })
}
