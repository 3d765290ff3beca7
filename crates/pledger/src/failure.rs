//! Failures and their documented exit codes.

use pledger_core::{FieldError, FileError, Rejection};
use pledger_infra::{ExecuteError, InfraError};

/// Documented exit codes (README "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Other = 1,
    Usage = 2,
    Rejected = 3,
    Conflict = 4,
    Unreachable = 5,
    GateFailed = 6,
    /// `audit verify`: history as stored is not what was written.
    Integrity = 7,
    /// `audit verify`: a signed event the rules forbid (a role, admissibility).
    Policy = 8,
    /// `audit verify`: checkpoints do not hold (bad signature, split view, rewritten or truncated).
    Trust = 9,
}

/// Why a command did not succeed: one clear sentence, and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    /// The rule broken, for rejections.
    pub rule: Option<&'static str>,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Usage,
            message: message.into(),
            rule: None,
        }
    }
    pub fn other(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Other,
            message: message.into(),
            rule: None,
        }
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Failure {
        let exit = if r.rule.is_conflict() {
            Exit::Conflict
        } else {
            Exit::Rejected
        };
        Failure {
            exit,
            message: r.to_string(),
            rule: Some(r.rule.code()),
        }
    }
}

impl From<FieldError> for Failure {
    fn from(e: FieldError) -> Failure {
        Failure::usage(e.to_string())
    }
}

impl From<InfraError> for Failure {
    fn from(e: InfraError) -> Failure {
        let exit = match e {
            InfraError::Unreachable { .. } | InfraError::Unanswered(_) => Exit::Unreachable,
            // Who is signing is a usage question: no enrolled key, or a key that is not the
            // identity `--as` names.
            InfraError::NotEnrolled { .. } | InfraError::NotYourKey { .. } => Exit::Usage,
            _ => Exit::Other,
        };
        Failure {
            exit,
            message: e.to_string(),
            rule: None,
        }
    }
}

impl From<ExecuteError> for Failure {
    fn from(e: ExecuteError) -> Failure {
        match e {
            ExecuteError::Rejected(r) => r.into(),
            ExecuteError::Conflict { .. } => Failure {
                exit: Exit::Conflict,
                message: e.to_string(),
                rule: None,
            },
            ExecuteError::Infra(i) => i.into(),
        }
    }
}

/// A file error, prefixed with the file's path.
pub fn file_failure(path: &std::path::Path, e: FileError) -> Failure {
    Failure::usage(format!("{}: {e}", path.display()))
}
