//! `pledger audit ...`: the auditor's tools. The checks are `pledger_core::audit`'s and
//! `pledger_core::verify`'s; this file reads, prints and writes files.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use pledger_core::audit::{
    notary_verifiers, verify_export, AuditReport, Auditor, Class, Export, ExportRecord,
    FoundCheckpoint, EXPORT_FORMAT,
};
use pledger_core::merkle::{self, Tree};
use pledger_core::names::LEDGER_SUBJECTS;
use pledger_core::note::{self, Checkpoint, NoteVerifier};
use pledger_core::routing::{resolve, routing_table_for, Arm};
use pledger_core::state::{evolve, PromptState, ReleaseStatus};
use pledger_core::{PromptName, ReleaseId, Timestamp};
use pledger_infra::ledger::RawRecord;
use pledger_infra::{Family, Recorded};
use serde_json::{json, Value};

use crate::app::{ignored_of, known_release, recorded_entry, registered, App, Conn, Report};
use crate::cli::AuditCommand;
use crate::failure::{Exit, Failure};
use crate::render;

/// Largest evidence export `audit verify --export` reads.
const MAX_EXPORT: u64 = 512 * 1024 * 1024;

impl App {
    pub(crate) async fn audit(&self, command: AuditCommand) -> Result<Report, Failure> {
        match command {
            AuditCommand::Log { prompt } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load_all(&prompt).await?)?;
                Ok(audit_log(&prompt, &family))
            }
            AuditCommand::Verify {
                prompt,
                trusted_checkpoint,
                trusted_keys,
                export,
            } => {
                let scope = prompt.as_deref().map(PromptName::parse).transpose()?;
                let trusted = trusted_input(trusted_checkpoint.as_deref(), &trusted_keys)?;
                let report = match export {
                    Some(path) => {
                        let export = read_export(&path)?;
                        verify_export(&export, trusted, scope.as_ref()).map_err(|e| {
                            Failure::usage(format!(
                                "{}: not an evidence export: {e}",
                                path.display()
                            ))
                        })?
                    }
                    None => {
                        let conn = self.connect().await?;
                        let (auditor, _) = read_ledger(&conn).await?;
                        let mut auditor = auditor;
                        if let Some((text, keys)) = trusted {
                            auditor.trusted_checkpoint(text, keys);
                        }
                        auditor.finish(scope.as_ref())
                    }
                };
                Ok(verify_report(&report))
            }
            AuditCommand::Checkpoint { out } => {
                let conn = self.connect().await?;
                let latest = latest_checkpoint(&conn).await?;
                checkpoint_report(&latest, out.as_deref())
            }
            AuditCommand::Prove { event_id } => {
                let conn = self.connect().await?;
                prove(&conn, &event_id).await
            }
            AuditCommand::Replay { prompt, at } => {
                let prompt = PromptName::parse(&prompt)?;
                let at = At::parse(&at)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load_all(&prompt).await?)?;
                Ok(replay(&family, at))
            }
            AuditCommand::Resolve {
                prompt,
                at,
                unit,
                attrs,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let at = At::parse(&at)?;
                let attributes = crate::commands::resolve::parse_attributes(&attrs)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load_all(&prompt).await?)?;
                Ok(resolve_at(&family, at, unit.as_deref(), &attributes))
            }
            AuditCommand::Export {
                prompt,
                release,
                since,
                out,
            } => {
                let mut selection = BTreeMap::new();
                let mut prompts: Option<Vec<PromptName>> = None;
                if let Some(p) = &prompt {
                    prompts = Some(vec![PromptName::parse(p)?]);
                    selection.insert("prompt".to_string(), p.clone());
                }
                if let Some(r) = &release {
                    let id = ReleaseId::parse(r)?;
                    prompts
                        .get_or_insert_with(Vec::new)
                        .push(id.prompt().clone());
                    selection.insert("release".to_string(), r.clone());
                }
                let since = since.as_deref().map(Timestamp::parse_rfc3339).transpose()?;
                if let Some(t) = since {
                    selection.insert("since".to_string(), t.to_rfc3339());
                }
                let conn = self.connect().await?;
                export(&conn, prompts, since, selection, &out).await
            }
            AuditCommand::Report { release } => {
                let id = ReleaseId::parse(&release)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load_all(id.prompt()).await?)?;
                release_report(&family, &id)
            }
        }
    }
}

/// `audit log`: the accepted events and the ignored ones, in ledger order, marked.
fn audit_log(prompt: &PromptName, family: &Family) -> Report {
    let ignored: Vec<&pledger_core::verify::Finding> = ignored_of(family, None).collect();
    let mut rows: Vec<(u64, String)> = family
        .events
        .iter()
        .map(|r| (r.sequence, render::history_lines(std::slice::from_ref(r))))
        .collect();
    for f in &ignored {
        rows.push((
            f.sequence,
            format!(
                "{:>5}  IGNORED  {} ({}): {}{}\n",
                f.sequence,
                f.subject,
                f.check.code(),
                f.reason,
                f.event_id
                    .as_ref()
                    .map(|id| format!(" [event {id}]"))
                    .unwrap_or_default()
            ),
        ));
    }
    rows.sort_by_key(|(seq, _)| *seq);
    let text = format!(
        "audit log of `{prompt}`: {} events, {} ignored\n{}",
        family.events.len(),
        ignored.len(),
        rows.into_iter().map(|(_, line)| line).collect::<String>()
    );
    Report::ok(
        text,
        json!({ "prompt": prompt, "events": family.events.iter().map(recorded_entry).collect::<Vec<_>>(), "ignored": ignored }),
    )
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

/// What `audit verify` read: the stream's facts, every ledger message and every checkpoint.
struct Read {
    facts: pledger_core::audit::StreamFacts,
    records: Vec<RawRecord>,
    checkpoints: Vec<FoundCheckpoint>,
}

/// Reads the stream's facts, every ledger message and every checkpoint, and feeds them to an
/// [`Auditor`]. The messages are verified while they are read (chunk by chunk, on every core).
/// The checkpoints are read after the messages and the facts before them, so each checkpoint
/// read covers messages that were read.
async fn read_ledger(conn: &Conn) -> Result<(Auditor, Read), Failure> {
    let mut facts = conn.ledger.stream_facts().await?;
    let mut auditor = Auditor::new();
    auditor.stream(&facts);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let verifying = tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        let chunks = std::iter::from_fn(move || rx.blocking_recv());
        pledger_infra::audit::in_order_chunks(chunks, pledger_infra::audit::cores(), |r, pre| {
            auditor.message_prechecked(r.sequence, &r.subject, pre);
            records.push(r.clone());
        });
        (auditor, records)
    });
    let read = conn
        .ledger
        .read_raw_chunks(&[LEDGER_SUBJECTS], 0, pledger_infra::audit::CHUNK, tx)
        .await;
    let (mut auditor, records) = verifying
        .await
        .map_err(|e| Failure::other(format!("verifying the ledger failed: {e}")))?;
    read?;
    let checkpoints = checkpoint_records(conn).await?;
    // Messages appended after the facts were read are part of what was read.
    if let Some(last) = records.last() {
        facts.last_sequence = facts.last_sequence.max(last.sequence);
    }
    auditor.end(facts.last_sequence);
    for c in &checkpoints {
        auditor.checkpoint(c.clone());
    }
    Ok((
        auditor,
        Read {
            facts,
            records,
            checkpoints,
        },
    ))
}

/// The checkpoint stream's messages (none on a ledger set up before checkpoints existed).
async fn checkpoint_records(conn: &Conn) -> Result<Vec<FoundCheckpoint>, Failure> {
    match conn.ledger.checkpoints().await {
        Ok(records) => Ok(records
            .into_iter()
            .map(|r| FoundCheckpoint {
                sequence: Some(r.sequence),
                text: String::from_utf8_lossy(&r.payload).into_owned(),
            })
            .collect()),
        Err(pledger_infra::InfraError::StreamMissing(_)) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn trusted_input(
    file: Option<&Path>,
    keys: &[String],
) -> Result<Option<(String, Vec<NoteVerifier>)>, Failure> {
    let keys = keys
        .iter()
        .map(|k| {
            note::parse_verifier_key(k)
                .map_err(|e| Failure::usage(format!("--trusted-key `{k}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match file {
        Some(path) => {
            let text = crate::app::read_input(path)?;
            Ok(Some((text, keys)))
        }
        None if !keys.is_empty() => Err(Failure::usage(
            "--trusted-key checks a --trusted-checkpoint: give the checkpoint file too",
        )),
        None => Ok(None),
    }
}

fn read_export(path: &Path) -> Result<Export, Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", path.display())))?;
    if meta.len() > MAX_EXPORT {
        return Err(Failure::usage(format!(
            "{}: {} bytes is over the export limit of {MAX_EXPORT} bytes",
            path.display(),
            meta.len()
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::usage(format!(
            "{}: line {}, column {}: not an evidence export: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// `1 prompt`, `2 prompts`, `1 identity`, `3 identities`, `2 hashes`.
fn plural(n: u64, noun: &str) -> String {
    let many = match noun {
        "identity" => "identities".to_string(),
        n if n.ends_with('h') || n.ends_with('s') => format!("{n}es"),
        n => format!("{n}s"),
    };
    format!("{n} {}", if n == 1 { noun } else { &many })
}

fn verify_report(report: &AuditReport) -> Report {
    let s = &report.summary;
    let mut text = format!(
        "audit verify{}: {} ({} accepted, {} ignored), {}, {}\n",
        report
            .scope
            .as_ref()
            .map(|p| format!(" (findings of `{p}`)"))
            .unwrap_or_default(),
        plural(s.messages, "message"),
        s.accepted,
        s.ignored,
        plural(s.prompts, "prompt"),
        plural(s.identities, "identity")
    );
    text.push_str(&format!(
        "tree        size {}, root {}{}\n",
        s.tree_size,
        s.root,
        s.origin
            .as_ref()
            .map(|o| format!(", origin {o}"))
            .unwrap_or_default()
    ));
    match &s.latest_checkpoint {
        Some(c) => text.push_str(&format!(
            "checkpoints {} ({} verified); the latest covers {} messages, signed by {}\n",
            s.checkpoints,
            s.checkpoints_verified,
            c.size,
            c.signed_by.join(", ")
        )),
        None => text.push_str(&format!(
            "checkpoints {} ({} verified): nothing proves this history to a third party yet\n",
            s.checkpoints, s.checkpoints_verified
        )),
    }
    if let Some(t) = &s.trusted {
        text.push_str(&format!(
            "trusted     size {}: {}\n",
            t.size,
            if t.extends {
                format!(
                    "the ledger extends it (consistency proof of {} verified)",
                    plural(t.consistency_proof.len() as u64, "hash")
                )
            } else {
                "the ledger does NOT extend it".to_string()
            }
        ));
    }
    if report.findings.is_empty() {
        text.push_str("findings    none\n");
    } else {
        let by_class: Vec<String> = s
            .findings_by_class
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        text.push_str(&format!(
            "findings    {} ({})\n",
            report.findings.len(),
            by_class.join(", ")
        ));
        for f in &report.findings {
            text.push_str(&format!("  {f}\n"));
        }
    }
    let exit = match report.worst() {
        None => Exit::Success,
        Some(Class::Integrity) => Exit::Integrity,
        Some(Class::Policy) => Exit::Policy,
        Some(Class::Trust) => Exit::Trust,
    };
    text.push_str(&match report.worst() {
        None => "result      clean\n".to_string(),
        Some(c) => format!(
            "result      {} failure (exit {})\n",
            c.name().to_uppercase(),
            exit as i32
        ),
    });
    Report {
        text,
        json: json!({
            "clean": report.findings.is_empty(),
            "worst": report.worst(),
            "exit": exit as i32,
            "scope": report.scope,
            "findings": report.findings,
            "summary": report.summary,
        }),
        exit,
    }
}

// ---------------------------------------------------------------------------------------------
// checkpoints and proofs
// ---------------------------------------------------------------------------------------------

/// A checkpoint whose signature verified against the roster's notary keys.
struct Latest {
    sequence: u64,
    text: String,
    checkpoint: Checkpoint,
    signed_by: Vec<String>,
    verifier_keys: Vec<String>,
}

/// The largest checkpoint whose notary signature verifies (the roots are `verify`'s business).
async fn latest_checkpoint(conn: &Conn) -> Result<Latest, Failure> {
    let (verifier, _, _) = conn.ledger.roster().await?;
    let mut latest: Option<Latest> = None;
    let mut refused = 0;
    for found in checkpoint_records(conn).await? {
        let Ok(cp) = Checkpoint::of_note(&found.text) else {
            refused += 1;
            continue;
        };
        let keys = notary_verifiers(&verifier.roster, cp.size);
        let Ok(opened) = note::open(&found.text, &keys) else {
            refused += 1;
            continue;
        };
        if latest.as_ref().is_none_or(|l| cp.size > l.checkpoint.size) {
            latest = Some(Latest {
                sequence: found.sequence.unwrap_or_default(),
                verifier_keys: keys
                    .iter()
                    .filter(|k| opened.verified_by.contains(&k.name))
                    .map(|k| note::verifier_key(&k.name, &k.key))
                    .collect(),
                text: found.text,
                checkpoint: cp,
                signed_by: opened.verified_by,
            });
        }
    }
    latest.ok_or_else(|| {
        Failure::other(format!(
            "no checkpoint signed by a notary on the roster ({refused} refused): is the notary worker running (`pledger up` starts it, or `pledger worker notary`)?"
        ))
    })
}

fn checkpoint_json(l: &Latest) -> Value {
    json!({
        "origin": l.checkpoint.origin,
        "size": l.checkpoint.size,
        "root": merkle::hash_to_base64(&l.checkpoint.root),
        "signed_by": l.signed_by,
        "verifier_keys": l.verifier_keys,
        "sequence": l.sequence,
        "note": l.text,
    })
}

fn checkpoint_report(l: &Latest, out: Option<&Path>) -> Result<Report, Failure> {
    let text = match out {
        Some(path) => {
            std::fs::write(path, &l.text)
                .map_err(|e| Failure::other(format!("{}: cannot write: {e}", path.display())))?;
            format!(
                "wrote the checkpoint of {} messages to {} (signed by {}; verifier key {})\n",
                l.checkpoint.size,
                path.display(),
                l.signed_by.join(", "),
                l.verifier_keys.join(", ")
            )
        }
        None => l.text.clone(),
    };
    Ok(Report::ok(text, checkpoint_json(l)))
}

async fn prove(conn: &Conn, event_id: &str) -> Result<Report, Failure> {
    let latest = latest_checkpoint(conn).await?;
    let records = conn.ledger.read_raw(&[LEDGER_SUBJECTS], 0).await?;
    let mut tree = Tree::new();
    let mut found = None;
    for (i, r) in records.iter().enumerate() {
        tree.push_entry(&r.payload);
        if found.is_none()
            && pledger_core::Envelope::from_json(&r.payload).is_ok_and(|e| e.event_id == event_id)
        {
            found = Some((i as u64, r));
        }
    }
    let Some((leaf, record)) = found else {
        return Err(Failure::usage(format!("no event {event_id} on the ledger")));
    };
    let size = latest.checkpoint.size;
    if leaf >= size {
        return Err(Failure::other(format!(
            "event {event_id} (sequence {}) is after the latest checkpoint, which covers {size} messages; the notary's next checkpoint will cover it",
            record.sequence
        )));
    }
    if size > tree.size() || tree.root_at(size) != Some(latest.checkpoint.root) {
        return Err(Failure {
            exit: Exit::Trust,
            message: format!(
                "the ledger does not match its latest checkpoint (size {size}): run `pledger audit verify`"
            ),
            rule: None,
        });
    }
    let proof = tree.inclusion_proof(leaf, size).expect("leaf within size");
    let leaf_hash = merkle::leaf_hash(&record.payload);
    merkle::verify_inclusion(leaf, size, &leaf_hash, &proof, &latest.checkpoint.root)
        .map_err(|e| Failure::other(format!("the proof does not verify: {e}")))?;
    let proof_b64: Vec<String> = proof.iter().map(merkle::hash_to_base64).collect();
    let text = format!(
        "event {event_id}\n  sequence    {} on {}\n  leaf        {leaf} of {size}\n  leaf hash   {}\n  proof       {}\n  root        {}\nagainst the checkpoint:\n{}",
        record.sequence,
        record.subject,
        merkle::hash_to_base64(&leaf_hash),
        if proof_b64.is_empty() {
            "(none: a tree of one)".to_string()
        } else {
            proof_b64.join("\n              ")
        },
        merkle::hash_to_base64(&latest.checkpoint.root),
        latest.text
    );
    Ok(Report::ok(
        text,
        json!({
            "event_id": event_id,
            "sequence": record.sequence,
            "subject": record.subject,
            "leaf_index": leaf,
            "tree_size": size,
            "leaf_hash": merkle::hash_to_base64(&leaf_hash),
            "proof": proof_b64,
            "root": merkle::hash_to_base64(&latest.checkpoint.root),
            "checkpoint": checkpoint_json(&latest),
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// time travel
// ---------------------------------------------------------------------------------------------

/// A past moment: a time (events that occurred at or before it) or a ledger sequence (events
/// at or before it).
#[derive(Clone, Copy, Debug)]
pub(crate) enum At {
    Time(Timestamp),
    Sequence(u64),
}

impl At {
    pub(crate) fn parse(raw: &str) -> Result<At, Failure> {
        if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            return raw
                .parse()
                .map(At::Sequence)
                .map_err(|_| Failure::usage(format!("--at `{raw}`: sequence out of range")));
        }
        Timestamp::parse_rfc3339(raw).map(At::Time).map_err(|e| {
            Failure::usage(format!(
                "--at `{raw}` is neither a ledger sequence nor an RFC 3339 UTC time: {}",
                e.message
            ))
        })
    }

    fn includes(self, r: &Recorded) -> bool {
        match self {
            At::Time(t) => r.envelope.occurred_at <= t,
            At::Sequence(s) => r.sequence <= s,
        }
    }

    fn describe(self) -> String {
        match self {
            At::Time(t) => t.to_rfc3339(),
            At::Sequence(s) => format!("sequence {s}"),
        }
    }
}

/// The prompt's verified events up to `at`, and the state they fold to.
fn state_at(family: &Family, at: At) -> (PromptState, Vec<&Recorded>) {
    let mut state = PromptState::new(family.state.name.clone());
    let mut upto = Vec::new();
    for r in family.events.iter().filter(|r| at.includes(r)) {
        evolve(&mut state, &r.envelope);
        upto.push(r);
    }
    (state, upto)
}

fn replay(family: &Family, at: At) -> Report {
    let (state, upto) = state_at(family, at);
    let last_sequence = upto.last().map(|r| r.sequence).unwrap_or_default();
    let table = routing_table_for(&state, last_sequence);
    let name = &state.name;
    let mut text = format!(
        "`{name}` at {} (through ledger sequence {last_sequence}, {} of its {} events)\n",
        at.describe(),
        upto.len(),
        family.events.len()
    );
    if !state.is_registered() {
        text.push_str("  not registered yet\n");
    }
    text.push_str(&format!(
        "  stable     {}\n",
        state
            .stable
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into())
    ));
    let active = state.active_rollout();
    match active {
        Some(r) => {
            let stage = r
                .status
                .stage()
                .and_then(|i| r.stage_name(i).map(|n| (i, n.to_string())));
            text.push_str(&format!(
                "  release    {} [{}] candidate {}{}\n",
                r.id,
                r.status.name(),
                r.candidate,
                stage
                    .map(|(i, n)| format!(", stage {} ({n})", i + 1))
                    .unwrap_or_default()
            ));
        }
        None => text.push_str("  release    none rolling out\n"),
    }
    text.push_str(&format!(
        "  routing    {}\n",
        serde_json::to_string(&table).expect("serializes")
    ));
    let open: Vec<_> = state
        .regression_cases
        .values()
        .filter(|c| c.closed.is_none())
        .collect();
    text.push_str(&format!("  open cases {}\n", open.len()));
    for c in &open {
        let tag = serde_json::to_value(c.tag).expect("serializes");
        let tag = tag.as_str().unwrap_or_default();
        text.push_str(&format!("    {} {tag} (x{})\n", c.case_id, c.count));
    }
    let last_gate = upto.iter().rev().find_map(|r| match &r.envelope.event {
        pledger_core::Event::GateDecided(g) => Some((r, g)),
        _ => None,
    });
    match last_gate {
        Some((r, g)) => {
            text.push_str(&format!(
                "  last gate  {} {} by {} at {}\n",
                g.release,
                if g.passed { "passed" } else { "failed" },
                r.envelope.actor,
                r.envelope.occurred_at
            ));
            text.push_str(&render::gate_table(&g.checks));
        }
        None => text.push_str("  last gate  none\n"),
    }
    // Who made each step of the release in focus (the active one, else the latest).
    let focus = active
        .map(|r| r.id.clone())
        .or_else(|| state.releases.values().next_back().map(|r| r.id.clone()));
    let steps: Vec<Recorded> = upto
        .iter()
        .filter(|r| match (&focus, r.envelope.event.aggregate()) {
            (Some(id), pledger_core::event::Aggregate::Release(rid)) => &rid == id,
            _ => false,
        })
        .map(|r| (*r).clone())
        .collect();
    if let Some(id) = &focus {
        text.push_str(&format!("  steps of {id}:\n"));
        text.push_str(&render::history_lines(&steps));
    }
    Report::ok(
        text,
        json!({
            "prompt": name,
            "at": at.describe(),
            "through_sequence": last_sequence,
            "registered": state.is_registered(),
            "stable": state.stable,
            "active_release": active.map(|r| json!({
                "release": r.id,
                "status": r.status.name(),
                "candidate": r.candidate,
                "baseline": r.baseline,
                "stage": r.status.stage().and_then(|i| r.stage_name(i)),
            })),
            "routing": table,
            "open_regression_cases": open,
            "last_gate": last_gate.map(|(r, g)| json!({
                "release": g.release,
                "passed": g.passed,
                "actor": r.envelope.actor,
                "at": r.envelope.occurred_at,
                "sequence": r.sequence,
                "checks": g.checks,
            })),
            "steps": steps.iter().map(|r| json!({
                "sequence": r.sequence,
                "kind": r.envelope.kind(),
                "actor": r.envelope.actor,
                "at": r.envelope.occurred_at,
                "event_id": r.envelope.event_id,
            })).collect::<Vec<_>>(),
        }),
    )
}

fn resolve_at(
    family: &Family,
    at: At,
    unit: Option<&str>,
    attributes: &BTreeMap<String, String>,
) -> Report {
    let (state, upto) = state_at(family, at);
    let last_sequence = upto.last().map(|r| r.sequence).unwrap_or_default();
    let table = routing_table_for(&state, last_sequence);
    let resolution = resolve(&table, unit, attributes);
    let active = state.active_rollout();
    let why = match (&resolution.version, resolution.arm, active) {
        (None, _, _) => "no stable version yet: nothing was served".to_string(),
        (Some(_), Some(arm), Some(r)) => {
            let stage = r
                .status
                .stage()
                .and_then(|i| r.stage_name(i).map(|n| format!("stage {} ({n})", i + 1)))
                .unwrap_or_default();
            let how = match (&r.status, arm) {
                (ReleaseStatus::Frozen { .. }, _) => {
                    "the release was frozen: every request went to the baseline".to_string()
                }
                (_, Arm::Candidate) => {
                    format!("release {} sent it to the candidate in {stage}", r.id)
                }
                (_, Arm::Baseline) => format!(
                    "release {} was rolling out ({stage}) and this request stayed on the baseline",
                    r.id
                ),
            };
            how
        }
        (Some(_), _, _) => "no release was rolling out: the stable version".to_string(),
    };
    let text = format!(
        "`{}` at {} (through ledger sequence {last_sequence}): {}\n  {why}\n",
        state.name,
        at.describe(),
        resolution
            .version
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "nothing".into()),
    );
    Report::ok(
        text,
        json!({
            "prompt": state.name,
            "at": at.describe(),
            "through_sequence": last_sequence,
            "version": resolution.version,
            "release": resolution.release,
            "arm": resolution.arm,
            "why": why,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// export and report
// ---------------------------------------------------------------------------------------------

async fn export(
    conn: &Conn,
    prompts: Option<Vec<PromptName>>,
    since: Option<Timestamp>,
    selection: BTreeMap<String, String>,
    out: &Path,
) -> Result<Report, Failure> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (
        auditor,
        Read {
            facts,
            records,
            checkpoints,
        },
    ) = read_ledger(conn).await?;
    let origin = auditor.origin();
    let complete = prompts.is_none() && since.is_none();
    let mut exported = Vec::new();
    let mut checkpoint_text = None;
    if complete {
        for (i, r) in records.iter().enumerate() {
            exported.push(ExportRecord {
                sequence: r.sequence,
                subject: r.subject.clone(),
                leaf_index: i as u64,
                bytes: b64.encode(&r.payload),
                proof: Vec::new(),
            });
        }
    } else {
        let latest = latest_checkpoint(conn).await?;
        let tree = auditor.tree();
        let size = latest.checkpoint.size;
        if tree.root_at(size) != Some(latest.checkpoint.root) {
            return Err(Failure {
                exit: Exit::Trust,
                message: format!(
                    "the ledger does not match its latest checkpoint (size {size}): run `pledger audit verify`"
                ),
                rule: None,
            });
        }
        // The families selected: named ones, or those with an event since `since`.
        let wanted: Option<Vec<String>> = match (&prompts, since) {
            (Some(p), _) => Some(p.iter().map(|p| p.to_string()).collect()),
            (None, Some(t)) => Some(
                auditor
                    .verifier()
                    .families
                    .keys()
                    .filter(|p| {
                        records.iter().any(|r| {
                            pledger_core::names::prompt_token(&r.subject) == Some(p.as_str())
                                && pledger_core::Envelope::from_json(&r.payload)
                                    .is_ok_and(|e| e.occurred_at >= t)
                        })
                    })
                    .map(|p| p.to_string())
                    .collect(),
            ),
            (None, None) => None,
        };
        for (i, r) in records.iter().enumerate() {
            let leaf = i as u64;
            if leaf >= size {
                break;
            }
            let keep = match pledger_core::names::prompt_token(&r.subject) {
                Some(token) if PromptName::parse(token).is_ok() => {
                    wanted.as_ref().is_none_or(|w| w.iter().any(|p| p == token))
                }
                _ => true, // the roster, the fleet subjects, anything not a prompt's
            };
            if !keep {
                continue;
            }
            let proof = tree.inclusion_proof(leaf, size).expect("leaf within size");
            exported.push(ExportRecord {
                sequence: r.sequence,
                subject: r.subject.clone(),
                leaf_index: leaf,
                bytes: b64.encode(&r.payload),
                proof: proof.iter().map(merkle::hash_to_base64).collect(),
            });
        }
        checkpoint_text = Some(latest.text);
    }
    let export = Export {
        format: EXPORT_FORMAT.to_string(),
        origin,
        exported_at: pledger_infra::ledger::now(),
        selection,
        complete,
        stream: facts,
        checkpoint: checkpoint_text,
        checkpoints,
        records: exported,
    };
    let bytes = serde_json::to_vec_pretty(&export).expect("serializes");
    std::fs::write(out, &bytes)
        .map_err(|e| Failure::other(format!("{}: cannot write: {e}", out.display())))?;
    let text = format!(
        "wrote {} messages{} and {} checkpoints to {} ({} bytes); check it with `pledger audit verify --export {}`\n",
        export.records.len(),
        if complete {
            " (the whole ledger)".to_string()
        } else {
            " with their inclusion proofs".to_string()
        },
        export.checkpoints.len(),
        out.display(),
        bytes.len(),
        out.display()
    );
    Ok(Report::ok(
        text,
        json!({
            "out": out.display().to_string(),
            "messages": export.records.len(),
            "complete": complete,
            "checkpoints": export.checkpoints.len(),
            "bytes": bytes.len(),
        }),
    ))
}

fn release_report(family: &Family, id: &ReleaseId) -> Result<Report, Failure> {
    let state = &family.state;
    let release = known_release(state, id)?;
    let events: Vec<&Recorded> = family
        .events
        .iter()
        .filter(|r| match r.envelope.event.aggregate() {
            pledger_core::event::Aggregate::Release(rid) => &rid == id,
            _ => false,
        })
        .collect();
    let signed = |r: &Recorded| {
        r.envelope
            .key_id
            .as_deref()
            .map(|k| format!("signature verified ({k})"))
            .unwrap_or_else(|| "unsigned".into())
    };
    let mut text = format!("change-management record of release {id}\n\n");
    text.push_str(&render::release_summary(state, &release));
    // The change: the candidate against the baseline.
    let diff = release.baseline.as_ref().and_then(|b| {
        let old = state.versions.get(b)?;
        let new = state.versions.get(&release.candidate)?;
        Some(pledger_core::diff::diff_artifacts(
            &old.artifact,
            &new.artifact,
        ))
    });
    text.push_str("\nthe change\n");
    match (&diff, &release.baseline) {
        (Some(d), Some(b)) => text.push_str(&render::indent(
            &render::artifact_diff(&b.to_string(), &release.candidate.to_string(), d),
            "  ",
        )),
        _ => text.push_str("  no baseline: the first version of the prompt\n"),
    }
    text.push_str("\nevents (each verified on read: signature, key, chain, role, admissibility)\n");
    for r in &events {
        text.push_str(&format!(
            "  {:>5}  {}  {:<14} {:<22} {}  [{}]\n",
            r.sequence,
            r.envelope.occurred_at,
            r.envelope.actor.as_str(),
            r.envelope.kind(),
            render::summarize(&r.envelope.event),
            signed(r)
        ));
        if let pledger_core::Event::GateDecided(g) = &r.envelope.event {
            text.push_str(&render::indent(&render::gate_table(&g.checks), "       "));
        }
        if let pledger_core::Event::RolloutFrozen(f) = &r.envelope.event {
            text.push_str(&format!(
                "         evidence: {}\n",
                serde_json::to_string(&f.evidence).expect("serializes")
            ));
        }
    }
    let ignored: Vec<&pledger_core::verify::Finding> = ignored_of(family, None)
        .filter(|f| {
            f.subject
                == pledger_core::names::subject_for(&pledger_core::event::Aggregate::Release(
                    id.clone(),
                ))
        })
        .collect();
    if !ignored.is_empty() {
        text.push_str(&format!(
            "\n{} message(s) on this release's subject were IGNORED (not part of the record):\n",
            ignored.len()
        ));
        for f in &ignored {
            text.push_str(&format!("  {f}\n"));
        }
    }
    Ok(Report::ok(
        text,
        json!({
            "release": id,
            "prompt": state.name,
            "status": release.status,
            "author": release.author,
            "candidate": release.candidate,
            "baseline": release.baseline,
            "rationale": release.rationale,
            "proposed_at": release.proposed_at,
            "reviews": release.reviews,
            "gate": release.gate,
            "plan": release.plan,
            "diff": diff,
            "events": events.iter().map(|r| json!({
                "sequence": r.sequence,
                "kind": r.envelope.kind(),
                "actor": r.envelope.actor,
                "at": r.envelope.occurred_at,
                "event_id": r.envelope.event_id,
                "key_id": r.envelope.key_id,
                "signature": "verified",
                "event": r.envelope.event,
            })).collect::<Vec<_>>(),
            "ignored": ignored,
        }),
    ))
}

/// `audit verify` of the whole ledger, as the release pages' audit status shows it.
pub(crate) async fn verify_ledger(conn: &Conn) -> Result<Report, Failure> {
    let (auditor, _) = read_ledger(conn).await?;
    Ok(verify_report(&auditor.finish(None)))
}

/// The latest checkpoint a notary on the roster signed, as text (what `audit checkpoint`
/// prints), or why there is none.
pub(crate) async fn latest_checkpoint_text(conn: &Conn) -> Result<String, String> {
    latest_checkpoint(conn)
        .await
        .map(|l| {
            format!(
                "{}\nsigned by {}; verifier key {}; checkpoint stream sequence {}",
                l.text.trim_end(),
                l.signed_by.join(", "),
                l.verifier_keys.join(", "),
                l.sequence
            )
        })
        .map_err(|f| f.message)
}
