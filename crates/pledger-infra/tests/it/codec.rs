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
