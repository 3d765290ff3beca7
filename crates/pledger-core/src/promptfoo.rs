//! promptfoo results as eval bundles. A promptfoo run with two prompts (the baseline's wording
//! and the candidate's, told apart by their labels) over the same tests becomes the measured
//! part of an [`EvalBundle`]: pass rates per segment and per hard-negative category,
//! regressions, latency, tokens and cost. The mapping (docs/USER-GUIDE.md, "promptfoo"):
//!
//! - **Files.** The `results` object of `promptfoo eval -o results.json`, format version 2 or
//!   3. A row is one test run with one prompt: its prompt label is `prompt.label` (or the label
//!   of `prompts[promptIdx]`); its test is `testIdx` (version 3), else the test of the run's
//!   `table.body[].test` (or `config.tests`) whose `vars` are the row's (version 2 rows carry
//!   no test index).
//! - **Tests.** A test counts when it has a row for both labels. Its segment is the value at
//!   `segment_by` (`metadata.<key>` or `vars.<key>`; default `metadata.segment`), `unsegmented`
//!   when it has none; its hard-negative category the value at `hard_negative_by` (default
//!   `metadata.hard_negative`), none when absent. Its name is the test's `description`, else
//!   `test <index>`.
//! - **Pass rates** are the share of counted tests whose row passed (`success`), per label.
//! - **Regressions**: tests the baseline passed and the candidate failed, with the candidate's
//!   grader reason (or its error), in test order.
//! - **Latency, tokens, cost** are taken over the rows that were neither served from promptfoo's
//!   cache (`response.cached`) nor errored (the provider failed: `failureReason` 2, or an
//!   `error` without a grading result): latency p50 and p95 by nearest rank of `latencyMs`,
//!   tokens the mean of `tokenUsage.total`, cost the mean of `cost`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::bundle::{CandidateBaseline, LatencyMs, PassRates, Regression, SegmentResult};
use crate::error::FieldError;

/// The segment of a test without a value at the segment path.
pub const UNSEGMENTED: &str = "unsegmented";
/// Most regressions a bundle lists (the count beyond is in [`Converted::regressions_total`]).
pub const MAX_REGRESSIONS: usize = 50;

/// How to read a results file.
#[derive(Clone, Debug)]
pub struct PromptfooOptions {
    /// The label of the prompt that is the release's baseline.
    pub baseline: String,
    /// The label of the candidate's prompt.
    pub candidate: String,
    /// Where a test's segment is: `metadata.<key>` or `vars.<key>`.
    pub segment_by: String,
    /// Where a test's hard-negative category is.
    pub hard_negative_by: String,
}

impl PromptfooOptions {
    pub fn new(baseline: &str, candidate: &str) -> PromptfooOptions {
        PromptfooOptions {
            baseline: baseline.to_string(),
            candidate: candidate.to_string(),
            segment_by: "metadata.segment".to_string(),
            hard_negative_by: "metadata.hard_negative".to_string(),
        }
    }
}

/// The measured part of a bundle, from one results file.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// The results file's format version (2 or 3).
    pub version: u64,
    /// The run's description (`config.description`), a default suite name.
    pub description: Option<String>,
    /// Tests with a row for both labels.
    pub tests: u64,
    pub segments: Vec<SegmentResult>,
    pub hard_negatives: BTreeMap<String, PassRates>,
    pub regressions: Vec<Regression>,
    /// Every regression found ([`MAX_REGRESSIONS`] are listed).
    pub regressions_total: usize,
    pub latency_ms: LatencyMs,
    pub tokens_per_request: Option<CandidateBaseline>,
    pub cost_per_request_usd: Option<CandidateBaseline>,
    /// Rows left out of latency, tokens and cost: (cached, errored).
    pub left_out: (u64, u64),
}

/// One row as the conversion needs it.
struct Row {
    label: String,
    test: usize,
    passed: bool,
    reason: String,
    cached: bool,
    errored: bool,
    latency_ms: Option<f64>,
    tokens: Option<f64>,
    cost: Option<f64>,
}

/// One test.
struct Test {
    name: String,
    view: Value,
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// Converts a promptfoo results file (its text) with `options`.
pub fn convert(text: &str, options: &PromptfooOptions) -> Result<Converted, FieldError> {
    let file: Value = serde_json::from_str(text).map_err(|e| {
        err(
            "promptfoo",
            format!("not JSON: {e} (line {}, column {})", e.line(), e.column()),
        )
    })?;
    let results = file
        .get("results")
        .filter(|r| r.is_object())
        .ok_or_else(|| {
            err(
                "results",
                "missing: not a promptfoo results file (`promptfoo eval -o results.json` writes one)",
            )
        })?;
    let version = results
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| err("results.version", "missing: not a promptfoo results file"))?;
    if !(2..=3).contains(&version) {
        return Err(err(
            "results.version",
            format!("format version {version} is not supported (2 and 3 are)"),
        ));
    }
    let rows = results
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| err("results.results", "missing: the file has no result rows"))?;
    let prompts: Vec<String> = results
        .get("prompts")
        .or_else(|| results.pointer("/table/head/prompts"))
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("label").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    // The tests as run: the table's (version 2 lists each test with its metadata there, after
    // `defaultTest` and list variables are applied), else the configuration's.
    let config_tests: Vec<Value> = match results.pointer("/table/body").and_then(Value::as_array) {
        Some(body) if body.iter().all(|b| b.get("test").is_some()) => {
            body.iter().map(|b| b["test"].clone()).collect()
        }
        _ => file
            .pointer("/config/tests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };

    let mut tests: BTreeMap<usize, Test> = BTreeMap::new();
    let mut parsed = Vec::with_capacity(rows.len());
    let mut labels: Vec<String> = prompts.clone();
    for (i, row) in rows.iter().enumerate() {
        let field = |name: &str| format!("results.results[{i}].{name}");
        let label = row
            .pointer("/prompt/label")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                row.get("promptIdx")
                    .and_then(Value::as_u64)
                    .and_then(|p| prompts.get(p as usize).cloned())
            })
            .ok_or_else(|| err(&field("prompt.label"), "missing: which prompt the row ran"))?;
        if !labels.contains(&label) {
            labels.push(label.clone());
        }
        let vars = row.get("vars").cloned().unwrap_or(Value::Null);
        let (test, config) = match row.get("testIdx").and_then(Value::as_u64) {
            Some(t) => (t as usize, config_tests.get(t as usize)),
            None => {
                let matching: Vec<usize> = config_tests
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.get("vars").unwrap_or(&Value::Null) == &vars)
                    .map(|(j, _)| j)
                    .collect();
                match matching.as_slice() {
                    [j] => (*j, config_tests.get(*j)),
                    [] => {
                        return Err(err(
                            &field("vars"),
                            "no test of the run has these vars (a version 2 row is matched to its test by its vars)",
                        ))
                    }
                    _ => {
                        return Err(err(
                            &field("vars"),
                            format!(
                                "tests {matching:?} of the run have the same vars: a version 2 file cannot tell their rows apart"
                            ),
                        ))
                    }
                }
            }
        };
        let case = row.get("testCase");
        let metadata = case
            .and_then(|c| c.get("metadata"))
            .or_else(|| config.and_then(|c| c.get("metadata")))
            .cloned()
            .unwrap_or(Value::Null);
        let name = case
            .and_then(|c| c.get("description"))
            .or_else(|| config.and_then(|c| c.get("description")))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("test {test}"));
        tests.entry(test).or_insert_with(|| Test {
            name,
            view: serde_json::json!({ "metadata": metadata, "vars": vars }),
        });
        let grading = row.get("gradingResult").filter(|g| !g.is_null());
        let error = row.get("error").and_then(Value::as_str).map(str::to_string);
        let errored = row.get("failureReason").and_then(Value::as_u64) == Some(2)
            || (grading.is_none() && error.is_some());
        let passed = row
            .get("success")
            .and_then(Value::as_bool)
            .ok_or_else(|| err(&field("success"), "missing: whether the row passed"))?;
        let reason = grading
            .and_then(|g| g.get("reason"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(error)
            .unwrap_or_else(|| "failed".to_string());
        let number = |v: Option<&Value>| v.and_then(Value::as_f64).filter(|x| x.is_finite());
        parsed.push(Row {
            label,
            test,
            passed,
            reason,
            cached: row.pointer("/response/cached").and_then(Value::as_bool) == Some(true),
            errored,
            latency_ms: number(row.get("latencyMs")),
            tokens: number(
                row.pointer("/tokenUsage/total")
                    .or_else(|| row.pointer("/response/tokenUsage/total")),
            ),
            cost: number(row.get("cost")),
        });
    }
    let listed = labels.join("`, `");
    if labels.len() < 2 {
        return Err(err(
            "results.prompts",
            format!(
                "the run has one prompt (`{listed}`): a comparison needs two, the baseline's and the candidate's, in one run"
            ),
        ));
    }
    for (flag, label) in [
        ("--baseline", &options.baseline),
        ("--candidate", &options.candidate),
    ] {
        if !labels.contains(label) {
            return Err(err(
                "results.prompts",
                format!("{flag} `{label}` is not a prompt label of this run (it has `{listed}`)"),
            ));
        }
    }
    if options.baseline == options.candidate {
        return Err(err(
            "results.prompts",
            "--baseline and --candidate name the same prompt",
        ));
    }

    // Per test: the baseline's and the candidate's row.
    let mut pairs: BTreeMap<usize, (Option<&Row>, Option<&Row>)> = BTreeMap::new();
    for r in &parsed {
        let e = pairs.entry(r.test).or_default();
        if r.label == options.baseline {
            e.0 = Some(r);
        } else if r.label == options.candidate {
            e.1 = Some(r);
        }
    }
    let lookup = |view: &Value, path: &str| -> Result<Option<String>, FieldError> {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        if !matches!(root, "metadata" | "vars") || path.split('.').count() < 2 {
            return Err(err(
                "path",
                format!("`{path}` is not metadata.<key> or vars.<key>"),
            ));
        }
        let mut at = view.get(root);
        for p in parts {
            at = at.and_then(|v| v.get(p));
        }
        Ok(match at {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        })
    };
    #[derive(Default)]
    struct Count {
        cases: u64,
        baseline: u64,
        candidate: u64,
    }
    let mut segments: BTreeMap<String, Count> = BTreeMap::new();
    let mut hard: BTreeMap<String, Count> = BTreeMap::new();
    let mut regressions = Vec::new();
    let mut counted = 0;
    for (t, pair) in &pairs {
        let (Some(b), Some(c)) = pair else { continue };
        let test = &tests[t];
        counted += 1;
        let segment =
            lookup(&test.view, &options.segment_by)?.unwrap_or_else(|| UNSEGMENTED.to_string());
        let add = |k: &mut Count| {
            k.cases += 1;
            k.baseline += u64::from(b.passed);
            k.candidate += u64::from(c.passed);
        };
        add(segments.entry(segment.clone()).or_default());
        if let Some(category) = lookup(&test.view, &options.hard_negative_by)? {
            add(hard.entry(category).or_default());
        }
        if b.passed && !c.passed {
            regressions.push(Regression {
                case: test.name.clone(),
                segment,
                detail: c.reason.clone(),
            });
        }
    }
    if counted == 0 {
        return Err(err(
            "results.results",
            format!(
                "no test has a row for both `{}` and `{}`",
                options.baseline, options.candidate
            ),
        ));
    }
    let rate = |n: u64, of: u64| n as f64 / of as f64;
    let measured = |label: &str, pick: fn(&Row) -> Option<f64>| -> Vec<f64> {
        parsed
            .iter()
            .filter(|r| r.label == label && !r.cached && !r.errored)
            .filter_map(pick)
            .collect()
    };
    let latency = |label: &str| measured(label, |r| r.latency_ms);
    let (cand_lat, base_lat) = (latency(&options.candidate), latency(&options.baseline));
    let mean_of = |pick: fn(&Row) -> Option<f64>| {
        let (c, b) = (
            measured(&options.candidate, pick),
            measured(&options.baseline, pick),
        );
        (!c.is_empty() && !b.is_empty()).then(|| CandidateBaseline {
            candidate: mean(&c),
            baseline: mean(&b),
        })
    };
    let compared = |r: &&Row| r.label == options.baseline || r.label == options.candidate;
    let regressions_total = regressions.len();
    regressions.truncate(MAX_REGRESSIONS);
    Ok(Converted {
        version,
        description: file
            .pointer("/config/description")
            .and_then(Value::as_str)
            .map(str::to_string),
        tests: counted,
        segments: segments
            .into_iter()
            .map(|(name, k)| SegmentResult {
                name,
                cases: k.cases,
                candidate_pass_rate: rate(k.candidate, k.cases),
                baseline_pass_rate: rate(k.baseline, k.cases),
            })
            .collect(),
        hard_negatives: hard
            .into_iter()
            .map(|(name, k)| {
                (
                    name,
                    PassRates {
                        cases: k.cases,
                        candidate_pass_rate: rate(k.candidate, k.cases),
                        baseline_pass_rate: rate(k.baseline, k.cases),
                    },
                )
            })
            .collect(),
        regressions,
        regressions_total,
        latency_ms: LatencyMs {
            candidate_p50: nearest_rank(&cand_lat, 50.0),
            baseline_p50: nearest_rank(&base_lat, 50.0),
            candidate_p95: nearest_rank(&cand_lat, 95.0),
            baseline_p95: nearest_rank(&base_lat, 95.0),
        },
        tokens_per_request: mean_of(|r| r.tokens),
        cost_per_request_usd: mean_of(|r| r.cost),
        left_out: (
            parsed.iter().filter(compared).filter(|r| r.cached).count() as u64,
            parsed
                .iter()
                .filter(compared)
                .filter(|r| r.errored && !r.cached)
                .count() as u64,
        ),
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The nearest-rank percentile `p` of `values` (0 when there are none): the smallest value
/// with at least `p`% of the values at or below it.
pub fn nearest_rank(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}
