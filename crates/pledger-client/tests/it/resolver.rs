//! The resolver against a real server: initial load, updates, ordering, deletes, fail static.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pledger_client::{ClientError, RequestContext, Resolver, ResolverOptions};
use pledger_core::routing::{self, Arm, RoutingTable};
use pledger_infra::RoutingWrite;

use crate::support::*;

fn fast() -> ResolverOptions {
    ResolverOptions {
        heartbeat: Duration::from_millis(100),
        ..Default::default()
    }
}

async fn publish(env: &Env, table: &RoutingTable) -> u64 {
    match env.routing.publish(table).await.unwrap() {
        RoutingWrite::Written(revision) => revision,
        RoutingWrite::AlreadyCurrent => panic!("the table was not written"),
    }
}

#[tokio::test]
async fn the_initial_load_serves_every_table() {
    let env = env().await;
    let (a, b) = (artifact("stable"), artifact("candidate"));
    let plain = stable_table("faq-answer", 3, &a);
    let rolling = rollout_table("support-triage", 9, &a, &b, three_stages());
    publish(&env, &plain).await;
    publish(&env, &rolling).await;

    let resolver = Resolver::start(env.client.clone(), fast()).await.unwrap();

    assert_eq!(resolver.tables().len(), 2);
    assert_eq!(*resolver.table("support-triage").unwrap(), rolling);
    let r = resolver.resolve("faq-answer", &RequestContext::new().unit("u1"));
    assert_eq!(r.version(), Some(&a.version_id()));
    assert_eq!(r.arm(), None);
    assert_eq!(r.artifact().unwrap().instructions, "stable");
    let internal = [("user_kind", "internal")];
    let r = resolver.resolve(
        "support-triage",
        &RequestContext::new().unit("u1").attrs(&internal),
    );
    assert_eq!(r.arm(), Some(Arm::Candidate));
    assert_eq!(r.artifact().unwrap().instructions, "candidate");
    assert_eq!(r.release().unwrap().to_string(), "support-triage-r1");
    assert!(!resolver.resolve("nope", &RequestContext::new()).is_known());
    let staleness = resolver.staleness();
    assert!(staleness.connected && staleness.synced, "{staleness:?}");
    assert_eq!(staleness.last_error, None);
}

#[tokio::test]
async fn an_empty_bucket_loads_and_later_tables_arrive() {
    let env = env().await;
    let resolver = Resolver::start(env.client.clone(), fast()).await.unwrap();
    assert!(resolver.tables().is_empty());
    let revision = publish(&env, &stable_table("late", 1, &artifact("a"))).await;
    within("the new table", resolver.wait_for_revision(revision)).await;
    assert!(resolver.resolve("late", &RequestContext::new()).is_known());
}

#[tokio::test]
async fn start_names_the_bucket_and_pledger_init_when_it_is_missing() {
    let server = pledger_infra::server::EphemeralServer::start().unwrap();
    let client = pledger_infra::connect(&server.url()).await.unwrap();
    let err = Resolver::start(client, fast()).await.unwrap_err();
    assert!(matches!(err, ClientError::BucketMissing), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(pledger_core::names::ROUTING_BUCKET) && message.contains("pledger init"),
        "{message}"
    );
}

#[tokio::test]
async fn updates_are_seen_and_announced() {
    let env = env().await;
    let (a, b) = (artifact("stable"), artifact("candidate"));
    publish(&env, &stable_table("triage", 2, &a)).await;
    let resolver = Resolver::start(env.client.clone(), fast()).await.unwrap();
    let mut changes = resolver.changes();
    changes.borrow_and_update();

    // The rollout starts: everyone gets the candidate.
    publish(
        &env,
        &rollout_table("triage", 5, &a, &b, vec![stage("all", &[], 100.0)]),
    )
    .await;
    within(
        "the rollout",
        resolver.wait_for("triage", |t| t.is_some_and(|t| t.ledger_sequence == 5)),
    )
    .await;
    assert!(changes.has_changed().unwrap());
    let r = resolver.resolve("triage", &RequestContext::new().unit("u"));
    assert_eq!(
        (r.version(), r.arm()),
        (Some(&b.version_id()), Some(Arm::Candidate))
    );

    // Rollback: back to stable, no arm.
    publish(&env, &stable_table("triage", 8, &a)).await;
    within(
        "the rollback",
        resolver.wait_for("triage", |t| t.is_some_and(|t| t.ledger_sequence == 8)),
    )
    .await;
    let r = resolver.resolve("triage", &RequestContext::new().unit("u"));
    assert_eq!((r.version(), r.arm()), (Some(&a.version_id()), None));
}

#[tokio::test]
async fn a_table_from_an_older_ledger_sequence_is_ignored() {
    let env = env().await;
    let (a, b) = (artifact("a"), artifact("b"));
    publish(&env, &stable_table("triage", 10, &a)).await;
    let resolver = Resolver::start(env.client.clone(), fast()).await.unwrap();

    // RoutingStore refuses to go back, so write the bucket directly, as a confused writer
    // (or a replayed old value) would.
    let older = serde_json::to_vec(&stable_table("triage", 4, &b)).unwrap();
    let revision = env
        .routing
        .store()
        .put("triage", older.into())
        .await
        .unwrap();
    within(
        "the older table to be processed",
        resolver.wait_for_revision(revision),
    )
    .await;
    assert_eq!(resolver.table("triage").unwrap().ledger_sequence, 10);
    let r = resolver.resolve("triage", &RequestContext::new());
    assert_eq!(r.version(), Some(&a.version_id()));

    // An equal or later sequence is taken.
    let later = serde_json::to_vec(&stable_table("triage", 11, &b)).unwrap();
    let revision = env
        .routing
        .store()
        .put("triage", later.into())
        .await
        .unwrap();
    within("the later table", resolver.wait_for_revision(revision)).await;
    assert_eq!(resolver.table("triage").unwrap().ledger_sequence, 11);

    // A value that is not a routing table changes nothing either.
    let revision = env
        .routing
        .store()
        .put("triage", "not json".into())
        .await
        .unwrap();
    within(
        "the bad value to be processed",
        resolver.wait_for_revision(revision),
    )
    .await;
    assert_eq!(resolver.table("triage").unwrap().ledger_sequence, 11);
}

#[tokio::test]
async fn deleted_and_purged_keys_remove_the_prompt() {
    let env = env().await;
    let a = artifact("a");
    publish(&env, &stable_table("one", 1, &a)).await;
    publish(&env, &stable_table("two", 1, &a)).await;
    publish(&env, &stable_table("three", 1, &a)).await;
    // A key deleted before start is not loaded.
    env.routing.store().delete("three").await.unwrap();
    let resolver = Resolver::start(env.client.clone(), fast()).await.unwrap();
    assert_eq!(resolver.tables().len(), 2);

    env.routing.store().delete("one").await.unwrap();
    within("the delete", resolver.wait_for("one", |t| t.is_none())).await;
    env.routing.store().purge("two").await.unwrap();
    within("the purge", resolver.wait_for("two", |t| t.is_none())).await;
    assert!(!resolver.resolve("one", &RequestContext::new()).is_known());
    // A deleted prompt comes back with any sequence: the key starts over.
    publish(&env, &stable_table("one", 1, &a)).await;
    within("the new key", resolver.wait_for("one", |t| t.is_some())).await;
}

#[tokio::test]
async fn resolutions_equal_the_core_for_many_units_and_attributes() {
    let env = env().await;
    let (a, b) = (artifact("a"), artifact("b"));
    let table = rollout_table("triage", 7, &a, &b, three_stages());
    publish(&env, &table).await;
    let resolver = Resolver::start(env.client.clone(), fast()).await.unwrap();
    // What `pledger resolve` reads: the stored table.
    let (stored, _) = env.routing.get(&prompt("triage")).await.unwrap().unwrap();

    let mut rng = Rng(3);
    let mut arms = BTreeMap::new();
    for i in 0..5_000 {
        let unit = format!("user-{i}");
        let attrs: BTreeMap<String, String> = [
            ("user_kind", *rng.pick(&["internal", "external"])),
            ("geo", *rng.pick(&["eu", "us", "apac"])),
            (
                "intent",
                *rng.pick(&["faq", "billing", "greeting", "outage"]),
            ),
        ]
        .into_iter()
        .filter(|_| rng.below(4) != 0)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let unit = (rng.below(10) != 0).then_some(unit);
        let expected = routing::resolve(&stored, unit.as_deref(), &attrs);
        let mut ctx = RequestContext::new().attrs(&attrs);
        ctx.unit = unit.as_deref();
        assert_eq!(resolver.resolve("triage", &ctx).to_core(), expected);
        *arms.entry(format!("{:?}", expected.arm)).or_insert(0) += 1;
    }
    assert_eq!(arms.len(), 2, "both arms are exercised: {arms:?}");
}

#[tokio::test]
async fn it_serves_its_last_tables_while_the_server_is_down_and_catches_up_after() {
    let mut env = env().await;
    let (a, b) = (artifact("a"), artifact("b"));
    publish(&env, &rollout_table("triage", 4, &a, &b, three_stages())).await;
    let client = fast_client(&env.server.url()).await;
    let resolver = Resolver::start(client, fast()).await.unwrap();
    let eu = [("geo", "eu")];
    let before: Vec<_> = (0..200)
        .map(|i| {
            resolver
                .resolve(
                    "triage",
                    &RequestContext::new().unit(&format!("u{i}")).attrs(&eu),
                )
                .to_core()
        })
        .collect();
    assert!(resolver.staleness().connected);

    let stopped = Instant::now();
    env.server.stop();
    within(
        "the resolver to notice",
        resolver.wait_until(|r| !r.staleness().connected),
    )
    .await;
    let staleness = resolver.staleness();
    assert!(!staleness.connected && staleness.synced, "{staleness:?}");
    assert!(staleness.last_error.is_some());
    assert!(
        staleness.since_confirmed >= stopped.elapsed(),
        "{staleness:?}"
    );
    let during: Vec<_> = (0..200)
        .map(|i| {
            resolver
                .resolve(
                    "triage",
                    &RequestContext::new().unit(&format!("u{i}")).attrs(&eu),
                )
                .to_core()
        })
        .collect();
    assert_eq!(during, before, "fail static: the same answers");

    // The server comes back (same address, same store); a rollback written meanwhile by
    // someone else reaches the resolver through the re-established watch.
    let _restarted = restart(&env.server);
    let writer = fast_client(&env.server.url()).await;
    let routing = pledger_infra::RoutingStore::open(&async_nats::jetstream::new(writer))
        .await
        .unwrap();
    routing
        .publish(&stable_table("triage", 6, &a))
        .await
        .unwrap();
    within(
        "the rollback after reconnecting",
        resolver.wait_for("triage", |t| t.is_some_and(|t| t.ledger_sequence == 6)),
    )
    .await;
    within(
        "the watch to be live again",
        resolver.wait_until(|r| r.staleness().connected),
    )
    .await;
    assert!(resolver.staleness().since_confirmed < stopped.elapsed());
}
