//! Evaluation bundles: the offline results a CI pipeline attaches to a release. The field
//! names are a contract with those pipelines: extend them, never rename them.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{parse_file, FieldError, FileError, FileFormat};
use crate::ids::VersionId;

pub const MAX_BUNDLE_BYTES: usize = 512 * 1024;

/// The hard-negative categories every bundle must cover.
pub const HARD_NEGATIVE_CATEGORIES: [&str; 4] = [
    "ambiguous",
    "adversarial",
    "long_context",
    "partial_tool_failure",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalBundle {
    /// The version evaluated: the release's candidate.
    pub candidate: VersionId,
    /// The version compared against: the release's baseline.
    pub baseline: VersionId,
    /// Name of the evaluation suite.
    pub suite: String,
    /// Results by traffic segment.
    pub segments: Vec<SegmentResult>,
    /// Results on hard negatives, keyed by category (`ambiguous`, `adversarial`,
    /// `long_context`, `partial_tool_failure`; more categories may be added).
    pub hard_negatives: BTreeMap<String, PassRates>,
    /// The top regressions against the baseline.
    #[serde(default)]
    pub regressions: Vec<Regression>,
    pub latency_ms: LatencyMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_request: Option<CandidateBaseline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_request_usd: Option<CandidateBaseline>,
    /// User-visible changes the author expects.
    #[serde(default)]
    pub expected_changes: Vec<String>,
    /// Ids of the regression cases this bundle's suite covers (`pledger regressions export`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covers_regressions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentResult {
    pub name: String,
    pub cases: u64,
    pub candidate_pass_rate: f64,
    pub baseline_pass_rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassRates {
    pub cases: u64,
    pub candidate_pass_rate: f64,
    pub baseline_pass_rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    pub case: String,
    pub segment: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyMs {
    pub candidate_p50: f64,
    pub baseline_p50: f64,
    pub candidate_p95: f64,
    pub baseline_p95: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateBaseline {
    pub candidate: f64,
    pub baseline: f64,
}

impl EvalBundle {
    pub fn from_text(text: &str, format: FileFormat) -> Result<EvalBundle, FileError> {
        let bundle: EvalBundle = parse_file("eval bundle", text, format, MAX_BUNDLE_BYTES)?;
        bundle.validate().map_err(|source| FileError::Invalid {
            kind: "eval bundle",
            source,
        })?;
        Ok(bundle)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if self.suite.trim().is_empty() {
            return Err(FieldError::new("suite", "must not be empty"));
        }
        if self.segments.is_empty() {
            return Err(FieldError::new(
                "segments",
                "must list at least one segment",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(FieldError::new(
                    format!("segments[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(FieldError::new(
                    format!("segments[{i}].name"),
                    format!("segment `{}` appears twice", s.name),
                ));
            }
            rate(
                &format!("segments[{i}].candidate_pass_rate"),
                s.candidate_pass_rate,
            )?;
            rate(
                &format!("segments[{i}].baseline_pass_rate"),
                s.baseline_pass_rate,
            )?;
        }
        for (name, r) in &self.hard_negatives {
            rate(
                &format!("hard_negatives.{name}.candidate_pass_rate"),
                r.candidate_pass_rate,
            )?;
            rate(
                &format!("hard_negatives.{name}.baseline_pass_rate"),
                r.baseline_pass_rate,
            )?;
        }
        let l = &self.latency_ms;
        for (field, v) in [
            ("latency_ms.candidate_p50", l.candidate_p50),
            ("latency_ms.baseline_p50", l.baseline_p50),
            ("latency_ms.candidate_p95", l.candidate_p95),
            ("latency_ms.baseline_p95", l.baseline_p95),
        ] {
            non_negative(field, v)?;
        }
        if self.tokens_per_request.is_none() && self.cost_per_request_usd.is_none() {
            return Err(FieldError::new(
                "tokens_per_request",
                "a bundle needs tokens_per_request and/or cost_per_request_usd",
            ));
        }
        for (field, pair) in [
            ("tokens_per_request", &self.tokens_per_request),
            ("cost_per_request_usd", &self.cost_per_request_usd),
        ] {
            if let Some(p) = pair {
                non_negative(&format!("{field}.candidate"), p.candidate)?;
                non_negative(&format!("{field}.baseline"), p.baseline)?;
            }
        }
        Ok(())
    }
}

fn rate(field: &str, v: f64) -> Result<(), FieldError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{v} is not a rate between 0 and 1"),
        ))
    }
}

fn non_negative(field: &str, v: f64) -> Result<(), FieldError> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{v} must be a finite number >= 0"),
        ))
    }
}
