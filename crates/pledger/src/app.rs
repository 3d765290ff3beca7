//! Command implementations: each reads the ledger, runs the pure decider through the
//! ledger's read-decide-append loop, updates the routing table where routing changed, and
//! returns a report (text for people, one JSON object for scripts).

use std::collections::BTreeMap;
use std::path::Path;

use pledger_core::decide::{resolve_version, Rule};
use pledger_core::diff::diff_artifacts;
use pledger_core::event::{Event, ReviewLayer, ReviewVerdict};
use pledger_core::routing::{resolve, routing_table_for, Arm};
use pledger_core::state::{PromptState, ReleaseState};
use pledger_core::{
    Artifact, Command, EvalBundle, FileFormat, GatePolicy, PromptName, Rejection, ReleaseId,
    RolloutPlan,
};
use pledger_infra::ledger::new_correlation_id;
use pledger_infra::worker::canary::read_status;
use pledger_infra::{Executed, Family, Ledger, Recorded, RoutingStore, RoutingWrite};
use serde_json::{json, Value};

use crate::cli::*;
use crate::failure::{file_failure, Exit, Failure};
use crate::render;

/// What a command prints: text for people, JSON for scripts, and its exit code.
pub struct Report {
    pub text: String,
    pub json: Value,
    pub exit: Exit,
}

impl Report {
    pub(crate) fn ok(text: impl Into<String>, json: Value) -> Report {
        Report {
            text: text.into(),
            json,
            exit: Exit::Success,
        }
    }
}

/// Largest input file read at all (each kind has its own, smaller limit too).
const MAX_INPUT_FILE: u64 = 4 * 1024 * 1024;

pub struct App {
    pub url: String,
    /// `--as`: which local key to sign with (the identity recorded is the key's owner).
    pub actor: Option<String>,
    /// `--key`: the private key to sign with.
    pub key: Option<std::path::PathBuf>,
    /// The config dir holding the keyring.
    pub config_dir: std::path::PathBuf,
    pub correlation_id: String,
}

pub(crate) struct Conn {
    pub(crate) ledger: Ledger,
    pub(crate) routing: RoutingStore,
}

impl App {
    pub fn from_cli(cli: &Cli) -> App {
        App {
            url: cli.nats.clone(),
            actor: cli.actor.clone(),
            key: cli.key.clone(),
            config_dir: cli
                .config_dir
                .clone()
                .unwrap_or_else(crate::keys::default_config_dir),
            correlation_id: std::env::var("PLEDGER_CORRELATION_ID")
                .unwrap_or_else(|_| new_correlation_id()),
        }
    }

    /// Connects and looks the streams and buckets up (only `init` creates them, so an ordinary
    /// command works under NATS permissions that forbid stream changes).
    pub(crate) async fn connect(&self) -> Result<Conn, Failure> {
        let client = pledger_infra::connect(&self.url).await?;
        Ledger::check_server_version(&client)?;
        let ledger = Ledger::new(client);
        let routing = RoutingStore::open(ledger.jetstream()).await?;
        Ok(Conn { ledger, routing })
    }

    pub(crate) fn keyring(&self) -> crate::keys::Keyring {
        crate::keys::Keyring::in_config_dir(&self.config_dir)
    }

    /// The key this command signs with (`--key`, the keyring, `~/.ssh/id_ed25519`).
    pub(crate) fn signer(&self) -> Result<crate::keys::CliSigner, Failure> {
        crate::keys::select_signer(self.key.as_deref(), self.actor.as_deref(), &self.keyring())
    }

    pub async fn run(&self, command: TopCommand) -> Result<Report, Failure> {
        match command {
            TopCommand::Init { admin, replicas } => {
                self.init(admin.as_deref(), replicas.map(usize::from)).await
            }
            TopCommand::Identity(c) => self.identity(c).await,
            TopCommand::Sim(args) => crate::sim::run(&self.url, &args).await,
            TopCommand::Regressions(c) => self.regressions(c).await,
            TopCommand::Windows(c) => self.windows(c).await,
            TopCommand::Digest { week, list: false } => self.digest(week).await,
            TopCommand::Digest { list: true, .. } => self.digest_list().await,
            TopCommand::Up(_) | TopCommand::Demo | TopCommand::Worker(_) | TopCommand::Bench(_) => {
                unreachable!("handled in main")
            }
            TopCommand::Prompt(c) => self.prompt(c).await,
            TopCommand::Release(c) => self.release(c).await,
            TopCommand::Rollout(c) => self.rollout(c).await,
            TopCommand::Rollback {
                prompt,
                release,
                reason,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                // Pin the release this command rolls back to the one its caller sees now: two
                // people rolling back at once roll back one release, never two.
                let pinned = match release {
                    Some(r) => Some(ReleaseId::parse(&r)?),
                    None => {
                        let family = registered(conn.ledger.load(&prompt).await?)?;
                        let s = &family.state;
                        s.active_rollout()
                            .or_else(|| s.last_completed_serving())
                            .map(|r| r.id.clone())
                    }
                };
                if let Some(r) = &pinned {
                    if r.prompt() != &prompt {
                        return Err(Failure::usage(format!(
                            "release {r} is not a release of `{prompt}`"
                        )));
                    }
                }
                let done = self
                    .exec(&conn, &prompt, |_| {
                        Ok(Command::Rollback {
                            release: pinned.clone(),
                            reason: reason.clone(),
                        })
                    })
                    .await?;
                let routing = self.publish_routing(&conn, &done).await?;
                let stable = done.state.stable.clone();
                let text = match done.recorded.first().map(|r| &r.envelope.event) {
                    Some(Event::RolledBack(e)) => format!(
                        "rolled back {}: {} now serves all traffic (was {}){}",
                        e.release,
                        e.to_version.short(),
                        e.from_version.short(),
                        routing_note(routing)
                    ),
                    _ => format!(
                        "{} was already rolled back; {} serves all traffic",
                        pinned.as_ref().map(|r| r.to_string()).unwrap_or_default(),
                        stable
                            .as_ref()
                            .map(|v| v.short().to_string())
                            .unwrap_or_default()
                    ),
                };
                Ok(Report::ok(
                    text,
                    json!({ "prompt": prompt, "release": pinned, "stable": stable, "new": !done.recorded.is_empty(), "recorded": recorded_json(&done.recorded) }),
                ))
            }
            TopCommand::Resolve {
                prompt,
                unit,
                attrs,
            } => self.resolve(&prompt, unit.as_deref(), &attrs).await,
            TopCommand::Audit(AuditCommand::Log { prompt }) => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(&prompt).await?)?;
                Ok(audit_log(&prompt, &family))
            }
        }
    }

    pub(crate) async fn exec<F>(
        &self,
        conn: &Conn,
        prompt: &PromptName,
        make: F,
    ) -> Result<Executed, Failure>
    where
        F: Fn(&PromptState) -> Result<Command, Rejection>,
    {
        let signer = self.signer()?;
        Ok(conn
            .ledger
            .execute(prompt, &signer, &self.correlation_id, make)
            .await?)
    }

    /// Writes the routing table derived from the state the command left.
    async fn publish_routing(&self, conn: &Conn, done: &Executed) -> Result<RoutingWrite, Failure> {
        let table = routing_table_for(&done.state, done.last_sequence);
        Ok(conn.routing.publish(&table).await?)
    }

    async fn prompt(&self, command: PromptCommand) -> Result<Report, Failure> {
        match command {
            PromptCommand::Register { prompt, owner } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, &prompt, |_| {
                        Ok(Command::RegisterPrompt {
                            owner: owner.clone(),
                        })
                    })
                    .await?;
                let new = !done.recorded.is_empty();
                Ok(Report::ok(
                    format!(
                        "{} prompt `{prompt}`, owned by {}",
                        if new {
                            "registered"
                        } else {
                            "already registered:"
                        },
                        owner.trim()
                    ),
                    json!({ "prompt": prompt, "owner": owner.trim(), "new": new, "recorded": recorded_json(&done.recorded) }),
                ))
            }
            PromptCommand::Publish {
                prompt,
                artifact_file,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let text = read_input(&artifact_file)?;
                let artifact = Artifact::from_text(&text, format_of(&artifact_file))
                    .map_err(|e| file_failure(&artifact_file, e))?;
                let version = artifact.version_id();
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, &prompt, |_| {
                        Ok(Command::PublishVersion {
                            artifact: artifact.clone(),
                        })
                    })
                    .await?;
                let new = !done.recorded.is_empty();
                Ok(Report::ok(
                    version.to_string(),
                    json!({ "version": version, "prompt": prompt, "new": new, "recorded": recorded_json(&done.recorded) }),
                ))
            }
            PromptCommand::Adopt {
                prompt,
                version,
                reason,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, &prompt, |s| {
                        Ok(Command::AdoptVersion {
                            version: resolve_version(s, &version)?,
                            reason: reason.clone(),
                        })
                    })
                    .await?;
                let routing = self.publish_routing(&conn, &done).await?;
                let stable = done.state.stable.clone().expect("adopted");
                Ok(Report::ok(
                    format!(
                        "`{prompt}` stable version is {stable}{}",
                        routing_note(routing)
                    ),
                    json!({ "prompt": prompt, "stable": stable, "new": !done.recorded.is_empty(), "recorded": recorded_json(&done.recorded) }),
                ))
            }
            PromptCommand::Policy {
                prompt,
                policy_file,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let text = read_input(&policy_file)?;
                let policy = GatePolicy::from_text(&text, format_of(&policy_file))
                    .map_err(|e| file_failure(&policy_file, e))?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, &prompt, |_| {
                        Ok(Command::SetGatePolicy {
                            policy: policy.clone(),
                        })
                    })
                    .await?;
                Ok(Report::ok(
                    format!(
                        "gate policy of `{prompt}` set{}",
                        if done.recorded.is_empty() {
                            " (unchanged)"
                        } else {
                            ""
                        }
                    ),
                    json!({ "prompt": prompt, "policy": policy, "recorded": recorded_json(&done.recorded) }),
                ))
            }
            PromptCommand::Show { prompt, version } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(&prompt).await?)?;
                let state = &family.state;
                if let Some(reference) = version {
                    let id = resolve_version(state, &reference)?;
                    let published = &state.versions[&id];
                    let text = format!(
                        "version {id}\npublished {} by {}\n\n{}",
                        published.published_at,
                        published.published_by,
                        serde_json::to_string_pretty(&published.artifact).expect("serializes")
                    );
                    return Ok(Report::ok(
                        text,
                        json!({ "prompt": prompt, "version": id, "artifact": published.artifact, "published_at": published.published_at, "published_by": published.published_by }),
                    ));
                }
                let mut text = format!(
                    "prompt `{prompt}`  owner {}\n  stable  {}\n  versions\n",
                    state.owner.as_deref().unwrap_or_default(),
                    state
                        .stable
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "none (adopt one with `pledger prompt adopt`)".into())
                );
                for v in &state.version_order {
                    let p = &state.versions[v];
                    let mark = if Some(v) == state.stable.as_ref() {
                        " (stable)"
                    } else {
                        ""
                    };
                    text.push_str(&format!(
                        "    {}  {}  {}{mark}\n",
                        v.short(),
                        p.published_at,
                        p.published_by
                    ));
                }
                text.push_str("  releases\n");
                for r in state.releases.values() {
                    text.push_str(&format!(
                        "    {:<24} {:<12} {}\n",
                        r.id.to_string(),
                        r.status.name(),
                        r.candidate.short()
                    ));
                }
                text.push_str(&ignored_note(&family, None));
                Ok(Report::ok(
                    text,
                    json!({ "state": state, "last_sequence": family.last_sequence, "history": family.events.iter().map(recorded_entry).collect::<Vec<_>>(), "ignored": ignored_json(&family, None) }),
                ))
            }
            PromptCommand::Diff { prompt, from, to } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(&prompt).await?)?;
                let (from, to) = (
                    resolve_version(&family.state, &from)?,
                    resolve_version(&family.state, &to)?,
                );
                let diff = diff_artifacts(
                    &family.state.versions[&from].artifact,
                    &family.state.versions[&to].artifact,
                );
                let mut text = format!("--- {from}\n+++ {to}\n");
                if diff.is_empty() {
                    text.push_str("(identical)\n");
                }
                for f in &diff.fields {
                    text.push_str(&format!(
                        "~ {}: {} -> {}\n",
                        f.field,
                        f.from.as_deref().unwrap_or("(absent)"),
                        f.to.as_deref().unwrap_or("(absent)")
                    ));
                }
                if diff.instructions_changed {
                    text.push_str("~ instructions:\n");
                    for line in &diff.instructions {
                        text.push_str(&format!("  {}{}\n", line.tag, line.text));
                    }
                }
                Ok(Report::ok(
                    text,
                    json!({ "prompt": prompt, "from": from, "to": to, "diff": diff }),
                ))
            }
            PromptCommand::History { prompt } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(&prompt).await?)?;
                Ok(history_report(
                    &format!("history of `{prompt}`"),
                    &family.events,
                    json!({ "prompt": prompt }),
                ))
            }
            PromptCommand::List => {
                let conn = self.connect().await?;
                let prompts = conn.ledger.prompts().await?;
                let mut text = String::new();
                for p in &prompts {
                    text.push_str(&format!("{p}\n"));
                }
                Ok(Report::ok(text, json!({ "prompts": prompts })))
            }
        }
    }

    async fn release(&self, command: ReleaseCommand) -> Result<Report, Failure> {
        match command {
            ReleaseCommand::Propose {
                prompt,
                version,
                rationale,
                expected_changes,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, &prompt, |s| {
                        Ok(Command::ProposeChange {
                            candidate: resolve_version(s, &version)?,
                            rationale: rationale.clone(),
                            expected_changes: expected_changes.clone(),
                        })
                    })
                    .await?;
                let Some(Event::ChangeProposed(e)) =
                    done.recorded.first().map(|r| &r.envelope.event)
                else {
                    return Err(Failure::other("proposal recorded no event"));
                };
                Ok(Report::ok(
                    e.release.to_string(),
                    json!({ "release": e.release, "candidate": e.candidate, "baseline": e.baseline, "recorded": recorded_json(&done.recorded) }),
                ))
            }
            ReleaseCommand::Review {
                release,
                layer,
                approve,
                request_changes: _,
                note,
            } => {
                let release = ReleaseId::parse(&release)?;
                let layer = match layer {
                    LayerArg::Product => ReviewLayer::Product,
                    LayerArg::Technical => ReviewLayer::Technical,
                };
                let verdict = if approve {
                    ReviewVerdict::Approve
                } else {
                    ReviewVerdict::RequestChanges
                };
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, release.prompt(), |_| {
                        Ok(Command::SubmitReview {
                            release: release.clone(),
                            layer,
                            verdict,
                            note: note.clone(),
                        })
                    })
                    .await?;
                let new = !done.recorded.is_empty();
                let verb = if approve {
                    "approved"
                } else {
                    "requested changes on"
                };
                Ok(Report::ok(
                    format!(
                        "{} {verb} {release} ({layer} review){}",
                        done.actor,
                        if new { "" } else { "; already recorded" }
                    ),
                    json!({ "release": release, "layer": layer, "verdict": verdict, "new": new, "recorded": recorded_json(&done.recorded) }),
                ))
            }
            ReleaseCommand::AttachEval {
                release,
                bundle_file,
            } => {
                let release = ReleaseId::parse(&release)?;
                let text = read_input(&bundle_file)?;
                let bundle = EvalBundle::from_text(&text, format_of(&bundle_file))
                    .map_err(|e| file_failure(&bundle_file, e))?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, release.prompt(), |_| {
                        Ok(Command::AttachEvalBundle {
                            release: release.clone(),
                            bundle: bundle.clone(),
                        })
                    })
                    .await?;
                let digest = pledger_core::artifact::json_digest(&bundle);
                Ok(Report::ok(
                    format!(
                        "eval bundle `{}` attached to {release} ({} segments, {} regressions){}",
                        bundle.suite,
                        bundle.segments.len(),
                        bundle.regressions.len(),
                        if done.recorded.is_empty() {
                            "; already attached"
                        } else {
                            ""
                        }
                    ),
                    json!({ "release": release, "bundle_digest": digest, "new": !done.recorded.is_empty(), "recorded": recorded_json(&done.recorded) }),
                ))
            }
            ReleaseCommand::AcceptTradeoff { release, reason } => {
                let release = ReleaseId::parse(&release)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, release.prompt(), |_| {
                        Ok(Command::AcceptTradeoff {
                            release: release.clone(),
                            reason: reason.clone(),
                        })
                    })
                    .await?;
                Ok(Report::ok(
                    format!(
                        "{} accepted the trade-off of {release}: {}",
                        done.actor,
                        reason.trim()
                    ),
                    json!({ "release": release, "new": !done.recorded.is_empty(), "recorded": recorded_json(&done.recorded) }),
                ))
            }
            ReleaseCommand::Revise { release, version } => {
                let release = ReleaseId::parse(&release)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, release.prompt(), |s| {
                        Ok(Command::ReviseCandidate {
                            release: release.clone(),
                            candidate: resolve_version(s, &version)?,
                        })
                    })
                    .await?;
                let r = done
                    .state
                    .release(&release)
                    .expect("revised release exists");
                Ok(Report::ok(
                    format!(
                        "{release} candidate is now {}; both reviews must be given again",
                        r.candidate
                    ),
                    json!({ "release": release, "candidate": r.candidate, "recorded": recorded_json(&done.recorded) }),
                ))
            }
            ReleaseCommand::Withdraw { release, reason } => {
                let release = ReleaseId::parse(&release)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, release.prompt(), |_| {
                        Ok(Command::WithdrawProposal {
                            release: release.clone(),
                            reason: reason.clone(),
                        })
                    })
                    .await?;
                Ok(Report::ok(
                    format!("{release} withdrawn"),
                    json!({ "release": release, "recorded": recorded_json(&done.recorded) }),
                ))
            }
            ReleaseCommand::Gate { release } => {
                let release = ReleaseId::parse(&release)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, release.prompt(), |_| {
                        Ok(Command::DecideGate {
                            release: release.clone(),
                        })
                    })
                    .await?;
                let Some(Event::GateDecided(g)) = done.recorded.first().map(|r| &r.envelope.event)
                else {
                    return Err(Failure::other("gate recorded no decision"));
                };
                let verdict = if g.passed { "PASSED" } else { "FAILED" };
                let mut text = format!(
                    "gate of {release}: {verdict}\n{}",
                    render::gate_table(&g.checks)
                );
                if !g.regressions.is_empty() {
                    text.push_str("  top regressions:\n");
                    for r in &g.regressions {
                        text.push_str(&format!("    {} [{}] {}\n", r.case, r.segment, r.detail));
                    }
                }
                Ok(Report {
                    text,
                    json: json!({ "release": release, "passed": g.passed, "checks": g.checks, "evidence": g.evidence, "recorded": recorded_json(&done.recorded) }),
                    exit: if g.passed {
                        Exit::Success
                    } else {
                        Exit::GateFailed
                    },
                })
            }
            ReleaseCommand::Show { release } => {
                let release = ReleaseId::parse(&release)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(release.prompt()).await?)?;
                let r = known_release(&family.state, &release)?;
                let subject = pledger_infra::ledger::subject_for(
                    &pledger_core::event::Aggregate::Release(release.clone()),
                );
                let history: Vec<Recorded> = family
                    .events
                    .iter()
                    .filter(|e| e.subject == subject)
                    .cloned()
                    .collect();
                let canary = read_status(conn.ledger.jetstream(), &release)
                    .await
                    .map_err(|e| Failure::other(e.to_string()))?;
                let text = format!(
                    "{}{}\n{}{}",
                    render::release_summary(&family.state, r),
                    canary
                        .as_ref()
                        .map(render::canary_status)
                        .unwrap_or_default(),
                    render::history_lines(&history),
                    ignored_note(&family, Some(&subject))
                );
                let gate_current = r.current_gate(&family.state.policy).map(|g| g.passed);
                Ok(Report::ok(
                    text,
                    json!({ "release": r, "state": r.status.name(), "gate_current": gate_current, "canary": canary, "history": history.iter().map(recorded_entry).collect::<Vec<_>>(), "ignored": ignored_json(&family, Some(&subject)) }),
                ))
            }
            ReleaseCommand::List { prompt } => {
                let conn = self.connect().await?;
                let prompts = match prompt {
                    Some(p) => vec![PromptName::parse(&p)?],
                    None => conn.ledger.prompts().await?,
                };
                let mut text = String::new();
                let mut rows = Vec::new();
                for p in prompts {
                    let family = conn.ledger.load(&p).await?;
                    if !family.state.is_registered() {
                        return Err(unknown_prompt(&p));
                    }
                    for r in family.state.releases.values() {
                        text.push_str(&format!(
                            "{:<28} {:<12} {}  {}\n",
                            r.id.to_string(),
                            r.status.name(),
                            r.candidate.short(),
                            r.rationale
                        ));
                        rows.push(json!({ "release": r.id, "prompt": p, "state": r.status.name(), "candidate": r.candidate, "author": r.author }));
                    }
                }
                Ok(Report::ok(text, json!({ "releases": rows })))
            }
        }
    }

    async fn rollout(&self, command: RolloutCommand) -> Result<Report, Failure> {
        let conn = self.connect().await?;
        // Every rollout command is fixed before the first read: nothing in it depends on a
        // state the caller did not see (advance pins its stage here).
        let release = match &command {
            RolloutCommand::Plan { release, .. }
            | RolloutCommand::Start { release, .. }
            | RolloutCommand::Advance { release, .. }
            | RolloutCommand::Pause { release, .. }
            | RolloutCommand::Resume { release }
            | RolloutCommand::Freeze { release, .. }
            | RolloutCommand::Complete { release, .. } => ReleaseId::parse(release)?,
        };
        let r = release.clone();
        let command = match command {
            RolloutCommand::Plan { plan_file, .. } => {
                let text = read_input(&plan_file)?;
                let plan = RolloutPlan::from_text(&text, format_of(&plan_file))
                    .map_err(|e| file_failure(&plan_file, e))?;
                Command::PlanRollout { release: r, plan }
            }
            RolloutCommand::Start { force, reason, .. } => Command::StartRollout {
                release: r,
                bucketing_salt: uuid::Uuid::new_v4().simple().to_string(),
                force_reason: if force { reason } else { None },
            },
            RolloutCommand::Advance {
                from,
                force,
                reason,
                ..
            } => {
                let from_stage = match from {
                    Some(stage) => stage,
                    None => {
                        let family = registered(conn.ledger.load(release.prompt()).await?)?;
                        let current = known_release(&family.state, &release)?;
                        current
                            .status
                            .stage()
                            .and_then(|i| current.stage_name(i))
                            .unwrap_or_default()
                            .to_string()
                    }
                };
                // The canary monitor's published judgement, when there is one.
                let readiness = read_status(conn.ledger.jetstream(), &release)
                    .await
                    .map_err(|e| Failure::other(e.to_string()))?
                    .map(|s| s.readiness());
                Command::AdvanceStage {
                    release: r,
                    from_stage,
                    force_reason: if force { reason } else { None },
                    readiness,
                }
            }
            RolloutCommand::Pause { reason, .. } => Command::PauseRollout { release: r, reason },
            RolloutCommand::Resume { .. } => Command::ResumeRollout { release: r },
            RolloutCommand::Freeze { reason, .. } => Command::FreezeRollout {
                release: r,
                reason,
                evidence: None,
            },
            RolloutCommand::Complete { force, reason, .. } => Command::CompleteRelease {
                release: r,
                force_reason: if force { reason } else { None },
            },
        };
        let make = |_: &PromptState| Ok(command.clone());
        let done = self.exec(&conn, release.prompt(), make).await?;
        let routing = self.publish_routing(&conn, &done).await?;
        let r = done
            .state
            .release(&release)
            .expect("the release exists after a command on it");
        let summary = match done.recorded.first().map(|x| &x.envelope.event) {
            Some(event) => render::summarize(event),
            None => format!("{release}: already recorded, nothing changed"),
        };
        let stage = r
            .status
            .stage()
            .and_then(|i| r.stage_name(i))
            .map(str::to_string);
        Ok(Report::ok(
            format!("{summary}{}", routing_note(routing)),
            json!({ "release": release, "state": r.status.name(), "stage": stage, "recorded": recorded_json(&done.recorded) }),
        ))
    }

    async fn regressions(&self, command: RegressionsCommand) -> Result<Report, Failure> {
        use pledger_core::decide::{prompt_of_case, NewRegressionCase};
        use pledger_core::event::CaseSource;
        match command {
            RegressionsCommand::Add {
                prompt,
                tag,
                example_file,
                version,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let tag: pledger_core::outcome::FeedbackTag = serde_json::from_value(json!(tag)).map_err(|_| {
                    Failure::usage(format!("--tag `{tag}` is not one of unexpected_refusal, wrong_tool_sequence, hallucinated_field, excessive_verbosity"))
                })?;
                let text = read_input(&example_file)?;
                if text.len() > pledger_core::outcome::MAX_FEEDBACK_EXAMPLE_BYTES {
                    return Err(Failure::usage(format!(
                        "{}: {} bytes is over the example limit of {} bytes",
                        example_file.display(),
                        text.len(),
                        pledger_core::outcome::MAX_FEEDBACK_EXAMPLE_BYTES
                    )));
                }
                let policy = pledger_infra::worker::feedback::redaction_policy()
                    .map_err(|e| Failure::usage(e.to_string()))?;
                let redactor = pledger_core::redact::Redactor::new(&policy)
                    .map_err(|e| Failure::usage(format!("redaction policy: {e}")))?;
                let example = redactor.redact(text.trim()).text;
                let fp = pledger_core::redact::fingerprint(&prompt, tag, &example);
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, &prompt, |s| {
                        let version = match &version {
                            Some(v) => Some(resolve_version(s, v)?),
                            None => s.stable.clone(),
                        };
                        Ok(Command::CollectRegressionCase(NewRegressionCase {
                            fingerprint: fp.clone(),
                            tag,
                            example: example.clone(),
                            version,
                            release: None,
                            source: CaseSource::Manual,
                            count: 1,
                            through_sequence: 0,
                        }))
                    })
                    .await?;
                let case = done
                    .state
                    .case_by_fingerprint(&fp)
                    .expect("the case exists after collecting it");
                Ok(Report::ok(
                    format!(
                        "{} {}: {}",
                        case.case_id,
                        if done.recorded.is_empty() {
                            "already filed"
                        } else {
                            "filed"
                        },
                        case.example
                    ),
                    json!({ "case": case.case_id, "new": !done.recorded.is_empty(), "example": case.example }),
                ))
            }
            RegressionsCommand::List { prompt, all } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(&prompt).await?)?;
                let required: Vec<&str> = family
                    .state
                    .cases_to_cover()
                    .iter()
                    .map(|c| c.case_id.as_str())
                    .collect();
                let cases: Vec<_> = family
                    .state
                    .regression_cases
                    .values()
                    .filter(|c| all || c.closed.is_none())
                    .collect();
                let mut text = String::new();
                for c in &cases {
                    text.push_str(&format!(
                        "{}  {:<22} x{:<5} {:<9} {}{}\n",
                        c.case_id,
                        serde_json::to_value(c.tag)
                            .expect("tag")
                            .as_str()
                            .unwrap_or_default(),
                        c.count,
                        if required.contains(&c.case_id.as_str()) {
                            "required"
                        } else {
                            ""
                        },
                        c.closed
                            .as_ref()
                            .map(|r| format!("(closed: {r}) "))
                            .unwrap_or_default(),
                        c.example
                    ));
                }
                let counters = feedback_counters(&conn, &prompt).await;
                if let Some(c) = &counters {
                    text.push_str(&format!(
                        "feedback collector: {} reports, {} cases recorded, {} new cases refused by the rate limit\n",
                        c["reports"], c["cases_recorded"], c["rate_limited"]
                    ));
                }
                Ok(Report::ok(
                    text,
                    json!({ "prompt": prompt, "cases": cases, "required_by_next_gate": required, "collector": counters }),
                ))
            }
            RegressionsCommand::Export { prompt, since } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(&prompt).await?)?;
                let since_at = match since {
                    Some(r) => {
                        let r = ReleaseId::parse(&r)?;
                        Some(known_release(&family.state, &r)?.proposed_at)
                    }
                    None => None,
                };
                let lines: Vec<Value> = family
                    .state
                    .regression_cases
                    .values()
                    .filter(|c| c.closed.is_none() && since_at.is_none_or(|t| c.first_seen > t))
                    .map(|c| {
                        json!({
                            "case_id": c.case_id, "prompt": prompt, "tag": c.tag, "example": c.example,
                            "version": c.version, "release": c.release, "source": c.source,
                            "first_seen": c.first_seen, "last_seen": c.last_seen, "count": c.count
                        })
                    })
                    .collect();
                let text = lines
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(Report::ok(
                    text,
                    json!({ "prompt": prompt, "cases": lines }),
                ))
            }
            RegressionsCommand::Close { case, reason } => {
                let prompt = prompt_of_case(&case)?;
                let conn = self.connect().await?;
                let done = self
                    .exec(&conn, &prompt, |_| {
                        Ok(Command::CloseRegressionCase {
                            case_id: case.clone(),
                            reason: reason.clone(),
                        })
                    })
                    .await?;
                Ok(Report::ok(
                    format!(
                        "{case} {}",
                        if done.recorded.is_empty() {
                            "was already closed"
                        } else {
                            "closed"
                        }
                    ),
                    json!({ "case": case, "new": !done.recorded.is_empty(), "recorded": recorded_json(&done.recorded) }),
                ))
            }
        }
    }

    async fn resolve(
        &self,
        prompt: &str,
        unit: Option<&str>,
        attrs: &[String],
    ) -> Result<Report, Failure> {
        let prompt = PromptName::parse(prompt)?;
        let mut attributes = BTreeMap::new();
        for a in attrs {
            let (k, v) = a
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| {
                    Failure::usage(format!("--attr `{a}` is not of the form KEY=VALUE"))
                })?;
            attributes.insert(k.trim().to_string(), v.to_string());
        }
        let conn = self.connect().await?;
        let table = match conn.routing.get(&prompt).await? {
            Some((table, _)) => table,
            None => {
                let family = registered(conn.ledger.load(&prompt).await?)?;
                routing_table_for(&family.state, family.last_sequence)
            }
        };
        let resolution = resolve(&table, unit, &attributes);
        let text = match (&resolution.version, resolution.arm, &resolution.release) {
            (Some(v), Some(Arm::Candidate), Some(r)) => format!("{v} (candidate, release {r})"),
            (Some(v), Some(Arm::Baseline), Some(r)) => format!("{v} (baseline, release {r})"),
            (Some(v), _, _) => format!("{v} (stable)"),
            (None, _, _) => format!("`{prompt}` has no stable version yet: nothing to serve"),
        };
        Ok(Report::ok(
            text,
            json!({ "version": resolution.version, "release": resolution.release, "arm": resolution.arm }),
        ))
    }
}

/// The feedback collector's published counters of a prompt, if it has published any.
async fn feedback_counters(conn: &Conn, prompt: &PromptName) -> Option<Value> {
    let kv = conn
        .ledger
        .jetstream()
        .get_key_value(pledger_infra::ledger::CANARY_STATUS_BUCKET)
        .await
        .ok()?;
    let bytes = kv
        .get(pledger_infra::worker::feedback::status_key(prompt))
        .await
        .ok()??;
    serde_json::from_slice(&bytes).ok()
}

fn routing_note(w: RoutingWrite) -> String {
    match w {
        RoutingWrite::Written(rev) => format!("\nrouting table updated (revision {rev})"),
        RoutingWrite::AlreadyCurrent => String::new(),
    }
}

fn history_report(title: &str, events: &[Recorded], mut json: Value) -> Report {
    json["events"] = Value::Array(events.iter().map(recorded_entry).collect());
    Report::ok(
        format!(
            "{title}: {} events\n{}",
            events.len(),
            render::history_lines(events)
        ),
        json,
    )
}

/// The family's ignored messages (those on `subject` only, when given).
fn ignored_of<'a>(
    family: &'a Family,
    subject: Option<&'a str>,
) -> impl Iterator<Item = &'a pledger_core::verify::Finding> + 'a {
    let prefix = pledger_infra::ledger::family_filter(&family.state.name);
    family
        .ignored
        .iter()
        .map(|i| &i.finding)
        .filter(move |f| match subject {
            Some(s) => f.subject == s,
            None => f.subject.starts_with(prefix.trim_end_matches('>')),
        })
}

fn ignored_json(family: &Family, subject: Option<&str>) -> Value {
    json!(ignored_of(family, subject).collect::<Vec<_>>())
}

/// "N events ignored" and where to look, for `prompt show` and `release show`.
fn ignored_note(family: &Family, subject: Option<&str>) -> String {
    let found: Vec<_> = ignored_of(family, subject).collect();
    if found.is_empty() {
        return String::new();
    }
    let at: Vec<String> = found.iter().map(|f| f.sequence.to_string()).collect();
    format!(
        "\n{} ledger event(s) ignored: they failed verification (sequence {}); `pledger audit log {}` lists them with the reason\n",
        found.len(),
        at.join(", "),
        family.state.name
    )
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

fn recorded_entry(r: &Recorded) -> Value {
    json!({ "sequence": r.sequence, "subject": r.subject, "event": r.envelope })
}

fn recorded_json(recorded: &[Recorded]) -> Value {
    Value::Array(recorded.iter().map(|r| json!({ "sequence": r.sequence, "kind": r.envelope.kind(), "event_id": r.envelope.event_id })).collect())
}

fn unknown_prompt(prompt: &PromptName) -> Failure {
    Rejection {
        rule: Rule::UnknownPrompt,
        message: format!("prompt `{prompt}` is not registered (run `pledger prompt register {prompt} --owner <TEAM>`)"),
    }
    .into()
}

pub(crate) fn registered(family: Family) -> Result<Family, Failure> {
    if family.state.is_registered() {
        Ok(family)
    } else {
        Err(unknown_prompt(&family.state.name))
    }
}

fn known_release<'a>(
    state: &'a PromptState,
    release: &ReleaseId,
) -> Result<&'a ReleaseState, Failure> {
    state.release(release).ok_or_else(|| {
        Rejection {
            rule: Rule::UnknownRelease,
            message: format!("there is no release {release}"),
        }
        .into()
    })
}

pub(crate) fn format_of(path: &Path) -> FileFormat {
    FileFormat::from_path(&path.to_string_lossy())
}

/// Reads an input file, refusing huge ones before reading them.
pub(crate) fn read_input(path: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", path.display())))?;
    if meta.len() > MAX_INPUT_FILE {
        return Err(Failure::usage(format!(
            "{}: {} bytes is over the input limit of {MAX_INPUT_FILE} bytes",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "{}: cannot read as UTF-8 text: {e}",
            path.display()
        ))
    })
}
