//! The gate as a pure function: one line per check case.

use std::collections::BTreeMap;

use pledger_core::gate::{evaluate_gate, CheckKind, GateCheck, GateOutcome};
use pledger_core::{FileError, FileFormat, GatePolicy};

use crate::support::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Within the limit.
    Pass,
    /// Over the limit.
    Fail,
    /// Over the limit, waived by the accepted trade-off.
    Waived,
    /// The check is not listed at all.
    Absent,
}
use Expect::*;

fn base() -> BundleBuilder {
    BundleBuilder::new(&vid(2), &vid(1))
}

fn policy(f: impl FnOnce(&mut GatePolicy)) -> GatePolicy {
    let mut p = GatePolicy::default();
    f(&mut p);
    p
}

/// Evaluates the gate and checks one named check and the overall verdict. The rest of the base
/// bundle passes, so the gate passes exactly when the named check does.
#[track_caller]
fn check(
    what: &str,
    bundle: BundleBuilder,
    policy: &GatePolicy,
    tradeoff: bool,
    name: &str,
    expect: Expect,
) -> GateOutcome {
    let outcome = evaluate_gate(&bundle.build(), policy, tradeoff);
    let found = outcome.checks.iter().find(|c| c.name == name);
    match (expect, found) {
        (Absent, None) => {}
        (Absent, Some(c)) => panic!("{what}: `{name}` should not be listed: {c:?}"),
        (_, None) => panic!("{what}: no check `{name}` in {:?}", names(&outcome)),
        (expect, Some(c)) => {
            let (passed, waived) = match expect {
                Pass => (true, false),
                Fail => (false, false),
                Waived => (true, true),
                Absent => unreachable!(),
            };
            assert_eq!(
                (c.passed, c.waived_by_tradeoff),
                (passed, waived),
                "{what}: {c:?}"
            );
            assert_eq!(outcome.passed, passed, "{what}: overall verdict");
        }
    }
    let failed: Vec<&GateCheck> = outcome.failed_checks().collect();
    assert_eq!(outcome.passed, failed.is_empty(), "{what}");
    outcome
}

fn names(outcome: &GateOutcome) -> Vec<&str> {
    outcome.checks.iter().map(|c| c.name.as_str()).collect()
}

fn default() -> GatePolicy {
    GatePolicy::default()
}

#[test]
fn segment_pass_rate() {
    let billing_5 = policy(|p| {
        p.segment_max_pass_rate_drop.insert("billing".into(), 0.05);
    });
    let billing_0 = policy(|p| {
        p.segment_max_pass_rate_drop.insert("billing".into(), 0.0);
    });
    let loose = policy(|p| p.max_pass_rate_drop = 0.10);
    #[rustfmt::skip]
    let table: Vec<(&str, BundleBuilder, GatePolicy, &str, Expect)> = vec![
        ("unchanged", base(), default(), "segment.general", Pass),
        ("improved", base().segment("general", 200, 0.95, 0.90), default(), "segment.general", Pass),
        ("drop within margin", base().segment("general", 200, 0.89, 0.90), default(), "segment.general", Pass),
        ("drop exactly at 0.02", base().segment("general", 200, 0.88, 0.90), default(), "segment.general", Pass),
        ("drop exactly at 0.02 (other rates)", base().segment("general", 200, 0.71, 0.73), default(), "segment.general", Pass),
        ("drop just over 0.02", base().segment("general", 200, 0.879, 0.90), default(), "segment.general", Fail),
        ("drop well over", base().segment("general", 200, 0.70, 0.90), default(), "segment.general", Fail),
        ("looser global margin", base().segment("general", 200, 0.81, 0.90), loose, "segment.general", Pass),
        ("second segment over", base().segment("billing", 50, 0.85, 0.90), default(), "segment.billing", Fail),
        ("per-segment override allows", base().segment("billing", 50, 0.86, 0.90), billing_5.clone(), "segment.billing", Pass),
        ("per-segment override at its boundary", base().segment("billing", 50, 0.85, 0.90), billing_5.clone(), "segment.billing", Pass),
        ("per-segment override exceeded", base().segment("billing", 50, 0.84, 0.90), billing_5.clone(), "segment.billing", Fail),
        ("override applies only to its segment", base().segment("general", 200, 0.86, 0.90), billing_5, "segment.general", Fail),
        ("stricter override", base().segment("billing", 50, 0.899, 0.90), billing_0, "segment.billing", Fail),
    ];
    #[rustfmt::skip]
    let coverage: Vec<(&str, BundleBuilder, GatePolicy, &str, Expect)> = vec![
        ("a segment with cases is covered", base().segment("billing", 50, 0.9, 0.9), default(), "segment.billing.coverage", Absent),
        ("a segment with zero cases is not evidence", base().segment("billing", 0, 0.9, 0.9), default(), "segment.billing.coverage", Fail),
        ("a policy margin for a segment the bundle lacks", base(), policy(|p| { p.segment_max_pass_rate_drop.insert("billling".into(), 0.01); }), "segment.billling.coverage", Fail),
    ];
    for (what, bundle, policy, name, expect) in coverage {
        check(what, bundle, &policy, false, name, expect);
    }
    for (what, bundle, policy, name, expect) in table {
        let outcome = check(what, bundle, &policy, false, name, expect);
        let c = outcome.checks.iter().find(|c| c.name == name).unwrap();
        assert_eq!(c.kind, CheckKind::SegmentPassRate);
    }
}

#[test]
fn hard_negatives() {
    let at_least_20 = policy(|p| p.min_hard_negative_cases = 20);
    let none_required = policy(|p| p.min_hard_negative_cases = 0);
    #[rustfmt::skip]
    let table: Vec<(&str, BundleBuilder, GatePolicy, &str, Expect)> = vec![
        ("covered", base(), default(), "hard_negative.ambiguous.coverage", Pass),
        ("missing category", base().without_hard_negative("adversarial"), default(), "hard_negative.adversarial.coverage", Fail),
        ("missing category has no pass-rate check", base().without_hard_negative("adversarial"), default(), "hard_negative.adversarial.pass_rate", Absent),
        ("zero cases", base().hard_negative("long_context", 0, 0.8, 0.8), default(), "hard_negative.long_context.coverage", Fail),
        ("fewer cases than the policy's minimum", base().hard_negative("long_context", 19, 0.8, 0.8), at_least_20.clone(), "hard_negative.long_context.coverage", Fail),
        ("exactly the policy's minimum", base().hard_negative("long_context", 20, 0.8, 0.8), at_least_20, "hard_negative.long_context.coverage", Pass),
        ("no minimum, zero cases", base().hard_negative("long_context", 0, 0.8, 0.8), none_required, "hard_negative.long_context.coverage", Pass),
        ("drop within margin", base().hard_negative("adversarial", 20, 0.79, 0.80), default(), "hard_negative.adversarial.pass_rate", Pass),
        ("drop exactly at 0.02", base().hard_negative("adversarial", 20, 0.78, 0.80), default(), "hard_negative.adversarial.pass_rate", Pass),
        ("drop over", base().hard_negative("adversarial", 20, 0.75, 0.80), default(), "hard_negative.adversarial.pass_rate", Fail),
        ("improved", base().hard_negative("partial_tool_failure", 20, 0.95, 0.80), default(), "hard_negative.partial_tool_failure.pass_rate", Pass),
        ("extra categories are checked when present", base().hard_negative("jailbreak", 10, 0.0, 1.0), default(), "hard_negative.jailbreak.pass_rate", Fail),
        ("extra categories within margin pass", base().hard_negative("jailbreak", 10, 0.9, 0.9), default(), "hard_negative.jailbreak.pass_rate", Pass),
        ("extra categories need no coverage check", base().hard_negative("jailbreak", 0, 0.9, 0.9), default(), "hard_negative.jailbreak.coverage", Absent),
    ];
    for (what, bundle, policy, name, expect) in table {
        check(what, bundle, &policy, false, name, expect);
    }
}

#[test]
fn latency_tokens_and_cost() {
    let half = policy(|p| {
        p.max_latency_p95_increase = 0.5;
        p.max_tokens_increase = 0.5;
        p.max_cost_increase = 0.5;
    });
    #[rustfmt::skip]
    let table: Vec<(&str, BundleBuilder, GatePolicy, bool, &str, Expect)> = vec![
        ("latency unchanged", base(), default(), false, "latency_p95", Pass),
        ("latency faster", base().latency_p95(800.0, 1000.0), default(), false, "latency_p95", Pass),
        ("latency +10% exactly", base().latency_p95(1100.0, 1000.0), default(), false, "latency_p95", Pass),
        ("latency +10% exactly (awkward floats)", base().latency_p95(330.0, 300.0), default(), false, "latency_p95", Pass),
        ("latency +10.1%", base().latency_p95(1101.0, 1000.0), default(), false, "latency_p95", Fail),
        ("latency +40% under a 50% policy", base().latency_p95(1400.0, 1000.0), half.clone(), false, "latency_p95", Pass),
        ("latency over, trade-off", base().latency_p95(1500.0, 1000.0), default(), true, "latency_p95", Waived),
        ("latency from zero", base().latency_p95(5.0, 0.0), default(), false, "latency_p95", Fail),
        ("latency zero to zero", base().latency_p95(0.0, 0.0), default(), false, "latency_p95", Pass),
        ("tokens +10% exactly", base().tokens(550.0, 500.0), default(), false, "tokens_per_request", Pass),
        ("tokens +15%", base().tokens(575.0, 500.0), default(), false, "tokens_per_request", Fail),
        ("tokens over, trade-off", base().tokens(575.0, 500.0), default(), true, "tokens_per_request", Waived),
        ("tokens absent", base().no_tokens(), default(), false, "tokens_per_request", Absent),
        ("cost +10% exactly", base().cost(0.011, 0.010), default(), false, "cost_per_request_usd", Pass),
        ("cost +15%", base().cost(0.0115, 0.010), default(), false, "cost_per_request_usd", Fail),
        ("cost +15% under a 50% policy", base().cost(0.0115, 0.010), half, false, "cost_per_request_usd", Pass),
        ("cost over, trade-off", base().cost(0.03, 0.010), default(), true, "cost_per_request_usd", Waived),
        ("cost absent", base().no_cost(), default(), false, "cost_per_request_usd", Absent),
        ("trade-off within limits waives nothing", base(), default(), true, "cost_per_request_usd", Pass),
    ];
    for (what, bundle, policy, tradeoff, name, expect) in table {
        check(what, bundle, &policy, tradeoff, name, expect);
    }
}

#[test]
fn tradeoff_never_waives_quality_checks() {
    #[rustfmt::skip]
    let table: Vec<(&str, BundleBuilder, &str)> = vec![
        ("segment drop", base().segment("general", 200, 0.5, 0.9), "segment.general"),
        ("missing hard negative", base().without_hard_negative("ambiguous"), "hard_negative.ambiguous.coverage"),
        ("zero hard-negative cases", base().hard_negative("ambiguous", 0, 0.8, 0.8), "hard_negative.ambiguous.coverage"),
        ("hard-negative drop", base().hard_negative("ambiguous", 20, 0.5, 0.8), "hard_negative.ambiguous.pass_rate"),
    ];
    for (what, bundle, name) in table {
        let outcome = check(what, bundle.cost(0.05, 0.01), &default(), true, name, Fail);
        let cost = outcome
            .checks
            .iter()
            .find(|c| c.name == "cost_per_request_usd")
            .unwrap();
        assert!(
            cost.waived_by_tradeoff,
            "{what}: the waivable check is still waived"
        );
    }
    for kind in [
        CheckKind::SegmentPassRate,
        CheckKind::HardNegativeCoverage,
        CheckKind::HardNegativePassRate,
    ] {
        assert!(!kind.waivable(), "{kind:?}");
    }
    for kind in [
        CheckKind::LatencyP95,
        CheckKind::TokensPerRequest,
        CheckKind::CostPerRequest,
    ] {
        assert!(kind.waivable(), "{kind:?}");
    }
}

#[test]
fn the_decision_lists_every_check_with_numbers() {
    let bundle = base()
        .segment("general", 200, 0.88, 0.90)
        .segment("billing", 50, 0.80, 0.90)
        .hard_negative("adversarial", 12, 0.70, 0.75)
        .latency_p95(1200.0, 1000.0)
        .tokens(500.0, 500.0)
        .cost(0.0125, 0.0100)
        .build();
    let outcome = evaluate_gate(&bundle, &GatePolicy::default(), false);
    assert_eq!(
        names(&outcome),
        [
            "segment.general",
            "segment.billing",
            "hard_negative.ambiguous.coverage",
            "hard_negative.ambiguous.pass_rate",
            "hard_negative.adversarial.coverage",
            "hard_negative.adversarial.pass_rate",
            "hard_negative.long_context.coverage",
            "hard_negative.long_context.pass_rate",
            "hard_negative.partial_tool_failure.coverage",
            "hard_negative.partial_tool_failure.pass_rate",
            "latency_p95",
            "tokens_per_request",
            "cost_per_request_usd",
        ]
    );
    assert!(!outcome.passed);
    // (name, observed, limit, passed, words in the detail)
    #[rustfmt::skip]
    let expected: Vec<(&str, f64, f64, bool, &[&str])> = vec![
        ("segment.general", 0.02, 0.02, true, &["0.8800", "0.9000", "200 cases", "drop 0.0200", "allowed 0.0200"]),
        ("segment.billing", 0.10, 0.02, false, &["0.8000", "0.9000", "50 cases", "drop 0.1000"]),
        ("hard_negative.adversarial.coverage", 12.0, 1.0, true, &["12 cases", "at least 1"]),
        ("hard_negative.adversarial.pass_rate", 0.05, 0.02, false, &["0.7000", "0.7500", "drop 0.0500", "allowed 0.0200"]),
        ("latency_p95", 0.20, 0.10, false, &["1200", "1000", "ms", "+20.0%", "allowed +10.0%"]),
        ("tokens_per_request", 0.0, 0.10, true, &["500", "tokens", "+0.0%"]),
        ("cost_per_request_usd", 0.25, 0.10, false, &["0.0125", "0.01", "USD", "+25.0%"]),
    ];
    for (name, observed, limit, passed, words) in expected {
        let c = outcome.checks.iter().find(|c| c.name == name).unwrap();
        assert!(
            (c.observed - observed).abs() < 1e-9,
            "{name}: observed {}",
            c.observed
        );
        assert!((c.limit - limit).abs() < 1e-12, "{name}: limit {}", c.limit);
        assert_eq!(c.passed, passed, "{name}");
        for w in words {
            assert!(c.detail.contains(w), "{name}: `{w}` not in `{}`", c.detail);
        }
    }
    let failed: Vec<&str> = outcome.failed_checks().map(|c| c.name.as_str()).collect();
    assert_eq!(
        failed,
        [
            "segment.billing",
            "hard_negative.adversarial.pass_rate",
            "latency_p95",
            "cost_per_request_usd"
        ]
    );

    let waived = evaluate_gate(&bundle, &GatePolicy::default(), true);
    let latency = waived
        .checks
        .iter()
        .find(|c| c.name == "latency_p95")
        .unwrap();
    assert!(
        latency.detail.contains("waived by the accepted trade-off"),
        "{}",
        latency.detail
    );
    assert!(!waived.passed, "quality failures remain");
}

#[test]
fn missing_category_is_reported_with_zero_cases() {
    let outcome = evaluate_gate(
        &base().without_hard_negative("ambiguous").build(),
        &GatePolicy::default(),
        false,
    );
    let c = outcome
        .checks
        .iter()
        .find(|c| c.name == "hard_negative.ambiguous.coverage")
        .unwrap();
    assert_eq!((c.observed, c.limit, c.passed), (0.0, 1.0, false));
    assert!(c.detail.contains("`ambiguous` is missing"), "{}", c.detail);
}

#[test]
fn an_infinite_rise_is_recorded_as_a_finite_number() {
    let outcome = evaluate_gate(
        &base().latency_p95(5.0, 0.0).build(),
        &GatePolicy::default(),
        false,
    );
    let c = outcome
        .checks
        .iter()
        .find(|c| c.name == "latency_p95")
        .unwrap();
    assert!(c.observed.is_finite());
    // …so the decision serializes to JSON (which has no infinity).
    let json = serde_json::to_string(&outcome).unwrap();
    let back: GateOutcome = serde_json::from_str(&json).unwrap();
    assert_eq!(back, outcome);
}

// ---------------------------------------------------------------------------------------------
// Policy files
// ---------------------------------------------------------------------------------------------

#[test]
fn policy_file_overrides_defaults() {
    let text = r#"
max_cost_increase = 0.25
min_hard_negative_cases = 10

[segment_max_pass_rate_drop]
billing = 0.05
"#;
    let p = GatePolicy::from_text(text, FileFormat::Toml).unwrap();
    let mut segments = BTreeMap::new();
    segments.insert("billing".to_string(), 0.05);
    assert_eq!(
        p,
        GatePolicy {
            max_cost_increase: 0.25,
            min_hard_negative_cases: 10,
            segment_max_pass_rate_drop: segments,
            ..GatePolicy::default()
        }
    );
    let json = r#"{"max_latency_p95_increase": 0.3}"#;
    let p = GatePolicy::from_text(json, FileFormat::Json).unwrap();
    assert_eq!(p.max_latency_p95_increase, 0.3);
    assert_eq!(p.max_pass_rate_drop, 0.02);
    assert_eq!(
        GatePolicy::from_text("", FileFormat::Toml).unwrap(),
        GatePolicy::default()
    );
}

#[test]
fn policy_file_errors_name_the_field() {
    #[rustfmt::skip]
    let table: Vec<(&str, FileFormat, &str)> = vec![
        ("max_cost_increase = -0.1", FileFormat::Toml, "max_cost_increase"),
        ("max_pass_rate_drop = -1", FileFormat::Toml, "max_pass_rate_drop"),
        ("max_tokens_increase = nan", FileFormat::Toml, "max_tokens_increase"),
        ("max_latency_p95_increase = inf", FileFormat::Toml, "max_latency_p95_increase"),
        ("[segment_max_pass_rate_drop]\nbilling = -0.5", FileFormat::Toml, "segment_max_pass_rate_drop.billing"),
        ("max_cost_increse = 0.2", FileFormat::Toml, "max_cost_increse"),
        (r#"{"max_hard_negative_drop": -0.01}"#, FileFormat::Json, "max_hard_negative_drop"),
        (r#"{"min_hard_negative_cases": -1}"#, FileFormat::Json, "-1"),
        (r#"{"max_cost": 1}"#, FileFormat::Json, "max_cost"),
    ];
    for (text, format, field) in table {
        let err = GatePolicy::from_text(text, format).unwrap_err();
        match &err {
            FileError::Invalid { kind, source } => {
                assert_eq!(*kind, "gate policy");
                assert_eq!(source.field, field, "{text}");
            }
            FileError::Syntax { kind, message, .. } => {
                assert_eq!(*kind, "gate policy");
                assert!(message.contains(field), "{text}: {message}");
            }
            other => panic!("{text}: {other:?}"),
        }
        assert!(err.to_string().contains(field), "{text}: {err}");
    }
}
