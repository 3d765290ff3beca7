//! The notary: when to sign a checkpoint of the ledger's Merkle tree.
//!
//! The tree has one leaf per stored ledger message, in stream order (leaf = SHA-256(0x00 ‖
//! the message's stored bytes), RFC 6962); a checkpoint commits to its size and root, signed as
//! a C2SP note ([`crate::note`]). The notary keeps only the tree's right edge (one hash per set
//! bit of its size), so its state is a few hundred bytes whatever the ledger's length.
//!
//! A checkpoint is due when the tree has grown since the last one and either
//! [`NotaryConfig::every_events`] messages were added, [`NotaryConfig::every`] has passed, or a
//! decision an auditor will ask about was recorded (a gate decision, a freeze, a rollback, a
//! completion: [`URGENT_KINDS`]). The origin line names the ledger by its roster's first
//! accepted event ([`crate::names::checkpoint_origin`]); until that event is seen no
//! checkpoint is written.

use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash};
use crate::note::Checkpoint;
use crate::verify::{LedgerVerifier, Verdict};
use crate::Timestamp;

/// Event kinds after which a checkpoint is written at once.
pub const URGENT_KINDS: [&str; 4] = [
    "release.gate_decided",
    "release.rollout_frozen",
    "release.rolled_back",
    "release.completed",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotaryConfig {
    /// A checkpoint after this many new messages at the latest.
    pub every_events: u64,
    /// A checkpoint this long after the last one when the tree has grown since.
    pub every_millis: i64,
}

impl Default for NotaryConfig {
    fn default() -> NotaryConfig {
        NotaryConfig {
            every_events: 1000,
            every_millis: 60_000,
        }
    }
}

/// The right edge of a Merkle tree: the roots of its perfect subtrees, largest first (one
/// per set bit of `size`). Enough to append and to compute the root; not to prove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    pub size: u64,
    pub peaks: Vec<Hash>,
}

impl Frontier {
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.peaks.pop().expect("a peak per set bit");
            hash = merkle::node_hash(&left, &hash);
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return merkle::root_of(&[]);
        };
        peaks.fold(*last, |right, left| merkle::node_hash(left, &right))
    }
}

/// What the notary has seen and signed, persisted by its driver with the stream sequence.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NotaryState {
    pub tree: Frontier,
    pub origin: Option<String>,
    /// The size and time of the last checkpoint written.
    pub last_size: u64,
    pub last_at: Option<Timestamp>,
    /// A decision in [`URGENT_KINDS`] was recorded since the last checkpoint.
    pub urgent: bool,
}

/// The notary's machine: messages in, in stream order; a checkpoint body out when one is due.
pub struct Notary {
    pub config: NotaryConfig,
    pub state: NotaryState,
    /// The fingerprint of the key the notary signs with.
    key: String,
    /// The roster, verified: who may sign a checkpoint of which size. Kept from every roster
    /// message (the driver feeds those before its start position with [`Notary::roster_message`]).
    roster: LedgerVerifier,
    roster_through: u64,
}

impl Notary {
    pub fn new(config: NotaryConfig, state: NotaryState, key_fingerprint: &str) -> Notary {
        Notary {
            config,
            state,
            key: key_fingerprint.to_string(),
            roster: LedgerVerifier::new(),
            roster_through: 0,
        }
    }

    /// A message of the roster subject (any position; each is taken once, in order).
    pub fn roster_message(&mut self, sequence: u64, bytes: &[u8]) {
        if sequence <= self.roster_through {
            return;
        }
        self.roster_through = sequence;
        let subject = crate::names::ROSTER_SUBJECT;
        if let Verdict::Accepted(_) = self.roster.observe(sequence, subject, bytes) {
            if let Some(genesis) = &self.roster.roster.genesis {
                self.state.origin = Some(crate::names::checkpoint_origin(&genesis.hash));
            }
        }
    }

    /// One stored message of the ledger, the next in stream order.
    pub fn observe(&mut self, sequence: u64, subject: &str, bytes: &[u8]) {
        self.state.tree.push(merkle::leaf_hash(bytes));
        if subject == crate::names::ROSTER_SUBJECT {
            self.roster_message(sequence, bytes);
        }
        if let Ok(envelope) = crate::Envelope::from_json(bytes) {
            if URGENT_KINDS.contains(&envelope.kind()) {
                self.state.urgent = true;
            }
        }
    }

    /// Why no checkpoint can be signed yet, if so: no roster, or the notary's key does not
    /// hold the notary role at the tree's size.
    pub fn cannot_sign(&self) -> Option<String> {
        let size = self.state.tree.size;
        if self.state.origin.is_none() {
            return Some("the roster has no first event yet".into());
        }
        match self.roster.roster.signer_at(&self.key, size + 1) {
            Err(p) => Some(format!("key {} may not sign at size {size}: {p}", self.key)),
            Ok(s) if !s.roles.contains(&crate::identity::Role::Notary) => Some(format!(
                "{} does not hold the notary role at size {size}",
                s.identity.name
            )),
            Ok(_) => None,
        }
    }

    /// The checkpoint to sign now, if one is due.
    pub fn due(&self, now: Timestamp) -> Option<Checkpoint> {
        let s = &self.state;
        let origin = s.origin.as_ref()?;
        if s.tree.size <= s.last_size || self.cannot_sign().is_some() {
            return None;
        }
        let timely = match s.last_at {
            None => true,
            Some(at) => now.millis_since(at) >= self.config.every_millis,
        };
        if s.urgent || timely || s.tree.size - s.last_size >= self.config.every_events {
            Some(Checkpoint {
                origin: origin.clone(),
                size: s.tree.size,
                root: s.tree.root(),
                extensions: Vec::new(),
            })
        } else {
            None
        }
    }

    /// The checkpoint of `size` was written at `now`.
    pub fn written(&mut self, size: u64, now: Timestamp) {
        self.state.last_size = self.state.last_size.max(size);
        self.state.last_at = Some(now);
        if size >= self.state.tree.size {
            self.state.urgent = false;
        }
    }
}
