//! The scheduler: the weekly digest, on a cron schedule, exactly once per week, and the
//! periodic checks that find releases needing a person (a baked stage waiting for a manual
//! advance, a stage stuck on too little data, a review waiting too long).
//!
//! The digest is looked after every second, the checks every five.
//!
//! Exactly once: a week's digest goes to its own subject
//! (`pledger.ledger._fleet.digest.<week>`) with `Nats-Expected-Last-Subject-Sequence: 0`, so of
//! any number of replicas (or a replica and `pledger digest`) one append wins and the others
//! find the digest recorded. Catch-up: on every tick the scheduler asks which firing of the
//! cron schedule is the latest at or before now and makes sure *its* week has a digest, so a
//! scheduler that was down across a firing records that week's digest once when it is back,
//! and never one per missed tick. Notices go through the decider like every other fact, once
//! per stage visit or candidate.

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use pledger_core::digest::DigestBuilder;
use pledger_core::event::DigestRecorded;
use pledger_core::state::PromptState;
use pledger_core::verify::EventSigner;
use pledger_core::window::{CronSchedule, Week};
use pledger_core::workers::scheduler::{digest_due, needs_status, notices, NoticeLimits};
use pledger_core::{Command, DurationSpec, PromptName, Timestamp};
use tracing::{info, info_span, warn, Instrument};

use super::canary::read_status;
use super::{stopping, Shutdown, WorkerContext, WorkerError};
use crate::error::InfraError;
use crate::ledger::{now, ExecuteError, Ledger, Recorded, LEDGER_SUBJECTS};

/// When the digest is written, its weeks' zone, and the limits of the periodic checks.
/// Read from the environment so that every scheduler replica and `pledger digest` agree.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// `PLEDGER_DIGEST_CRON` (default `0 0 9 * * Mon`: Mondays 09:00).
    pub digest_cron: String,
    /// `PLEDGER_DIGEST_TIMEZONE` (default `UTC`): weeks run Monday 00:00 to Monday 00:00 here.
    pub timezone: String,
    /// `PLEDGER_STALE_REVIEW_AFTER` (default `3d`).
    pub stale_review_after: DurationSpec,
    /// `PLEDGER_STUCK_AFTER` (default `2h`): how long past its bake time a stage may lack
    /// samples before it is reported.
    pub stuck_after: DurationSpec,
}

impl SchedulerConfig {
    pub fn from_env() -> Result<SchedulerConfig, WorkerError> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        let duration = |name: &str, default: &str| {
            DurationSpec::parse(&var(name, default))
                .map_err(|e| WorkerError::Config(format!("{name}: {}", e.message)))
        };
        let config = SchedulerConfig {
            digest_cron: var("PLEDGER_DIGEST_CRON", "0 0 9 * * Mon"),
            timezone: var("PLEDGER_DIGEST_TIMEZONE", "UTC"),
            stale_review_after: duration("PLEDGER_STALE_REVIEW_AFTER", "3d")?,
            stuck_after: duration("PLEDGER_STUCK_AFTER", "2h")?,
        };
        config.schedule()?;
        Ok(config)
    }

    pub fn schedule(&self) -> Result<CronSchedule, WorkerError> {
        CronSchedule::parse(&self.digest_cron, &self.timezone).map_err(|e| {
            WorkerError::Config(format!(
                "PLEDGER_DIGEST_CRON/PLEDGER_DIGEST_TIMEZONE: {}: {}",
                e.field, e.message
            ))
        })
    }
}

/// Composes a week's digest from the ledger as it stood when the week ended.
pub async fn compose_digest(
    ledger: &Ledger,
    week: &Week,
    config: &SchedulerConfig,
) -> Result<pledger_core::digest::Digest, WorkerError> {
    let mut builder = DigestBuilder::new(
        &week.label,
        week.start,
        week.end,
        &config.timezone,
        config.stale_review_after,
    );
    for r in ledger.read_all(LEDGER_SUBJECTS).await?.accepted {
        builder.observe(&r.envelope);
    }
    Ok(builder.finish())
}

/// Makes sure the week has its digest: returns the recorded one, and whether this call
/// recorded it.
pub async fn ensure_digest(
    ledger: &Ledger,
    week: &Week,
    config: &SchedulerConfig,
    signer: &(dyn EventSigner + Sync),
) -> Result<(Recorded, bool), ExecuteError> {
    if let Some(r) = ledger.digest(&week.label).await? {
        return Ok((r, false));
    }
    let digest = compose_digest(ledger, week, config)
        .await
        .map_err(|e| InfraError::Read(e.to_string()))?;
    let event = DigestRecorded {
        week: week.label.clone(),
        digest,
    };
    match ledger.record_digest(event, signer).await? {
        Some(recorded) => Ok((recorded, true)),
        // Another writer won; theirs stands.
        None => match ledger.digest(&week.label).await? {
            Some(r) => Ok((r, false)),
            None => Err(InfraError::Read(format!(
                "digest {} was refused as already recorded but cannot be read",
                week.label
            ))
            .into()),
        },
    }
}

/// How often the scheduler looks at the clock (for the digest).
const TICK: Duration = Duration::from_secs(1);
/// How often it reads the ledger's new events and runs the periodic checks (each check reads
/// the canary status of every rolling release whose stage has baked).
const CHECK_EVERY: Duration = Duration::from_secs(5);

pub async fn run(ctx: WorkerContext, shutdown: Shutdown) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "scheduler", replica = %ctx.replica);
    async move {
        let config = SchedulerConfig::from_env()?;
        let schedule = config.schedule()?;
        let mut scheduler = Scheduler {
            ctx,
            config,
            schedule,
            states: BTreeMap::new(),
            read_through: 0,
            digest_done_for: None,
            last_check: None,
            last_error_log: None,
        };
        info!(
            cron = %scheduler.config.digest_cron,
            timezone = %scheduler.config.timezone,
            "scheduler started"
        );
        while !stopping(&shutdown) {
            if let Err(e) = scheduler.tick().await {
                // A failed tick is retried on the next one; say so at most once a minute.
                if scheduler
                    .last_error_log
                    .is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(60))
                {
                    warn!("scheduler tick failed (retrying every {TICK:?}): {e}");
                    scheduler.last_error_log = Some(Instant::now());
                }
            }
            let mut s = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = s.changed() => {}
            }
        }
        info!("scheduler stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

struct Scheduler {
    ctx: WorkerContext,
    config: SchedulerConfig,
    schedule: CronSchedule,
    /// Every prompt's verified live state: what the checks read (open releases). Each is
    /// read again when its family has new messages, from the process's shared snapshot
    /// ([`WorkerContext::load`]), so the scheduler keeps no table of its own that grows with
    /// history (it used to fold the whole ledger itself, keeping every event id it verified).
    states: BTreeMap<PromptName, PromptState>,
    read_through: u64,
    /// The cron firing whose week is known to have its digest.
    digest_done_for: Option<Timestamp>,
    last_check: Option<Instant>,
    last_error_log: Option<Instant>,
}

impl Scheduler {
    async fn tick(&mut self) -> Result<(), WorkerError> {
        let now = now();
        self.digest(now).await?;
        if self.last_check.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return Ok(());
        }
        self.catch_up().await?;
        self.checks(now).await?;
        self.last_check = Some(Instant::now());
        Ok(())
    }

    /// The latest firing at or before now: its week must have a digest.
    async fn digest(&mut self, now: Timestamp) -> Result<(), WorkerError> {
        let due = digest_due(
            &self.schedule,
            &self.config.timezone,
            now,
            self.digest_done_for,
        )
        .map_err(|e| WorkerError::Config(e.message))?;
        let Some((fired, week)) = due else {
            return Ok(());
        };
        let (recorded, created) =
            ensure_digest(&self.ctx.ledger, &week, &self.config, &*self.ctx.signer)
                .await
                .map_err(|e| WorkerError::Nats(e.to_string()))?;
        info!(
            sequence = recorded.sequence,
            fired = %fired.to_rfc3339(),
            "week {} has its digest ({})",
            week.label,
            if created { "recorded now" } else { "recorded before" }
        );
        self.digest_done_for = Some(fired);
        Ok(())
    }

    /// Reads again the state of every prompt whose family has new messages.
    async fn catch_up(&mut self) -> Result<(), WorkerError> {
        let raws = self
            .ctx
            .ledger
            .read_raw(&[LEDGER_SUBJECTS], self.read_through)
            .await?;
        let Some(last) = raws.last().map(|r| r.sequence) else {
            return Ok(());
        };
        let touched: std::collections::BTreeSet<PromptName> = raws
            .iter()
            .filter_map(|r| pledger_core::names::prompt_token(&r.subject))
            .filter_map(|token| PromptName::parse(token).ok())
            .collect();
        drop(raws);
        for prompt in touched {
            let family = self.ctx.load(&prompt).await?;
            if family.state.is_registered() {
                self.states.insert(prompt, family.state);
            }
        }
        self.read_through = last;
        Ok(())
    }

    /// Finds what needs a person and records a notice for each, once.
    async fn checks(&mut self, now: Timestamp) -> Result<(), WorkerError> {
        let states = || self.states.values();
        let mut statuses = BTreeMap::new();
        for release in needs_status(states(), now) {
            if let Some(status) = read_status(self.ctx.ledger.jetstream(), &release).await? {
                statuses.insert(release, status);
            }
        }
        let limits = NoticeLimits {
            stale_review_after: self.config.stale_review_after,
            stuck_after: self.config.stuck_after,
        };
        let notices = notices(states(), &statuses, &limits, now);
        for (release, notice) in notices {
            let n = notice.clone();
            let rid = release.clone();
            let result = self
                .ctx
                .ledger
                .execute(
                    release.prompt(),
                    &*self.ctx.signer,
                    &format!("scheduler-{release}"),
                    move |_| {
                        Ok(Command::RaiseNotice {
                            release: rid.clone(),
                            notice: n.clone(),
                        })
                    },
                )
                .await;
            match result {
                Ok(done) if !done.recorded.is_empty() => {
                    warn!(release = %release, "needs a person: {}", notice.describe())
                }
                Ok(_) => {}
                // The release moved on since this replica looked; nothing to report.
                Err(ExecuteError::Rejected(r)) => {
                    tracing::debug!(release = %release, "notice not raised: {r}")
                }
                Err(ExecuteError::Infra(e)) => return Err(e.into()),
                // Raised again on a later check if it is still due.
                Err(e @ ExecuteError::Conflict { .. }) => {
                    warn!(release = %release, "notice not raised this time: {e}")
                }
            }
        }
        Ok(())
    }
}
