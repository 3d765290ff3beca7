//! Outcome events: what services report about each request served with a prompt version.
//! Any NATS client can publish them on `pledger.outcomes.<prompt>`, one JSON object or a JSON
//! array of them per message. The field names are a contract with those services.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{PromptName, ReleaseId, VersionId};
use crate::routing::Arm;

/// Longest feedback example kept (bytes); longer ones are refused, not truncated silently.
pub const MAX_FEEDBACK_EXAMPLE_BYTES: usize = 4096;
/// Most request attributes per outcome.
pub const MAX_ATTRS: usize = 32;

/// One request's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub prompt: PromptName,
    /// The version that served the request.
    pub version: VersionId,
    /// The release whose rollout assigned the arm, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    /// `candidate` or `baseline`, when known; otherwise derived from `version` and the
    /// routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<Arm>,
    /// The stage visit the request was resolved under: the routing table's
    /// `rollout.stage_visit`, copied by the SDK from the resolution. The canary monitor counts
    /// the outcome in that visit of the stage even when it processes the outcome after the
    /// rollout moved on; without it, the outcome counts in the stage current when it is
    /// processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_visit: Option<String>,
    /// The sticky unit key the request was bucketed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Request attributes (`user_kind`, `intent`, `geo`, `tenant`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    pub request_id: String,
    /// The service fell back (to a default answer, another model, a human queue).
    pub fallback: bool,
    /// The conversation was escalated to a person.
    pub escalated: bool,
    /// A person corrected the answer afterwards.
    pub manually_corrected: bool,
    /// The model refused.
    pub refusal: bool,
    pub latency_ms: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub tag: FeedbackTag,
    /// An excerpt showing the failure (redacted before it is stored).
    pub example: String,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackTag {
    UnexpectedRefusal,
    WrongToolSequence,
    HallucinatedField,
    ExcessiveVerbosity,
}

/// Why (part of) an outcome message was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{reason}")]
pub struct OutcomeError {
    /// Position in the message's array (`None` for a single object or an unreadable message).
    pub index: Option<usize>,
    pub reason: String,
}

impl Outcome {
    /// Value rules the types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.request_id.trim().is_empty() {
            return Err("request_id must not be empty".into());
        }
        if !(self.latency_ms.is_finite() && self.latency_ms >= 0.0) {
            return Err(format!(
                "latency_ms {} must be a finite number >= 0",
                self.latency_ms
            ));
        }
        if let Some(c) = self.cost_usd {
            if !(c.is_finite() && c >= 0.0) {
                return Err(format!("cost_usd {c} must be a finite number >= 0"));
            }
        }
        if let Some(v) = &self.stage_visit {
            if !crate::routing::StageVisit::is_valid(v) {
                return Err(format!(
                    "stage_visit `{v}` is not <release>/<stage index>/<entered at, unix ms>"
                ));
            }
        }
        if self.attrs.len() > MAX_ATTRS {
            return Err(format!(
                "{} attrs is over the limit of {MAX_ATTRS}",
                self.attrs.len()
            ));
        }
        if let Some(f) = &self.feedback {
            if f.example.len() > MAX_FEEDBACK_EXAMPLE_BYTES {
                return Err(format!(
                    "feedback.example is {} bytes, over {MAX_FEEDBACK_EXAMPLE_BYTES}",
                    f.example.len()
                ));
            }
        }
        Ok(())
    }
}

/// Parses one outcome message: a JSON object or an array of them. Each element is decoded and
/// validated on its own, so one bad element does not cost the good ones. A message that is not
/// JSON at all, or neither an object nor an array, is one error for the whole message.
pub fn parse_outcome_message(payload: &[u8]) -> Vec<Result<Outcome, OutcomeError>> {
    // Fast path: the whole message decodes as typed outcomes in one pass (the usual case).
    // Only a message with a bad element takes the slow path below, which attributes errors.
    let validated = |o: Outcome, index: Option<usize>| {
        o.validate()
            .map(|()| o)
            .map_err(|reason| OutcomeError { index, reason })
    };
    // UTF-8 checked once for the whole message, not string by string while decoding.
    let text = std::str::from_utf8(payload).ok();
    match (payload.iter().find(|b| !b.is_ascii_whitespace()), text) {
        (Some(b'['), Some(text)) => {
            if let Ok(list) = serde_json::from_str::<Vec<Outcome>>(text) {
                return list
                    .into_iter()
                    .enumerate()
                    .map(|(i, o)| validated(o, Some(i)))
                    .collect();
            }
        }
        (Some(b'{'), Some(text)) => {
            if let Ok(one) = serde_json::from_str::<Outcome>(text) {
                return vec![validated(one, None)];
            }
        }
        _ => {}
    }
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return vec![Err(OutcomeError {
                index: None,
                reason: format!("not JSON: {e}"),
            })]
        }
    };
    let one = |v: serde_json::Value, index: Option<usize>| -> Result<Outcome, OutcomeError> {
        // The path names the field a type error is in (`escalated: invalid type ...`).
        let outcome: Outcome = serde_path_to_error::deserialize(v).map_err(|e| OutcomeError {
            index,
            reason: format!("not an outcome: {}: {}", e.path(), e.inner()),
        })?;
        outcome
            .validate()
            .map_err(|reason| OutcomeError { index, reason })?;
        Ok(outcome)
    };
    match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| one(v, Some(i)))
            .collect(),
        v @ serde_json::Value::Object(_) => vec![one(v, None)],
        other => vec![Err(OutcomeError {
            index: None,
            reason: format!(
                "an outcome message is a JSON object or array, not {}",
                json_type(&other)
            ),
        })],
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

pub use crate::names::outcome_subject;
