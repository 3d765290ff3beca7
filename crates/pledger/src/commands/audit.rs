//! `pledger audit log`.

use pledger_core::PromptName;
use pledger_infra::Family;
use serde_json::json;

use crate::app::{ignored_of, recorded_entry, registered, App, Report};
use crate::cli::AuditCommand;
use crate::failure::Failure;
use crate::render;

impl App {
    pub(crate) async fn audit(&self, command: AuditCommand) -> Result<Report, Failure> {
        match command {
            AuditCommand::Log { prompt } => {
                let prompt = PromptName::parse(&prompt)?;
                let conn = self.connect().await?;
                let family = registered(conn.ledger.load(&prompt).await?)?;
                Ok(audit_log(&prompt, &family))
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
