//! Signed, chained events and the readers' checks: the roster's rules, admission, and a
//! mutation test over a generated, signed ledger of more than 1,000 events.

use std::collections::{BTreeMap, BTreeSet};

use pledger_core::event::{CaseSource, Envelope, Event, EventMeta, Notice, ReviewLayer};
use pledger_core::identity::{PublicKey, Role, Roster, RosterCommand};
use pledger_core::ids::{Actor, DurationSpec, PromptName, Timestamp};
use pledger_core::names::subject_for;
use pledger_core::verify::{
    admit, event_hash, precheck_all, seal, signing_bytes, Check, EventIdDigests, LedgerVerifier,
    Verdict, SIGNATURE_BATCH,
};
use pledger_core::{decide, Command, Context, Rule};
use ssh_key::PrivateKey;

use crate::support::*;

use ReviewLayer::{Product, Technical};

pub fn pk(key: &PrivateKey) -> PublicKey {
    PublicKey::from_ssh(key.public_key().clone()).unwrap()
}

pub const ADMIN: &str = "root-admin";
pub const MONITOR: &str = "canary-monitor";
pub const VIEWER: &str = "viewer";
pub const MALLORY: &str = "mallory";

/// The cast, their key seeds and roles.
fn cast() -> Vec<(&'static str, u8, Vec<Role>)> {
    vec![
        (AUTHOR, 2, vec![Role::Author, Role::Reviewer]),
        (PRODUCT, 3, vec![Role::Reviewer]),
        (TECH, 4, vec![Role::Reviewer]),
        (CI, 5, vec![Role::Ci]),
        (
            OPS,
            6,
            vec![Role::ReleaseManager, Role::Oncall, Role::Admin],
        ),
        (MONITOR, 7, vec![Role::Worker]),
        (VIEWER, 8, vec![Role::Auditor]),
        (MALLORY, 9, vec![Role::Author, Role::Reviewer]),
    ]
}

/// One stored message.
#[derive(Clone, Debug)]
pub struct Entry {
    pub sequence: u64,
    pub subject: String,
    pub bytes: Vec<u8>,
}

/// A ledger written the way the edges write it: decide on the verified state, seal with the
/// family's head, append. Sequences step by 100 so tampered copies can be slotted in between.
pub struct SignedLedger {
    pub entries: Vec<Entry>,
    pub verifier: LedgerVerifier,
    pub keys: BTreeMap<String, PrivateKey>,
    pub now: Timestamp,
    ids: u64,
}

impl SignedLedger {
    pub fn new() -> SignedLedger {
        let mut l = SignedLedger {
            entries: Vec::new(),
            verifier: LedgerVerifier::new(),
            keys: BTreeMap::new(),
            now: T0,
            ids: 0,
        };
        l.keys.insert(ADMIN.into(), test_key(1));
        let admin_key = pk(&l.keys[ADMIN]);
        l.roster(
            ADMIN,
            RosterCommand::Enroll {
                identity: actor(ADMIN),
                keys: vec![admin_key],
                roles: [Role::Admin].into(),
            },
        );
        for (name, seed, roles) in cast() {
            l.keys.insert(name.into(), test_key(seed));
            let key = pk(&l.keys[name]);
            l.roster(
                ADMIN,
                RosterCommand::Enroll {
                    identity: actor(name),
                    keys: vec![key],
                    roles: roles.into_iter().collect(),
                },
            );
        }
        l.roster(
            ADMIN,
            RosterCommand::Revoke {
                identity: actor(MALLORY),
                reason: "left the company".into(),
            },
        );
        l
    }

    pub fn roles(&self, who: &str) -> BTreeSet<Role> {
        self.verifier
            .roster
            .identities
            .get(&actor(who))
            .map(|i| i.roles.clone())
            .unwrap_or_default()
    }

    pub fn envelope(&mut self, who: &str, event: Event) -> Envelope {
        self.ids += 1;
        self.now = self.now.plus(DurationSpec::from_millis(1_000));
        Envelope::new(
            event,
            EventMeta {
                event_id: format!("evt-{:06}", self.ids),
                occurred_at: self.now,
                actor: actor(who),
                causation_id: None,
                correlation_id: format!("cmd-{:06}", self.ids),
            },
        )
    }

    /// Seals and appends an envelope signed by `key`; returns what the verifier made of it.
    pub fn append_signed(&mut self, envelope: Envelope, key: &PrivateKey) -> Verdict {
        let aggregate = envelope.event.aggregate();
        let head = match aggregate.prompt() {
            Some(p) => self.verifier.family_head(p),
            None => self.verifier.fleet_head(&aggregate),
        };
        let sealed = seal(envelope, head, key).unwrap();
        let sequence = (self.entries.len() as u64 + 1) * 100;
        let subject = subject_for(&aggregate);
        let verdict = self.verifier.observe(sequence, &subject, &sealed.bytes);
        self.entries.push(Entry {
            sequence,
            subject,
            bytes: sealed.bytes,
        });
        verdict
    }

    #[track_caller]
    fn append(&mut self, who: &str, event: Event) {
        let envelope = self.envelope(who, event);
        let key = self.keys[who].clone();
        match self.append_signed(envelope, &key) {
            Verdict::Accepted(_) => {}
            Verdict::Ignored(f) => panic!("a correctly written event was ignored: {f}"),
        }
    }

    #[track_caller]
    pub fn roster(&mut self, who: &str, command: RosterCommand) {
        let events = self
            .verifier
            .roster
            .decide(&command, &actor(who), &self.roles(who))
            .unwrap();
        for e in events {
            self.append(who, e);
        }
    }

    #[track_caller]
    pub fn run(&mut self, who: &str, command: Command) {
        self.run_on(&prompt(), who, command);
    }

    /// [`SignedLedger::run`] on another prompt's family.
    #[track_caller]
    pub fn run_on(&mut self, p: &PromptName, who: &str, command: Command) {
        let ctx = Context::new(actor(who), self.roles(who), self.now);
        let fresh = pledger_core::PromptState::new(p.clone());
        let state = self
            .verifier
            .families
            .get(p)
            .map(|f| &f.state)
            .unwrap_or(&fresh);
        let events = decide(state, &command, &ctx)
            .unwrap_or_else(|r| panic!("{who} was refused {command:?}: {r}"));
        for e in events {
            self.append(who, e);
        }
    }

    pub fn state(&self) -> pledger_core::PromptState {
        self.verifier.state(&prompt())
    }
}

fn forced_advance(release: u32, from: &str) -> Command {
    Command::AdvanceStage {
        release: rid(release),
        from_stage: from.into(),
        force_reason: Some("drill".into()),
        readiness: None,
    }
}

/// `command` (built by the support helpers for the test prompt) aimed at prompt `p`'s
/// releases instead.
pub fn on_prompt(p: &PromptName, mut command: Command) -> Command {
    let fix =
        |r: &mut pledger_core::ReleaseId| *r = pledger_core::ReleaseId::new(p.clone(), r.number());
    match &mut command {
        Command::ReviseCandidate { release, .. }
        | Command::SubmitReview { release, .. }
        | Command::AttachEvalBundle { release, .. }
        | Command::AcceptTradeoff { release, .. }
        | Command::DecideGate { release }
        | Command::PlanRollout { release, .. }
        | Command::StartRollout { release, .. }
        | Command::AdvanceStage { release, .. }
        | Command::PauseRollout { release, .. }
        | Command::ResumeRollout { release }
        | Command::FreezeRollout { release, .. }
        | Command::CompleteRelease { release, .. }
        | Command::RaiseNotice { release, .. }
        | Command::WithdrawProposal { release, .. } => fix(release),
        Command::Rollback { release, .. } => release.iter_mut().for_each(fix),
        Command::CollectRegressionCase(case) => case.release.iter_mut().for_each(fix),
        _ => {}
    }
    command
}

/// Registers prompt `p` and adopts its first version: what [`release_cycle`] starts from.
pub fn begin_prompt(l: &mut SignedLedger, p: &PromptName) {
    l.run_on(p, AUTHOR, register());
    l.run_on(p, AUTHOR, publish(1));
    l.run_on(p, OPS, adopt(1));
}

/// A signed ledger with `cycles` releases of the test prompt: reviews, bundles, gates, plans,
/// rollouts (every fifth frozen and rolled back), regression cases and notices.
pub fn generated_ledger(cycles: u32) -> SignedLedger {
    let mut l = SignedLedger::new();
    begin_prompt(&mut l, &prompt());
    let mut stable = 1;
    for k in 1..=cycles {
        release_cycle(&mut l, &prompt(), k, &mut stable);
    }
    l
}

/// Release `k` of prompt `p` (after [`begin_prompt`] and releases 1 to k-1), from proposal
/// to completion, or to a freeze and rollback for every fifth; `stable` is the version
/// number serving before it, and after it.
pub fn release_cycle(l: &mut SignedLedger, p: &PromptName, k: u32, stable: &mut u32) {
    let n = k + 1;
    let mut run = |who: &str, command: Command| l.run_on(p, who, on_prompt(p, command));
    run(AUTHOR, publish(n));
    run(AUTHOR, propose(n));
    run(PRODUCT, approve(k, Product));
    run(TECH, approve(k, Technical));
    run(CI, attach(k, bundle(&vid(n), &vid(*stable))));
    run(CI, gate(k));
    run(OPS, plan_rollout(k, standard_plan()));
    run(
        MONITOR,
        Command::RaiseNotice {
            release: rid(k),
            notice: Notice::StaleReview {
                candidate: vid(n),
                missing: vec![],
                waiting: DurationSpec::from_millis(1),
            },
        },
    );
    run(OPS, start(k));
    let fingerprint = format!("{:012x}{:052x}", u64::from(k) * 7_919 + 1, k);
    run(
        MONITOR,
        Command::CollectRegressionCase(pledger_core::decide::NewRegressionCase {
            fingerprint: fingerprint.clone(),
            tag: pledger_core::outcome::FeedbackTag::UnexpectedRefusal,
            example: format!("example {k}"),
            version: Some(vid(n)),
            release: Some(rid(k)),
            source: CaseSource::Production,
            count: 1,
            through_sequence: u64::from(k) * 10,
        }),
    );
    run(
        MONITOR,
        Command::CollectRegressionCase(pledger_core::decide::NewRegressionCase {
            fingerprint: fingerprint.clone(),
            tag: pledger_core::outcome::FeedbackTag::UnexpectedRefusal,
            example: format!("example {k}"),
            version: Some(vid(n)),
            release: Some(rid(k)),
            source: CaseSource::Production,
            count: 3,
            through_sequence: u64::from(k) * 10 + 5,
        }),
    );
    let case = pledger_core::decide::case_id(p, &fingerprint);
    run(
        PRODUCT,
        Command::CloseRegressionCase {
            case_id: case,
            reason: "covered".into(),
        },
    );
    if k.is_multiple_of(5) {
        run(MONITOR, freeze(k));
        run(OPS, rollback_of(k));
        return;
    }
    for w in STAGES.windows(2) {
        run(OPS, forced_advance(k, w[0]));
    }
    run(MONITOR, complete(k));
    *stable = n;
}

fn value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn bytes_of(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The last string leaf under `v` (a payload value to tamper with).
fn last_string_leaf(v: &mut serde_json::Value) -> Option<&mut String> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Array(items) => items.iter_mut().rev().find_map(last_string_leaf),
        serde_json::Value::Object(map) => map.values_mut().rev().find_map(last_string_leaf),
        _ => None,
    }
}

pub fn edited(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v = value(bytes);
    edit(&mut v);
    bytes_of(&v)
}

/// The verifier's observable result: roster, the prompt's state and every head.
fn fold_of(v: &LedgerVerifier) -> (Roster, pledger_core::PromptState, Option<String>, u64) {
    let p = prompt();
    (v.roster.clone(), v.state(&p), v.family_head(&p), v.accepted)
}

/// The heads and the count of accepted events: every accepted event moves one of them.
fn heads_of(v: &LedgerVerifier) -> (Option<String>, Option<String>, u64) {
    let roster = pledger_core::event::Aggregate::Fleet(pledger_core::event::FleetTopic::Roster);
    (v.fleet_head(&roster), v.family_head(&prompt()), v.accepted)
}

#[test]
fn a_correctly_written_ledger_verifies_and_folds_like_the_decider() {
    let l = generated_ledger(3);
    let mut fresh = LedgerVerifier::new();
    for e in &l.entries {
        match fresh.observe(e.sequence, &e.subject, &e.bytes) {
            Verdict::Accepted(_) => {}
            Verdict::Ignored(f) => panic!("{f}"),
        }
    }
    assert_eq!(fold_of(&fresh), fold_of(&l.verifier));
    assert_eq!(l.state().releases.len(), 3);
    assert_eq!(
        l.state().stable,
        Some(vid(4)),
        "three completed releases moved stable to v4"
    );
    // The stored bytes are the canonical JSON with `signature` last; the signing bytes are
    // the same without it.
    let first = &l.entries[0].bytes;
    let text = std::str::from_utf8(first).unwrap();
    assert!(text.starts_with("{\"actor\":\"root-admin\",\"aggregate_id\":\"fleet:roster\""));
    let cut = text.rfind(",\"signature\":\"").unwrap();
    let envelope: Envelope = serde_json::from_slice(first).unwrap();
    assert_eq!(
        format!("{}}}", &text[..cut]).into_bytes(),
        signing_bytes(&envelope)
    );
}

#[test]
fn every_tampered_forged_or_replayed_event_is_ignored_and_changes_nothing() {
    let l = generated_ledger(84);
    assert!(l.entries.len() >= 1_000, "{} events", l.entries.len());
    let keys = l.keys.clone();
    let stranger = test_key(200);
    let mut v = LedgerVerifier::new();
    let mut ignored: BTreeMap<(&'static str, Check), usize> = BTreeMap::new();
    let mut n_mutants = 0;
    for (i, entry) in l.entries.iter().enumerate() {
        match v.observe(entry.sequence, &entry.subject, &entry.bytes) {
            Verdict::Accepted(_) => {}
            Verdict::Ignored(f) => panic!("original event {i} ignored: {f}"),
        }
        let original: Envelope = serde_json::from_slice(&entry.bytes).unwrap();
        let signer = keys[original.actor.as_str()].clone();
        let aggregate = original.event.aggregate();
        let head = match aggregate.prompt() {
            Some(p) => v.family_head(p),
            None => v.fleet_head(&aggregate),
        };
        let resealed = |mut env: Envelope, key: &PrivateKey| {
            env.signature = None;
            seal(env, head.clone(), key).unwrap().bytes
        };
        let other_member = if original.actor.as_str() == PRODUCT {
            TECH
        } else {
            PRODUCT
        };
        let mut mutants: Vec<(&'static str, Vec<u8>)> = vec![
            (
                "actor",
                edited(&entry.bytes, |v| v["actor"] = other_member.into()),
            ),
            (
                "kind",
                edited(&entry.bytes, |v| {
                    let k = v["kind"].as_str().unwrap().to_string();
                    v["kind"] = if k == "release.rollout_paused" {
                        "release.rollout_resumed"
                    } else {
                        "release.rollout_paused"
                    }
                    .into();
                }),
            ),
            (
                "payload value",
                edited(&entry.bytes, |v| {
                    last_string_leaf(&mut v["payload"]).unwrap().push('x');
                }),
            ),
            (
                "timestamp",
                edited(&entry.bytes, |v| {
                    let t = Timestamp::parse_rfc3339(v["occurred_at"].as_str().unwrap()).unwrap();
                    v["occurred_at"] = t.plus(DurationSpec::from_millis(1)).to_rfc3339().into();
                }),
            ),
            (
                "prev_hash",
                edited(&entry.bytes, |v| {
                    v["prev_hash"] = event_hash(b"another event").into();
                }),
            ),
            (
                "signature",
                edited(&entry.bytes, |v| {
                    let mut s = v["signature"].as_str().unwrap().to_string();
                    let c = if &s[60..61] == "A" { "B" } else { "A" };
                    s.replace_range(60..61, c);
                    v["signature"] = s.into();
                }),
            ),
            (
                "key id",
                edited(&entry.bytes, |v| {
                    v["key_id"] =
                        pledger_core::verify::key_id(keys[other_member].public_key()).into();
                }),
            ),
            ("unknown key", resealed(original.clone(), &stranger)),
            (
                "another identity's key",
                resealed(original.clone(), &keys[other_member]),
            ),
            ("exact replay", entry.bytes.clone()),
        ];
        if v.roster
            .identities
            .get(&actor(MALLORY))
            .is_some_and(|m| m.revoked_at.is_some())
        {
            let mut revoked = original.clone();
            revoked.actor = actor(MALLORY);
            mutants.push(("revoked key", resealed(revoked, &keys[MALLORY])));
        }
        let mut viewer = original.clone();
        viewer.actor = actor(VIEWER);
        viewer.event_id = format!("{}-by-viewer", original.event_id);
        mutants.push(("role", resealed(viewer, &keys[VIEWER])));
        let mut replay = original.clone();
        replay.event_id = format!("{}-again", original.event_id);
        mutants.push(("replay under a new id", resealed(replay, &signer)));
        // An inadmissible event, correctly signed and chained: the author reviews their own
        // release.
        let latest = v
            .families
            .get(&prompt())
            .and_then(|f| f.state.releases.values().next_back())
            .cloned();
        if let Some(r) = latest {
            let mut own = original.clone();
            own.event_id = format!("{}-own-review", original.event_id);
            own.actor = r.author.clone();
            own.event = Event::ReviewSubmitted(pledger_core::event::ReviewSubmitted {
                release: r.id.clone(),
                reviewer: r.author.clone(),
                layer: Technical,
                verdict: pledger_core::event::ReviewVerdict::Approve,
                candidate: r.candidate.clone(),
                note: None,
            });
            own.aggregate_id = own.event.aggregate().id();
            let own_head = v.family_head(&prompt());
            let bytes = seal(own, own_head, &keys[r.author.as_str()]).unwrap().bytes;
            mutants.push(("inadmissible", bytes));
        }
        // The whole fold is compared after the mutants of every 25th event; the heads and the
        // count after every mutant.
        let full = i % 25 == 0;
        let before = full.then(|| fold_of(&v));
        let heads = heads_of(&v);
        for (k, (what, bytes)) in mutants.into_iter().enumerate() {
            n_mutants += 1;
            let subject = if what == "inadmissible" {
                subject_for(&pledger_core::event::Aggregate::Release(
                    v.state(&prompt())
                        .releases
                        .values()
                        .next_back()
                        .unwrap()
                        .id
                        .clone(),
                ))
            } else {
                entry.subject.clone()
            };
            match v.observe(entry.sequence + 1 + k as u64, &subject, &bytes) {
                Verdict::Accepted(e) => {
                    panic!("the {what} mutant of event {i} ({}) was accepted", e.kind())
                }
                Verdict::Ignored(f) => *ignored.entry((what, f.check)).or_default() += 1,
            }
            assert_eq!(
                heads_of(&v),
                heads,
                "the {what} mutant of event {i} was applied"
            );
        }
        if let Some(before) = before {
            assert_eq!(
                fold_of(&v),
                before,
                "a mutant of event {i} changed the fold"
            );
        }
    }
    assert!(n_mutants > 13_000, "{n_mutants} mutants");
    // The same fold as the untampered ledger.
    assert_eq!(fold_of(&v).1, l.state());
    // Each kind of forgery is caught by the check meant for it.
    let checks_of = |what: &str| -> BTreeSet<Check> {
        ignored
            .keys()
            .filter(|(w, _)| *w == what)
            .map(|(_, c)| *c)
            .collect()
    };
    assert_eq!(checks_of("unknown key"), [Check::Key].into());
    assert_eq!(checks_of("revoked key"), [Check::Key].into());
    assert_eq!(checks_of("another identity's key"), [Check::Key].into());
    assert_eq!(checks_of("signature"), [Check::Signature].into());
    assert_eq!(checks_of("timestamp"), [Check::Signature].into());
    assert_eq!(checks_of("prev_hash"), [Check::Signature].into());
    // Before the viewer is enrolled its key is unknown; after, its role does not allow.
    assert!(checks_of("role").is_subset(&[Check::Role, Check::Key].into()));
    assert!(ignored[&("role", Check::Role)] > 1_000);
    assert_eq!(checks_of("inadmissible"), [Check::Admissibility].into());
    assert!(checks_of("exact replay").is_subset(&[Check::Chain, Check::DuplicateId].into()));
    assert!(
        checks_of("replay under a new id").is_subset(&[Check::Chain, Check::Admissibility].into())
    );
}

#[test]
fn garbage_and_unknown_kinds_are_findings_not_failures() {
    let mut l = generated_ledger(1);
    let before = l.state();
    let subject = subject_for(&pledger_core::event::Aggregate::Release(rid(1)));
    for (i, bytes) in [
        b"\x00not an event\xff".to_vec(),
        br#"{"kind":"release.no_such_kind","payload":{}}"#.to_vec(),
        b"{}".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        match l.verifier.observe(10_000 + i as u64, &subject, &bytes) {
            Verdict::Ignored(f) => {
                assert_eq!(f.check, Check::Decoding);
                assert_eq!(f.sequence, 10_000 + i as u64);
            }
            Verdict::Accepted(_) => panic!("garbage accepted"),
        }
    }
    assert_eq!(l.state(), before);
    // The family stays writable: the next event chains to the last accepted one.
    l.run(AUTHOR, publish(50));
    assert!(l.state().versions.contains_key(&vid(50)));
}

/// What a verifier made of each message, as comparable text.
fn verdicts(messages: impl Iterator<Item = (u64, Verdict)>) -> Vec<String> {
    messages
        .map(|(seq, verdict)| match verdict {
            Verdict::Accepted(e) => format!("{seq} accepted {}", e.event_id),
            Verdict::Ignored(f) => format!("{seq} ignored {} {}", f.check.code(), f.reason),
        })
        .collect()
}

#[test]
fn batched_signature_checks_give_each_message_the_verdict_it_gets_alone() {
    let l = generated_ledger(52);
    let mut entries = l.entries.clone();
    assert!(
        entries.len() > 3 * SIGNATURE_BATCH,
        "{} events",
        entries.len()
    );
    // Bad signatures on prompt events (after the roster) in some batches (one alone, two in one
    // batch, the very last message):
    // an edited event id keeps the message decodable and breaks only its signature.
    let n = entries.len();
    let bad = [20, SIGNATURE_BATCH + 1, SIGNATURE_BATCH + 7, n - 1];
    for &i in &bad {
        entries[i].bytes = edited(&entries[i].bytes, |v| v["event_id"] = "evt-edited".into());
    }
    // And garbage, which has no signature to batch.
    entries[10].bytes = b"not json".to_vec();

    let alone = {
        let mut v = LedgerVerifier::new();
        let out: Vec<_> = entries
            .iter()
            .map(|e| (e.sequence, v.observe(e.sequence, &e.subject, &e.bytes)))
            .collect();
        verdicts(out.into_iter())
    };
    let batched = {
        let all: Vec<&[u8]> = entries.iter().map(|e| &e.bytes[..]).collect();
        let pre = precheck_all(&all);
        assert_eq!(pre.len(), entries.len());
        let mut v = LedgerVerifier::new();
        let out: Vec<_> = entries
            .iter()
            .zip(pre)
            .map(|(e, p)| (e.sequence, v.observe_prechecked(e.sequence, &e.subject, p)))
            .collect();
        verdicts(out.into_iter())
    };
    assert_eq!(batched, alone);
    for &i in &bad {
        assert!(
            alone[i].contains("ignored signature the signature does not verify"),
            "{}",
            alone[i]
        );
    }
    assert!(alone[10].contains("ignored decoding"), "{}", alone[10]);
    // Every other message is accepted, the neighbours of a bad signature included (messages
    // after a bad one may be ignored only for the chain it broke, never for their signature).
    let signature_findings = alone
        .iter()
        .filter(|v| v.contains("ignored signature"))
        .count();
    assert_eq!(signature_findings, bad.len());
}

#[test]
fn an_event_on_another_subject_than_its_aggregate_is_ignored() {
    let mut l = generated_ledger(1);
    let envelope = l.envelope(
        AUTHOR,
        Event::VersionPublished(pledger_core::event::VersionPublished {
            prompt: prompt(),
            version: vid(60),
            artifact: version(60),
        }),
    );
    let head = l.verifier.family_head(&prompt());
    let sealed = seal(envelope, head, &l.keys[AUTHOR]).unwrap();
    let wrong = subject_for(&pledger_core::event::Aggregate::Release(rid(1)));
    match l.verifier.observe(99_999, &wrong, &sealed.bytes) {
        Verdict::Ignored(f) => assert_eq!(f.check, Check::Subject),
        Verdict::Accepted(_) => panic!("accepted on the wrong subject"),
    }
}

#[test]
fn a_rotated_key_signs_until_the_rotation_and_the_new_one_after() {
    let mut l = generated_ledger(1);
    let old = l.keys[AUTHOR].clone();
    let new = test_key(77);
    l.roster(
        ADMIN,
        RosterCommand::RotateKey {
            identity: actor(AUTHOR),
            key: pk(&new),
        },
    );
    let e = l.envelope(
        AUTHOR,
        Event::VersionPublished(pledger_core::event::VersionPublished {
            prompt: prompt(),
            version: vid(70),
            artifact: version(70),
        }),
    );
    match l.append_signed(e.clone(), &old) {
        Verdict::Ignored(f) => {
            assert_eq!(f.check, Check::Key);
            assert!(f.reason.contains("retired"), "{}", f.reason);
        }
        Verdict::Accepted(_) => panic!("a retired key signed"),
    }
    l.keys.insert(AUTHOR.into(), new);
    l.run(AUTHOR, publish(70));
    assert!(l.state().versions.contains_key(&vid(70)));
}

#[test]
fn roles_set_on_the_roster_take_effect_after_their_event() {
    let mut l = generated_ledger(1);
    l.roster(
        ADMIN,
        RosterCommand::SetRoles {
            identity: actor(AUTHOR),
            roles: [Role::Reviewer].into(),
        },
    );
    let state = l.state();
    let ctx = Context::new(actor(AUTHOR), l.roles(AUTHOR), l.now);
    let r = decide(&state, &publish(80), &ctx).unwrap_err();
    assert_eq!(r.rule, Rule::NotPermitted);
    assert!(r.message.contains("needs the role author"), "{}", r.message);
}

#[test]
fn roster_rules() {
    let l = generated_ledger(0);
    let roster = &l.verifier.roster;
    let admin = actor(ADMIN);
    let roles: BTreeSet<Role> = [Role::Admin].into();
    let refused = |command: RosterCommand, who: &Actor, roles: &BTreeSet<Role>| {
        roster.decide(&command, who, roles).unwrap_err()
    };
    let r = refused(
        RosterCommand::Enroll {
            identity: actor(AUTHOR),
            keys: vec![pk(&test_key(90))],
            roles: [Role::Author].into(),
        },
        &admin,
        &roles,
    );
    assert_eq!(
        (r.rule, r.rule.code()),
        (Rule::IdentityExists, "identity-exists")
    );
    let r = refused(
        RosterCommand::Enroll {
            identity: actor("newcomer"),
            keys: vec![pk(&l.keys[PRODUCT])],
            roles: [Role::Author].into(),
        },
        &admin,
        &roles,
    );
    assert_eq!((r.rule, r.rule.code()), (Rule::KeyInUse, "key-in-use"));
    assert!(r.message.contains(PRODUCT));
    let r = refused(
        RosterCommand::Revoke {
            identity: actor("nobody"),
            reason: "gone".into(),
        },
        &admin,
        &roles,
    );
    assert_eq!(
        (r.rule, r.rule.code()),
        (Rule::UnknownIdentity, "unknown-identity")
    );
    let r = refused(
        RosterCommand::Enroll {
            identity: actor("newcomer"),
            keys: vec![pk(&test_key(91))],
            roles: [Role::Author].into(),
        },
        &actor(AUTHOR),
        &[Role::Author].into(),
    );
    assert_eq!(r.rule, Rule::NotPermitted);
    // Two admins (root-admin and erin): revoking one leaves one, which cannot be revoked.
    let mut l = l;
    l.roster(
        ADMIN,
        RosterCommand::Revoke {
            identity: actor(OPS),
            reason: "moved team".into(),
        },
    );
    let r = l
        .verifier
        .roster
        .decide(
            &RosterCommand::Revoke {
                identity: admin.clone(),
                reason: "oops".into(),
            },
            &admin,
            &roles,
        )
        .unwrap_err();
    assert_eq!((r.rule, r.rule.code()), (Rule::LastAdmin, "last-admin"));
    // The first roster event must be an admin enrolling itself.
    let empty = Roster::default();
    let r = empty
        .decide(
            &RosterCommand::Enroll {
                identity: actor("someone"),
                keys: vec![pk(&test_key(92))],
                roles: [Role::Admin].into(),
            },
            &actor("else"),
            &BTreeSet::new(),
        )
        .unwrap_err();
    assert_eq!(r.rule, Rule::NotPermitted);
}

#[test]
fn admission_applies_the_deciders_rules_to_recorded_events() {
    let l = generated_ledger(1);
    let state = l.state();
    // A second product review of r1 by its technical reviewer: reviewers-must-differ.
    let mut l2 = SignedLedger::new();
    l2.run(AUTHOR, register());
    l2.run(AUTHOR, publish(1));
    l2.run(OPS, adopt(1));
    l2.run(AUTHOR, publish(2));
    l2.run(AUTHOR, propose(2));
    l2.run(TECH, approve(1, Technical));
    let env = l2.envelope(
        TECH,
        Event::ReviewSubmitted(pledger_core::event::ReviewSubmitted {
            release: rid(1),
            reviewer: actor(TECH),
            layer: Product,
            verdict: pledger_core::event::ReviewVerdict::Approve,
            candidate: vid(2),
            note: None,
        }),
    );
    let r = admit(&l2.state(), &env, &l2.roles(TECH)).unwrap_err();
    assert_eq!(r.rule, Rule::ReviewersMustDiffer);
    // An advance past the last stage, and a gate recorded by a reviewer.
    let advance = l2.envelope(
        OPS,
        Event::StageAdvanced(pledger_core::event::StageAdvanced {
            release: rid(1),
            from_stage: "all".into(),
            to_stage: "beyond".into(),
            forced: true,
            reason: Some("drill".into()),
        }),
    );
    let r = admit(&state, &advance, &l.roles(OPS)).unwrap_err();
    assert_eq!(r.rule, Rule::NotRollingOut);
    let gate_event = state.releases[&1].gate.clone().unwrap();
    let by_reviewer = l2.envelope(PRODUCT, Event::GateDecided(gate_event));
    let r = admit(&state, &by_reviewer, &l.roles(PRODUCT)).unwrap_err();
    assert_eq!(r.rule, Rule::NotPermitted);
    // A gate decision whose checks were edited (a failed gate recorded as passed) is not what
    // the decider records.
    let mut l3 = SignedLedger::new();
    l3.run(AUTHOR, register());
    l3.run(AUTHOR, publish(1));
    l3.run(OPS, adopt(1));
    l3.run(AUTHOR, publish(2));
    l3.run(AUTHOR, propose(2));
    l3.run(PRODUCT, approve(1, Product));
    l3.run(TECH, approve(1, Technical));
    l3.run(
        CI,
        attach(
            1,
            BundleBuilder::new(&vid(2), &vid(1))
                .cost(0.02, 0.01)
                .build(),
        ),
    );
    let decided = decide(
        &l3.state(),
        &gate(1),
        &Context::new(actor(CI), l3.roles(CI), l3.now),
    )
    .unwrap();
    let Event::GateDecided(mut g) = decided[0].clone() else {
        panic!()
    };
    assert!(!g.passed, "a 100% cost rise fails the gate");
    g.passed = true;
    let forged = l3.envelope(CI, Event::GateDecided(g));
    let r = admit(&l3.state(), &forged, &l3.roles(CI)).unwrap_err();
    assert_eq!(
        (r.rule, r.rule.code()),
        (Rule::Inadmissible, "inadmissible")
    );
}

#[test]
fn the_prompt_name_helpers_agree_with_aggregates() {
    let p = PromptName::parse("support-triage").unwrap();
    assert_eq!(
        subject_for(&pledger_core::event::Aggregate::Prompt(p.clone())),
        "pledger.ledger.support-triage.prompt" // tidy: wire name
    );
    assert_eq!(
        subject_for(&pledger_core::event::Aggregate::Fleet(
            pledger_core::event::FleetTopic::Roster
        )),
        "pledger.ledger._fleet.roster" // tidy: wire name
    );
}

/// A reader that resumes a family from a snapshot (its state, head and event ids, through JSON
/// and back) and then reads only the later events ends where a reader of every event ends; a
/// snapshot whose head is not the family's is caught by the next event's chain check.
#[test]
fn a_reader_resumed_from_a_snapshot_folds_like_one_that_read_everything() {
    use pledger_core::verify::{FamilySnapshot, SNAPSHOT_FORMAT};
    let l = generated_ledger(6);
    let p = prompt();
    let roster = subject_for(&pledger_core::event::Aggregate::Fleet(
        pledger_core::event::FleetTopic::Roster,
    ));
    // A reader of everything, keeping the live detail a snapshot keeps.
    let mut everything = LedgerVerifier::live();
    for e in &l.entries {
        assert!(matches!(
            everything.observe(e.sequence, &e.subject, &e.bytes),
            Verdict::Accepted(_)
        ));
    }
    // The snapshot: a reader of the family's first 30 events (and the roster before them).
    let family: Vec<&Entry> = l.entries.iter().filter(|e| e.subject != roster).collect();
    let cut = family[29].sequence;
    let mut before = LedgerVerifier::live();
    for e in l.entries.iter().filter(|e| e.sequence <= cut) {
        before.observe(e.sequence, &e.subject, &e.bytes);
    }
    let snapshot = FamilySnapshot {
        format: SNAPSHOT_FORMAT,
        ledger: "ledger-a".into(),
        prompt: p.clone(),
        through: cut,
        head: before.family_head(&p),
        head_sequence: cut,
        state: before.state(&p),
        event_ids: EventIdDigests::default().with(
            family[..30]
                .iter()
                .map(|e| {
                    serde_json::from_slice::<Envelope>(&e.bytes)
                        .unwrap()
                        .event_id
                })
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        ),
        ignored: vec![],
    };
    let snapshot: FamilySnapshot =
        serde_json::from_slice(&serde_json::to_vec(&snapshot).unwrap()).unwrap();
    // As a snapshot file stores it, and what is not one.
    let stored = snapshot.clone().encode();
    assert_eq!(FamilySnapshot::decode(&stored).unwrap(), snapshot);
    for bad in [
        &stored[..stored.len() - 1],
        &stored[1..],
        &[stored.as_slice(), b"x"].concat()[..],
        b"{}",
    ] {
        assert!(FamilySnapshot::decode(bad).is_err());
    }
    assert!(snapshot.fits("ledger-a", &p));
    assert!(!snapshot.fits("ledger-b", &p), "another ledger's snapshot");
    assert!(!snapshot.fits("ledger-a", &PromptName::parse("other").unwrap()));

    let resume = |snapshot: &FamilySnapshot| {
        let mut v = LedgerVerifier::live();
        for e in l.entries.iter().filter(|e| e.subject == roster) {
            v.observe(e.sequence, &e.subject, &e.bytes);
        }
        let rest = v.resume_family(snapshot.clone());
        assert_eq!(
            rest.state,
            pledger_core::PromptState::live(p.clone()),
            "the state moved out"
        );
        assert_eq!(rest.event_ids, snapshot.event_ids);
        let verdicts: Vec<Verdict> = family[30..]
            .iter()
            .map(|e| v.observe(e.sequence, &e.subject, &e.bytes))
            .collect();
        (v, verdicts)
    };
    let (resumed, verdicts) = resume(&snapshot);
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Accepted(_))));
    assert_eq!(fold_of(&resumed), fold_of(&everything));

    // A snapshot whose head is not the family's: the next event does not chain onto it.
    let mut stale = snapshot.clone();
    stale.head = Some(event_hash(&family[10].bytes));
    let (_, verdicts) = resume(&stale);
    match &verdicts[0] {
        Verdict::Ignored(f) => assert_eq!(f.check, Check::Chain, "{f}"),
        Verdict::Accepted(_) => panic!("an event chained onto a head that is not its family's"),
    }
    // Event ids the snapshot covers stay taken: the family's first event again is a duplicate
    // (or a chain break; either way it is ignored).
    let mut v = resume(&snapshot).0;
    assert!(matches!(
        v.observe(
            family[0].sequence + 1_000_000,
            &family[0].subject,
            &family[0].bytes
        ),
        Verdict::Ignored(_)
    ));
}

#[test]
fn a_snapshots_event_id_digests_hold_every_id_and_survive_json() {
    let first: Vec<String> = (0..500).map(|i| format!("evt-{i:04}")).collect();
    let later: Vec<String> = (500..700).map(|i| format!("evt-{i:04}")).collect();
    let digests = EventIdDigests::default().with(first.iter().map(String::as_str));
    let merged = digests.with(later.iter().map(String::as_str));
    assert_eq!(merged.len(), 700);
    assert!(first.iter().chain(&later).all(|id| merged.contains(id)));
    assert!(
        !digests.contains("evt-0600"),
        "a later id is not in the earlier set"
    );
    assert!(!merged.contains("evt-9999"));
    let json = serde_json::to_string(&merged).unwrap();
    assert_eq!(
        serde_json::from_str::<EventIdDigests>(&json).unwrap(),
        merged
    );
    assert!(
        serde_json::from_str::<EventIdDigests>("\"AAAA\"").is_err(),
        "3 bytes"
    );
}

#[test]
fn event_ids_are_kept_exactly_whatever_their_form() {
    let mut ids = pledger_core::verify::EventIds::default();
    let uuid = "018f3a2b-7c4d-7e5f-8a9b-0c1d2e3f4a5b";
    assert!(ids.insert(uuid));
    assert!(!ids.insert(uuid), "the same id twice");
    assert!(ids.contains(uuid));
    // The same 128 bits in another text are another id.
    let upper = uuid.to_ascii_uppercase();
    assert!(!ids.contains(&upper));
    assert!(ids.insert(&upper));
    // Texts that are not UUIDs, including ones of the same length.
    for other in [
        "evt-1",
        "018f3a2b-7c4d-7e5f-8a9b-0c1d2e3f4a5g",
        "018f3a2b07c4d-7e5f-8a9b-0c1d2e3f4a5b",
        "",
    ] {
        assert!(!ids.contains(other), "{other}");
        assert!(ids.insert(other), "{other}");
        assert!(ids.contains(other), "{other}");
    }
    // A UUID differing in its last digit is another id.
    assert!(!ids.contains("018f3a2b-7c4d-7e5f-8a9b-0c1d2e3f4a5c"));
    assert_eq!(ids.len(), 6);
}
