//! Snapshots: saved atomically, and a start from one serves while the server is down.

use std::time::Duration;

use pledger_client::{ClientError, RequestContext, Resolver, ResolverOptions};
use pledger_core::routing::RoutingTable;

use crate::support::*;

fn with_snapshot(path: &std::path::Path) -> ResolverOptions {
    ResolverOptions {
        snapshot: Some(path.to_path_buf()),
        heartbeat: Duration::from_millis(100),
        initial_load_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

fn snapshot_tables(path: &std::path::Path) -> Vec<RoutingTable> {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(value["format"], 2);
    assert!(value["saved_at"].is_string());
    serde_json::from_value(value["tables"].clone()).unwrap()
}

#[tokio::test]
async fn save_snapshot_writes_every_table_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.json");
    let (a, b) = (artifact("a"), artifact("b"));
    let tables = vec![
        rollout_table("alpha", 3, &a, &b, three_stages()),
        stable_table("beta", 5, &a),
    ];
    let resolver = Resolver::from_tables(tables.clone());
    std::fs::write(&path, "old content").unwrap();
    resolver.save_snapshot(&path).unwrap();
    assert_eq!(snapshot_tables(&path), tables);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["routing.json"], "no temporary file is left behind");
    // A directory that does not exist is an error naming the path.
    let err = resolver
        .save_snapshot(dir.path().join("missing/routing.json"))
        .unwrap_err();
    assert!(matches!(err, ClientError::Snapshot { .. }) && err.to_string().contains("missing"));
}

#[tokio::test]
async fn a_resolver_keeps_its_snapshot_current() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.json");
    let a = artifact("a");
    env.routing
        .publish(&stable_table("triage", 1, &a))
        .await
        .unwrap();
    // First start: no file yet, so a live load, which leaves a snapshot behind.
    let resolver = Resolver::start(env.client.clone(), with_snapshot(&path))
        .await
        .unwrap();
    assert_eq!(snapshot_tables(&path), vec![stable_table("triage", 1, &a)]);
    env.routing
        .publish(&stable_table("triage", 2, &artifact("b")))
        .await
        .unwrap();
    within(
        "the snapshot to be rewritten",
        resolver.wait_until(|_| snapshot_tables(&path)[0].ledger_sequence == 2),
    )
    .await;
}

#[tokio::test]
async fn a_start_from_a_snapshot_serves_while_the_server_is_down() {
    let mut env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.json");
    let (a, b) = (artifact("a"), artifact("b"));
    env.routing
        .publish(&rollout_table("triage", 4, &a, &b, three_stages()))
        .await
        .unwrap();
    let first = Resolver::start(env.client.clone(), with_snapshot(&path))
        .await
        .unwrap();
    let eu = [("geo", "eu")];
    let ctx = |i: usize| format!("unit-{i}");
    let served: Vec<_> = (0..100)
        .map(|i| {
            first
                .resolve("triage", &RequestContext::new().unit(&ctx(i)).attrs(&eu))
                .to_core()
        })
        .collect();
    drop(first);

    env.server.stop();
    // The service restarts while NATS is away.
    let client = pledger_client::connect(&env.server.url()).await.unwrap();
    let resolver = tokio::time::timeout(
        Duration::from_secs(1),
        Resolver::start(client, with_snapshot(&path)),
    )
    .await
    .expect("a snapshot start does not wait for the server")
    .expect("a snapshot start does not fail");
    let again: Vec<_> = (0..100)
        .map(|i| {
            resolver
                .resolve("triage", &RequestContext::new().unit(&ctx(i)).attrs(&eu))
                .to_core()
        })
        .collect();
    assert_eq!(again, served);
    let staleness = resolver.staleness();
    assert!(!staleness.connected && !staleness.synced, "{staleness:?}");
    assert!(staleness.since_confirmed < Duration::from_secs(3600));

    // The server returns: the live tables replace the snapshot's.
    let _restarted = restart(&env.server);
    let writer = fast_client(&env.server.url()).await;
    let routing = pledger_infra::RoutingStore::open(&async_nats::jetstream::new(writer))
        .await
        .unwrap();
    routing
        .publish(&stable_table("triage", 9, &a))
        .await
        .unwrap();
    within("the live load", resolver.wait_synced()).await;
    within(
        "the rollback",
        resolver.wait_for("triage", |t| t.is_some_and(|t| t.ledger_sequence == 9)),
    )
    .await;
}

#[tokio::test]
async fn without_a_snapshot_start_fails_when_the_server_is_down() {
    let mut env = env().await;
    env.server.stop();
    let dir = tempfile::tempdir().unwrap();
    let client = pledger_client::connect(&env.server.url()).await.unwrap();
    // The snapshot file does not exist (a first start): nothing to serve, so an error.
    let err = Resolver::start(client, with_snapshot(&dir.path().join("none.json")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout(..) | ClientError::Unreachable(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreadable_snapshot_is_ignored_for_a_live_load() {
    let env = env().await;
    env.routing
        .publish(&stable_table("triage", 1, &artifact("a")))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.json");
    std::fs::write(&path, "{ not json").unwrap();
    let resolver = Resolver::start(env.client.clone(), with_snapshot(&path))
        .await
        .unwrap();
    assert!(resolver.staleness().synced);
    assert_eq!(snapshot_tables(&path).len(), 1, "replaced by a good one");
}

#[tokio::test]
async fn a_snapshot_of_another_ledger_is_dropped_once_this_servers_bucket_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.json");
    let (a, b) = (artifact("a"), artifact("b"));
    // A first ledger, far along: its snapshot holds `triage` at sequence 50 and `retired`.
    {
        let first = env().await;
        first
            .routing
            .publish(&stable_table("triage", 50, &a))
            .await
            .unwrap();
        first
            .routing
            .publish(&stable_table("retired", 40, &a))
            .await
            .unwrap();
        let resolver = Resolver::start(first.client.clone(), with_snapshot(&path))
            .await
            .unwrap();
        assert_eq!(resolver.tables().len(), 2);
    }
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(value["source"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{} created ", pledger_core::names::ROUTING_STREAM)));
    // A new ledger on another server, younger: `triage` at sequence 3 serves `b`.
    let second = env().await;
    second
        .routing
        .publish(&stable_table("triage", 3, &b))
        .await
        .unwrap();
    let resolver = Resolver::start(second.client.clone(), with_snapshot(&path))
        .await
        .unwrap();
    within("the live load", resolver.wait_synced()).await;
    within(
        "the new ledger's table",
        resolver.wait_for("triage", |t| t.is_some_and(|t| t.ledger_sequence == 3)),
    )
    .await;
    let r = resolver.resolve("triage", &RequestContext::new().unit("u1"));
    assert_eq!(r.version(), Some(&b.version_id()));
    assert!(
        resolver.table("retired").is_none(),
        "nothing of the other ledger is served"
    );
    // The snapshot now names this bucket and holds its tables only.
    within(
        "the snapshot to be rewritten",
        resolver.wait_until(|_| snapshot_tables(&path) == vec![stable_table("triage", 3, &b)]),
    )
    .await;
}
