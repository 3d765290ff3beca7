//! `pledger prompt register|publish|adopt|policy|show|diff|history|list`.

use pledger_core::decide::resolve_version;
use pledger_core::diff::diff_artifacts;
use pledger_core::{Artifact, Command, GatePolicy, PromptName};
use pledger_infra::Recorded;
use serde_json::{json, Value};

use crate::app::{
    format_of, ignored_json, ignored_note, read_input, recorded_entry, recorded_json, registered,
    routing_note, App, Report,
};
use crate::cli::PromptCommand;
use crate::failure::{file_failure, Failure};
use crate::render;

impl App {
    pub(crate) async fn prompt(&self, command: PromptCommand) -> Result<Report, Failure> {
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
            PromptCommand::Show {
                prompt,
                version,
                all,
            } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let mut family = registered(conn.ledger.load(&prompt).await?)?;
                if let Some(reference) = version {
                    let id = resolve_version(&family.state, &reference)?;
                    if !family.state.versions.contains_key(&id) {
                        // A version the live state let go of: the full read keeps every one.
                        family = conn.ledger.load_all(&prompt).await?;
                    }
                    let published = &family.state.versions[&id];
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
                if all {
                    family = conn.ledger.load_all(&prompt).await?;
                }
                let state = &family.state;
                let mut text = format!(
                    "prompt `{prompt}`  owner {}\n  stable  {}\n  versions\n",
                    state.owner.as_deref().unwrap_or_default(),
                    state
                        .stable
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "none (adopt one with `pledger prompt adopt`)".into())
                );
                let shown = if all { usize::MAX } else { SHOW_LATEST };
                let earlier = |n: usize, what: &str| {
                    format!("    ({n} earlier {what}: `pledger prompt show {prompt} --all`)\n")
                };
                let skipped = state.version_order.len().saturating_sub(shown);
                if skipped > 0 {
                    text.push_str(&earlier(skipped, "versions"));
                }
                for v in state.version_order.iter().skip(skipped) {
                    let Some(p) = state.versions.get(&v) else {
                        continue;
                    };
                    let mark = if Some(&v) == state.stable.as_ref() {
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
                // Numbers run from 1 without gaps; a live state keeps at least the latest
                // `SHOW_LATEST` of them in full.
                let skipped = (state.last_release_number() as usize).saturating_sub(shown);
                if skipped > 0 {
                    text.push_str(&earlier(skipped, "releases"));
                }
                for r in state.releases.range(skipped as u32 + 1..).map(|(_, r)| r) {
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
                    json!({ "state": state, "last_sequence": family.last_sequence, "snapshot_through": family.resumed_from.as_ref().map(|s| s.through), "events_read": family.events.len(), "ignored": ignored_json(&family, None) }),
                ))
            }
            PromptCommand::Diff { prompt, from, to } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let mut family = registered(conn.ledger.load(&prompt).await?)?;
                let (from, to) = (
                    resolve_version(&family.state, &from)?,
                    resolve_version(&family.state, &to)?,
                );
                if !(family.state.versions.contains_key(&from)
                    && family.state.versions.contains_key(&to))
                {
                    // A version the live state let go of: the full read keeps every one.
                    family = conn.ledger.load_all(&prompt).await?;
                }
                let diff = diff_artifacts(
                    &family.state.versions[&from].artifact,
                    &family.state.versions[&to].artifact,
                );
                let text = render::artifact_diff(&from.to_string(), &to.to_string(), &diff);
                Ok(Report::ok(
                    text,
                    json!({ "prompt": prompt, "from": from, "to": to, "diff": diff }),
                ))
            }
            PromptCommand::History { prompt } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load_all(&prompt).await?)?;
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
}

/// Versions and releases `prompt show` lists without `--all` (the latest ones).
const SHOW_LATEST: usize = pledger_core::state::RECENT;

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
