//! The one place that knows how projection values are stored: bincode 2 (serde mode) behind
//! a leading format-version byte. Swapping bincode means changing this module only.

use serde::{de::DeserializeOwned, Serialize};

/// The format-version byte written before every stored value.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored value is empty (no format-version byte)")]
    Empty,
    #[error("stored value has format version {found}; this build reads {FORMAT_VERSION}")]
    UnknownFormat { found: u8 },
    #[error("stored value does not decode: {0}")]
    Decode(String),
    #[error("value does not encode: {0}")]
    Encode(String),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The shape values take inside bincode. Domain types use serde attributes that only
/// self-describing formats support (`skip_serializing_if`, untagged enums, flattened maps);
/// bincode is not self-describing, so values go through this explicit tree: the type's own
/// serde rules apply on both sides, and bincode sees a plain, tagged structure.
#[derive(Serialize, serde::Deserialize)]
enum Tree {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

impl Tree {
    fn from_json(v: serde_json::Value) -> Tree {
        use serde_json::Value;
        match v {
            Value::Null => Tree::Null,
            Value::Bool(b) => Tree::Bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Tree::U64(u),
                (None, Some(i), _) => Tree::I64(i),
                (_, _, f) => Tree::F64(f.unwrap_or(f64::NAN)),
            },
            Value::String(s) => Tree::Str(s),
            Value::Array(a) => Tree::Seq(a.into_iter().map(Tree::from_json).collect()),
            Value::Object(m) => Tree::Map(
                m.into_iter()
                    .map(|(k, v)| (k, Tree::from_json(v)))
                    .collect(),
            ),
        }
    }

    fn into_json(self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(b),
            Tree::U64(u) => Value::from(u),
            Tree::I64(i) => Value::from(i),
            Tree::F64(f) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Tree::Str(s) => Value::String(s),
            Tree::Seq(a) => Value::Array(a.into_iter().map(Tree::into_json).collect()),
            Tree::Map(m) => Value::Object(m.into_iter().map(|(k, v)| (k, v.into_json())).collect()),
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let tree = Tree::from_json(
        serde_json::to_value(value).map_err(|e| CodecError::Encode(e.to_string()))?,
    );
    let mut out = vec![FORMAT_VERSION];
    let body = bincode::serde::encode_to_vec(&tree, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownFormat { found: version });
    }
    let (tree, read): (Tree, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != body.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes",
            body.len() - read
        )));
    }
    serde_json::from_value(tree.into_json()).map_err(|e| CodecError::Decode(e.to_string()))
}
