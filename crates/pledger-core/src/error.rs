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

/// Parses `text` as `T` in `format`, mapping parser errors to [`FileError::Syntax`].
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
    match format {
        FileFormat::Json => serde_json::from_str(text).map_err(|e| FileError::Syntax {
            kind,
            format,
            message: e.to_string(),
        }),
        FileFormat::Toml => toml::from_str(text).map_err(|e| FileError::Syntax {
            kind,
            format,
            message: e.to_string().trim_end().replace('\n', " "),
        }),
    }
}
