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
use pledger_core::event::{
    Aggregate, DigestRecorded, Envelope, Event, EventMeta, FleetTopic, FleetWindowsSet,
};
use pledger_core::identity::{check_permitted, Role, Roster, RosterCommand};
use pledger_core::notify::{NotificationsSet, Subscriptions};
use pledger_core::state::Detail;
pub use pledger_core::verify::Check;
use pledger_core::verify::EventIdDigests;
use pledger_core::verify::{
    admit_fleet, seal, EventSigner, FamilySnapshot, Finding, LedgerVerifier, Sealed, Verdict,
};
use pledger_core::window::ReleaseWindows;
use pledger_core::{Actor, Command, Context, PromptName, PromptState, Rejection, Timestamp};
use tracing::{debug, info_span, Instrument};

use crate::error::InfraError;

pub use pledger_core::names::{
    CANARY_STATUS_BUCKET, DEADLETTER_STREAM, DEADLETTER_SUBJECTS, LEDGER_STREAM, OUTCOMES_STREAM,
    OUTCOMES_SUBJECTS, ROUTING_BUCKET,
};
/// The streams (and buckets' streams) `init --replicas` replicates.
pub const REPLICATED_STREAMS: [&str; 8] = [
    LEDGER_STREAM,
    pledger_core::names::CHECKPOINT_STREAM,
    pledger_core::names::JUDGEMENTS_STREAM,
    OUTCOMES_STREAM,
    DEADLETTER_STREAM,
    pledger_core::names::ROUTING_STREAM,
    pledger_core::names::CANARY_STATUS_STREAM,
    pledger_core::names::NOTIFY_CLAIMS_STREAM,
];
/// How often an append that finds no stream leader (an election after a node was lost) is
/// sent, [`ELECTION_PAUSE`] apart: about 8 s in all, within the 10 s a cluster takes to elect.
pub const ELECTION_ATTEMPTS: usize = 32;
pub const ELECTION_PAUSE: Duration = Duration::from_millis(250);
/// How long a read keeps asking while the servers do not answer (see [`answered`]).
pub const ELECTION_WAIT: Duration = Duration::from_secs(8);

/// Runs `ask` again, [`ELECTION_PAUSE`] apart, while it goes unanswered (no responders, a
/// timeout: a cluster electing a stream or meta leader after losing a node), for up to
/// [`ELECTION_WAIT`]. Any answer, an error the server gave included, ends it at once.
pub(crate) async fn answered<T, F, Fut>(what: &str, mut ask: F) -> Result<T, InfraError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, InfraError>>,
{
    let until = tokio::time::Instant::now() + ELECTION_WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ask().await {
            Err(e) if e.is_unanswered() && tokio::time::Instant::now() < until => {
                debug!(attempt, "{what} went unanswered ({e}); asking again");
                tokio::time::sleep(ELECTION_PAUSE).await;
            }
            result => return result,
        }
    }
}

/// Whether a conditional append lost its race: the server says the family's last sequence
/// moved. A single server answers error code 10071; a clustered stream answers 10164, which
/// async-nats reports as `Other` with the server's error as its source.
fn lost_race(e: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    e.kind() == PublishErrorKind::WrongLastSequence
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
            .is_some_and(|j| {
                j.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    || j.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            })
}

/// Largest encoded event accepted (the server's max_payload is 1 MiB).
pub const MAX_EVENT_BYTES: usize = 900 * 1024;
/// The oldest nats-server the ledger runs against (2.11 added the family-wide expected
/// sequence header).
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 11);
/// How long one JetStream API request may wait for its answer.
pub const JS_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a read or an append that got no answer is tried (a cluster electing a
/// stream leader after losing a node answers again within a few seconds).
pub const UNANSWERED_ATTEMPTS: usize = 4;

/// How many times a command re-reads and re-decides after losing a race.
pub const MAX_ATTEMPTS: usize = 10;

pub use pledger_core::names::{
    digest_subject, family_filter, prompt_subject, subject_for, DIGEST_FILTER,
    FLEET_WINDOWS_SUBJECT, LEDGER_SUBJECTS, NOTIFICATIONS_SUBJECT, ROSTER_SUBJECT,
};

/// An event as read back from the stream, verified and accepted.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub sequence: u64,
    pub subject: String,
    pub envelope: Envelope,
}

/// A stored message as read, before any check.
#[derive(Clone, Debug)]
pub struct RawRecord {
    pub sequence: u64,
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// A message verification ignored: why, and its bytes (for dead letters).
#[derive(Clone, Debug)]
pub struct Ignored {
    pub finding: Finding,
    pub payload: bytes::Bytes,
}

/// What a verified read found: the accepted events, in order, and the ignored ones.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    pub accepted: Vec<Recorded>,
    pub ignored: Vec<Ignored>,
}

impl Verified {
    /// Feeds raw records to `verifier` in order.
    pub fn of(verifier: &mut LedgerVerifier, raws: &[RawRecord]) -> Verified {
        let mut out = Verified::default();
        crate::audit::in_order(raws, crate::audit::cores(), |r, pre| {
            match verifier.observe_prechecked(r.sequence, &r.subject, pre) {
                Verdict::Accepted(envelope) => out.accepted.push(Recorded {
                    sequence: r.sequence,
                    subject: r.subject.clone(),
                    envelope: *envelope,
                }),
                Verdict::Ignored(finding) => {
                    tracing::debug!(
                        sequence = finding.sequence,
                        subject = %finding.subject,
                        check = finding.check.code(),
                        "ignored a ledger event: {}",
                        finding.reason
                    );
                    out.ignored.push(Ignored {
                        finding,
                        payload: r.payload.clone(),
                    })
                }
            }
        });
        out
    }
}

/// A prompt's family as read from the ledger and verified, with the roster and the global
/// windows it was verified against.
#[derive(Clone, Debug)]
pub struct Family {
    pub state: PromptState,
    /// Stream sequence of the family's last message, accepted or not (0 if it has none): what
    /// the next conditional append states.
    pub last_sequence: u64,
    /// The family's accepted events.
    pub events: Vec<Recorded>,
    /// The family's ignored messages (the roster's and windows' too), with the reason.
    pub ignored: Vec<Ignored>,
    /// The roster, the family's head and the global windows, as verified (the family's state
    /// is `state`, moved out of it).
    pub verifier: LedgerVerifier,
    /// The snapshot the read resumed from (its state left out), if it did: `events` and the
    /// family's part of `ignored` are then only what came after it.
    pub resumed_from: Option<FamilySnapshot>,
}

impl Family {
    /// A snapshot of the family as read, on the ledger `ledger`.
    pub fn snapshot(&self, ledger: &str, prompt: &PromptName) -> FamilySnapshot {
        let family = |f: &&Ignored| {
            f.finding.subject != ROSTER_SUBJECT && f.finding.subject != FLEET_WINDOWS_SUBJECT
        };
        let (earlier, mut ignored) = match &self.resumed_from {
            Some(s) => (Some(&s.event_ids), s.ignored.clone()),
            None => (None, Vec::new()),
        };
        let none = EventIdDigests::default();
        let event_ids = earlier
            .unwrap_or(&none)
            .with(self.events.iter().map(|r| r.envelope.event_id.as_str()));
        ignored.extend(
            self.ignored
                .iter()
                .filter(family)
                .map(|i| i.finding.clone()),
        );
        FamilySnapshot {
            format: pledger_core::verify::SNAPSHOT_FORMAT,
            ledger: ledger.to_string(),
            prompt: prompt.clone(),
            through: self.last_sequence,
            head: self.verifier.family_head(prompt),
            head_sequence: self
                .events
                .last()
                .map(|r| r.sequence)
                .or(self.resumed_from.as_ref().map(|s| s.head_sequence))
                .unwrap_or(0),
            state: {
                let mut state = self.state.clone();
                state.freeze();
                state
            },
            event_ids,
            ignored,
        }
    }

    /// The global release windows in force.
    pub fn fleet_windows(&self) -> Option<ReleaseWindows> {
        fleet_windows_of(&self.verifier)
    }

    /// The decider's context for a command signed by `signer` on this family at `now`: the
    /// identity and roles the roster gives the key, and the global windows in force.
    pub fn context(
        &self,
        signer: &(dyn EventSigner + Sync),
        now: Timestamp,
    ) -> Result<Context, InfraError> {
        let who = identify(&self.verifier.roster, signer)?;
        let mut ctx = Context::new(who.actor, who.roles, now);
        ctx.fleet_windows = self.fleet_windows();
        Ok(ctx)
    }
}

fn fleet_windows_of(verifier: &LedgerVerifier) -> Option<ReleaseWindows> {
    match verifier.fleet_last(&Aggregate::Fleet(FleetTopic::Windows)) {
        Some(Envelope {
            event: Event::FleetWindowsSet(e),
            ..
        }) => e.windows.clone(),
        _ => None,
    }
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
    /// The identity the events were recorded under (the owner of the signing key).
    pub actor: Actor,
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

/// Who signs: the key, and the identity the roster says owns it.
#[derive(Clone)]
pub struct Identified {
    pub actor: Actor,
    pub roles: std::collections::BTreeSet<Role>,
}

/// The identity that owns `signer`'s key on `roster` now.
pub fn identify(
    roster: &Roster,
    signer: &(dyn EventSigner + Sync),
) -> Result<Identified, InfraError> {
    match roster.current_owner(signer.public_key()) {
        Some(identity)
            if signer
                .claimed_identity()
                .is_some_and(|c| c != &identity.name) =>
        {
            Err(InfraError::NotYourKey {
                key: pledger_core::verify::key_id(signer.public_key()),
                owner: identity.name.to_string(),
                claimed: signer
                    .claimed_identity()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            })
        }
        Some(identity) => Ok(Identified {
            actor: identity.name.clone(),
            roles: identity.roles.clone(),
        }),
        None => Err(InfraError::NotEnrolled {
            key: pledger_core::verify::key_id(signer.public_key()),
            empty: roster.is_empty(),
        }),
    }
}

/// The JetStream ledger.
#[derive(Clone)]
pub struct Ledger {
    js: jetstream::Context,
    /// Where [`Ledger::load`] keeps and finds family snapshots (none: every read replays).
    snapshots: Option<std::sync::Arc<dyn crate::snapshot::SnapshotStore>>,
}

/// A reader keeps a new snapshot of a family once it has read this many accepted events of
/// it beyond the last one: at most that many events are verified again by the next read.
pub const SNAPSHOT_EVERY: usize = 64;

impl Ledger {
    pub fn new(client: async_nats::Client) -> Ledger {
        let mut js = jetstream::new(client);
        // A request that gets no answer (a cluster electing a new leader for a stream) is
        // retried by the callers below rather than waited on for the default 5 s.
        js.set_timeout(JS_TIMEOUT);
        Ledger {
            js,
            snapshots: None,
        }
    }

    /// This ledger with [`Ledger::load`] resuming families from (and keeping) snapshots in
    /// `store`.
    pub fn with_snapshots(
        mut self,
        store: std::sync::Arc<dyn crate::snapshot::SnapshotStore>,
    ) -> Ledger {
        self.snapshots = Some(store);
        self
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
    /// New streams get one replica; existing ones keep theirs.
    pub async fn ensure(&self) -> Result<(), InfraError> {
        self.ensure_replicated(None).await
    }

    /// [`Ledger::ensure`] with `replicas` copies of every stream and bucket on a cluster
    /// (`pledger init --replicas N`): new ones are created with them, existing ones are
    /// updated to them.
    pub async fn ensure_replicated(&self, replicas: Option<usize>) -> Result<(), InfraError> {
        Ledger::check_server_version(&self.js.client())?;
        let num_replicas = replicas.unwrap_or(1);
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
            num_replicas,
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
        // Checkpoints: kept like the ledger (small: one message every minute at most, and
        // after decisions).
        self.js
            .get_or_create_stream(stream::Config {
                name: pledger_core::names::CHECKPOINT_STREAM.to_string(),
                description: Some(
                    "Prompt Ledger: the notary's signed checkpoints of the ledger's Merkle tree"
                        .into(),
                ),
                subjects: vec![pledger_core::names::CHECKPOINT_SUBJECT.to_string()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                deny_delete: true,
                deny_purge: true,
                allow_direct: true,
                duplicate_window: Duration::from_secs(120),
                num_replicas,
                ..Default::default()
            })
            .await
            .map_err(InfraError::stream_setup)?;
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
                    num_replicas,
                    ..Default::default()
                })
                .await
                .map_err(InfraError::stream_setup)?;
        }
        // The canary monitor's judgement history: limits-based, bounded per release and by
        // age (what the release page charts; not part of the ledger).
        self.js
            .get_or_create_stream(stream::Config {
                name: pledger_core::names::JUDGEMENTS_STREAM.to_string(),
                description: Some(
                    "Prompt Ledger: the canary monitor's judgements over time (limits-based)"
                        .into(),
                ),
                subjects: vec![pledger_core::names::JUDGEMENTS_SUBJECTS.to_string()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_messages_per_subject: pledger_core::names::JUDGEMENTS_PER_RELEASE,
                max_age: Duration::from_secs(
                    pledger_core::names::JUDGEMENTS_MAX_AGE_DAYS * 24 * 3600,
                ),
                max_message_size: 64 * 1024,
                num_replicas,
                ..Default::default()
            })
            .await
            .map_err(InfraError::stream_setup)?;
        crate::routing::ensure_bucket(&self.js, num_replicas).await?;
        crate::routing::ensure_status_bucket(&self.js, num_replicas).await?;
        crate::worker::notifier::ensure_claims_bucket(&self.js, num_replicas).await?;
        if let Some(n) = replicas {
            for name in REPLICATED_STREAMS {
                let mut s = self
                    .js
                    .get_stream(name)
                    .await
                    .map_err(InfraError::stream_setup)?;
                let info = s.info().await.map_err(InfraError::stream_setup)?;
                if info.config.num_replicas != n {
                    let mut config = info.config.clone();
                    config.num_replicas = n;
                    self.js
                        .update_stream(config)
                        .await
                        .map_err(InfraError::stream_setup)?;
                }
            }
        }
        Ok(())
    }

    /// The ledger stream's configuration and bounds, for `audit verify`.
    pub async fn stream_facts(&self) -> Result<pledger_core::audit::StreamFacts, InfraError> {
        let info = self.stream_info(LEDGER_STREAM).await?;
        let c = &info.config;
        Ok(pledger_core::audit::StreamFacts {
            name: c.name.clone(),
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
            messages: info.state.messages,
            deny_delete: c.deny_delete,
            deny_purge: c.deny_purge,
            retention: match c.retention {
                stream::RetentionPolicy::Limits => "limits",
                stream::RetentionPolicy::Interest => "interest",
                stream::RetentionPolicy::WorkQueue => "workqueue",
            }
            .to_string(),
            max_messages: c.max_messages,
            max_bytes: c.max_bytes,
            max_messages_per_subject: c.max_messages_per_subject,
            max_age_seconds: c.max_age.as_secs(),
            allow_rollup: c.allow_rollup,
            allow_message_ttl: c.allow_message_ttl,
        })
    }

    /// Every checkpoint the notary wrote, in order.
    pub async fn checkpoints(&self) -> Result<Vec<RawRecord>, InfraError> {
        let subject = pledger_core::names::CHECKPOINT_SUBJECT;
        self.read_stream(pledger_core::names::CHECKPOINT_STREAM, &[subject], 0)
            .await
    }

    /// Appends a signed checkpoint note of a tree of `size` leaves (once per size and root
    /// within the duplicate window, whoever sends it).
    pub async fn publish_checkpoint(
        &self,
        size: u64,
        root: &str,
        text: &str,
    ) -> Result<u64, InfraError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("checkpoint-{size}-{root}").as_str());
        let ack = self
            .js
            .publish_with_headers(
                pledger_core::names::CHECKPOINT_SUBJECT,
                headers,
                text.to_string().into(),
            )
            .await
            .map_err(InfraError::publish)?
            .await
            .map_err(InfraError::publish)?;
        Ok(ack.sequence)
    }

    /// Every stream and bucket and its number of replicas, and the number of servers in the
    /// cluster (1 for a single server): what `init` reports and workers check at start.
    pub async fn replication(&self) -> Result<(Vec<(String, usize)>, usize), InfraError> {
        let mut streams = Vec::new();
        let mut cluster_size = 1;
        for name in REPLICATED_STREAMS {
            // A stream this ledger does not have yet (checkpoints, on a ledger set up before
            // them) is not reported; `init` creates it.
            let info = match self.stream_info(name).await {
                Ok(info) => info,
                Err(InfraError::StreamMissing(_)) if name != LEDGER_STREAM => continue,
                Err(e) => return Err(e),
            };
            if let Some(c) = &info.cluster {
                cluster_size = cluster_size.max(1 + c.replicas.len());
            }
            streams.push((name.to_string(), info.config.num_replicas));
        }
        Ok((streams, cluster_size))
    }

    /// Which ledger this is, for worker stores to bind to: the ledger and outcome streams'
    /// creation times and cluster, and each stream's last sequence.
    pub async fn identity(
        &self,
    ) -> Result<(crate::projection::LedgerIdentity, Vec<(String, u64)>), InfraError> {
        let mut streams = Vec::new();
        let mut last = Vec::new();
        for name in [LEDGER_STREAM, OUTCOMES_STREAM] {
            let (created, last_sequence) = self.stream_created(name).await?;
            streams.push((name.to_string(), created));
            last.push((name.to_string(), last_sequence));
        }
        Ok((crate::projection::LedgerIdentity { streams }, last))
    }

    /// Reads the raw messages matching `filters` after stream sequence `after`, in order,
    /// through one short-lived ephemeral consumer.
    pub async fn read_raw(
        &self,
        filters: &[&str],
        after: u64,
    ) -> Result<Vec<RawRecord>, InfraError> {
        self.read_stream(LEDGER_STREAM, filters, after).await
    }

    /// [`Ledger::read_raw`] on any stream.
    pub async fn read_stream(
        &self,
        stream: &str,
        filters: &[&str],
        after: u64,
    ) -> Result<Vec<RawRecord>, InfraError> {
        self.read_stream_into(stream, filters, after, None).await
    }

    /// [`Ledger::read_raw`] handing the messages over in chunks of `chunk` as they arrive, so
    /// a reader can work on them while the rest are read (`audit verify`); ends when every
    /// message has been sent, or when the receiver is dropped.
    pub async fn read_raw_chunks(
        &self,
        filters: &[&str],
        after: u64,
        chunk: usize,
        out: tokio::sync::mpsc::Sender<Vec<RawRecord>>,
    ) -> Result<(), InfraError> {
        self.read_stream_into(LEDGER_STREAM, filters, after, Some((chunk.max(1), out)))
            .await
            .map(drop)
    }

    /// A read whose messages are all returned is asked again whole while it goes unanswered
    /// ([`answered`]); one that hands chunks over as they arrive is not (some were sent).
    async fn read_stream_into(
        &self,
        stream: &str,
        filters: &[&str],
        after: u64,
        out: Option<(usize, tokio::sync::mpsc::Sender<Vec<RawRecord>>)>,
    ) -> Result<Vec<RawRecord>, InfraError> {
        match out {
            None => {
                answered(&format!("reading {}", filters.join(", ")), || {
                    self.read_stream_once(stream, filters, after, None)
                })
                .await
            }
            out => self.read_stream_once(stream, filters, after, out).await,
        }
    }

    async fn read_stream_once(
        &self,
        stream: &str,
        filters: &[&str],
        after: u64,
        out: Option<(usize, tokio::sync::mpsc::Sender<Vec<RawRecord>>)>,
    ) -> Result<Vec<RawRecord>, InfraError> {
        let stream = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(InfraError::stream_missing)?;
        let mut config = consumer::pull::Config {
            deliver_policy: if after == 0 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                }
            },
            ack_policy: consumer::AckPolicy::None,
            // Reaped by the server after 30 s of inactivity if this process dies first.
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        };
        let mut distinct: Vec<String> = Vec::new();
        for f in filters {
            if !distinct.iter().any(|d| d == f) {
                distinct.push(f.to_string());
            }
        }
        match distinct.len() {
            1 => config.filter_subject = distinct.remove(0),
            _ => config.filter_subjects = distinct,
        }
        let mut attempt = 0;
        let mut consumer: consumer::PullConsumer = loop {
            attempt += 1;
            match stream.create_consumer(config.clone()).await {
                Ok(c) => break c,
                Err(e) if attempt < UNANSWERED_ATTEMPTS => {
                    debug!(attempt, "creating a reader got {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(InfraError::read(e)),
            }
        };
        // A consumer just created on a cluster may not answer yet ("no responders"): asked
        // again like its creation.
        let mut attempt = 0;
        let info = loop {
            attempt += 1;
            match consumer.info().await {
                Ok(info) => break info.clone(),
                Err(e) if attempt < UNANSWERED_ATTEMPTS => {
                    debug!(attempt, "a new reader's info got {e}; asking again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(InfraError::read(e)),
            }
        };
        let (name, pending) = (info.name.clone(), info.num_pending);
        let result = read_messages(&consumer, &filters.join(", "), pending, out).await;
        // Best effort: the server reaps it anyway.
        let _ = stream.delete_consumer(&name).await;
        result
    }

    /// Reads a prompt's family with the roster and the global windows, verifying every event.
    ///
    /// Two reads: the family through a consumer with that one filter (a consumer with several
    /// filters reads a long stream several times slower, measured in `pledger bench`), then
    /// the roster and the windows (small subjects). The roster is read second, so it holds
    /// every roster event before any family event read; folding it first is exact: a key's
    /// validity and an identity's roles are kept by stream position, so each family event is
    /// checked against the roster as it stood at its own sequence.
    ///
    /// Its state is live ([`Detail::Live`]: what decisions read); [`Ledger::load_all`] reads a
    /// full one. With a snapshot store ([`Ledger::with_snapshots`]), it resumes from the
    /// family's snapshot when one fits this ledger: it reads and verifies only the family's
    /// messages after it (the roster and the windows are always read whole), and `events` then
    /// holds only those. A snapshot the family's next events do not chain onto is discarded
    /// and the family replayed from its first event.
    pub async fn load(&self, prompt: &PromptName) -> Result<Family, InfraError> {
        let mut kept_by = None;
        let mut family = match self.snapshots.clone() {
            None => self.load_after(prompt, None, Detail::Live).await?,
            Some(store) => {
                let ledger = self.ledger_key().await?;
                let family = self.load_resumed(prompt, &ledger, &*store).await?;
                kept_by = Some((store, ledger));
                family
            }
        };
        let filled = self.fill_artifacts(prompt, &mut family).await?;
        if let Some((store, ledger)) = kept_by {
            if family.events.len() >= SNAPSHOT_EVERY || filled {
                store.put(family.snapshot(&ledger, prompt));
            }
        }
        Ok(family)
    }

    /// [`Ledger::load`] from the family's snapshot in `store` when one fits and the family
    /// continues from it, else from its first event.
    async fn load_resumed(
        &self,
        prompt: &PromptName,
        ledger: &str,
        store: &dyn crate::snapshot::SnapshotStore,
    ) -> Result<Family, InfraError> {
        let mut kept = store.get(ledger, prompt).filter(|s| s.fits(ledger, prompt));
        if let Some(s) = &kept {
            if !self.holds_head(prompt, s).await? {
                tracing::info!(prompt = %prompt, "the ledger does not hold the snapshot's head; reading the family whole");
                kept = None;
            }
        }
        let Some(snapshot) = kept else {
            return self.load_after(prompt, None, Detail::Live).await;
        };
        let through = snapshot.through;
        let family = self
            .load_after(prompt, Some(snapshot), Detail::Live)
            .await?;
        let broken = family.ignored.iter().any(|i| {
            i.finding.sequence > through
                && matches!(i.finding.check, Check::Chain | Check::DuplicateId)
        });
        if broken {
            tracing::info!(
                prompt = %prompt,
                through,
                "the family does not continue from its snapshot; reading it whole"
            );
            return self.load_after(prompt, None, Detail::Live).await;
        }
        Ok(family)
    }

    /// A live state lacks the artifact of a version it had let go when that version is
    /// adopted or proposed again ([`PromptState::missing_artifacts`]): routing and the
    /// commands need it, so the family is read whole once and the artifact kept (with the
    /// state's next snapshot). Returns whether one was kept.
    async fn fill_artifacts(
        &self,
        prompt: &PromptName,
        family: &mut Family,
    ) -> Result<bool, InfraError> {
        let missing = family.state.missing_artifacts();
        if missing.is_empty() {
            return Ok(false);
        }
        tracing::info!(prompt = %prompt, versions = missing.len(), "a version in use has no artifact in the live state; reading the family whole for it");
        let full = self.load_after(prompt, None, Detail::Full).await?;
        for v in &missing {
            if let Some(published) = full.state.versions.get(v) {
                family.state.keep_artifact(v, published.clone());
            }
        }
        Ok(family.state.missing_artifacts().len() < missing.len())
    }

    /// A stream's configuration and state, asked again while unanswered ([`answered`]).
    async fn stream_info(&self, name: &str) -> Result<stream::Info, InfraError> {
        answered(&format!("stream {name}'s info"), || async {
            let mut stream = self
                .js
                .get_stream(name)
                .await
                .map_err(InfraError::stream_missing)?;
            Ok(stream.info().await.map_err(InfraError::read)?.clone())
        })
        .await
    }

    /// Does the ledger hold the snapshot's head: the family's event at `head_sequence`, whose
    /// hash is `head`?
    async fn holds_head(
        &self,
        prompt: &PromptName,
        snapshot: &FamilySnapshot,
    ) -> Result<bool, InfraError> {
        let Some(head) = &snapshot.head else {
            return Ok(true);
        };
        let stream = self
            .js
            .get_stream_no_info(LEDGER_STREAM)
            .await
            .map_err(InfraError::stream_missing)?;
        let message = match stream.get_raw_message(snapshot.head_sequence).await {
            Ok(m) => m,
            Err(e) => {
                debug!("the snapshot's head is not readable: {e}");
                return Ok(false);
            }
        };
        let family = family_filter(prompt);
        Ok(subject_matches(&family, &message.subject)
            && &pledger_core::verify::event_hash(&message.payload) == head)
    }

    /// [`Ledger::load`] from the family's first event, whatever snapshot is kept.
    /// Its state keeps everything ([`Detail::Full`]): every version's artifact and every
    /// release's record, for the commands that show the past.
    pub async fn load_all(&self, prompt: &PromptName) -> Result<Family, InfraError> {
        self.load_after(prompt, None, Detail::Full).await
    }

    /// Which ledger this is, for snapshots: the ledger stream's creation time and cluster.
    pub async fn ledger_key(&self) -> Result<String, InfraError> {
        let (created, _) = self.stream_created(LEDGER_STREAM).await?;
        Ok(format!("{LEDGER_STREAM} created {created}"))
    }

    /// A stream's `<creation time in ns>@<cluster or "single server">` and last sequence.
    async fn stream_created(&self, name: &str) -> Result<(String, u64), InfraError> {
        let info = self.stream_info(name).await?;
        let cluster = info
            .cluster
            .as_ref()
            .and_then(|c| c.name.clone())
            .unwrap_or_else(|| "single server".to_string());
        Ok((
            format!("{}@{cluster}", info.created.unix_timestamp_nanos()),
            info.state.last_sequence,
        ))
    }

    async fn load_after(
        &self,
        prompt: &PromptName,
        snapshot: Option<FamilySnapshot>,
        detail: Detail,
    ) -> Result<Family, InfraError> {
        let filter = family_filter(prompt);
        let after = snapshot.as_ref().map(|s| s.through).unwrap_or(0);
        let raws = self.read_raw(&[&filter], after).await?;
        let fleet = self
            .read_raw(&[ROSTER_SUBJECT, FLEET_WINDOWS_SUBJECT], 0)
            .await?;
        let mut verifier = match detail {
            Detail::Full => LedgerVerifier::new(),
            Detail::Live => LedgerVerifier::live(),
        };
        let mut verified = Verified::of(&mut verifier, &fleet);
        let resumed_from = snapshot.map(|s| verifier.resume_family(s));
        let family = Verified::of(&mut verifier, &raws);
        verified.ignored.extend(family.ignored);
        let last_sequence = raws.last().map(|r| r.sequence).unwrap_or(after);
        Ok(Family {
            // Moved, not copied: a long family's state is large, and `verifier` is kept only
            // for the roster, the windows and the family's head.
            state: verifier.take_state(prompt),
            last_sequence,
            events: family.accepted,
            ignored: verified.ignored,
            verifier,
            resumed_from,
        })
    }

    /// The roster, verified, and what was ignored on its subject.
    pub async fn roster(&self) -> Result<(LedgerVerifier, Vec<Ignored>, u64), InfraError> {
        let raws = self.read_raw(&[ROSTER_SUBJECT], 0).await?;
        let mut verifier = LedgerVerifier::new();
        let verified = Verified::of(&mut verifier, &raws);
        let last = raws.last().map(|r| r.sequence).unwrap_or(0);
        Ok((verifier, verified.ignored, last))
    }

    /// Every prompt with a registration or any other prompt-level event, sorted by name.
    pub async fn prompts(&self) -> Result<Vec<PromptName>, InfraError> {
        let mut prompts = answered("listing the prompts", || async {
            let stream = self
                .js
                .get_stream(LEDGER_STREAM)
                .await
                .map_err(InfraError::stream_missing)?;
            let mut subjects = stream
                .info_with_subjects(pledger_core::names::PROMPT_SUBJECTS)
                .await
                .map_err(InfraError::read)?;
            let mut prompts = Vec::new();
            while let Some(item) = subjects.next().await {
                let (subject, _count) = item.map_err(InfraError::read)?;
                let name = pledger_core::names::prompt_token(&subject).unwrap_or_default();
                if let Ok(p) = PromptName::parse(name) {
                    prompts.push(p);
                }
            }
            Ok(prompts)
        })
        .await?;
        prompts.sort();
        Ok(prompts)
    }

    /// Appends a sealed event to its prompt's family if the family's last sequence is still
    /// `expected_last_sequence`. Returns the new sequence, or `Ok(None)` if the family moved
    /// (the caller re-reads).
    pub async fn append(
        &self,
        prompt: &PromptName,
        expected_last_sequence: u64,
        sealed: &Sealed,
    ) -> Result<Option<u64>, InfraError> {
        let subject = subject_for(&sealed.envelope.event.aggregate());
        self.publish_conditional(
            &subject,
            expected_last_sequence,
            Some(&family_filter(prompt)),
            sealed,
        )
        .await
    }

    /// Publishes sealed bytes on `subject` if the last sequence of `over` (a subject filter;
    /// `None`: `subject` itself) is still `expected` (0: nothing there yet). `Ok(None)`: it
    /// moved, nothing was written.
    async fn publish_conditional(
        &self,
        subject: &str,
        expected: u64,
        over: Option<&str>,
        sealed: &Sealed,
    ) -> Result<Option<u64>, InfraError> {
        if sealed.bytes.len() > MAX_EVENT_BYTES {
            return Err(InfraError::TooLarge {
                kind: sealed.envelope.kind(),
                size: sealed.bytes.len(),
                limit: MAX_EVENT_BYTES,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", sealed.envelope.event_id.as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
        if let Some(filter) = over {
            headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", filter);
        }
        // A publish that got no acknowledgement is sent again as it is: its `Nats-Msg-Id`
        // makes a copy that did land a duplicate the server drops (and acks).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ack = self
                .js
                .publish_with_headers(
                    subject.to_string(),
                    headers.clone(),
                    sealed.bytes.clone().into(),
                )
                .await
                .map_err(InfraError::publish)?
                .await;
            match ack {
                Ok(ack) => return Ok(Some(ack.sequence)),
                Err(e) if lost_race(&e) => return Ok(None),
                Err(e)
                    if e.kind() == PublishErrorKind::TimedOut && attempt < UNANSWERED_ATTEMPTS =>
                {
                    debug!(
                        attempt,
                        "no acknowledgement; publishing the same event again"
                    );
                }
                // No responders: the stream is electing a leader (it existed when the family
                // was read). Wait a little and send the same event again.
                Err(e)
                    if e.kind() == PublishErrorKind::StreamNotFound
                        && attempt < ELECTION_ATTEMPTS =>
                {
                    debug!(
                        attempt,
                        "no stream leader yet; publishing the same event again"
                    );
                    tokio::time::sleep(ELECTION_PAUSE).await;
                }
                Err(e) => return Err(InfraError::publish(e)),
            }
        }
    }

    /// Runs a command signed by `signer`: read and verify the family, decide as the key's
    /// owner with its roles, seal each event onto the family's chain, append conditionally;
    /// on a lost race re-read, re-decide and sign again (up to [`MAX_ATTEMPTS`]). `make` turns
    /// the fresh state into the command, so callers that must not act on a state they did not
    /// see can pin it (`from_stage`).
    pub async fn execute<F>(
        &self,
        prompt: &PromptName,
        signer: &(dyn EventSigner + Sync),
        correlation_id: &str,
        make: F,
    ) -> Result<Executed, ExecuteError>
    where
        F: Fn(&PromptState) -> Result<Command, Rejection>,
    {
        let span = info_span!("execute", prompt = %prompt, correlation_id);
        async move {
            for attempt in 0..MAX_ATTEMPTS {
                let family = self.load(prompt).await?;
                let ctx = family.context(signer, now())?;
                let command = make(&family.state)?;
                let events = pledger_core::decide(&family.state, &command, &ctx)?;
                if events.is_empty() {
                    debug!(attempt, "already recorded; nothing to append");
                    return Ok(Executed {
                        recorded: vec![],
                        state: family.state,
                        last_sequence: family.last_sequence,
                        retries: attempt,
                        actor: ctx.actor,
                    });
                }
                let mut head = family.verifier.family_head(prompt);
                let mut state = family.state;
                let mut expected = family.last_sequence;
                let mut recorded: Vec<Recorded> = Vec::new();
                let mut lost = false;
                for event in events {
                    let envelope = envelope_for(
                        event,
                        &ctx.actor,
                        ctx.now,
                        correlation_id,
                        recorded.last().map(|r| r.envelope.event_id.clone()),
                    );
                    let sealed =
                        seal(envelope, head.clone(), signer).map_err(InfraError::Signing)?;
                    let subject = subject_for(&sealed.envelope.event.aggregate());
                    match self
                        .publish_conditional(
                            &subject,
                            expected,
                            Some(&family_filter(prompt)),
                            &sealed,
                        )
                        .await?
                    {
                        Some(sequence) => {
                            pledger_core::evolve(&mut state, &sealed.envelope);
                            expected = sequence;
                            head = Some(sealed.hash.clone());
                            recorded.push(Recorded {
                                sequence,
                                subject,
                                envelope: sealed.envelope,
                            });
                        }
                        None => {
                            lost = true;
                            break;
                        }
                    }
                }
                if !lost || !recorded.is_empty() {
                    if !state.missing_artifacts().is_empty() {
                        // An adopted or proposed version the live state had let go of.
                        let full = self.load_all(prompt).await?;
                        for v in state.missing_artifacts() {
                            if let Some(published) = full.state.versions.get(&v) {
                                state.keep_artifact(&v, published.clone());
                            }
                        }
                    }
                    return Ok(Executed {
                        recorded,
                        state,
                        last_sequence: expected,
                        retries: attempt,
                        actor: ctx.actor,
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

    /// Reads one fleet subject with the roster, verified: the verifier, the ignored messages
    /// and the subject's last raw sequence (0: empty).
    async fn load_fleet(
        &self,
        subject: &str,
    ) -> Result<(LedgerVerifier, Vec<Ignored>, u64), InfraError> {
        let raws = self.read_raw(&[ROSTER_SUBJECT, subject], 0).await?;
        let mut verifier = LedgerVerifier::new();
        let verified = Verified::of(&mut verifier, &raws);
        let last = raws
            .iter()
            .filter(|r| r.subject == subject)
            .map(|r| r.sequence)
            .max()
            .unwrap_or(0);
        Ok((verifier, verified.ignored, last))
    }

    /// Appends a fleet event (roster, global windows, digest) signed by `signer` if its
    /// subject is still at `expected`; `Ok(None)`: it moved.
    async fn append_fleet(
        &self,
        verifier: &LedgerVerifier,
        expected: u64,
        event: Event,
        actor: &Actor,
        signer: &(dyn EventSigner + Sync),
    ) -> Result<Option<Recorded>, InfraError> {
        let aggregate = event.aggregate();
        let subject = subject_for(&aggregate);
        let envelope = envelope_for(event, actor, now(), &new_correlation_id(), None);
        let sealed =
            seal(envelope, verifier.fleet_head(&aggregate), signer).map_err(InfraError::Signing)?;
        Ok(self
            .publish_conditional(&subject, expected, None, &sealed)
            .await?
            .map(|sequence| Recorded {
                sequence,
                subject,
                envelope: sealed.envelope,
            }))
    }

    /// Changes the roster, signed by `signer` (an admin's key; on an empty roster, the key of
    /// the first admin being enrolled). Conditional on the roster subject's last sequence.
    /// `Ok(None)`: nothing to record (the change is already in force).
    pub async fn change_roster(
        &self,
        command: &RosterCommand,
        signer: &(dyn EventSigner + Sync),
    ) -> Result<Option<Recorded>, ExecuteError> {
        for _ in 0..MAX_ATTEMPTS {
            let (verifier, _, last) = self.load_fleet(ROSTER_SUBJECT).await?;
            let roster = &verifier.roster;
            let who = match (roster.is_empty(), command) {
                (
                    true,
                    RosterCommand::Enroll {
                        identity,
                        keys,
                        roles,
                    },
                ) => {
                    let own = keys.iter().any(|k| k.same_key(signer.public_key()));
                    if !own {
                        return Err(Rejection {
                            rule: pledger_core::Rule::NotPermitted,
                            message: format!(
                                "the first admin's enrolment must be signed with its own key ({} is not among the keys given)",
                                pledger_core::verify::key_id(signer.public_key())
                            ),
                        }
                        .into());
                    }
                    Identified {
                        actor: identity.clone(),
                        roles: roles.clone(),
                    }
                }
                _ => identify(roster, signer)?,
            };
            let events = roster.decide(command, &who.actor, &who.roles)?;
            let Some(event) = events.into_iter().next() else {
                return Ok(None);
            };
            if let Some(r) = self
                .append_fleet(&verifier, last, event, &who.actor, signer)
                .await?
            {
                return Ok(Some(r));
            }
        }
        Err(ExecuteError::Conflict {
            prompt: PromptName::parse("roster").expect("valid"),
            attempts: MAX_ATTEMPTS,
        })
    }
}

impl Ledger {
    /// The global release windows in force (the last accepted event of
    /// `pledger.ledger._fleet.windows`), and the ignored messages on that subject.
    pub async fn fleet_windows(
        &self,
    ) -> Result<(Option<ReleaseWindows>, Vec<Ignored>), InfraError> {
        let (verifier, ignored, _) = self.load_fleet(FLEET_WINDOWS_SUBJECT).await?;
        Ok((fleet_windows_of(&verifier), ignored))
    }

    /// Sets (or clears) the global release windows, signed by an admin. Conditional on the
    /// subject's last sequence, so two people editing at once do not silently overwrite each
    /// other; an identical setting records nothing. Returns the recorded event, if any.
    pub async fn set_fleet_windows(
        &self,
        windows: Option<ReleaseWindows>,
        signer: &(dyn EventSigner + Sync),
    ) -> Result<Option<Recorded>, ExecuteError> {
        for _ in 0..MAX_ATTEMPTS {
            let (verifier, _, last) = self.load_fleet(FLEET_WINDOWS_SUBJECT).await?;
            let who = identify(&verifier.roster, signer)?;
            let event = Event::FleetWindowsSet(FleetWindowsSet {
                windows: windows.clone(),
            });
            let aggregate = event.aggregate();
            let current = verifier.fleet_last(&aggregate).map(|e| &e.event);
            if fleet_windows_of(&verifier) == windows {
                // Idempotent, once the caller may set them at all.
                check_permitted(&who.actor, &who.roles, "set-global-release-windows")?;
                return Ok(None);
            }
            admit_fleet(current, &event, &who.actor, &who.roles)?;
            if let Some(r) = self
                .append_fleet(&verifier, last, event, &who.actor, signer)
                .await?
            {
                return Ok(Some(r));
            }
        }
        Err(ExecuteError::Conflict {
            prompt: PromptName::parse("fleet").expect("valid"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The webhooks in force, each with the ledger sequence it is notified from (folded from
    /// the accepted events of `pledger.ledger._fleet.notifications`), the ignored messages on
    /// that subject, and its last raw sequence.
    pub async fn notifications(&self) -> Result<(Subscriptions, Vec<Ignored>, u64), InfraError> {
        let (_, subscriptions, ignored, last) = self.load_notifications().await?;
        Ok((subscriptions, ignored, last))
    }

    async fn load_notifications(
        &self,
    ) -> Result<(LedgerVerifier, Subscriptions, Vec<Ignored>, u64), InfraError> {
        let raws = self
            .read_raw(&[ROSTER_SUBJECT, NOTIFICATIONS_SUBJECT], 0)
            .await?;
        let mut verifier = LedgerVerifier::new();
        let verified = Verified::of(&mut verifier, &raws);
        let mut subscriptions = Subscriptions::default();
        for r in &verified.accepted {
            if let Event::NotificationsSet(set) = &r.envelope.event {
                subscriptions.apply(r.sequence, set);
            }
        }
        let last = raws
            .iter()
            .filter(|r| r.subject == NOTIFICATIONS_SUBJECT)
            .map(|r| r.sequence)
            .max()
            .unwrap_or(0);
        let ignored = verified
            .ignored
            .into_iter()
            .filter(|i| i.finding.subject == NOTIFICATIONS_SUBJECT)
            .collect();
        Ok((verifier, subscriptions, ignored, last))
    }

    /// Changes the webhooks, signed by an admin: `change` gets the set in force and returns
    /// the new one (or refuses). Conditional on the subject's last sequence, so two admins
    /// editing at once do not overwrite each other.
    pub async fn set_notifications(
        &self,
        change: impl Fn(&NotificationsSet) -> Result<NotificationsSet, Rejection>,
        signer: &(dyn EventSigner + Sync),
    ) -> Result<Recorded, ExecuteError> {
        for _ in 0..MAX_ATTEMPTS {
            let (verifier, subscriptions, _, last) = self.load_notifications().await?;
            let who = identify(&verifier.roster, signer)?;
            check_permitted(&who.actor, &who.roles, "set-notifications")?;
            let event = Event::NotificationsSet(change(&subscriptions.set())?);
            let aggregate = event.aggregate();
            let current = verifier.fleet_last(&aggregate).map(|e| &e.event);
            admit_fleet(current, &event, &who.actor, &who.roles)?;
            if let Some(r) = self
                .append_fleet(&verifier, last, event, &who.actor, signer)
                .await?
            {
                return Ok(r);
            }
        }
        Err(ExecuteError::Conflict {
            prompt: PromptName::parse("notifications").expect("valid"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The recorded (accepted) digest of a week, if there is one.
    pub async fn digest(&self, week: &str) -> Result<Option<Recorded>, InfraError> {
        let subject = digest_subject(week);
        let raws = self.read_raw(&[ROSTER_SUBJECT, &subject], 0).await?;
        let mut verifier = LedgerVerifier::new();
        let verified = Verified::of(&mut verifier, &raws);
        Ok(verified.accepted.into_iter().find(|r| r.subject == subject))
    }

    /// Appends a week's digest, signed by `signer`, unless that week already has one.
    /// `Ok(None)`: another writer recorded it first (theirs stands; it was composed from the
    /// same ledger).
    pub async fn record_digest(
        &self,
        digest: DigestRecorded,
        signer: &(dyn EventSigner + Sync),
    ) -> Result<Option<Recorded>, ExecuteError> {
        let subject = digest_subject(&digest.week);
        let (verifier, _, last) = self.load_fleet(&subject).await?;
        let who = identify(&verifier.roster, signer)?;
        check_permitted(&who.actor, &who.roles, "record-digest")?;
        if verifier
            .fleet_last(&Aggregate::Fleet(FleetTopic::Digest(digest.week.clone())))
            .is_some()
        {
            return Ok(None);
        }
        Ok(self
            .append_fleet(
                &verifier,
                last,
                Event::DigestRecorded(digest),
                &who.actor,
                signer,
            )
            .await?)
    }

    /// Every event of the ledger, verified in stream order: the accepted ones matching
    /// `filter` (a subject filter such as [`DIGEST_FILTER`] or [`LEDGER_SUBJECTS`]) and what
    /// was ignored. Verifying a fleet subject needs the roster, so the whole ledger is read.
    pub async fn read_all(&self, filter: &str) -> Result<Verified, InfraError> {
        let raws = self.read_raw(&[LEDGER_SUBJECTS], 0).await?;
        let mut verifier = LedgerVerifier::new();
        let mut verified = Verified::of(&mut verifier, &raws);
        verified
            .accepted
            .retain(|r| subject_matches(filter, &r.subject));
        Ok(verified)
    }
}

/// Does a NATS subject match a filter (`*` one token, `>` the rest)?
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
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

/// Reads `pending` messages from an ephemeral consumer, raw.
/// Reads every pending message; with `out`, sends them in chunks as they arrive and returns
/// none.
async fn read_messages(
    consumer: &consumer::PullConsumer,
    filter: &str,
    pending: u64,
    out: Option<(usize, tokio::sync::mpsc::Sender<Vec<RawRecord>>)>,
) -> Result<Vec<RawRecord>, InfraError> {
    let mut records = Vec::new();
    if pending == 0 {
        return Ok(records);
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
        records.push(RawRecord {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
        });
        if let Some((chunk, tx)) = &out {
            let full = records.len() >= *chunk || remaining == 0;
            if full && tx.send(std::mem::take(&mut records)).await.is_err() {
                break;
            }
        }
        if remaining == 0 {
            break;
        }
    }
    if let (Some((_, tx)), false) = (&out, records.is_empty()) {
        let _ = tx.send(std::mem::take(&mut records)).await;
    }
    Ok(records)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_read_is_asked_again_and_an_answer_ends_it() {
        let mut asked = 0;
        let read = answered("a read", || {
            asked += 1;
            let n = asked;
            async move {
                if n < 3 {
                    Err(InfraError::read("no responders"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(read.unwrap(), 3);

        let mut asked = 0;
        let missing: Result<(), _> = answered("a read", || {
            asked += 1;
            async { Err(InfraError::stream_missing("stream not found")) }
        })
        .await;
        assert!(matches!(missing, Err(InfraError::StreamMissing(_))));
        assert_eq!(asked, 1, "an answer, even an error, is not asked again");

        let started = tokio::time::Instant::now();
        let never: Result<(), _> =
            answered("a read", || async { Err(InfraError::read("timed out")) }).await;
        assert!(never.unwrap_err().is_unanswered());
        assert!(started.elapsed() >= ELECTION_WAIT - ELECTION_PAUSE);
    }
}
