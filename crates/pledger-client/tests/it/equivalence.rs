//! The SDK's allocation-free resolution gives exactly the core's answers
//! (`pledger_core::routing::{bucket, resolve}`, which `pledger resolve` uses).

use std::collections::BTreeMap;

use pledger_client::{RequestContext, Resolver};
use pledger_core::routing::{self, RoutingTable};

use crate::support::*;

const KEYS: &[&str] = &["user_kind", "intent", "geo", "tenant"];
const VALUES: &[&str] = &[
    "internal", "external", "faq", "greeting", "billing", "eu", "us", "acme", "",
];
const PERCENTS: &[f64] = &[
    0.0, 0.004, 0.005, 0.01, 0.5, 1.0, 5.0, 12.345, 25.0, 33.335, 50.0, 99.99, 99.995, 100.0,
];

fn random_string(rng: &mut Rng) -> String {
    let alphabet: Vec<char> = "abcXYZ019-_:. é€🙂".chars().collect();
    (0..rng.below(24)).map(|_| *rng.pick(&alphabet)).collect()
}

fn random_table(rng: &mut Rng, i: u64) -> RoutingTable {
    let (stable, candidate) = (
        artifact(&format!("stable {i}")),
        artifact(&format!("candidate {i}")),
    );
    let stages = (0..rng.below(5))
        .map(|s| {
            let matches: Vec<(&str, Vec<&str>)> = (0..rng.below(3))
                .map(|_| {
                    let values = (0..1 + rng.below(3)).map(|_| *rng.pick(VALUES)).collect();
                    (*rng.pick(KEYS), values)
                })
                .collect();
            let matches: Vec<(&str, &[&str])> =
                matches.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let percent = if rng.below(4) == 0 {
                (rng.below(1_000_001) as f64) / 10_000.0
            } else {
                *rng.pick(PERCENTS)
            };
            stage(&format!("s{s}"), &matches, percent)
        })
        .collect();
    let mut table = rollout_table("eq", i, &stable, &candidate, stages);
    let rollout = table.rollout.as_mut().unwrap();
    rollout.state = rng.pick(&["rolling_out", "paused", "frozen"]).to_string();
    rollout.bucketing_salt = random_string(rng);
    match rng.below(6) {
        0 => table.rollout = None,
        1 => table.stable = None,
        2 => table.artifacts.clear(),
        _ => {}
    }
    table
}

#[test]
fn bucket_equals_the_core_bucket() {
    let mut rng = Rng(7);
    for _ in 0..50_000 {
        let (salt, unit) = (random_string(&mut rng), random_string(&mut rng));
        assert_eq!(
            pledger_client::bucket(&salt, &unit),
            routing::bucket(&salt, &unit),
            "salt {salt:?} unit {unit:?}"
        );
    }
    // Long inputs cross SHA-256 block boundaries.
    let long = "x".repeat(200);
    assert_eq!(
        pledger_client::bucket(&long, &long),
        routing::bucket(&long, &long)
    );
}

#[test]
fn resolve_equals_the_core_over_random_tables_and_requests() {
    let mut rng = Rng(42);
    let mut candidates = 0;
    let mut requests = 0;
    for i in 0..400 {
        let table = random_table(&mut rng, i);
        let resolver = Resolver::from_tables([table.clone()]);
        for _ in 0..250 {
            let unit = match rng.below(5) {
                0 => None,
                1 => Some(random_string(&mut rng)),
                _ => Some(format!("user-{}", rng.below(100_000))),
            };
            let attrs: BTreeMap<String, String> = (0..rng.below(4))
                .map(|_| (rng.pick(KEYS).to_string(), rng.pick(VALUES).to_string()))
                .collect();
            let pairs: Vec<(&str, &str)> = attrs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let expected = routing::resolve(&table, unit.as_deref(), &attrs);

            let mut ctx = RequestContext::new().attrs(&attrs);
            ctx.unit = unit.as_deref();
            let got = resolver.resolve("eq", &ctx);
            assert_eq!(
                got.to_core(),
                expected,
                "table {table:#?}\nunit {unit:?} attrs {attrs:?}"
            );
            // The same request with its attributes as a list of pairs.
            let from_pairs = resolver.resolve(
                "eq",
                &RequestContext {
                    attrs: &pairs,
                    ..ctx
                },
            );
            assert_eq!(from_pairs.to_core(), expected);
            // The artifact is the content of the version served.
            assert_eq!(
                got.artifact().map(|a| &**a),
                expected
                    .version
                    .as_ref()
                    .and_then(|v| table.artifacts.get(v))
            );
            assert_eq!(got.ledger_sequence(), table.ledger_sequence);
            candidates += (expected.arm == Some(routing::Arm::Candidate)) as usize;
            requests += 1;
        }
    }
    // The generator reaches both arms often.
    assert!(
        candidates > requests / 10 && candidates < requests * 9 / 10,
        "{candidates}/{requests}"
    );
}

#[test]
fn unknown_prompts_resolve_to_nothing() {
    let resolver = Resolver::from_tables([stable_table("known", 1, &artifact("a"))]);
    let r = resolver.resolve("unknown", &RequestContext::new().unit("u"));
    assert!(!r.is_known());
    assert_eq!(r.version(), None);
    assert!(r.artifact().is_none());
    assert!(r.outcome("req-1").is_none());
    assert!(resolver.resolve("known", &RequestContext::new()).is_known());
}

#[test]
fn a_resolution_fills_an_outcome() {
    let (stable, candidate) = (artifact("a"), artifact("b"));
    let table = rollout_table("p", 3, &stable, &candidate, vec![stage("all", &[], 100.0)]);
    let resolver = Resolver::from_tables([table]);
    let r = resolver.resolve("p", &RequestContext::new().unit("u"));
    let outcome = r.outcome("req-9").unwrap();
    assert_eq!(outcome.version, candidate.version_id());
    assert_eq!(outcome.arm, Some(routing::Arm::Candidate));
    assert_eq!(outcome.release.unwrap().to_string(), "p-r1");
    assert_eq!(outcome.request_id, "req-9");
    assert_eq!(r.artifact().unwrap().instructions, "b");
}

#[test]
fn handles_are_shareable_across_tasks_and_threads() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<Resolver>();
    send_sync::<pledger_client::Resolution>();
    send_sync::<pledger_client::OutcomeReporter>();
}
