//! Rollout plans: parsing, shape rules naming their field, rollback criteria.

use pledger_core::plan::{MatchValue, MAX_PLAN_BYTES};
use pledger_core::{DurationSpec, FileError, FileFormat, RolloutPlan};

use crate::support::*;

const PLAN_TOML: &str = r#"
[[stages]]
name = "internal"
match = { tier = "internal" }
percent = 100

[[stages]]
name = "canary"
match = { region = ["eu-west", "eu-north"] }
percent = 5
min_samples = 500
min_bake = "1h"

[[stages]]
name = "all"
percent = 100
min_bake = "1d12h"

[guardrails]
fallback_rate = { max_rate = 0.05 }
escalation_rate = { max_increase = 0.01 }
manual_correction_rate = { max_rate = 0.1, max_increase = 0.02 }

[rollback]
criteria = "fallback above 5% or escalations up one point"
automatic = true

[advance]
automatic = true
"#;

fn parse(text: &str) -> Result<RolloutPlan, FileError> {
    RolloutPlan::from_text(text, FileFormat::Toml)
}

#[test]
fn a_full_plan_parses() {
    let p = parse(PLAN_TOML).unwrap();
    assert_eq!(p.stages.len(), 3);
    assert_eq!(
        p.stages[0].matches["tier"],
        MatchValue::One("internal".into())
    );
    assert_eq!(
        p.stages[1].matches["region"],
        MatchValue::Any(vec!["eu-west".into(), "eu-north".into()])
    );
    assert_eq!(p.stages[0].percent, 100.0);
    assert_eq!(p.stages[1].min_samples, 500);
    assert_eq!(p.stages[1].min_bake, DurationSpec::parse("1h").unwrap());
    assert_eq!(p.stages[0].min_bake, DurationSpec::ZERO);
    assert_eq!(p.stages[2].min_bake.millis(), 36 * 3_600_000);
    assert_eq!(
        p.guardrails
            .named()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        ["fallback_rate", "escalation_rate", "manual_correction_rate"]
    );
    assert_eq!(
        p.rollback_criteria(),
        Some("fallback above 5% or escalations up one point")
    );
    assert!(p.rollback.as_ref().unwrap().automatic);
    assert!(p.advance.automatic);
    assert_eq!(p.stage_index("canary"), Some(1));
    assert_eq!(p.stage_index("nope"), None);
    // The same plan as JSON.
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(RolloutPlan::from_text(&json, FileFormat::Json).unwrap(), p);
}

#[test]
fn match_values_accept_one_or_any() {
    let one = MatchValue::One("eu".into());
    let any = MatchValue::Any(vec!["eu".into(), "us".into()]);
    for (m, value, accepted) in [
        (&one, "eu", true),
        (&one, "us", false),
        (&one, "EU", false),
        (&any, "us", true),
        (&any, "apac", false),
        (&any, "", false),
    ] {
        assert_eq!(m.accepts(value), accepted, "{m:?} {value}");
    }
}

#[test]
fn rollback_criteria_must_be_non_blank_to_count() {
    // (the [rollback] section, criteria)
    #[rustfmt::skip]
    let table: &[(&str, Option<&str>)] = &[
        ("", None),
        ("[rollback]\nautomatic = true\n", None),
        ("[rollback]\ncriteria = \"\"\n", None),
        ("[rollback]\ncriteria = \"  \\n \"\n", None),
        ("[rollback]\ncriteria = \" p95 over 2s \"\n", Some("p95 over 2s")),
    ];
    let head = "[[stages]]\nname = \"all\"\npercent = 100\n[guardrails]\nfallback_rate = { max_rate = 0.05 }\n";
    for &(section, criteria) in table {
        let p = parse(&format!("{head}{section}")).unwrap_or_else(|e| panic!("{section}: {e}"));
        assert_eq!(p.rollback_criteria(), criteria, "{section}");
    }
}

#[test]
fn shape_errors_name_the_field() {
    let stage_all = "[[stages]]\nname = \"all\"\npercent = 100\n";
    let guard = "[guardrails]\nfallback_rate = { max_rate = 0.05 }\n";
    // (text, field)
    #[rustfmt::skip]
    let table: Vec<(String, &str)> = vec![
        (format!("stages = []\n{guard}"), "stages"),
        (format!("[[stages]]\nname = \" \"\npercent = 10\n{guard}"), "stages[0].name"),
        (format!("{stage_all}[[stages]]\nname = \"all\"\npercent = 100\n{guard}"), "stages[1].name"),
        (format!("[[stages]]\nname = \"a\"\npercent = 0\n{guard}"), "stages[0].percent"),
        (format!("{stage_all}[[stages]]\nname = \"b\"\npercent = 100.5\n{guard}"), "stages[1].percent"),
        (format!("[[stages]]\nname = \"a\"\npercent = -5\n{guard}"), "stages[0].percent"),
        (format!("[[stages]]\nname = \"a\"\npercent = nan\n{guard}"), "stages[0].percent"),
        (format!("[[stages]]\nname = \"a\"\npercent = 5\nmatch = {{ \"\" = \"x\" }}\n{guard}"), "stages[0].match"),
        (format!("[[stages]]\nname = \"a\"\npercent = 5\nmatch = {{ region = [] }}\n{guard}"), "stages[0].match.region"),
        (stage_all.to_string(), "guardrails"),
        (format!("{stage_all}[guardrails]\n"), "guardrails"),
        (format!("{stage_all}[guardrails]\nfallback_rate = {{}}\n"), "guardrails.fallback_rate"),
        (format!("{stage_all}[guardrails]\nescalation_rate = {{ max_rate = 1.5 }}\n"), "guardrails.escalation_rate.max_rate"),
        (format!("{stage_all}[guardrails]\nmanual_correction_rate = {{ max_increase = -0.1 }}\n"), "guardrails.manual_correction_rate.max_increase"),
    ];
    for (text, field) in table {
        let err = parse(&text).unwrap_err();
        let FileError::Invalid { kind, source } = &err else {
            panic!("{field}: {err:?}")
        };
        assert_eq!(*kind, "rollout plan");
        assert_eq!(source.field, field, "{text}");
        assert!(err.to_string().contains(field));
    }
}

#[test]
fn syntax_errors_name_the_field() {
    #[rustfmt::skip]
    let table: Vec<(String, &str)> = vec![
        (PLAN_TOML.replace("min_samples", "min_sample"), "min_sample"),
        (PLAN_TOML.replace("[advance]", "[advanse]"), "advanse"),
        (PLAN_TOML.replace("min_bake = \"1h\"", "min_bake = \"1 hour\""), "1 hour"),
        (PLAN_TOML.replace("min_bake = \"1h\"", "min_bake = 3600"), "min_bake"),
        (PLAN_TOML.replace("max_rate = 0.05", "max_rat = 0.05"), "max_rat"),
        (PLAN_TOML.replace("criteria =", "criterion ="), "criterion"),
        (PLAN_TOML.replace("name = \"canary\"\n", ""), "name"),
        (PLAN_TOML.replace("percent = 5\n", ""), "percent"),
    ];
    for (text, word) in table {
        let err = parse(&text).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::Syntax {
                    kind: "rollout plan",
                    ..
                }
            ),
            "{word}: {err:?}"
        );
        assert!(err.to_string().contains(word), "`{word}` not in {err}");
    }
    let big = " ".repeat(MAX_PLAN_BYTES + 1);
    assert!(matches!(
        parse(&big),
        Err(FileError::TooLarge {
            kind: "rollout plan",
            ..
        })
    ));
}

#[test]
fn the_test_plans_are_valid() {
    for p in [
        standard_plan(),
        plan_without_rollback(),
        plan_with(vec![stage("all", 100.0)]),
    ] {
        p.validate().unwrap();
    }
    assert!(plan_without_rollback().rollback_criteria().is_none());
    assert!(standard_plan().rollback_criteria().is_some());
}
