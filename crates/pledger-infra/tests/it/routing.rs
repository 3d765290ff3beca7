use pledger_core::routing::RoutingTable;
use pledger_infra::{RoutingStore, RoutingWrite};

use crate::support::*;

fn table(seq: u64) -> RoutingTable {
    RoutingTable {
        prompt: prompt("triage"),
        stable: Some(artifact("a").version_id()),
        rollout: None,
        ledger_sequence: seq,
        artifacts: Default::default(),
    }
}

#[tokio::test]
async fn routing_writes_are_monotonic_in_ledger_sequence() {
    let h = harness().await;
    let store = RoutingStore::open(h.ledger.jetstream()).await.unwrap();
    assert!(store.get(&prompt("triage")).await.unwrap().is_none());
    assert!(matches!(
        store.publish(&table(5)).await.unwrap(),
        RoutingWrite::Written(_)
    ));
    assert_eq!(
        store.publish(&table(3)).await.unwrap(),
        RoutingWrite::AlreadyCurrent
    );
    assert_eq!(
        store.publish(&table(5)).await.unwrap(),
        RoutingWrite::AlreadyCurrent
    );
    // A later sequence with the same routing is not written again...
    assert_eq!(
        store.publish(&table(9)).await.unwrap(),
        RoutingWrite::AlreadyCurrent
    );
    // ...but a change of routing is.
    let moved = RoutingTable {
        stable: Some(artifact("b").version_id()),
        ..table(9)
    };
    assert!(matches!(
        store.publish(&moved).await.unwrap(),
        RoutingWrite::Written(_)
    ));
    let (stored, _) = store.get(&prompt("triage")).await.unwrap().unwrap();
    assert_eq!(stored, moved);
}

#[tokio::test]
async fn concurrent_routing_writers_end_with_the_latest_table() {
    let h = harness().await;
    let store = RoutingStore::open(h.ledger.jetstream()).await.unwrap();
    let mut tasks = Vec::new();
    for seq in 1..=8u64 {
        let store = store.clone();
        // Every writer's table routes differently, so each one is a real change.
        let stable = Some(artifact(&format!("v{seq}")).version_id());
        tasks.push(tokio::spawn(async move {
            store
                .publish(&RoutingTable {
                    stable,
                    ..table(seq)
                })
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (stored, _) = store.get(&prompt("triage")).await.unwrap().unwrap();
    assert_eq!(stored.ledger_sequence, 8);
    assert_eq!(stored.stable, Some(artifact("v8").version_id()));
}
