//! `pledger notify add|list|remove`: the webhooks the notifier worker delivers to.

use std::fmt::Write as _;

use pledger_core::notify::{NotifyOn, Webhook, WebhookFormat};
use pledger_core::{Rejection, Rule};
use serde_json::json;

use crate::app::{App, Report};
use crate::cli::{NotifyCommand, NotifyFormat};
use crate::failure::Failure;

fn invalid(e: pledger_core::FieldError) -> Rejection {
    Rejection {
        rule: Rule::InvalidInput,
        message: format!("{}: {}", e.field, e.message),
    }
}

impl App {
    pub(crate) async fn notify(&self, command: NotifyCommand) -> Result<Report, Failure> {
        match command {
            NotifyCommand::Add {
                id,
                url,
                events,
                format,
                secret_env,
            } => {
                let webhook = Webhook {
                    id,
                    url,
                    events: NotifyOn::parse_list(&events)?,
                    format: match format {
                        NotifyFormat::Json => WebhookFormat::Json,
                        NotifyFormat::Slack => WebhookFormat::Slack,
                    },
                    secret_env,
                };
                // Refused before connecting: a bad webhook never reaches the ledger.
                webhook.validate()?;
                let signer = self.signer()?;
                let conn = self.connect().await?;
                let added = webhook.clone();
                let recorded = conn
                    .ledger
                    .set_notifications(|set| set.with(added.clone()).map_err(invalid), &signer)
                    .await?;
                Ok(Report::ok(
                    format!(
                        "webhook `{}` added: {} as {}, from ledger sequence {} on (the notifier worker delivers)",
                        webhook.id,
                        webhook
                            .events
                            .iter()
                            .map(|e| e.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        webhook.format.name(),
                        recorded.sequence
                    ),
                    json!({ "webhook": webhook, "sequence": recorded.sequence }),
                ))
            }
            NotifyCommand::Remove { id } => {
                let signer = self.signer()?;
                let conn = self.connect().await?;
                let recorded = conn
                    .ledger
                    .set_notifications(|set| set.without(&id).map_err(invalid), &signer)
                    .await?;
                Ok(Report::ok(
                    format!("webhook `{id}` removed; what was queued for it is dropped"),
                    json!({ "removed": id, "sequence": recorded.sequence }),
                ))
            }
            NotifyCommand::List => {
                let conn = self.connect().await?;
                let (subscriptions, ignored, _) = conn.ledger.notifications().await?;
                let mut text = String::new();
                if subscriptions.webhooks.is_empty() {
                    text.push_str("no webhooks: nobody is notified (`pledger notify add`)\n");
                }
                for s in subscriptions.webhooks.values() {
                    let w = &s.webhook;
                    let _ = writeln!(
                        text,
                        "{}  {}  {}  [{}]{}  since #{}",
                        w.id,
                        w.format.name(),
                        w.url,
                        w.events
                            .iter()
                            .map(|e| e.name())
                            .collect::<Vec<_>>()
                            .join(","),
                        w.secret_env
                            .as_deref()
                            .map(|n| format!("  signed with ${n}"))
                            .unwrap_or_default(),
                        s.since
                    );
                }
                for i in &ignored {
                    let _ = writeln!(
                        text,
                        "ignored: message #{} on the webhooks' subject: {}",
                        i.finding.sequence, i.finding.reason
                    );
                }
                let webhooks: Vec<_> = subscriptions
                    .webhooks
                    .values()
                    .map(|s| json!({ "webhook": s.webhook, "since": s.since }))
                    .collect();
                Ok(Report::ok(
                    text.trim_end().to_string(),
                    json!({ "webhooks": webhooks, "ignored": ignored.len() }),
                ))
            }
        }
    }
}
