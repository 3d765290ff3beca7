//! Worker projections in sled. A worker applies an event's effect and records the stream
//! sequence it came from in one sled transaction, then acks; on restart it skips every
//! sequence at or below the recorded one. One process per directory (sled's own lock).

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::codec::{self, CodecError};

/// The meta key holding the last applied sequence of one source stream.
fn applied_key(source: &str) -> Vec<u8> {
    format!("applied_sequence/{source}").into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("projection store: {0}")]
    Sled(#[from] sled::Error),
    #[error("projection store: {0}")]
    Codec(#[from] CodecError),
}

/// A projection store: a `state` tree of encoded values and a `meta` tree holding the last
/// applied stream sequence.
pub struct ProjectionStore {
    db: sled::Db,
    state: sled::Tree,
    meta: sled::Tree,
}

/// Which ledger a store projects: each stream it reads, by name and creation (a stream deleted
/// and created again, or another server's, is another ledger), with the cluster that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LedgerIdentity {
    /// `(stream, "<creation time in ns since the epoch>@<cluster or single server>")`.
    pub streams: Vec<(String, String)>,
}

impl std::fmt::Display for LedgerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .streams
            .iter()
            .map(|(name, created)| format!("{name} created {created}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// What [`ProjectionStore::bind`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// An empty store, now bound to the ledger.
    New,
    /// The store projects this ledger: resume where it left off.
    Same,
    /// The store projected something else (or more than the stream holds): it was cleared and
    /// is rebuilt from the start of this ledger.
    Rebuilt { reason: String },
}

const IDENTITY_KEY: &[u8] = b"ledger_identity";
const REBUILDS_KEY: &[u8] = b"rebuilds";

/// What [`ProjectionStore::apply`] did with a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// At or below the recorded sequence: applied before (a redelivery).
    AlreadyApplied,
}

/// Writes inside one apply transaction.
pub struct ProjectionTx<'a> {
    state: &'a TransactionalTree,
}

impl ProjectionTx<'_> {
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), CodecError> {
        let bytes = codec::encode(value)?;
        self.state
            .insert(key.as_bytes(), bytes)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(())
    }
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CodecError> {
        match self
            .state
            .get(key.as_bytes())
            .map_err(|e| CodecError::Decode(e.to_string()))?
        {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }
    pub fn remove(&self, key: &str) -> Result<(), CodecError> {
        self.state
            .remove(key.as_bytes())
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(())
    }
}

/// The page cache of each store. sled's default is 1 GiB per database, and its cache keeps
/// the pages a store writes until it is full, so a long-running worker's resident memory grew
/// with the writes of its life rather than with what it holds: a worker's projection (views,
/// per-visit counts of active releases, queues) is a few MiB at most.
pub const CACHE_CAPACITY: u64 = 8 * 1024 * 1024;

/// How long [`ProjectionStore::open`] waits for a store's lock released by a handle just dropped.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn is_lock_held(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

impl ProjectionStore {
    /// Opens (or creates) the store at `path`. sled releases its file lock from background
    /// threads a moment after the last handle is dropped, so a store reopened at once by the
    /// same process (a worker restarted in `pledger up`) may find it still held: the open is
    /// tried again for up to [`LOCK_WAIT`] before it fails. Another live process holding the
    /// store still fails, naming the path.
    pub fn open(path: &Path) -> Result<ProjectionStore, ProjectionError> {
        let started = std::time::Instant::now();
        let db = loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_CAPACITY)
                .open()
            {
                Ok(db) => break db,
                Err(source) if is_lock_held(&source) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(ProjectionError::Open {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        };
        let state = db.open_tree("state")?;
        let meta = db.open_tree("meta")?;
        Ok(ProjectionStore { db, state, meta })
    }

    /// Binds the store to the ledger it is about to project. A store that projected another
    /// ledger, that does not say which, or that has applied more of a stream than the stream
    /// now holds is cleared (state and applied sequences) so the worker rebuilds it from the
    /// start: it never resumes at a sequence of another ledger. Each rebuild is counted.
    /// Durable at the next [`Self::flush`].
    pub fn bind(
        &self,
        identity: &LedgerIdentity,
        last_sequences: &[(&str, u64)],
    ) -> Result<Binding, ProjectionError> {
        let stored: Option<LedgerIdentity> = match self.meta.get(IDENTITY_KEY)? {
            Some(bytes) => codec::decode(&bytes).ok(),
            None => None,
        };
        let mut behind = None;
        for (source, last) in last_sequences {
            let applied = self.applied_sequence(source)?;
            if applied > *last {
                behind = Some(format!(
                    "it applied {source} up to sequence {applied} but the stream ends at {last}"
                ));
                break;
            }
        }
        let empty = self.state.is_empty()
            && self
                .meta
                .iter()
                .keys()
                .all(|k| k.is_ok_and(|k| k.as_ref() == REBUILDS_KEY));
        let reason = match (&stored, behind) {
            (Some(s), _) if s != identity => Some(format!(
                "it projected another ledger ({s}); this one is {identity}"
            )),
            (Some(_), Some(behind)) => Some(behind),
            (Some(_), None) => return Ok(Binding::Same),
            (None, _) if empty => None,
            (None, _) => Some("it does not say which ledger it projects".to_string()),
        };
        let rebuilds = self.rebuilds()?;
        if reason.is_some() {
            self.state.clear()?;
            self.meta.clear()?;
            self.meta
                .insert(REBUILDS_KEY, codec::encode(&(rebuilds + 1))?)?;
        }
        self.meta.insert(IDENTITY_KEY, codec::encode(identity)?)?;
        Ok(match reason {
            Some(reason) => Binding::Rebuilt { reason },
            None => Binding::New,
        })
    }

    /// How many times this store was cleared to be rebuilt for another ledger.
    pub fn rebuilds(&self) -> Result<u64, ProjectionError> {
        match self.meta.get(REBUILDS_KEY)? {
            Some(bytes) => Ok(codec::decode(&bytes)?),
            None => Ok(0),
        }
    }

    /// The last sequence applied from `source` (a stream name; 0 if none).
    pub fn applied_sequence(&self, source: &str) -> Result<u64, ProjectionError> {
        match self.meta.get(applied_key(source))? {
            Some(bytes) => Ok(codec::decode(&bytes)?),
            None => Ok(0),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ProjectionError> {
        match self.state.get(key.as_bytes())? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every value whose key starts with `prefix`.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, ProjectionError> {
        let mut out = Vec::new();
        for item in self.state.scan_prefix(prefix.as_bytes()) {
            let (_, bytes) = item?;
            out.push(codec::decode(&bytes)?);
        }
        Ok(out)
    }

    /// Every key that starts with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, ProjectionError> {
        let mut out = Vec::new();
        for item in self.state.scan_prefix(prefix.as_bytes()) {
            let (key, _) = item?;
            out.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(out)
    }

    /// Removes one value outside any stream sequence (durable at the next [`Self::flush`]).
    pub fn remove(&self, key: &str) -> Result<(), ProjectionError> {
        self.state.remove(key.as_bytes())?;
        Ok(())
    }

    /// Writes one derived value outside any stream sequence (a value the worker can always
    /// derive again from the ledger); durable at the next [`Self::flush`].
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ProjectionError> {
        self.state.insert(key.as_bytes(), codec::encode(value)?)?;
        Ok(())
    }

    /// Applies `effect` for stream sequence `sequence` exactly once: the effect's writes and
    /// the new applied sequence commit together, and a sequence at or below the recorded one
    /// is skipped. The commit is atomic; it is durable once [`Self::flush`] returns, which a
    /// worker awaits before it acks the messages applied.
    pub fn apply<F>(
        &self,
        source: &str,
        sequence: u64,
        effect: F,
    ) -> Result<Applied, ProjectionError>
    where
        F: Fn(&ProjectionTx<'_>) -> Result<(), CodecError>,
    {
        let key = applied_key(source);
        let result = (&self.state, &self.meta).transaction(|(state, meta)| {
            let applied = match meta.get(key.as_slice())? {
                Some(bytes) => {
                    codec::decode::<u64>(&bytes).map_err(ConflictableTransactionError::Abort)?
                }
                None => 0,
            };
            if sequence <= applied {
                return Ok(Applied::AlreadyApplied);
            }
            effect(&ProjectionTx { state }).map_err(ConflictableTransactionError::Abort)?;
            let encoded = codec::encode(&sequence).map_err(ConflictableTransactionError::Abort)?;
            meta.insert(key.as_slice(), encoded)?;
            Ok(Applied::Applied)
        });
        let applied = match result {
            Ok(a) => a,
            Err(TransactionError::Abort(e)) => return Err(ProjectionError::Codec(e)),
            Err(TransactionError::Storage(e)) => return Err(ProjectionError::Sled(e)),
        };
        Ok(applied)
    }

    /// Makes every write so far durable (an fsync). It runs on sled's own IO threads, never on
    /// the async runtime's: the runtime's threads keep serving while the disk works.
    pub async fn flush(&self) -> Result<(), ProjectionError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// [`Self::flush`] for callers outside an async runtime (tests, tools).
    pub fn flush_blocking(&self) -> Result<(), ProjectionError> {
        self.db.flush()?;
        Ok(())
    }
}
