//! The release gate: a pure function of an eval bundle, a policy and whether a trade-off was
//! accepted. Every check is listed with its numbers, passed or failed.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bundle::{EvalBundle, PassRates, HARD_NEGATIVE_CATEGORIES};
use crate::error::{parse_file, FieldError, FileError, FileFormat};

const EPSILON: f64 = 1e-9;

/// Gate policy: policy as data. Every field has the default in brackets; a per-prompt
/// policy file overrides any of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GatePolicy {
    /// Largest drop of a segment's pass rate below baseline [0.02].
    pub max_pass_rate_drop: f64,
    /// Per-segment overrides of `max_pass_rate_drop`, by segment name.
    pub segment_max_pass_rate_drop: BTreeMap<String, f64>,
    /// Largest drop of a hard-negative category's pass rate below baseline [0.02].
    pub max_hard_negative_drop: f64,
    /// Least number of cases in each hard-negative category [1].
    pub min_hard_negative_cases: u64,
    /// Largest relative rise of latency p95 without an accepted trade-off [0.10].
    pub max_latency_p95_increase: f64,
    /// Largest relative rise of tokens per request without an accepted trade-off [0.10].
    pub max_tokens_increase: f64,
    /// Largest relative rise of cost per request without an accepted trade-off [0.10].
    pub max_cost_increase: f64,
    /// Require the bundle to cover (`covers_regressions`) every open regression case collected
    /// since the last completed release [unset: on whenever there are such cases; `false`
    /// turns it off].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_regression_coverage: Option<bool>,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            max_pass_rate_drop: 0.02,
            segment_max_pass_rate_drop: BTreeMap::new(),
            max_hard_negative_drop: 0.02,
            min_hard_negative_cases: 1,
            max_latency_p95_increase: 0.10,
            max_tokens_increase: 0.10,
            max_cost_increase: 0.10,
            require_regression_coverage: None,
        }
    }
}

pub const MAX_POLICY_BYTES: usize = 64 * 1024;

impl GatePolicy {
    pub fn from_text(text: &str, format: FileFormat) -> Result<GatePolicy, FileError> {
        let policy: GatePolicy = parse_file("gate policy", text, format, MAX_POLICY_BYTES)?;
        policy.validate().map_err(|source| FileError::Invalid {
            kind: "gate policy",
            source,
        })?;
        Ok(policy)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        let mut fields = vec![
            ("max_pass_rate_drop".to_string(), self.max_pass_rate_drop),
            (
                "max_hard_negative_drop".to_string(),
                self.max_hard_negative_drop,
            ),
            (
                "max_latency_p95_increase".to_string(),
                self.max_latency_p95_increase,
            ),
            ("max_tokens_increase".to_string(), self.max_tokens_increase),
            ("max_cost_increase".to_string(), self.max_cost_increase),
        ];
        for (k, v) in &self.segment_max_pass_rate_drop {
            fields.push((format!("segment_max_pass_rate_drop.{k}"), *v));
        }
        for (field, v) in fields {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(FieldError::new(
                    field,
                    format!("{v} must be a finite number >= 0"),
                ));
            }
        }
        Ok(())
    }
}

/// What a check looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Pass-rate drop of a segment (observed = baseline - candidate).
    SegmentPassRate,
    /// A segment has cases: one in the bundle with zero cases, or one the policy names that
    /// the bundle lacks, is not evidence.
    SegmentCoverage,
    /// Presence and case count of a hard-negative category.
    HardNegativeCoverage,
    /// Pass-rate drop of a hard-negative category.
    HardNegativePassRate,
    /// Relative rise of latency p95 (observed = candidate / baseline - 1).
    LatencyP95,
    /// Relative rise of tokens per request.
    TokensPerRequest,
    /// Relative rise of cost per request.
    CostPerRequest,
    /// Regression cases collected since the last release that the bundle does not cover.
    RegressionCoverage,
}

impl CheckKind {
    /// Checks that an accepted trade-off may waive.
    pub fn waivable(self) -> bool {
        matches!(
            self,
            CheckKind::LatencyP95 | CheckKind::TokensPerRequest | CheckKind::CostPerRequest
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateCheck {
    /// Stable name: `segment.<name>`, `hard_negative.<category>.coverage`,
    /// `hard_negative.<category>.pass_rate`, `latency_p95`, `tokens_per_request`,
    /// `cost_per_request_usd`.
    pub name: String,
    pub kind: CheckKind,
    pub observed: f64,
    pub limit: f64,
    /// Within the limit, or waived.
    pub passed: bool,
    /// Over the limit but waived by an accepted trade-off.
    pub waived_by_tradeoff: bool,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateOutcome {
    pub passed: bool,
    pub checks: Vec<GateCheck>,
}

impl GateOutcome {
    pub fn failed_checks(&self) -> impl Iterator<Item = &GateCheck> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

/// Runs every check of `policy` on `bundle`. `tradeoff_accepted` waives the latency, token
/// and cost checks (never quality checks).
pub fn evaluate_gate(
    bundle: &EvalBundle,
    policy: &GatePolicy,
    tradeoff_accepted: bool,
) -> GateOutcome {
    evaluate_gate_with_cases(bundle, policy, tradeoff_accepted, &[])
}

/// [`evaluate_gate`], also checking that the bundle covers every regression case in
/// `required_cases` (the prompt's open cases since its last completed release).
pub fn evaluate_gate_with_cases(
    bundle: &EvalBundle,
    policy: &GatePolicy,
    tradeoff_accepted: bool,
    required_cases: &[String],
) -> GateOutcome {
    let mut checks = Vec::new();
    if !required_cases.is_empty() && policy.require_regression_coverage != Some(false) {
        let missing: Vec<&str> = required_cases
            .iter()
            .filter(|c| !bundle.covers_regressions.contains(c))
            .map(String::as_str)
            .collect();
        checks.push(GateCheck {
            name: "regressions.coverage".to_string(),
            kind: CheckKind::RegressionCoverage,
            observed: missing.len() as f64,
            limit: 0.0,
            passed: missing.is_empty(),
            waived_by_tradeoff: false,
            detail: if missing.is_empty() {
                format!(
                    "covers all {} regression cases collected since the last release",
                    required_cases.len()
                )
            } else {
                format!(
                    "misses {} of {} regression cases: {}",
                    missing.len(),
                    required_cases.len(),
                    missing.join(", ")
                )
            },
        });
    }
    for (name, limit) in &policy.segment_max_pass_rate_drop {
        if !bundle.segments.iter().any(|s| &s.name == name) {
            checks.push(uncovered(
                format!("segment.{name}.coverage"),
                format!("the gate policy sets a margin of {limit:.4} for segment `{name}`, which the bundle does not cover"),
            ));
        }
    }
    for s in bundle.segments.iter().filter(|s| s.cases == 0) {
        checks.push(uncovered(
            format!("segment.{}.coverage", s.name),
            "the segment has no cases: its pass rates are not evidence".to_string(),
        ));
    }
    for s in &bundle.segments {
        let limit = policy
            .segment_max_pass_rate_drop
            .get(&s.name)
            .copied()
            .unwrap_or(policy.max_pass_rate_drop);
        let drop = s.baseline_pass_rate - s.candidate_pass_rate;
        checks.push(check(
            format!("segment.{}", s.name),
            CheckKind::SegmentPassRate,
            drop,
            limit,
            false,
            format!(
                "pass rate {:.4} vs baseline {:.4} over {} cases (drop {:.4}, allowed {:.4})",
                s.candidate_pass_rate, s.baseline_pass_rate, s.cases, drop, limit
            ),
        ));
    }
    for category in HARD_NEGATIVE_CATEGORIES {
        let min = policy.min_hard_negative_cases as f64;
        match bundle.hard_negatives.get(category) {
            None => checks.push(GateCheck {
                name: format!("hard_negative.{category}.coverage"),
                kind: CheckKind::HardNegativeCoverage,
                observed: 0.0,
                limit: min,
                passed: false,
                waived_by_tradeoff: false,
                detail: format!("category `{category}` is missing from the bundle"),
            }),
            Some(r) => {
                let covered = r.cases >= policy.min_hard_negative_cases;
                checks.push(GateCheck {
                    name: format!("hard_negative.{category}.coverage"),
                    kind: CheckKind::HardNegativeCoverage,
                    observed: r.cases as f64,
                    limit: min,
                    passed: covered,
                    waived_by_tradeoff: false,
                    detail: format!(
                        "{} cases (at least {} required)",
                        r.cases, policy.min_hard_negative_cases
                    ),
                });
                checks.push(hard_negative_drop(category, r, policy));
            }
        }
    }
    // Categories beyond the required four are optional, but when present their drop counts.
    for (category, r) in bundle
        .hard_negatives
        .iter()
        .filter(|(c, _)| !HARD_NEGATIVE_CATEGORIES.contains(&c.as_str()))
    {
        checks.push(hard_negative_drop(category, r, policy));
    }
    let l = &bundle.latency_ms;
    checks.push(relative(
        "latency_p95",
        CheckKind::LatencyP95,
        l.candidate_p95,
        l.baseline_p95,
        policy.max_latency_p95_increase,
        tradeoff_accepted,
        "ms",
    ));
    if let Some(t) = &bundle.tokens_per_request {
        checks.push(relative(
            "tokens_per_request",
            CheckKind::TokensPerRequest,
            t.candidate,
            t.baseline,
            policy.max_tokens_increase,
            tradeoff_accepted,
            "tokens",
        ));
    }
    if let Some(c) = &bundle.cost_per_request_usd {
        checks.push(relative(
            "cost_per_request_usd",
            CheckKind::CostPerRequest,
            c.candidate,
            c.baseline,
            policy.max_cost_increase,
            tradeoff_accepted,
            "USD",
        ));
    }
    let passed = checks.iter().all(|c| c.passed);
    GateOutcome { passed, checks }
}

/// A failed segment-coverage check.
fn uncovered(name: String, detail: String) -> GateCheck {
    GateCheck {
        name,
        kind: CheckKind::SegmentCoverage,
        observed: 0.0,
        limit: 1.0,
        passed: false,
        waived_by_tradeoff: false,
        detail,
    }
}

/// The pass-rate drop check of a hard-negative category.
fn hard_negative_drop(category: &str, r: &PassRates, policy: &GatePolicy) -> GateCheck {
    let drop = r.baseline_pass_rate - r.candidate_pass_rate;
    check(
        format!("hard_negative.{category}.pass_rate"),
        CheckKind::HardNegativePassRate,
        drop,
        policy.max_hard_negative_drop,
        false,
        format!(
            "pass rate {:.4} vs baseline {:.4} over {} cases (drop {:.4}, allowed {:.4})",
            r.candidate_pass_rate,
            r.baseline_pass_rate,
            r.cases,
            drop,
            policy.max_hard_negative_drop
        ),
    )
}

fn check(
    name: String,
    kind: CheckKind,
    observed: f64,
    limit: f64,
    waive: bool,
    detail: String,
) -> GateCheck {
    let within = observed <= limit + EPSILON;
    let waived = !within && waive && kind.waivable();
    GateCheck {
        name,
        kind,
        observed,
        limit,
        passed: within || waived,
        waived_by_tradeoff: waived,
        detail,
    }
}

fn relative(
    name: &str,
    kind: CheckKind,
    candidate: f64,
    baseline: f64,
    limit: f64,
    waive: bool,
    unit: &str,
) -> GateCheck {
    let increase = if baseline > 0.0 {
        candidate / baseline - 1.0
    } else if candidate > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let mut detail = format!(
        "{candidate} vs baseline {baseline} {unit} ({:+.1}%, allowed +{:.1}%)",
        increase * 100.0,
        limit * 100.0
    );
    let c = check(
        name.to_string(),
        kind,
        increase,
        limit,
        waive,
        String::new(),
    );
    if c.waived_by_tradeoff {
        detail.push_str("; over the limit, waived by the accepted trade-off");
    }
    GateCheck {
        detail,
        observed: if increase.is_finite() {
            increase
        } else {
            f64::MAX
        },
        ..c
    }
}
