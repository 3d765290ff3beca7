//! RFC 6962 Merkle trees: the verifiers against the transparency-dev/merkle vectors
//! (`tests/vectors/rfc6962`), the proofs `Tree` generates, and the reference tree of the
//! certificate-transparency test suites.

use std::path::{Path, PathBuf};

use base64::Engine;
use pledger_core::merkle::{
    hash_from_base64, hash_to_base64, leaf_hash, node_hash, root_of, verify_consistency,
    verify_inclusion, Hash, HashDecodeError, ProofError, Tree, EMPTY_ROOT,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn hex(s: &str) -> Hash {
    assert_eq!(s.len(), 64, "{s}");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Known-answer vectors
// ---------------------------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rfc6962")
}

/// Every regular file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A vector's hash field, if it is base64 of exactly 32 bytes.
fn field_hash(doc: &Value, field: &str) -> Option<Hash> {
    hash_from_base64(doc[field].as_str().expect(field)).ok()
}

/// A vector's `proof`: null is the empty proof; `None` when an element is not a 32-byte hash.
fn field_proof(doc: &Value) -> Option<Vec<Hash>> {
    match &doc["proof"] {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| hash_from_base64(v.as_str().expect("proof element")).ok())
            .collect(),
        other => panic!("proof is {other}"),
    }
}

/// Verifies one vector: `Ok(())` when it verifies, `Err(why)` when it does not. A field that is
/// not a 32-byte hash makes it fail to verify.
fn check_vector(kind: &str, doc: &Value) -> Result<(), String> {
    let u = |f: &str| doc[f].as_u64().unwrap_or_else(|| panic!("{f}"));
    let not_hash = |f: &str| format!("{f} is not a 32-byte hash");
    let proof = field_proof(doc).ok_or_else(|| not_hash("a proof element"))?;
    let result = match kind {
        "inclusion" => {
            let root = field_hash(doc, "root").ok_or_else(|| not_hash("root"))?;
            let leaf = field_hash(doc, "leafHash").ok_or_else(|| not_hash("leafHash"))?;
            verify_inclusion(u("leafIdx"), u("treeSize"), &leaf, &proof, &root)
        }
        "consistency" => {
            // Roots go in as bytes: the verifier decides whether their length matters.
            let bytes = |f: &str| {
                base64::engine::general_purpose::STANDARD
                    .decode(doc[f].as_str().expect(f))
                    .map_err(|e| format!("{f}: {e}"))
            };
            let (root1, root2) = (bytes("root1")?, bytes("root2")?);
            verify_consistency(u("size1"), u("size2"), &root1, &root2, &proof)
        }
        _ => unreachable!(),
    };
    result.map_err(|e| e.to_string())
}

#[test]
fn every_rfc6962_vector_file_gives_its_expected_verdict() {
    let root = vectors_dir();
    let mut present = 0;
    let mut checked = 0;
    let mut failures = Vec::new();
    for kind in ["inclusion", "consistency"] {
        for path in files_under(&root.join(kind)) {
            present += 1;
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            assert!(rel.ends_with(".json"), "{rel}: not a vector file");
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{rel}: {e}"));
            let want_err = doc["wantErr"].as_bool().expect("wantErr");
            let result = check_vector(kind, &doc);
            checked += 1;
            match (&result, want_err) {
                (Ok(()), false) | (Err(_), true) => {}
                (Ok(()), true) => failures.push(format!("{rel}: verified, wantErr is true")),
                (Err(e), false) => failures.push(format!("{rel}: rejected ({e}), wantErr false")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, present);
    assert!(present >= 150, "only {present} vector files");
    assert_eq!(present, 196, "the vector folder changed");
}

// ---------------------------------------------------------------------------------------------
// The reference tree
// ---------------------------------------------------------------------------------------------

/// The 8 entries of the RFC 6962 reference tree of the certificate-transparency test suites.
fn reference_entries() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x10],
        vec![0x20, 0x21],
        vec![0x30, 0x31],
        vec![0x40, 0x41, 0x42, 0x43],
        vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
        (0x60..=0x6f).collect(),
    ]
}

/// The roots of the reference tree's first 1..=8 leaves, as published with it.
const REFERENCE_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference_tree() -> Tree {
    let mut tree = Tree::new();
    for entry in reference_entries() {
        tree.push_entry(&entry);
    }
    tree
}

#[test]
fn the_reference_tree_has_the_published_roots() {
    let tree = reference_tree();
    assert_eq!(tree.size(), 8);
    assert_eq!(
        tree.root(),
        hex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    );
    for (i, want) in REFERENCE_ROOTS.iter().enumerate() {
        let size = i as u64 + 1;
        assert_eq!(tree.root_at(size), Some(hex(want)), "size {size}");
        let leaves: Vec<Hash> = (0..size).map(|j| tree.leaf(j).unwrap()).collect();
        assert_eq!(root_of(&leaves), hex(want), "root_of, size {size}");
    }
    assert_eq!(tree.root_at(0), Some(EMPTY_ROOT));
    assert_eq!(tree.root_at(9), None);
    assert_eq!(tree.leaf(8), None);
    assert_eq!(tree.leaf(0), Some(leaf_hash(b"")));
}

/// The numbered vector folders' happy paths are proofs in the reference tree: `Tree` must
/// generate exactly those proofs and roots.
#[test]
fn generated_proofs_equal_the_vectors_happy_paths() {
    let tree = reference_tree();
    let root = vectors_dir();
    let mut compared = 0;
    for kind in ["inclusion", "consistency"] {
        for n in 0..=4 {
            let path = root.join(format!("{kind}/{n}/happy-path.json"));
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let proof = field_proof(&doc).unwrap();
            let u = |f: &str| doc[f].as_u64().unwrap();
            if kind == "inclusion" {
                let size = u("treeSize");
                assert_eq!(tree.root_at(size), field_hash(&doc, "root"), "{n}");
                assert_eq!(tree.leaf(u("leafIdx")), field_hash(&doc, "leafHash"), "{n}");
                assert_eq!(tree.inclusion_proof(u("leafIdx"), size), Some(proof), "{n}");
            } else {
                assert_eq!(tree.root_at(u("size1")), field_hash(&doc, "root1"), "{n}");
                assert_eq!(tree.root_at(u("size2")), field_hash(&doc, "root2"), "{n}");
                let generated = tree.consistency_proof(u("size1"), u("size2"));
                assert_eq!(generated, Some(proof), "{n}");
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 10);
}

// ---------------------------------------------------------------------------------------------
// Hashes
// ---------------------------------------------------------------------------------------------

#[test]
fn hashes_follow_the_definitions() {
    let sha = |parts: &[&[u8]]| -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    };
    assert_eq!(EMPTY_ROOT, sha(&[b""]));
    assert_eq!(root_of(&[]), EMPTY_ROOT);
    assert_eq!(Tree::new().root(), EMPTY_ROOT);
    assert_eq!(Tree::new().size(), 0);
    assert_eq!(leaf_hash(b"abc"), sha(&[&[0], b"abc"]));
    let (l, r) = (leaf_hash(b"l"), leaf_hash(b"r"));
    assert_eq!(node_hash(&l, &r), sha(&[&[1], &l, &r]));
    assert_eq!(root_of(&[l]), l);
    assert_eq!(root_of(&[l, r]), node_hash(&l, &r));
    // Three leaves split at two.
    let m = leaf_hash(b"m");
    assert_eq!(root_of(&[l, r, m]), node_hash(&node_hash(&l, &r), &m));
}

#[test]
fn hashes_round_trip_through_base64() {
    let h = hex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
    let b64 = hash_to_base64(&h);
    assert_eq!(b64, "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=");
    assert_eq!(hash_from_base64(&b64), Ok(h));
    assert_eq!(
        hash_from_base64("ZG9uJ3QgY2FyZSAy"),
        Err(HashDecodeError::Length(12))
    );
    assert_eq!(hash_from_base64(""), Err(HashDecodeError::Length(0)));
    // No padding, URL alphabet, stray characters: not the standard encoding.
    for bad in [
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg",
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz-Nw7_RgQyg=",
        " XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
    ] {
        assert!(
            matches!(hash_from_base64(bad), Err(HashDecodeError::Base64(_))),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Generated proofs
// ---------------------------------------------------------------------------------------------

const MAX: u64 = 70;

/// A tree of `2 * MAX` distinct leaves, so that sizes up to twice `MAX` have roots.
fn big_tree() -> Tree {
    let mut tree = Tree::new();
    for i in 0..2 * MAX {
        tree.push_entry(format!("entry {i}").as_bytes());
    }
    tree
}

/// The bit positions flipped in each proof hash: every bit in trees of up to 8 leaves, one
/// that varies with the hash in larger trees (SHA-256 is slow in debug builds).
fn bits_to_flip(size: u64, salt: u64) -> Vec<usize> {
    if size <= 8 {
        (0..256).collect()
    } else {
        vec![((salt * 37 + 11) % 256) as usize]
    }
}

fn flipped(proof: &[Hash], i: usize, bit: usize) -> Vec<Hash> {
    let mut p = proof.to_vec();
    p[i][bit / 8] ^= 1 << (bit % 8);
    p
}

#[test]
fn generated_inclusion_proofs_verify_and_corruptions_do_not() {
    let tree = big_tree();
    let mut verified = 0;
    for size in 1..=MAX {
        let root = tree.root_at(size).unwrap();
        for index in 0..size {
            let leaf = tree.leaf(index).unwrap();
            let proof = tree.inclusion_proof(index, size).unwrap();
            verify_inclusion(index, size, &leaf, &proof, &root)
                .unwrap_or_else(|e| panic!("{index}/{size}: {e}"));
            verified += 1;

            for i in 0..proof.len() {
                for bit in bits_to_flip(size, index + i as u64) {
                    let bad = flipped(&proof, i, bit);
                    assert_eq!(
                        verify_inclusion(index, size, &leaf, &bad, &root),
                        Err(ProofError::RootMismatch),
                        "{index}/{size}: hash {i} bit {bit}"
                    );
                }
            }
            // The leaf claimed at another index.
            for other in [index.wrapping_sub(1), index + 1, index ^ 2] {
                if other < size && other != index {
                    assert!(
                        verify_inclusion(other, size, &leaf, &proof, &root).is_err(),
                        "{index}/{size} as index {other}"
                    );
                }
            }
            // Another tree size, with that tree's root.
            for other in [size - 1, size + 1, size * 2, size / 2] {
                if other > index && other != size {
                    let other_root = tree.root_at(other).unwrap();
                    assert!(
                        verify_inclusion(index, other, &leaf, &proof, &other_root).is_err(),
                        "{index}/{size} as size {other}"
                    );
                }
            }
            // A wrong leaf, a missing or an extra hash.
            assert!(verify_inclusion(index, size, &leaf_hash(b"x"), &proof, &root).is_err());
            if let Some((_, shorter)) = proof.split_last() {
                assert!(matches!(
                    verify_inclusion(index, size, &leaf, shorter, &root),
                    Err(ProofError::WrongLength { .. })
                ));
            }
            let mut longer = proof.clone();
            longer.push(root);
            assert!(matches!(
                verify_inclusion(index, size, &leaf, &longer, &root),
                Err(ProofError::WrongLength { .. })
            ));
        }
    }
    assert_eq!(verified, MAX * (MAX + 1) / 2);
}

#[test]
fn generated_consistency_proofs_verify_and_corruptions_do_not() {
    let tree = big_tree();
    let mut verified = 0;
    for size2 in 1..=MAX {
        let root2 = tree.root_at(size2).unwrap();
        for size1 in 1..=size2 {
            let root1 = tree.root_at(size1).unwrap();
            let proof = tree.consistency_proof(size1, size2).unwrap();
            assert_eq!(proof.is_empty(), size1 == size2, "{size1}->{size2}");
            verify_consistency(size1, size2, &root1, &root2, &proof)
                .unwrap_or_else(|e| panic!("{size1}->{size2}: {e}"));
            verified += 1;
            if size1 == size2 {
                continue;
            }

            for i in 0..proof.len() {
                for bit in bits_to_flip(size2, size1 + i as u64) {
                    let bad = flipped(&proof, i, bit);
                    assert!(
                        verify_consistency(size1, size2, &root1, &root2, &bad).is_err(),
                        "{size1}->{size2}: hash {i} bit {bit}"
                    );
                }
            }
            // Other sizes, with those trees' roots.
            for other in [size1 - 1, size1 + 1, size1 ^ 2] {
                if other != size1 && other <= size2 {
                    let other_root = tree.root_at(other).unwrap();
                    assert!(
                        verify_consistency(other, size2, &other_root, &root2, &proof).is_err(),
                        "{size1}->{size2} as size1 {other}"
                    );
                }
            }
            for other in [size2 - 1, size2 + 1, size2 * 2, size2 / 2] {
                if other != size2 && other >= size1 {
                    let other_root = tree.root_at(other).unwrap();
                    assert!(
                        verify_consistency(size1, other, &root1, &other_root, &proof).is_err(),
                        "{size1}->{size2} as size2 {other}"
                    );
                }
            }
            // Wrong or swapped roots, no proof, a missing or an extra hash.
            let wrong = leaf_hash(b"wrong root");
            assert!(verify_consistency(size1, size2, &wrong, &root2, &proof).is_err());
            assert!(verify_consistency(size1, size2, &root1, &wrong, &proof).is_err());
            assert!(verify_consistency(size1, size2, &root2, &root1, &proof).is_err());
            assert!(matches!(
                verify_consistency(size1, size2, &root1, &root2, &[]),
                Err(ProofError::WrongLength { got: 0, .. })
            ));
            assert!(verify_consistency(size1, size2, &root1, &root2, &proof[1..]).is_err());
            let mut longer = proof.clone();
            longer.push(root2);
            assert!(verify_consistency(size1, size2, &root1, &root2, &longer).is_err());
        }
    }
    assert_eq!(verified, MAX * (MAX + 1) / 2);
}

#[test]
fn the_edge_cases_of_the_verifiers() {
    let tree = big_tree();
    let (r1, r2) = (tree.root_at(1).unwrap(), tree.root_at(2).unwrap());
    let leaf = tree.leaf(0).unwrap();
    // Inclusion: the index must be inside the tree; nothing is in the empty tree.
    assert_eq!(
        verify_inclusion(0, 0, &leaf, &[], &EMPTY_ROOT),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        verify_inclusion(1, 1, &leaf, &[], &r1),
        Err(ProofError::IndexOutOfRange { index: 1, size: 1 })
    );
    assert_eq!(verify_inclusion(0, 1, &leaf, &[], &r1), Ok(()));
    assert_eq!(
        verify_inclusion(0, 1, &leaf, &[r1], &r1),
        Err(ProofError::WrongLength {
            expected: 0,
            got: 1
        })
    );
    // Consistency: sizes in order; equal sizes need equal roots and no proof; from the empty
    // tree only the empty proof.
    assert_eq!(
        verify_consistency(2, 1, &r2, &r1, &[]),
        Err(ProofError::SizeOrder { size1: 2, size2: 1 })
    );
    assert_eq!(verify_consistency(2, 2, &r2, &r2, &[]), Ok(()));
    assert_eq!(
        verify_consistency(2, 2, &r1, &r2, &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(2, 2, &r2, &r2, &[r2]),
        Err(ProofError::WrongLength {
            expected: 0,
            got: 1
        })
    );
    // From the empty tree: refused, whatever the proof (as the vectors expect).
    for (size2, root2, proof) in [(0, EMPTY_ROOT, vec![]), (2, r2, vec![]), (2, r2, vec![r1])] {
        assert_eq!(
            verify_consistency(0, size2, &EMPTY_ROOT, &root2, &proof),
            Err(ProofError::FromEmptyTree)
        );
    }
    // Equal sizes compare the roots as bytes; other sizes need 32-byte roots.
    assert_eq!(verify_consistency(1, 1, b"same", b"same", &[]), Ok(()));
    assert_eq!(
        verify_consistency(1, 2, b"short", &r2, &[r1]),
        Err(ProofError::NotAHash)
    );
    // The proof from 1 to 2 is the second leaf. When size1 is a power of two, root1 is the
    // proof's seed, so a wrong root1 shows in the second root; otherwise it is named as such.
    let proof = tree.consistency_proof(1, 2).unwrap();
    assert_eq!(proof, vec![tree.leaf(1).unwrap()]);
    assert_eq!(
        verify_consistency(1, 2, &r2, &r2, &proof),
        Err(ProofError::RootMismatch)
    );
    let (r3, r4) = (tree.root_at(3).unwrap(), tree.root_at(4).unwrap());
    let proof = tree.consistency_proof(3, 4).unwrap();
    assert_eq!(verify_consistency(3, 4, &r3, &r4, &proof), Ok(()));
    assert_eq!(
        verify_consistency(3, 4, &r2, &r4, &proof),
        Err(ProofError::FirstRootMismatch)
    );
    // The tree refuses what it cannot prove.
    assert_eq!(tree.inclusion_proof(3, 3), None);
    assert_eq!(tree.inclusion_proof(0, 2 * MAX + 1), None);
    assert_eq!(tree.consistency_proof(3, 2), None);
    assert_eq!(tree.consistency_proof(1, 2 * MAX + 1), None);
    assert_eq!(tree.consistency_proof(0, 5), Some(vec![]));
    assert_eq!(tree.consistency_proof(5, 5), Some(vec![]));
    // Errors say what is wrong.
    assert_eq!(
        ProofError::WrongLength {
            expected: 3,
            got: 2
        }
        .to_string(),
        "the proof has 2 hashes; a proof between these positions has 3"
    );
    assert_eq!(
        ProofError::IndexOutOfRange { index: 5, size: 5 }.to_string(),
        "leaf index 5 is outside the tree of size 5"
    );
}

#[test]
fn the_root_after_each_push_is_the_root_of_the_leaves_so_far() {
    let mut tree = Tree::new();
    let mut leaves = Vec::new();
    for i in 0..300u32 {
        let leaf = leaf_hash(&i.to_be_bytes());
        tree.push(leaf);
        leaves.push(leaf);
        assert_eq!(tree.size(), leaves.len() as u64);
        assert_eq!(tree.root(), root_of(&leaves), "{} leaves", leaves.len());
    }
    for size in 0..=300 {
        assert_eq!(tree.root_at(size), Some(root_of(&leaves[..size as usize])));
    }
    assert_eq!(Tree::from_leaves(leaves.iter().copied()), tree);
}

#[test]
fn proofs_over_a_hundred_thousand_leaves_verify() {
    let tree = Tree::from_leaves((0..100_000u32).map(|i| leaf_hash(&i.to_be_bytes())));
    let size = tree.size();
    let root = tree.root();
    for index in [0, 1, 4_095, 50_000, 65_536, 99_999] {
        let proof = tree.inclusion_proof(index, size).unwrap();
        verify_inclusion(index, size, &tree.leaf(index).unwrap(), &proof, &root).unwrap();
    }
    for size1 in [1, 2, 3, 4_096, 65_535, 65_536, 99_998] {
        let root1 = tree.root_at(size1).unwrap();
        let proof = tree.consistency_proof(size1, size).unwrap();
        verify_consistency(size1, size, &root1, &root, &proof).unwrap();
    }
}
