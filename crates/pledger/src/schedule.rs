//! `pledger windows ...` and `pledger digest`: release windows and the weekly digest.

use std::fmt::Write as _;

use pledger_core::digest::Digest;
use pledger_core::event::Event;
use pledger_core::window::{
    last_completed_week, parse_week, week_containing, ReleaseWindows, WindowState,
};
use pledger_core::{Command, DurationSpec, FileFormat, PromptName, Timestamp};
use pledger_infra::ledger::{now, DIGEST_FILTER};
use pledger_infra::worker::scheduler::{compose_digest, ensure_digest, SchedulerConfig};
use serde_json::json;

use crate::app::{format_of, read_input, registered, App, Report};
use crate::cli::WindowsCommand;
use crate::failure::{Exit, Failure};

impl App {
    pub(crate) async fn windows(&self, command: WindowsCommand) -> Result<Report, Failure> {
        match command {
            WindowsCommand::Set {
                prompt,
                global: _,
                file,
            } => {
                let text = read_input(&file)?;
                let parsed = match format_of(&file) {
                    FileFormat::Json => ReleaseWindows::from_json(&text),
                    _ => ReleaseWindows::from_toml(&text),
                }
                .map_err(|e| {
                    Failure::usage(format!("{}: {}: {}", file.display(), e.field, e.message))
                })?;
                self.set_windows(prompt, Some(parsed)).await
            }
            WindowsCommand::Clear { prompt, global: _ } => self.set_windows(prompt, None).await,
            WindowsCommand::Show { prompt } => self.show_windows(prompt).await,
        }
    }

    async fn set_windows(
        &self,
        prompt: Option<String>,
        windows: Option<ReleaseWindows>,
    ) -> Result<Report, Failure> {
        let conn = self.connect().await?;
        let (scope, changed) = match prompt {
            Some(p) => {
                let prompt = PromptName::parse(&p)?;
                let w = windows.clone();
                let done = self
                    .exec(&conn, &prompt, move |_| {
                        Ok(Command::SetReleaseWindows { windows: w.clone() })
                    })
                    .await?;
                (format!("prompt `{prompt}`"), !done.recorded.is_empty())
            }
            None => {
                let signer = self.signer()?;
                let done = conn
                    .ledger
                    .set_fleet_windows(windows.clone(), &signer)
                    .await?;
                ("the global windows".to_string(), done.is_some())
            }
        };
        let what = match (&windows, changed) {
            (_, false) => "unchanged, nothing recorded".to_string(),
            (Some(w), true) => format!(
                "set: {} open and {} closed window(s) in {}",
                w.open.len(),
                w.closed.len(),
                w.timezone
            ),
            (None, true) => "cleared".to_string(),
        };
        Ok(Report::ok(
            format!("release windows of {scope} {what}"),
            json!({ "scope": scope, "recorded": changed, "windows": windows }),
        ))
    }

    async fn show_windows(&self, prompt: Option<String>) -> Result<Report, Failure> {
        let conn = self.connect().await?;
        let (global, _) = conn.ledger.fleet_windows().await?;
        let own = match &prompt {
            Some(p) => {
                let prompt = PromptName::parse(p)?;
                registered(conn.ledger.load(&prompt).await?)?.state.windows
            }
            None => None,
        };
        let (scope, windows) = match (own, global) {
            (Some(w), _) => (format!("prompt `{}`", prompt.unwrap_or_default()), Some(w)),
            (None, Some(w)) => ("the global windows".to_string(), Some(w)),
            (None, None) => ("none: always open".to_string(), None),
        };
        let now = now();
        let Some(w) = windows else {
            return Ok(Report::ok(
                format!("release windows: {scope}"),
                json!({ "scope": scope, "windows": null, "open": true }),
            ));
        };
        let compiled = w.compile()?;
        let mut text = format!("release windows: {scope}, time zone {}\n", w.timezone);
        for (label, specs) in [("open  ", &w.open), ("closed", &w.closed)] {
            for s in specs {
                let note = s
                    .note
                    .as_deref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default();
                let _ = writeln!(text, "  {label} `{}` for {}{note}", s.cron, s.duration);
            }
        }
        let when = |t: Timestamp| {
            format!(
                "{} ({}, in {})",
                compiled.local(t),
                t.to_rfc3339(),
                DurationSpec::from_millis(t.millis_since(now).max(0) as u64)
            )
        };
        let (open, opens_at, closes_at) = match compiled.state(now) {
            WindowState::Open { closes_at } => {
                let _ = write!(
                    text,
                    "now ({}): OPEN{}",
                    compiled.local(now),
                    closes_at
                        .map(|t| format!(", closes {}", when(t)))
                        .unwrap_or_default()
                );
                (true, None, closes_at)
            }
            WindowState::Closed { opens_at, blackout } => {
                let _ = write!(
                    text,
                    "now ({}): CLOSED{}; {}",
                    compiled.local(now),
                    blackout.map(|b| format!(" by `{b}`")).unwrap_or_default(),
                    opens_at
                        .map(|t| format!("next window opens {}", when(t)))
                        .unwrap_or_else(|| "no window opens within 400 days".into())
                );
                (false, opens_at, None)
            }
        };
        Ok(Report::ok(
            text,
            json!({
                "scope": scope,
                "windows": w,
                "now": now,
                "open": open,
                "opens_at": opens_at,
                "closes_at": closes_at,
            }),
        ))
    }

    /// `pledger digest [--week DATE]`: the recorded digest of a finished week (recording it
    /// first if no scheduler has), or a preview of the current week (never recorded).
    pub(crate) async fn digest(&self, week: Option<String>) -> Result<Report, Failure> {
        let config = SchedulerConfig::from_env().map_err(|e| Failure::usage(e.to_string()))?;
        let now = now();
        let week = match week {
            Some(raw) => parse_week(&raw, &config.timezone)?,
            None => last_completed_week(now, &config.timezone)?,
        };
        let conn = self.connect().await?;
        let current = week_containing(now, &config.timezone)?;
        let (digest, status) = if week.end > now {
            let d = compose_digest(&conn.ledger, &week, &config)
                .await
                .map_err(|e| Failure::other(e.to_string()))?;
            let note = if week.label == current.label {
                "in progress: a preview, not recorded"
            } else {
                "in the future: a preview, not recorded"
            };
            (d, note.to_string())
        } else {
            // Showing a finished week needs no identity; recording it needs an enrolled key
            // whose roles allow it. Without one, the digest is shown, not recorded.
            let recording = match (conn.ledger.digest(&week.label).await?, self.signer()) {
                (Some(recorded), _) => Ok((recorded, false)),
                (None, Ok(signer)) => ensure_digest(&conn.ledger, &week, &config, &signer)
                    .await
                    .map_err(Failure::from),
                (None, Err(why)) => Err(why),
            };
            let (recorded, created) = match recording {
                Ok(r) => r,
                Err(why) if matches!(why.exit, Exit::Usage | Exit::Rejected) => {
                    let d = compose_digest(&conn.ledger, &week, &config)
                        .await
                        .map_err(|e| Failure::other(e.to_string()))?;
                    let status = format!("not recorded ({})", why.message);
                    return Ok(Report::ok(
                        render_digest(&d, &status),
                        json!({ "status": status, "digest": d }),
                    ));
                }
                Err(other) => return Err(other),
            };
            let Event::DigestRecorded(d) = recorded.envelope.event else {
                return Err(Failure::other(format!(
                    "the digest subject of {} holds a {} event",
                    week.label,
                    recorded.envelope.kind()
                )));
            };
            let note = format!(
                "{} by {} at {} (ledger sequence {})",
                if created { "recorded now" } else { "recorded" },
                recorded.envelope.actor,
                recorded.envelope.occurred_at.to_rfc3339(),
                recorded.sequence
            );
            (d.digest, note)
        };
        Ok(Report::ok(
            render_digest(&digest, &status),
            json!({ "status": status, "digest": digest }),
        ))
    }
}

impl App {
    /// `pledger digest --list`: every recorded digest, oldest week first.
    pub(crate) async fn digest_list(&self) -> Result<Report, Failure> {
        let conn = self.connect().await?;
        let mut rows = Vec::new();
        for r in conn.ledger.read_all(DIGEST_FILTER).await?.accepted {
            if let Event::DigestRecorded(d) = &r.envelope.event {
                rows.push(json!({
                    "week": d.week,
                    "recorded_by": r.envelope.actor,
                    "recorded_at": r.envelope.occurred_at,
                    "sequence": r.sequence,
                    "quiet": d.digest.is_quiet(),
                }));
            }
        }
        rows.sort_by(|a, b| a["week"].as_str().cmp(&b["week"].as_str()));
        let mut text = format!("{} recorded digest(s)", rows.len());
        for r in &rows {
            let _ = write!(
                text,
                "\n  {}  recorded by {} at {} (sequence {}){}",
                r["week"].as_str().unwrap_or_default(),
                r["recorded_by"].as_str().unwrap_or_default(),
                r["recorded_at"].as_str().unwrap_or_default(),
                r["sequence"],
                if r["quiet"] == true {
                    ", a quiet week"
                } else {
                    ""
                }
            );
        }
        Ok(Report::ok(text, json!({ "digests": rows })))
    }
}

/// The digest for people.
pub fn render_digest(d: &Digest, status: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Weekly digest {} ({} to {}, {}) — {status}",
        d.week,
        d.start.to_rfc3339(),
        d.end.to_rfc3339(),
        d.timezone
    );
    if d.is_quiet() {
        let _ = writeln!(
            t,
            "  a quiet week: nothing shipped, froze or waits for anyone"
        );
        return t;
    }
    section(&mut t, "Shipped", &d.shipped, |s| {
        format!(
            "{} → {} ({} by {})",
            s.release,
            s.version.short(),
            s.at.to_rfc3339(),
            s.by
        )
    });
    section(&mut t, "Frozen", &d.frozen, |f| {
        let mut line = format!(
            "{} at stage `{}` ({} by {}): {}",
            f.release,
            f.stage,
            f.at.to_rfc3339(),
            f.by,
            f.reason
        );
        if let Some(e) = &f.evidence {
            let _ = write!(
                line,
                "\n      evidence: candidate {} samples, control {} samples",
                e.candidate.samples, e.control.samples
            );
            for g in e.guardrails.iter().filter(|g| g.breached) {
                let _ = write!(line, "; {}", g.words);
            }
        }
        line
    });
    section(&mut t, "Rolled back", &d.rolled_back, |r| {
        format!(
            "{} ({} → {}, {} by {}): {}",
            r.release,
            r.from_version.short(),
            r.to_version.short(),
            r.at.to_rfc3339(),
            r.by,
            r.reason
        )
    });
    section(&mut t, "Gates failed", &d.gates_failed, |g| {
        format!(
            "{} ({}): {}",
            g.release,
            g.at.to_rfc3339(),
            g.failed_checks.join("; ")
        )
    });
    section(&mut t, "Trade-offs accepted", &d.tradeoffs, |x| {
        format!(
            "{} by {} ({}): {}",
            x.release,
            x.accepted_by,
            x.at.to_rfc3339(),
            x.reason
        )
    });
    section(
        &mut t,
        "Forced past a window or readiness",
        &d.forced,
        |f| {
            format!(
                "{} {} by {} ({}): {}",
                f.release,
                f.step,
                f.by,
                f.at.to_rfc3339(),
                f.reason
            )
        },
    );
    section(
        &mut t,
        "Open regression cases, by prompt",
        &d.open_cases,
        |c| format!("{}: {} open ({})", c.prompt, c.count, c.case_ids.join(", ")),
    );
    section(
        &mut t,
        &format!("Stale reviews (waiting over {})", d.stale_review_after),
        &d.stale_reviews,
        |s| {
            format!(
                "{} candidate {} waiting since {} for the {} review",
                s.release,
                s.candidate.short(),
                s.waiting_since.to_rfc3339(),
                s.missing
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        },
    );
    t
}

fn section<T>(t: &mut String, title: &str, items: &[T], line: impl Fn(&T) -> String) {
    if items.is_empty() {
        let _ = writeln!(t, "{title}: none");
        return;
    }
    let _ = writeln!(t, "{title}: {}", items.len());
    for item in items {
        let _ = writeln!(t, "  - {}", line(item));
    }
}

/// The digest page's week: `week` (default the last completed week), its text, where it comes
/// from (recorded, or a preview), and the labels of the weeks before and after it (none after
/// the current week).
pub(crate) struct PageDigest {
    pub week: String,
    pub text: String,
    pub status: String,
    pub previous: Option<String>,
    pub next: Option<String>,
}

/// What `pledger digest` shows, read-only: a recorded digest as recorded, any other week
/// composed as a preview (the page never records one; the scheduler does).
pub(crate) async fn digest_for_page(
    conn: &crate::app::Conn,
    week: Option<String>,
) -> Result<PageDigest, Failure> {
    let config = SchedulerConfig::from_env().map_err(|e| Failure::usage(e.to_string()))?;
    let now = now();
    let week = match week.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        Some(raw) => parse_week(raw, &config.timezone)?,
        None => last_completed_week(now, &config.timezone)?,
    };
    let current = week_containing(now, &config.timezone)?;
    let (digest, status) = match conn.ledger.digest(&week.label).await? {
        Some(recorded) => match recorded.envelope.event {
            Event::DigestRecorded(d) => (
                d.digest,
                format!(
                    "recorded by {} at {} (ledger sequence {})",
                    recorded.envelope.actor,
                    recorded.envelope.occurred_at.to_rfc3339(),
                    recorded.sequence
                ),
            ),
            _ => {
                return Err(Failure::other(format!(
                    "the digest subject of {} holds a {} event",
                    week.label,
                    recorded.envelope.kind()
                )))
            }
        },
        None => {
            let d = compose_digest(&conn.ledger, &week, &config)
                .await
                .map_err(|e| Failure::other(e.to_string()))?;
            let status = if week.label == current.label {
                "in progress: a preview, not recorded"
            } else if week.end > now {
                "in the future: a preview, not recorded"
            } else {
                "not recorded yet (the scheduler records it after the week ends): a preview"
            };
            (d, status.to_string())
        }
    };
    let previous = week_containing(
        Timestamp::from_unix_millis(week.start.unix_millis() - 1),
        &config.timezone,
    )
    .ok()
    .map(|w| w.label);
    let next = (week.end <= current.start)
        .then(|| week_containing(week.end, &config.timezone).ok())
        .flatten()
        .map(|w| w.label);
    Ok(PageDigest {
        text: render_digest(&digest, &status),
        week: week.label,
        status,
        previous,
        next,
    })
}
