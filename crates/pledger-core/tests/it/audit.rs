//! The auditor over a whole signed ledger: a clean ledger verifies clean, every tampering of
//! the tamper matrix is found with its class, check and position, the notary's checkpoints
//! are the ones the auditor verifies, and an evidence export verifies with its proofs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine as _;
use pledger_core::audit::{
    self, AuditFinding, AuditReport, Auditor, Class, Export, ExportRecord, FoundCheckpoint,
    StreamFacts,
};
use pledger_core::event::{Envelope, Event};
use pledger_core::identity::{Role, RosterCommand};
use pledger_core::ids::{DurationSpec, PromptName};
use pledger_core::merkle::{self, Tree};
use pledger_core::names;
use pledger_core::note::{self, Checkpoint, NoteVerifier};
use pledger_core::verify::{event_hash, key_id, seal, EventSigner};
use pledger_core::workers::notary::{Notary, NotaryConfig, NotaryState, URGENT_KINDS};
use serde_json::Value;
use ssh_key::PrivateKey;

use crate::support::*;
use crate::trust::{begin_prompt, edited, pk, release_cycle, Entry, SignedLedger, ADMIN, MALLORY};

/// The identity the notary signs checkpoints as (its note key name).
const NOTARY: &str = "ledger-notary";
/// The prompts of the generated ledger; the first is the test prompt.
const PROMPTS: [&str; 3] = [PROMPT, "billing-router", "refund-helper"];
/// Release cycles per prompt (about 16 events each).
const CYCLES: u32 = 22;

/// A generated ledger as its server would hand it to the auditor.
struct Fixture {
    /// Every stored message, sequences 1..=n.
    messages: Vec<Entry>,
    facts: StreamFacts,
    /// Every identity's key, the notary's included.
    keys: BTreeMap<String, PrivateKey>,
    prompts: Vec<PromptName>,
    /// The sequence of the notary's enrolment.
    notary_enrolled_at: u64,
    origin: String,
    tree: Tree,
    /// The checkpoint stream: sizes n/3, 2n/3 and n, at sequences 1, 2 and 3.
    checkpoints: Vec<FoundCheckpoint>,
    /// A checkpoint of size n/6 the auditor kept outside NATS.
    trusted: String,
    trusted_size: u64,
}

impl Fixture {
    fn n(&self) -> u64 {
        self.messages.len() as u64
    }

    fn notary_key(&self) -> ed25519_dalek::SigningKey {
        self.keys[NOTARY].note_key().unwrap()
    }

    /// The notary's verifier key, as the auditor keeps it with its trusted checkpoint.
    fn notary_verifier(&self) -> NoteVerifier {
        NoteVerifier::new(NOTARY, self.notary_key().verifying_key())
    }

    fn checkpoint_text(&self, tree: &Tree, size: u64) -> String {
        signed_checkpoint(&self.origin, tree, size, NOTARY, &self.notary_key())
    }

    fn entry(&self, sequence: u64) -> &Entry {
        &self.messages[sequence as usize - 1]
    }

    fn envelope(&self, sequence: u64) -> Envelope {
        Envelope::from_json(&self.entry(sequence).bytes).unwrap()
    }

    /// The sequences of messages of `kind`.
    fn of_kind(&self, kind: &str) -> Vec<u64> {
        self.messages
            .iter()
            .filter(|m| kind_of(&m.bytes) == kind)
            .map(|m| m.sequence)
            .collect()
    }

    /// The unmodified ledger, with its checkpoints and no trusted checkpoint.
    fn scenario(&self) -> Scenario {
        Scenario {
            facts: self.facts.clone(),
            messages: self.messages.clone(),
            checkpoints: self.checkpoints.clone(),
            trusted: None,
        }
    }
}

fn kind_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes).unwrap()["kind"]
        .as_str()
        .unwrap()
        .to_string()
}

fn signed_checkpoint(
    origin: &str,
    tree: &Tree,
    size: u64,
    name: &str,
    key: &ed25519_dalek::SigningKey,
) -> String {
    let body = Checkpoint {
        origin: origin.to_string(),
        size,
        root: tree.root_at(size).unwrap(),
        extensions: Vec::new(),
    }
    .body();
    note::sign(&body, name, key).unwrap()
}

fn tree_of(messages: &[Entry]) -> Tree {
    let mut tree = Tree::new();
    for m in messages {
        tree.push_entry(&m.bytes);
    }
    tree
}

/// A correctly configured ledger stream holding `n` messages.
fn good_stream(n: u64) -> StreamFacts {
    StreamFacts {
        name: names::LEDGER_STREAM.into(),
        first_sequence: 1,
        last_sequence: n,
        messages: n,
        deny_delete: true,
        deny_purge: true,
        retention: "limits".into(),
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_age_seconds: 0,
        allow_rollup: false,
        allow_message_ttl: false,
    }
}

/// A signed ledger of more than 1,000 events across three prompts, with a notary enrolled
/// after the first release of the first prompt (so that the notary test sees urgent decisions
/// it may not sign yet), renumbered 1..=n, and its checkpoints.
fn build_fixture() -> Fixture {
    let prompts: Vec<PromptName> = PROMPTS
        .iter()
        .map(|p| PromptName::parse(p).unwrap())
        .collect();
    let mut l = SignedLedger::new();
    for p in &prompts {
        begin_prompt(&mut l, p);
    }
    let mut stable = [1u32; 3];
    release_cycle(&mut l, &prompts[0], 1, &mut stable[0]);
    l.keys.insert(NOTARY.into(), test_key(40));
    let notary_key = pk(&l.keys[NOTARY]);
    l.roster(
        ADMIN,
        RosterCommand::Enroll {
            identity: actor(NOTARY),
            keys: vec![notary_key],
            roles: [Role::Notary].into(),
        },
    );
    let notary_enrolled_at = l.entries.len() as u64;
    for k in 1..=CYCLES {
        for (i, p) in prompts.iter().enumerate() {
            if i == 0 && k == 1 {
                continue;
            }
            release_cycle(&mut l, p, k, &mut stable[i]);
        }
    }
    let messages: Vec<Entry> = l
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| Entry {
            sequence: i as u64 + 1,
            subject: e.subject.clone(),
            bytes: e.bytes.clone(),
        })
        .collect();
    let n = messages.len() as u64;
    let origin = names::checkpoint_origin(&event_hash(&messages[0].bytes));
    let tree = tree_of(&messages);
    let key = l.keys[NOTARY].note_key().unwrap();
    let checkpoints = [n / 3, 2 * n / 3, n]
        .into_iter()
        .enumerate()
        .map(|(i, size)| FoundCheckpoint {
            sequence: Some(i as u64 + 1),
            text: signed_checkpoint(&origin, &tree, size, NOTARY, &key),
        })
        .collect();
    let trusted_size = n / 6;
    let trusted = signed_checkpoint(&origin, &tree, trusted_size, NOTARY, &key);
    Fixture {
        facts: good_stream(n),
        messages,
        keys: l.keys,
        prompts,
        notary_enrolled_at,
        origin,
        tree,
        checkpoints,
        trusted,
        trusted_size,
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

/// What the auditor is given.
#[derive(Clone)]
struct Scenario {
    facts: StreamFacts,
    messages: Vec<Entry>,
    checkpoints: Vec<FoundCheckpoint>,
    trusted: Option<String>,
}

impl Scenario {
    fn audit(&self, fx: &Fixture) -> AuditReport {
        let mut a = Auditor::new();
        a.stream(&self.facts);
        for m in &self.messages {
            a.message(m.sequence, &m.subject, &m.bytes);
        }
        a.end(self.facts.last_sequence);
        for c in &self.checkpoints {
            a.checkpoint(c.clone());
        }
        if let Some(t) = &self.trusted {
            a.trusted_checkpoint(t.clone(), vec![fx.notary_verifier()]);
        }
        a.finish(None)
    }

    /// The message at `sequence` replaced by `bytes`.
    fn replace(mut self, sequence: u64, bytes: Vec<u8>) -> Scenario {
        self.messages[sequence as usize - 1].bytes = bytes;
        self
    }

    /// A message inserted at `sequence` (on `subject`), the later ones moved up by one, as the
    /// server would have numbered them.
    fn insert(mut self, sequence: u64, subject: &str, bytes: Vec<u8>) -> Scenario {
        let at = sequence as usize - 1;
        self.messages.insert(
            at,
            Entry {
                sequence,
                subject: subject.to_string(),
                bytes,
            },
        );
        for m in &mut self.messages[at + 1..] {
            m.sequence += 1;
        }
        self.facts.last_sequence += 1;
        self.facts.messages += 1;
        self
    }

    /// The message at `sequence` gone: its sequence missing, the stream's bounds unchanged.
    fn delete(mut self, sequence: u64) -> Scenario {
        self.messages.remove(sequence as usize - 1);
        self.facts.messages -= 1;
        self
    }
}

fn show(f: &AuditFinding) -> String {
    format!(
        "{} {} @{}",
        f.class.name(),
        f.check,
        f.sequence.map_or("-".into(), |s| s.to_string())
    )
}

// ---------------------------------------------------------------------------------------------
// A clean ledger
// ---------------------------------------------------------------------------------------------

#[test]
fn a_clean_ledger_verifies_clean() {
    let fx = fixture();
    let n = fx.n();
    assert!(n >= 1_000, "{n} events");
    assert!(fx.trusted_size > fx.notary_enrolled_at);
    // Every prompt has its share of events.
    for p in &fx.prompts {
        let count = fx
            .messages
            .iter()
            .filter(|m| names::prompt_token(&m.subject) == Some(p.as_str()))
            .count();
        assert!(count > 300, "{p}: {count} events");
    }
    // The stored bytes are canonical: re-serialising their JSON gives them back, so the
    // field edits of the tamper matrix change only what they edit.
    for m in &fx.messages {
        assert_eq!(edited(&m.bytes, |_| {}), m.bytes, "sequence {}", m.sequence);
    }
    let mut s = fx.scenario();
    s.trusted = Some(fx.trusted.clone());
    let report = s.audit(fx);
    assert!(
        report.findings.is_empty(),
        "{}",
        report
            .findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(report.worst(), None);
    let sum = &report.summary;
    assert_eq!(sum.messages, n);
    assert_eq!(sum.accepted, n);
    assert_eq!(sum.ignored, 0);
    assert_eq!(sum.prompts, 3);
    assert_eq!(
        sum.identities, 10,
        "the admin, the cast of 8 and the notary"
    );
    assert_eq!(sum.tree_size, n);
    assert_eq!(sum.root, merkle::hash_to_base64(&fx.tree.root()));
    assert_eq!(sum.origin.as_deref(), Some(fx.origin.as_str()));
    assert_eq!(sum.checkpoints, 3);
    assert_eq!(sum.checkpoints_verified, 3);
    let latest = sum.latest_checkpoint.as_ref().unwrap();
    assert_eq!((latest.size, latest.sequence), (n, Some(3)));
    assert_eq!(latest.signed_by, vec![NOTARY.to_string()]);
    let trusted = sum.trusted.as_ref().unwrap();
    assert_eq!(trusted.size, fx.trusted_size);
    assert!(trusted.extends);
    assert!(!trusted.consistency_proof.is_empty());
    // The consistency proof it reports verifies on its own.
    let proof: Vec<merkle::Hash> = trusted
        .consistency_proof
        .iter()
        .map(|h| merkle::hash_from_base64(h).unwrap())
        .collect();
    merkle::verify_consistency(
        fx.trusted_size,
        n,
        &merkle::hash_from_base64(&trusted.root).unwrap(),
        &fx.tree.root(),
        &proof,
    )
    .unwrap();
    assert!(sum.findings_by_class.is_empty());
}

// ---------------------------------------------------------------------------------------------
// The tamper matrix
// ---------------------------------------------------------------------------------------------

/// What a case must produce: a finding of this class, one of these checks, at this sequence;
/// or (a control) no finding at all.
#[derive(Clone, Debug)]
enum Expect {
    Finding {
        class: Class,
        checks: Vec<&'static str>,
        sequence: Option<u64>,
    },
    /// Undetectable by design: stated, so that a change in it shows.
    Clean,
}

/// Any event check of the integrity class.
const INTEGRITY_EVENT_CHECKS: [&str; 6] = [
    "decoding",
    "subject",
    "signature",
    "key",
    "chain",
    "duplicate-id",
];

fn integrity(checks: &[&'static str], sequence: u64) -> Expect {
    Expect::Finding {
        class: Class::Integrity,
        checks: checks.to_vec(),
        sequence: Some(sequence),
    }
}

fn trust(check: &'static str, sequence: Option<u64>) -> Expect {
    Expect::Finding {
        class: Class::Trust,
        checks: vec![check],
        sequence,
    }
}

struct Case {
    /// Rows of the table group cases by this.
    group: String,
    name: String,
    scenario: Box<dyn Fn(&Fixture) -> Scenario + Send + Sync>,
    expect: Expect,
}

fn case(
    group: impl Into<String>,
    name: impl Into<String>,
    expect: Expect,
    scenario: impl Fn(&Fixture) -> Scenario + Send + Sync + 'static,
) -> Case {
    Case {
        group: group.into(),
        name: name.into(),
        scenario: Box::new(scenario),
        expect,
    }
}

struct Outcome {
    /// The finding that matched, or why the case failed.
    got: Result<AuditFinding, String>,
    findings: usize,
}

fn judge(fx: &Fixture, c: &Case) -> Outcome {
    let report = (c.scenario)(fx).audit(fx);
    let listed = || {
        let mut shown: Vec<String> = report.findings.iter().take(6).map(show).collect();
        if report.findings.len() > 6 {
            shown.push(format!("... {} in all", report.findings.len()));
        }
        shown.join("; ")
    };
    let got = match &c.expect {
        Expect::Clean if report.findings.is_empty() => Err(String::new()),
        Expect::Clean => Err(format!("expected no finding, got: {}", listed())),
        Expect::Finding {
            class,
            checks,
            sequence,
        } => report
            .findings
            .iter()
            .find(|f| {
                f.class == *class && checks.contains(&f.check.as_str()) && f.sequence == *sequence
            })
            .cloned()
            .ok_or_else(|| {
                if report.findings.is_empty() {
                    "NOT DETECTED: no finding".to_string()
                } else {
                    format!("wrong finding: {}", listed())
                }
            }),
    };
    Outcome {
        got,
        findings: report.findings.len(),
    }
}

/// Changes one character of `s`: an alphanumeric one from the middle on, to the next letter
/// or digit.
fn flip_char(s: &mut String) {
    if s.is_empty() {
        s.push('x');
        return;
    }
    let chars: Vec<char> = s.chars().collect();
    let mid = chars.len() / 2;
    let at = (mid..chars.len())
        .chain(0..mid)
        .find(|i| chars[*i].is_ascii_alphanumeric())
        .unwrap_or(mid);
    let c = chars[at];
    let flipped = match c {
        '9' => '0',
        'z' => 'a',
        'Z' => 'A',
        c if c.is_ascii_alphanumeric() => (c as u8 + 1) as char,
        'x' => 'y',
        _ => 'x',
    };
    *s = chars
        .iter()
        .enumerate()
        .map(|(i, ch)| if i == at { flipped } else { *ch })
        .collect();
}

/// Changes one character of the first scalar under `v`: a letter or digit of a string, the
/// last digit of a number, a boolean. `false` when there is none (null, empty containers).
fn flip_scalar(v: &mut Value) -> bool {
    match v {
        Value::String(s) => {
            flip_char(s);
            true
        }
        Value::Number(num) => {
            let mut text = num.to_string();
            let last = text.rfind(|c: char| c.is_ascii_digit()).unwrap();
            let d = text.as_bytes()[last] - b'0';
            let nd = if d == 9 { 8 } else { d + 1 };
            text.replace_range(last..=last, &nd.to_string());
            *v = serde_json::from_str(&text).unwrap();
            true
        }
        Value::Bool(b) => {
            *b = !*b;
            true
        }
        Value::Null => false,
        Value::Array(items) => items.iter_mut().any(flip_scalar),
        Value::Object(map) => map.values_mut().any(flip_scalar),
    }
}

/// `bytes` with one byte of the value of member `key` (of the envelope, or with `in_payload`
/// of its payload) changed.
fn flip_field(bytes: &[u8], key: &str, in_payload: bool) -> Vec<u8> {
    let mut changed = false;
    let out = edited(bytes, |v| {
        let target = if in_payload {
            &mut v["payload"][key]
        } else {
            &mut v[key]
        };
        changed = flip_scalar(target);
    });
    if changed {
        return out;
    }
    // null or an empty container: flip its last byte (`null` to `nulL`, `[]` to `[}`).
    let v: Value = serde_json::from_slice(bytes).unwrap();
    let value = if in_payload {
        &v["payload"][key]
    } else {
        &v[key]
    };
    let needle = format!("\"{key}\":{}", serde_json::to_string(value).unwrap());
    let text = std::str::from_utf8(bytes).unwrap();
    let at = text.find(&needle).expect("the member is in the bytes") + needle.len() - 1;
    let mut out = bytes.to_vec();
    out[at] = match out[at] {
        b'l' => b'L',
        b']' => b'}',
        _ => b']',
    };
    out
}

/// The message nearest the middle of the ledger of each kind.
fn sample_of_each_kind(fx: &Fixture) -> Vec<u64> {
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mid = fx.n() / 2;
    for m in &fx.messages {
        let best = by_kind.entry(kind_of(&m.bytes)).or_insert(m.sequence);
        if m.sequence.abs_diff(mid) < best.abs_diff(mid) {
            *best = m.sequence;
        }
    }
    by_kind.into_values().collect()
}

/// The later event of `sequence`'s family, `ahead` events of it further on.
fn same_family_after(fx: &Fixture, sequence: u64, ahead: usize) -> u64 {
    let subject = &fx.entry(sequence).subject;
    let token = names::prompt_token(subject);
    let family = |m: &&Entry| {
        if subject == names::ROSTER_SUBJECT {
            m.subject == *subject
        } else {
            names::prompt_token(&m.subject) == token
        }
    };
    fx.messages[sequence as usize..]
        .iter()
        .filter(family)
        .nth(ahead - 1)
        .unwrap()
        .sequence
}

/// Swaps the bytes (and subjects) of two messages.
fn swapped(fx: &Fixture, a: u64, b: u64) -> Scenario {
    let mut s = fx.scenario();
    let (ea, eb) = (fx.entry(a).clone(), fx.entry(b).clone());
    s.messages[a as usize - 1] = Entry { sequence: a, ..eb };
    s.messages[b as usize - 1] = Entry { sequence: b, ..ea };
    s
}

/// `envelope` under a new event id, sealed by `key` after `prev_hash`.
fn forged(mut envelope: Envelope, id: &str, key: &PrivateKey) -> Vec<u8> {
    envelope.event_id = id.to_string();
    let prev = envelope.prev_hash.clone();
    seal(envelope, prev, key).unwrap().bytes
}

/// The ledger with the rationale of `prompt`'s first proposal changed, that event and every
/// later event of its family re-chained and re-signed by their actors' keys.
fn rewritten_history(fx: &Fixture, prompt: &PromptName) -> (Vec<Entry>, u64) {
    let in_family = |m: &Entry| names::prompt_token(&m.subject) == Some(prompt.as_str());
    let target = fx
        .messages
        .iter()
        .find(|m| in_family(m) && kind_of(&m.bytes) == "release.change_proposed")
        .unwrap()
        .sequence;
    let mut messages = fx.messages.clone();
    let mut head: Option<String> = None;
    for m in &mut messages[target as usize - 1..] {
        if !in_family(m) {
            continue;
        }
        let mut envelope = Envelope::from_json(&m.bytes).unwrap();
        if m.sequence == target {
            let Event::ChangeProposed(p) = &mut envelope.event else {
                unreachable!()
            };
            p.rationale = "nothing to see here".into();
            head = envelope.prev_hash.clone();
        }
        let key = &fx.keys[envelope.actor.as_str()];
        let sealed = seal(envelope, head.clone(), key).unwrap();
        head = Some(sealed.hash);
        m.bytes = sealed.bytes;
    }
    (messages, target)
}

/// The checkpoints of `fx` re-signed by the notary over `messages`' tree.
fn resigned_checkpoints(fx: &Fixture, messages: &[Entry]) -> Vec<FoundCheckpoint> {
    let tree = tree_of(messages);
    fx.checkpoints
        .iter()
        .map(|c| {
            let body = format!("{}\n", c.text.split_once("\n\n").unwrap().0);
            let size = Checkpoint::parse_body(&body).unwrap().size;
            FoundCheckpoint {
                sequence: c.sequence,
                text: fx.checkpoint_text(&tree, size),
            }
        })
        .collect()
}

/// The signature part (base64) of a note's first signature line, with one character changed.
fn bad_signature(text: &str) -> String {
    let (body, sig) = text.split_once("\n\n").unwrap();
    let (name, b64) = sig
        .trim_end()
        .strip_prefix(note::SIGNATURE_PREFIX)
        .unwrap()
        .split_once(' ')
        .unwrap();
    let mut b64 = b64.to_string();
    flip_char(&mut b64);
    format!("{body}\n\n{}{name} {b64}\n", note::SIGNATURE_PREFIX)
}

/// The kinds whose envelope members are each tampered with.
const ENVELOPE_SAMPLE: [&str; 10] = [
    "fleet.identity_enrolled",
    "fleet.identity_revoked",
    "prompt.registered",
    "prompt.version_published",
    "release.change_proposed",
    "release.review_submitted",
    "release.gate_decided",
    "release.stage_advanced",
    "release.rolled_back",
    "release.completed",
];

fn matrix(fx: &Fixture) -> Vec<Case> {
    let n = fx.n();
    let mut cases = Vec::new();

    // 1. One byte flipped inside each payload member of an event of every kind, and inside
    // each envelope member of ten of them (roster, prompt and release events; a family's
    // first, with a null prev_hash; the urgent decisions).
    for sequence in sample_of_each_kind(fx) {
        let v: Value = serde_json::from_slice(&fx.entry(sequence).bytes).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        let envelope_too = ENVELOPE_SAMPLE.contains(&kind.as_str());
        let mut fields: Vec<(String, bool)> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "payload" && envelope_too)
            .map(|k| (k.clone(), false))
            .collect();
        fields.extend(
            v["payload"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| (k.clone(), true)),
        );
        for (field, in_payload) in fields {
            let label = if in_payload {
                format!("payload.{field}")
            } else {
                field.clone()
            };
            cases.push(case(
                format!("flip a byte of {label}"),
                format!("flip {label} of {kind} @{sequence}"),
                integrity(&INTEGRITY_EVENT_CHECKS, sequence),
                move |fx| {
                    let bytes = flip_field(&fx.entry(sequence).bytes, &field, in_payload);
                    fx.scenario().replace(sequence, bytes)
                },
            ));
        }
    }

    // 2. Each event deleted in turn: 50 spread over the ledger, the first and the last.
    let mut deleted: BTreeSet<u64> = (1..=50).map(|j| 1 + j * (n - 2) / 51).collect();
    deleted.extend([1, n]);
    for sequence in deleted {
        cases.push(case(
            "delete an event",
            format!("delete @{sequence}"),
            integrity(&["gap"], sequence),
            move |fx| fx.scenario().delete(sequence),
        ));
    }

    // 3. Two events of one family swapped.
    let roster_a = 3;
    let mid = n / 2;
    let late = n - 40;
    for (a, ahead) in [(roster_a, 1), (mid, 1), (late, 5)] {
        let b = same_family_after(fx, a, ahead);
        cases.push(case(
            "swap two events of a family",
            format!("swap @{a} and @{b}"),
            integrity(&["chain"], a),
            move |fx| swapped(fx, a, b),
        ));
    }

    // 4. An event stored again later, the later messages renumbered.
    for (original, later) in [(mid, mid + 1), (mid, mid + 30), (1, n), (n - 1, n + 1)] {
        cases.push(case(
            "duplicate an event",
            format!("event @{original} again at @{later}"),
            integrity(&["duplicate-id", "chain"], later),
            move |fx| {
                let e = fx.entry(original).clone();
                fx.scenario().insert(later, &e.subject, e.bytes)
            },
        ));
    }

    // 5. The tail truncated by the server (its last sequence says so too).
    let k = 10;
    let truncated = move |fx: &Fixture| {
        let mut s = fx.scenario();
        s.messages.truncate((n - k) as usize);
        s.facts.last_sequence = n - k;
        s.facts.messages = n - k;
        s
    };
    cases.push(case(
        "truncate the tail (control)",
        format!("last {k} dropped, the full-size checkpoint dropped too, none kept outside"),
        Expect::Clean,
        move |fx| {
            let mut s = truncated(fx);
            s.checkpoints.pop();
            s
        },
    ));
    cases.push(case(
        "truncate the tail",
        format!("last {k} dropped, trusted full-size checkpoint"),
        trust("trusted-checkpoint", None),
        move |fx| {
            let mut s = truncated(fx);
            s.checkpoints.pop();
            s.trusted = Some(fx.checkpoints[2].text.clone());
            s
        },
    ));
    cases.push(case(
        "truncate the tail",
        format!("last {k} dropped, the stream's full-size checkpoint kept"),
        trust("checkpoint", Some(3)),
        truncated,
    ));

    // 6. Forged events, inserted before a real one with its prev_hash: an unknown key, a
    // revoked identity's key, an identity without the role.
    let published = *fx
        .of_kind("prompt.version_published")
        .iter()
        .find(|s| **s > mid)
        .unwrap();
    cases.push(case(
        "forged event",
        format!("signed by an unknown key, before @{published}"),
        integrity(&["key"], published),
        move |fx| {
            let e = fx.entry(published);
            let bytes = forged(fx.envelope(published), "evt-forged-1", &test_key(201));
            fx.scenario().insert(published, &e.subject, bytes)
        },
    ));
    cases.push(case(
        "forged event",
        format!("signed by revoked {MALLORY}, before @{published}"),
        integrity(&["key"], published),
        move |fx| {
            let e = fx.entry(published);
            let mut envelope = fx.envelope(published);
            envelope.actor = actor(MALLORY);
            let bytes = forged(envelope, "evt-forged-2", &fx.keys[MALLORY]);
            fx.scenario().insert(published, &e.subject, bytes)
        },
    ));
    cases.push(case(
        "forged event",
        format!("a version published by reviewer {PRODUCT}, before @{published}"),
        Expect::Finding {
            class: Class::Policy,
            checks: vec!["role"],
            sequence: Some(published),
        },
        move |fx| {
            let e = fx.entry(published);
            let mut envelope = fx.envelope(published);
            envelope.actor = actor(PRODUCT);
            let bytes = forged(envelope, "evt-forged-3", &fx.keys[PRODUCT]);
            fx.scenario().insert(published, &e.subject, bytes)
        },
    ));

    // 7. A signature copied from another event (by the same signer, and by another).
    let advanced = fx.of_kind("release.stage_advanced");
    let (target, same_signer) = (
        advanced[advanced.len() / 2],
        advanced[advanced.len() / 2 + 1],
    );
    let other_signer = *fx.of_kind("release.gate_decided").last().unwrap();
    for (donor, who) in [
        (same_signer, "the same signer"),
        (other_signer, "another signer"),
    ] {
        cases.push(case(
            "copy another event's signature",
            format!("@{target} with the signature of @{donor} ({who})"),
            integrity(&["signature"], target),
            move |fx| {
                let donor_sig = serde_json::from_slice::<Value>(&fx.entry(donor).bytes).unwrap()
                    ["signature"]
                    .clone();
                let bytes = edited(&fx.entry(target).bytes, |v| v["signature"] = donor_sig);
                fx.scenario().replace(target, bytes)
            },
        ));
    }

    // 8. A roster event edited: a reviewer's enrolment given the admin role.
    let bob = fx
        .of_kind("fleet.identity_enrolled")
        .into_iter()
        .find(|s| {
            fx.envelope(*s).actor.as_str() == ADMIN && {
                let v: Value = serde_json::from_slice(&fx.entry(*s).bytes).unwrap();
                v["payload"]["identity"] == PRODUCT
            }
        })
        .unwrap();
    cases.push(case(
        "edit a roster event",
        format!("{PRODUCT}'s enrolment @{bob} given the admin role"),
        integrity(&INTEGRITY_EVENT_CHECKS, bob),
        move |fx| {
            let bytes = edited(&fx.entry(bob).bytes, |v| {
                v["payload"]["roles"] = serde_json::json!(["admin"]);
            });
            fx.scenario().replace(bob, bytes)
        },
    ));

    // 9. History rewritten and re-signed, checkpoints re-signed over the new tree: the
    // stream alone cannot tell (the control); the checkpoint kept outside NATS can.
    let rewritten = move |fx: &Fixture| {
        let (messages, _) = rewritten_history(fx, &fx.prompts[1]);
        let checkpoints = resigned_checkpoints(fx, &messages);
        Scenario {
            facts: fx.facts.clone(),
            messages,
            checkpoints,
            trusted: None,
        }
    };
    cases.push(case(
        "rewrite history and re-sign (control)",
        "rewritten, re-chained, re-signed, checkpoints re-signed; nothing kept outside",
        Expect::Clean,
        rewritten,
    ));
    cases.push(case(
        "rewrite history and re-sign",
        "the same, with the original trusted checkpoint",
        trust("trusted-checkpoint", None),
        move |fx| {
            let mut s = rewritten(fx);
            s.trusted = Some(fx.trusted.clone());
            s
        },
    ));

    // 10. A split view: a second, properly signed checkpoint of size 2n/3 with another root.
    cases.push(case(
        "split view",
        format!(
            "a second checkpoint of size {} with another root, @4",
            2 * n / 3
        ),
        trust("split-view", Some(4)),
        move |fx| {
            let (messages, _) = rewritten_history(fx, &fx.prompts[1]);
            let mut s = fx.scenario();
            s.checkpoints.push(FoundCheckpoint {
                sequence: Some(4),
                text: fx.checkpoint_text(&tree_of(&messages), 2 * n / 3),
            });
            s
        },
    ));

    // 11. Checkpoints that do not verify.
    let cp = |f: fn(&Fixture) -> String| {
        move |fx: &Fixture| {
            let mut s = fx.scenario();
            s.checkpoints[1].text = f(fx);
            s
        }
    };
    cases.push(case(
        "bad checkpoint",
        "a byte of its signature flipped, @2",
        trust("checkpoint", Some(2)),
        cp(|fx| bad_signature(&fx.checkpoints[1].text)),
    ));
    cases.push(case(
        "bad checkpoint",
        format!("signed by {ADMIN} (no notary role), @2"),
        trust("checkpoint", Some(2)),
        cp(|fx| {
            let key = fx.keys[ADMIN].note_key().unwrap();
            signed_checkpoint(&fx.origin, &fx.tree, 2 * fx.n() / 3, ADMIN, &key)
        }),
    ));
    cases.push(case(
        "bad checkpoint",
        format!("signed as {NOTARY} by another key, @2"),
        trust("checkpoint", Some(2)),
        cp(|fx| {
            let key = test_key(202).note_key().unwrap();
            signed_checkpoint(&fx.origin, &fx.tree, 2 * fx.n() / 3, NOTARY, &key)
        }),
    ));
    cases.push(case(
        "bad checkpoint",
        "an ASCII hyphen instead of the em dash, @2",
        trust("checkpoint", Some(2)),
        cp(|fx| fx.checkpoints[1].text.replace(note::SIGNATURE_PREFIX, "- ")),
    ));
    cases.push(case(
        "bad checkpoint",
        "another ledger's origin, @2",
        trust("checkpoint", Some(2)),
        cp(|fx| {
            let origin = names::checkpoint_origin(&event_hash(b"another ledger"));
            signed_checkpoint(&origin, &fx.tree, 2 * fx.n() / 3, NOTARY, &fx.notary_key())
        }),
    ));

    // 12. The stream's configuration and bounds.
    let config = |f: fn(&mut StreamFacts)| {
        move |fx: &Fixture| {
            let mut s = fx.scenario();
            f(&mut s.facts);
            s
        }
    };
    let stream_config = Expect::Finding {
        class: Class::Integrity,
        checks: vec!["stream-config"],
        sequence: None,
    };
    cases.push(case(
        "stream configuration",
        "deny_delete off",
        stream_config.clone(),
        config(|f| f.deny_delete = false),
    ));
    cases.push(case(
        "stream configuration",
        "max_age 30 days",
        stream_config.clone(),
        config(|f| f.max_age_seconds = 30 * 86_400),
    ));
    cases.push(case(
        "stream configuration",
        "deny_purge off",
        stream_config,
        config(|f| f.deny_purge = false),
    ));
    cases.push(case(
        "stream configuration",
        "first_sequence 5 (1 to 4 gone)",
        Expect::Finding {
            class: Class::Integrity,
            checks: vec!["first-sequence"],
            sequence: Some(5),
        },
        |fx| {
            let mut s = fx.scenario();
            s.messages.drain(..4);
            s.facts.first_sequence = 5;
            s.facts.messages -= 4;
            s
        },
    ));

    // 13. Messages that are not this ledger's events where they are.
    cases.push(case(
        "garbage",
        format!("bytes that are no event, inserted @{mid}"),
        integrity(&["decoding"], mid),
        move |fx| {
            let subject = fx.entry(mid).subject.clone();
            fx.scenario()
                .insert(mid, &subject, b"\x00not an event\xff".to_vec())
        },
    ));
    cases.push(case(
        "wrong subject",
        format!("the event @{mid} on another prompt's subject"),
        integrity(&["subject"], mid),
        move |fx| {
            let mut s = fx.scenario();
            let other = fx
                .prompts
                .iter()
                .find(|p| names::prompt_token(&fx.entry(mid).subject) != Some(p.as_str()))
                .unwrap();
            s.messages[mid as usize - 1].subject = names::prompt_subject(other);
            s
        },
    ));
    cases
}

#[test]
fn the_tamper_matrix_is_detected_in_full() {
    let fx = fixture();
    let cases = matrix(fx);
    let started = Instant::now();
    // Two workers: each case is a full audit of the ledger.
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<(usize, Outcome)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(c) = cases.get(i) else { break };
                        done.push((i, judge(fx, c)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    outcomes.sort_by_key(|(i, _)| *i);

    // The table: one row per group, the checks that caught each.
    let mut rows: BTreeMap<usize, (String, usize, usize, BTreeMap<String, usize>)> =
        BTreeMap::new();
    let mut first_of_group: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let (mut tampered, mut detected, mut controls) = (0, 0, 0);
    for (i, outcome) in &outcomes {
        let c = &cases[*i];
        let row = *first_of_group.entry(&c.group).or_insert(*i);
        let entry = rows
            .entry(row)
            .or_insert_with(|| (c.group.clone(), 0, 0, BTreeMap::new()));
        entry.1 += 1;
        match (&c.expect, &outcome.got) {
            (Expect::Clean, Err(e)) if e.is_empty() => {
                controls += 1;
                entry.2 += 1;
                *entry.3.entry("clean, as expected".into()).or_default() += 1;
            }
            (Expect::Clean, Err(e)) => failures.push(format!("{}: {e}", c.name)),
            (Expect::Finding { .. }, Ok(f)) => {
                tampered += 1;
                detected += 1;
                entry.2 += 1;
                let key = format!("{} {}", f.class.name(), f.check);
                *entry.3.entry(key).or_default() += 1;
            }
            (Expect::Finding { .. }, Err(e)) => {
                tampered += 1;
                failures.push(format!("{}: expected {:?}: {e}", c.name, c.expect));
            }
            (Expect::Clean, Ok(_)) => unreachable!(),
        }
    }
    eprintln!(
        "\n{:<44} {:>5} {:>5}  caught by (class check ×cases)",
        "case", "cases", "ok"
    );
    for (group, total, ok, checks) in rows.values() {
        let caught = checks
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("{group:<44} {total:>5} {ok:>5}  {caught}");
    }
    eprintln!("\nthe other cases, with the finding that matched:");
    for (i, outcome) in &outcomes {
        let c = &cases[*i];
        if c.group.starts_with("flip") || c.group.starts_with("delete") {
            continue;
        }
        let got = match &outcome.got {
            Ok(f) => format!("{} (+{} more)", show(f), outcome.findings - 1),
            Err(e) if e.is_empty() => "no finding (control)".into(),
            Err(e) => e.clone(),
        };
        eprintln!("  {:<70} {got}", c.name);
    }
    let rate = 100.0 * detected as f64 / tampered as f64;
    eprintln!(
        "\n{} cases ({tampered} tamperings, {controls} controls): {detected}/{tampered} detected ({rate:.1}%) in {:.1?}",
        cases.len(),
        started.elapsed()
    );
    assert!(tampered >= 200, "{tampered} tamperings");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(detected, tampered);
}

// ---------------------------------------------------------------------------------------------
// The notary
// ---------------------------------------------------------------------------------------------

#[test]
fn the_notary_checkpoints_what_the_auditor_verifies() {
    let fx = fixture();
    let key = &fx.keys[NOTARY];
    let signing = key.note_key().unwrap();
    let mut notary = Notary::new(
        NotaryConfig::default(),
        NotaryState::default(),
        &key_id(key.public_key()),
    );
    let interval = NotaryConfig::default().every_millis;
    let mut written: Vec<FoundCheckpoint> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let (mut urgent_before_enrolment, mut urgent_within_interval, mut quiet_within_interval) =
        (0, 0, 0);
    for m in &fx.messages {
        let envelope = Envelope::from_json(&m.bytes).unwrap();
        let now = envelope.occurred_at;
        let urgent = [
            "release.gate_decided",
            "release.rollout_frozen",
            "release.rolled_back",
            "release.completed",
        ]
        .contains(&envelope.kind());
        let since_last = notary.state.last_at.map(|at| now.millis_since(at));
        notary.observe(m.sequence, &m.subject, &m.bytes);
        let due = notary.due(now);
        if m.sequence < fx.notary_enrolled_at {
            // Before the notary's key holds the role, nothing is signed, however urgent.
            assert!(
                due.is_none(),
                "a checkpoint due at {} before the notary's enrolment",
                m.sequence
            );
            assert!(notary.cannot_sign().is_some());
            urgent_before_enrolment += usize::from(urgent);
            continue;
        }
        assert_eq!(notary.cannot_sign(), None, "at {}", m.sequence);
        let within = since_last.is_some_and(|ms| ms < interval);
        if urgent {
            if due.is_none() {
                problems.push(format!(
                    "no checkpoint due right after the {} at sequence {} ({} ms after the last one)",
                    envelope.kind(),
                    m.sequence,
                    since_last.unwrap_or(-1)
                ));
            } else if within {
                urgent_within_interval += 1;
            }
        } else if within && m.sequence - notary.state.last_size < 1_000 {
            // Not urgent, not timely, not many: not due.
            assert!(
                due.is_none(),
                "a checkpoint due at {} for nothing",
                m.sequence
            );
            quiet_within_interval += 1;
        }
        if let Some(cp) = due {
            assert_eq!(cp.size, m.sequence);
            assert_eq!(cp.origin, fx.origin);
            assert_eq!(cp.root, fx.tree.root_at(cp.size).unwrap());
            written.push(FoundCheckpoint {
                sequence: Some(written.len() as u64 + 1),
                text: note::sign(&cp.body(), NOTARY, &signing).unwrap(),
            });
            notary.written(cp.size, now);
            // Nothing added since: none due, now or an hour later.
            assert!(notary.due(now).is_none());
            assert!(notary
                .due(now.plus(DurationSpec::from_millis(3_600_000)))
                .is_none());
        }
    }
    // The urgent kinds the notary knows are the ledger's kinds.
    for kind in URGENT_KINDS {
        if !fx.messages.iter().any(|m| kind_of(&m.bytes) == kind) {
            problems.push(format!(
                "URGENT_KINDS holds {kind:?}, which is no event kind of the ledger"
            ));
        }
    }
    assert!(
        urgent_before_enrolment > 0,
        "the ledger has urgent events before the notary"
    );
    assert!(quiet_within_interval > 100);
    assert!(written.len() > 10, "{} checkpoints", written.len());

    // The auditor verifies every one of them.
    let mut s = fx.scenario();
    s.checkpoints = written.clone();
    let report = s.audit(fx);
    assert!(
        report.findings.is_empty(),
        "{}",
        report
            .findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(report.summary.checkpoints_verified, written.len() as u64);
    eprintln!(
        "the notary wrote {} checkpoints over {} messages ({urgent_within_interval} for an urgent decision within the interval)",
        written.len(),
        fx.n()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(urgent_within_interval > 10);
}

// ---------------------------------------------------------------------------------------------
// Evidence exports
// ---------------------------------------------------------------------------------------------

fn record(fx: &Fixture, m: &Entry, proof: bool) -> ExportRecord {
    let b64 = base64::engine::general_purpose::STANDARD;
    ExportRecord {
        sequence: m.sequence,
        subject: m.subject.clone(),
        leaf_index: m.sequence - 1,
        bytes: b64.encode(&m.bytes),
        proof: if proof {
            fx.tree
                .inclusion_proof(m.sequence - 1, fx.n())
                .unwrap()
                .iter()
                .map(merkle::hash_to_base64)
                .collect()
        } else {
            Vec::new()
        },
    }
}

#[test]
fn an_export_of_a_selection_verifies_with_its_proofs() {
    let fx = fixture();
    let prompt = &fx.prompts[1];
    let full = fx.checkpoints[2].text.clone();
    let selected: Vec<ExportRecord> = fx
        .messages
        .iter()
        .filter(|m| {
            let token = names::prompt_token(&m.subject);
            token == Some("_fleet") || token == Some(prompt.as_str())
        })
        .map(|m| record(fx, m, true))
        .collect();
    assert!(selected.len() > 300);
    let selection = Export {
        format: audit::EXPORT_FORMAT.into(),
        origin: Some(fx.origin.clone()),
        exported_at: T0,
        selection: [("prompt".to_string(), prompt.to_string())].into(),
        complete: false,
        stream: fx.facts.clone(),
        checkpoint: Some(full.clone()),
        checkpoints: fx.checkpoints.clone(),
        records: selected,
    };
    let mut problems = Vec::new();
    let report = audit::verify_export(&selection, None, None).unwrap();
    if !report.findings.is_empty() {
        problems.push(format!(
            "the selection does not verify clean: {}",
            report
                .findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let sum = &report.summary;
    if sum.accepted != selection.records.len() as u64 || sum.checkpoints_verified != 1 {
        problems.push(format!(
            "the selection's summary: {} of {} accepted, {} checkpoint(s) verified",
            sum.accepted,
            selection.records.len(),
            sum.checkpoints_verified
        ));
    }
    if sum.tree_size != fx.n() || sum.latest_checkpoint.as_ref().map(|c| c.size) != Some(fx.n()) {
        problems.push(format!(
            "the selection's summary names tree size {} and latest checkpoint {:?}, not the checkpoint its proofs are against (size {})",
            sum.tree_size,
            sum.latest_checkpoint.as_ref().map(|c| c.size),
            fx.n()
        ));
    }
    // One proof hash flipped: that record is not proven included.
    let mut tampered = selection.clone();
    let at = tampered.records.len() / 2;
    let mut hash = merkle::hash_from_base64(&tampered.records[at].proof[3]).unwrap();
    hash[7] ^= 0x01;
    tampered.records[at].proof[3] = merkle::hash_to_base64(&hash);
    let report = audit::verify_export(&tampered, None, None).unwrap();
    let sequence = tampered.records[at].sequence;
    let inclusion: Vec<&AuditFinding> = report
        .findings
        .iter()
        .filter(|f| f.check == "inclusion")
        .collect();
    assert_eq!(inclusion.len(), 1, "{:?}", report.findings);
    assert_eq!(inclusion[0].class, Class::Integrity);
    assert_eq!(inclusion[0].sequence, Some(sequence));
    // A complete export: every message, no proofs; the tree is rebuilt from them.
    let complete = Export {
        selection: BTreeMap::new(),
        complete: true,
        checkpoint: None,
        records: fx.messages.iter().map(|m| record(fx, m, false)).collect(),
        ..selection
    };
    let report = audit::verify_export(
        &complete,
        Some((fx.trusted.clone(), vec![fx.notary_verifier()])),
        None,
    )
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.summary.tree_size, fx.n());
    assert_eq!(report.summary.checkpoints_verified, 3);
    assert!(report.summary.trusted.as_ref().unwrap().extends);
    // And through its JSON form, as `audit verify --export` reads it.
    let json = serde_json::to_string(&complete).unwrap();
    let back: Export = serde_json::from_str(&json).unwrap();
    assert_eq!(back, complete);
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
