//! The seeded traffic simulation, and the judgement's quality measured with it: false freezes
//! of A/A canaries under continuous monitoring, samples to detect a regression, and the same
//! two measures for the fixed-threshold baseline on the same traffic.

use std::collections::BTreeMap;

use pledger_core::canary::{ArmStats, JudgeConfig};
use pledger_core::plan::{GuardrailLimit, Guardrails, QuantityLimit};
use pledger_core::routing::Arm;
use pledger_core::sim::{
    aa_false_freeze_rate, interval_samples_per_arm, median, samples_to_detect, splitmix64, AaSetup,
    ArmProfile, DetectionSetup, InjectedRegression, RateMetric, Segment, SimRng, SimSpec,
    Simulator,
};

use crate::support::*;

fn increase(d: f64) -> Option<GuardrailLimit> {
    Some(GuardrailLimit {
        max_rate: None,
        max_increase: Some(d),
    })
}

fn relative(m: f64) -> Option<QuantityLimit> {
    Some(QuantityLimit {
        max_value: None,
        max_increase: Some(m),
    })
}

/// The benchmark's guardrail: no increase of the escalation rate at all.
fn escalation_no_increase() -> Guardrails {
    Guardrails {
        escalation_rate: increase(0.0),
        ..Guardrails::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

#[test]
fn the_generator_is_seeded_and_deterministic() {
    // splitmix64's published first output for state 0.
    let mut state = 0;
    assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
    let draw = |seed| {
        let mut r = SimRng::new(seed);
        (0..8).map(|_| r.next_u64()).collect::<Vec<_>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
    let mut a = SimRng::stream(7, 0);
    let mut b = SimRng::stream(7, 1);
    assert_ne!(a.next_u64(), b.next_u64());

    let mut r = SimRng::new(5);
    let n = 200_000;
    let (mut sum, mut hits, mut below_median) = (0.0, 0u32, 0u32);
    for _ in 0..n {
        let u = r.uniform();
        assert!((0.0..1.0).contains(&u));
        sum += u;
        hits += u32::from(r.bernoulli(0.02));
        below_median += u32::from(r.lognormal(800.0, 0.5) < 800.0);
        assert!(r.below(7) < 7);
    }
    let n = f64::from(n);
    // (what, observed, expected, tolerance: > 4 standard errors)
    let table = [
        ("uniform mean", sum / n, 0.5, 0.003),
        ("bernoulli(0.02)", f64::from(hits) / n, 0.02, 0.0013),
        ("lognormal median", f64::from(below_median) / n, 0.5, 0.005),
    ];
    for (what, got, want, tol) in table {
        assert!((got - want).abs() < tol, "{what}: {got} vs {want}");
    }
    let mut r = SimRng::new(6);
    let normals: Vec<f64> = (0..100_000).map(|_| r.standard_normal()).collect();
    let mean = normals.iter().sum::<f64>() / 1e5;
    let var = normals.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 1e5;
    assert!(
        mean.abs() < 0.015 && (var - 1.0).abs() < 0.02,
        "{mean} {var}"
    );
    assert_eq!(SimRng::new(1).below(0), 0);
}

// ---------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------

fn segmented(seed: u64) -> SimSpec {
    let mut internal = BTreeMap::new();
    internal.insert("tier".to_string(), "internal".to_string());
    let mut public = BTreeMap::new();
    public.insert("tier".to_string(), "public".to_string());
    SimSpec {
        units: 10_000,
        segments: vec![
            Segment {
                attrs: internal,
                weight: 1.0,
            },
            Segment {
                attrs: public,
                weight: 9.0,
            },
        ],
        ..SimSpec::new(seed)
    }
}

#[test]
fn the_same_seed_gives_the_same_requests_and_outcomes() {
    let run = |seed| {
        let mut sim = Simulator::new(segmented(seed)).unwrap();
        (0..2000)
            .map(|i| {
                let req = sim.next_request();
                let arm = if i % 3 == 0 {
                    Arm::Candidate
                } else {
                    Arm::Baseline
                };
                (req, sim.outcome(arm))
            })
            .collect::<Vec<_>>()
    };
    let a = run(3);
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
    // Requests arrive at the spec's rate and carry their index.
    assert_eq!(a[0].0.index, 0);
    assert_eq!(a[40].0.at_ms, 2000, "20 requests per second");
    assert!(a.iter().all(|(r, _)| r.unit.starts_with("user-")));
}

#[test]
fn units_keep_their_segment_and_segments_get_their_weight() {
    let mut sim = Simulator::new(segmented(8)).unwrap();
    let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for _ in 0..20_000 {
        let req = sim.next_request();
        let attrs = seen.entry(req.unit.clone()).or_insert(req.attrs.clone());
        assert_eq!(*attrs, req.attrs, "unit {} changed segment", req.unit);
    }
    let internal = (0..10_000)
        .filter(|n| sim.segment_of(*n).unwrap().attrs["tier"] == "internal")
        .count() as f64
        / 10_000.0;
    assert!((internal - 0.1).abs() < 0.015, "{internal}");
    // No segments: no attributes.
    let mut plain = Simulator::new(SimSpec::new(8)).unwrap();
    assert!(plain.next_request().attrs.is_empty());
}

#[test]
fn an_injected_regression_starts_after_its_samples() {
    let spec = SimSpec {
        baseline: ArmProfile::only(RateMetric::Escalation, 0.02),
        regression: Some(InjectedRegression {
            after_samples: 20_000,
            metric: RateMetric::Escalation,
            candidate_rate: 0.10,
        }),
        ..SimSpec::new(9)
    };
    let mut sim = Simulator::new(spec).unwrap();
    let mut before = ArmStats::new();
    let mut after = ArmStats::new();
    let mut control = ArmStats::new();
    for i in 0..40_000 {
        let o = sim.outcome(Arm::Candidate);
        if i < 20_000 {
            before.observe(&o);
        } else {
            after.observe(&o);
        }
        control.observe(&sim.outcome(Arm::Baseline));
    }
    assert_eq!(sim.served(Arm::Candidate), 40_000);
    assert_eq!(sim.profile(Arm::Candidate).escalation_rate, 0.10);
    assert_eq!(sim.profile(Arm::Baseline).escalation_rate, 0.02);
    // (what, observed rate, expected)
    let table = [
        ("candidate before", before.summary().escalation_rate, 0.02),
        ("candidate after", after.summary().escalation_rate, 0.10),
        ("control", control.summary().escalation_rate, 0.02),
    ];
    for (what, got, want) in table {
        assert!((got - want).abs() < 0.006, "{what}: {got} vs {want}");
    }
    assert_eq!(before.fallback, 0, "other rates are 0 in `only`");
}

#[test]
fn simulated_outcomes_are_valid_outcome_events() {
    let mut sim = Simulator::new(segmented(10)).unwrap();
    let mut stats = ArmStats::new();
    for _ in 0..500 {
        let req = sim.next_request();
        let o = sim.outcome(Arm::Candidate);
        let outcome = req.outcome(&o, prompt(), vid(2), Some(rid(1)), Some(Arm::Candidate));
        outcome.validate().unwrap();
        assert_eq!(outcome.unit.as_deref(), Some(req.unit.as_str()));
        assert_eq!(outcome.request_id, format!("req-{}", req.index));
        stats.record(&outcome);
    }
    let s = stats.summary();
    let p95 = s.latency_p95_ms.unwrap();
    // Lognormal(800 ms, 0.5): p95 = 800·e^(1.645·0.5) ≈ 1822 ms.
    assert!((1550.0..2100.0).contains(&p95), "{p95}");
    let tokens = s.mean_tokens.unwrap();
    assert!((500.0..600.0).contains(&tokens), "{tokens}");
}

#[test]
fn specs_read_from_toml_with_defaults_and_name_bad_fields() {
    let text = r#"
seed = 7
requests_per_second = 40
units = 5000
[baseline]
escalation_rate = 0.02
[candidate]
escalation_rate = 0.02
latency_median_ms = 900
[[segments]]
attrs = { tier = "internal" }
weight = 1
[[segments]]
attrs = { tier = "public", geo = "eu" }
weight = 9
[regression]
after_samples = 2000
metric = "escalation_rate"
candidate_rate = 0.04
"#;
    let spec: SimSpec = toml::from_str(text).unwrap();
    spec.validate().unwrap();
    assert_eq!(spec.baseline.fallback_rate, 0.01, "default");
    assert_eq!(spec.candidate.as_ref().unwrap().latency_median_ms, 900.0);
    assert_eq!(spec.segments[1].attrs["geo"], "eu");
    assert_eq!(
        spec.regression.as_ref().unwrap().metric,
        RateMetric::Escalation
    );
    let minimal: SimSpec = toml::from_str("seed = 1").unwrap();
    assert_eq!(minimal, SimSpec::new(1));
    assert!(toml::from_str::<SimSpec>("seed = 1\nsed = 2").is_err());
    assert!(toml::from_str::<SimSpec>("seed = 1\n[baseline]\nescalation = 0.1").is_err());

    // (TOML, invalid field)
    #[rustfmt::skip]
    let table = [
        ("seed = 1\nrequests_per_second = 0", "requests_per_second"),
        ("seed = 1\nunits = 0", "units"),
        ("seed = 1\n[baseline]\nfallback_rate = 1.5", "baseline.fallback_rate"),
        ("seed = 1\n[candidate]\nlatency_median_ms = 0", "candidate.latency_median_ms"),
        ("seed = 1\n[candidate]\ntokens_sigma = -1", "candidate.tokens_sigma"),
        ("seed = 1\n[[segments]]\nweight = 0", "segments[0].weight"),
        ("seed = 1\n[regression]\nmetric = \"refusal_rate\"\ncandidate_rate = 2", "regression.candidate_rate"),
    ];
    for (text, field) in table {
        let spec: SimSpec = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(spec.validate().unwrap_err().field, field, "{text}");
        assert!(Simulator::new(spec).is_err());
    }
    // The benchmark setups read from TOML too.
    let aa: AaSetup = toml::from_str("canaries = 10\n[profile]\nescalation_rate = 0.05").unwrap();
    assert_eq!((aa.canaries, aa.samples_per_arm), (10, 5000));
    assert_eq!(aa.profile.escalation_rate, 0.05);
    let d: DetectionSetup = toml::from_str("metric = \"fallback_rate\"").unwrap();
    assert_eq!(
        (d.metric, d.base_rate, d.bad_rate),
        (RateMetric::Fallback, 0.02, 0.04)
    );
}

#[test]
fn median_of_detection_samples() {
    // (values, median)
    let table: &[(&[u64], Option<f64>)] = &[
        (&[], None),
        (&[5], Some(5.0)),
        (&[3, 1, 2], Some(2.0)),
        (&[4, 1, 3, 2], Some(2.5)),
        (&[10, 10, 1000], Some(10.0)),
    ];
    for (values, want) in table {
        assert_eq!(median(values), *want, "{values:?}");
    }
    assert_eq!(interval_samples_per_arm(2.0), 120);
    assert_eq!(interval_samples_per_arm(0.001), 1);
}

// ---------------------------------------------------------------------------------------------
// Judgement quality: the targets
// ---------------------------------------------------------------------------------------------

/// The benchmark's A/A setting: escalation rate 2% in both arms, guardrail
/// `escalation_rate = { max_increase = 0.0 }` (the boundary of the null: the hardest case),
/// 5,000 samples per arm judged every 50 samples per arm (100 looks per canary), 1,000
/// canaries. The baseline checks 60-second intervals at 2 requests per second per arm
/// (120 samples per arm, about 42 intervals).
fn benchmark_aa() -> AaSetup {
    AaSetup {
        canaries: 1000,
        samples_per_arm: 5000,
        check_every: 50,
        requests_per_second: 2.0,
        profile: ArmProfile::only(RateMetric::Escalation, 0.02),
        seed: 2024,
    }
}

#[test]
fn aa_canaries_false_freeze_at_most_one_percent_under_continuous_monitoring() {
    let report = aa_false_freeze_rate(
        &benchmark_aa(),
        &escalation_no_increase(),
        &JudgeConfig::default(),
    );
    println!("A/A, 1000 canaries: {report:?}");
    assert_eq!(report.sequential.canaries, 1000);
    assert_eq!(report.sequential.checks_per_canary, 100);
    assert!(
        report.sequential.rate <= 0.01,
        "sequential false-freeze rate {}",
        report.sequential.rate
    );
    // The honest comparison: the fixed threshold on the same traffic freezes far more.
    assert_eq!(report.interval_samples_per_arm, 120);
    assert!(
        report.fixed_threshold.rate > report.sequential.rate && report.fixed_threshold.rate >= 0.5,
        "fixed threshold {} vs sequential {}",
        report.fixed_threshold.rate,
        report.sequential.rate
    );
}

#[test]
fn a_doubled_escalation_rate_is_detected_within_2500_samples_per_arm_at_the_median() {
    let setup = DetectionSetup {
        runs: 201,
        metric: RateMetric::Escalation,
        base_rate: 0.02,
        bad_rate: 0.04,
        check_every: 50,
        max_samples_per_arm: 20_000,
        requests_per_second: 2.0,
        seed: 2024,
    };
    let report = samples_to_detect(&setup, &escalation_no_increase(), &JudgeConfig::default());
    let (seq, fixed) = (&report.sequential, &report.fixed_threshold);
    println!(
        "2% -> 4%: sequential median {:?} (missed {}, p10 {}, p90 {}), fixed threshold median {:?} (missed {})",
        seq.median,
        seq.missed,
        seq.detected[seq.detected.len() / 10],
        seq.detected[seq.detected.len() * 9 / 10],
        fixed.median,
        fixed.missed
    );
    assert_eq!(seq.runs, 201);
    assert_eq!(seq.missed, 0, "every run detects within the cap");
    let m = seq.median.expect("a median");
    assert!(m <= 2500.0, "median samples per arm to detect: {m}");
    assert!(m >= 100.0, "never before min_samples_per_arm: {m}");
    assert!(seq.detected.iter().all(|s| s % 50 == 0 && *s >= 100));
    // The baseline detects sooner: that is what its false freezes buy.
    assert!(fixed.median.unwrap() <= m);
}

#[test]
fn aa_canaries_of_every_guardrail_kind_rarely_freeze() {
    let zero_everywhere = Guardrails {
        fallback_rate: increase(0.0),
        escalation_rate: increase(0.0),
        manual_correction_rate: increase(0.0),
        latency_p95_ms: relative(0.0),
        tokens_per_request: relative(0.0),
    };
    // (what, guardrails, canaries, samples per arm, check every)
    let table: Vec<(&str, Guardrails, usize, u64, u64)> = vec![
        (
            "escalation max_rate at the true rate",
            Guardrails {
                escalation_rate: Some(GuardrailLimit {
                    max_rate: Some(0.02),
                    max_increase: None,
                }),
                ..Guardrails::default()
            },
            400,
            5000,
            50,
        ),
        (
            "latency p95 no increase",
            Guardrails {
                latency_p95_ms: relative(0.0),
                ..Guardrails::default()
            },
            200,
            2000,
            50,
        ),
        (
            "latency p95 max_value at the true p95",
            Guardrails {
                latency_p95_ms: Some(QuantityLimit {
                    max_value: Some(800.0 * (1.644_854 * 0.5f64).exp()),
                    max_increase: None,
                }),
                ..Guardrails::default()
            },
            200,
            2000,
            50,
        ),
        (
            "tokens no increase",
            Guardrails {
                tokens_per_request: relative(0.0),
                ..Guardrails::default()
            },
            400,
            3000,
            50,
        ),
        (
            "every guardrail, no increase",
            zero_everywhere,
            150,
            2000,
            50,
        ),
        (
            "escalation judged after EVERY sample",
            escalation_no_increase(),
            150,
            2000,
            1,
        ),
    ];
    for (what, g, canaries, samples_per_arm, check_every) in table {
        let setup = AaSetup {
            canaries,
            samples_per_arm,
            check_every,
            profile: ArmProfile::default(),
            seed: 77,
            ..AaSetup::default()
        };
        let r = aa_false_freeze_rate(&setup, &g, &JudgeConfig::default());
        println!(
            "{what}: sequential {}/{} fixed threshold {}/{}",
            r.sequential.frozen, canaries, r.fixed_threshold.frozen, canaries
        );
        // alpha = 1%; at these counts, 2% leaves room for binomial noise only.
        assert!(r.sequential.rate <= 0.02, "{what}: {:?}", r.sequential);
        assert!(
            r.fixed_threshold.rate > r.sequential.rate,
            "{what}: {:?} vs {:?}",
            r.fixed_threshold,
            r.sequential
        );
    }
}

#[test]
fn quality_measures_are_deterministic_in_their_seed() {
    let small = AaSetup {
        canaries: 50,
        samples_per_arm: 1000,
        ..benchmark_aa()
    };
    let g = Guardrails {
        escalation_rate: increase(0.0),
        latency_p95_ms: relative(0.0),
        ..Guardrails::default()
    };
    let a = aa_false_freeze_rate(&small, &g, &JudgeConfig::default());
    assert_eq!(a, aa_false_freeze_rate(&small, &g, &JudgeConfig::default()));
    let d = DetectionSetup {
        runs: 21,
        ..DetectionSetup::default()
    };
    let g = escalation_no_increase();
    let one = samples_to_detect(&d, &g, &JudgeConfig::default());
    assert_eq!(one, samples_to_detect(&d, &g, &JudgeConfig::default()));
    let other = samples_to_detect(
        &DetectionSetup { seed: 99, ..d },
        &g,
        &JudgeConfig::default(),
    );
    assert_ne!(one.sequential.detected, other.sequential.detected);
}
