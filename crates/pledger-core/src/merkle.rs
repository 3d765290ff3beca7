//! RFC 6962 / RFC 9162 Merkle trees: hashes, a tree with inclusion and consistency proofs, and
//! the verifiers of both proofs.
//!
//! Leaf hash `SHA-256(0x00 ‖ entry)`, node hash `SHA-256(0x01 ‖ left ‖ right)`, and the root of
//! the empty tree is `SHA-256("")` ([`EMPTY_ROOT`]). The tree of `n` leaves is split at the
//! largest power of two below `n` (RFC 6962 section 2.1).
//!
//! [`Tree`] keeps every node of its perfect subtrees (about two hashes per leaf), so its root
//! after each append and the root of any prefix cost O(log n) hashes, and a proof O(log² n)
//! at most.
//! The verifiers follow RFC 9162 sections 2.1.3.2 and 2.1.4.2, and check a proof's length
//! before hashing anything.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of a leaf holding `entry`: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the tree whose leaf hashes are `leaves` (RFC 6962 MTH), computed directly from
/// the definition: O(n) hashes. [`EMPTY_ROOT`] for no leaves.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly smaller than `n` (for `n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// A Merkle tree of leaf hashes, in append order.
///
/// `levels[0]` holds the leaf hashes; `levels[k][i]` is the root of the perfect subtree of the
/// `2^k` leaves starting at `i * 2^k`, kept as soon as that subtree is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A tree of these leaf hashes, in order.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Tree {
        let mut tree = Tree::new();
        for leaf in leaves {
            tree.push(leaf);
        }
        tree
    }

    /// Appends a leaf hash. Amortised O(1) node hashes.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut k = 0;
        while self.levels[k].len() & 1 == 0 {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
    }

    /// Appends the leaf holding `entry` (its hash is [`leaf_hash`]`(entry)`).
    pub fn push_entry(&mut self, entry: &[u8]) {
        self.push(leaf_hash(entry));
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The hash of leaf `index`, if there is one.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }

    /// The root of the whole tree: O(log n).
    pub fn root(&self) -> Hash {
        self.subtree(0, self.size())
    }

    /// The root of the tree of the first `size` leaves, if `size <= self.size()`.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        (size <= self.size()).then(|| self.subtree(0, size))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 6962
    /// PATH(index, D[0:size])), if `index < size <= self.size()`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Some(proof)
    }

    /// The consistency proof between the trees of the first `size1` and `size2` leaves (RFC
    /// 6962 PROOF(size1, D[0:size2])), if `size1 <= size2 <= self.size()`. Empty when `size1`
    /// is 0 or equals `size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Option<Vec<Hash>> {
        if size1 > size2 || size2 > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        if size1 > 0 {
            self.subproof(size1, 0, size2, true, &mut proof);
        }
        Some(proof)
    }

    /// MTH(D[start:end]) for `end <= self.size()`. The subtrees that RFC 6962 names start at
    /// a multiple of the largest power of two they contain, so the left halves met on the way
    /// down are stored perfect subtrees and only the right edge recurses: O(log n).
    fn subtree(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return EMPTY_ROOT;
        }
        if n.is_power_of_two() && start & (n - 1) == 0 {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(start >> level) as usize];
        }
        let k = split_point(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// PATH(index - start, D[start:end]), appended to `out` (hashes from the leaf upwards).
    fn path(&self, index: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if index - start < k {
            self.path(index, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(index, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// SUBPROOF(m, D[start:end], whole), appended to `out`.
    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// Why a proof does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside the tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("size1 ({size1}) is greater than size2 ({size2})")]
    SizeOrder { size1: u64, size2: u64 },
    #[error("the proof has {got} hashes; a proof between these positions has {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("the proof does not lead to the first tree's root (size1)")]
    FirstRootMismatch,
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("a root is not a 32-byte hash")]
    NotAHash,
    #[error("a consistency proof from the empty tree proves nothing (size1 is 0)")]
    FromEmptyTree,
}

/// Verifies that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    debug_assert_eq!(sn, 0);
    if r == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Runs the index walk of RFC 9162's verifiers from `(fn_, sn)` without hashing: the number
/// of proof hashes it consumes before `sn` reaches 0.
fn walk_len(mut fn_: u64, mut sn: u64) -> usize {
    let mut steps = 0;
    while sn != 0 {
        if fn_ & 1 == 1 || fn_ == sn {
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        }
        fn_ >>= 1;
        sn >>= 1;
        steps += 1;
    }
    steps
}

/// The length of the inclusion proof of leaf `index` in a tree of `size` (`index < size`).
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    walk_len(index, size - 1)
}

/// The length of the consistency proof from `size1` to `size2` (`0 < size1 < size2`).
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let steps = walk_len(fn_, sn);
    // The path starts with the root of the subtree of size1's last leaf; the proof leaves it
    // out when size1 is a power of two (it is then root1 itself).
    if size1.is_power_of_two() {
        steps
    } else {
        steps + 1
    }
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1` (RFC 9162 section 2.1.4.2).
///
/// `size1 == size2` needs an empty proof and equal roots; `size1 == 0` is refused (as the
/// independent test vectors expect: a proof from the empty tree proves nothing).
///
/// The roots are taken as bytes: when the sizes are equal they are only compared, whatever
/// their length (as RFC 9162's algorithm does, and as the independent test vectors expect);
/// otherwise each must be a 32-byte hash.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizeOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                expected: 0,
                got: proof.len(),
            });
        }
        if root1 != root2 {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let (Ok(root1), Ok(root2)) = (<&Hash>::try_from(root1), <&Hash>::try_from(root2)) else {
        return Err(ProofError::NotAHash);
    };
    let expected = consistency_proof_len(size1, size2);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    let (seed, rest) = if size1.is_power_of_two() {
        (*root1, proof)
    } else {
        (proof[0], &proof[1..])
    };
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    debug_assert_eq!(sn, 0);
    if fr != *root1 {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Why a string is not a base64 hash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashDecodeError {
    #[error("not standard base64 with padding: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("a hash is 32 bytes, this is {0}")]
    Length(usize),
}

/// A hash in standard base64 with padding (44 characters).
pub fn hash_to_base64(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

/// The hash in `s` (standard base64 with padding, exactly 32 bytes).
pub fn hash_from_base64(s: &str) -> Result<Hash, HashDecodeError> {
    let bytes = STANDARD.decode(s)?;
    Hash::try_from(bytes.as_slice()).map_err(|_| HashDecodeError::Length(bytes.len()))
}
