//! The outcome reporter: `report` hands an outcome to a bounded queue and returns; a
//! background task groups outcomes per prompt into JSON arrays no larger than the server's
//! `max_payload` and publishes them to the `PLEDGER_OUTCOMES` stream through JetStream.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use pledger_core::outcome::{outcome_subject, Outcome};
use pledger_core::PromptName;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::ClientError;

/// How the reporter batches and publishes.
#[derive(Clone, Debug)]
pub struct ReporterOptions {
    /// Outcomes queued between `report` and the background task; beyond it `report` drops
    /// (and counts). Also the most outcomes held in unpublished batches. Default 10 000.
    pub capacity: usize,
    /// Most outcomes in one message. Default 500.
    pub max_batch: usize,
    /// Longest an outcome waits in a batch before it is published. Default 1 s.
    pub max_delay: Duration,
    /// Largest message, in bytes. `None` (the default): the server's `max_payload`, as the
    /// client learnt it from the server.
    pub max_payload: Option<usize>,
    /// How long one publish (and its acknowledgement) may take before its batch counts as
    /// failed. Default 5 s.
    pub publish_timeout: Duration,
}

impl Default for ReporterOptions {
    fn default() -> Self {
        ReporterOptions {
            capacity: 10_000,
            max_batch: 500,
            max_delay: Duration::from_secs(1),
            max_payload: None,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// The reporter's counters since start. `reported` = `published_outcomes` +
/// `dropped_too_large` + `dropped_invalid` + `failed_outcomes` + (outcomes still queued).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReporterStats {
    /// Outcomes `report` accepted into the queue.
    pub reported: u64,
    /// Outcomes the stream acknowledged.
    pub published_outcomes: u64,
    /// Messages the stream acknowledged.
    pub published_messages: u64,
    /// Outcomes `report` dropped because the queue was full.
    pub dropped_full: u64,
    /// Outcomes dropped because alone they exceed the message size limit.
    pub dropped_too_large: u64,
    /// Outcomes dropped because they break a value rule (`Outcome::validate`); the stream's
    /// readers would refuse them.
    pub dropped_invalid: u64,
    /// Outcomes `report` dropped because the reporter was shut down.
    pub dropped_closed: u64,
    /// Messages whose publish failed or was not acknowledged in time.
    pub publish_failures: u64,
    /// Outcomes in those messages (lost: telemetry is at most once).
    pub failed_outcomes: u64,
}

#[derive(Default)]
struct Counters {
    reported: AtomicU64,
    published_outcomes: AtomicU64,
    published_messages: AtomicU64,
    dropped_full: AtomicU64,
    dropped_too_large: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_closed: AtomicU64,
    publish_failures: AtomicU64,
    failed_outcomes: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

// Not boxed: a box would be one more allocation on the caller's request path, and flushes are
// rare.
#[allow(clippy::large_enum_variant)]
enum Command {
    Outcome(Outcome),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Reports outcomes without ever blocking the request path. Cheap to clone. Dropping the last
/// clone lets the background task publish what is queued and end; [`OutcomeReporter::shutdown`]
/// does the same and waits for it.
#[derive(Clone)]
pub struct OutcomeReporter {
    inner: Arc<ReporterInner>,
}

struct ReporterInner {
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl OutcomeReporter {
    /// Starts the background publisher on `client`. Must be called inside a Tokio runtime.
    /// Outcomes go to `pledger.outcomes.<prompt>` (stream `PLEDGER_OUTCOMES`, which `pledger
    /// init` creates); while it is missing or the server is down, publishes fail and are
    /// counted.
    pub fn start(client: async_nats::Client, options: ReporterOptions) -> OutcomeReporter {
        let options = ReporterOptions {
            capacity: options.capacity.max(1),
            max_batch: options.max_batch.max(1),
            ..options
        };
        let (tx, rx) = mpsc::channel(options.capacity);
        let counters = Arc::new(Counters::default());
        let mut js = jetstream::new(client.clone());
        js.set_timeout(options.publish_timeout);
        let task = Publisher {
            js,
            client,
            options,
            counters: counters.clone(),
            batches: HashMap::new(),
            ready: Vec::new(),
            pending: 0,
            deadline: None,
        };
        OutcomeReporter {
            inner: Arc::new(ReporterInner {
                tx,
                counters,
                task: Mutex::new(Some(tokio::spawn(task.run(rx)))),
            }),
        }
    }

    /// Queues an outcome for publishing. Synchronous and never blocks: when the queue is full
    /// (or the reporter is shut down) the outcome is dropped and counted. Returns whether it
    /// was queued.
    pub fn report(&self, outcome: Outcome) -> bool {
        let c = &self.inner.counters;
        match self.inner.tx.try_send(Command::Outcome(outcome)) {
            Ok(()) => {
                add(&c.reported, 1);
                true
            }
            Err(TrySendError::Full(_)) => {
                add(&c.dropped_full, 1);
                false
            }
            Err(TrySendError::Closed(_)) => {
                add(&c.dropped_closed, 1);
                false
            }
        }
    }

    /// Publishes everything reported before this call and waits for the acknowledgements (or
    /// failures, which are counted).
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Flush(done))
            .await
            .map_err(|_| ClientError::ReporterClosed)?;
        wait.await.map_err(|_| ClientError::ReporterClosed)
    }

    /// Stops accepting outcomes, publishes everything queued, and waits for the task to end.
    /// Later `report`s count as `dropped_closed`. Calling it again is a no-op.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.tx.send(Command::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ReporterStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReporterStats {
            reported: get(&c.reported),
            published_outcomes: get(&c.published_outcomes),
            published_messages: get(&c.published_messages),
            dropped_full: get(&c.dropped_full),
            dropped_too_large: get(&c.dropped_too_large),
            dropped_invalid: get(&c.dropped_invalid),
            dropped_closed: get(&c.dropped_closed),
            publish_failures: get(&c.publish_failures),
            failed_outcomes: get(&c.failed_outcomes),
        }
    }
}

/// A prompt's batch being built: a JSON array without its closing bracket.
struct Batch {
    buf: Vec<u8>,
    count: usize,
}

/// A sealed message, ready to publish.
struct Ready {
    subject: String,
    payload: Bytes,
    count: u64,
}

/// Most publishes awaiting their acknowledgement at once.
const MAX_IN_FLIGHT: usize = 256;

struct Publisher {
    js: jetstream::Context,
    client: async_nats::Client,
    options: ReporterOptions,
    counters: Arc<Counters>,
    batches: HashMap<PromptName, Batch>,
    ready: Vec<Ready>,
    /// Outcomes in `batches`.
    pending: usize,
    /// When the oldest pending outcome must be published.
    deadline: Option<Instant>,
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut shutdown_waiters = Vec::new();
        loop {
            let command = match self.deadline {
                Some(deadline) => tokio::select! {
                    c = rx.recv() => c,
                    _ = tokio::time::sleep_until(deadline) => {
                        self.seal_all();
                        self.publish().await;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(command) = command else { break };
            let mut next = Some(command);
            // Take what is already queued before publishing: bigger batches, fewer messages.
            let mut taken = 0;
            while let Some(command) = next.take() {
                match command {
                    Command::Outcome(outcome) => self.add(outcome),
                    Command::Flush(done) => {
                        self.seal_all();
                        self.publish().await;
                        let _ = done.send(());
                    }
                    Command::Shutdown(done) => {
                        shutdown_waiters.push(done);
                        // Refuse new outcomes; the ones already queued are still published.
                        rx.close();
                    }
                }
                taken += 1;
                if taken < self.options.capacity {
                    next = rx.try_recv().ok();
                }
            }
            self.publish().await;
        }
        self.seal_all();
        self.publish().await;
        for done in shutdown_waiters {
            let _ = done.send(());
        }
    }

    fn limit(&self) -> usize {
        self.options
            .max_payload
            .unwrap_or_else(|| self.client.max_payload())
    }

    fn add(&mut self, outcome: Outcome) {
        if let Err(reason) = outcome.validate() {
            debug!(
                request_id = outcome.request_id,
                "dropping an invalid outcome: {reason}"
            );
            add(&self.counters.dropped_invalid, 1);
            return;
        }
        let item = match serde_json::to_vec(&outcome) {
            Ok(item) => item,
            Err(e) => {
                debug!("dropping an outcome that does not serialise: {e}");
                add(&self.counters.dropped_invalid, 1);
                return;
            }
        };
        let limit = self.limit();
        // `[item]`
        if item.len() + 2 > limit {
            add(&self.counters.dropped_too_large, 1);
            return;
        }
        let prompt = outcome.prompt;
        // `,item]` must still fit after what the batch holds.
        if let Some(batch) = self.batches.get(&prompt) {
            if batch.buf.len() + 1 + item.len() + 1 > limit {
                self.seal(&prompt);
            }
        }
        let batch = self.batches.entry(prompt.clone()).or_insert_with(|| Batch {
            buf: Vec::with_capacity(item.len() + 2),
            count: 0,
        });
        batch.buf.push(if batch.count == 0 { b'[' } else { b',' });
        batch.buf.extend_from_slice(&item);
        batch.count += 1;
        let full = batch.count >= self.options.max_batch;
        self.pending += 1;
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.options.max_delay);
        }
        if full {
            self.seal(&prompt);
        }
        if self.pending >= self.options.capacity {
            self.seal_all();
        }
    }

    fn seal(&mut self, prompt: &PromptName) {
        if let Some(mut batch) = self.batches.remove(prompt) {
            batch.buf.push(b']');
            self.pending -= batch.count;
            self.ready.push(Ready {
                subject: outcome_subject(prompt),
                payload: batch.buf.into(),
                count: batch.count as u64,
            });
        }
        if self.pending == 0 {
            self.deadline = None;
        }
    }

    fn seal_all(&mut self) {
        let prompts: Vec<PromptName> = self.batches.keys().cloned().collect();
        for prompt in prompts {
            self.seal(&prompt);
        }
        self.deadline = None;
    }

    /// Publishes the sealed messages, awaiting acknowledgements in groups.
    async fn publish(&mut self) {
        let timeout = self.options.publish_timeout;
        let ready = std::mem::take(&mut self.ready);
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let mut acks = Vec::new();
            for message in ready.by_ref().take(MAX_IN_FLIGHT) {
                match tokio::time::timeout(
                    timeout,
                    self.js.publish(message.subject, message.payload),
                )
                .await
                {
                    Ok(Ok(ack)) => acks.push((ack, message.count)),
                    Ok(Err(e)) => self.failed(message.count, &e.to_string()),
                    Err(_) => self.failed(message.count, "publish timed out"),
                }
            }
            let results =
                futures::future::join_all(acks.into_iter().map(|(ack, count)| async move {
                    (
                        tokio::time::timeout(timeout, ack.into_future()).await,
                        count,
                    )
                }))
                .await;
            for (result, count) in results {
                match result {
                    Ok(Ok(_)) => {
                        add(&self.counters.published_messages, 1);
                        add(&self.counters.published_outcomes, count);
                    }
                    Ok(Err(e)) => self.failed(count, &e.to_string()),
                    Err(_) => self.failed(count, "no acknowledgement in time"),
                }
            }
        }
    }

    fn failed(&self, count: u64, reason: &str) {
        warn!(outcomes = count, "publishing outcomes failed: {reason}");
        add(&self.counters.publish_failures, 1);
        add(&self.counters.failed_outcomes, count);
    }
}
