//! `pledger rollout plan|start|advance|pause|resume|freeze|complete`.

use pledger_core::state::PromptState;
use pledger_core::{Command, ReleaseId, RolloutPlan};
use pledger_infra::worker::canary::read_status;
use serde_json::json;

use crate::app::{
    format_of, known_release, read_input, recorded_json, registered, routing_note, App, Report,
};
use crate::cli::RolloutCommand;
use crate::failure::{file_failure, Failure};
use crate::render;

impl App {
    pub(crate) async fn rollout(&self, command: RolloutCommand) -> Result<Report, Failure> {
        // Inputs first: a bad release id or plan file is refused before the ledger is
        // contacted. Every rollout command is fixed before the first read: nothing in it
        // depends on a state the caller did not see (advance pins its stage here).
        let release = match &command {
            RolloutCommand::Plan { release, .. }
            | RolloutCommand::Start { release, .. }
            | RolloutCommand::Advance { release, .. }
            | RolloutCommand::Pause { release, .. }
            | RolloutCommand::Resume { release }
            | RolloutCommand::Freeze { release, .. }
            | RolloutCommand::Complete { release, .. } => ReleaseId::parse(release)?,
        };
        let mut plan = match &command {
            RolloutCommand::Plan { plan_file, .. } => {
                let text = read_input(plan_file)?;
                Some(
                    RolloutPlan::from_text(&text, format_of(plan_file))
                        .map_err(|e| file_failure(plan_file, e))?,
                )
            }
            _ => None,
        };
        let conn = self.connect().await?;
        let r = release.clone();
        let command = match command {
            RolloutCommand::Plan { .. } => Command::PlanRollout {
                release: r,
                plan: plan
                    .take()
                    .ok_or_else(|| Failure::other("the rollout plan was not read"))?,
            },
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
}
