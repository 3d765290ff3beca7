use pledger_infra::projection::{Applied, ProjectionStore};

#[test]
fn effects_and_the_applied_sequence_commit_together_and_redeliveries_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = ProjectionStore::open(dir.path()).unwrap();
        assert_eq!(store.applied_sequence("ledger").unwrap(), 0);
        let add = |n: u64| {
            move |tx: &pledger_infra::projection::ProjectionTx<'_>| {
                let count: u64 = tx.get("count")?.unwrap_or(0);
                tx.put("count", &(count + n))
            }
        };
        assert_eq!(store.apply("ledger", 1, add(5)).unwrap(), Applied::Applied);
        assert_eq!(store.apply("ledger", 2, add(3)).unwrap(), Applied::Applied);
        assert_eq!(
            store.apply("ledger", 2, add(100)).unwrap(),
            Applied::AlreadyApplied
        );
        assert_eq!(
            store.apply("ledger", 1, add(100)).unwrap(),
            Applied::AlreadyApplied
        );
        assert_eq!(store.get::<u64>("count").unwrap(), Some(8));
    }
    // Reopened (a restart): the sequence and the state survived together.
    let store = ProjectionStore::open(dir.path()).unwrap();
    assert_eq!(store.applied_sequence("ledger").unwrap(), 2);
    assert_eq!(store.get::<u64>("count").unwrap(), Some(8));
}

#[test]
fn a_failing_effect_leaves_both_state_and_sequence_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProjectionStore::open(dir.path()).unwrap();
    store.apply("ledger", 1, |tx| tx.put("k", &1u64)).unwrap();
    let err = store.apply("ledger", 2, |tx| {
        tx.put("k", &2u64)?;
        Err(pledger_infra::codec::CodecError::Encode("boom".into()))
    });
    assert!(err.is_err());
    assert_eq!(store.applied_sequence("ledger").unwrap(), 1);
    assert_eq!(store.get::<u64>("k").unwrap(), Some(1));
}

#[test]
fn each_source_stream_has_its_own_applied_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProjectionStore::open(dir.path()).unwrap();
    store.apply("ledger", 10, |tx| tx.put("a", &1u64)).unwrap();
    assert_eq!(
        store.apply("outcomes", 3, |tx| tx.put("b", &1u64)).unwrap(),
        Applied::Applied
    );
    assert_eq!(
        store.apply("outcomes", 3, |tx| tx.put("b", &2u64)).unwrap(),
        Applied::AlreadyApplied
    );
    assert_eq!(store.applied_sequence("ledger").unwrap(), 10);
    assert_eq!(store.applied_sequence("outcomes").unwrap(), 3);
}
