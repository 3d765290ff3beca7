//! Errors of the pure core: a bad field in a file or argument, and a file that does not parse.

use std::fmt;

/// A value that breaks a field's rule. `field` is the dotted path (`model.temperature`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The format a file was read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Toml,
    Json,
}

impl FileFormat {
    /// Chooses the format from a file name: `.json` is JSON, anything else is TOML.
    pub fn from_path(path: &str) -> FileFormat {
        if path.to_ascii_lowercase().ends_with(".json") {
            FileFormat::Json
        } else {
            FileFormat::Toml
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Toml => "TOML",
            FileFormat::Json => "JSON",
        })
    }
}

/// A file (artifact, bundle, plan, policy) that could not be read as its kind.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FileError {
    /// The text is not valid TOML/JSON for the shape (unknown or missing field, wrong type).
    /// `message` comes from the parser and names the field, line and column.
    #[error("{kind} file is not valid {format}: {message}")]
    Syntax {
        kind: &'static str,
        format: FileFormat,
        message: String,
    },
    /// The shape parsed but a value breaks a rule.
    #[error("{kind} file: {source}")]
    Invalid {
        kind: &'static str,
        source: FieldError,
    },
    /// The file is larger than pledger accepts for its kind.
    #[error("{kind} file is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        kind: &'static str,
        size: usize,
        limit: usize,
    },
}

/// Parses `text` as `T` in `format`, mapping parser errors to [`FileError::Syntax`]. The
/// message starts with the path of the value the parser refused (`model.temperature: invalid
/// type: ...`), then the parser's own words with the line and column.
pub fn parse_file<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    text: &str,
    format: FileFormat,
    limit: usize,
) -> Result<T, FileError> {
    if text.len() > limit {
        return Err(FileError::TooLarge {
            kind,
            size: text.len(),
            limit,
        });
    }
    let syntax = |message: String| FileError::Syntax {
        kind,
        format,
        message,
    };
    match format {
        FileFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                syntax(with_path(&path, e.into_inner().to_string()))
            })?;
            de.end().map_err(|e| syntax(e.to_string()))?;
            Ok(value)
        }
        FileFormat::Toml => serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                syntax(with_path(&path, message.trim_end().replace('\n', " ")))
            }),
    }
}

/// A parser's message after the path of the value it refused (`stages[1].percent: ...`); the
/// root's path (`.`) is left out.
pub(crate) fn with_path(path: &str, message: String) -> String {
    if path.is_empty() || path == "." {
        message
    } else {
        format!("{path}: {message}")
    }
}
