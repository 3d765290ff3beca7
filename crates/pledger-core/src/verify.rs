//! Signed, chained events, and what every reader checks before an event counts.
//!
//! # The bytes
//!
//! An event is stored as the canonical JSON of its wire envelope ([`crate::event::WireEnvelope`]):
//! object keys sorted by byte value at every depth, no insignificant whitespace, numbers and
//! strings as serde_json writes them. Sorted, `signature` is the envelope's last member. The
//! **signing bytes** are the same canonical JSON without the `signature` member, which is the
//! stored bytes with the final `,"signature":"…"` removed and the closing `}` kept: a verifier
//! in any language can cut them out of the stored bytes without re-serialising anything.
//!
//! The signature is an OpenSSH `SSHSIG` (PROTOCOL.sshsig) over the signing bytes, namespace
//! [`SIGNATURE_NAMESPACE`] (`pledger-event-v1`), hash SHA-512, by an ed25519 key; the
//! `signature` member is the base64 of its binary encoding (wrap it in `-----BEGIN SSH
//! SIGNATURE-----` lines and `ssh-keygen -Y verify -n pledger-event-v1` checks it). The
//! namespace separates it from git's (`git`) and file signatures (`file`): a signature made for
//! anything else never verifies as a pledger event.
//!
//! `key_id` is the signing key's fingerprint (`SHA256:…`); `prev_hash` is `sha256:<hex>` of the
//! stored bytes of the previous *accepted* event of the event's family (a prompt's
//! `pledger.ledger.<prompt>.>`, or the fleet subject itself), `null` for a family's first.
//! Both are signed: an event cannot be moved to another position or family, and a writer that
//! loses the conditional-append race re-reads, re-decides and signs again.
//!
//! # The checks
//!
//! [`LedgerVerifier::observe`] takes events in stream order and checks each: decoding (known
//! kind and schema version), the subject matching its aggregate, the signature by the key
//! named, that key belonging to the actor and valid at that position of the roster, the chain
//! link, a unique event id, the actor's role, and admissibility on the state before it
//! ([`admit`]: the decider's own rules). An event failing any check is not applied and comes
//! back as a [`Finding`]; nothing stops.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decide::{decide, Command, Context, NewRegressionCase, Rejection, Rule};
use crate::event::{Aggregate, Envelope, Event, FleetTopic, WireEnvelope};
use crate::identity::{check_permitted, Role, Roster, RosterCommand, RosterGenesis};
use crate::ids::PromptName;
use crate::state::{evolve, PromptState};

/// The SSH signature namespace of ledger events.
pub const SIGNATURE_NAMESPACE: &str = "pledger-event-v1";
const SIGNATURE_MEMBER: &[u8] = b",\"signature\":\"";

/// `sha256:<hex>` of an event's stored bytes: what the next event's `prev_hash` names.
pub fn event_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::artifact::hex(&Sha256::digest(bytes)))
}

/// The canonical JSON of an envelope without its `signature` member: what is signed.
pub fn signing_bytes(envelope: &Envelope) -> Vec<u8> {
    let wire = WireEnvelope::from(envelope.clone());
    let mut value = serde_json::to_value(&wire).expect("envelope serializes");
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("signature");
    }
    crate::artifact::canonical_json_of(&value).into_bytes()
}

/// Something that signs events: a local private key, or (at the edge) an ssh-agent.
pub trait EventSigner {
    fn public_key(&self) -> &ssh_key::PublicKey;
    /// An `SSHSIG` over `message` in [`SIGNATURE_NAMESPACE`].
    fn sign(&self, message: &[u8]) -> Result<ssh_key::SshSig, String>;
    /// The identity the caller says it acts as (`--as`); the key's owner must be it.
    fn claimed_identity(&self) -> Option<&crate::ids::Actor> {
        None
    }
    /// The raw Ed25519 key, for signing checkpoint notes ([`crate::note`]); `None` for a key
    /// held by an agent.
    fn note_key(&self) -> Option<ed25519_dalek::SigningKey> {
        None
    }
}

impl EventSigner for ssh_key::PrivateKey {
    fn public_key(&self) -> &ssh_key::PublicKey {
        ssh_key::PrivateKey::public_key(self)
    }
    fn sign(&self, message: &[u8]) -> Result<ssh_key::SshSig, String> {
        ssh_key::PrivateKey::sign(self, SIGNATURE_NAMESPACE, ssh_key::HashAlg::Sha512, message)
            .map_err(|e| format!("signing failed: {e}"))
    }
    fn note_key(&self) -> Option<ed25519_dalek::SigningKey> {
        let pair = self.key_data().ed25519()?;
        Some(ed25519_dalek::SigningKey::from_bytes(
            &pair.private.to_bytes(),
        ))
    }
}

/// The fingerprint events carry as `key_id`.
pub fn key_id(key: &ssh_key::PublicKey) -> String {
    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
}

/// An envelope signed and encoded: what is published, and its hash.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
    pub hash: String,
}

/// Signs `envelope` at the position after `prev_hash` and encodes it in its stored form.
pub fn seal(
    mut envelope: Envelope,
    prev_hash: Option<String>,
    signer: &dyn EventSigner,
) -> Result<Sealed, String> {
    envelope.prev_hash = prev_hash;
    envelope.key_id = Some(key_id(signer.public_key()));
    envelope.signature = None;
    let mut bytes = signing_bytes(&envelope);
    let sig = signer.sign(&bytes)?;
    let mut encoded = Vec::new();
    ssh_encoding::Encode::encode(&sig, &mut encoded).map_err(|e| e.to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(encoded);
    bytes.pop(); // the closing brace; `signature` sorts last
    bytes.extend_from_slice(SIGNATURE_MEMBER);
    bytes.extend_from_slice(b64.as_bytes());
    bytes.extend_from_slice(b"\"}");
    envelope.signature = Some(b64);
    let hash = event_hash(&bytes);
    Ok(Sealed {
        envelope,
        bytes,
        hash,
    })
}

/// Which check an ignored event failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Not an event this build reads: bytes, JSON, kind, schema version, payload.
    Decoding,
    /// The subject is not the one its aggregate is recorded on.
    Subject,
    /// No signature, a malformed one, or one that does not verify.
    Signature,
    /// The key is unknown, not valid at that position, or not the actor's.
    Key,
    /// `prev_hash` is not the hash of the family's previous accepted event.
    Chain,
    /// The event id was already used.
    DuplicateId,
    /// The actor's roles do not allow the event.
    Role,
    /// The decider would not have recorded this event on the state before it.
    Admissibility,
}

impl Check {
    pub fn code(self) -> &'static str {
        match self {
            Check::Decoding => "decoding",
            Check::Subject => "subject",
            Check::Signature => "signature",
            Check::Key => "key",
            Check::Chain => "chain",
            Check::DuplicateId => "duplicate-id",
            Check::Role => "role",
            Check::Admissibility => "admissibility",
        }
    }
}

/// An event that was not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub sequence: u64,
    pub subject: String,
    /// What the event claims, when it decoded that far.
    pub event_id: Option<String>,
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub check: Check,
    pub reason: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sequence {} on {}: {} ({})",
            self.sequence,
            self.subject,
            self.reason,
            self.check.code()
        )
    }
}

/// What a reader made of one stored message.
#[derive(Clone, Debug)]
pub enum Verdict {
    Accepted(Box<Envelope>),
    Ignored(Finding),
}

/// Splits stored bytes into the envelope and its signing bytes.
fn open(bytes: &[u8]) -> Result<(Envelope, Vec<u8>), String> {
    let envelope = Envelope::from_json(bytes).map_err(|e| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
        format!("does not decode as a ledger event ({e}): {shown:?}")
    })?;
    let Some(b64) = envelope.signature.as_deref() else {
        return Err("is not signed (it has no `signature`)".into());
    };
    let mut tail = Vec::with_capacity(b64.len() + 20);
    tail.extend_from_slice(SIGNATURE_MEMBER);
    tail.extend_from_slice(b64.as_bytes());
    tail.extend_from_slice(b"\"}");
    if !bytes.ends_with(&tail) || b64.bytes().any(|c| c == b'\\' || c == b'"') {
        return Err("`signature` is not the envelope's last member".into());
    }
    let mut signed = bytes[..bytes.len() - tail.len()].to_vec();
    signed.push(b'}');
    Ok((envelope, signed))
}

/// What can be checked of one stored message without any ledger state: that it opens (decodes
/// and has its signature last), whether its signature verifies under the key the signature
/// itself carries, and its hashes. Independent per message, so a reader may compute these on
/// several threads and feed them in stream order to [`LedgerVerifier::observe_prechecked`]; the
/// verdicts are the same as [`LedgerVerifier::observe`]'s.
pub struct Prechecked {
    opened: Result<(Envelope, Vec<u8>), String>,
    /// The key inside the signature (when it decodes) and whether the signature verifies with it.
    signature: Result<(ssh_key::public::KeyData, Result<(), String>), String>,
    /// [`event_hash`] of the stored bytes (what the next event of the family names).
    hash: String,
    /// The message's Merkle leaf ([`crate::merkle::leaf_hash`]).
    pub leaf: crate::merkle::Hash,
}

/// [`Prechecked`] of one stored message.
pub fn precheck(bytes: &[u8]) -> Prechecked {
    precheck_all(&[bytes])
        .pop()
        .expect("one message in, one out")
}

/// Signatures verified together by [`precheck_all`]: large enough that a batch costs well under
/// half of its signatures verified one by one, small enough that the one-by-one retry of a
/// batch holding a bad signature stays cheap.
pub const SIGNATURE_BATCH: usize = 256;

/// [`Prechecked`] of several stored messages, in the same order; the same results as
/// [`precheck`] of each. Ed25519 signatures (every key pledger enrols) are verified by the
/// rules of ZIP-215 ([`ed25519_zebra`]), [`SIGNATURE_BATCH`] at a time: a batch that verifies
/// proves each of its signatures valid, and one that does not is verified again signature by
/// signature, so a bad signature is found and the others still count. ZIP-215 makes the batch
/// and the single check accept exactly the same signatures, so a message's verdict never
/// depends on which messages were read with it.
pub fn precheck_all(messages: &[&[u8]]) -> Vec<Prechecked> {
    let mut pending = Vec::with_capacity(messages.len());
    let mut out = Vec::with_capacity(messages.len());
    for bytes in messages {
        let opened = open(bytes);
        let signature = match &opened {
            Ok((envelope, signed)) => embedded_signature(envelope, signed),
            Err(_) => Err(String::new()),
        };
        let hash = event_hash(bytes);
        let signature = signature.map(|(key, sig)| match sig {
            Signature::Ed25519(item) => {
                pending.push((out.len(), item));
                (key, Ok(()))
            }
            Signature::Checked(verified) => (key, verified),
        });
        out.push(Prechecked {
            opened,
            signature,
            hash,
            leaf: crate::merkle::leaf_hash(bytes),
        });
    }
    for batch in pending.chunks(SIGNATURE_BATCH) {
        let failed = verify_batch(batch, |i| out[i].hash.as_bytes());
        for (i, why) in failed {
            if let Ok((_, verified)) = &mut out[i].signature {
                *verified = Err(format!("the signature does not verify: {why}"));
            }
        }
    }
    out
}

/// A decoded signature before its check.
enum Signature {
    /// An Ed25519 SSHSIG, waiting for [`verify_batch`].
    Ed25519(ed25519_zebra::batch::Item),
    /// Another key type, already checked by `ssh_key` (or failed before its check).
    Checked(Result<(), String>),
}

fn embedded_signature(
    envelope: &Envelope,
    signed: &[u8],
) -> Result<(ssh_key::public::KeyData, Signature), String> {
    use ssh_key::public::KeyData;
    let b64 = envelope.signature.as_deref().unwrap_or_default();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the signature is not base64: {e}"))?;
    let sig = <ssh_key::SshSig as ssh_encoding::Decode>::decode(&mut raw.as_slice())
        .map_err(|e| format!("the signature is not an SSHSIG: {e}"))?;
    let key = sig.public_key().clone();
    let failed = |e: String| Signature::Checked(Err(format!("the signature does not verify: {e}")));
    if sig.namespace() != SIGNATURE_NAMESPACE {
        return Ok((key, failed(ssh_key::Error::Namespace.to_string())));
    }
    let ed25519 = match (&key, sig.signature_bytes()) {
        (KeyData::Ed25519(k), bytes) if sig.reserved().is_empty() => {
            <[u8; 64]>::try_from(bytes).ok().map(|b| (k.0, b))
        }
        _ => None,
    };
    let Some((public, bytes)) = ed25519 else {
        let verified = ssh_key::PublicKey::from(key.clone())
            .verify(SIGNATURE_NAMESPACE, signed, &sig)
            .map_err(|e| format!("the signature does not verify: {e}"));
        return Ok((key, Signature::Checked(verified)));
    };
    // What an SSHSIG signs: its own blob around the namespace and the SHA-512 of the message.
    let data = match ssh_key::SshSig::signed_data(SIGNATURE_NAMESPACE, sig.hash_alg(), signed) {
        Ok(data) => data,
        Err(e) => return Ok((key, failed(e.to_string()))),
    };
    let item = ed25519_zebra::batch::Item::from((
        ed25519_zebra::VerificationKeyBytes::from(public),
        ed25519_zebra::Signature::from_bytes(&bytes),
        &data[..],
    ));
    Ok((key, Signature::Ed25519(item)))
}

/// Verifies a batch of Ed25519 signatures (each with the index of its message); returns the
/// ones that do not verify, with the reason. The batch's random coefficients come from a
/// ChaCha20 stream seeded with the SHA-256 of every message's [`event_hash`] in the batch:
/// fixed by the batch's contents, which no signer can choose after seeing them, and the same
/// on every run (the core has no randomness of its own).
fn verify_batch<'a>(
    batch: &[(usize, ed25519_zebra::batch::Item)],
    hash_of: impl Fn(usize) -> &'a [u8],
) -> Vec<(usize, String)> {
    use rand_chacha::rand_core::SeedableRng;
    let single = |(i, item): &(usize, ed25519_zebra::batch::Item)| {
        item.clone()
            .verify_single()
            .err()
            .map(|e| (*i, e.to_string()))
    };
    if batch.len() > 1 {
        let mut seed = Sha256::new();
        let mut verifier = ed25519_zebra::batch::Verifier::new();
        for (i, item) in batch {
            seed.update(hash_of(*i));
            verifier.queue(item.clone());
        }
        let rng = rand_chacha::ChaCha20Rng::from_seed(seed.finalize().into());
        if verifier.verify(rng).is_ok() {
            return Vec::new();
        }
    }
    batch.iter().filter_map(single).collect()
}

/// The signature check of a prechecked message against the key the roster gives `key_id`.
fn check_signature(pre: &Prechecked, key: &ssh_key::PublicKey) -> Result<(), String> {
    let (embedded, verified) = pre.signature.as_ref().map_err(Clone::clone)?;
    if embedded != key.key_data() {
        return Err("the signature was made by another key than `key_id` names".into());
    }
    verified.clone()
}

/// The command a recorded prompt event answers, for [`admit`].
fn command_of(state: &PromptState, event: &Event) -> Result<Command, Rejection> {
    let forced =
        |forced: bool, reason: &Option<String>| forced.then(|| reason.clone().unwrap_or_default());
    Ok(match event {
        Event::PromptRegistered(e) => Command::RegisterPrompt {
            owner: e.owner.clone(),
        },
        Event::VersionPublished(e) => Command::PublishVersion {
            artifact: e.artifact.clone(),
        },
        Event::VersionAdopted(e) => Command::AdoptVersion {
            version: e.version.clone(),
            reason: e.reason.clone(),
        },
        Event::GatePolicySet(e) => Command::SetGatePolicy {
            policy: e.policy.clone(),
        },
        Event::ChangeProposed(e) => Command::ProposeChange {
            candidate: e.candidate.clone(),
            rationale: e.rationale.clone(),
            expected_changes: e.expected_changes.clone(),
        },
        Event::CandidateRevised(e) => Command::ReviseCandidate {
            release: e.release.clone(),
            candidate: e.candidate.clone(),
        },
        Event::ReviewSubmitted(e) => Command::SubmitReview {
            release: e.release.clone(),
            layer: e.layer,
            verdict: e.verdict,
            note: e.note.clone(),
        },
        Event::EvalBundleAttached(e) => Command::AttachEvalBundle {
            release: e.release.clone(),
            bundle: e.bundle.clone(),
        },
        Event::TradeoffAccepted(e) => Command::AcceptTradeoff {
            release: e.release.clone(),
            reason: e.reason.clone(),
        },
        Event::GateDecided(e) => Command::DecideGate {
            release: e.release.clone(),
        },
        Event::RolloutPlanned(e) => Command::PlanRollout {
            release: e.release.clone(),
            plan: e.plan.clone(),
        },
        Event::RolloutStarted(e) => Command::StartRollout {
            release: e.release.clone(),
            bucketing_salt: e.bucketing_salt.clone(),
            force_reason: forced(e.forced, &e.reason),
        },
        Event::StageAdvanced(e) => Command::AdvanceStage {
            release: e.release.clone(),
            from_stage: e.from_stage.clone(),
            force_reason: forced(e.forced, &e.reason),
            readiness: None,
        },
        Event::RolloutPaused(e) => Command::PauseRollout {
            release: e.release.clone(),
            reason: e.reason.clone(),
        },
        Event::RolloutResumed(e) => Command::ResumeRollout {
            release: e.release.clone(),
        },
        Event::RolloutFrozen(e) => Command::FreezeRollout {
            release: e.release.clone(),
            reason: e.reason.clone(),
            evidence: e.evidence.clone(),
        },
        Event::RolledBack(e) => Command::Rollback {
            release: Some(e.release.clone()),
            reason: e.reason.clone(),
        },
        Event::ReleaseCompleted(e) => Command::CompleteRelease {
            release: e.release.clone(),
            force_reason: forced(e.forced, &e.reason),
        },
        Event::ProposalWithdrawn(e) => Command::WithdrawProposal {
            release: e.release.clone(),
            reason: e.reason.clone(),
        },
        Event::RegressionCaseCollected(e) => Command::CollectRegressionCase(NewRegressionCase {
            fingerprint: e.fingerprint.clone(),
            tag: e.tag,
            example: e.example.clone(),
            version: e.version.clone(),
            release: e.release.clone(),
            source: e.source,
            count: e.count,
            through_sequence: e.through_sequence,
        }),
        Event::RegressionCaseRecurred(e) => {
            let Some(case) = state.regression_cases.get(&e.case_id) else {
                return Err(Rejection {
                    rule: Rule::UnknownRegressionCase,
                    message: format!("no regression case {} to recur", e.case_id),
                });
            };
            Command::CollectRegressionCase(NewRegressionCase {
                fingerprint: case.fingerprint.clone(),
                tag: case.tag,
                example: case.example.clone(),
                version: case.version.clone(),
                release: case.release.clone(),
                source: crate::event::CaseSource::Production,
                count: e.additional,
                through_sequence: e.through_sequence,
            })
        }
        Event::RegressionCaseClosed(e) => Command::CloseRegressionCase {
            case_id: e.case_id.clone(),
            reason: e.reason.clone(),
        },
        Event::ReleaseWindowsSet(e) => Command::SetReleaseWindows {
            windows: e.windows.clone(),
        },
        Event::NoticeRaised(e) => Command::RaiseNotice {
            release: e.release.clone(),
            notice: e.notice.clone(),
        },
        Event::FleetWindowsSet(_)
        | Event::NotificationsSet(_)
        | Event::DigestRecorded(_)
        | Event::IdentityEnrolled(_)
        | Event::IdentityKeyRotated(_)
        | Event::IdentityRolesSet(_)
        | Event::IdentityRevoked(_) => {
            return Err(Rejection {
                rule: Rule::Inadmissible,
                message: format!("{} is not an event of a prompt", event.kind()),
            })
        }
    })
}

/// Is a recorded prompt event one the decider would record, by its actor with `roles`, on the
/// state before it? The same `decide` as every command, on the command the event answers, at
/// the event's own time; what the signer attested from outside the ledger (release windows,
/// the canary monitor's counts) is taken as recorded.
pub fn admit(
    state: &PromptState,
    envelope: &Envelope,
    roles: &BTreeSet<Role>,
) -> Result<(), Rejection> {
    let command = command_of(state, &envelope.event)?;
    let mut ctx = Context::new(envelope.actor.clone(), roles.clone(), envelope.occurred_at);
    ctx.attested = true;
    let decided = decide(state, &command, &ctx)?;
    match decided.as_slice() {
        [only] if only == &envelope.event => Ok(()),
        [] => Err(Rejection {
            rule: Rule::Inadmissible,
            message: format!("repeats a {} already recorded", envelope.kind()),
        }),
        _ => Err(Rejection {
            rule: Rule::Inadmissible,
            message: format!(
                "the decider would have recorded {} instead",
                decided
                    .iter()
                    .map(|e| e.kind())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// A prompt family as verified so far.
#[derive(Clone, Debug)]
pub struct FamilyCursor {
    pub state: PromptState,
    /// Hash of the last accepted event (the next event's `prev_hash`).
    pub head: Option<String>,
}

/// A fleet subject (global windows, one week's digest) as verified so far.
#[derive(Clone, Debug, Default)]
pub struct FleetCursor {
    pub head: Option<String>,
    /// The last accepted event.
    pub last: Option<Envelope>,
}

/// The event ids a verifier has accepted, exactly, at 16 bytes per id (and the hash set's
/// slack): an id in the form
/// every writer of this ledger gives (a UUID as 36 lower-case characters with hyphens) is kept
/// as its 128 bits; any other id, as its text. Two ids are the same entry only when their
/// texts are equal.
#[derive(Clone, Debug, Default)]
pub struct EventIds {
    uuids: HashSet<u128>,
    other: HashSet<String>,
}

impl EventIds {
    /// The 128 bits of `id` when it is a UUID in canonical text (lower-case hex digits in
    /// groups of 8-4-4-4-12): the one text that maps to them.
    fn canonical_uuid(id: &str) -> Option<u128> {
        let bytes = id.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let mut value = 0u128;
        for (i, &b) in bytes.iter().enumerate() {
            let digit = match (i, b) {
                (8 | 13 | 18 | 23, b'-') => continue,
                (8 | 13 | 18 | 23, _) => return None,
                (_, b'0'..=b'9') => b - b'0',
                (_, b'a'..=b'f') => b - b'a' + 10,
                _ => return None,
            };
            value = (value << 4) | u128::from(digit);
        }
        Some(value)
    }

    pub fn contains(&self, id: &str) -> bool {
        match EventIds::canonical_uuid(id) {
            Some(v) => self.uuids.contains(&v),
            None => self.other.contains(id),
        }
    }

    /// Adds `id`; false when it was there already.
    pub fn insert(&mut self, id: &str) -> bool {
        match EventIds::canonical_uuid(id) {
            Some(v) => self.uuids.insert(v),
            None => self.other.insert(id.to_string()),
        }
    }

    pub fn len(&self) -> usize {
        self.uuids.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The format of [`FamilySnapshot`]; a snapshot of another format is discarded.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// The ids of a family's accepted events as a snapshot keeps them: the first 8 bytes of each
/// id's SHA-256 (a `u64`), sorted, stored as base64 8 bytes each. A new event whose id matches
/// one is ignored as a [`Check::DuplicateId`], and a reader that finds one after a snapshot
/// reads the family from its first event (with the ids themselves): a digest collision costs
/// a full read, never an event wrongly ignored. The sorted digests are one shared block
/// ([`crate::frozen`]): a snapshot and the readers resumed from it share it, and the next
/// snapshot merges the ids read since into a new block.
#[derive(Clone, Debug, Default)]
pub struct EventIdDigests {
    /// Sorted (two ids with one digest are two entries).
    sorted: std::sync::Arc<[u64]>,
    /// Added since the last merge, unsorted.
    recent: Vec<u64>,
}

impl EventIdDigests {
    pub fn digest(id: &str) -> u64 {
        let d = Sha256::digest(id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        u64::from_be_bytes(first)
    }
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn contains(&self, id: &str) -> bool {
        let d = EventIdDigests::digest(id);
        self.recent.contains(&d) || self.sorted.binary_search(&d).is_ok()
    }
    /// 8 bytes each, big-endian, sorted (a snapshot's stored form).
    pub fn to_raw(&self) -> Vec<u8> {
        self.merged().iter().flat_map(|d| d.to_be_bytes()).collect()
    }
    /// Every digest, sorted, in one block.
    fn merged(&self) -> std::sync::Arc<[u64]> {
        if self.recent.is_empty() {
            return self.sorted.clone();
        }
        let mut recent = self.recent.clone();
        recent.sort_unstable();
        std::sync::Arc::from(crate::frozen::merge_sorted(
            &self.sorted,
            &recent,
            |a, b| a <= b,
        ))
    }
    /// These digests and `digests`.
    fn adding(mut self, digests: impl IntoIterator<Item = u64>) -> EventIdDigests {
        for d in digests {
            self.recent.push(d);
            if self.recent.len() >= crate::frozen::TAIL_MAX {
                self.sorted = self.merged();
                self.recent.clear();
            }
        }
        self
    }
    fn from_digests(digests: Vec<u64>) -> EventIdDigests {
        let mut sorted = digests;
        sorted.sort_unstable();
        EventIdDigests {
            sorted: std::sync::Arc::from(sorted),
            recent: Vec::new(),
        }
    }
    /// From [`EventIdDigests::to_raw`].
    pub fn from_raw(raw: &[u8]) -> Result<EventIdDigests, String> {
        if !raw.len().is_multiple_of(8) {
            return Err("event id digests are 8 bytes each".into());
        }
        Ok(EventIdDigests::from_digests(
            raw.chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ))
    }
    /// These digests and those of `ids`, in one block.
    pub fn with<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> EventIdDigests {
        let added = self
            .clone()
            .adding(ids.into_iter().map(EventIdDigests::digest));
        EventIdDigests {
            sorted: added.merged(),
            recent: Vec::new(),
        }
    }
}

impl PartialEq for EventIdDigests {
    fn eq(&self, other: &EventIdDigests) -> bool {
        self.len() == other.len() && self.merged() == other.merged()
    }
}

impl Serialize for EventIdDigests {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let bytes = self.to_raw();
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for EventIdDigests {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventIdDigests, D::Error> {
        crate::state::from_str_with(d, |text| {
            use base64::Engine;
            // 32 base64 digits are 24 bytes, three digests: decoded a group at a time, with
            // no copy of the whole.
            let engine = &base64::engine::general_purpose::STANDARD;
            let mut digests = Vec::with_capacity(text.len() / 4 * 3 / 8);
            let mut group = [0u8; 24];
            for chunk in text.as_bytes().chunks(32) {
                let n = engine
                    .decode_slice(chunk, &mut group)
                    .map_err(|e| e.to_string())?;
                if n % 8 != 0 {
                    return Err("event id digests are 8 bytes each".into());
                }
                for d in group[..n].chunks_exact(8) {
                    digests.push(u64::from_be_bytes(d.try_into().expect("8 bytes")));
                }
            }
            Ok(EventIdDigests::from_digests(digests))
        })
    }
}

/// A prompt family as verified through a stream position, for a reader to resume from
/// instead of replaying the family from its first event ([`LedgerVerifier::resume_family`]).
/// It is only a cache: it names the ledger it was made on, and a reader that resumes from it
/// still checks that the family's next events chain onto `head`; one that does not link, or
/// comes from another ledger or format, is discarded and the family read from the start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilySnapshot {
    /// [`SNAPSHOT_FORMAT`] when written.
    pub format: u32,
    /// Which ledger the family was read from (its stream's identity).
    pub ledger: String,
    pub prompt: PromptName,
    /// Stream sequence of the family's last message covered, accepted or not.
    pub through: u64,
    /// Hash of the family's last accepted event.
    pub head: Option<String>,
    /// Stream sequence of that event (0: none), where a reader checks the ledger still holds it.
    pub head_sequence: u64,
    /// The family's state in [`crate::state::Detail::Live`].
    pub state: PromptState,
    /// Ids of the family's accepted events (a later event may not reuse one).
    pub event_ids: EventIdDigests,
    /// What was ignored on the family's subjects, with the reason.
    pub ignored: Vec<Finding>,
}

/// The first bytes of an encoded [`FamilySnapshot`].
const SNAPSHOT_MAGIC: &[u8] = b"PLEDGER FAMILY SNAPSHOT\n";

impl FamilySnapshot {
    /// The snapshot as a file holds it: [`SNAPSHOT_MAGIC`], then four sections, each a
    /// big-endian u64 length and its bytes: the snapshot as JSON without its three tables,
    /// then the tables as fixed-width records (version digests, ended releases, event id
    /// digests), which a reader copies instead of parsing.
    pub fn encode(mut self) -> Vec<u8> {
        let versions = std::mem::take(&mut self.state.version_order).to_raw();
        let ended = std::mem::take(&mut self.state.ended);
        let rows = ended.rows_to_raw();
        self.state.ended =
            crate::state::EndedReleases::from_raw(ended.authors().to_vec(), &[]).expect("empty");
        let ids = std::mem::take(&mut self.event_ids).to_raw();
        let json = serde_json::to_vec(&self).expect("a snapshot serializes");
        let mut out = Vec::with_capacity(
            SNAPSHOT_MAGIC.len() + 32 + json.len() + versions.len() + rows.len() + ids.len(),
        );
        out.extend_from_slice(SNAPSHOT_MAGIC);
        for section in [&json, &versions, &rows, &ids] {
            out.extend_from_slice(&(section.len() as u64).to_be_bytes());
            out.extend_from_slice(section);
        }
        out
    }

    /// From [`FamilySnapshot::encode`]; what does not decode is refused with the reason.
    pub fn decode(bytes: &[u8]) -> Result<FamilySnapshot, String> {
        let mut rest = bytes
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or("not a family snapshot")?;
        let mut sections = Vec::with_capacity(4);
        for _ in 0..4 {
            if rest.len() < 8 {
                return Err("a family snapshot cut short".into());
            }
            let (len, after) = rest.split_at(8);
            let len = u64::from_be_bytes(len.try_into().expect("8 bytes"));
            if (after.len() as u64) < len {
                return Err("a family snapshot cut short".into());
            }
            let (section, after) = after.split_at(len as usize);
            sections.push(section);
            rest = after;
        }
        if !rest.is_empty() {
            return Err("a family snapshot with bytes after its end".into());
        }
        let mut snapshot: FamilySnapshot =
            serde_json::from_slice(sections[0]).map_err(|e| e.to_string())?;
        snapshot.state.version_order = crate::state::VersionIds::from_raw(sections[1])?;
        let authors = snapshot.state.ended.authors().to_vec();
        snapshot.state.ended = crate::state::EndedReleases::from_raw(authors, sections[2])?;
        snapshot.event_ids = EventIdDigests::from_raw(sections[3])?;
        Ok(snapshot)
    }

    /// Can a reader of `prompt` on the ledger `ledger` resume from it?
    pub fn fits(&self, ledger: &str, prompt: &PromptName) -> bool {
        self.format == SNAPSHOT_FORMAT
            && self.ledger == ledger
            && &self.prompt == prompt
            && self.state.name == *prompt
            && self.state.detail == crate::state::Detail::Live
            && self.head.is_some() == (self.state.event_count > 0)
    }
}

/// Verifies ledger events in stream order and folds the accepted ones: the roster, each
/// prompt family's state and every fleet subject. Feed it every event of the families it is
/// asked about and of the roster, in stream order.
#[derive(Clone, Debug, Default)]
pub struct LedgerVerifier {
    pub roster: Roster,
    roster_head: Option<String>,
    pub families: BTreeMap<PromptName, FamilyCursor>,
    pub fleet: BTreeMap<String, FleetCursor>,
    event_ids: EventIds,
    /// Ids of resumed families' events before their snapshots.
    resumed_ids: Vec<EventIdDigests>,
    /// Events accepted so far.
    pub accepted: u64,
    /// The detail of the prompt states it folds.
    detail: crate::state::Detail,
}

impl LedgerVerifier {
    /// A verifier folding prompt states in full ([`crate::state::Detail::Full`]): what the
    /// auditor's commands, `release show` and `prompt history` read.
    pub fn new() -> LedgerVerifier {
        LedgerVerifier::default()
    }

    /// A verifier folding prompt states in [`crate::state::Detail::Live`]: what decisions
    /// read, at a size that follows a prompt's open work rather than its history.
    pub fn live() -> LedgerVerifier {
        LedgerVerifier {
            detail: crate::state::Detail::Live,
            ..LedgerVerifier::default()
        }
    }

    fn fresh_state(&self, prompt: &PromptName) -> PromptState {
        match self.detail {
            crate::state::Detail::Full => PromptState::new(prompt.clone()),
            crate::state::Detail::Live => PromptState::live(prompt.clone()),
        }
    }

    /// Takes up a family where `snapshot` left it: its state, its chain head and its event
    /// ids, as if every event it covers had been observed. Call it before any event of the
    /// family is observed; the family's next events must then chain onto the snapshot's head.
    /// Returns the snapshot with its state taken out (a fresh one in its place): the state is
    /// the family's now, and a next snapshot builds on the rest.
    pub fn resume_family(&mut self, mut snapshot: FamilySnapshot) -> FamilySnapshot {
        self.accepted += snapshot.event_ids.len() as u64;
        self.resumed_ids.push(snapshot.event_ids.clone());
        let fresh = snapshot.state.fresh(snapshot.prompt.clone());
        let state = std::mem::replace(&mut snapshot.state, fresh);
        self.families.insert(
            snapshot.prompt.clone(),
            FamilyCursor {
                state,
                head: snapshot.head.clone(),
            },
        );
        snapshot
    }

    /// The verified state of a prompt (a fresh one if no event of it was accepted).
    pub fn state(&self, prompt: &PromptName) -> PromptState {
        self.families
            .get(prompt)
            .map(|f| f.state.clone())
            .unwrap_or_else(|| self.fresh_state(prompt))
    }

    /// [`LedgerVerifier::state`] without a copy: the state moves out and the verifier keeps a
    /// fresh one in its place (its head stays). For a reader done with the family: events of
    /// it observed afterwards would be checked against the fresh state.
    pub fn take_state(&mut self, prompt: &PromptName) -> PromptState {
        let fresh = self.fresh_state(prompt);
        match self.families.get_mut(prompt) {
            Some(f) => std::mem::replace(&mut f.state, fresh),
            None => fresh,
        }
    }

    /// The hash the next event of this prompt's family must name as `prev_hash`.
    pub fn family_head(&self, prompt: &PromptName) -> Option<String> {
        self.families.get(prompt).and_then(|f| f.head.clone())
    }

    /// The hash the next event of a fleet subject (by aggregate) must name as `prev_hash`.
    pub fn fleet_head(&self, aggregate: &Aggregate) -> Option<String> {
        if *aggregate == Aggregate::Fleet(FleetTopic::Roster) {
            return self.roster_head.clone();
        }
        self.fleet.get(&aggregate.id()).and_then(|c| c.head.clone())
    }

    /// The last accepted event of a fleet subject.
    pub fn fleet_last(&self, aggregate: &Aggregate) -> Option<&Envelope> {
        self.fleet
            .get(&aggregate.id())
            .and_then(|c| c.last.as_ref())
    }

    /// Checks one stored message and applies it if every check passes.
    pub fn observe(&mut self, sequence: u64, subject: &str, bytes: &[u8]) -> Verdict {
        self.observe_prechecked(sequence, subject, precheck(bytes))
    }

    /// [`LedgerVerifier::observe`] with the state-free part computed beforehand
    /// ([`precheck`] of the message's stored bytes).
    pub fn observe_prechecked(&mut self, sequence: u64, subject: &str, pre: Prechecked) -> Verdict {
        match self.check(sequence, subject, pre) {
            Ok(envelope) => Verdict::Accepted(Box::new(envelope)),
            Err(f) => Verdict::Ignored(*f),
        }
    }

    fn check(
        &mut self,
        sequence: u64,
        subject: &str,
        mut pre: Prechecked,
    ) -> Result<Envelope, Box<Finding>> {
        let finding = |envelope: Option<&Envelope>, check: Check, reason: String| {
            Box::new(Finding {
                sequence,
                subject: subject.to_string(),
                event_id: envelope.map(|e| e.event_id.clone()),
                kind: envelope.map(|e| e.kind().to_string()),
                actor: envelope.map(|e| e.actor.to_string()),
                check,
                reason,
            })
        };
        let opened = std::mem::replace(&mut pre.opened, Err(String::new()));
        let (envelope, _) =
            opened.map_err(|r| finding(None, Check::Decoding, format!("the message {r}")))?;
        let e = Some(&envelope);
        let aggregate = envelope.event.aggregate();
        let expected = crate::names::subject_for(&aggregate);
        if expected != subject {
            return Err(finding(
                e,
                Check::Subject,
                format!("a {} event belongs on {expected}", envelope.kind()),
            ));
        }
        // The key: on the roster at this position and the actor's; the roster's first event
        // is signed by a key it enrols itself.
        let Some(key_id) = envelope.key_id.as_deref() else {
            return Err(finding(e, Check::Signature, "no key_id".into()));
        };
        let genesis_key = match (&envelope.event, self.roster.is_empty()) {
            (Event::IdentityEnrolled(enrol), true) => enrol
                .keys
                .iter()
                .find(|k| k.fingerprint() == key_id)
                .map(|k| (k.ssh().clone(), enrol.roles.iter().copied().collect())),
            _ => None,
        };
        let (key, roles): (ssh_key::PublicKey, BTreeSet<Role>) = match genesis_key {
            Some((key, roles)) => {
                let Event::IdentityEnrolled(enrol) = &envelope.event else {
                    unreachable!()
                };
                if enrol.identity != envelope.actor {
                    return Err(finding(
                        e,
                        Check::Key,
                        format!(
                            "the roster's first event must be signed by the identity it enrols ({}), not {}",
                            enrol.identity, envelope.actor
                        ),
                    ));
                }
                (key, roles)
            }
            None => {
                let signer = self.roster.signer_at(key_id, sequence).map_err(|p| {
                    finding(
                        e,
                        Check::Key,
                        format!("key {key_id} may not sign here: {p}"),
                    )
                })?;
                if signer.identity.name != envelope.actor {
                    return Err(finding(
                        e,
                        Check::Key,
                        format!(
                            "signed with {}'s key {key_id} but claims to be {}",
                            signer.identity.name, envelope.actor
                        ),
                    ));
                }
                (signer.key.key.ssh().clone(), signer.roles)
            }
        };
        check_signature(&pre, &key).map_err(|r| finding(e, Check::Signature, r))?;

        let head = match &aggregate {
            Aggregate::Fleet(FleetTopic::Roster) => self.roster_head.clone(),
            Aggregate::Fleet(_) => self.fleet.get(&aggregate.id()).and_then(|c| c.head.clone()),
            Aggregate::Prompt(p) => self.family_head(p),
            Aggregate::Release(r) => self.family_head(r.prompt()),
        };
        if envelope.prev_hash != head {
            return Err(finding(
                e,
                Check::Chain,
                format!(
                    "prev_hash is {} but the family's last accepted event is {}",
                    envelope.prev_hash.as_deref().unwrap_or("null"),
                    head.as_deref().unwrap_or("none (this would be its first)")
                ),
            ));
        }
        if self.event_ids.contains(&envelope.event_id) {
            return Err(finding(
                e,
                Check::DuplicateId,
                format!("event id {} was already used", envelope.event_id),
            ));
        }
        if self
            .resumed_ids
            .iter()
            .any(|ids| ids.contains(&envelope.event_id))
        {
            return Err(finding(
                e,
                Check::DuplicateId,
                format!(
                    "event id {} matches one used before the snapshot this read resumed from",
                    envelope.event_id
                ),
            ));
        }
        let rejected = |r: Rejection| {
            let check = if r.rule == Rule::NotPermitted {
                Check::Role
            } else {
                Check::Admissibility
            };
            finding(e, check, format!("rule `{}`: {}", r.rule, r.message))
        };
        let hash = std::mem::take(&mut pre.hash);
        match &aggregate {
            Aggregate::Fleet(FleetTopic::Roster) => {
                let command = RosterCommand::of_event(&envelope.event).expect("a roster event");
                let decided = self
                    .roster
                    .decide(&command, &envelope.actor, &roles)
                    .map_err(rejected)?;
                if decided.as_slice() != std::slice::from_ref(&envelope.event) {
                    return Err(rejected(Rejection {
                        rule: Rule::Inadmissible,
                        message: "the roster would not record this event here".into(),
                    }));
                }
                if self.roster.is_empty() {
                    self.roster.genesis = Some(RosterGenesis {
                        sequence,
                        event_id: envelope.event_id.clone(),
                        hash: hash.clone(),
                        admin: envelope.actor.clone(),
                    });
                }
                self.roster.evolve(
                    &envelope.event,
                    sequence,
                    &envelope.actor,
                    envelope.occurred_at,
                );
                self.roster_head = Some(hash);
            }
            Aggregate::Fleet(_) => {
                let cursor = self.fleet.entry(aggregate.id()).or_default();
                let last = cursor.last.as_ref().map(|l| &l.event);
                admit_fleet(last, &envelope.event, &envelope.actor, &roles).map_err(rejected)?;
                cursor.head = Some(hash);
                cursor.last = Some(envelope.clone());
            }
            Aggregate::Prompt(_) | Aggregate::Release(_) => {
                let prompt = aggregate.prompt().expect("a prompt event").clone();
                if !self.families.contains_key(&prompt) {
                    let state = self.fresh_state(&prompt);
                    self.families
                        .insert(prompt.clone(), FamilyCursor { state, head: None });
                }
                let cursor = self.families.get_mut(&prompt).expect("inserted above");
                admit(&cursor.state, &envelope, &roles).map_err(rejected)?;
                evolve(&mut cursor.state, &envelope);
                cursor.head = Some(hash);
            }
        }
        self.event_ids.insert(&envelope.event_id);
        self.accepted += 1;
        Ok(envelope)
    }
}

/// The rules of the fleet subjects, for a new event after `last` (the subject's last accepted
/// event) and for a recorded one alike: global windows by an admin, that compile and change
/// something; webhooks by an admin, valid and changing something; one digest per week, by a
/// worker, admin or release manager.
pub fn admit_fleet(
    last: Option<&Event>,
    event: &Event,
    actor: &crate::ids::Actor,
    roles: &BTreeSet<Role>,
) -> Result<(), Rejection> {
    match event {
        Event::FleetWindowsSet(e) => {
            check_permitted(actor, roles, "set-global-release-windows")?;
            if let Some(w) = &e.windows {
                w.compile().map_err(|err| Rejection {
                    rule: Rule::InvalidInput,
                    message: format!("release windows: {}: {}", err.field, err.message),
                })?;
            }
            let current = match last {
                Some(Event::FleetWindowsSet(last)) => last.windows.clone(),
                _ => None,
            };
            if current == e.windows {
                return Err(Rejection {
                    rule: Rule::Inadmissible,
                    message: "repeats the global windows already in force".into(),
                });
            }
            Ok(())
        }
        Event::NotificationsSet(e) => {
            check_permitted(actor, roles, "set-notifications")?;
            e.validate().map_err(|err| Rejection {
                rule: Rule::InvalidInput,
                message: format!("notifications: {}: {}", err.field, err.message),
            })?;
            let current = match last {
                Some(Event::NotificationsSet(last)) => last.webhooks.as_slice(),
                _ => &[],
            };
            if current == e.webhooks.as_slice() {
                return Err(Rejection {
                    rule: Rule::Inadmissible,
                    message: "repeats the webhooks already in force".into(),
                });
            }
            Ok(())
        }
        Event::DigestRecorded(_) => {
            check_permitted(actor, roles, "record-digest")?;
            if last.is_some() {
                return Err(Rejection {
                    rule: Rule::Inadmissible,
                    message: "the week already has its digest".into(),
                });
            }
            Ok(())
        }
        other => Err(Rejection {
            rule: Rule::Inadmissible,
            message: format!("{} is not a fleet event", other.kind()),
        }),
    }
}
