//! The canary monitor: aggregates outcomes of each active rollout by stage and arm against a
//! concurrent control, judges every guardrail with an always-valid sequential test after each
//! batch, freezes (and, when the plan says so, rolls back) on a breach, advances healthy
//! stages when the plan allows it, and publishes its judgement for `pledger release show`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pledger_core::canary::JudgeConfig;
use pledger_core::outcome::parse_outcome_message;
use pledger_core::routing::routing_table_for;
use pledger_core::state::{PromptState, VersionIds};
use pledger_core::workers::canary::{
    earlier_stages, ended_visits, stage_visit, tally, view_may_be_stale, Executed, JudgementPoint,
    Monitor, OutcomeMessage, Report, Tally,
};
use pledger_core::{Command, PromptName, ReleaseId, VersionId};
use tracing::{info, info_span, warn, Instrument};

pub use pledger_core::workers::canary::{
    prompt_view, CanaryStatus, ControlKind, Counters, FeedbackLog, FeedbackSeen, PromptView,
    RolloutView, StageStats, FEEDBACK_KEPT,
};

use super::{
    sequence_of, stopping, touched_prompts, Batches, Shutdown, WorkerContext, WorkerError,
};
use crate::ledger::{
    now, ExecuteError, Ledger, CANARY_STATUS_BUCKET, LEDGER_STREAM, LEDGER_SUBJECTS,
    OUTCOMES_STREAM,
};

/// Reads the monitor's status of a release, if one was published.
pub async fn read_status(
    js: &async_nats::jetstream::Context,
    release: &ReleaseId,
) -> Result<Option<CanaryStatus>, WorkerError> {
    let kv = js
        .get_key_value(CANARY_STATUS_BUCKET)
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?;
    match kv
        .get(pledger_core::names::canary_status_key(release))
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?
    {
        Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        None => Ok(None),
    }
}

/// A release's judgement history (stream `PLEDGER_JUDGEMENTS`), oldest first, and how many
/// messages on its subject were not judgement points of this release (skipped: anyone allowed
/// to publish there could have put them there). A ledger created before the stream existed
/// has no history yet: empty, not an error.
pub async fn read_judgements(
    ledger: &Ledger,
    release: &ReleaseId,
) -> Result<(Vec<JudgementPoint>, usize), WorkerError> {
    let subject = pledger_core::names::judgement_subject(release);
    let raws = match ledger
        .read_stream(pledger_core::names::JUDGEMENTS_STREAM, &[&subject], 0)
        .await
    {
        Ok(raws) => raws,
        Err(crate::InfraError::StreamMissing(_)) => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e.into()),
    };
    let mut skipped = 0;
    let mut points = Vec::with_capacity(raws.len());
    for raw in raws {
        match serde_json::from_slice::<JudgementPoint>(&raw.payload) {
            Ok(p) if &p.release == release => points.push(p),
            _ => skipped += 1,
        }
    }
    Ok((points, skipped))
}

const PROMPT_KEYS: &str = "view/";
/// Where views were kept when they listed every version (removed at start).
const OLD_PROMPT_KEYS: &str = "prompt/";
const VERSION_KEYS: &str = "version/";
const STATS_KEYS: &str = "stats/";
fn prompt_key(p: &PromptName) -> String {
    format!("{PROMPT_KEYS}{p}")
}
/// A version the prompt has published: the key exists (its value is the version's position).
fn version_key(p: &PromptName, v: &VersionId) -> String {
    format!("{VERSION_KEYS}{p}/{v}")
}
fn stats_key(r: &RolloutView) -> String {
    visit_key(&stage_visit(r))
}
fn visit_key(visit: &str) -> String {
    format!("{STATS_KEYS}{visit}")
}
/// The prefix of every stage visit's counts of a release.
fn release_visits_prefix(release: &ReleaseId) -> String {
    format!("{STATS_KEYS}{release}/")
}
fn feedback_key(p: &PromptName) -> String {
    format!("feedback/{p}")
}
const COUNTERS_KEY: &str = "counters";

/// How often active rollouts are judged without new outcomes (bake times move on).
const TICK: Duration = Duration::from_secs(1);

/// What the monitor's loop takes next.
enum Next {
    Stop,
    Tick,
    Ledger(Vec<async_nats::jetstream::Message>),
    Outcomes(Vec<async_nats::jetstream::Message>),
}

struct Driver {
    ctx: WorkerContext,
    monitor: Monitor,
    status: async_nats::jetstream::kv::Store,
}

pub async fn run(ctx: WorkerContext, mut shutdown: Shutdown) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "canary", replica = %ctx.replica);
    async move {
        let ledger_consumer = ctx.consumer(LEDGER_STREAM, LEDGER_SUBJECTS).await?;
        let outcome_consumer = ctx
            .consumer(OUTCOMES_STREAM, pledger_core::names::OUTCOMES_FILTER)
            .await?;
        let mut ledger_batches = Batches::new(&ledger_consumer).await?;
        let mut outcome_batches = Batches::new(&outcome_consumer).await?;
        let status = ctx
            .ledger
            .jetstream()
            .get_key_value(CANARY_STATUS_BUCKET)
            .await
            .map_err(|e| {
                WorkerError::Nats(format!("opening bucket {CANARY_STATUS_BUCKET}: {e}"))
            })?;
        let monitor = Monitor::new(JudgeConfig::default(), ctx.replica.clone());
        let mut driver = Driver {
            ctx,
            monitor,
            status,
        };
        driver.bootstrap().await?;
        let mut tick = tokio::time::interval(TICK);
        info!("canary monitor running");
        // Whichever of the two streams was not served last goes first when both have
        // messages ready. (Biased towards the ledger, the monitor judged nothing while releases
        // kept the ledger busy: outcome messages waited unacknowledged until the server
        // delivered them again after `ack_wait`, and the guardrails saw them only once the
        // ledger went quiet.) The tick is ready at most once a second, so it goes first.
        let mut ledger_first = true;
        while !stopping(&shutdown) {
            let wait = Duration::from_millis(250);
            let next = if ledger_first {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => Next::Stop,
                    _ = tick.tick() => Next::Tick,
                    b = ledger_batches.next(wait) => Next::Ledger(b?),
                    b = outcome_batches.next(wait) => Next::Outcomes(b?),
                }
            } else {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => Next::Stop,
                    _ = tick.tick() => Next::Tick,
                    b = outcome_batches.next(wait) => Next::Outcomes(b?),
                    b = ledger_batches.next(wait) => Next::Ledger(b?),
                }
            };
            match next {
                Next::Stop => break,
                Next::Tick => {
                    let tracked = driver.monitor.tracked();
                    driver.judge_each(tracked).await?;
                }
                Next::Ledger(batch) => {
                    ledger_first = false;
                    if !batch.is_empty() {
                        let judge = driver.apply_ledger(&batch).await?;
                        driver.ctx.ack(&batch).await?;
                        driver.judge_each(judge).await?;
                    }
                }
                Next::Outcomes(batch) => {
                    ledger_first = true;
                    if !batch.is_empty() {
                        let touched = driver.apply_outcomes(&batch).await?;
                        driver.ctx.ack(&batch).await?;
                        driver.judge_each(touched).await?;
                    }
                }
            }
        }
        info!("canary monitor stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Messages parsed in one go below this many are parsed on the monitor's own task.
const PARALLEL_PARSE_FROM: usize = 16;

/// Parses outcome messages (sequence, subject, payload), in order: a large batch in as many
/// parts as there are cores, each on a blocking thread, so decoding does not hold the
/// monitor's loop (or the runtime's threads) to one core.
async fn parse_on_every_core(
    fresh: Vec<(u64, String, bytes::Bytes)>,
) -> Result<Vec<OutcomeMessage>, WorkerError> {
    let parse = |part: Vec<(u64, String, bytes::Bytes)>| -> Vec<OutcomeMessage> {
        part.into_iter()
            .map(|(sequence, subject, payload)| OutcomeMessage {
                sequence,
                subject,
                outcomes: parse_outcome_message(&payload),
            })
            .collect()
    };
    let cores = crate::audit::cores();
    if fresh.len() < PARALLEL_PARSE_FROM || cores < 2 {
        return Ok(parse(fresh));
    }
    let per = fresh.len().div_ceil(cores);
    let mut parts = Vec::new();
    let mut rest = fresh.into_iter();
    loop {
        let part: Vec<_> = rest.by_ref().take(per).collect();
        if part.is_empty() {
            break;
        }
        parts.push(tokio::task::spawn_blocking(move || parse(part)));
    }
    let mut out = Vec::new();
    for part in parts {
        match part.await {
            Ok(parsed) => out.extend(parsed),
            // A panic in the parser is the monitor's own panic (its supervisor restarts it).
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(WorkerError::Config(format!("parsing outcomes: {e}"))),
        }
    }
    Ok(out)
}

/// A prompt's view and the versions it published since `stored` (the view the store holds),
/// each to be kept under its [`version_key`]: the store learns each version once.
fn view_with_new_versions(
    prompt: &PromptName,
    state: &PromptState,
    stored: Option<&PromptView>,
) -> (PromptView, Vec<(String, u32)>) {
    let view = prompt_view(state);
    let from = stored.map_or(0, |v| v.versions);
    let added = (from..view.versions)
        .filter_map(|at| Some((version_key(prompt, &state.version_order.get(at)?), at)))
        .collect();
    (view, added)
}

impl Driver {
    /// Keeps `state`'s view of `prompt`, and the versions the store does not know yet.
    fn put_view(
        &self,
        prompt: &PromptName,
        state: &PromptState,
    ) -> Result<PromptView, WorkerError> {
        let stored: Option<PromptView> = self.ctx.store.get(&prompt_key(prompt))?;
        let (view, added) = view_with_new_versions(prompt, state, stored.as_ref());
        for (key, at) in &added {
            self.ctx.store.put(key, at)?;
        }
        self.ctx.store.put(&prompt_key(prompt), &view)?;
        Ok(view)
    }

    /// Refreshes every prompt's view from the ledger at start, so rollouts already active are
    /// judged (and their bake times noticed) even before new events or outcomes arrive.
    async fn bootstrap(&mut self) -> Result<(), WorkerError> {
        let mut active = Vec::new();
        let mut views = Vec::new();
        for key in self.ctx.store.keys_with_prefix(OLD_PROMPT_KEYS)? {
            self.ctx.store.remove(&key)?;
        }
        for prompt in self.ctx.ledger.prompts().await? {
            let family = self.ctx.load(&prompt).await?;
            let metrics = crate::metrics::global();
            metrics.counted_up_to(&prompt, family.last_sequence);
            metrics.observe_prompt(&family.state);
            let view = self.put_view(&prompt, &family.state)?;
            active.extend(view.rollout.as_ref().map(|r| r.release.clone()));
            views.push((prompt, view));
        }
        for key in self.ended_counts(&views)? {
            self.ctx.store.remove(&key)?;
        }
        self.ctx.store.flush().await?;
        self.judge_each(active).await
    }

    /// The keys of the stage counts of rollouts that ended ([`ended_visits`]), with `fresh`
    /// views replacing the stored ones of their prompts.
    fn ended_counts(&self, fresh: &[(PromptName, PromptView)]) -> Result<Vec<String>, WorkerError> {
        let mut views: BTreeMap<String, PromptView> = BTreeMap::new();
        for key in self.ctx.store.keys_with_prefix(PROMPT_KEYS)? {
            if let Some(v) = self.ctx.store.get::<PromptView>(&key)? {
                views.insert(key, v);
            }
        }
        for (p, v) in fresh {
            views.insert(prompt_key(p), v.clone());
        }
        let stats = self.ctx.store.keys_with_prefix(STATS_KEYS)?;
        let visits = stats.iter().map(|k| &k[STATS_KEYS.len()..]);
        Ok(ended_visits(visits, views.values())
            .into_iter()
            .map(|v| visit_key(&v))
            .collect())
    }

    /// Refreshes the views of every prompt a ledger batch touched; returns the active
    /// rollouts among them, to judge once the batch is acked.
    async fn apply_ledger(
        &mut self,
        batch: &[async_nats::jetstream::Message],
    ) -> Result<Vec<ReleaseId>, WorkerError> {
        let applied = self.ctx.store.applied_sequence(LEDGER_STREAM)?;
        let (prompts, last) = touched_prompts(batch, applied, |_| true)?;
        let mut views = Vec::new();
        let mut versions = Vec::new();
        let metrics = crate::metrics::global();
        for p in &prompts {
            let family = self.ctx.load(p).await?;
            metrics.count_events(p, &family.events);
            metrics.observe_prompt(&family.state);
            let stored: Option<PromptView> = self.ctx.store.get(&prompt_key(p))?;
            let (view, added) = view_with_new_versions(p, &family.state, stored.as_ref());
            views.push((p.clone(), view));
            versions.extend(added);
        }
        // The stage counts of rollouts that ended go with the views that end them.
        let dropped = self.ended_counts(&views)?;
        self.ctx.store.apply(LEDGER_STREAM, last, |tx| {
            for (key, at) in &versions {
                tx.put(key, at)?;
            }
            for (p, view) in &views {
                tx.put(&prompt_key(p), view)?;
                // Each visit the monitor sees is recorded (with no counts yet), so outcomes
                // served in it still count there when they arrive after the rollout moved on.
                if let Some(r) = &view.rollout {
                    let key = stats_key(r);
                    if tx.get::<StageStats>(&key)?.is_none() {
                        tx.put(&key, &StageStats::default())?;
                    }
                }
            }
            for key in &dropped {
                tx.remove(key)?;
            }
            Ok(())
        })?;
        Ok(views
            .into_iter()
            .filter_map(|(_, v)| v.rollout.map(|r| r.release))
            .collect())
    }

    /// Counts a batch of outcome messages into their stages, in one transaction with the
    /// batch's last sequence. Returns the releases whose counts changed.
    async fn apply_outcomes(
        &mut self,
        batch: &[async_nats::jetstream::Message],
    ) -> Result<BTreeSet<ReleaseId>, WorkerError> {
        let applied = self.ctx.store.applied_sequence(OUTCOMES_STREAM)?;
        let mut last = applied;
        let mut fresh = Vec::new();
        let mut payloads = BTreeMap::new();
        for m in batch {
            let sequence = sequence_of(m)?;
            last = last.max(sequence);
            if sequence > applied {
                fresh.push((sequence, m.subject.to_string(), m.payload.clone()));
                payloads.insert(sequence, m.payload.clone());
            }
        }
        let messages = parse_on_every_core(fresh).await?;
        if messages.is_empty() {
            return Ok(BTreeSet::new());
        }
        // The view of every prompt named; a prompt whose view may be behind the ledger (its
        // events may still be on their way to this consumer) is read from the ledger, at most
        // once a batch: after that read outcomes naming a release that ended stay unplaced.
        // The stage visits seen of each rollout named (see `apply_ledger`).
        let mut views: BTreeMap<PromptName, PromptView> = BTreeMap::new();
        let mut known: BTreeSet<String> = BTreeSet::new();
        // Which prompts have the versions the batch names: the store's version keys, and for
        // a prompt read from the ledger in this batch, its state's versions.
        // Each pair the batch names is looked up once.
        let mut stored_versions: BTreeMap<(&PromptName, &VersionId), bool> = BTreeMap::new();
        let mut refreshed: BTreeMap<PromptName, VersionIds> = BTreeMap::new();
        for o in messages.iter().flat_map(|m| m.outcomes.iter().flatten()) {
            if let std::collections::btree_map::Entry::Vacant(e) =
                stored_versions.entry((&o.prompt, &o.version))
            {
                let key = version_key(&o.prompt, &o.version);
                e.insert(self.ctx.store.get::<u32>(&key)?.is_some());
            }
        }
        let has_version =
            |refreshed: &BTreeMap<PromptName, VersionIds>, p: &PromptName, v: &VersionId| {
                match refreshed.get(p) {
                    Some(ids) => ids.contains(v),
                    None => stored_versions.get(&(p, v)).copied().unwrap_or(false),
                }
            };
        for o in messages.iter().flat_map(|m| m.outcomes.iter().flatten()) {
            if !views.contains_key(&o.prompt) {
                let view: PromptView = self
                    .ctx
                    .store
                    .get(&prompt_key(&o.prompt))?
                    .unwrap_or_default();
                if let Some(r) = &view.rollout {
                    known.extend(self.known_visits(&r.release)?);
                }
                views.insert(o.prompt.clone(), view);
            }
            let stale = views.get(&o.prompt).is_some_and(|v| {
                view_may_be_stale(v, o, &known, has_version(&refreshed, &o.prompt, &o.version))
            });
            if stale && !refreshed.contains_key(&o.prompt) {
                let family = self.ctx.load(&o.prompt).await?;
                crate::metrics::global().count_events(&o.prompt, &family.events);
                let view = prompt_view(&family.state);
                if let Some(r) = &view.rollout {
                    known.extend(self.known_visits(&r.release)?);
                }
                views.insert(o.prompt.clone(), view);
                refreshed.insert(o.prompt.clone(), family.state.version_order);
            }
        }
        let Tally {
            stats,
            feedback,
            counters: delta,
            dead,
        } = tally(&messages, &views, &known, |p, v| {
            has_version(&refreshed, p, v)
        });
        for d in &dead {
            let payload = payloads.get(&d.sequence).cloned().unwrap_or_default();
            self.ctx
                .dead_letter(&d.subject, d.sequence, &d.reason, &payload)
                .await?;
        }
        let touched = stats.values().map(|(r, _)| r.clone()).collect();
        self.ctx.store.apply(OUTCOMES_STREAM, last, |tx| {
            for (visit, (_, add)) in &stats {
                let key = visit_key(visit);
                let mut current: StageStats = tx.get(&key)?.unwrap_or_default();
                current.merge(add);
                tx.put(&key, &current)?;
            }
            for (prompt, seen) in &feedback {
                let key = feedback_key(prompt);
                let mut log: FeedbackLog = tx.get(&key)?.unwrap_or_default();
                log.extend(seen);
                tx.put(&key, &log)?;
            }
            let mut counters: Counters = tx.get(COUNTERS_KEY)?.unwrap_or_default();
            counters.add(&delta);
            tx.put(COUNTERS_KEY, &counters)
        })?;
        Ok(touched)
    }

    /// The stage visits of `release` the monitor has seen (it holds counts for).
    fn known_visits(&self, release: &ReleaseId) -> Result<Vec<String>, WorkerError> {
        Ok(self
            .ctx
            .store
            .keys_with_prefix(&release_visits_prefix(release))?
            .into_iter()
            .map(|k| k[STATS_KEYS.len()..].to_string())
            .collect())
    }

    async fn judge_each(
        &mut self,
        releases: impl IntoIterator<Item = ReleaseId>,
    ) -> Result<(), WorkerError> {
        for release in releases {
            self.judge_and_act(&release).await?;
        }
        Ok(())
    }

    /// Judges a release's current stage and executes what the monitor decides. A refusal
    /// concerns this release only: it is reported and the monitor goes on. Only a failure of
    /// the ledger, the store or the bucket (shared by every prompt) is returned.
    async fn judge_and_act(&mut self, release: &ReleaseId) -> Result<(), WorkerError> {
        let view: PromptView = self
            .ctx
            .store
            .get(&prompt_key(release.prompt()))?
            .unwrap_or_default();
        let stats: StageStats = match view.rollout.as_ref().filter(|r| &r.release == release) {
            Some(r) => self.ctx.store.get(&stats_key(r))?.unwrap_or_default(),
            None => StageStats::default(),
        };
        let Some(mut judged) = self
            .monitor
            .judge(release, &view, &stats, now(), Instant::now())
        else {
            return Ok(());
        };
        if judged.publish {
            // What only the published status shows, built only when it is published (at most
            // every `STATUS_EVERY`, at once on a new verdict): the earlier visits' counts (the
            // current visit's are `stats`), and the metrics.
            if let Some(r) = &view.rollout {
                let current = stats_key(r);
                let mut earlier = Vec::new();
                for key in self
                    .ctx
                    .store
                    .keys_with_prefix(&release_visits_prefix(release))?
                {
                    if key != current {
                        if let Some(s) = self.ctx.store.get::<StageStats>(&key)? {
                            earlier.push((key[STATS_KEYS.len()..].to_string(), s));
                        }
                    }
                }
                judged.status.earlier_stages = earlier_stages(r, &earlier);
                crate::metrics::global().observe_canary(r, &judged.status);
            }
            self.publish_status(&judged.status).await?;
        }
        if judged.record {
            self.record_point(&judged.status).await;
        }
        for command in judged.commands {
            self.execute(release, command).await?;
        }
        Ok(())
    }

    async fn execute(&mut self, release: &ReleaseId, command: Command) -> Result<(), WorkerError> {
        let what = command.name();
        if let Command::FreezeRollout { reason, .. } = &command {
            warn!(release = %release, "guardrail breach: {reason}");
        }
        let sent = command.clone();
        let result = self
            .ctx
            .ledger
            .execute(
                release.prompt(),
                &*self.ctx.signer,
                &format!("canary-{release}"),
                move |_| Ok(sent.clone()),
            )
            .await;
        let executed = match result {
            Ok(done) => {
                if !done.recorded.is_empty() {
                    info!(release = %release, "{what} recorded");
                }
                // Switch routing at once (the router reconciles too). The view from the state
                // the decision left is derived, so writing it ahead of the ledger consumer is
                // safe (that consumer rewrites it from the same ledger).
                self.ctx
                    .routing
                    .publish(&routing_table_for(&done.state, done.last_sequence))
                    .await?;
                self.put_view(release.prompt(), &done.state)?;
                Executed::Recorded
            }
            Err(ExecuteError::Rejected(r)) => Executed::Refused(r),
            Err(ExecuteError::Conflict { .. }) => Executed::Conflict,
            Err(ExecuteError::Infra(e)) => return Err(e.into()),
        };
        match self
            .monitor
            .executed(release, &command, executed, Instant::now())
        {
            Report::Recorded | Report::StillDeferred => {}
            Report::NotNeeded(r) => {
                info!(release = %release, rule = %r.rule, "{what} not needed: {}", r.message)
            }
            Report::AdvanceDeferred { rejection, status } => {
                info!(release = %release, rule = %rejection.rule, "ready, {what} refused (tried again every {:?}): {}", pledger_core::workers::canary::ADVANCE_RETRY, rejection.message);
                if let Some(status) = status {
                    self.publish_status(&status).await?;
                }
            }
            Report::Refused(r) => {
                warn!(release = %release, rule = %r.rule, "{what} refused for this release (the monitor goes on): {}", r.message)
            }
            Report::Conflict => {
                warn!(release = %release, "{what}: the ledger kept changing; will judge again")
            }
        }
        Ok(())
    }

    /// Adds a point to the release's judgement history (stream `PLEDGER_JUDGEMENTS`). The
    /// history serves the release page's charts only: a failure to record is logged and the
    /// monitor goes on judging.
    async fn record_point(&self, status: &CanaryStatus) {
        let point = JudgementPoint::of(status);
        let subject = pledger_core::names::judgement_subject(&status.release);
        let sent = match serde_json::to_vec(&point) {
            Ok(bytes) => match self
                .ctx
                .ledger
                .jetstream()
                .publish(subject, bytes.into())
                .await
            {
                Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            warn!(release = %status.release, "recording a judgement point: {e} (the release page's chart misses it)");
        }
    }

    async fn publish_status(&mut self, status: &CanaryStatus) -> Result<(), WorkerError> {
        let bytes = serde_json::to_vec(status).map_err(|e| WorkerError::Nats(e.to_string()))?;
        self.status
            .put(
                pledger_core::names::canary_status_key(&status.release),
                bytes.into(),
            )
            .await
            .map_err(|e| WorkerError::Nats(format!("publishing the canary status: {e}")))?;
        Ok(())
    }
}
