//! The worker runtime: durable consumers, batches applied to a sled projection together with
//! their stream sequence, acks after the commit, dead letters, and clean shutdown.
//!
//! Every worker owns one sled directory and one durable consumer per stream it reads (named
//! `pledger_<worker>_<replica>`), so replicas each see every event; their decisions go
//! through [`Ledger::execute`]'s conditional appends, so two replicas make one decision.

pub mod canary;
pub mod feedback;
pub mod gatekeeper;
pub mod notary;
pub mod notifier;
pub mod router;
pub mod scheduler;
pub mod supervise;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use futures::{FutureExt, StreamExt};
use pledger_core::verify::EventSigner;
use pledger_core::Actor;
use serde::Serialize;
use tokio::sync::watch;

use crate::error::InfraError;
use crate::ledger::{Family, Ledger};
use crate::projection::{Binding, ProjectionError, ProjectionStore};
use crate::routing::RoutingStore;

/// Largest batch a worker applies in one sled transaction.
pub const MAX_BATCH: usize = 1000;
/// Most payload bytes a worker pulls in one batch of outcome messages.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Most payload bytes a worker pulls in one batch of ledger events: room for the largest
/// message the ledger stream stores (1 MiB) and a thousand ordinary events. Each consumer's
/// pulls stay buffered in the client until handled, so a worker that is behind holds at most
/// this much of the ledger at once, however long the backlog.
pub const MAX_LEDGER_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Most payload bytes a worker pulls in one batch from `stream`.
pub fn batch_bytes(stream: &str) -> usize {
    if stream == crate::ledger::OUTCOMES_STREAM {
        MAX_BATCH_BYTES
    } else {
        MAX_LEDGER_BATCH_BYTES
    }
}

/// Which worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    Gatekeeper,
    Router,
    Canary,
    Feedback,
    Scheduler,
    Notary,
    Notifier,
}

impl WorkerKind {
    pub const ALL: [WorkerKind; 7] = [
        WorkerKind::Gatekeeper,
        WorkerKind::Router,
        WorkerKind::Canary,
        WorkerKind::Feedback,
        WorkerKind::Scheduler,
        WorkerKind::Notary,
        WorkerKind::Notifier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Gatekeeper => "gatekeeper",
            WorkerKind::Router => "router",
            WorkerKind::Canary => "canary",
            WorkerKind::Feedback => "feedback",
            WorkerKind::Scheduler => "scheduler",
            WorkerKind::Notary => "notary",
            WorkerKind::Notifier => "notifier",
        }
    }

    /// The role its identity is enrolled with: the notary signs checkpoints and nothing else;
    /// the notifier records nothing (an auditor may sign nothing); every other worker records
    /// decisions.
    pub fn role(self) -> pledger_core::identity::Role {
        match self {
            WorkerKind::Notary => pledger_core::identity::Role::Notary,
            WorkerKind::Notifier => pledger_core::identity::Role::Auditor,
            _ => pledger_core::identity::Role::Worker,
        }
    }
}

/// What every worker gets.
#[derive(Clone)]
pub struct WorkerContext {
    pub kind: WorkerKind,
    pub replica: String,
    pub ledger: Ledger,
    pub routing: RoutingStore,
    pub store: Arc<ProjectionStore>,
    /// The key the worker signs its decisions with.
    pub signer: Arc<dyn EventSigner + Send + Sync>,
    /// The identity that key belongs to on the roster: the actor of its decisions.
    pub actor: Actor,
    /// Ignored ledger events already dead-lettered by this process, and the sequence at start
    /// below which earlier runs reported them.
    reported: Arc<std::sync::Mutex<(u64, std::collections::BTreeSet<u64>)>>,
}

impl WorkerContext {
    /// Opens the worker's sled store under `data_dir/<kind>-<replica>` and its handles. The
    /// signer's key must belong to an enrolled identity (with the `worker` role for the
    /// decisions it records).
    pub async fn open(
        kind: WorkerKind,
        replica: &str,
        client: async_nats::Client,
        data_dir: &Path,
        signer: Arc<dyn EventSigner + Send + Sync>,
    ) -> Result<WorkerContext, WorkerError> {
        // Families are kept verified in memory between reads: a read verifies only what is new.
        // The workers of one process share their snapshots.
        let ledger = Ledger::new(client).with_snapshots(crate::snapshot::SnapshotMemory::shared());
        Ledger::check_server_version(&ledger.jetstream().client())?;
        let (roster, _, _) = ledger.roster().await?;
        let actor = crate::ledger::identify(&roster.roster, &*signer)?.actor;
        let routing = RoutingStore::open(ledger.jetstream()).await?;
        let dir = data_dir.join(format!("{}-{replica}", kind.name()));
        let store = Arc::new(ProjectionStore::open(&dir)?);
        let (identity, last) = ledger.identity().await?;
        let last: Vec<(&str, u64)> = last.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        match store.bind(&identity, &last)? {
            Binding::Rebuilt { reason } => tracing::warn!(
                worker = kind.name(),
                store = %dir.display(),
                rebuilds = store.rebuilds()?,
                "rebuilding the projection from the start of this ledger: {reason}"
            ),
            Binding::New | Binding::Same => {}
        }
        store.flush().await?;
        let (replication, servers) = ledger.replication().await?;
        for (stream, copies) in replication {
            if copies < servers.min(3) {
                tracing::warn!(
                    worker = kind.name(),
                    "{stream} has {copies} replica(s) on a cluster of {servers} servers: losing the server that holds it stops the ledger (run `pledger init --replicas {}`)",
                    servers.min(3)
                );
            }
        }
        let floor = store.applied_sequence(crate::ledger::LEDGER_STREAM)?;
        Ok(WorkerContext {
            kind,
            replica: replica.to_string(),
            ledger,
            routing,
            store,
            signer,
            actor,
            reported: Arc::new(std::sync::Mutex::new((floor, Default::default()))),
        })
    }

    /// Makes the store's writes durable (off the runtime's threads), then acks the batch
    /// whose effects they are.
    pub async fn ack(&self, batch: &[jetstream::Message]) -> Result<(), WorkerError> {
        self.store.flush().await?;
        ack_batch(batch).await
    }

    /// Reads and verifies a prompt's family. Messages of the family that verification ignored
    /// and that this worker has not reported yet are counted, logged and dead-lettered with
    /// their reason; the prompt stays readable and the worker goes on.
    pub async fn load(&self, prompt: &pledger_core::PromptName) -> Result<Family, WorkerError> {
        let family = self.ledger.load(prompt).await?;
        let prefix = crate::ledger::family_filter(prompt);
        let prefix = prefix.trim_end_matches('>');
        let fresh: Vec<&crate::ledger::Ignored> = {
            let mut reported = self.reported.lock().expect("not poisoned");
            let floor = reported.0;
            family
                .ignored
                .iter()
                .filter(|i| i.finding.subject.starts_with(prefix))
                .filter(|i| i.finding.sequence > floor && reported.1.insert(i.finding.sequence))
                .collect()
        };
        for i in fresh {
            let f = &i.finding;
            tracing::warn!(
                sequence = f.sequence,
                subject = %f.subject,
                check = f.check.code(),
                "ignored ledger event dead-lettered: {}",
                f.reason
            );
            self.dead_letter(
                &f.subject,
                f.sequence,
                &format!("ignored ledger event ({}): {}", f.check.code(), f.reason),
                &i.payload,
            )
            .await?;
        }
        Ok(family)
    }

    /// The identity a worker of this kind is enrolled as by `pledger up` (and the name of its
    /// key file under `<data dir>/keys/`).
    pub fn identity_name(kind: WorkerKind) -> &'static str {
        match kind {
            WorkerKind::Canary => "canary-monitor",
            WorkerKind::Feedback => "feedback-collector",
            other => other.name(),
        }
    }

    /// The durable consumer name of this worker and replica on one stream.
    pub fn durable_name(&self, stream: &str) -> String {
        pledger_core::names::durable_name(self.kind.name(), &self.replica, stream)
    }

    /// This worker's durable pull consumer on `stream` for `filter`, positioned right after
    /// the last sequence its projection committed.
    ///
    /// The projection, not the server, says where to resume: the consumer is recreated at
    /// `applied + 1` on every start. (A consumer resumed by the server would redeliver what a
    /// killed process had received but not committed only after `ack_wait`, out of order,
    /// while newer messages were already being applied; an `AckPolicy::All` ack of those newer
    /// messages would even acknowledge the lost ones.) Within one run delivery is in order and
    /// each batch is acked, after its commit, by acking its last message.
    pub async fn consumer(
        &self,
        stream: &str,
        filter: &str,
    ) -> Result<consumer::PullConsumer, WorkerError> {
        let s = self
            .ledger
            .jetstream()
            .get_stream(stream)
            .await
            .map_err(|e| WorkerError::Nats(format!("looking up stream {stream}: {e}")))?;
        let name = self.durable_name(stream);
        let applied = self.store.applied_sequence(stream)?;
        // Absent on a first start; any other failure shows when the consumer is created.
        if let Err(e) = s.delete_consumer(&name).await {
            tracing::debug!("no consumer {name} to replace: {e}");
        }
        let config = consumer_config(&name, filter, applied);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match s.create_consumer(config.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if attempt < crate::ledger::UNANSWERED_ATTEMPTS => {
                    tracing::debug!(attempt, "creating consumer {name} got {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(WorkerError::Nats(format!(
                        "creating consumer {name} on {stream}: {e}"
                    )))
                }
            }
        }
    }

    /// Publishes a dead letter: the reason, where the message came from, and its payload.
    pub async fn dead_letter(
        &self,
        source_subject: &str,
        sequence: u64,
        reason: &str,
        payload: &[u8],
    ) -> Result<(), WorkerError> {
        #[derive(Serialize)]
        struct DeadLetter<'a> {
            worker: &'a str,
            replica: &'a str,
            subject: &'a str,
            stream_sequence: u64,
            reason: &'a str,
            payload: String,
        }
        let text = String::from_utf8_lossy(&payload[..payload.len().min(64 * 1024)]).into_owned();
        let letter = DeadLetter {
            worker: self.kind.name(),
            replica: &self.replica,
            subject: source_subject,
            stream_sequence: sequence,
            reason,
            payload: text,
        };
        let subject = pledger_core::names::deadletter_subject(
            self.kind.name(),
            &source_subject.replace('.', "_"),
        );
        self.ledger
            .jetstream()
            .publish(
                subject,
                serde_json::to_vec(&letter).expect("serializes").into(),
            )
            .await
            .map_err(|e| WorkerError::Nats(format!("publishing a dead letter: {e}")))?
            .await
            .map_err(|e| WorkerError::Nats(format!("publishing a dead letter: {e}")))?;
        crate::metrics::global().dead_lettered(self.kind.name(), &self.replica);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// A shutdown signal shared by the workers of one process.
pub type Shutdown = watch::Receiver<bool>;

/// The configuration of a worker's durable consumer named `name` on `filter`, starting right
/// after `applied` (the store's committed sequence).
///
/// One replica, in memory: the worker's store, not the consumer, holds the position, so the
/// consumer is recreated on every start and needs no durability of its own. A replicated
/// consumer would need its own election on every start: measured on a three-node cluster with
/// one node down, recreating an R3 consumer missed the 2 s request timeout in about half of
/// the attempts for the full minute observed (its new group still counts the dead node),
/// while an R1 consumer was created in 11–33 ms once the stream had a leader. If the node
/// holding it dies, the worker's pull fails, its run ends, and its restart creates the
/// consumer again on a live node. A consumer left behind by a replica that is gone is removed
/// by the server after [`CONSUMER_INACTIVE`].
pub fn consumer_config(name: &str, filter: &str, applied: u64) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_string()),
        filter_subject: filter.to_string(),
        ack_policy: consumer::AckPolicy::All,
        deliver_policy: if applied == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: applied + 1,
            }
        },
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 100_000,
        num_replicas: 1,
        memory_storage: true,
        inactive_threshold: CONSUMER_INACTIVE,
        ..Default::default()
    }
}

/// How long the server keeps a worker's consumer that nobody pulls from.
pub const CONSUMER_INACTIVE: Duration = Duration::from_secs(3600);

/// The messages of a durable consumer, delivered in batches of whatever is ready.
pub struct Batches {
    messages: consumer::pull::Stream,
    /// The consumer sequence of the last message delivered: the server numbers each delivery
    /// of this consumer 1, 2, 3, … so a skipped number is a message lost on the way (a
    /// connection that died with a consumer leader, for instance).
    last_delivery: u64,
}

impl Batches {
    pub async fn new(consumer: &consumer::PullConsumer) -> Result<Batches, WorkerError> {
        let stream = consumer.cached_info().stream_name.clone();
        let messages = consumer
            .stream()
            .max_messages_per_batch(MAX_BATCH)
            // Bounds the memory of one batch whatever the message size (measured: peak RSS of
            // `pledger up` under outcome load 188 MiB without it, about 108 MiB with 16 MiB).
            .max_bytes_per_batch(batch_bytes(&stream))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| WorkerError::Nats(format!("pulling from a consumer: {e}")))?;
        Ok(Batches {
            messages,
            last_delivery: 0,
        })
    }

    /// Waits up to `wait` for a first message, then takes every message already at hand (at
    /// most [`MAX_BATCH`]). An empty batch means nothing arrived in time.
    ///
    /// A gap in the consumer's delivery numbers ends the worker's run with an error before
    /// anything after the gap is applied or acked (an ack of a later message would ack the
    /// lost one too, under `AckPolicy::All`): the run that follows recreates the consumer
    /// right after the store's committed sequence, so the lost message is delivered again.
    pub async fn next(&mut self, wait: Duration) -> Result<Vec<jetstream::Message>, WorkerError> {
        let mut batch = Vec::new();
        match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) | Ok(None) => return Ok(batch),
            Ok(Some(m)) => batch.push(self.in_order(m)?),
        }
        while batch.len() < MAX_BATCH {
            match self.messages.next().now_or_never() {
                Some(Some(m)) => batch.push(self.in_order(m)?),
                _ => break,
            }
        }
        Ok(batch)
    }

    fn in_order(
        &mut self,
        m: Result<jetstream::Message, consumer::pull::MessagesError>,
    ) -> Result<jetstream::Message, WorkerError> {
        let m = m.map_err(|e| WorkerError::Nats(format!("receiving from a consumer: {e}")))?;
        let number = m
            .info()
            .map_err(|e| WorkerError::Nats(e.to_string()))?
            .consumer_sequence;
        if number != self.last_delivery + 1 {
            return Err(WorkerError::Nats(format!(
                "a gap in delivery (delivery {} after {}): a message was lost on the way; starting again from the store's committed sequence",
                number, self.last_delivery
            )));
        }
        self.last_delivery = number;
        Ok(m)
    }
}

/// Acks a batch after its effect is committed: with `AckPolicy::All`, acking the last message
/// acks every earlier one.
pub async fn ack_batch(batch: &[jetstream::Message]) -> Result<(), WorkerError> {
    if let Some(last) = batch.last() {
        last.ack_with(AckKind::Ack)
            .await
            .map_err(|e| WorkerError::Nats(e.to_string()))?;
    }
    Ok(())
}

/// The prompts a ledger batch touched beyond `applied` (for events `relevant` says matter),
/// and the batch's last sequence. A message that does not decode still touches the prompt
/// its subject names: the verified read of that prompt reports it (see [`WorkerContext::load`]).
pub fn touched_prompts(
    batch: &[jetstream::Message],
    applied: u64,
    relevant: impl Fn(&pledger_core::Envelope) -> bool,
) -> Result<(std::collections::BTreeSet<pledger_core::PromptName>, u64), WorkerError> {
    let mut prompts = std::collections::BTreeSet::new();
    let mut last = applied;
    for m in batch {
        let seq = sequence_of(m)?;
        last = last.max(seq);
        if seq <= applied {
            continue;
        }
        let Some(prompt) = prompt_of_subject(&m.subject) else {
            continue;
        };
        match pledger_core::Envelope::from_json(&m.payload) {
            Ok(e) if !relevant(&e) => {}
            _ => {
                prompts.insert(prompt);
            }
        }
    }
    Ok((prompts, last))
}

/// The prompt whose family a ledger subject belongs to (`None` for fleet subjects).
pub fn prompt_of_subject(subject: &str) -> Option<pledger_core::PromptName> {
    let token = pledger_core::names::prompt_token(subject)?;
    pledger_core::PromptName::parse(token).ok()
}

/// Stream sequence of a JetStream message.
pub fn sequence_of(message: &jetstream::Message) -> Result<u64, WorkerError> {
    message
        .info()
        .map(|i| i.stream_sequence)
        .map_err(|e| WorkerError::Nats(e.to_string()))
}

/// Has shutdown been asked for?
pub fn stopping(shutdown: &Shutdown) -> bool {
    *shutdown.borrow()
}
