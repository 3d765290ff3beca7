//! The release page's guardrail charts, from a release's judgement history
//! ([`JudgementPoint`]s): for each guardrail, the candidate and control values with the
//! candidate's ceiling (what the bound allows), and the tested excess with the sequential
//! test's interval against the threshold line at 0. Pure: the page serves these series as
//! JSON and draws them; tests check them here.

use serde::Serialize;

use crate::canary::{Bound, Verdict};
use crate::workers::canary::{JudgementPoint, HISTORY_EVERY};

/// Most points a chart draws: a longer history is thinned evenly, keeping every point where
/// the verdict or the stage changed.
pub const MAX_CHART_POINTS: usize = 2_000;

/// Every guardrail chart of one release.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReleaseCharts {
    /// Points in the history (before thinning).
    pub points: usize,
    /// Unix seconds of each drawn point (shared by every chart).
    pub t: Vec<f64>,
    pub verdict: Vec<Verdict>,
    /// Where a stage visit begins: (unix seconds, stage name).
    pub stages: Vec<(f64, String)>,
    /// The first point whose verdict is `breached` (unix seconds).
    pub breached_at: Option<f64>,
    pub charts: Vec<GuardrailChart>,
}

/// One guardrail's series, aligned with [`ReleaseCharts::t`] (`None` where a point lacks it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GuardrailChart {
    pub guardrail: String,
    pub bound: Bound,
    /// `rate` (shown in %), `ms` or `tokens`.
    pub unit: &'static str,
    pub limit: f64,
    pub candidate: Vec<Option<f64>>,
    pub control: Vec<Option<f64>>,
    /// The most the bound allows the candidate: the limit itself (`max_rate`, `max_value`),
    /// the control plus the limit (a rate's `max_increase`), or the control times one plus
    /// the limit (a relative `max_increase`).
    pub ceiling: Vec<Option<f64>>,
    /// The tested excess (positive: over the bound).
    pub excess: Vec<Option<f64>>,
    /// The sequential test's interval around the excess: `excess ∓ breach_excess`. Its lower
    /// edge reaches the threshold line (0) exactly when the guardrail breaches.
    pub lower: Vec<Option<f64>>,
    pub upper: Vec<Option<f64>>,
    pub breached: Vec<bool>,
    /// The verdict in words at the last point, e.g. "above its ceiling, breached".
    pub latest: String,
}

fn unit_of(guardrail: &str) -> &'static str {
    if guardrail.ends_with("_rate") {
        "rate"
    } else if guardrail.ends_with("_ms") {
        "ms"
    } else {
        "tokens"
    }
}

/// The candidate's ceiling under `bound` with `limit`, given the control's value.
pub fn ceiling(guardrail: &str, bound: Bound, limit: f64, control: f64) -> f64 {
    match bound {
        Bound::MaxRate | Bound::MaxValue => limit,
        Bound::MaxIncrease if unit_of(guardrail) == "rate" => control + limit,
        Bound::MaxIncrease => control * (1.0 + limit),
    }
}

/// The indices of `points` a chart draws: all when there are at most `max`, else an even
/// thinning that keeps the first, the last and every change of verdict or stage visit.
fn drawn(points: &[JudgementPoint], max: usize) -> Vec<usize> {
    if points.len() <= max {
        return (0..points.len()).collect();
    }
    let step = points.len().div_ceil(max.max(2) / 2);
    (0..points.len())
        .filter(|&i| {
            i == 0
                || i + 1 == points.len()
                || i % step == 0
                || points[i].verdict != points[i - 1].verdict
                || points[i].stage_index != points[i - 1].stage_index
                || points[i].stage_entered_at != points[i - 1].stage_entered_at
        })
        .collect()
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The charts of a release from its judgement history, oldest point first (points out of
/// order are sorted by time; points of another release are left out by the caller).
pub fn charts(points: &[JudgementPoint]) -> ReleaseCharts {
    let mut sorted: Vec<&JudgementPoint> = points.iter().collect();
    sorted.sort_by_key(|p| p.at);
    // Monitor replicas judge side by side: a point another replica recorded within half a
    // history period of the last one kept, with the same verdict and stage visit, is the
    // same judgement seen twice.
    let twin_window = (HISTORY_EVERY / 2).as_millis() as i64;
    let mut owned: Vec<JudgementPoint> = Vec::with_capacity(sorted.len());
    for p in sorted {
        let twin = owned.last().is_some_and(|k: &JudgementPoint| {
            k.replica != p.replica
                && k.verdict == p.verdict
                && (k.stage_index, k.stage_entered_at) == (p.stage_index, p.stage_entered_at)
                && p.at.unix_millis() - k.at.unix_millis() < twin_window
        });
        if !twin {
            owned.push(p.clone());
        }
    }
    let keep = drawn(&owned, MAX_CHART_POINTS);
    let t: Vec<f64> = keep
        .iter()
        .map(|&i| owned[i].at.unix_millis() as f64 / 1000.0)
        .collect();
    let mut stages = Vec::new();
    let mut previous: Option<(usize, crate::Timestamp)> = None;
    for (n, &i) in keep.iter().enumerate() {
        let p = &owned[i];
        let visit = (p.stage_index, p.stage_entered_at);
        if previous != Some(visit) {
            stages.push((t[n], p.stage.clone()));
            previous = Some(visit);
        }
    }
    // Guardrails in the order they first appear.
    let mut names: Vec<(String, Bound, f64)> = Vec::new();
    for p in &owned {
        for g in &p.guardrails {
            if !names
                .iter()
                .any(|(n, b, _)| *n == g.guardrail && *b == g.bound)
            {
                names.push((g.guardrail.clone(), g.bound, g.limit));
            }
        }
    }
    let charts = names
        .into_iter()
        .map(|(guardrail, bound, limit)| {
            let mut c = GuardrailChart {
                unit: unit_of(&guardrail),
                guardrail,
                bound,
                limit,
                candidate: Vec::with_capacity(keep.len()),
                control: Vec::with_capacity(keep.len()),
                ceiling: Vec::with_capacity(keep.len()),
                excess: Vec::with_capacity(keep.len()),
                lower: Vec::with_capacity(keep.len()),
                upper: Vec::with_capacity(keep.len()),
                breached: Vec::with_capacity(keep.len()),
                latest: String::new(),
            };
            for &i in &keep {
                let g = owned[i]
                    .guardrails
                    .iter()
                    .find(|g| g.guardrail == c.guardrail && g.bound == c.bound);
                let (has_samples, g) = match g {
                    Some(g) => (owned[i].candidate_samples > 0, g),
                    None => {
                        for v in [
                            &mut c.candidate,
                            &mut c.control,
                            &mut c.ceiling,
                            &mut c.excess,
                            &mut c.lower,
                            &mut c.upper,
                        ] {
                            v.push(None);
                        }
                        c.breached.push(false);
                        continue;
                    }
                };
                let control_samples = owned[i].control_samples > 0;
                c.candidate
                    .push(finite(g.candidate_value).filter(|_| has_samples));
                c.control
                    .push(finite(g.control_value).filter(|_| control_samples));
                let allowed = finite(ceiling(&c.guardrail, g.bound, g.limit, g.control_value));
                c.ceiling.push(allowed.filter(|_| {
                    control_samples || matches!(g.bound, Bound::MaxRate | Bound::MaxValue)
                }));
                c.excess.push(finite(g.excess).filter(|_| has_samples));
                let margin = g.breach_excess.filter(|m| m.is_finite() && has_samples);
                c.lower.push(margin.and_then(|m| finite(g.excess - m)));
                c.upper.push(margin.and_then(|m| finite(g.excess + m)));
                c.breached.push(g.breached);
            }
            let last = keep.last().and_then(|&i| {
                owned[i]
                    .guardrails
                    .iter()
                    .find(|g| g.guardrail == c.guardrail && g.bound == c.bound)
            });
            c.latest = match last {
                None => "not judged at the last point".to_string(),
                Some(g) if g.breached => format!(
                    "breached: the test's lower edge is above the bound ({})",
                    describe_side(
                        g.candidate_value,
                        ceiling(&c.guardrail, g.bound, g.limit, g.control_value)
                    )
                ),
                Some(g) => format!(
                    "not breached ({})",
                    describe_side(
                        g.candidate_value,
                        ceiling(&c.guardrail, g.bound, g.limit, g.control_value)
                    )
                ),
            };
            c
        })
        .collect();
    let verdict: Vec<Verdict> = keep.iter().map(|&i| owned[i].verdict).collect();
    let breached_at = verdict
        .iter()
        .position(|v| *v == Verdict::Breached)
        .map(|n| t[n]);
    ReleaseCharts {
        points: points.len(),
        t,
        verdict,
        stages,
        breached_at,
        charts,
    }
}

fn describe_side(value: f64, ceiling: f64) -> &'static str {
    if value > ceiling {
        "candidate above its ceiling"
    } else {
        "candidate at or below its ceiling"
    }
}
