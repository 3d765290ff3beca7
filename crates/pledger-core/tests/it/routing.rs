//! Routing: sticky bucketing, cumulative stage matching, frozen rollouts, unit-less requests.

use std::collections::BTreeMap;

use pledger_core::routing::{
    bucket, check_table, resolve, routing_table_for, stage_matches, Arm, Resolution, RoutedRollout,
    RoutedStage, RoutingTable, TableCheck, BUCKETS,
};

use crate::support::*;

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The stage visit the test tables carry.
const VISIT: &str = "support-triage-r1/0/1790000000000";

fn table(state: &str, stages: Vec<RoutedStage>) -> RoutingTable {
    RoutingTable {
        prompt: prompt(),
        stable: Some(vid(1)),
        rollout: Some(RoutedRollout {
            release: rid(1),
            candidate: vid(2),
            state: state.into(),
            current_stage: stages.last().map(|s| s.name.clone()).unwrap_or_default(),
            stage_visit: Some(VISIT.into()),
            bucketing_salt: SALT.into(),
            stages,
        }),
        ledger_sequence: 42,
        artifacts: Default::default(),
    }
}

fn stable() -> Resolution {
    Resolution {
        version: Some(vid(1)),
        release: Some(rid(1)),
        arm: Some(Arm::Baseline),
        stage_visit: Some(VISIT.into()),
    }
}

fn candidate() -> Resolution {
    Resolution {
        version: Some(vid(2)),
        release: Some(rid(1)),
        arm: Some(Arm::Candidate),
        stage_visit: Some(VISIT.into()),
    }
}

/// A unit key whose bucket under [`SALT`] satisfies `pred`.
fn unit_where(pred: impl Fn(u32) -> bool) -> String {
    (0..100_000)
        .map(|i| format!("user-{i}"))
        .find(|u| pred(bucket(SALT, u)))
        .expect("some unit has such a bucket")
}

#[test]
fn bucketing_is_deterministic_and_in_range() {
    for unit in ["user-1", "user-2", "", "ünïcode", "a:b"] {
        let b = bucket(SALT, unit);
        assert!(b < BUCKETS);
        assert_eq!(bucket(SALT, unit), b, "{unit}");
    }
    // Pinned values: any client (router, SDK in another language) must compute the same.
    // SHA-256("salt-r1:user-1"), first 8 bytes big-endian, mod 10000.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"salt-r1:user-1");
    let expected = (u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000) as u32;
    assert_eq!(bucket("salt-r1", "user-1"), expected);
    // The salt matters.
    let moved = (0..200)
        .filter(|i| bucket("salt-a", &format!("u{i}")) != bucket("salt-b", &format!("u{i}")))
        .count();
    assert!(moved > 190, "{moved}");
}

#[test]
fn buckets_are_roughly_uniform() {
    let n = 20_000;
    let mut below = [0usize; 4]; // < 500 (5%), < 1000, < 2500, < 5000
    for i in 0..n {
        let b = bucket(SALT, &format!("user-{i}"));
        for (slot, limit) in [500, 1000, 2500, 5000].into_iter().enumerate() {
            if b < limit {
                below[slot] += 1;
            }
        }
    }
    for (count, share) in below.iter().zip([0.05, 0.10, 0.25, 0.50]) {
        let observed = *count as f64 / n as f64;
        assert!((observed - share).abs() < 0.015, "{share}: {observed}");
    }
}

#[test]
fn stage_matching_needs_every_key_and_any_listed_value() {
    let m = routed("s", 10.0, &[("region", &["eu", "us"]), ("tier", &["free"])]).matches;
    // (attributes, matches)
    #[rustfmt::skip]
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[("region", "eu"), ("tier", "free")], true),
        (&[("region", "us"), ("tier", "free"), ("extra", "x")], true),
        (&[("region", "apac"), ("tier", "free")], false),
        (&[("region", "eu")], false),
        (&[("tier", "free")], false),
        (&[], false),
        (&[("region", "EU"), ("tier", "free")], false),
    ];
    for (pairs, expected) in cases {
        assert_eq!(stage_matches(&m, &attrs(pairs)), *expected, "{pairs:?}");
    }
    assert!(
        stage_matches(&BTreeMap::new(), &attrs(&[])),
        "no match means all traffic"
    );
}

/// (what, table, unit, attributes, expected)
type ResolutionCase<'a> = (
    &'a str,
    RoutingTable,
    Option<&'a str>,
    &'a BTreeMap<String, String>,
    Resolution,
);

#[test]
fn resolution_table() {
    let low = unit_where(|b| b < 500); // inside 5%
    let mid = unit_where(|b| (1000..2500).contains(&b)); // inside 25%, outside 10%
    let high = unit_where(|b| b >= 9_000); // outside 50%
    let internal = attrs(&[("tier", "internal")]);
    let eu = attrs(&[("region", "eu")]);
    let none = attrs(&[]);
    let internal_then_5 = vec![
        routed("internal", 100.0, &[("tier", &["internal"])]),
        routed("canary", 5.0, &[]),
    ];
    let eu_25_then_10 = vec![
        routed("eu", 25.0, &[("region", &["eu"])]),
        routed("all", 10.0, &[]),
    ];
    // (what, table, unit, attributes, expected)
    #[rustfmt::skip]
    let cases: Vec<ResolutionCase> = vec![
        ("internal traffic at 100%", table("rolling_out", internal_then_5.clone()), Some(&high), &internal, candidate()),
        ("internal traffic without unit key, 100% stage", table("rolling_out", internal_then_5.clone()), None, &internal, candidate()),
        ("other traffic in the 5% share", table("rolling_out", internal_then_5.clone()), Some(&low), &none, candidate()),
        ("other traffic outside the 5% share", table("rolling_out", internal_then_5.clone()), Some(&mid), &none, stable()),
        ("no unit key, partial share", table("rolling_out", internal_then_5.clone()), None, &none, stable()),
        ("cumulative: the larger matching share wins", table("rolling_out", eu_25_then_10.clone()), Some(&mid), &eu, candidate()),
        ("cumulative: non-matching stage ignored", table("rolling_out", eu_25_then_10.clone()), Some(&mid), &none, stable()),
        ("cumulative: both stages, outside both", table("rolling_out", eu_25_then_10.clone()), Some(&high), &eu, stable()),
        ("paused still routes its share", table("paused", internal_then_5.clone()), Some(&low), &none, candidate()),
        ("frozen routes everything to stable", table("frozen", internal_then_5.clone()), Some(&low), &none, stable()),
        ("frozen routes even 100% stages to stable", table("frozen", internal_then_5.clone()), Some(&low), &internal, stable()),
        ("frozen, no unit", table("frozen", internal_then_5.clone()), None, &internal, stable()),
        ("100% for all traffic without unit key", table("rolling_out", vec![routed("all", 100.0, &[])]), None, &none, candidate()),
        ("99.99% without unit key", table("rolling_out", vec![routed("almost", 99.99, &[])]), None, &none, stable()),
        ("no stages", table("rolling_out", vec![]), Some(&low), &none, stable()),
    ];
    for (what, t, unit, attributes, expected) in cases {
        assert_eq!(resolve(&t, unit, attributes), expected, "{what}");
    }
}

#[test]
fn partial_shares_round_to_hundredths_of_a_percent() {
    // 0.05% = 5 buckets.
    let t = table("rolling_out", vec![routed("tiny", 0.05, &[])]);
    let inside = unit_where(|b| b < 5);
    let edge = unit_where(|b| b == 5);
    assert_eq!(
        resolve(&t, Some(&inside), &attrs(&[])).arm,
        Some(Arm::Candidate)
    );
    assert_eq!(
        resolve(&t, Some(&edge), &attrs(&[])).arm,
        Some(Arm::Baseline)
    );
}

#[test]
fn shares_are_sticky_as_stages_grow() {
    // Every unit in the candidate at 5% is still in it at 25% and 50%; the shares are close
    // to what they say.
    let shares = [5.0, 25.0, 50.0, 100.0];
    let units: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    let mut previous: Vec<bool> = vec![false; units.len()];
    for share in shares {
        let t = table("rolling_out", vec![routed("s", share, &[])]);
        let now: Vec<bool> = units
            .iter()
            .map(|u| resolve(&t, Some(u), &attrs(&[])).arm == Some(Arm::Candidate))
            .collect();
        for (i, (was, is)) in previous.iter().zip(&now).enumerate() {
            assert!(!was || *is, "{} left the candidate at {share}%", units[i]);
        }
        let observed = now.iter().filter(|x| **x).count() as f64 / units.len() as f64 * 100.0;
        assert!((observed - share).abs() < 2.0, "{share}%: {observed}");
        previous = now;
    }
    // A new salt (a new rollout) reshuffles.
    let mut t = table("rolling_out", vec![routed("s", 50.0, &[])]);
    let a: Vec<bool> = units
        .iter()
        .map(|u| resolve(&t, Some(u), &attrs(&[])).arm == Some(Arm::Candidate))
        .collect();
    t.rollout.as_mut().unwrap().bucketing_salt = "salt-r2".into();
    let b: Vec<bool> = units
        .iter()
        .map(|u| resolve(&t, Some(u), &attrs(&[])).arm == Some(Arm::Candidate))
        .collect();
    assert_ne!(a, b);
}

#[test]
fn without_a_rollout_everything_is_stable() {
    let mut t = table("rolling_out", vec![]);
    t.rollout = None;
    let r = resolve(&t, Some("user-1"), &attrs(&[]));
    assert_eq!(
        r,
        Resolution {
            version: Some(vid(1)),
            release: None,
            arm: None,
            stage_visit: None,
        }
    );
    t.stable = None;
    assert_eq!(
        resolve(&t, Some("user-1"), &attrs(&[])),
        Resolution {
            version: None,
            release: None,
            arm: None,
            stage_visit: None,
        }
    );
}

/// (what, world, stable version, routed rollout as (state, number of stages))
type TableCase = (&'static str, World, u32, Option<(&'static str, usize)>);

#[test]
fn routing_table_follows_the_ledger() {
    // (world, stable, rollout state, stages routed)
    #[rustfmt::skip]
    let cases: Vec<TableCase> = vec![
        ("proposed", gate_passed(), 1, None),
        ("rolling out, first stage", rolling(), 1, Some(("rolling_out", 1))),
        ("rolling out, third stage", rolling().with(OPS, advance(1, "internal")).with(OPS, advance(1, "canary")), 1, Some(("rolling_out", 3))),
        ("paused", rolling().with(OPS, pause(1)), 1, Some(("paused", 1))),
        ("frozen", rolling().with(OPS, advance(1, "internal")).with(OPS, freeze(1)), 1, Some(("frozen", 2))),
        ("completed", completed(), 2, None),
        ("rolled back", rolling().with(OPS, rollback()), 1, None),
    ];
    for (what, w, stable_version, rollout) in cases {
        let t = routing_table_for(&w.state, 7);
        assert_eq!(t.prompt, prompt(), "{what}");
        assert_eq!(t.stable, Some(vid(stable_version)), "{what}");
        assert_eq!(t.ledger_sequence, 7);
        match (rollout, &t.rollout) {
            (None, None) => {}
            (Some((state, n)), Some(r)) => {
                assert_eq!(r.state, state, "{what}");
                assert_eq!(r.stages.len(), n, "{what}");
                assert_eq!(r.current_stage, STAGES[n - 1], "{what}");
                let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, STAGES[..n], "{what}");
                assert_eq!(
                    (
                        r.release.clone(),
                        r.candidate.clone(),
                        r.bucketing_salt.as_str()
                    ),
                    (rid(1), vid(2), SALT),
                    "{what}"
                );
            }
            (expected, actual) => panic!("{what}: expected {expected:?}, got {actual:?}"),
        }
        // The table survives the KV round trip.
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<RoutingTable>(&json).unwrap(), t);
    }
}

#[test]
fn a_frozen_rollout_routes_everything_to_stable_end_to_end() {
    let w = at_last_stage();
    let t = routing_table_for(&w.state, 1);
    // The table names the visit of the last stage (index 3); resolutions carry it.
    let visit = t.rollout.as_ref().and_then(|r| r.stage_visit.clone());
    assert!(
        visit
            .as_deref()
            .is_some_and(|v| v.starts_with(&format!("{}/3/", rid(1)))),
        "{visit:?}"
    );
    let (candidate, stable) = (
        Resolution {
            stage_visit: visit.clone(),
            ..candidate()
        },
        Resolution {
            stage_visit: visit,
            ..stable()
        },
    );
    let units: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    assert!(
        units
            .iter()
            .all(|u| resolve(&t, Some(u), &attrs(&[])) == candidate),
        "100% before freezing"
    );
    let w = w.with(OPS, freeze(1));
    let t = routing_table_for(&w.state, 2);
    for u in &units {
        assert_eq!(
            resolve(&t, Some(u), &attrs(&[("tier", "internal")])),
            stable,
            "{u}"
        );
    }
    assert_eq!(resolve(&t, None, &attrs(&[])), stable);
}

#[test]
fn a_stored_table_is_behind_only_while_the_router_has_events_to_apply() {
    let stages = || vec![routed("internal", 100.0, &[])];
    let derived = table("rolling_out", stages());
    // The same routing at an older sequence: nothing to rewrite.
    let mut older_same = derived.clone();
    older_same.ledger_sequence = 30;
    assert_eq!(check_table(&older_same, &derived, 30), TableCheck::Agrees);
    // Different routing from before the family's last event (sequence 42).
    let mut older = table("frozen", stages());
    older.ledger_sequence = 30;
    // The router has not applied sequence 42 yet: it is behind.
    assert_eq!(check_table(&older, &derived, 41), TableCheck::Behind);
    // The router has applied it: something else wrote the bucket.
    assert_eq!(check_table(&older, &derived, 42), TableCheck::Disagrees);
    // Different routing at the same sequence, however far the router is.
    let mut same_sequence = table("frozen", stages());
    same_sequence.ledger_sequence = 42;
    assert_eq!(
        check_table(&same_sequence, &derived, 10),
        TableCheck::Disagrees
    );
    // A table that claims a later sequence than the ledger has, even with the same routing.
    let mut later = derived.clone();
    later.ledger_sequence = 43;
    assert_eq!(check_table(&later, &derived, 10), TableCheck::Disagrees);
}
