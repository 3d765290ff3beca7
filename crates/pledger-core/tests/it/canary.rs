//! The canary's judgement: the latency histogram, arm statistics, the sequential test of every
//! guardrail kind, the evidence it records, readiness and the fixed-threshold baseline.

use pledger_core::canary::{
    fixed_threshold_check, judge, log_mixture_likelihood_ratio, stage_ready, ArmStats, Bound,
    JudgeConfig, Judgement, LatencyHistogram, Observation, Verdict, HISTOGRAM_GROWTH,
    HISTOGRAM_MIN_MS,
};
use pledger_core::plan::{GuardrailLimit, Guardrails, QuantityLimit};
use pledger_core::routing::Arm;
use pledger_core::sim::{ArmProfile, SimRequest, SimRng};
use pledger_core::{FileError, FileFormat, RolloutPlan};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn rate(max_rate: Option<f64>, max_increase: Option<f64>) -> Option<GuardrailLimit> {
    Some(GuardrailLimit {
        max_rate,
        max_increase,
    })
}

fn quantity(max_value: Option<f64>, max_increase: Option<f64>) -> Option<QuantityLimit> {
    Some(QuantityLimit {
        max_value,
        max_increase,
    })
}

fn guard(f: impl FnOnce(&mut Guardrails)) -> Guardrails {
    let mut g = Guardrails::default();
    f(&mut g);
    g
}

/// An arm of `n` outcomes drawn from `profile` with a fixed seed.
fn drawn(profile: &ArmProfile, n: u64, seed: u64) -> ArmStats {
    let mut rng = SimRng::new(seed);
    let mut s = ArmStats::new();
    for _ in 0..n {
        s.observe(&profile.draw(&mut rng));
    }
    s
}

/// Default outcomes (realistic latency and tokens) with exact event counts:
/// `(fallback, escalated, manually_corrected)`.
fn counted(n: u64, events: (u64, u64, u64), seed: u64) -> ArmStats {
    let mut s = drawn(&ArmProfile::default(), n, seed);
    (s.fallback, s.escalated, s.manually_corrected) = events;
    s
}

fn latency(median: f64, n: u64, seed: u64) -> ArmStats {
    drawn(
        &ArmProfile {
            latency_median_ms: median,
            ..ArmProfile::default()
        },
        n,
        seed,
    )
}

fn tokens(tokens_in: f64, n: u64, seed: u64) -> ArmStats {
    drawn(
        &ArmProfile {
            tokens_in_mean: tokens_in,
            ..ArmProfile::default()
        },
        n,
        seed,
    )
}

fn cfg() -> JudgeConfig {
    JudgeConfig::default()
}

// ---------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------

/// The exact nearest-rank quantile of sorted data: the ⌈q·n⌉-th smallest.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn histogram_of(values: &[f64]) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for v in values {
        h.record(*v);
    }
    h
}

#[test]
fn histogram_quantiles_match_exact_sorted_data_within_the_bucket_width() {
    let mut rng = SimRng::new(11);
    // (data set, values)
    let sets: Vec<(&str, Vec<f64>)> = vec![
        (
            "lognormal 800 ms",
            (0..5000).map(|_| rng.lognormal(800.0, 0.5)).collect(),
        ),
        (
            "uniform 1..1000 ms",
            (0..3000).map(|_| 1.0 + 999.0 * rng.uniform()).collect(),
        ),
        (
            "wide lognormal 20 ms",
            (0..4000).map(|_| rng.lognormal(20.0, 2.0)).collect(),
        ),
        ("constant 250 ms", vec![250.0; 100]),
        ("one sample", vec![1234.5]),
        ("two clusters", {
            let mut v = vec![5.0; 950];
            v.extend(vec![4000.0; 50]);
            v
        }),
        (
            "sub-0.1 ms",
            (0..200).map(|i| 0.0005 * f64::from(i)).collect(),
        ),
    ];
    let resolution = HISTOGRAM_GROWTH - 1.0;
    for (name, mut values) in sets {
        let h = histogram_of(&values);
        values.sort_by(f64::total_cmp);
        assert_eq!(h.count(), values.len() as u64, "{name}");
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let got = h.quantile(q).unwrap();
            let want = exact_quantile(&values, q);
            if want < HISTOGRAM_MIN_MS {
                assert!(
                    (got - want).abs() <= HISTOGRAM_MIN_MS,
                    "{name} q={q}: {got} vs {want}"
                );
            } else {
                let err = (got - want).abs() / want;
                assert!(
                    err <= resolution + 1e-9,
                    "{name} q={q}: histogram {got} vs exact {want} ({:.3}%)",
                    err * 100.0
                );
            }
        }
    }
}

#[test]
fn histogram_fraction_above_matches_exact_counts_and_inverts_the_quantile() {
    let mut rng = SimRng::new(12);
    let mut values: Vec<f64> = (0..10_000).map(|_| rng.lognormal(800.0, 0.6)).collect();
    let h = histogram_of(&values);
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    for ms in [50.0, 400.0, 800.0, 1500.0, 2000.0, 5000.0, 1e6] {
        let exact = values.iter().filter(|v| **v > ms).count() as f64 / n;
        // Only the samples in `ms`'s own bucket are uncertain.
        let (lo, hi) = LatencyHistogram::bucket_bounds(LatencyHistogram::bucket_of(ms));
        let in_bucket = values.iter().filter(|v| **v >= lo && **v < hi).count() as f64 / n;
        let got = h.fraction_above(ms);
        assert!(
            (got - exact).abs() <= in_bucket + 1e-12,
            "above {ms}: {got} vs {exact} (bucket share {in_bucket})"
        );
    }
    for q in [0.05, 0.5, 0.9, 0.95, 0.99] {
        let above = h.fraction_above(h.quantile(q).unwrap());
        assert!((above - (1.0 - q)).abs() < 1e-9, "q={q}: {above}");
    }
    assert_eq!(h.fraction_above(0.0), 1.0);
    assert_eq!(LatencyHistogram::new().fraction_above(10.0), 0.0);
    assert_eq!(LatencyHistogram::new().quantile(0.5), None);
}

#[test]
fn histogram_buckets_cover_zero_to_ten_minutes_and_clamp_beyond() {
    // (latency ms, bucket)
    let table: &[(f64, u32)] = &[
        (-5.0, 0),
        (f64::NAN, 0),
        (0.0, 0),
        (0.0999, 0),
        (0.1, 1),
        (0.1019, 1),
        (0.1021, 2),
        (599_999.0, 789),
        (700_000.0, 790),
        (f64::INFINITY, 790),
    ];
    for &(ms, bucket) in table {
        assert_eq!(LatencyHistogram::bucket_of(ms), bucket, "{ms}");
    }
    let (lo, hi) = LatencyHistogram::bucket_bounds(789);
    assert!(lo < 600_000.0 && hi >= 600_000.0, "{lo}..{hi}");
    // Everything beyond ten minutes reads as the overflow bucket's lower edge.
    let h = histogram_of(&[3_600_000.0]);
    assert_eq!(
        h.quantile(0.5),
        Some(LatencyHistogram::bucket_bounds(790).0)
    );
}

#[test]
fn histograms_and_arm_stats_merge_by_adding() {
    let a = latency(500.0, 700, 1);
    let b = latency(900.0, 300, 2);
    let mut merged = a.clone();
    merged.merge(&b);
    assert_eq!(merged.samples, 1000);
    assert_eq!(merged.latency.count(), 1000);
    assert_eq!(merged.escalated, a.escalated + b.escalated);
    assert_eq!(merged.tokens_sum, a.tokens_sum + b.tokens_sum);
    assert!((merged.tokens_sq_sum - (a.tokens_sq_sum + b.tokens_sq_sum)).abs() < 1e-6);
    // The same as recording everything into one.
    let mut one = LatencyHistogram::new();
    let mut rng = SimRng::new(1);
    let p = ArmProfile {
        latency_median_ms: 500.0,
        ..ArmProfile::default()
    };
    for _ in 0..700 {
        one.record(p.draw(&mut rng).latency_ms);
    }
    let mut rng = SimRng::new(2);
    let p = ArmProfile {
        latency_median_ms: 900.0,
        ..ArmProfile::default()
    };
    for _ in 0..300 {
        one.record(p.draw(&mut rng).latency_ms);
    }
    assert_eq!(merged.latency, one);
}

#[test]
fn arm_stats_record_outcomes() {
    let req = SimRequest {
        index: 3,
        at_ms: 150,
        unit: "user-1".into(),
        attrs: Default::default(),
    };
    // (fallback, escalated, corrected, refusal, latency, tokens in, tokens out)
    let table = [
        (true, false, false, false, 100.0, 10, 5),
        (false, true, false, false, 200.0, 20, 10),
        (false, true, true, false, 300.0, 30, 15),
        (false, false, false, true, 400.0, 40, 20),
    ];
    let mut s = ArmStats::new();
    for (f, e, m, r, ms, ti, to) in table {
        let o = Observation {
            fallback: f,
            escalated: e,
            manually_corrected: m,
            refusal: r,
            latency_ms: ms,
            tokens_in: ti,
            tokens_out: to,
        };
        s.record(&req.outcome(&o, prompt(), vid(2), Some(rid(1)), Some(Arm::Candidate)));
    }
    assert_eq!(
        (
            s.samples,
            s.fallback,
            s.escalated,
            s.manually_corrected,
            s.refusal
        ),
        (4, 1, 2, 1, 1)
    );
    assert_eq!(s.tokens_sum, 15 + 30 + 45 + 60);
    assert_eq!(
        s.tokens_sq_sum,
        15.0 * 15.0 + 30.0 * 30.0 + 45.0 * 45.0 + 60.0 * 60.0
    );
    assert_eq!(s.mean_tokens(), Some(37.5));
    // Sample variance of 15, 30, 45, 60.
    assert!((s.tokens_variance() - 375.0).abs() < 1e-9);
    let summary = s.summary();
    assert_eq!(summary.escalation_rate, 0.5);
    assert_eq!(summary.refusal_rate, 0.25);
    let p95 = summary.latency_p95_ms.unwrap();
    assert!((392.0..=408.0).contains(&p95), "{p95}");
}

// ---------------------------------------------------------------------------------------------
// The test statistic
// ---------------------------------------------------------------------------------------------

#[test]
fn the_mixture_likelihood_ratio_has_its_closed_form() {
    let (v, tau_sq) = (1e-4, 4e-4);
    // At x = 0: ln 2 + ½ ln(V/(V+τ²)) + ln Φ(0) = ½ ln(V/(V+τ²)).
    let at_zero = log_mixture_likelihood_ratio(0.0, v, tau_sq);
    assert!(
        (at_zero - 0.5 * (v / (v + tau_sq)).ln()).abs() < 1e-6,
        "{at_zero}"
    );
    // Far above: Φ → 1, so ln 2 + ½ ln(V/(V+τ²)) + x²τ²/(2V(V+τ²)).
    let x = 0.1;
    let far = log_mixture_likelihood_ratio(x, v, tau_sq);
    let closed =
        2f64.ln() + 0.5 * (v / (v + tau_sq)).ln() + x * x * tau_sq / (2.0 * v * (v + tau_sq));
    assert!((far - closed).abs() < 1e-6, "{far} vs {closed}");
    // Increasing in x, below 0 (Λ < 1) whenever x <= 0, finite far below.
    let mut last = f64::NEG_INFINITY;
    for i in -200..=200 {
        let x = f64::from(i) * 0.0005;
        let l = log_mixture_likelihood_ratio(x, v, tau_sq);
        assert!(l.is_finite() && l > last, "x={x}: {l} after {last}");
        if x <= 0.0 {
            assert!(l < 0.0, "x={x}: {l}");
        }
        last = l;
    }
    assert!(log_mixture_likelihood_ratio(-10.0, v, tau_sq).is_finite());
}

// ---------------------------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------------------------

#[test]
fn too_little_data_holds_and_never_passes_or_breaches() {
    let g = guard(|g| {
        g.escalation_rate = rate(Some(0.05), Some(0.0));
        g.latency_p95_ms = quantity(Some(100.0), Some(0.0));
    });
    // (what, candidate, control, words)
    let table: Vec<(&str, ArmStats, ArmStats, &str)> = vec![
        (
            "no data",
            ArmStats::new(),
            ArmStats::new(),
            "holding: no outcomes yet (100 per arm needed)",
        ),
        (
            "few candidate samples, all escalated and slow",
            {
                let mut s = latency(5000.0, 37, 1);
                s.escalated = 37;
                s
            },
            counted(1000, (0, 0, 0), 2),
            "holding: 37 of 100 candidate samples and 1000 of 100 control samples",
        ),
        (
            "control short",
            counted(500, (0, 400, 0), 3),
            counted(99, (0, 0, 0), 4),
            "holding: 500 of 100 candidate samples and 99 of 100 control samples",
        ),
    ];
    for (what, c, k, words) in table {
        let j = judge(&g, &c, &k, &cfg());
        assert_eq!(j.verdict, Verdict::Holding, "{what}: {}", j.words);
        assert_eq!(j.words, words, "{what}");
        assert_eq!(j.guardrails.len(), 4, "{what}: evidence is still computed");
        assert!(j.breached().next().is_none(), "{what}: {:?}", j.guardrails);
        let ready = stage_ready(&j, 0, &c, &k);
        assert!(!ready.ready, "{what}: holding is never ready");
    }
    // The same extreme data with enough samples does breach.
    let mut c = latency(5000.0, 100, 1);
    c.escalated = 100;
    let j = judge(&g, &c, &counted(1000, (0, 0, 0), 2), &cfg());
    assert_eq!(j.verdict, Verdict::Breached, "{}", j.words);
}

/// One row: guardrails, candidate, control, and the (guardrail, bound) pairs that must breach
/// (empty: healthy).
type Row = (
    &'static str,
    Guardrails,
    ArmStats,
    ArmStats,
    &'static [(&'static str, Bound)],
);

fn verdict_table() -> Vec<Row> {
    use Bound::*;
    vec![
        // Breaches, one per guardrail kind and bound.
        (
            "fallback over max_rate",
            guard(|g| g.fallback_rate = rate(Some(0.05), None)),
            counted(1000, (100, 0, 0), 1),
            counted(1000, (10, 0, 0), 2),
            &[("fallback_rate", MaxRate)],
        ),
        (
            "escalation +2 points over max_increase +1",
            guard(|g| g.escalation_rate = rate(None, Some(0.01))),
            counted(10_000, (0, 400, 0), 1),
            counted(10_000, (0, 200, 0), 2),
            &[("escalation_rate", MaxIncrease)],
        ),
        (
            "manual corrections 5% vs 2%, no increase allowed",
            guard(|g| g.manual_correction_rate = rate(Some(0.5), Some(0.0))),
            counted(3000, (0, 0, 150), 1),
            counted(3000, (0, 0, 60), 2),
            &[("manual_correction_rate", MaxIncrease)],
        ),
        (
            "latency p95 +50% over max_increase +20%",
            guard(|g| g.latency_p95_ms = quantity(None, Some(0.2))),
            latency(1200.0, 2000, 1),
            latency(800.0, 2000, 2),
            &[("latency_p95_ms", MaxIncrease)],
        ),
        (
            "latency p95 ~1820 ms over max_value 1500",
            guard(|g| g.latency_p95_ms = quantity(Some(1500.0), Some(1.0))),
            latency(800.0, 2000, 1),
            latency(800.0, 2000, 2),
            &[("latency_p95_ms", MaxValue)],
        ),
        (
            "tokens 750 vs 550 over max_increase +10%",
            guard(|g| g.tokens_per_request = quantity(None, Some(0.1))),
            tokens(600.0, 500, 1),
            tokens(400.0, 500, 2),
            &[("tokens_per_request", MaxIncrease)],
        ),
        (
            "tokens 750 over max_value 600 (and over +10%)",
            guard(|g| g.tokens_per_request = quantity(Some(600.0), Some(0.1))),
            tokens(600.0, 500, 1),
            tokens(400.0, 500, 2),
            &[
                ("tokens_per_request", MaxValue),
                ("tokens_per_request", MaxIncrease),
            ],
        ),
        (
            "only the breached guardrail of several",
            guard(|g| {
                g.fallback_rate = rate(Some(0.05), Some(0.01));
                g.escalation_rate = rate(None, Some(0.0));
                g.latency_p95_ms = quantity(Some(10_000.0), Some(0.5));
            }),
            counted(3000, (30, 150, 0), 1),
            counted(3000, (30, 60, 0), 2),
            &[("escalation_rate", MaxIncrease)],
        ),
        // The candidate is better, or equal: healthy.
        (
            "fallback well under max_rate",
            guard(|g| g.fallback_rate = rate(Some(0.05), Some(0.0))),
            counted(3000, (30, 0, 0), 1),
            counted(3000, (60, 0, 0), 2),
            &[],
        ),
        (
            "escalations halved",
            guard(|g| g.escalation_rate = rate(None, Some(0.0))),
            counted(10_000, (0, 100, 0), 1),
            counted(10_000, (0, 200, 0), 2),
            &[],
        ),
        (
            "no events at all",
            guard(|g| {
                g.fallback_rate = rate(Some(0.0), Some(0.0));
                g.escalation_rate = rate(Some(0.0), Some(0.0));
            }),
            counted(5000, (0, 0, 0), 1),
            counted(5000, (0, 0, 0), 2),
            &[],
        ),
        (
            "faster candidate",
            guard(|g| g.latency_p95_ms = quantity(Some(2500.0), Some(0.0))),
            latency(600.0, 3000, 1),
            latency(800.0, 3000, 2),
            &[],
        ),
        (
            "fewer tokens",
            guard(|g| g.tokens_per_request = quantity(Some(700.0), Some(0.0))),
            tokens(300.0, 2000, 1),
            tokens(400.0, 2000, 2),
            &[],
        ),
        (
            "identical arms, every guardrail at zero increase",
            guard(|g| {
                g.fallback_rate = rate(None, Some(0.0));
                g.escalation_rate = rate(None, Some(0.0));
                g.manual_correction_rate = rate(None, Some(0.0));
                g.latency_p95_ms = quantity(None, Some(0.0));
                g.tokens_per_request = quantity(None, Some(0.0));
            }),
            drawn(&ArmProfile::default(), 4000, 1),
            drawn(&ArmProfile::default(), 4000, 2),
            &[],
        ),
    ]
}

#[test]
fn each_guardrail_kind_breaches_and_a_better_candidate_does_not() {
    for (what, g, c, k, expected) in verdict_table() {
        let j = judge(&g, &c, &k, &cfg());
        let breached: Vec<(&str, Bound)> = j
            .breached()
            .map(|b| (b.guardrail.as_str(), b.bound))
            .collect();
        assert_eq!(breached, expected.to_vec(), "{what}: {}", j.words);
        let want = if expected.is_empty() {
            Verdict::Healthy
        } else {
            Verdict::Breached
        };
        assert_eq!(j.verdict, want, "{what}: {}", j.words);
        assert!(
            j.words.starts_with(want.name()),
            "{what}: words start with the verdict: {}",
            j.words
        );
        for b in &j.guardrails {
            assert_eq!(
                b.breached,
                b.statistic >= b.threshold,
                "{what}: {} {:?}",
                b.guardrail,
                b.bound
            );
            if b.breached {
                assert!(b.excess > 0.0, "{what}: a breach is over its bound: {b:?}");
                assert!(j.words.contains(&b.words), "{what}: {}", j.words);
            }
        }
    }
}

#[test]
fn the_judgement_records_its_evidence() {
    let g = guard(|g| {
        g.escalation_rate = rate(Some(0.10), Some(0.01));
        g.latency_p95_ms = quantity(None, Some(0.2));
    });
    let c = counted(10_000, (0, 400, 0), 1);
    let k = counted(8_000, (0, 160, 0), 2);
    let j = judge(&g, &c, &k, &cfg());
    assert_eq!(j.verdict, Verdict::Breached);
    assert_eq!(
        j.words,
        "breached: escalation_rate 4.0% vs control 2.0% (+2.0 points, limit +1.0 points)"
    );
    assert_eq!(j.candidate.samples, 10_000);
    assert_eq!(j.control.samples, 8_000);
    assert_eq!(j.candidate.escalation_rate, 0.04);
    assert_eq!(j.control.escalation_rate, 0.02);
    assert!(j.candidate.latency_p95_ms.is_some() && j.candidate.mean_tokens.is_some());
    assert_eq!(j.config, cfg());
    // Three bounds: the threshold is ln(3 / alpha).
    assert_eq!(j.guardrails.len(), 3);
    let threshold = (3.0f64 / 0.01).ln();
    for b in &j.guardrails {
        assert!((b.threshold - threshold).abs() < 1e-12, "{b:?}");
        assert!(b.std_error > 0.0 && b.statistic.is_finite(), "{b:?}");
    }
    let by = |name: &str, bound: Bound| {
        j.guardrails
            .iter()
            .find(|b| b.guardrail == name && b.bound == bound)
            .unwrap_or_else(|| panic!("no {name} {bound:?}"))
    };
    let inc = by("escalation_rate", Bound::MaxIncrease);
    assert_eq!(
        (inc.limit, inc.candidate_value, inc.control_value),
        (0.01, 0.04, 0.02)
    );
    assert!((inc.excess - 0.01).abs() < 1e-12);
    assert_eq!(
        (
            inc.counts.candidate.numerator,
            inc.counts.candidate.denominator
        ),
        (400.0, 10_000)
    );
    assert_eq!(
        (inc.counts.control.numerator, inc.counts.control.denominator),
        (160.0, 8_000)
    );
    assert!(inc.breached && inc.statistic > inc.threshold);
    let max = by("escalation_rate", Bound::MaxRate);
    assert!(!max.breached && max.statistic < 0.0, "{max:?}");
    assert_eq!(max.words, "escalation_rate 4.0% (limit 10.0%)");
    let lat = by("latency_p95_ms", Bound::MaxIncrease);
    let (pc, pk) = (
        j.candidate.latency_p95_ms.unwrap(),
        j.control.latency_p95_ms.unwrap(),
    );
    assert_eq!((lat.candidate_value, lat.control_value), (pc, pk));
    assert!((lat.latency_threshold_ms.unwrap() - pk * 1.2).abs() < 1e-9);
    assert!(lat.words.starts_with("latency_p95_ms "), "{}", lat.words);
    assert!(lat.words.contains("limit +20.0%"), "{}", lat.words);
    assert!(!lat.breached);

    // The whole judgement survives JSON (it is recorded on a freeze).
    // (serde_json reads floats back to within an ulp, not always bit for bit.)
    let json = serde_json::to_string(&j).unwrap();
    let back: Judgement = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verdict, j.verdict);
    assert_eq!(back.words, j.words);
    assert_eq!(back.guardrails.len(), j.guardrails.len());
    assert_json_close(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::to_value(&j).unwrap(),
        "$",
    );
    let value = serde_json::to_value(&j).unwrap();
    assert_eq!(value["verdict"], "breached");
    assert_eq!(value["guardrails"][0]["bound"], "max_rate");
    assert_eq!(value["guardrails"][1]["bound"], "max_increase");
}

/// Equal JSON, numbers to 1e-12 relative.
#[track_caller]
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{path}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                assert_json_close(v, &y[k], &format!("{path}.{k}"));
            }
        }
        (x, y) => assert_eq!(x, y, "{path}"),
    }
}

#[test]
fn arm_stats_and_config_round_trip_and_config_has_defaults() {
    let s = drawn(&ArmProfile::default(), 300, 9);
    let back: ArmStats = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    let c: JudgeConfig = toml::from_str("").unwrap();
    assert_eq!(c, JudgeConfig::default());
    assert_eq!(
        (c.alpha, c.min_samples_per_arm, c.mixture_tau),
        (0.01, 100, 0.1)
    );
    let c: JudgeConfig = toml::from_str("alpha = 0.05").unwrap();
    assert_eq!((c.alpha, c.min_samples_per_arm), (0.05, 100));
    assert!(toml::from_str::<JudgeConfig>("alpah = 0.05").is_err());
    // (config, invalid field)
    let table = [
        (
            JudgeConfig {
                alpha: 0.0,
                ..cfg()
            },
            "alpha",
        ),
        (
            JudgeConfig {
                alpha: 1.0,
                ..cfg()
            },
            "alpha",
        ),
        (
            JudgeConfig {
                mixture_tau: 0.0,
                ..cfg()
            },
            "mixture_tau",
        ),
        (
            JudgeConfig {
                mixture_tau: f64::NAN,
                ..cfg()
            },
            "mixture_tau",
        ),
    ];
    for (c, field) in table {
        assert_eq!(c.validate().unwrap_err().field, field);
    }
    assert!(cfg().validate().is_ok());
}

#[test]
fn min_samples_and_alpha_come_from_the_config() {
    let g = guard(|g| g.escalation_rate = rate(None, Some(0.0)));
    let c = counted(400, (0, 40, 0), 1);
    let k = counted(400, (0, 8, 0), 2);
    // (config, verdict)
    let table = [
        (cfg(), Verdict::Breached),
        (
            JudgeConfig {
                min_samples_per_arm: 401,
                ..cfg()
            },
            Verdict::Holding,
        ),
        (
            JudgeConfig {
                alpha: 1e-9,
                ..cfg()
            },
            Verdict::Healthy,
        ),
    ];
    for (config, verdict) in table {
        let j = judge(&g, &c, &k, &config);
        assert_eq!(j.verdict, verdict, "{config:?}: {}", j.words);
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stage_is_ready_with_enough_samples_and_a_healthy_verdict() {
    let g = guard(|g| g.escalation_rate = rate(None, Some(0.01)));
    let healthy = (counted(1000, (0, 20, 0), 1), counted(1200, (0, 24, 0), 2));
    let breached = (counted(3000, (0, 300, 0), 1), counted(3000, (0, 60, 0), 2));
    let holding = (counted(50, (0, 1, 0), 1), counted(1200, (0, 24, 0), 2));
    // (what, arms, stage min_samples, ready, words start)
    let table = [
        ("enough and healthy", &healthy, 1000, true, "ready: "),
        (
            "stage needs more",
            &healthy,
            1100,
            false,
            "not ready: 1000 of 1100",
        ),
        ("no stage minimum", &healthy, 0, true, "ready: "),
        ("breached", &breached, 100, false, "not ready: breached: "),
        ("holding", &holding, 10, false, "not ready: holding: "),
    ];
    for (what, (c, k), min, ready, words) in table {
        let j = judge(&g, c, k, &cfg());
        let r = stage_ready(&j, min, c, k);
        assert_eq!(r.ready, ready, "{what}: {}", r.words);
        assert!(r.words.starts_with(words), "{what}: {}", r.words);
        assert_eq!(
            (r.min_samples, r.candidate_samples, r.control_samples),
            (min, c.samples, k.samples)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The fixed-threshold baseline
// ---------------------------------------------------------------------------------------------

#[test]
fn the_fixed_threshold_check_compares_one_interval_without_statistics() {
    // (what, guardrails, candidate, control, failed)
    let table: Vec<(&str, Guardrails, ArmStats, ArmStats, bool)> = vec![
        (
            "one escalation more than control",
            guard(|g| g.escalation_rate = rate(None, Some(0.0))),
            counted(120, (0, 3, 0), 1),
            counted(120, (0, 2, 0), 2),
            true,
        ),
        (
            "equal",
            guard(|g| g.escalation_rate = rate(None, Some(0.0))),
            counted(120, (0, 2, 0), 1),
            counted(120, (0, 2, 0), 2),
            false,
        ),
        (
            "over max_rate",
            guard(|g| g.fallback_rate = rate(Some(0.05), None)),
            counted(20, (2, 0, 0), 1),
            counted(20, (5, 0, 0), 2),
            true,
        ),
        (
            "one sample is enough",
            guard(|g| g.fallback_rate = rate(Some(0.05), None)),
            counted(1, (1, 0, 0), 1),
            ArmStats::new(),
            true,
        ),
        (
            "no candidate sample, no check",
            guard(|g| g.fallback_rate = rate(Some(0.0), Some(0.0))),
            ArmStats::new(),
            counted(10, (0, 0, 0), 2),
            false,
        ),
        (
            "no control: the increase is not checked",
            guard(|g| g.fallback_rate = rate(None, Some(0.0))),
            counted(10, (5, 0, 0), 1),
            ArmStats::new(),
            false,
        ),
        (
            "slower p95",
            guard(|g| g.latency_p95_ms = quantity(None, Some(0.1))),
            latency(1300.0, 120, 1),
            latency(800.0, 120, 2),
            true,
        ),
        (
            "p95 over max_value",
            guard(|g| g.latency_p95_ms = quantity(Some(1000.0), None)),
            latency(800.0, 120, 1),
            latency(800.0, 120, 2),
            true,
        ),
        (
            "more tokens",
            guard(|g| g.tokens_per_request = quantity(None, Some(0.1))),
            tokens(600.0, 120, 1),
            tokens(400.0, 120, 2),
            true,
        ),
        (
            "fewer tokens",
            guard(|g| g.tokens_per_request = quantity(Some(1000.0), Some(0.0))),
            tokens(300.0, 120, 1),
            tokens(400.0, 120, 2),
            false,
        ),
    ];
    for (what, g, c, k, failed) in table {
        assert_eq!(fixed_threshold_check(&g, &c, &k), failed, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// The plan's guardrails
// ---------------------------------------------------------------------------------------------

#[test]
fn plans_declare_latency_and_token_guardrails() {
    let head = "[[stages]]\nname = \"all\"\npercent = 100\n[guardrails]\n";
    let ok = format!(
        "{head}latency_p95_ms = {{ max_value = 2000, max_increase = 0.2 }}\ntokens_per_request = {{ max_increase = 0.1 }}\n"
    );
    let p = RolloutPlan::from_text(&ok, FileFormat::Toml).unwrap();
    assert_eq!(
        p.guardrails.latency_p95_ms,
        quantity(Some(2000.0), Some(0.2))
    );
    assert_eq!(p.guardrails.tokens_per_request, quantity(None, Some(0.1)));
    assert!(p.guardrails.named().is_empty());
    assert_eq!(
        p.guardrails
            .quantities()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        ["latency_p95_ms", "tokens_per_request"]
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json["guardrails"],
        serde_json::json!({
            "latency_p95_ms": { "max_value": 2000.0, "max_increase": 0.2 },
            "tokens_per_request": { "max_increase": 0.1 }
        })
    );
    // (guardrails section, field named by the error)
    #[rustfmt::skip]
    let table = [
        ("latency_p95_ms = {}\n", "guardrails.latency_p95_ms"),
        ("tokens_per_request = {}\n", "guardrails.tokens_per_request"),
        ("latency_p95_ms = { max_value = -1 }\n", "guardrails.latency_p95_ms.max_value"),
        ("latency_p95_ms = { max_value = inf }\n", "guardrails.latency_p95_ms.max_value"),
        ("tokens_per_request = { max_increase = nan }\n", "guardrails.tokens_per_request.max_increase"),
        ("tokens_per_request = { max_increase = -0.1 }\n", "guardrails.tokens_per_request.max_increase"),
    ];
    for (section, field) in table {
        let err =
            RolloutPlan::from_text(&format!("{head}{section}"), FileFormat::Toml).unwrap_err();
        let FileError::Invalid { source, .. } = &err else {
            panic!("{section}: {err:?}")
        };
        assert_eq!(source.field, field, "{section}");
    }
    let err = RolloutPlan::from_text(
        &format!("{head}latency_p95_ms = {{ max_rate = 0.1 }}\n"),
        FileFormat::Toml,
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_rate"), "{err}");
    let err = RolloutPlan::from_text(head, FileFormat::Toml).unwrap_err();
    assert!(
        err.to_string()
            .contains("latency_p95_ms, tokens_per_request"),
        "{err}"
    );
}

#[test]
fn the_excess_to_breach_is_where_the_statistic_reaches_its_threshold() {
    use pledger_core::canary::{excess_to_reach, log_mixture_likelihood_ratio};
    for (v, tau_sq, level) in [
        (1e-4, 1e-3, 6.9),
        (2.5e-5, 4e-4, 8.5),
        (10.0, 100.0, 5.0),
        (1e-8, 1e-6, 12.0),
    ] {
        let x = excess_to_reach(level, v, tau_sq).expect("reachable");
        assert!(x > 0.0);
        assert!(log_mixture_likelihood_ratio(x, v, tau_sq) >= level);
        assert!(log_mixture_likelihood_ratio(x * (1.0 - 1e-6), v, tau_sq) < level);
    }
    // A level the statistic is already at for x = 0 needs no excess.
    assert_eq!(excess_to_reach(-10.0, 1e-4, 1e-3), Some(0.0));
}
