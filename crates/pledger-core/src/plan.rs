//! Rollout plans: stages by traffic segment, guardrails, rollback criteria and the advance
//! policy, written before the rollout starts.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{parse_file, FieldError, FileError, FileFormat};
use crate::ids::DurationSpec;

pub const MAX_PLAN_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    /// Stages in order. Each stage adds its traffic to the candidate's share.
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub guardrails: Guardrails,
    /// Rollback criteria, declared before the rollout starts. A plan without
    /// `rollback.criteria` is refused when it is attached (rule `rollback-criteria-required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
    #[serde(default)]
    pub advance: AdvancePolicy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Request attributes to a value or a list of values; all keys must match. No `match`
    /// means all traffic.
    #[serde(rename = "match", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matches: BTreeMap<String, MatchValue>,
    /// Share of the matching traffic (by sticky unit bucket) that gets the candidate, 0 to 100.
    pub percent: f64,
    /// Outcome samples the canary needs in this stage before it may advance.
    #[serde(default)]
    pub min_samples: u64,
    /// Least time in this stage before it may advance.
    #[serde(default = "zero_duration")]
    pub min_bake: DurationSpec,
}

fn zero_duration() -> DurationSpec {
    DurationSpec::ZERO
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MatchValue {
    One(String),
    Any(Vec<String>),
}

impl MatchValue {
    pub fn accepts(&self, value: &str) -> bool {
        match self {
            MatchValue::One(v) => v == value,
            MatchValue::Any(vs) => vs.iter().any(|v| v == value),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_rate: Option<GuardrailLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_rate: Option<GuardrailLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_correction_rate: Option<GuardrailLimit>,
    /// The candidate's 95th percentile latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<QuantityLimit>,
    /// The candidate's mean tokens per request (`tokens_in + tokens_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_request: Option<QuantityLimit>,
}

/// Names of every guardrail a plan may declare, in the order they are judged.
pub const GUARDRAIL_NAMES: [&str; 5] = [
    "fallback_rate",
    "escalation_rate",
    "manual_correction_rate",
    "latency_p95_ms",
    "tokens_per_request",
];

impl Guardrails {
    /// The declared rate guardrails (`fallback_rate`, `escalation_rate`,
    /// `manual_correction_rate`), by name.
    pub fn named(&self) -> Vec<(&'static str, &GuardrailLimit)> {
        [
            ("fallback_rate", &self.fallback_rate),
            ("escalation_rate", &self.escalation_rate),
            ("manual_correction_rate", &self.manual_correction_rate),
        ]
        .into_iter()
        .filter_map(|(n, g)| g.as_ref().map(|g| (n, g)))
        .collect()
    }

    /// The declared quantity guardrails (`latency_p95_ms`, `tokens_per_request`), by name.
    pub fn quantities(&self) -> Vec<(&'static str, &QuantityLimit)> {
        [
            ("latency_p95_ms", &self.latency_p95_ms),
            ("tokens_per_request", &self.tokens_per_request),
        ]
        .into_iter()
        .filter_map(|(n, g)| g.as_ref().map(|g| (n, g)))
        .collect()
    }

    /// No guardrail of any kind is declared.
    pub fn is_empty(&self) -> bool {
        self.named().is_empty() && self.quantities().is_empty()
    }

    /// Shape rules of the guardrails: at least one declared; each with at least one bound;
    /// rates between 0 and 1; quantities finite and >= 0.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.is_empty() {
            return Err(FieldError::new(
                "guardrails",
                format!("declare at least one of {}", GUARDRAIL_NAMES.join(", ")),
            ));
        }
        for (name, g) in self.named() {
            if g.max_rate.is_none() && g.max_increase.is_none() {
                return Err(FieldError::new(
                    format!("guardrails.{name}"),
                    "needs max_rate and/or max_increase",
                ));
            }
            for (field, v) in [("max_rate", g.max_rate), ("max_increase", g.max_increase)] {
                if let Some(v) = v {
                    if !(0.0..=1.0).contains(&v) {
                        return Err(FieldError::new(
                            format!("guardrails.{name}.{field}"),
                            format!("{v} is not a rate between 0 and 1"),
                        ));
                    }
                }
            }
        }
        for (name, q) in self.quantities() {
            if q.max_value.is_none() && q.max_increase.is_none() {
                return Err(FieldError::new(
                    format!("guardrails.{name}"),
                    "needs max_value and/or max_increase",
                ));
            }
            for (field, v) in [("max_value", q.max_value), ("max_increase", q.max_increase)] {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(FieldError::new(
                            format!("guardrails.{name}.{field}"),
                            format!("{v} must be a finite number >= 0"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A guardrail on a rate: an absolute ceiling on the candidate's rate and/or a ceiling on its
/// increase over the concurrent control.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailLimit {
    /// Absolute ceiling on the candidate's rate, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<f64>,
    /// Largest increase of the candidate's rate over the control's, as an absolute difference
    /// of rates (`0.01` = one percentage point), 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
}

/// A guardrail on a quantity (latency, tokens): an absolute ceiling on the candidate's value
/// and/or a ceiling on its increase over the concurrent control, RELATIVE to the control's
/// value (`max_increase = 0.2` allows +20%).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuantityLimit {
    /// Absolute ceiling on the candidate's value (milliseconds, tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    /// Largest increase over the control, as a fraction of the control's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackPolicy {
    /// The criteria for rolling back, in words, written before the rollout starts.
    #[serde(default)]
    pub criteria: String,
    /// Roll back automatically on a guardrail breach (otherwise: freeze and wait for a person).
    #[serde(default)]
    pub automatic: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvancePolicy {
    /// Advance stages automatically once their samples and bake time are met.
    #[serde(default)]
    pub automatic: bool,
}

impl RolloutPlan {
    pub fn from_text(text: &str, format: FileFormat) -> Result<RolloutPlan, FileError> {
        let plan: RolloutPlan = parse_file("rollout plan", text, format, MAX_PLAN_BYTES)?;
        plan.validate().map_err(|source| FileError::Invalid {
            kind: "rollout plan",
            source,
        })?;
        Ok(plan)
    }

    /// Shape rules. Whether rollback criteria are declared is the decider's rule, not a shape rule.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.stages.is_empty() {
            return Err(FieldError::new(
                "stages",
                "a plan needs at least one [[stages]] entry",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.stages.iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(FieldError::new(
                    format!("stages[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(FieldError::new(
                    format!("stages[{i}].name"),
                    format!("stage `{}` appears twice", s.name),
                ));
            }
            if !(s.percent > 0.0 && s.percent <= 100.0) {
                return Err(FieldError::new(
                    format!("stages[{i}].percent"),
                    format!("{} is outside (0, 100]", s.percent),
                ));
            }
            for (key, value) in &s.matches {
                if key.trim().is_empty() {
                    return Err(FieldError::new(
                        format!("stages[{i}].match"),
                        "attribute names must not be empty",
                    ));
                }
                if matches!(value, MatchValue::Any(v) if v.is_empty()) {
                    return Err(FieldError::new(
                        format!("stages[{i}].match.{key}"),
                        "a list of values must not be empty",
                    ));
                }
            }
        }
        let last = &self.stages[self.stages.len() - 1];
        if !last.matches.is_empty() || last.percent < 100.0 {
            return Err(FieldError::new(
                format!("stages[{}]", self.stages.len() - 1),
                format!(
                    "the last stage `{}` must send all traffic (no `match`, percent = 100), so that completing the release is never a jump",
                    last.name
                ),
            ));
        }
        self.guardrails.validate()?;
        Ok(())
    }

    /// The declared rollback criteria, if any (non-blank).
    pub fn rollback_criteria(&self) -> Option<&str> {
        self.rollback
            .as_ref()
            .map(|r| r.criteria.trim())
            .filter(|c| !c.is_empty())
    }

    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}
