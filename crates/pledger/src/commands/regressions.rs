//! `pledger regressions add|list|export|close`.

use pledger_core::decide::resolve_version;
use pledger_core::{Command, PromptName, ReleaseId};
use serde_json::{json, Value};

use crate::app::{known_release, read_input, recorded_json, registered, App, Conn, Report};
use crate::cli::RegressionsCommand;
use crate::failure::Failure;

impl App {
    pub(crate) async fn regressions(&self, command: RegressionsCommand) -> Result<Report, Failure> {
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
                let counters = feedback_counters(&conn, &prompt).await;
                // Reports the collector holds that are not on the ledger yet (recurrences are
                // recorded at most hourly): the live count is the sum.
                let unrecorded = |fingerprint: &str| {
                    counters
                        .as_ref()
                        .and_then(|c| c["unrecorded"][fingerprint].as_u64())
                        .filter(|n| *n > 0)
                };
                let mut text = String::new();
                for c in &cases {
                    let count = match unrecorded(&c.fingerprint) {
                        Some(n) => format!("{}+{n}", c.count),
                        None => c.count.to_string(),
                    };
                    text.push_str(&format!(
                        "{}  {:<22} x{:<5} {:<9} {}{}\n",
                        c.case_id,
                        serde_json::to_value(c.tag)
                            .expect("tag")
                            .as_str()
                            .unwrap_or_default(),
                        count,
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
                if let Some(c) = &counters {
                    text.push_str(&format!(
                        "feedback collector: {} reports, {} cases recorded, {} new cases refused by the rate limit\n",
                        c["reports"], c["cases_recorded"], c["rate_limited"]
                    ));
                    if cases.iter().any(|c| unrecorded(&c.fingerprint).is_some()) {
                        text.push_str("(x<recorded>+<n>: n more reports, recorded on the ledger within the hour)\n");
                    }
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
