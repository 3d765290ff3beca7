//! The shared tables of a state: [`Frozen`], [`VersionIds`] and [`EventIdDigests`].

use pledger_core::frozen::{Frozen, TAIL_MAX};
use pledger_core::state::VersionIds;
use pledger_core::verify::EventIdDigests;
use pledger_core::VersionId;

#[test]
fn a_copy_shares_the_frozen_rows_and_appends_to_its_own_tail() {
    let mut a = Frozen::from_vec(vec![1u32, 2, 3]);
    let mut b = a.clone();
    assert!(a.shares_frozen_with(&b));
    b.push(4);
    assert_eq!(a.len(), 3);
    assert_eq!(b.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    b.freeze();
    assert!(!a.shares_frozen_with(&b));
    assert_eq!(b.tail(), &[] as &[u32]);
    assert_eq!(b.frozen(), &[1, 2, 3, 4]);
    a.set(1, 20);
    assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![1, 20, 3]);
    assert_eq!(
        b.get(1),
        Some(&2),
        "a change to a copy leaves the other alone"
    );
}

#[test]
fn sorted_inserts_and_searches_span_the_frozen_rows_and_the_tail() {
    let mut t = Frozen::from_vec(vec![10u32, 20, 30]);
    t.insert(3, 40);
    t.insert(4, 50);
    assert_eq!(t.binary_search_by_key(&40, |v| *v), Ok(3));
    assert_eq!(t.binary_search_by_key(&20, |v| *v), Ok(1));
    assert_eq!(t.binary_search_by_key(&25, |v| *v), Err(2));
    assert_eq!(t.binary_search_by_key(&45, |v| *v), Err(4));
    assert_eq!(t.binary_search_by_key(&60, |v| *v), Err(5));
    t.insert(2, 25);
    assert_eq!(
        t.iter().copied().collect::<Vec<_>>(),
        vec![10, 20, 25, 30, 40, 50]
    );
    assert_eq!(
        t.tail(),
        &[] as &[u32],
        "an insert among the frozen rows freezes all"
    );
    assert_eq!(t.last(), Some(&50));
    assert_eq!(t.get(6), None);
}

fn version(i: usize) -> VersionId {
    let digest: String = sha2_of(i).iter().map(|b| format!("{b:02x}")).collect();
    VersionId::from_digest_hex(&digest)
}

fn sha2_of(i: usize) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(i.to_le_bytes()).into()
}

#[test]
fn version_ids_keep_their_positions_across_freezes_and_copies() {
    let n = 2 * TAIL_MAX + 300;
    let mut ids = VersionIds::default();
    for i in 0..n {
        assert_eq!(ids.push(&version(i)), Some(i as u32));
    }
    // Publishing a version again keeps its first position.
    assert_eq!(ids.push(&version(5)), Some(5));
    assert_eq!(ids.push(&version(n - 1)), Some(n as u32 - 1));
    let mut copy = ids.clone();
    copy.push(&version(n));
    copy.freeze();
    for i in 0..n {
        assert_eq!(ids.position(&version(i)), Some(i as u32), "version {i}");
        assert_eq!(
            copy.position(&version(i)),
            Some(i as u32),
            "version {i} in the copy"
        );
        assert_eq!(ids.get(i as u32), Some(version(i)));
    }
    assert_eq!(
        ids.position(&version(n)),
        None,
        "the copy's version is its own"
    );
    assert_eq!(copy.position(&version(n)), Some(n as u32));
    assert_eq!(ids.len(), n);
    let back = VersionIds::from_raw(&copy.to_raw()).unwrap();
    assert_eq!(back, copy);
    assert_eq!(back.position(&version(n)), Some(n as u32));
    assert_eq!(ids.latest(2), vec![version(n - 2), version(n - 1)]);
}

#[test]
fn event_id_digests_answer_for_every_id_across_merges() {
    let ids: Vec<String> = (0..3 * TAIL_MAX).map(|i| format!("event-{i}")).collect();
    let first = EventIdDigests::default().with(ids[..100].iter().map(String::as_str));
    let all = first.with(ids[100..].iter().map(String::as_str));
    assert_eq!(first.len(), 100);
    assert_eq!(all.len(), ids.len());
    assert!(ids.iter().all(|id| all.contains(id)));
    assert!(!first.contains(&ids[100]));
    assert!(!all.contains("event-never"));
    let back = EventIdDigests::from_raw(&all.to_raw()).unwrap();
    assert_eq!(back, all);
    assert!(back.contains(&ids[7]));
}

#[test]
fn merging_keeps_the_order_and_puts_the_first_sides_equal_rows_first() {
    let a = [(1, 'a'), (3, 'a'), (3, 'a'), (7, 'a')];
    let b = [(0, 'b'), (3, 'b'), (9, 'b')];
    let merged = pledger_core::frozen::merge_sorted(&a, &b, |x, y| x.0 <= y.0);
    assert_eq!(
        merged,
        vec![
            (0, 'b'),
            (1, 'a'),
            (3, 'a'),
            (3, 'a'),
            (3, 'b'),
            (7, 'a'),
            (9, 'b')
        ]
    );
    assert_eq!(
        pledger_core::frozen::merge_sorted::<u8>(&[], &[2, 4], |x, y| x <= y),
        vec![2, 4]
    );
}
