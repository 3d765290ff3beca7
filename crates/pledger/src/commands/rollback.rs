//! `pledger rollback`.

use pledger_core::event::Event;
use pledger_core::{Command, PromptName, ReleaseId};
use serde_json::json;

use crate::app::{recorded_json, registered, routing_note, App, Report};
use crate::failure::Failure;

impl App {
    pub(crate) async fn rollback(
        &self,
        prompt: String,
        release: Option<String>,
        reason: String,
    ) -> Result<Report, Failure> {
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
                    .map(|r| r.id.clone())
                    .or_else(|| s.last_completed_serving().map(|r| r.id.clone()))
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
}
