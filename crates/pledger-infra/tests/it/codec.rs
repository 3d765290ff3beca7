use pledger_infra::codec::{decode, encode, CodecError, FORMAT_VERSION};

#[test]
fn values_round_trip_behind_the_format_byte() {
    let value = (42u64, "stage".to_string(), vec![1.5f64, 2.0]);
    let bytes = encode(&value).unwrap();
    assert_eq!(bytes[0], FORMAT_VERSION);
    assert_eq!(decode::<(u64, String, Vec<f64>)>(&bytes).unwrap(), value);
}

#[test]
fn unknown_format_versions_and_garbage_are_refused() {
    let mut bytes = encode(&7u64).unwrap();
    bytes[0] = 99;
    assert!(matches!(
        decode::<u64>(&bytes),
        Err(CodecError::UnknownFormat { found: 99 })
    ));
    assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
    let mut trailing = encode(&7u64).unwrap();
    trailing.push(0);
    assert!(matches!(
        decode::<u64>(&trailing),
        Err(CodecError::Decode(_))
    ));
}

#[test]
fn types_with_skipped_fields_untagged_enums_and_flattened_maps_round_trip() {
    // A rollout plan has all three (optional fields left out, `match` values one-or-many,
    // retrieval settings flattened): what made plain bincode misread values.
    let plan = pledger_core::RolloutPlan::from_text(
        "[[stages]]\nname = \"a\"\nmatch = { geo = \"eu\", intent = [\"faq\", \"greeting\"] }\npercent = 50\nmin_bake = \"30m\"\n[[stages]]\nname = \"all\"\npercent = 100\n[guardrails]\nescalation_rate = { max_increase = 0.01 }\n[rollback]\ncriteria = \"c\"\n",
        pledger_core::FileFormat::Toml,
    )
    .unwrap();
    let bytes = encode(&plan).unwrap();
    assert_eq!(decode::<pledger_core::RolloutPlan>(&bytes).unwrap(), plan);
    let mut stats = pledger_core::canary::ArmStats::default();
    assert_eq!(
        decode::<pledger_core::canary::ArmStats>(&encode(&stats).unwrap()).unwrap(),
        stats
    );
    stats.latency.record(120.0);
    stats.samples = 1;
    assert_eq!(
        decode::<pledger_core::canary::ArmStats>(&encode(&stats).unwrap()).unwrap(),
        stats
    );
}
