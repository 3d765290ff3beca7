//! The auditor's verification of a whole ledger: what `pledger audit verify` checks, over
//! messages read from a server or from an evidence export alike.
//!
//! Feed an [`Auditor`] the stream's configuration, then every stored message in stream order,
//! then the checkpoints (and any checkpoint the auditor kept outside NATS), and
//! [`Auditor::finish`] returns every finding, not only the first, each with its class:
//!
//! - **integrity**: history as stored is not what was written: a stream that could lose
//!   messages, a missing sequence, bytes that do not decode or do not verify, a broken chain, a
//!   reused event id, a key that was not the actor's at that position;
//! - **policy**: a well-formed, signed event that the rules forbid: a role the actor did not
//!   hold, an event the decider would not have recorded;
//! - **trust**: checkpoints that do not hold: a bad or missing notary signature, two different
//!   roots for one size (a split view), a checkpoint the ledger no longer extends (rewritten or
//!   truncated after it was signed).
//!
//! Every event check is [`LedgerVerifier`]'s, the readers' own; nothing here has a rule of its
//! own about events.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::ids::PromptName;
use crate::merkle::{self, Hash, Tree};
use crate::note::{self, Checkpoint, NoteVerifier};
use crate::verify::{Check, LedgerVerifier, Verdict};

/// What kind of failure a finding is; each has its own exit code in `pledger audit verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Integrity,
    Policy,
    Trust,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Integrity => "integrity",
            Class::Policy => "policy",
            Class::Trust => "trust",
        }
    }

    /// The class of an event the readers ignored.
    pub fn of_check(check: Check) -> Class {
        match check {
            Check::Role | Check::Admissibility => Class::Policy,
            Check::Decoding
            | Check::Subject
            | Check::Signature
            | Check::Key
            | Check::Chain
            | Check::DuplicateId => Class::Integrity,
        }
    }
}

/// One thing found wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditFinding {
    pub class: Class,
    /// The check that failed (an event check's code, or `stream-config`, `gap`, `checkpoint`,
    /// `split-view`, `trusted-checkpoint`, ...).
    pub check: String,
    pub sequence: Option<u64>,
    pub subject: Option<String>,
    pub event_id: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for AuditFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<9} {:<18}", self.class.name(), self.check)?;
        if let Some(s) = self.sequence {
            write!(f, " sequence {s}")?;
        }
        if let Some(s) = &self.subject {
            write!(f, " on {s}")?;
        }
        if let Some(id) = &self.event_id {
            write!(f, " [event {id}]")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The ledger stream's configuration and state, as its server reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StreamFacts {
    pub name: String,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub messages: u64,
    pub deny_delete: bool,
    pub deny_purge: bool,
    /// `limits`, `interest` or `workqueue`.
    pub retention: String,
    /// Limits; a value of 0 or below means none.
    pub max_messages: i64,
    pub max_bytes: i64,
    pub max_messages_per_subject: i64,
    pub max_age_seconds: u64,
    pub allow_rollup: bool,
    pub allow_message_ttl: bool,
}

/// What the stream's configuration allows that could drop or rewrite events.
pub fn check_stream(facts: &StreamFacts) -> Vec<AuditFinding> {
    let mut problems = Vec::new();
    if !facts.deny_delete {
        problems.push("deny_delete is off: a message can be deleted".to_string());
    }
    if !facts.deny_purge {
        problems.push("deny_purge is off: the stream can be purged".to_string());
    }
    if facts.retention != "limits" {
        problems.push(format!(
            "retention is {}: messages are removed once consumed",
            facts.retention
        ));
    }
    for (what, value) in [
        ("max_msgs", facts.max_messages),
        ("max_bytes", facts.max_bytes),
        ("max_msgs_per_subject", facts.max_messages_per_subject),
    ] {
        if value > 0 {
            problems.push(format!(
                "{what} is {value}: older messages are dropped past it"
            ));
        }
    }
    if facts.max_age_seconds > 0 {
        problems.push(format!(
            "max_age is {} s: messages expire",
            facts.max_age_seconds
        ));
    }
    if facts.allow_rollup {
        problems.push("allow_rollup is on: a rollup message purges a subject".to_string());
    }
    if facts.allow_message_ttl {
        problems.push("allow_msg_ttl is on: a message can expire by its own TTL".to_string());
    }
    let mut findings: Vec<AuditFinding> = problems
        .into_iter()
        .map(|reason| AuditFinding {
            class: Class::Integrity,
            check: "stream-config".into(),
            sequence: None,
            subject: None,
            event_id: None,
            reason: format!("stream {}: {reason}", facts.name),
        })
        .collect();
    if facts.messages > 0 && facts.first_sequence != 1 {
        findings.push(AuditFinding {
            class: Class::Integrity,
            check: "first-sequence".into(),
            sequence: Some(facts.first_sequence),
            subject: None,
            event_id: None,
            reason: format!(
                "stream {} starts at sequence {}: sequences 1 to {} are gone",
                facts.name,
                facts.first_sequence,
                facts.first_sequence - 1
            ),
        });
    }
    findings
}

/// A checkpoint as it was found: where, and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FoundCheckpoint {
    /// Its sequence in the checkpoint stream (`None` for one the auditor supplied).
    pub sequence: Option<u64>,
    pub text: String,
}

/// A checkpoint that verified: its size and root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoodCheckpoint {
    pub sequence: Option<u64>,
    pub origin: String,
    pub size: u64,
    pub root: String,
    pub signed_by: Vec<String>,
}

/// The result of comparing the ledger with a checkpoint the auditor kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedResult {
    pub size: u64,
    pub root: String,
    /// The consistency proof from the trusted size to the ledger's size, verified.
    pub consistency_proof: Vec<String>,
    pub extends: bool,
}

/// Counts of what was read and what held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    pub messages: u64,
    pub accepted: u64,
    pub ignored: u64,
    pub ignored_by_check: BTreeMap<String, u64>,
    pub prompts: u64,
    pub identities: u64,
    pub tree_size: u64,
    pub root: String,
    pub origin: Option<String>,
    pub checkpoints: u64,
    pub checkpoints_verified: u64,
    pub latest_checkpoint: Option<GoodCheckpoint>,
    pub trusted: Option<TrustedResult>,
    pub findings_by_class: BTreeMap<String, u64>,
}

/// Everything `audit verify` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub scope: Option<String>,
    pub findings: Vec<AuditFinding>,
    pub summary: AuditSummary,
}

impl AuditReport {
    /// The most serious class found: trust, then integrity, then policy.
    pub fn worst(&self) -> Option<Class> {
        [Class::Trust, Class::Integrity, Class::Policy]
            .into_iter()
            .find(|c| self.findings.iter().any(|f| f.class == *c))
    }
}

/// Verifies a whole ledger, message by message, in stream order.
pub struct Auditor {
    verifier: LedgerVerifier,
    tree: Tree,
    /// The stream sequence of each leaf, in order.
    sequences: Vec<u64>,
    next: Option<u64>,
    findings: Vec<AuditFinding>,
    summary: AuditSummary,
    checkpoints: Vec<FoundCheckpoint>,
    trusted: Option<(FoundCheckpoint, Vec<NoteVerifier>)>,
    /// A selection of the ledger (an export of some prompts): no gaps or tree to check, but
    /// each message's inclusion proof against [`Auditor::proven_against`].
    selection: Option<Selection>,
}

struct Selection {
    checkpoint: FoundCheckpoint,
    /// (sequence, subject, leaf index, leaf hash, proof) of each message.
    proofs: Vec<(u64, String, u64, Hash, Vec<Hash>)>,
}

impl Default for Auditor {
    fn default() -> Self {
        Auditor::new()
    }
}

impl Auditor {
    pub fn new() -> Auditor {
        Auditor {
            verifier: LedgerVerifier::new(),
            tree: Tree::new(),
            sequences: Vec::new(),
            next: None,
            findings: Vec::new(),
            summary: AuditSummary::default(),
            checkpoints: Vec::new(),
            trusted: None,
            selection: None,
        }
    }

    /// An auditor of a selection of the ledger whose messages are each proven included in
    /// the tree of `checkpoint` ([`Auditor::selected_message`]).
    pub fn proven_against(checkpoint: FoundCheckpoint) -> Auditor {
        Auditor {
            selection: Some(Selection {
                checkpoint,
                proofs: Vec::new(),
            }),
            ..Auditor::new()
        }
    }

    /// A message of a selection, with its position in the tree and its inclusion proof.
    pub fn selected_message(
        &mut self,
        sequence: u64,
        subject: &str,
        bytes: &[u8],
        leaf_index: u64,
        proof: Vec<Hash>,
    ) {
        self.observe(sequence, subject, crate::verify::precheck(bytes));
        if let Some(sel) = &mut self.selection {
            sel.proofs.push((
                sequence,
                subject.to_string(),
                leaf_index,
                merkle::leaf_hash(bytes),
                proof,
            ));
        }
    }

    /// The stream's configuration and bounds.
    pub fn stream(&mut self, facts: &StreamFacts) {
        self.findings.extend(check_stream(facts));
        if facts.messages > 0 {
            self.next = Some(facts.first_sequence);
        }
    }

    /// The next stored message of the ledger stream.
    pub fn message(&mut self, sequence: u64, subject: &str, bytes: &[u8]) {
        self.message_prechecked(sequence, subject, crate::verify::precheck(bytes));
    }

    /// [`Auditor::message`] with [`crate::verify::precheck`] of the message's bytes computed
    /// beforehand (on another thread, say).
    pub fn message_prechecked(
        &mut self,
        sequence: u64,
        subject: &str,
        pre: crate::verify::Prechecked,
    ) {
        let expected = self.next.unwrap_or(1);
        if sequence != expected {
            let reason = if sequence > expected {
                if sequence == expected + 1 {
                    format!("sequence {expected} is missing")
                } else {
                    format!("sequences {expected} to {} are missing", sequence - 1)
                }
            } else {
                format!("sequence {sequence} came again after {}", expected - 1)
            };
            self.findings.push(AuditFinding {
                class: Class::Integrity,
                check: "gap".into(),
                sequence: Some(expected.min(sequence)),
                subject: None,
                event_id: None,
                reason,
            });
        }
        self.next = Some(sequence.max(expected) + 1);
        self.tree.push(pre.leaf);
        self.sequences.push(sequence);
        self.observe(sequence, subject, pre);
    }

    /// The event checks of one message.
    fn observe(&mut self, sequence: u64, subject: &str, pre: crate::verify::Prechecked) {
        self.summary.messages += 1;
        match self.verifier.observe_prechecked(sequence, subject, pre) {
            Verdict::Accepted(_) => self.summary.accepted += 1,
            Verdict::Ignored(f) => {
                self.summary.ignored += 1;
                *self
                    .summary
                    .ignored_by_check
                    .entry(f.check.code().to_string())
                    .or_default() += 1;
                self.findings.push(AuditFinding {
                    class: Class::of_check(f.check),
                    check: f.check.code().to_string(),
                    sequence: Some(f.sequence),
                    subject: Some(f.subject),
                    event_id: f.event_id,
                    reason: f.reason,
                });
            }
        }
    }

    /// The stream said its last sequence is `last`: messages after the last one read are gone.
    pub fn end(&mut self, last: u64) {
        let next = self.next.unwrap_or(1);
        if last >= next {
            self.findings.push(AuditFinding {
                class: Class::Integrity,
                check: "gap".into(),
                sequence: Some(next),
                subject: None,
                event_id: None,
                reason: format!(
                    "the stream's last sequence is {last} but sequences {next} to {last} could not be read"
                ),
            });
        }
    }

    /// A checkpoint from the checkpoint stream.
    pub fn checkpoint(&mut self, found: FoundCheckpoint) {
        self.checkpoints.push(found);
    }

    /// A checkpoint the auditor kept outside NATS, and the verifier keys it trusts for it
    /// (none: the notary keys of the verified roster).
    pub fn trusted_checkpoint(&mut self, text: String, keys: Vec<NoteVerifier>) {
        self.trusted = Some((
            FoundCheckpoint {
                sequence: None,
                text,
            },
            keys,
        ));
    }

    /// The verified state so far (the roster, every family).
    pub fn verifier(&self) -> &LedgerVerifier {
        &self.verifier
    }

    /// The Merkle tree over the messages read.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The stream sequence of each leaf of [`Auditor::tree`].
    pub fn sequences(&self) -> &[u64] {
        &self.sequences
    }

    /// The origin line this ledger's checkpoints carry (`None` without a roster).
    pub fn origin(&self) -> Option<String> {
        self.verifier
            .roster
            .genesis
            .as_ref()
            .map(|g| crate::names::checkpoint_origin(&g.hash))
    }

    /// Checks one checkpoint's signature and origin and its root against the tree; `None` (and
    /// findings) when it does not hold.
    fn check_checkpoint(
        &self,
        found: &FoundCheckpoint,
        keys: Option<&[NoteVerifier]>,
        findings: &mut Vec<AuditFinding>,
        check: &str,
    ) -> Option<GoodCheckpoint> {
        let finding = |reason: String| AuditFinding {
            class: Class::Trust,
            check: check.to_string(),
            sequence: found.sequence,
            subject: found
                .sequence
                .map(|_| crate::names::CHECKPOINT_SUBJECT.to_string()),
            event_id: None,
            reason,
        };
        let cp = match Checkpoint::of_note(&found.text) {
            Ok(cp) => cp,
            Err(e @ note::NoteError::Malformed { .. }) => {
                findings.push(finding(format!("not a signed note: {e}")));
                return None;
            }
            Err(e) => {
                findings.push(finding(format!("not a checkpoint: {e}")));
                return None;
            }
        };
        let verifiers = match keys {
            Some(k) if !k.is_empty() => k.to_vec(),
            _ => notary_verifiers(&self.verifier.roster, cp.size),
        };
        let opened = match note::open(&found.text, &verifiers) {
            Ok(o) => o,
            Err(e) => {
                findings.push(finding(format!(
                    "checkpoint of size {}: {e} (keys tried: {})",
                    cp.size,
                    if verifiers.is_empty() {
                        "none: no identity held the notary role at that size".to_string()
                    } else {
                        verifiers
                            .iter()
                            .map(|v| v.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
                return None;
            }
        };
        if let Some(origin) = self.origin() {
            if cp.origin != origin {
                findings.push(finding(format!(
                    "checkpoint of size {} names origin {} but this ledger's is {origin}",
                    cp.size, cp.origin
                )));
                return None;
            }
        }
        let root = merkle::hash_to_base64(&cp.root);
        let good = GoodCheckpoint {
            sequence: found.sequence,
            origin: cp.origin.clone(),
            size: cp.size,
            root: root.clone(),
            signed_by: opened.verified_by,
        };
        if self.selection.is_some() {
            return Some(good);
        }
        if cp.size > self.tree.size() {
            findings.push(finding(format!(
                "a checkpoint signed for {} messages, but the ledger has {}: it was truncated after the checkpoint",
                cp.size,
                self.tree.size()
            )));
            return Some(good);
        }
        let ours = self.tree.root_at(cp.size).expect("size within the tree");
        if ours != cp.root {
            findings.push(finding(format!(
                "the checkpoint's root of size {} is {root} but the ledger's first {} messages hash to {}: history was rewritten after it was signed",
                cp.size,
                cp.size,
                merkle::hash_to_base64(&ours)
            )));
        }
        Some(good)
    }

    /// Every finding and the summary.
    pub fn finish(mut self, scope: Option<&PromptName>) -> AuditReport {
        let mut findings = std::mem::take(&mut self.findings);
        let selected = self.selection.is_some();
        if let Some(sel) = self.selection.take() {
            // Kept (without the proofs) so check_checkpoint knows there is no tree to compare.
            self.selection = Some(Selection {
                checkpoint: sel.checkpoint.clone(),
                proofs: Vec::new(),
            });
            self.finish_selection(&sel, &mut findings);
        }
        // Checkpoints: each against the tree, and against each other (one root per size).
        let mut by_size: BTreeMap<u64, Hash> = BTreeMap::new();
        let mut latest: Option<GoodCheckpoint> = None;
        for found in &self.checkpoints {
            self.summary.checkpoints += 1;
            let Some(good) = self.check_checkpoint(found, None, &mut findings, "checkpoint") else {
                continue;
            };
            self.summary.checkpoints_verified += 1;
            let root = merkle::hash_from_base64(&good.root).expect("printed by us");
            match by_size.get(&good.size) {
                Some(other) if *other != root => findings.push(AuditFinding {
                    class: Class::Trust,
                    check: "split-view".into(),
                    sequence: good.sequence,
                    subject: Some(crate::names::CHECKPOINT_SUBJECT.into()),
                    event_id: None,
                    reason: format!(
                        "two signed checkpoints of size {} with different roots ({} and {}): a split view",
                        good.size,
                        merkle::hash_to_base64(other),
                        good.root
                    ),
                }),
                _ => {
                    by_size.insert(good.size, root);
                }
            }
            if latest.as_ref().is_none_or(|l| good.size >= l.size) {
                latest = Some(good);
            }
        }
        if let Some((found, keys)) = self.trusted.take() {
            let before = findings.len();
            if let Some(good) =
                self.check_checkpoint(&found, Some(&keys), &mut findings, "trusted-checkpoint")
            {
                let root = merkle::hash_from_base64(&good.root).expect("printed by us");
                if let Some(other) = by_size.get(&good.size).filter(|o| **o != root) {
                    findings.push(AuditFinding {
                        class: Class::Trust,
                        check: "split-view".into(),
                        sequence: None,
                        subject: None,
                        event_id: None,
                        reason: format!(
                            "the trusted checkpoint of size {} has root {} but the ledger's checkpoint of that size has {}: a split view",
                            good.size,
                            good.root,
                            merkle::hash_to_base64(other)
                        ),
                    });
                }
                if selected {
                    findings.push(AuditFinding {
                        class: Class::Trust,
                        check: "trusted-checkpoint".into(),
                        sequence: None,
                        subject: None,
                        event_id: None,
                        reason: "an export of a selection holds no tree to prove it extends a trusted checkpoint: export the whole ledger".into(),
                    });
                }
                let size = self.tree.size();
                let mut result = TrustedResult {
                    size: good.size,
                    root: good.root.clone(),
                    consistency_proof: Vec::new(),
                    extends: false,
                };
                if good.size <= size && findings.len() == before {
                    let proof = self
                        .tree
                        .consistency_proof(good.size, size)
                        .expect("sizes within the tree");
                    result.extends = merkle::verify_consistency(
                        good.size,
                        size,
                        &root,
                        &self.tree.root(),
                        &proof,
                    )
                    .is_ok();
                    result.consistency_proof = proof.iter().map(merkle::hash_to_base64).collect();
                }
                self.summary.trusted = Some(result);
            }
        }
        let v = &self.verifier;
        self.summary.prompts = v.families.len() as u64;
        self.summary.identities = v.roster.identities.len() as u64;
        self.summary.origin = self.origin();
        if selected {
            // A selection's tree is the checkpoint's (set by finish_selection).
            if let Some(c) = &self.summary.latest_checkpoint {
                self.summary.root = c.root.clone();
            }
        } else {
            self.summary.tree_size = self.tree.size();
            self.summary.root = merkle::hash_to_base64(&self.tree.root());
            self.summary.latest_checkpoint = latest;
        }
        if let Some(prompt) = scope {
            // The prompt's family, and everything that is not another prompt's.
            findings.retain(
                |f| match f.subject.as_deref().map(crate::names::prompt_token) {
                    Some(Some(token)) => {
                        token == prompt.as_str() || PromptName::parse(token).is_err()
                    }
                    _ => true,
                },
            );
        }
        for f in &findings {
            *self
                .summary
                .findings_by_class
                .entry(f.class.name().to_string())
                .or_default() += 1;
        }
        AuditReport {
            scope: scope.map(|p| p.to_string()),
            findings,
            summary: self.summary,
        }
    }
}

impl Auditor {
    /// A selection's checkpoint and every message's inclusion proof against it.
    fn finish_selection(&mut self, sel: &Selection, findings: &mut Vec<AuditFinding>) {
        self.summary.checkpoints += 1;
        let Some(good) = self.check_checkpoint(&sel.checkpoint, None, findings, "checkpoint")
        else {
            return;
        };
        self.summary.checkpoints_verified += 1;
        let root = merkle::hash_from_base64(&good.root).expect("printed by us");
        for (sequence, subject, leaf, hash, proof) in &sel.proofs {
            if let Err(e) = merkle::verify_inclusion(*leaf, good.size, hash, proof, &root) {
                findings.push(AuditFinding {
                    class: Class::Integrity,
                    check: "inclusion".into(),
                    sequence: Some(*sequence),
                    subject: Some(subject.clone()),
                    event_id: None,
                    reason: format!(
                        "not proven included in the checkpoint of size {} as leaf {leaf}: {e}",
                        good.size
                    ),
                });
            }
        }
        self.summary.tree_size = good.size;
        self.summary.latest_checkpoint = Some(good);
    }
}

/// The format name of an evidence export.
pub const EXPORT_FORMAT: &str = "pledger-evidence/1";

/// An evidence export (`pledger audit export`): what `audit verify --export` checks with no
/// server. A complete export holds every message of the ledger (the tree is rebuilt from
/// them); a selection holds the roster, the fleet subjects and whole prompt families, each
/// message with its inclusion proof against `checkpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Export {
    pub format: String,
    pub origin: Option<String>,
    pub exported_at: crate::Timestamp,
    /// What was asked for (`--prompt`, `--release`, `--since`), as given.
    pub selection: BTreeMap<String, String>,
    pub complete: bool,
    pub stream: StreamFacts,
    /// The checkpoint a selection's proofs are against (the latest that verified).
    pub checkpoint: Option<String>,
    pub checkpoints: Vec<FoundCheckpoint>,
    pub records: Vec<ExportRecord>,
}

/// One stored message in an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExportRecord {
    pub sequence: u64,
    pub subject: String,
    pub leaf_index: u64,
    /// The stored bytes, base64.
    pub bytes: String,
    /// Its inclusion proof against the export's checkpoint (empty in a complete export).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proof: Vec<String>,
}

/// Verifies an export, as `audit verify` verifies a live ledger. `Err` when the file is not
/// an export this build reads.
pub fn verify_export(
    export: &Export,
    trusted: Option<(String, Vec<NoteVerifier>)>,
    scope: Option<&PromptName>,
) -> Result<AuditReport, String> {
    if export.format != EXPORT_FORMAT {
        return Err(format!(
            "format is `{}`, not `{EXPORT_FORMAT}`",
            export.format
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut auditor = if export.complete {
        let mut a = Auditor::new();
        a.stream(&export.stream);
        a
    } else {
        let text = export
            .checkpoint
            .clone()
            .ok_or("a selection needs the checkpoint its proofs are against")?;
        Auditor::proven_against(FoundCheckpoint {
            sequence: None,
            text,
        })
    };
    for (i, r) in export.records.iter().enumerate() {
        let bytes = b64
            .decode(&r.bytes)
            .map_err(|e| format!("records[{i}].bytes is not base64: {e}"))?;
        if export.complete {
            auditor.message(r.sequence, &r.subject, &bytes);
        } else {
            let proof = r
                .proof
                .iter()
                .map(|h| merkle::hash_from_base64(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("records[{i}].proof: {e}"))?;
            auditor.selected_message(r.sequence, &r.subject, &bytes, r.leaf_index, proof);
        }
    }
    if export.complete {
        auditor.end(export.stream.last_sequence);
        for c in &export.checkpoints {
            auditor.checkpoint(c.clone());
        }
    }
    if let Some((text, keys)) = trusted {
        auditor.trusted_checkpoint(text, keys);
    }
    Ok(auditor.finish(scope))
}

/// The keys that may sign a checkpoint of `size`: each key of an identity holding the notary
/// role, valid at the position right after the checkpoint's last message. The note's key name
/// is the identity's name.
pub fn notary_verifiers(roster: &crate::identity::Roster, size: u64) -> Vec<NoteVerifier> {
    roster
        .keys
        .keys()
        .filter_map(|fingerprint| {
            let signer = roster.signer_at(fingerprint, size + 1).ok()?;
            if !signer.roles.contains(&crate::identity::Role::Notary) {
                return None;
            }
            let key = ed25519_key(signer.key.key.ssh())?;
            Some(NoteVerifier::new(signer.identity.name.as_str(), key))
        })
        .collect()
}

/// The Ed25519 key inside an OpenSSH public key.
pub fn ed25519_key(key: &ssh_key::PublicKey) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes = key.key_data().ed25519()?.0;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}
