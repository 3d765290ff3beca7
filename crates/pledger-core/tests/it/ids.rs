//! Identifiers and time values: timestamps, durations, release ids, prompt names, actors.

use pledger_core::{Actor, DurationSpec, PromptName, ReleaseId, Timestamp, VersionId};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

#[test]
fn timestamps_round_trip_through_rfc3339() {
    // (unix millis, RFC 3339)
    #[rustfmt::skip]
    let table: &[(i64, &str)] = &[
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-86_400_000, "1969-12-31T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (951_868_800_000, "2000-03-01T00:00:00.000Z"),
        (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
        (T0_MILLIS, "2026-11-24T09:00:00.000Z"),
        (T0_MILLIS + 30 * 60_000 + 1_234, "2026-11-24T09:30:01.234Z"),
        (1_798_761_599_999, "2026-12-31T23:59:59.999Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ];
    for &(millis, text) in table {
        let t = Timestamp::from_unix_millis(millis);
        assert_eq!(t.to_rfc3339(), text, "{millis}");
        assert_eq!(t.to_string(), text);
        assert_eq!(Timestamp::parse_rfc3339(text).unwrap(), t, "{text}");
        // serde: a JSON string.
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}

#[test]
fn timestamps_round_trip_across_many_days() {
    // Every 7 hours 13 minutes 17.123 seconds over ~400 years, both sides of the epoch.
    let step: i64 = ((7 * 60 + 13) * 60 + 17) * 1000 + 123;
    let mut t: i64 = -200 * 365 * 86_400_000;
    let end: i64 = 200 * 365 * 86_400_000;
    let mut n = 0;
    while t < end {
        let ts = Timestamp::from_unix_millis(t);
        assert_eq!(
            Timestamp::parse_rfc3339(&ts.to_rfc3339()).unwrap(),
            ts,
            "{t}"
        );
        t += step;
        n += 1;
    }
    assert!(n > 100_000);
}

#[test]
fn timestamp_parsing_accepts_what_pledger_and_others_write() {
    // (input, what it means)
    #[rustfmt::skip]
    let table: &[(&str, &str)] = &[
        ("2026-11-24T09:30:00Z", "2026-11-24T09:30:00.000Z"),
        ("2026-11-24T09:30:00.5Z", "2026-11-24T09:30:00.500Z"),
        ("2026-11-24T09:30:00.05Z", "2026-11-24T09:30:00.050Z"),
        ("2026-11-24T09:30:00.123Z", "2026-11-24T09:30:00.123Z"),
        ("2026-11-24T09:30:00.123456Z", "2026-11-24T09:30:00.123Z"),
        ("2026-11-24T09:30:00.999999999Z", "2026-11-24T09:30:00.999Z"),
    ];
    for (input, canonical) in table {
        let t = Timestamp::parse_rfc3339(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(t.to_rfc3339(), *canonical, "{input}");
    }
}

#[test]
fn timestamp_parsing_refuses_malformed_input() {
    #[rustfmt::skip]
    let table: &[&str] = &[
        "",
        "2026-11-24",
        "2026-11-24T09:30:00",
        "2026-11-24T09:30:00.000",
        "2026-11-24T09:30:00+00:00",
        "2026-11-24T09:30:00.000+01:00",
        "2026-11-24 09:30:00.000Z",
        "2026/11/24T09:30:00.000Z",
        "2026-11-24T09-30-00.000Z",
        "2026-13-24T09:30:00.000Z",
        "2026-00-24T09:30:00.000Z",
        "2026-11-00T09:30:00.000Z",
        "2026-11-32T09:30:00.000Z",
        "2026-11-24T24:00:00.000Z",
        "2026-11-24T09:60:00.000Z",
        "2026-11-24T09:30:61.000Z",
        "2026-11-24T09:30:00.Z",
        "2026-11-24T09:30:00,000Z",
        "2026-11-24T09:30:00.12aZ",
        "2026-11-24T09:30:00.000z",
        "2026-1a-24T09:30:00.000Z",
        "20a6-11-24T09:30:00.000Z",
        // Not a day of that month.
        "2026-02-29T09:30:00.000Z",
        "2026-02-31T09:30:00.000Z",
        "2026-04-31T09:30:00.000Z",
        "2100-02-29T00:00:00.000Z",
        // Signs are not digits.
        "2026-+1-24T09:30:00.000Z",
        "2026-11-24T+9:30:00.000Z",
        "+026-11-24T09:30:00.000Z",
        // Non-ASCII input (must not panic on a char boundary).
        "2026-11-24T09:30:0éZ",
        "2026-11-24T09:30:00.00éZ",
        "2026-11-24T09:3é:00Z",
        "２026-11-24T09:30:00.000Z",
    ];
    for input in table {
        let result = std::panic::catch_unwind(|| Timestamp::parse_rfc3339(input));
        let Ok(result) = result else {
            panic!("parsing `{input}` panicked")
        };
        let err = result.expect_err(input);
        assert_eq!(err.field, "timestamp", "{input}");
        assert!(err.message.contains(input), "{input}: {}", err.message);
        // The same refusal through serde.
        assert!(serde_json::from_value::<Timestamp>(serde_json::json!(input)).is_err());
    }
}

#[test]
fn timestamp_arithmetic() {
    let t = ts("2026-11-24T09:00:00.000Z");
    assert_eq!(
        t.plus(DurationSpec::parse("1h30m").unwrap()),
        ts("2026-11-24T10:30:00.000Z")
    );
    assert_eq!(
        t.plus(DurationSpec::parse("2d").unwrap()),
        ts("2026-11-26T09:00:00.000Z")
    );
    assert_eq!(ts("2026-11-24T09:00:01.500Z").millis_since(t), 1_500);
    assert_eq!(t.millis_since(ts("2026-11-24T09:00:01.500Z")), -1_500);
    assert_eq!(
        Timestamp::from_unix_millis(i64::MAX - 1)
            .plus(DurationSpec::from_millis(10))
            .unix_millis(),
        i64::MAX
    );
    assert!(ts("2026-11-24T09:00:00.001Z") > t);
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

#[test]
fn durations_parse() {
    const S: u64 = 1_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    #[rustfmt::skip]
    let table: &[(&str, u64, &str)] = &[
        ("0", 0, "0s"),
        ("0s", 0, "0s"),
        ("45s", 45 * S, "45s"),
        ("90s", 90 * S, "1m30s"),
        ("30m", 30 * M, "30m"),
        ("1h30m", H + 30 * M, "1h30m"),
        ("1h", H, "1h"),
        ("2d", 2 * D, "2d"),
        ("1d2h3m4s", D + 2 * H + 3 * M + 4 * S, "1d2h3m4s"),
        ("36h", 36 * H, "1d12h"),
        ("007m", 7 * M, "7m"),
    ];
    for &(text, millis, shown) in table {
        let d = DurationSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(d.millis(), millis, "{text}");
        assert_eq!(d.to_string(), shown, "{text}");
        // Display is parseable and means the same.
        assert_eq!(DurationSpec::parse(shown).unwrap(), d, "{shown}");
        // serde: a string.
        let json = serde_json::to_value(d).unwrap();
        assert_eq!(json, serde_json::json!(shown));
        assert_eq!(serde_json::from_value::<DurationSpec>(json).unwrap(), d);
    }
    assert_eq!(DurationSpec::ZERO.millis(), 0);
}

#[test]
fn durations_refuse_malformed_input() {
    #[rustfmt::skip]
    let table: &[&str] = &[
        "", " ", "s", "m", "10", "1h30", "1x", "-1s", "+1s", "1.5h", " 1s", "1s ", "1 s",
        "500ms", "1H", "1w", "1y", "h1", "99999999999999999999s", "213503982335d",
        "１s",
    ];
    for text in table {
        let err = DurationSpec::parse(text).expect_err(text);
        assert_eq!(err.field, "duration", "{text}");
        assert!(
            err.message.contains(&format!("`{text}`")),
            "{text}: {}",
            err.message
        );
        assert!(serde_json::from_value::<DurationSpec>(serde_json::json!(text)).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Release ids, prompt names, version ids, actors
// ---------------------------------------------------------------------------------------------

#[test]
fn release_ids_parse() {
    // (text, prompt, number)
    #[rustfmt::skip]
    let table: &[(&str, &str, u32)] = &[
        ("support-triage-r3", "support-triage", 3),
        ("support-triage-r1", "support-triage", 1),
        ("x-r10", "x", 10),
        ("my-router-r2", "my-router", 2),
        ("a-rr-r7", "a-rr", 7),
        ("foo-r5-r1", "foo-r5", 1),
        ("p_1-r4294967295", "p_1", u32::MAX),
        ("9lives-r12", "9lives", 12),
    ];
    for &(text, prompt, number) in table {
        let id = ReleaseId::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(id.prompt().as_str(), prompt, "{text}");
        assert_eq!(id.number(), number, "{text}");
        assert_eq!(id.to_string(), text);
        assert_eq!(id.token(), format!("r{number}"));
        assert_eq!(
            ReleaseId::new(PromptName::parse(prompt).unwrap(), number),
            id
        );
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json, serde_json::json!(text));
        assert_eq!(serde_json::from_value::<ReleaseId>(json).unwrap(), id);
    }
}

#[test]
fn release_ids_refuse_malformed_input() {
    #[rustfmt::skip]
    let table: &[&str] = &[
        "", "r1", "support-triage", "support-triage-r", "support-triage-r0", "support-triage-r01",
        "support-triage-r1a", "support-triage-r-1", "support-triage-r+1", "-r1", "Support-r1",
        "support.triage-r1", "support triage-r1", "support-triage-R1", "support-triage_r1",
        "x-r4294967296", "support-triage-r１",
    ];
    for text in table {
        let err = ReleaseId::parse(text).expect_err(text);
        assert_eq!(err.field, "release", "{text}");
        assert!(
            err.message.contains(&format!("`{text}`")),
            "{text}: {}",
            err.message
        );
        assert!(serde_json::from_value::<ReleaseId>(serde_json::json!(text)).is_err());
    }
}

#[test]
fn prompt_names() {
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    #[rustfmt::skip]
    let table: &[(&str, bool)] = &[
        ("support-triage", true), ("a", true), ("9", true), ("a_b-c9", true), (&long, true),
        ("", false), (&too_long, false), ("-a", false), ("_a", false), ("A", false),
        ("a.b", false), ("a b", false), ("a*", false), ("a>", false), ("é", false), ("a/b", false),
    ];
    for &(text, ok) in table {
        let parsed = PromptName::parse(text);
        assert_eq!(parsed.is_ok(), ok, "{text:?}: {parsed:?}");
        if let Err(e) = parsed {
            assert_eq!(e.field, "prompt");
            assert!(e.message.contains(&format!("`{text}`")));
        }
        assert_eq!(
            serde_json::from_value::<PromptName>(serde_json::json!(text)).is_ok(),
            ok
        );
    }
}

#[test]
fn version_ids() {
    let hex = "ab".repeat(32);
    let id = VersionId::parse(&format!("sha256:{hex}")).unwrap();
    assert_eq!(id.short(), "abababababab");
    assert_eq!(id, VersionId::from_digest_hex(&hex));
    #[rustfmt::skip]
    let bad: Vec<String> = vec![
        hex.clone(),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}0"),
        format!("sha256:{}", hex.to_uppercase()),
        format!("SHA256:{hex}"),
        format!("sha512:{hex}"),
        format!("sha256:{}g", &hex[..63]),
        "sha256:".into(),
    ];
    for text in &bad {
        let err = VersionId::parse(text).expect_err(text);
        assert_eq!(err.field, "version");
        assert!(serde_json::from_value::<VersionId>(serde_json::json!(text)).is_err());
    }
    // Prefix matching, with or without `sha256:`.
    #[rustfmt::skip]
    let table: &[(&str, bool)] = &[
        ("abab", true), ("sha256:abab", true), ("a", true), (&hex, true),
        ("", false), ("sha256:", false), ("abac", false), ("ABAB", false), ("b", false),
    ];
    for &(reference, matches) in table {
        assert_eq!(id.matches_prefix(reference), matches, "{reference}");
    }
}

#[test]
fn actors_are_trimmed_printable_names() {
    assert_eq!(Actor::parse("  alice ").unwrap().as_str(), "alice");
    assert_eq!(
        Actor::parse("ci-bot@pipeline 42").unwrap().as_str(),
        "ci-bot@pipeline 42"
    );
    assert!(Actor::parse(&"a".repeat(128)).is_ok());
    for bad in ["", "   ", "al\nice", "bell\u{7}", &"a".repeat(129)] {
        let err = Actor::parse(bad).expect_err(bad);
        assert_eq!(err.field, "actor");
    }
    assert_eq!(
        serde_json::from_value::<Actor>(serde_json::json!(" bob "))
            .unwrap()
            .as_str(),
        "bob"
    );
}
