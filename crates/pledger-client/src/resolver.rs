//! The resolver: every routing table of the `pledger_routing` bucket in memory, kept current by
//! a KV watch, answering [`Resolver::resolve`] locally.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use pledger_core::routing::RoutingTable;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::context::RequestContext;
use crate::error::{ClientError, ROUTING_BUCKET, ROUTING_STREAM};
use crate::routing::{CompiledTable, Resolution};
use crate::snapshot;

/// How a [`Resolver`] starts and stays current.
#[derive(Clone, Debug)]
pub struct ResolverOptions {
    /// A snapshot file (see [`Resolver::save_snapshot`]). When it exists, [`Resolver::start`]
    /// serves its tables at once and returns without waiting for the server, which may be
    /// down: the live load and watch continue in the background. When it does not exist (a
    /// first start), `start` waits for the live load as without a snapshot.
    pub snapshot: Option<PathBuf>,
    /// Rewrite the `snapshot` file after the first live load and whenever a table changes, so
    /// the next start begins from the latest tables. Default `true`.
    pub autosave_snapshot: bool,
    /// How often the watch confirms against the server that no change is missing (one
    /// stream-info request), and notices a lost connection. Default 5 s.
    pub heartbeat: Duration,
    /// How long `start` waits for the first live load when it has no snapshot to serve.
    /// Default 10 s.
    pub initial_load_timeout: Duration,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            snapshot: None,
            autosave_snapshot: true,
            heartbeat: Duration::from_secs(5),
            initial_load_timeout: Duration::from_secs(10),
        }
    }
}

/// How current the resolver's tables are. Tables are served whatever this says (fail static);
/// use it for health checks and alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct Staleness {
    /// The watch is live: the client is connected and the last check against the server
    /// succeeded.
    pub connected: bool,
    /// The tables were loaded from the server at least once since start (`false` while only a
    /// snapshot is served).
    pub synced: bool,
    /// Time since the tables were last confirmed to match the bucket (by an update or a
    /// heartbeat). While only a snapshot is served: the time since the snapshot was saved.
    pub since_confirmed: Duration,
    /// Why the watch is not live, when it is not.
    pub last_error: Option<String>,
}

/// Resolves prompts to versions from memory. Cheap to clone; the watch stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Confirmed {
    At(Instant),
    /// From a snapshot: wall-clock time, as it may predate this boot.
    Wall(SystemTime),
}

#[derive(Debug)]
struct Status {
    live: bool,
    synced: bool,
    confirmed: Confirmed,
    revision: u64,
    last_error: Option<String>,
}

struct Shared {
    tables: RwLock<HashMap<Box<str>, Arc<CompiledTable>>>,
    status: Mutex<Status>,
    /// Bumped on every observable change (tables, revision, connectivity).
    changes: watch::Sender<u64>,
    client: Option<async_nats::Client>,
    /// The routing bucket the tables held came from ([`bucket_source`]); `None` for tables
    /// that came from nowhere known.
    source: Mutex<Option<String>>,
}

/// Names a routing bucket: its stream, creation time and cluster. A bucket deleted and
/// created again, or another server's, has another name.
fn bucket_source(info: &jetstream::stream::Info) -> String {
    let cluster = info
        .cluster
        .as_ref()
        .and_then(|c| c.name.clone())
        .unwrap_or_else(|| "single server".to_string());
    format!(
        "{} created {}@{cluster}",
        info.config.name,
        info.created.unix_timestamp_nanos()
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Replaced,
    Unchanged,
    Older,
}

impl Shared {
    fn new(client: Option<async_nats::Client>, confirmed: Confirmed) -> Shared {
        Shared {
            tables: RwLock::new(HashMap::new()),
            status: Mutex::new(Status {
                live: false,
                synced: false,
                confirmed,
                revision: 0,
                last_error: None,
            }),
            changes: watch::channel(0).0,
            source: Mutex::new(None),
            client,
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn status<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        let r = f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
        self.bump();
        r
    }

    fn upsert(&self, table: RoutingTable) -> Applied {
        {
            let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(current) = tables.get(table.prompt.as_str()) {
                if current.table.ledger_sequence > table.ledger_sequence {
                    return Applied::Older;
                }
                if *current.table == table {
                    return Applied::Unchanged;
                }
            }
        }
        // Compiled outside the lock; only this task writes, so the check above still holds.
        let key: Box<str> = table.prompt.as_str().into();
        let compiled = Arc::new(CompiledTable::compile(table));
        self.tables
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, compiled);
        Applied::Replaced
    }

    fn remove(&self, key: &str) -> bool {
        self.tables
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
            .is_some()
    }

    /// Removes every table whose key is not in `keep`; returns how many went.
    fn source(&self) -> Option<String> {
        self.source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn retain(&self, keep: &HashSet<String>) -> usize {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let before = tables.len();
        tables.retain(|k, _| keep.contains(&**k));
        before - tables.len()
    }

    fn tables(&self) -> Vec<Arc<RoutingTable>> {
        let mut all: Vec<_> = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|c| c.table.clone())
            .collect();
        all.sort_by(|a, b| a.prompt.cmp(&b.prompt));
        all
    }

    fn confirm(&self) {
        self.status(|s| {
            s.live = true;
            s.confirmed = Confirmed::At(Instant::now());
            s.last_error = None;
        });
    }

    fn fail(&self, error: String) {
        self.status(|s| {
            s.live = false;
            s.last_error = Some(error);
        });
    }
}

impl Resolver {
    /// Starts a resolver on `client`: opens the `pledger_routing` bucket, loads every table,
    /// then follows the bucket's changes in a background task (which re-creates its watch and
    /// rides out reconnections by itself).
    ///
    /// - Without a snapshot (or when its file does not exist yet), returns once the tables
    ///   are loaded, or fails: [`ClientError::BucketMissing`] when no `pledger` command ever
    ///   set the server up, [`ClientError::Unreachable`] / [`ClientError::Timeout`] when the
    ///   server does not answer within `initial_load_timeout`.
    /// - With a readable snapshot, returns at once serving the snapshot, whatever the server's
    ///   state; the live load follows in the background ([`Resolver::wait_synced`] waits for
    ///   it). For this to work while the server is down, the client must have been created
    ///   with `retry_on_initial_connect` (as [`crate::connect`] does). An unreadable snapshot
    ///   is logged and ignored.
    ///
    /// Must be called inside a Tokio runtime.
    pub async fn start(
        client: async_nats::Client,
        options: ResolverOptions,
    ) -> Result<Resolver, ClientError> {
        let snapshot = match options.snapshot.as_deref().map(snapshot::read) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!("ignoring the routing snapshot: {e}");
                None
            }
            None => None,
        };
        let confirmed = match &snapshot {
            Some(s) => Confirmed::Wall(s.saved_at()),
            None => Confirmed::At(Instant::now()),
        };
        let shared = Arc::new(Shared::new(Some(client.clone()), confirmed));
        let from_snapshot = snapshot.is_some();
        if let Some(s) = snapshot {
            // A snapshot without its source is from an unknown bucket: served while no server
            // answers, dropped when one does (see `WatchTask::session`).
            *shared.source.lock().unwrap_or_else(PoisonError::into_inner) = Some(
                s.source
                    .clone()
                    .unwrap_or_else(|| "an unknown routing bucket (a format 1 snapshot)".into()),
            );
            info!(
                tables = s.tables.len(),
                saved_at = %s.saved_at,
                "serving the routing snapshot until the live tables load"
            );
            for table in s.tables {
                shared.upsert(table);
            }
        }
        let (first_tx, first_rx) = oneshot::channel();
        let task = WatchTask {
            shared: shared.clone(),
            js: jetstream::new(client.clone()),
            client,
            options: options.clone(),
            key_revisions: HashMap::new(),
            first: Some(first_tx),
            dirty: false,
        };
        let resolver = Resolver {
            inner: Arc::new(Inner {
                shared,
                task: Some(tokio::spawn(task.run())),
            }),
        };
        if from_snapshot {
            return Ok(resolver);
        }
        match tokio::time::timeout(options.initial_load_timeout, first_rx).await {
            Ok(Ok(Ok(()))) => Ok(resolver),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ClientError::Nats("the routing watch stopped".into())),
            Err(_) => {
                let last = resolver
                    .staleness()
                    .last_error
                    .unwrap_or_else(|| "no answer from the server".into());
                Err(ClientError::Timeout(options.initial_load_timeout, last))
            }
        }
    }

    /// A resolver over fixed tables, with no server and no watch: for tests of a service's
    /// own code and for benchmarks. Its staleness reports it as not connected.
    pub fn from_tables(tables: impl IntoIterator<Item = RoutingTable>) -> Resolver {
        let shared = Arc::new(Shared::new(None, Confirmed::At(Instant::now())));
        for table in tables {
            shared.upsert(table);
        }
        Resolver {
            inner: Arc::new(Inner { shared, task: None }),
        }
    }

    /// Which version `prompt` serves for this request, answered from memory with the same
    /// sticky bucketing as `pledger resolve` (`pledger_core::routing::resolve`). Never blocks
    /// on the network and allocates nothing. An unknown prompt gives an empty resolution
    /// ([`Resolution::is_known`] is `false`, [`Resolution::version`] is `None`).
    pub fn resolve(&self, prompt: &str, ctx: &RequestContext<'_>) -> Resolution {
        let tables = self
            .inner
            .shared
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match tables.get(prompt) {
            Some(table) => Resolution::new(table.resolve(ctx).clone()),
            None => Resolution::default(),
        }
    }

    /// The routing table of `prompt`, as last received.
    pub fn table(&self, prompt: &str) -> Option<Arc<RoutingTable>> {
        self.inner
            .shared
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(prompt)
            .map(|c| c.table.clone())
    }

    /// Every table held, sorted by prompt.
    pub fn tables(&self) -> Vec<Arc<RoutingTable>> {
        self.inner.shared.tables()
    }

    /// How current the tables are, and whether the watch is live.
    pub fn staleness(&self) -> Staleness {
        let shared = &self.inner.shared;
        let status = shared.status.lock().unwrap_or_else(PoisonError::into_inner);
        let client_up = shared
            .client
            .as_ref()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
        let since_confirmed = match status.confirmed {
            Confirmed::At(at) => at.elapsed(),
            Confirmed::Wall(at) => SystemTime::now().duration_since(at).unwrap_or_default(),
        };
        let connected = status.live && client_up;
        Staleness {
            connected,
            synced: status.synced,
            since_confirmed,
            last_error: match (&status.last_error, connected, shared.client.is_some()) {
                (Some(e), false, _) => Some(e.clone()),
                (None, false, true) => Some("not connected to NATS".into()),
                (None, false, false) => Some("fixed tables: no server".into()),
                (_, true, _) => None,
            },
        }
    }

    /// The last KV revision of the bucket the watch has processed (0 before any).
    pub fn revision(&self) -> u64 {
        self.inner
            .shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .revision
    }

    /// A receiver that sees a new value whenever something observable changes: a table, the
    /// processed revision, connectivity. For services that react to routing changes; tests
    /// use the `wait_*` methods built on it.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.shared.changes.subscribe()
    }

    /// Waits until `condition` holds, re-checking after every change. Wrap it in
    /// `tokio::time::timeout` to bound the wait.
    pub async fn wait_until(&self, mut condition: impl FnMut(&Resolver) -> bool) {
        let mut changes = self.changes();
        while !condition(self) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until `prompt`'s table (`None`: no table) satisfies `predicate`.
    pub async fn wait_for(
        &self,
        prompt: &str,
        mut predicate: impl FnMut(Option<&RoutingTable>) -> bool,
    ) {
        self.wait_until(|r| predicate(r.table(prompt).as_deref()))
            .await
    }

    /// Waits until the watch has processed the bucket's `revision` (e.g. the revision a KV
    /// write returned), whether or not it changed a table.
    pub async fn wait_for_revision(&self, revision: u64) {
        self.wait_until(|r| r.revision() >= revision).await
    }

    /// Waits until the tables have been loaded from the server (at once unless started from
    /// a snapshot that is still the only source).
    pub async fn wait_synced(&self) {
        self.wait_until(|r| r.staleness().synced).await
    }

    /// Writes every table held to `path` as JSON, atomically (temporary file + rename), for a
    /// later [`ResolverOptions::snapshot`] start. Blocking file IO of a small file.
    pub fn save_snapshot(&self, path: impl AsRef<std::path::Path>) -> Result<(), ClientError> {
        let tables = self.tables().iter().map(|t| (**t).clone()).collect();
        snapshot::write(path.as_ref(), self.inner.shared.source(), tables)
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("prompts", &self.tables().len())
            .field("staleness", &self.staleness())
            .finish()
    }
}

/// The background task: loads, watches, re-creates the watch when it ends, confirms on a
/// heartbeat.
struct WatchTask {
    shared: Arc<Shared>,
    client: async_nats::Client,
    js: jetstream::Context,
    options: ResolverOptions,
    /// The last KV revision applied per key (deletes included), so replays are no-ops.
    key_revisions: HashMap<String, u64>,
    /// Tells `start` how the first load went.
    first: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// Tables changed since the snapshot was last saved.
    dirty: bool,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl WatchTask {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&mut backoff).await {
                Ok(()) => debug!("the routing watch ended; re-creating it"),
                Err(e) => {
                    warn!("routing watch: {e}");
                    self.shared.fail(e.to_string());
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Err(e));
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One load-then-watch of the whole bucket. Returns `Ok` when the watch ends.
    async fn session(&mut self, backoff: &mut Duration) -> Result<(), ClientError> {
        let mut stream = self
            .js
            .get_stream(ROUTING_STREAM)
            .await
            .map_err(ClientError::from_get_stream)?;
        // Tables (and key revisions) from another bucket (a snapshot of another ledger, a
        // server replaced under a running resolver, a bucket created again) never mix with
        // this one's: they are dropped, and the load below brings this bucket's.
        let live = bucket_source(stream.cached_info());
        let held = self
            .shared
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(live.clone());
        if let Some(held) = held.filter(|h| *h != live) {
            let dropped = self.shared.retain(&HashSet::new());
            self.key_revisions.clear();
            warn!(
                dropped,
                "the routing tables held came from {held}, not from this server's bucket ({live}): dropped; serving this bucket's"
            );
            if dropped > 0 {
                self.dirty = true;
                self.shared.bump();
            }
        }
        let state = &stream.cached_info().state;
        // The load is complete once the watch delivered the stream's last message (the last
        // message is always the last of its key, so the watch delivers it).
        let target = if state.messages == 0 {
            0
        } else {
            state.last_sequence
        };
        let store =
            self.js.get_key_value(ROUTING_BUCKET).await.map_err(|e| {
                ClientError::Nats(format!("opening the bucket {ROUTING_BUCKET}: {e}"))
            })?;
        let mut watch = store
            .watch_with_history(">")
            .await
            .map_err(|e| ClientError::Nats(format!("watching the bucket {ROUTING_BUCKET}: {e}")))?;
        // Keys seen during the load; `None` once loaded.
        let mut loading: Option<HashSet<String>> = Some(HashSet::new());
        let mut session_max = 0u64;
        if target == 0 {
            self.finish_load(&mut loading).await;
            *backoff = Duration::from_millis(100);
        }
        // Errors in a row without an entry: past a few, the watch is re-created (with backoff)
        // rather than polled in a tight loop.
        let mut errors = 0;
        let mut tick = tokio::time::interval(self.options.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                item = watch.next() => match item {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        debug!("routing watch: {e}");
                        errors += 1;
                        if errors >= 10 {
                            return Err(ClientError::Nats(format!("routing watch: {e}")));
                        }
                        self.shared.fail(format!("routing watch: {e}"));
                    }
                    Some(Ok(entry)) => {
                        errors = 0;
                        let caught_up = entry.delta == 0;
                        session_max = session_max.max(entry.revision);
                        if let Some(seen) = loading.as_mut() {
                            seen.insert(entry.key.clone());
                        }
                        let revision = entry.revision;
                        self.apply(entry);
                        self.shared.status(|s| s.revision = s.revision.max(revision));
                        if loading.is_some() {
                            if caught_up || session_max >= target {
                                self.finish_load(&mut loading).await;
                                *backoff = Duration::from_millis(100);
                            }
                        } else if caught_up {
                            self.shared.confirm();
                            self.autosave().await;
                        }
                    }
                },
                _ = tick.tick() => {
                    if self.client.connection_state() != async_nats::connection::State::Connected {
                        self.shared.fail("not connected to NATS".into());
                        continue;
                    }
                    let probe = self.options.heartbeat.clamp(Duration::from_millis(100), Duration::from_secs(2));
                    match tokio::time::timeout(probe, stream.info()).await {
                        Ok(Ok(info)) => {
                            let s = &info.state;
                            if s.messages == 0 || s.last_sequence <= session_max {
                                if loading.is_some() {
                                    self.finish_load(&mut loading).await;
                                } else {
                                    self.shared.confirm();
                                    self.autosave().await;
                                }
                            }
                        }
                        Ok(Err(e)) => self.shared.fail(format!("heartbeat: {e}")),
                        Err(_) => self.shared.fail("heartbeat: the server did not answer".into()),
                    }
                }
            }
        }
    }

    fn apply(&mut self, entry: kv::Entry) {
        if let Some(&seen) = self.key_revisions.get(&entry.key) {
            if entry.revision <= seen {
                return;
            }
        }
        self.key_revisions.insert(entry.key.clone(), entry.revision);
        let changed = match entry.operation {
            kv::Operation::Put => match RoutingTable::from_json(&entry.value) {
                Ok(table) if table.prompt.as_str() != entry.key => {
                    warn!(
                        key = entry.key,
                        prompt = %table.prompt,
                        "ignoring a routing table stored under another prompt's key"
                    );
                    false
                }
                Ok(table) => {
                    let sequence = table.ledger_sequence;
                    match self.shared.upsert(table) {
                        Applied::Replaced => true,
                        Applied::Unchanged => false,
                        Applied::Older => {
                            debug!(
                                key = entry.key,
                                sequence, "ignoring a routing table from an older ledger sequence"
                            );
                            false
                        }
                    }
                }
                Err(e) => {
                    warn!(
                        key = entry.key,
                        "ignoring a routing table that does not decode: {e}"
                    );
                    false
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => self.shared.remove(&entry.key),
        };
        if changed {
            self.dirty = true;
            self.shared.bump();
        }
    }

    async fn finish_load(&mut self, loading: &mut Option<HashSet<String>>) {
        if let Some(seen) = loading.take() {
            let removed = self.shared.retain(&seen);
            if removed > 0 {
                self.dirty = true;
            }
        }
        self.shared.status(|s| {
            s.synced = true;
            s.live = true;
            s.confirmed = Confirmed::At(Instant::now());
            s.last_error = None;
        });
        // Saved before `start` returns, so a first start leaves a snapshot behind at once.
        self.dirty = true;
        self.autosave().await;
        if let Some(first) = self.first.take() {
            let _ = first.send(Ok(()));
        }
    }

    async fn autosave(&mut self) {
        if !self.dirty || !self.options.autosave_snapshot {
            return;
        }
        let Some(path) = self.options.snapshot.clone() else {
            return;
        };
        self.dirty = false;
        let tables = self.shared.tables().iter().map(|t| (**t).clone()).collect();
        let source = self.shared.source();
        match tokio::task::spawn_blocking(move || snapshot::write(&path, source, tables)).await {
            // Wakes waiters that watch the file (tests).
            Ok(Ok(())) => self.shared.bump(),
            Ok(Err(e)) => warn!("saving the routing snapshot: {e}"),
            Err(e) => warn!("saving the routing snapshot: {e}"),
        }
    }
}
