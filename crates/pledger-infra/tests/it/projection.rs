use pledger_core::names::LEDGER_STREAM as LEDGER;
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

fn identity(created: &str) -> pledger_infra::projection::LedgerIdentity {
    pledger_infra::projection::LedgerIdentity {
        streams: vec![(LEDGER.into(), format!("{created}@single server"))],
    }
}

fn count(
    n: u64,
) -> impl Fn(&pledger_infra::projection::ProjectionTx<'_>) -> Result<(), pledger_infra::codec::CodecError>
{
    move |tx| tx.put("count", &n)
}

#[test]
fn a_store_resumes_only_on_its_own_ledger_and_is_rebuilt_for_another() {
    use pledger_infra::projection::Binding;
    let dir = tempfile::tempdir().unwrap();
    let store = ProjectionStore::open(dir.path()).unwrap();
    let a = identity("1000");
    assert_eq!(store.bind(&a, &[(LEDGER, 0)]).unwrap(), Binding::New);
    store.apply(LEDGER, 7, count(7)).unwrap();
    // The same ledger, grown: resume.
    assert_eq!(store.bind(&a, &[(LEDGER, 9)]).unwrap(), Binding::Same);
    assert_eq!(store.applied_sequence(LEDGER).unwrap(), 7);
    // Another ledger (a new server, a recreated stream): cleared, counted, never resumed.
    let b = identity("2000");
    match store.bind(&b, &[(LEDGER, 3)]).unwrap() {
        Binding::Rebuilt { reason } => assert!(reason.contains("another ledger"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.applied_sequence(LEDGER).unwrap(), 0);
    assert_eq!(store.get::<u64>("count").unwrap(), None);
    assert_eq!(store.rebuilds().unwrap(), 1);
    // The same identity, but the stream holds less than the store applied.
    store.apply(LEDGER, 3, count(3)).unwrap();
    match store.bind(&b, &[(LEDGER, 2)]).unwrap() {
        Binding::Rebuilt { reason } => assert!(reason.contains("ends at 2"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.rebuilds().unwrap(), 2);
    assert_eq!(store.bind(&b, &[(LEDGER, 2)]).unwrap(), Binding::Same);
}

#[test]
fn a_store_from_before_binding_is_rebuilt_not_trusted() {
    use pledger_infra::projection::Binding;
    let dir = tempfile::tempdir().unwrap();
    let store = ProjectionStore::open(dir.path()).unwrap();
    store.apply(LEDGER, 40, count(40)).unwrap();
    match store.bind(&identity("1"), &[(LEDGER, 100)]).unwrap() {
        Binding::Rebuilt { reason } => assert!(reason.contains("does not say"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.applied_sequence(LEDGER).unwrap(), 0);
}
