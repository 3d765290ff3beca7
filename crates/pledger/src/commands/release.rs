//! `pledger release propose|review|attach-eval|accept-tradeoff|revise|withdraw|gate|show|list`.

use pledger_core::decide::resolve_version;
use pledger_core::event::{Event, ReviewLayer, ReviewVerdict};
use pledger_core::{Command, EvalBundle, PromptName, ReleaseId};
use pledger_infra::worker::canary::read_status;
use pledger_infra::Recorded;
use serde_json::json;

use crate::app::{
    format_of, ignored_json, ignored_note, known_release, read_input, recorded_entry,
    recorded_json, registered, unknown_prompt, App, Report,
};
use crate::cli::{LayerArg, ReleaseCommand};
use crate::failure::{file_failure, Exit, Failure};
use crate::render;

impl App {
    pub(crate) async fn release(&self, command: ReleaseCommand) -> Result<Report, Failure> {
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
                promptfoo,
                mapping,
            } => {
                let release = ReleaseId::parse(&release)?;
                // Input files are read and checked before anything connects.
                let (bundle, converted) = match (&bundle_file, &promptfoo) {
                    (_, Some(results)) => {
                        (None, Some(super::eval::read_promptfoo(results, &mapping)?))
                    }
                    (Some(bundle_file), None) => {
                        let text = read_input(bundle_file)?;
                        let bundle = EvalBundle::from_text(&text, format_of(bundle_file))
                            .map_err(|e| file_failure(bundle_file, e))?;
                        (Some(bundle), None)
                    }
                    (None, None) => {
                        return Err(Failure::usage(
                            "attach-eval needs a bundle file or --promptfoo <RESULTS>",
                        ))
                    }
                };
                let conn = self.connect().await?;
                let (bundle, note) = match (bundle, converted, &promptfoo) {
                    (Some(bundle), _, _) => (bundle, String::new()),
                    (None, Some(converted), Some(results)) => {
                        let family = registered(conn.ledger.load(release.prompt()).await?)?;
                        let r = known_release(&family.state, &release)?;
                        let baseline = r.baseline.clone().ok_or_else(|| {
                            Failure::usage(format!("{release} has no baseline version"))
                        })?;
                        let bundle = super::eval::promptfoo_bundle(
                            results,
                            &mapping,
                            &converted,
                            r.candidate.clone(),
                            baseline,
                        )?;
                        (
                            bundle,
                            format!("; {}", super::eval::conversion_note(&converted)),
                        )
                    }
                    _ => unreachable!("a bundle file or a converted promptfoo run"),
                };
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
                        "eval bundle `{}` attached to {release} ({} segments, {} regressions{note}){}",
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
                let family = registered(conn.ledger.load_all(release.prompt()).await?)?;
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
                    render::release_summary(&family.state, &r),
                    canary
                        .as_ref()
                        .map(render::canary_status)
                        .unwrap_or_default(),
                    render::history_lines(&history),
                    ignored_note(&family, Some(&subject))
                );
                let gate_current = r
                    .current_gate(&family.state.policy_digest)
                    .map(|g| g.passed);
                Ok(Report::ok(
                    text,
                    json!({ "release": r, "state": r.status.name(), "gate_current": gate_current, "canary": canary, "history": history.iter().map(recorded_entry).collect::<Vec<_>>(), "ignored": ignored_json(&family, Some(&subject)) }),
                ))
            }
            ReleaseCommand::List { prompt, all } => {
                let conn = self.connect().await?;
                let prompts = match prompt {
                    Some(p) => vec![PromptName::parse(&p)?],
                    None => conn.ledger.prompts().await?,
                };
                let mut text = String::new();
                let mut rows = Vec::new();
                for p in prompts {
                    let family = if all {
                        conn.ledger.load_all(&p).await?
                    } else {
                        conn.ledger.load(&p).await?
                    };
                    if !family.state.is_registered() {
                        return Err(unknown_prompt(&p));
                    }
                    // Without --all: open releases and the latest ended ones (what the live
                    // state keeps in full).
                    let left_out = (family.state.last_release_number() as usize)
                        .saturating_sub(family.state.releases.len());
                    if left_out > 0 {
                        text.push_str(&format!(
                            "`{p}`: {left_out} earlier ended releases (`pledger release list {p} --all`)\n"
                        ));
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
}
