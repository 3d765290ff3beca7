//! The ledger on JetStream: streams and bucket set-up, reading a prompt's family of events,
//! conditional appends, and the read-decide-append loop every command goes through.
//!
//! Subjects: `pledger.ledger.<prompt>.prompt` for the prompt aggregate and
//! `pledger.ledger.<prompt>.release.r<n>` for each release. The prompt's family
//! (`pledger.ledger.<prompt>.>`) is the consistency boundary: every append states the family's
//! last sequence (`Nats-Expected-Last-Subject-Sequence` with
//! `Nats-Expected-Last-Subject-Sequence-Subject` set to the family filter), so exactly one of
//! two racing writers wins and the other re-reads.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use futures::StreamExt;
use pledger_core::event::{Aggregate, Envelope, Event, EventMeta, FleetTopic, FleetWindowsSet};
use pledger_core::window::ReleaseWindows;
use pledger_core::{Actor, Command, Context, PromptName, PromptState, Rejection, Timestamp};
use tracing::{debug, info_span, Instrument};

use crate::error::InfraError;

pub const LEDGER_STREAM: &str = "PLEDGER_LEDGER";
pub const LEDGER_SUBJECTS: &str = "pledger.ledger.>";
pub const OUTCOMES_STREAM: &str = "PLEDGER_OUTCOMES";
pub const OUTCOMES_SUBJECTS: &str = "pledger.outcomes.>";
pub const ROUTING_BUCKET: &str = "pledger_routing";
/// Where the canary monitor publishes its judgement of each active rollout (key: release id).
pub const CANARY_STATUS_BUCKET: &str = "pledger_canary";
pub const DEADLETTER_STREAM: &str = "PLEDGER_DEADLETTER";
pub const DEADLETTER_SUBJECTS: &str = "pledger.deadletter.>";
/// Largest encoded event accepted (the server's max_payload is 1 MiB).
pub const MAX_EVENT_BYTES: usize = 900 * 1024;
/// The oldest nats-server the ledger runs against (2.11 added the family-wide expected
/// sequence header).
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 11);
/// How many times a command re-reads and re-decides after losing a race.
pub const MAX_ATTEMPTS: usize = 10;

pub fn prompt_subject(prompt: &PromptName) -> String {
    format!("pledger.ledger.{prompt}.prompt")
}

pub fn family_filter(prompt: &PromptName) -> String {
    format!("pledger.ledger.{prompt}.>")
}

pub fn subject_for(aggregate: &Aggregate) -> String {
    match aggregate {
        Aggregate::Prompt(p) => prompt_subject(p),
        Aggregate::Release(r) => format!("pledger.ledger.{}.release.{}", r.prompt(), r.token()),
        Aggregate::Fleet(FleetTopic::Windows) => FLEET_WINDOWS_SUBJECT.to_string(),
        Aggregate::Fleet(FleetTopic::Digest(week)) => digest_subject(week),
    }
}

/// The global release windows: one subject, its last event is in force.
pub const FLEET_WINDOWS_SUBJECT: &str = "pledger.ledger._fleet.windows";

/// The subject of one week's digest. It holds at most one event: the digest is appended only
/// if the subject is still empty (`Nats-Expected-Last-Subject-Sequence: 0`).
pub fn digest_subject(week: &str) -> String {
    format!("pledger.ledger._fleet.digest.{week}")
}

/// Every digest subject.
pub const DIGEST_FILTER: &str = "pledger.ledger._fleet.digest.*";

/// An event as read back from the stream.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub sequence: u64,
    pub subject: String,
    pub envelope: Envelope,
}

/// A prompt's family as read from the ledger.
#[derive(Clone, Debug)]
pub struct Family {
    pub state: PromptState,
    /// Stream sequence of the family's last event (0 if it has none).
    pub last_sequence: u64,
    pub events: Vec<Recorded>,
}

/// What a command did.
#[derive(Clone, Debug)]
pub struct Executed {
    /// The events recorded, with their sequences (empty: the effect was already recorded).
    pub recorded: Vec<Recorded>,
    /// The state after the command.
    pub state: PromptState,
    pub last_sequence: u64,
    /// How many times the command lost a race and re-decided.
    pub retries: usize,
}

/// A command's failure at the ledger.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(
        "{prompt}: the ledger kept changing under this command ({attempts} attempts); try again"
    )]
    Conflict { prompt: PromptName, attempts: usize },
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// The JetStream ledger.
#[derive(Clone)]
pub struct Ledger {
    js: jetstream::Context,
}

impl Ledger {
    pub fn new(client: async_nats::Client) -> Ledger {
        Ledger {
            js: jetstream::new(client),
        }
    }

    /// Refuses servers older than [`MIN_SERVER_VERSION`]: they ignore
    /// `Nats-Expected-Last-Subject-Sequence-Subject`, which would silently weaken every
    /// conditional append to a single subject.
    pub fn check_server_version(client: &async_nats::Client) -> Result<(), InfraError> {
        let version = client.server_info().version;
        // An empty version: not connected yet (a client that retries its first connect); the
        // check runs again on the next command.
        if !version.is_empty() && !server_version_supported(&version) {
            return Err(InfraError::ServerTooOld {
                version,
                min: format!("{}.{}", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1),
            });
        }
        Ok(())
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates the ledger and outcome streams and the routing bucket, or checks that the
    /// existing ones have the properties the ledger relies on. Safe to run any number of times.
    pub async fn ensure(&self) -> Result<(), InfraError> {
        Ledger::check_server_version(&self.js.client())?;
        let ledger = stream::Config {
            name: LEDGER_STREAM.to_string(),
            description: Some(
                "Prompt Ledger: immutable release events, one subject per aggregate".into(),
            ),
            subjects: vec![LEDGER_SUBJECTS.to_string()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            max_message_size: 1024 * 1024,
            ..Default::default()
        };
        let mut s = self
            .js
            .get_or_create_stream(ledger)
            .await
            .map_err(InfraError::stream_setup)?;
        let info = s.info().await.map_err(InfraError::stream_setup)?;
        let c = &info.config;
        if !c.deny_delete
            || !c.deny_purge
            || c.storage != stream::StorageType::File
            || !c.subjects.iter().any(|x| x == LEDGER_SUBJECTS)
        {
            return Err(InfraError::StreamMisconfigured {
                stream: LEDGER_STREAM,
                detail: "it must use file storage, deny_delete, deny_purge and subjects pledger.ledger.>".into(),
            });
        }
        // Telemetry and dead letters: limits-based, kept 14 days.
        for (name, description, subjects) in [
            (
                OUTCOMES_STREAM,
                "Prompt Ledger: outcome telemetry from services (limits-based)",
                OUTCOMES_SUBJECTS,
            ),
            (
                DEADLETTER_STREAM,
                "Prompt Ledger: messages workers could not use, with the reason",
                DEADLETTER_SUBJECTS,
            ),
        ] {
            self.js
                .get_or_create_stream(stream::Config {
                    name: name.to_string(),
                    description: Some(description.into()),
                    subjects: vec![subjects.to_string()],
                    storage: stream::StorageType::File,
                    retention: stream::RetentionPolicy::Limits,
                    max_age: Duration::from_secs(14 * 24 * 3600),
                    ..Default::default()
                })
                .await
                .map_err(InfraError::stream_setup)?;
        }
        crate::routing::ensure_bucket(&self.js).await?;
        crate::routing::ensure_status_bucket(&self.js).await?;
        Ok(())
    }

    /// Reads every event of a prompt's family and folds it into its state.
    pub async fn load(&self, prompt: &PromptName) -> Result<Family, InfraError> {
        let stream = self
            .js
            .get_stream_no_info(LEDGER_STREAM)
            .await
            .map_err(InfraError::stream_missing)?;
        let filter = family_filter(prompt);
        // A short-lived ephemeral consumer, deleted once read (and reaped by the server after
        // 30 s of inactivity if this process dies first).
        let mut consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: filter.clone(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(InfraError::read)?;
        let info = consumer.info().await.map_err(InfraError::read)?;
        let (name, pending) = (info.name.clone(), info.num_pending);
        let result = read_family(&consumer, prompt, &filter, pending).await;
        // Best effort: the server reaps it anyway.
        let _ = stream.delete_consumer(&name).await;
        result
    }

    /// Every prompt with a registration or any other prompt-level event, sorted by name.
    pub async fn prompts(&self) -> Result<Vec<PromptName>, InfraError> {
        let stream = self
            .js
            .get_stream(LEDGER_STREAM)
            .await
            .map_err(InfraError::stream_missing)?;
        let mut subjects = stream
            .info_with_subjects("pledger.ledger.*.prompt")
            .await
            .map_err(InfraError::read)?;
        let mut prompts = Vec::new();
        while let Some(item) = subjects.next().await {
            let (subject, _count) = item.map_err(InfraError::read)?;
            let name = subject
                .trim_start_matches("pledger.ledger.")
                .trim_end_matches(".prompt");
            if let Ok(p) = PromptName::parse(name) {
                prompts.push(p);
            }
        }
        prompts.sort();
        Ok(prompts)
    }

    /// Appends one envelope if the family's last sequence is still `expected_last_sequence`.
    /// Returns the new sequence, or `Ok(None)` if the family moved (the caller re-reads).
    pub async fn append(
        &self,
        prompt: &PromptName,
        expected_last_sequence: u64,
        envelope: &Envelope,
    ) -> Result<Option<u64>, InfraError> {
        let subject = subject_for(&envelope.event.aggregate());
        self.publish_conditional(
            &subject,
            expected_last_sequence,
            Some(&family_filter(prompt)),
            envelope,
        )
        .await
    }

    /// Publishes an envelope on `subject` if the last sequence of `over` (a subject filter;
    /// `None`: `subject` itself) is still `expected` (0: nothing there yet). `Ok(None)`: it
    /// moved, nothing was written.
    async fn publish_conditional(
        &self,
        subject: &str,
        expected: u64,
        over: Option<&str>,
        envelope: &Envelope,
    ) -> Result<Option<u64>, InfraError> {
        let payload = serde_json::to_vec(envelope).expect("envelope serializes");
        if payload.len() > MAX_EVENT_BYTES {
            return Err(InfraError::TooLarge {
                kind: envelope.kind(),
                size: payload.len(),
                limit: MAX_EVENT_BYTES,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.event_id.as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
        if let Some(filter) = over {
            headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", filter);
        }
        let ack = self
            .js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
            .map_err(InfraError::publish)?
            .await;
        match ack {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(InfraError::publish(e)),
        }
    }

    /// Runs a command: read the family, decide, append conditionally; on a lost race re-read
    /// and re-decide (up to [`MAX_ATTEMPTS`]). `make` turns the fresh state into the command,
    /// so callers that must not act on a state they did not see can pin it (`from_stage`).
    pub async fn execute<F>(
        &self,
        prompt: &PromptName,
        actor: &Actor,
        correlation_id: &str,
        make: F,
    ) -> Result<Executed, ExecuteError>
    where
        F: Fn(&PromptState) -> Result<Command, Rejection>,
    {
        let span = info_span!("execute", prompt = %prompt, actor = %actor, correlation_id);
        async move {
            for attempt in 0..MAX_ATTEMPTS {
                let family = self.load(prompt).await?;
                let command = make(&family.state)?;
                let now = now();
                let mut ctx = Context::new(actor.clone(), now);
                ctx.fleet_windows = self.fleet_windows().await?.0;
                let events = pledger_core::decide(&family.state, &command, &ctx)?;
                if events.is_empty() {
                    debug!(attempt, "already recorded; nothing to append");
                    return Ok(Executed {
                        recorded: vec![],
                        state: family.state,
                        last_sequence: family.last_sequence,
                        retries: attempt,
                    });
                }
                let mut state = family.state.clone();
                let mut expected = family.last_sequence;
                let mut recorded = Vec::new();
                let mut lost = false;
                for event in events {
                    let envelope = envelope_for(
                        event,
                        actor,
                        now,
                        correlation_id,
                        recorded
                            .last()
                            .map(|r: &Recorded| r.envelope.event_id.clone()),
                    );
                    match self.append(prompt, expected, &envelope).await? {
                        Some(sequence) => {
                            pledger_core::evolve(&mut state, &envelope);
                            expected = sequence;
                            recorded.push(Recorded {
                                sequence,
                                subject: subject_for(&envelope.event.aggregate()),
                                envelope,
                            });
                        }
                        None => {
                            lost = true;
                            break;
                        }
                    }
                }
                if !lost || !recorded.is_empty() {
                    return Ok(Executed {
                        recorded,
                        state,
                        last_sequence: expected,
                        retries: attempt,
                    });
                }
                debug!(attempt, "lost a race on the family; re-reading");
            }
            Err(ExecuteError::Conflict {
                prompt: prompt.clone(),
                attempts: MAX_ATTEMPTS,
            })
        }
        .instrument(span)
        .await
    }
}

impl Ledger {
    /// The last event on `subject`, with its sequence (`None`: the subject is empty).
    pub async fn last_on_subject(&self, subject: &str) -> Result<Option<Recorded>, InfraError> {
        let stream = self
            .js
            .get_stream_no_info(LEDGER_STREAM)
            .await
            .map_err(InfraError::stream_missing)?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(m) => {
                let envelope: Envelope =
                    serde_json::from_slice(&m.payload).map_err(|e| InfraError::CorruptEvent {
                        sequence: m.sequence,
                        subject: subject.to_string(),
                        reason: e.to_string(),
                    })?;
                Ok(Some(Recorded {
                    sequence: m.sequence,
                    subject: subject.to_string(),
                    envelope,
                }))
            }
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(InfraError::read(e)),
        }
    }

    /// The global release windows in force, and the sequence they were set at (0: never set).
    pub async fn fleet_windows(&self) -> Result<(Option<ReleaseWindows>, u64), InfraError> {
        Ok(match self.last_on_subject(FLEET_WINDOWS_SUBJECT).await? {
            Some(Recorded {
                sequence,
                envelope:
                    Envelope {
                        event: Event::FleetWindowsSet(e),
                        ..
                    },
                ..
            }) => (e.windows, sequence),
            Some(other) => {
                return Err(InfraError::CorruptEvent {
                    sequence: other.sequence,
                    subject: FLEET_WINDOWS_SUBJECT.to_string(),
                    reason: format!(
                        "expected fleet.release_windows_set, found {}",
                        other.envelope.kind()
                    ),
                })
            }
            None => (None, 0),
        })
    }

    /// Sets (or clears) the global release windows. Conditional on the subject's last
    /// sequence, so two people editing at once do not silently overwrite each other; an
    /// identical setting records nothing. Returns the recorded event, if any.
    pub async fn set_fleet_windows(
        &self,
        windows: Option<ReleaseWindows>,
        actor: &Actor,
    ) -> Result<Option<Recorded>, ExecuteError> {
        if let Some(w) = &windows {
            w.compile().map_err(|e| Rejection {
                rule: pledger_core::Rule::InvalidInput,
                message: format!("release windows: {}: {}", e.field, e.message),
            })?;
        }
        for _ in 0..MAX_ATTEMPTS {
            let (current, sequence) = self.fleet_windows().await?;
            if current == windows {
                return Ok(None);
            }
            let envelope = envelope_for(
                Event::FleetWindowsSet(FleetWindowsSet {
                    windows: windows.clone(),
                }),
                actor,
                now(),
                &new_correlation_id(),
                None,
            );
            if let Some(seq) = self
                .publish_conditional(FLEET_WINDOWS_SUBJECT, sequence, None, &envelope)
                .await?
            {
                return Ok(Some(Recorded {
                    sequence: seq,
                    subject: FLEET_WINDOWS_SUBJECT.to_string(),
                    envelope,
                }));
            }
        }
        Err(ExecuteError::Conflict {
            prompt: PromptName::parse("fleet").expect("valid"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The recorded digest of a week, if there is one.
    pub async fn digest(&self, week: &str) -> Result<Option<Recorded>, InfraError> {
        self.last_on_subject(&digest_subject(week)).await
    }

    /// Appends a week's digest unless that week already has one. `Ok(None)`: another writer
    /// recorded it first (theirs stands; it was composed from the same ledger).
    pub async fn record_digest(&self, envelope: &Envelope) -> Result<Option<u64>, InfraError> {
        let Event::DigestRecorded(d) = &envelope.event else {
            panic!("record_digest takes a digest event");
        };
        self.publish_conditional(&digest_subject(&d.week), 0, None, envelope)
            .await
    }

    /// Every event on the ledger matching `filter` (e.g. [`LEDGER_SUBJECTS`]), in order.
    pub async fn read_all(&self, filter: &str) -> Result<Vec<Recorded>, InfraError> {
        self.read_after(filter, 0).await
    }

    /// The events matching `filter` after stream sequence `after`, in order.
    pub async fn read_after(&self, filter: &str, after: u64) -> Result<Vec<Recorded>, InfraError> {
        let stream = self
            .js
            .get_stream_no_info(LEDGER_STREAM)
            .await
            .map_err(InfraError::stream_missing)?;
        let mut consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: filter.to_string(),
                deliver_policy: if after == 0 {
                    consumer::DeliverPolicy::All
                } else {
                    consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: after + 1,
                    }
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(InfraError::read)?;
        let info = consumer.info().await.map_err(InfraError::read)?;
        let (name, pending) = (info.name.clone(), info.num_pending);
        let result = read_messages(&consumer, filter, pending).await;
        let _ = stream.delete_consumer(&name).await;
        result
    }
}

/// Is a nats-server version string (`2.15.1`, `v2.11.0-RC.1`) at least [`MIN_SERVER_VERSION`]?
pub fn server_version_supported(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= MIN_SERVER_VERSION
}

/// Reads `pending` messages of a family from an ephemeral consumer and folds them.
async fn read_family(
    consumer: &consumer::PullConsumer,
    prompt: &PromptName,
    filter: &str,
    pending: u64,
) -> Result<Family, InfraError> {
    let events = read_messages(consumer, filter, pending).await?;
    let mut state = PromptState::new(prompt.clone());
    for r in &events {
        pledger_core::evolve(&mut state, &r.envelope);
    }
    Ok(Family {
        state,
        last_sequence: events.last().map(|r| r.sequence).unwrap_or(0),
        events,
    })
}

/// Reads `pending` messages from an ephemeral consumer, decoded.
async fn read_messages(
    consumer: &consumer::PullConsumer,
    filter: &str,
    pending: u64,
) -> Result<Vec<Recorded>, InfraError> {
    let mut events = Vec::new();
    if pending == 0 {
        return Ok(events);
    }
    let mut messages = consumer.messages().await.map_err(InfraError::read)?;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .map_err(|_| InfraError::Read(format!("timed out reading {filter}")))?
    {
        let message = message.map_err(InfraError::read)?;
        let info = message
            .info()
            .map_err(|e| InfraError::Read(e.to_string()))?;
        let (sequence, remaining) = (info.stream_sequence, info.pending);
        let envelope: Envelope =
            serde_json::from_slice(&message.payload).map_err(|e| InfraError::CorruptEvent {
                sequence,
                subject: message.subject.to_string(),
                reason: e.to_string(),
            })?;
        events.push(Recorded {
            sequence,
            subject: message.subject.to_string(),
            envelope,
        });
        if remaining == 0 {
            break;
        }
    }
    Ok(events)
}

/// Wraps an event for the ledger with a fresh UUIDv7 event id.
pub fn envelope_for(
    event: Event,
    actor: &Actor,
    now: Timestamp,
    correlation_id: &str,
    causation_id: Option<String>,
) -> Envelope {
    Envelope::new(
        event,
        EventMeta {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: now,
            actor: actor.clone(),
            causation_id,
            correlation_id: correlation_id.to_string(),
        },
    )
}

/// Names a file holding the time pledger should believe it is (RFC 3339 UTC), for tests and
/// drills of release windows and digests: see `docs/RUNBOOK.md`. Unset in production.
pub const CLOCK_FILE_ENV: &str = "PLEDGER_CLOCK_FILE";

/// The clock, at the edge (the core never reads it): the wall clock, or the time written in
/// the file named by [`CLOCK_FILE_ENV`], re-read on every call so a test can move it.
pub fn now() -> Timestamp {
    static CLOCK_FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    if let Some(path) = CLOCK_FILE.get_or_init(|| std::env::var_os(CLOCK_FILE_ENV).map(Into::into))
    {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Timestamp::parse_rfc3339(t.trim()).map_err(|e| e.message))
        {
            Ok(t) => return t,
            Err(e) => tracing::error!(
                "{CLOCK_FILE_ENV}={}: {e}; using the wall clock",
                path.display()
            ),
        }
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp::from_unix_millis(millis)
}

/// A new correlation id for a user action.
pub fn new_correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
