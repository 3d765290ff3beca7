use pledger_core::outcome::parse_outcome_message;

fn good(n: u32) -> serde_json::Value {
    serde_json::json!({
        "prompt": "triage", "version": format!("sha256:{}", "a".repeat(64)), "request_id": format!("r{n}"),
        "fallback": false, "escalated": true, "manually_corrected": false, "refusal": false,
        "latency_ms": 10.5, "tokens_in": 1, "tokens_out": 2
    })
}

/// (message, per element: Ok or the words its error must contain)
fn check(message: &[u8], expect: &[Result<(), &str>]) {
    let parsed = parse_outcome_message(message);
    assert_eq!(parsed.len(), expect.len(), "{parsed:?}");
    for (got, want) in parsed.iter().zip(expect) {
        match (got, want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(words)) => assert!(e.to_string().contains(words), "`{e}` lacks `{words}`"),
            _ => panic!("{got:?} where {want:?} was expected"),
        }
    }
}

#[test]
fn outcome_messages_one_or_many_with_errors_per_element() {
    let mut negative = good(9);
    negative["latency_ms"] = serde_json::json!(-1.0);
    let mut wrong_type = good(8);
    wrong_type["fallback"] = serde_json::json!("no");
    let mut unknown_field = good(7);
    unknown_field["latencyMs"] = serde_json::json!(3);
    let bytes = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    check(&bytes(good(1)), &[Ok(())]);
    check(
        &bytes(serde_json::json!([good(1), good(2), good(3)])),
        &[Ok(()), Ok(()), Ok(())],
    );
    check(
        &bytes(serde_json::json!([good(1), negative.clone(), good(3)])),
        &[Ok(()), Err("latency_ms"), Ok(())],
    );
    check(
        &bytes(serde_json::json!([wrong_type, good(2)])),
        &[Err("fallback"), Ok(())],
    );
    check(&bytes(unknown_field), &[Err("latencyMs")]);
    check(&bytes(negative), &[Err("latency_ms -1")]);
    check(b"{not json", &[Err("not JSON")]);
    check(b"42", &[Err("a number")]);
    check(b"[]", &[]);
}

/// A stage visit an outcome carries is checked like every other field: a hostile or broken
/// one costs its element, not the message.
#[test]
fn an_outcome_with_a_malformed_stage_visit_is_refused_alone() {
    let with_visit = |n: u32, visit: &str| {
        let mut o = good(n);
        o["stage_visit"] = serde_json::json!(visit);
        o
    };
    let bytes = serde_json::to_vec(&serde_json::json!([
        with_visit(1, "triage-r1/0/1795510800000"),
        with_visit(2, "triage-r1/0/not-a-time"),
        with_visit(3, "../../etc/passwd"),
        good(4),
    ]))
    .unwrap();
    check(
        &bytes,
        &[
            Ok(()),
            Err("stage_visit `triage-r1/0/not-a-time` is not"),
            Err("stage_visit"),
            Ok(()),
        ],
    );
}
